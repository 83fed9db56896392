"""Normal-only anomaly scoring (PatchCore, Roth et al. 2022), on the bundle's patch features.

A memory bank holds patch features of normal crops, thinned by greedy coreset selection to a fixed
size (each kept patch is the one farthest from those already kept, so rare normal patterns stay
and repeated sky does not crowd them out). A crop's anomaly map is each patch's distance to its
nearest bank patch; its score is the largest of them (the most unusual place in the crop).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

DEFAULT_BANK_SIZE = 512  # about 1 % of 200 frames x 4 tiles x 64 patches; scoring a crop then costs about 0.3 ms
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


def nearest_distances(queries: np.ndarray, bank: np.ndarray, block_elements: int = 1 << 22) -> np.ndarray:
    """Euclidean distance of each query row (M x C) to its nearest bank row (B x C).

    ``|q - b|^2 = |q|^2 - 2 q.b + |b|^2``: one matrix product per block of queries, the |q|^2
    term added after the minimum (it is the same for every b), in place, in blocks of about
    ``block_elements`` distances so the temporary stays in cache-sized memory."""
    bank = np.asarray(bank, np.float32)
    bank_t = np.ascontiguousarray(bank.T)
    bank_norms = np.einsum("ij,ij->i", bank, bank)
    out = np.empty(len(queries), np.float32)
    rows = max(1, block_elements // max(len(bank), 1))
    for start in range(0, len(queries), rows):
        block = queries[start:start + rows]
        inner = block @ bank_t
        inner *= -2
        inner += bank_norms
        nearest = inner.min(axis=1) + np.einsum("ij,ij->i", block, block)
        out[start:start + len(block)] = np.sqrt(np.maximum(nearest, 0))
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


ANOMALY = "anomaly"  # the class of a finding that no fault type explains but that differs from normal
DEFAULT_FALSE_ALARM_RATE = 0.01  # of normal crops, the share an alarm threshold lets through
CALIBRATION_SHARE = 0.2  # the last fifth of the normal crops (in time) sets the threshold
MIN_NORMALS = 10


class AnomalyFitError(ValueError):
    """Normal crops that cannot make an anomaly model."""


@dataclass(frozen=True)
class AnomalyModel:
    """What a region's normal crops look like: a patch memory bank, and the alarm threshold on the
    anomaly score that held-out normal crops of the same region calibrated."""

    region: str
    bank: np.ndarray  # B x C patch features (float16 at rest)
    threshold: float  # raw score above which a crop is an anomaly
    calibration: np.ndarray  # sorted scores of the held-out normal crops
    bundle_digest: str
    normals: int  # crops the model was fitted from
    version: int = 0

    def score(self, patches: np.ndarray) -> AnomalyMaps:
        return score_patches(patches, self.bank)

    def probability(self, scores: np.ndarray) -> np.ndarray:
        """A finding's score: 0.5 at the alarm threshold, towards 1 as the crop lies farther out,
        on the scale of how much held-out normal crops' scores spread (a logistic in raw score)."""
        spread = max(float(self.calibration.std()), 1e-6)
        return (1 / (1 + np.exp(-(np.asarray(scores, np.float64) - self.threshold) / spread))).astype(np.float32)

    def threshold_basis(self, false_alarm_rate: float) -> str:
        """What set the threshold, for the operator: the held-out normal crops, or the bank's covering
        radius where that is higher (see ``fit_anomaly``)."""
        held_out = f"{false_alarm_rate:.1%} false alarms on the last {len(self.calibration)}"
        above = self.threshold > held_out_threshold(self.calibration, false_alarm_rate)
        return f"the bank's covering radius, above {held_out}" if above else held_out

    def to_npz(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, bank=self.bank.astype(np.float16), calibration=self.calibration.astype(np.float32))
        return buffer.getvalue()

    @classmethod
    def from_parts(cls, region: str, npz: bytes, threshold: float, bundle_digest: str, normals: int,
                   version: int) -> AnomalyModel:
        with np.load(io.BytesIO(npz), allow_pickle=False) as data:
            return cls(region, data["bank"].astype(np.float32), threshold, data["calibration"], bundle_digest,
                       normals, version)


def held_out_threshold(calibration: np.ndarray, false_alarm_rate: float) -> float:
    """The score the held-out normal crops exceed at ``false_alarm_rate`` (at least one crop's)."""
    return float(np.quantile(calibration, 1 - false_alarm_rate, method="higher"))


def fit_anomaly(patches: np.ndarray, region: str, bundle_digest: str, bank_size: int = DEFAULT_BANK_SIZE,
                false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> AnomalyModel:
    """A region's anomaly model from the patch features (N x C x G x G) of its normal crops, in
    time order. The bank comes from the first crops, the threshold from the last fifth, which the
    bank never saw: neighbouring frames are near copies, so a threshold set on frames mixed in
    with the bank's would be far too low for the next run. Nor is it ever below the bank's covering
    radius (the farthest any fitted crop lies from the bank): the coreset keeps only some of the
    fitted patches, and a crop the model was fitted from is normal by definition (on the demo, a
    mast passing in the fitted frames was flagged when the held-out frames showed none)."""
    if len(patches) < MIN_NORMALS:
        raise AnomalyFitError(f"{len(patches)} normal crops are too few for an anomaly model of region {region}; "
                              f"give at least {MIN_NORMALS} (a few seconds of normal video)")
    if not 0 < false_alarm_rate < 1:
        raise AnomalyFitError("the false-alarm rate must be between 0 and 1")
    held = max(2, int(round(len(patches) * CALIBRATION_SHARE)))
    vectors = patch_vectors(patches[:-held]).reshape(-1, patches.shape[1])
    bank = vectors[greedy_coreset(vectors, bank_size)]
    calibration = np.sort(score_patches(patches[-held:], bank).scores)
    covering = float(score_patches(patches[:-held], bank).scores.max())
    threshold = max(held_out_threshold(calibration, false_alarm_rate), covering)
    return AnomalyModel(region, bank.astype(np.float16).astype(np.float32), threshold, calibration,
                        bundle_digest, len(patches))


def flag_anomalies(models: dict[str, AnomalyModel], patches: np.ndarray, regions: list[str],
                   is_fault: np.ndarray) -> dict[int, float]:
    """Crops that no fault type claims but that differ from their region's normal: crop index ->
    score (``AnomalyModel.probability``). Only regions with a model are looked at."""
    flagged: dict[int, float] = {}
    for region, model in models.items():
        index = np.array([i for i, r in enumerate(regions) if r == region and not is_fault[i]], np.int64)
        if not len(index):
            continue
        raw = model.score(patches[index]).scores
        alarm = raw > model.threshold
        flagged.update(zip(index[alarm].tolist(), model.probability(raw[alarm]).tolist()))
    return flagged


@dataclass(frozen=True)
class AnomalyEvaluation:
    shot: int
    episodes: int
    aurocs: np.ndarray  # per episode, 0..1

    @property
    def auroc(self) -> float:
        return float(self.aurocs.mean() * 100)

    @property
    def ci95(self) -> float:
        return float(1.96 * self.aurocs.std(ddof=1) / np.sqrt(len(self.aurocs)) * 100) if len(self.aurocs) > 1 else 0.0

    def as_json(self) -> dict:
        return {"auroc": round(self.auroc, 2), "ci95": round(self.ci95, 2), "shot": self.shot,
                "episodes": self.episodes}


def evaluate_anomaly(patches: np.ndarray, normal: np.ndarray, groups: list[str], shot: int, episodes: int,
                     seed: int = 0, test_per_side: int = 100, bank_size: int = DEFAULT_BANK_SIZE) -> AnomalyEvaluation:
    """Image-level AUROC when ``shot`` normal images are all the training data: per episode the
    bank is built from their patches, then normal images of other groups and anomalous images (up
    to ``test_per_side`` of each, drawn at random) are scored. ``patches``: N x C x G x G for
    every image, ``normal``: N booleans; the same function scores any backbone's patches (the
    anchor's too), so the recipe is the same for all."""
    normal = np.asarray(normal, bool)
    groups_arr = np.asarray(groups, dtype=object)
    normal_index, anomalous_index = np.flatnonzero(normal), np.flatnonzero(~normal)
    if len(set(groups_arr[normal_index].tolist())) < shot + 1 or not len(anomalous_index):
        raise AnomalyFitError(f"need normal images of more than {shot} groups and some anomalous ones; "
                              f"have {len(normal_index)} normal and {len(anomalous_index)} anomalous")
    rng = np.random.default_rng(seed)
    aurocs = []
    for _ in range(episodes):
        support: list[int] = []
        used: set[str] = set()
        for i in rng.permutation(normal_index):  # one image per group: K distinct views of normal
            if groups_arr[i] not in used:
                support.append(int(i))
                used.add(groups_arr[i])
            if len(support) == shot:
                break
        rest = np.array([i for i in normal_index if groups_arr[i] not in used])
        test_normal = rng.choice(rest, min(test_per_side, len(rest)), replace=False)
        test_anomalous = rng.choice(anomalous_index, min(test_per_side, len(anomalous_index)), replace=False)
        vectors = patch_vectors(patches[support]).reshape(-1, patches.shape[1])
        bank = vectors[greedy_coreset(vectors, bank_size, seed)]
        aurocs.append(auroc(score_patches(patches[test_normal], bank).scores,
                            score_patches(patches[test_anomalous], bank).scores))
    return AnomalyEvaluation(shot, episodes, np.asarray(aurocs))
