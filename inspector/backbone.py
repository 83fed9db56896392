"""The ONNX backbone: uint8 crops in, embeddings out, through ONNX Runtime (no torch at run time)."""
from __future__ import annotations

import logging
import os

import numpy as np

from inspector.bundle import Bundle, Precision
from inspector.errors import BundleError

log = logging.getLogger(__name__)


def _import_onnxruntime():
    import onnxruntime as ort

    # The GPU wheel logs a CUDA load error (severity ERROR) on machines without CUDA and then
    # falls back to the CPU; Backbone reports the provider really in use, so keep that noise out.
    ort.set_default_logger_severity(4)
    return ort


# Idle workers sleep instead of spinning: a scan shares its cores with the video decoder, and
# spinning cost it about a sixth of its frames/s on 2 cores (docs/benchmarks.md).
SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}


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
        for key, value in SESSION_CONFIG.items():
            options.add_session_config_entry(key, value)
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

    def _check_shapes(self) -> None:
        shape = self._input.shape
        size = self.bundle.input_size
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise BundleError(f"bundle {self.bundle.path}: backbone input {shape} is not N x 3 x H x W; re-export")
        for dim in shape[2:]:
            if isinstance(dim, int) and dim != size:
                raise BundleError(f"bundle {self.bundle.path}: backbone expects {shape[2]}x{shape[3]} px "
                                  f"but bundle.json says {size} px; fix input.size or re-export")
        outputs = self._session.get_outputs()
        self._embedding_output = outputs[0].name
        out_shape = outputs[0].shape
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != self.bundle.embedding_size):
            raise BundleError(f"bundle {self.bundle.path}: backbone output {out_shape} does not match "
                              f"embedding_size {self.bundle.embedding_size}; re-export")
        patches = self.bundle.patch_features
        if patches is not None:
            shapes = {o.name: o.shape for o in outputs}
            if patches.output not in shapes:
                raise BundleError(f"bundle {self.bundle.path}: bundle.json names patch output {patches.output!r} "
                                  "but the backbone has none; add them with 'python -m training add-patch-features'")

    @property
    def has_patches(self) -> bool:
        """Whether the backbone gives anomaly mode's patch features."""
        return self.bundle.patch_features is not None

    def embed(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """N x S x S x 3 uint8 RGB crops -> N x D embeddings."""
        out = np.empty((len(crops), self.bundle.embedding_size), np.float32)
        for start in range(0, len(crops), batch_size):
            batch = self.bundle.preprocessing.normalise(crops[start:start + batch_size])
            out[start:start + len(batch)] = self._session.run([self._embedding_output], {self._input.name: batch})[0]
        return out

    def embed_patches(self, crops: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and patch features (N x C x G x G) of the same crops, from one ONNX run."""
        features = self.bundle.patch_features
        if features is None:
            raise BundleError(f"bundle {self.bundle.path} has no patch features for anomaly mode; add them with "
                              "'python -m training add-patch-features' or use a newer bundle")
        embeddings = np.empty((len(crops), self.bundle.embedding_size), np.float32)
        patches = np.empty((len(crops), features.channels, features.grid, features.grid), np.float32)
        for start in range(0, len(crops), batch_size):
            batch = self.bundle.preprocessing.normalise(crops[start:start + batch_size])
            emb, pat = self._session.run([self._embedding_output, features.output], {self._input.name: batch})
            embeddings[start:start + len(batch)] = emb
            patches[start:start + len(batch)] = pat
        return embeddings, patches
