"""Normal-only anomaly scoring (PatchCore, Roth et al. 2022), on the bundle's patch features.

A memory bank holds patch features of normal crops, thinned by greedy coreset selection to a fixed
size (each kept patch is the one farthest from those already kept, so rare normal patterns stay
and repeated sky does not crowd them out). A crop's anomaly map is each patch's distance to its
nearest bank patch; its score is the largest of them (the most unusual place in the crop).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BANK_SIZE = 4096
PROJECTION_DIM = 128  # coreset selection runs on a random projection (PatchCore's speed-up)


def patch_vectors(patches: np.ndarray) -> np.ndarray:
    """N x C x G x G feature maps -> N x (G*G) x C patch vectors (row-major over the grid)."""
    n, c, h, w = patches.shape
    return np.ascontiguousarray(patches.reshape(n, c, h * w).transpose(0, 2, 1), dtype=np.float32)


def greedy_coreset(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Indices of ``size`` rows of ``vectors`` (M x C) chosen by greedy k-centre selection on a
    Johnson-Lindenstrauss projection; all rows when there are no more than ``size``."""
    if len(vectors) <= size:
        return np.arange(len(vectors))
    rng = np.random.default_rng(seed)
    dim = vectors.shape[1]
    projection = rng.normal(0, 1 / np.sqrt(PROJECTION_DIM), (dim, PROJECTION_DIM)).astype(np.float32) \
        if dim > PROJECTION_DIM else np.eye(dim, dtype=np.float32)
    projected = vectors @ projection
    norms = np.einsum("ij,ij->i", projected, projected)
    chosen = np.empty(size, np.int64)
    chosen[0] = int(rng.integers(len(vectors)))
    nearest = np.full(len(vectors), np.inf, np.float32)
    for k in range(1, size):
        centre = projected[chosen[k - 1]]
        distance = norms - 2 * (projected @ centre) + norms[chosen[k - 1]]
        np.minimum(nearest, distance, out=nearest)
        chosen[k] = int(nearest.argmax())
    return chosen


def nearest_distances(queries: np.ndarray, bank: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Euclidean distance of each query row (M x C) to its nearest bank row (B x C)."""
    bank = np.asarray(bank, np.float32)
    bank_norms = np.einsum("ij,ij->i", bank, bank)
    out = np.empty(len(queries), np.float32)
    for start in range(0, len(queries), chunk):
        block = queries[start:start + chunk]
        squared = np.einsum("ij,ij->i", block, block)[:, None] - 2 * (block @ bank.T) + bank_norms[None, :]
        out[start:start + len(block)] = np.sqrt(np.maximum(squared.min(axis=1), 0))
    return out


@dataclass(frozen=True)
class AnomalyMaps:
    scores: np.ndarray  # N: the crop's anomaly score (its most unusual patch)
    maps: np.ndarray  # N x G x G: each patch's distance to normal


def score_patches(patches: np.ndarray, bank: np.ndarray) -> AnomalyMaps:
    """Anomaly maps and scores of N crops' patch features (N x C x G x G) against a bank."""
    n, _, h, w = patches.shape
    distances = nearest_distances(patch_vectors(patches).reshape(n * h * w, -1), bank).reshape(n, h, w)
    return AnomalyMaps(distances.reshape(n, -1).max(axis=1), distances)


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Area under the ROC curve: the chance that an anomalous crop scores above a normal one,
    ties counting half (the Mann-Whitney U statistic, from mid-ranks)."""
    scores = np.concatenate([normal, anomalous]).astype(np.float64)
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2  # the mean rank of each distinct value
    ranks = mid_ranks[inverse]
    u = ranks[len(normal):].sum() - len(anomalous) * (len(anomalous) + 1) / 2
    return float(u / (len(normal) * len(anomalous)))
