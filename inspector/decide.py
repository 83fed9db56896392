"""The decision for each crop: the one classify step of the scan, the re-classification from
cached embeddings and the desktop app's live overlay, so the three can never disagree. Where a
region has an anomaly model, a crop no fault type claims but unlike that region's normal look is
an anomaly (``decide_crops``: the scan and the live overlay; re-classification keeps the stored
ones, it has no patch features)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from inspector.anomaly import ANOMALY, AnomalyModel, flag_anomalies
from inspector.backbone import Backbone
from inspector.heads import Head, Prediction

# The products of one batch are small; OpenBLAS's own threads would then spin between them on the
# cores the video decoder needs (an anomaly model cost the scan 0.28 of its frames/s, with one
# BLAS thread 0.10: docs/benchmarks.md).
_BLAS = ThreadpoolController()


def decide(head: Head, embeddings: np.ndarray, regions: Sequence[str]) -> Prediction:
    """One prediction per crop, each among the classes that apply in its own region."""
    regions = np.asarray(regions, dtype=object)
    n = len(embeddings)
    out = Prediction(np.full(n, -1, np.int64), np.zeros(n, np.float32), np.zeros(n, bool))
    for region in dict.fromkeys(regions.tolist()):
        index = np.flatnonzero(regions == region)
        pred = head.classify(embeddings[index], region)
        out.class_index[index] = pred.class_index
        out.score[index] = pred.score
        out.is_fault[index] = pred.is_fault
    return out


@dataclass(frozen=True)
class Decision:
    """Crops embedded and decided: the head's prediction, and which crops are anomalies (index ->
    anomaly score) where regions have anomaly models."""

    embeddings: np.ndarray
    prediction: Prediction
    anomalies: dict[int, float]

    def call(self, i: int, head: Head) -> tuple[str, float, bool] | None:
        """Crop ``i``'s (class, score, is a fault); None where no class applies to its region."""
        if i in self.anomalies:
            return ANOMALY, self.anomalies[i], True
        k = int(self.prediction.class_index[i])
        if k < 0:
            return None
        return head.classes[k], float(self.prediction.score[i]), bool(self.prediction.is_fault[i])


def decide_crops(backbone: Backbone, head: Head, crops: np.ndarray, regions: Sequence[str],
                 anomaly: dict[str, AnomalyModel] | None = None, batch_size: int = 64) -> Decision:
    """Embed crops (and their patch features, where anomaly models need them) in one ONNX run
    per batch, and decide each."""
    regions = list(regions)
    patches = None
    if anomaly and backbone.has_patches:
        embeddings, patches = backbone.embed_patches(crops, batch_size=batch_size)
    else:
        embeddings = backbone.embed(crops, batch_size=batch_size)
    with _BLAS.limit(limits=1, user_api="blas"):
        prediction = decide(head, embeddings, regions)
        flagged = flag_anomalies(anomaly, patches, regions, prediction.is_fault) if patches is not None else {}
    return Decision(embeddings, prediction, flagged)
