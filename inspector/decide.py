"""The decision for each crop: the one classify step of the scan, the re-classification from
cached embeddings and the desktop app's live overlay, so the three can never disagree."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inspector.heads import Head, Prediction


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
