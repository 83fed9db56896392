"""Model bundles and the ONNX backbone that turns crops into embeddings.

A bundle is a folder: ``bundle.json`` (format, input size, normalisation, embedding size,
adaptation parameters, provenance), the backbone as ONNX (fp32 and optionally int8 QDQ) and an
optional base head. Only ONNX Runtime runs it: no torch at run time.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inspector.assets import assets_dir
from inspector.errors import BundleError

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "inspector-bundle"
BUNDLE_FORMAT_VERSION = 1
Precision = Literal["auto", "fp32", "int8"]


@dataclass(frozen=True)
class AdaptationParams:
    """The meta-learned inner loop the adapter replays: see ``inspector.adapt``."""

    inner_steps: int
    step_sizes: tuple[float, ...]
    logit_scale: float
    weight_decay: float = 0.0
    init_weight_scale: float = 0.0
    init_bias: float = 0.0

    @classmethod
    def from_json(cls, raw: dict[str, Any], where: str) -> AdaptationParams:
        try:
            steps = int(raw["inner_steps"])
            sizes = tuple(float(v) for v in raw["step_sizes"])
            params = cls(steps, sizes, float(raw["logit_scale"]), float(raw.get("weight_decay", 0.0)),
                         float(raw.get("init_weight_scale", 0.0)), float(raw.get("init_bias", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: adaptation parameters are incomplete ({exc}); re-export the bundle") from None
        if steps < 1 or len(sizes) not in (1, steps):
            raise BundleError(f"{where}: adaptation needs inner_steps >= 1 and one step size or one per step")
        return params

    def step_size(self, step: int) -> float:
        return self.step_sizes[step if len(self.step_sizes) > 1 else 0]


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_size: int
    backbones: dict[str, Path]
    adaptation: AdaptationParams
    head_stem: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    base_examples: Path | None = None  # embeddings + labels of the base head's classes

    def load_base_examples(self) -> tuple[np.ndarray, list[str]]:
        """The support set the base head was fitted on, so a project head can keep its classes."""
        if self.base_examples is None:
            return np.zeros((0, self.embedding_size), np.float32), []
        try:
            with np.load(self.base_examples, allow_pickle=False) as data:
                embeddings, labels = data["embeddings"].astype(np.float32), [str(v) for v in data["labels"]]
        except (OSError, KeyError, ValueError) as exc:
            raise BundleError(f"bundle {self.path}: {self.base_examples.name} cannot be read ({exc}); "
                              "restore the bundle") from None
        if embeddings.shape != (len(labels), self.embedding_size):
            raise BundleError(f"bundle {self.path}: {self.base_examples.name} does not match embedding_size "
                              f"{self.embedding_size}; re-export the bundle")
        return embeddings, labels

    @property
    def digest(self) -> str:
        """Identifies the bundle's content (for scan identity): its JSON and backbone files."""
        sha = hashlib.sha256((self.path / "bundle.json").read_bytes())
        for key in sorted(self.backbones):
            stat = self.backbones[key].stat()
            sha.update(f"{key}:{stat.st_size}".encode())
            with self.backbones[key].open("rb") as handle:
                sha.update(handle.read(1 << 20))
        return sha.hexdigest()[:16]


def load_bundle(path: Path | str | None = None) -> Bundle:
    """Read and check a bundle folder; every problem is one ``BundleError`` line."""
    path = Path(path) if path else assets_dir() / "models" / "default"
    meta_path = path / "bundle.json"
    if not path.is_dir():
        raise BundleError(f"bundle {path}: no such folder; pass --bundle with a model bundle folder")
    if not meta_path.is_file():
        raise BundleError(f"bundle {path}: no bundle.json, so this is not a model bundle; "
                          "export one with 'python -m training export'")
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle {path}: bundle.json is corrupt ({exc}); re-export or restore the bundle") from None
    if not isinstance(raw, dict) or raw.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle {path}: bundle.json is not an inspector bundle description")
    version = raw.get("format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"bundle {path}: format version {version} is not supported "
                          f"(this inspector reads {BUNDLE_FORMAT_VERSION}); update inspector or re-export")
    try:
        inp = raw["input"]
        size = int(inp["size"])
        mean = tuple(float(v) for v in inp["mean"])
        std = tuple(float(v) for v in inp["std"])
        embedding_size = int(raw["embedding_size"])
        files = {str(k): path / str(v) for k, v in raw["backbones"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"bundle {path}: bundle.json lacks a field ({exc}); re-export the bundle") from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or size < 16 or embedding_size < 1:
        raise BundleError(f"bundle {path}: input normalisation or sizes in bundle.json are invalid")
    if not files or not set(files) <= {"fp32", "int8"}:
        raise BundleError(f"bundle {path}: 'backbones' must name an fp32 and/or int8 ONNX file")
    for key, file in files.items():
        if not file.is_file():
            raise BundleError(f"bundle {path}: the {key} backbone {file.name} is missing; restore the bundle")
    head_stem = raw.get("head")
    if head_stem is not None and not (path / f"{head_stem}.npz").is_file():
        raise BundleError(f"bundle {path}: base head {head_stem}.npz is missing; restore the bundle")
    base_examples = path / raw["base_examples"] if raw.get("base_examples") else None
    if base_examples is not None and not base_examples.is_file():
        raise BundleError(f"bundle {path}: base examples {base_examples.name} are missing; restore the bundle")
    return Bundle(path, str(raw.get("name", path.name)), size, mean, std, embedding_size, files,  # type: ignore[arg-type]
                  AdaptationParams.from_json(raw.get("adaptation", {}), f"bundle {path}"),
                  head_stem, dict(raw.get("provenance", {})), base_examples)


def _import_onnxruntime():
    import onnxruntime as ort

    # The GPU wheel logs a CUDA load error (severity ERROR) on machines without CUDA and then
    # falls back to the CPU; Backbone reports the provider really in use, so keep that noise out.
    ort.set_default_logger_severity(4)
    return ort


def default_threads() -> int:
    return int(os.environ.get("INSPECTOR_THREADS", 0)) or (os.cpu_count() or 1)


class Backbone:
    """One ONNX Runtime session: uint8 RGB crops in, float32 embeddings out."""

    def __init__(self, bundle: Bundle, precision: Precision = "auto", threads: int | None = None,
                 use_gpu: bool = True) -> None:
        ort = _import_onnxruntime()
        if precision == "auto":
            precision = "int8" if "int8" in bundle.backbones else "fp32"
        if precision not in bundle.backbones:
            raise BundleError(f"bundle {bundle.path}: has no {precision} backbone "
                              f"(it has {', '.join(sorted(bundle.backbones))})")
        self.bundle = bundle
        self.precision = precision
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        wanted = ["CPUExecutionProvider"]
        if use_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            wanted.insert(0, "CUDAExecutionProvider")
        model_path = bundle.backbones[precision]
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"bundle {bundle.path}: {model_path.name} is not a loadable ONNX model "
                              f"({first[:160]}); re-export or restore the bundle") from None
        self.provider = self._session.get_providers()[0]
        log.info("backbone %s (%s) on %s", model_path.name, precision, self.provider)
        self._input = self._session.get_inputs()[0]
        self._check_shapes()
        scale = 1.0 / (255.0 * np.asarray(bundle.std, np.float32))
        self._scale = scale.reshape(1, 3, 1, 1)
        self._shift = (np.asarray(bundle.mean, np.float32) / np.asarray(bundle.std, np.float32)).reshape(1, 3, 1, 1)

    def _check_shapes(self) -> None:
        shape = self._input.shape
        size = self.bundle.input_size
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise BundleError(f"bundle {self.bundle.path}: backbone input {shape} is not N x 3 x H x W; re-export")
        for dim in shape[2:]:
            if isinstance(dim, int) and dim != size:
                raise BundleError(f"bundle {self.bundle.path}: backbone expects {shape[2]}x{shape[3]} px "
                                  f"but bundle.json says {size} px; fix input.size or re-export")
        out_shape = self._session.get_outputs()[0].shape
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != self.bundle.embedding_size):
            raise BundleError(f"bundle {self.bundle.path}: backbone output {out_shape} does not match "
                              f"embedding_size {self.bundle.embedding_size}; re-export")

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """N x S x S x 3 uint8 RGB -> N x 3 x S x S float32, normalised as in training."""
        size = self.bundle.input_size
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
            raise ValueError(f"crops must be N x {size} x {size} x 3, got {crops.shape}")
        x = crops.transpose(0, 3, 1, 2).astype(np.float32)
        x *= self._scale
        x -= self._shift
        return x

    def embed(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        out = np.empty((len(crops), self.bundle.embedding_size), np.float32)
        for start in range(0, len(crops), batch_size):
            batch = self.preprocess(crops[start:start + batch_size])
            out[start:start + len(batch)] = self._session.run(None, {self._input.name: batch})[0]
        return out
