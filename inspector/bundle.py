"""The model bundle contract, torch-free, shared by the runtime and ``training.export``.

A bundle is a folder: ``bundle.json`` (format, input size, normalisation, embedding size, the
adaptation the runtime replays, provenance), the backbone as ONNX (fp32 and optionally int8 QDQ)
and an optional base head. What a bundle is, how its crops are preprocessed and which inner loop
it carries is written here once: export writes it with ``bundle_json`` and the app reads it with
``load_bundle``, so the two sides cannot drift apart.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inspector.assets import assets_dir
from inspector.errors import BundleError

BUNDLE_FORMAT = "inspector-bundle"
BUNDLE_FORMAT_VERSION = 1
Precision = Literal["auto", "fp32", "int8"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How a crop becomes the backbone's input: RGB, square ``size``, (x / 255 - mean) / std."""

    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def normalise(self, crops: np.ndarray) -> np.ndarray:
        """N x S x S x 3 uint8 RGB -> N x 3 x S x S float32."""
        if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"crops must be N x {self.size} x {self.size} x 3, got {crops.shape}")
        x = np.empty((len(crops), 3, self.size, self.size), np.float32)
        for channel, (mean, std) in enumerate(zip(self.mean, self.std)):  # a plane at a time: 5x a whole transpose
            plane = x[:, channel]
            np.multiply(crops[..., channel], np.float32(1.0 / (255.0 * std)), out=plane, casting="unsafe")
            plane -= np.float32(mean / std)
        return x

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std), "channels": "RGB"}


@dataclass(frozen=True)
class AdaptationParams:
    """The inner loop the adapter replays (``inspector.adapt``) and ``training.algorithms.head``
    meta-learns: ``inner_steps`` gradient steps with per-step ``step_sizes`` (one size: all steps)
    on ``logit_scale * (W x + b)``. ``algorithm`` says where the values come from: ``maml`` or
    ``anil`` (meta-learned with the backbone), or ``fixed`` (a default schedule)."""

    inner_steps: int
    step_sizes: tuple[float, ...]
    logit_scale: float
    weight_decay: float = 0.0
    init_weight_scale: float = 0.0
    init_bias: float = 0.0
    algorithm: str = "fixed"
    # Few-shot calibration prior: how far to trust logits measured in units of the head's own margin
    # on its examples (``inspector.adapt.episode_sharpness``, on episodes of the base examples). Bundles
    # exported before it (with a plain ``temperature``) get it from their base examples at load.
    sharpness: float | None = None
    # How far one view moves between video frames in this bundle's embedding (``inspector.adapt.view_spread``,
    # measured at export); the open-set margins are scaled by it. None: the reference geometry.
    view_spread: float | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any], where: str) -> AdaptationParams:
        try:
            steps = int(raw["inner_steps"])
            sizes = tuple(float(v) for v in raw["step_sizes"])
            params = cls(steps, sizes, float(raw["logit_scale"]), float(raw.get("weight_decay", 0.0)),
                         float(raw.get("init_weight_scale", 0.0)), float(raw.get("init_bias", 0.0)),
                         str(raw.get("algorithm", "fixed")),
                         float(raw["sharpness"]) if raw.get("sharpness") is not None else None,
                         float(raw["view_spread"]) if raw.get("view_spread") is not None else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: adaptation parameters are incomplete ({exc}); re-export the bundle") from None
        if params.view_spread is not None and not 0.0 < params.view_spread < 2.0:
            raise BundleError(f"{where}: view_spread must be a cosine distance between 0 and 2, not {params.view_spread}")
        if steps < 1 or len(sizes) not in (1, steps):
            raise BundleError(f"{where}: adaptation needs inner_steps >= 1 and one step size or one per step")
        return params

    def step_size(self, step: int) -> float:
        return self.step_sizes[step if len(self.step_sizes) > 1 else 0]

    def to_json(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "inner_steps": self.inner_steps, "step_sizes": list(self.step_sizes),
                "logit_scale": self.logit_scale, "weight_decay": self.weight_decay,
                "init_weight_scale": self.init_weight_scale, "init_bias": self.init_bias,
                "sharpness": self.sharpness, "view_spread": self.view_spread}

    def describe(self) -> str:
        """One line for ``bundle info``."""
        sizes = ", ".join(f"{v:.3g}" for v in self.step_sizes)
        return (f"{self.algorithm}: {self.inner_steps} steps, step sizes [{sizes}], logit scale "
                f"{self.logit_scale:.3g}" + (f", weight decay {self.weight_decay:.3g}" if self.weight_decay else "")
                + (f", calibration sharpness {self.sharpness:.3g}" if self.sharpness else "")
                + (f", view spread {self.view_spread:.3g}" if self.view_spread else ""))


@dataclass(frozen=True)
class PatchFeatures:
    """The backbone's second output, for anomaly mode (``inspector.anomaly``): per crop a
    ``channels`` x ``grid`` x ``grid`` map of mid-level patch features from the ``layers`` named,
    ``projected`` into the distillation teacher's map space by its hint projectors or not."""

    output: str
    channels: int
    grid: int
    layers: tuple[str, ...]
    projected: bool = False

    @classmethod
    def from_json(cls, raw: dict[str, Any], where: str) -> PatchFeatures:
        try:
            features = cls(str(raw["output"]), int(raw["channels"]), int(raw["grid"]),
                           tuple(str(v) for v in raw["layers"]), bool(raw.get("projected", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: patch_features is incomplete ({exc}); add them again with "
                              "'python -m training add-patch-features'") from None
        if features.channels < 1 or features.grid < 1:
            raise BundleError(f"{where}: patch_features needs positive channels and grid")
        return features

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "channels": self.channels, "grid": self.grid, "layers": list(self.layers),
                "projected": self.projected}

    def describe(self) -> str:
        space = " through the distillation's hint projectors" if self.projected else ""
        return (f"{self.channels} channels on a {self.grid} x {self.grid} grid from {' + '.join(self.layers)}"
                f"{space} (output {self.output!r})")


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    preprocessing: Preprocessing
    embedding_size: int
    backbones: dict[str, Path]
    adaptation: AdaptationParams
    head_stem: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    base_examples: Path | None = None  # embeddings + labels of the base head's classes
    patch_features: PatchFeatures | None = None  # anomaly mode's patch output; None: the bundle has none

    @property
    def input_size(self) -> int:
        return self.preprocessing.size

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
    patches = (PatchFeatures.from_json(raw["patch_features"], f"bundle {path}")
               if raw.get("patch_features") else None)
    return Bundle(path, str(raw.get("name", path.name)), Preprocessing(size, mean, std),  # type: ignore[arg-type]
                  embedding_size, files,
                  AdaptationParams.from_json(raw.get("adaptation", {}), f"bundle {path}"),
                  head_stem, dict(raw.get("provenance", {})), base_examples, patches)


def bundle_json(name: str, preprocessing: Preprocessing, embedding_size: int, backbones: dict[str, str],
                adaptation: AdaptationParams, head: str | None = None, base_examples: str | None = None,
                provenance: dict[str, Any] | None = None,
                patch_features: PatchFeatures | None = None) -> dict[str, Any]:
    """The ``bundle.json`` that ``load_bundle`` reads (what ``training.export`` writes)."""
    meta: dict[str, Any] = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "name": name,
                            "input": preprocessing.to_json(), "embedding_size": embedding_size,
                            "backbones": dict(backbones), "adaptation": adaptation.to_json()}
    if head:
        meta["head"] = head
    if base_examples:
        meta["base_examples"] = base_examples
    if patch_features:
        meta["patch_features"] = patch_features.to_json()
    if provenance:
        meta["provenance"] = provenance
    return meta


def write_bundle_json(folder: Path, meta: dict[str, Any]) -> None:
    (folder / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
