"""Classifier heads: plain arrays plus class names, never pickles.

A head scores embeddings with a linear layer and a softmax after centring them on their region's
centre (the mean of the support examples cut in that region) and L2-normalising them: centring
removes what every crop of a region shares (the sky and wires of a catenary tile), so the few
dimensions that tell a fault apart carry the decision (SimpleShot's CL2N, per region). Each class says
whether it is a fault or a normal ("no fault") class, and which regions it applies to, so a
track fault is never reported on the catenary.

A crop's score for its top class is a calibrated probability, not the saturated softmax: the
logits are divided by a temperature fitted on cross-fitted support logits of the crop's region
(``temperatures``, Guo et al. 2017; per region, so a fault type added on the catenary leaves
every track score as it was; in units of the head's margin on its own examples, so one prior
serves supports of any size: ``inspector.adapt.calibrate``). A fault is called only when that probability exceeds the class's alarm
threshold (``thresholds``) and, where the head carries class prototypes,
the crop is at least as similar to that class's prototype as the class's own examples were
(``similarity_floor``): a crop unlike anything labelled is "none of these", not a fault. A class
whose examples are all one view (five frames of one passage) has no such floor, since the view
shows nothing of how its instances vary; it has a view floor instead (``views``, ``view_floor``,
on the plain embeddings): the crop must be nearer that view than the nearest example of any
other class is.
"""
from __future__ import annotations

import io
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
    prototypes: np.ndarray | None = None  # C x D, unit length: mean support feature per class
    similarity_floor: np.ndarray | None = None  # C: lowest cosine similarity a fault call needs
    centers: dict[str, np.ndarray] = field(default_factory=dict)  # region ("*": any) -> D
    temperatures: dict[str, float] = field(default_factory=dict)  # region ("*": any) -> T; empty: not fitted
    thresholds: np.ndarray | None = None  # C: alarm threshold per class on the calibrated score
    views: np.ndarray | None = None  # C x D, unit length: mean plain embedding of a one-view class
    view_floor: np.ndarray | None = None  # C: lowest plain cosine to its view a fault call needs (-1: none)

    def __post_init__(self) -> None:
        count = len(self.classes)
        if self.weight.ndim != 2 or self.weight.shape[0] != count or self.bias.shape != (count,):
            raise ValueError("head weight must be C x D and bias C, with C = number of classes")
        if len(self.normal) != count or (self.regions and len(self.regions) != count):
            raise ValueError("head needs one normal flag (and region scope) per class")
        if not self.regions:
            object.__setattr__(self, "regions", tuple(() for _ in self.classes))
        if (self.prototypes is None) != (self.similarity_floor is None) or (
                self.prototypes is not None and (self.prototypes.shape != self.weight.shape
                                                 or self.similarity_floor.shape != (count,))):
            raise ValueError("prototypes (C x D) and similarity_floor (C) go together")
        if (self.views is None) != (self.view_floor is None) or (
                self.views is not None and (self.views.shape != self.weight.shape or self.view_floor.shape != (count,))):
            raise ValueError("views (C x D) and view_floor (C) go together")
        if any(not t > 0 for t in self.temperatures.values()):
            raise ValueError("temperatures must be positive")
        if self.thresholds is not None and self.thresholds.shape != (count,):
            raise ValueError("thresholds must hold one value per class")

    @property
    def embedding_size(self) -> int:
        return int(self.weight.shape[1])

    @property
    def fault_classes(self) -> list[str]:
        return [c for c, n in zip(self.classes, self.normal) if not n]

    def applies(self, region: str) -> np.ndarray:
        """Mask of the classes in scope for a region."""
        return np.array([not scope or region in scope for scope in self.regions], bool)

    def center_for(self, region: str | None) -> np.ndarray | float:
        if region in self.centers:
            return self.centers[region]
        if "*" in self.centers:
            return self.centers["*"]
        if len(self.centers) == 1:
            return next(iter(self.centers.values()))
        return 0.0

    def features(self, embeddings: np.ndarray, region: str | None = None) -> np.ndarray:
        """Embeddings as the head sees them: centred on the region's centre, unit length."""
        return l2_normalise(embeddings - self.center_for(region))

    def logits(self, embeddings: np.ndarray, region: str | None = None) -> np.ndarray:
        return self.logit_scale * (self.features(embeddings, region) @ self.weight.T + self.bias)

    def known(self, features: np.ndarray, class_index: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """Whether each crop (``features`` as the head sees it, and its plain ``embeddings``) is close
        enough to the prototype, or the one view, of its class to be that class."""
        known = np.ones(len(features), bool)
        index = np.maximum(class_index, 0)
        if self.prototypes is not None:
            known &= np.einsum("nd,nd->n", features, self.prototypes[index]) >= self.similarity_floor[index]
        if self.views is not None:
            known &= np.einsum("nd,nd->n", l2_normalise(embeddings), self.views[index]) >= self.view_floor[index]
        return known

    def predict(self, embeddings: np.ndarray, region: str | None = None) -> np.ndarray:
        """Class probabilities, N x C."""
        return softmax(self.logits(embeddings, region))

    def threshold_of(self, class_index: np.ndarray | int) -> np.ndarray:
        """The alarm threshold of each class (the head-wide one where it has none of its own)."""
        if self.thresholds is None:
            return np.full(np.shape(class_index), self.threshold, np.float32)
        return self.thresholds[class_index]

    def temperature_for(self, region: str | None) -> float:
        if region in self.temperatures:
            return self.temperatures[region]
        return self.temperatures.get("*", 1.0)

    def scores(self, logits: np.ndarray, region: str | None = None) -> np.ndarray:
        """N x C calibrated class probabilities of crops of a region (classes out of scope carry
        logit -inf)."""
        return softmax(logits / self.temperature_for(region))

    def classify(self, embeddings: np.ndarray, region: str) -> Prediction:
        """Top class per crop of one region, among the classes in scope for that region."""
        mask = self.applies(region)
        n = len(embeddings)
        if not mask.any():
            return Prediction(np.full(n, -1), np.zeros(n, np.float32), np.zeros(n, bool))
        features = self.features(embeddings, region)
        logits = self.logit_scale * (features @ self.weight.T + self.bias)
        logits[:, ~mask] = -np.inf
        top = logits.argmax(axis=1)
        score = self.scores(logits, region)[np.arange(n), top].astype(np.float32)
        fault = ~np.asarray(self.normal, bool)[top] & (score > self.threshold_of(top)) & self.known(features, top, embeddings)
        return Prediction(top, score, fault)

    def with_thresholds(self, thresholds: np.ndarray) -> Head:
        return replace(self, thresholds=np.asarray(thresholds, np.float32))

    def with_version(self, version: int) -> Head:
        return replace(self, version=version)

    def to_json(self) -> str:
        return json.dumps({"format_version": HEAD_FORMAT_VERSION, "classes": list(self.classes),
                           "normal": list(self.normal), "regions": [list(r) for r in self.regions],
                           "threshold": self.threshold, "logit_scale": self.logit_scale,
                           "version": self.version, "info": self.info, "center_regions": list(self.centers),
                           "temperatures": self.temperatures},
                          indent=2) + "\n"

    def to_npz(self) -> bytes:
        arrays = {"weight": self.weight.astype(np.float32), "bias": self.bias.astype(np.float32)}
        if self.prototypes is not None:
            arrays.update(prototypes=self.prototypes.astype(np.float32),
                          similarity_floor=self.similarity_floor.astype(np.float32))
        if self.centers:
            arrays["centers"] = np.stack([c.astype(np.float32) for c in self.centers.values()])
        if self.thresholds is not None:
            arrays["thresholds"] = self.thresholds.astype(np.float32)
        if self.views is not None:
            arrays.update(views=self.views.astype(np.float32), view_floor=self.view_floor.astype(np.float32))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_parts(cls, meta_json: str, npz: bytes) -> Head:
        """Rebuild a head from ``to_json`` and ``to_npz`` output (raises ValueError if damaged)."""
        try:
            meta = json.loads(meta_json)
            with np.load(io.BytesIO(npz), allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            centers = dict(zip(meta.get("center_regions", []), arrays.get("centers", [])))
            return cls(tuple(meta["classes"]), arrays["weight"], arrays["bias"],
                       tuple(bool(v) for v in meta["normal"]), tuple(tuple(r) for r in meta.get("regions", [])),
                       float(meta["threshold"]), float(meta["logit_scale"]), int(meta.get("version", 1)),
                       dict(meta.get("info", {})), arrays.get("prototypes"), arrays.get("similarity_floor"),
                       centers, {str(k): float(v) for k, v in meta.get("temperatures", {}).items()},
                       arrays.get("thresholds"), arrays.get("views"), arrays.get("view_floor"))
        except (OSError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from None

    def save(self, folder: Path, stem: str = "head") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.npz").write_bytes(self.to_npz())
        (folder / f"{stem}.json").write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, stem: str = "head") -> Head:
        where = folder / f"{stem}.json"
        try:
            return cls.from_parts(where.read_text(encoding="utf-8"), (folder / f"{stem}.npz").read_bytes())
        except (OSError, ValueError) as exc:
            raise BundleError(f"head {where}: cannot be read ({exc}); restore it or re-export the bundle") from None
