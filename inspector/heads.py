"""Classifier heads: plain arrays plus class names, never pickles.

A head scores L2-normalised embeddings with a linear layer and a softmax. Each class says
whether it is a fault or a normal ("no fault") class, and which regions it applies to, so a
track fault is never reported on the catenary. A fault is called only when its probability
clears the head's calibrated ``threshold``; otherwise the crop counts as normal/unknown.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from inspector.errors import BundleError

HEAD_FORMAT_VERSION = 1


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


@dataclass(frozen=True)
class Prediction:
    """Per crop: the top class among those in scope, its probability, and the fault call."""

    class_index: np.ndarray  # int, -1 where no class applies to the region
    score: np.ndarray  # float32
    is_fault: np.ndarray  # bool


@dataclass(frozen=True)
class Head:
    classes: tuple[str, ...]
    weight: np.ndarray  # C x D
    bias: np.ndarray  # C
    normal: tuple[bool, ...]  # True for "no fault" classes
    regions: tuple[tuple[str, ...], ...] = ()  # per class; empty tuple = every region
    threshold: float = 0.5
    logit_scale: float = 10.0
    version: int = 1
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        count = len(self.classes)
        if self.weight.ndim != 2 or self.weight.shape[0] != count or self.bias.shape != (count,):
            raise ValueError("head weight must be C x D and bias C, with C = number of classes")
        if len(self.normal) != count or (self.regions and len(self.regions) != count):
            raise ValueError("head needs one normal flag (and region scope) per class")
        if not self.regions:
            object.__setattr__(self, "regions", tuple(() for _ in self.classes))

    @property
    def embedding_size(self) -> int:
        return int(self.weight.shape[1])

    @property
    def fault_classes(self) -> list[str]:
        return [c for c, n in zip(self.classes, self.normal) if not n]

    def applies(self, region: str) -> np.ndarray:
        """Mask of the classes in scope for a region."""
        return np.array([not scope or region in scope for scope in self.regions], bool)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        return self.logit_scale * (l2_normalise(embeddings) @ self.weight.T + self.bias)

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Class probabilities, N x C."""
        return softmax(self.logits(embeddings))

    def classify(self, embeddings: np.ndarray, region: str) -> Prediction:
        """Top class per crop of one region, among the classes in scope for that region."""
        mask = self.applies(region)
        n = len(embeddings)
        if not mask.any():
            return Prediction(np.full(n, -1), np.zeros(n, np.float32), np.zeros(n, bool))
        logits = self.logits(embeddings)
        logits[:, ~mask] = -np.inf
        probs = softmax(logits)
        top = probs.argmax(axis=1)
        score = probs[np.arange(n), top].astype(np.float32)
        fault = ~np.asarray(self.normal, bool)[top] & (score >= self.threshold)
        return Prediction(top, score, fault)

    def with_version(self, version: int) -> Head:
        return replace(self, version=version)

    def save(self, folder: Path, stem: str = "head") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"{stem}.npz", weight=self.weight.astype(np.float32),
                 bias=self.bias.astype(np.float32))
        meta = {"format_version": HEAD_FORMAT_VERSION, "classes": list(self.classes),
                "normal": list(self.normal), "regions": [list(r) for r in self.regions],
                "threshold": self.threshold, "logit_scale": self.logit_scale,
                "version": self.version, "info": self.info}
        (folder / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, stem: str = "head") -> Head:
        where = folder / f"{stem}.json"
        try:
            meta = json.loads(where.read_text(encoding="utf-8"))
            with np.load(folder / f"{stem}.npz", allow_pickle=False) as arrays:
                weight, bias = arrays["weight"], arrays["bias"]
            return cls(tuple(meta["classes"]), weight, bias, tuple(bool(v) for v in meta["normal"]),
                       tuple(tuple(r) for r in meta.get("regions", [])), float(meta["threshold"]),
                       float(meta["logit_scale"]), int(meta.get("version", 1)), dict(meta.get("info", {})))
        except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise BundleError(f"head {where}: cannot be read ({exc}); restore it or re-export the bundle") from None
