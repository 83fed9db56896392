"""Few-shot adaptation: the MAML inner loop, restricted to the head, in NumPy.

The backbone was meta-trained so that a few gradient steps on a linear softmax head over its
L2-normalised embeddings, from a class-agnostic initialisation (every class starts with the same
weights, so any number of classes works), give a good classifier. The bundle carries those
meta-learned steps, per-step step sizes and the initialisation; this module replays them over
every class the project knows (the bundle's base classes from their stored embeddings, the
operator's fault types from theirs), so adding a fault type never drops an old one.

Besides the head it calibrates its scores (temperature scaling per region, fitted on cross-fitted
logits of the support set: every example scored by a head that never saw it, in units of each
head's margin on its own examples, see ``self_margin``), sets
each fault class's alarm threshold for a target false-alarm rate on the normal examples, calibrates
"none of these" (per-class prototype similarity floors) and estimates quality by leave-one-out
over the operator's examples.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from inspector.backbone import Backbone
from inspector.bundle import AdaptationParams, Bundle
from inspector.errors import InspectorError
from inspector.heads import Head, l2_normalise, softmax

MIN_EXAMPLES = 3  # fewer examples of a class than this: warn the operator
MIN_LOO_ACCURACY = 0.8  # leave-one-out accuracy below this: warn the operator
FLOOR_MARGIN = 0.05  # how far below its least typical example a crop may sit and still match a class
NEAR_COPY_SIMILARITY = 0.95  # examples this alike (cosine, centred) are one view: frames of one passage
CALIBRATION_FOLDS = 5  # cross-fitting folds for the calibration logits
TARGET_FALSE_ALARMS = 0.01  # default alarm threshold: this share of the support's non-members above it
MIN_THRESHOLD = 0.5  # a fault is never called on a calibrated probability below this by default
MIN_CALIBRATION_SHOTS = 3  # a class's examples take part in fitting the temperature from this many on
PRIOR_WEIGHT = 30  # the bundle's sharpness counts as this many examples against the project's own
# FLOOR_MARGIN and NEAR_COPY_SIMILARITY are cosines chosen for the average-pooled bundle shipped in
# session 12, whose view spread (``view_spread`` on its base-head crops) is this; a bundle that states
# its own view spread gets both margins scaled by the ratio, so they mean the same in its geometry.
REFERENCE_VIEW_SPREAD = 0.0296
VIEW_SHIFT = 4  # pixels at the model's input size: one view from one video frame to the next ...
VIEW_ZOOM = 1.04  # ... with the camera a little nearer


class AdaptationError(InspectorError):
    """The support set cannot make a head (no examples, one class, broken embeddings)."""


@dataclass(frozen=True)
class ClassSpec:
    name: str
    normal: bool
    regions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Quality:
    """What the operator is shown after an addition."""

    loo_accuracy: float | None  # over the operator's examples; None when none could be judged
    examples: dict[str, int]
    warnings: tuple[str, ...]

    @property
    def trustworthy(self) -> bool:
        return not self.warnings


def view_spread(backbone: Backbone, crops: np.ndarray) -> float:
    """How far one view moves in the embedding from one video frame to the next: the median centred
    cosine distance between each crop (N x S x S x 3, at the model's input size) and itself shifted
    ``VIEW_SHIFT`` px and zoomed ``VIEW_ZOOM``. Export writes it into ``bundle.json``."""
    import cv2

    height, width = crops.shape[1:3]
    move = np.float32([[VIEW_ZOOM, 0, VIEW_SHIFT - (VIEW_ZOOM - 1) * width / 2],
                       [0, VIEW_ZOOM, VIEW_SHIFT / 2 - (VIEW_ZOOM - 1) * height / 2]])
    moved = np.stack([cv2.warpAffine(crop, move, (width, height), borderMode=cv2.BORDER_REFLECT) for crop in crops])
    still, shifted = backbone.embed(crops).astype(np.float64), backbone.embed(moved).astype(np.float64)
    centre = still.mean(axis=0)
    similarity = np.einsum("nd,nd->n", l2_normalise(still - centre), l2_normalise(shifted - centre))
    return float(np.median(1.0 - similarity))


def margin_scale(params: AdaptationParams) -> float:
    """The open-set margins' unit for this bundle: its view spread over the reference bundle's (1 for
    bundles that state none, which were all measured against the reference constants)."""
    return params.view_spread / REFERENCE_VIEW_SPREAD if params.view_spread else 1.0


def inner_loop(features: np.ndarray, targets: np.ndarray, num_classes: int, params: AdaptationParams,
               steps: int | None = None, step_size: float | None = None,
               scope: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gradient descent on the class-balanced cross-entropy of ``scale * (W x + b)``, x L2-normalised.

    Balanced: each class weighs the same whatever its number of examples, as in the N-way K-shot
    episodes the backbone was meta-trained on, so five examples of a new fault are not drowned by
    hundreds of a known one. ``scope`` (N x C, bool) restricts each example's softmax to the
    classes that apply in its region, exactly as at inference: classes of different regions then
    never compete, and adding a catenary fault leaves every track class untouched.
    ``steps``/``step_size`` override the bundle's schedule; by default it is replayed exactly.
    """
    x = l2_normalise(features.astype(np.float64))
    n, dim = x.shape
    weight = np.full((num_classes, dim), params.init_weight_scale / np.sqrt(dim))
    bias = np.full(num_classes, params.init_bias)
    onehot = np.eye(num_classes)[targets]
    counts = np.bincount(targets, minlength=num_classes)
    allowed = np.ones((n, num_classes), bool) if scope is None else np.asarray(scope, bool)
    # Each region is its own balanced N-way problem: an example weighs 1 / (its class's examples x
    # the classes in its scope), so classes added elsewhere do not change a region's loss at all.
    example_weight = 1.0 / (counts[targets] * (allowed & (counts > 0)).sum(axis=1))
    blocked = None if scope is None else ~allowed
    total = steps if steps is not None else params.inner_steps
    for step in range(total):
        logits = params.logit_scale * (x @ weight.T + bias)
        if blocked is not None:
            logits[blocked] = -np.inf
        error = (softmax(logits) - onehot) * (params.logit_scale * example_weight[:, None])
        lr = step_size if step_size is not None else params.step_size(min(step, params.inner_steps - 1))
        weight -= lr * (error.T @ x + params.weight_decay * weight)
        bias -= lr * error.sum(axis=0)
    return weight.astype(np.float32), bias.astype(np.float32)


def region_centers(embeddings: np.ndarray, targets: np.ndarray, classes: Sequence[ClassSpec],
                   example_regions: Sequence[str]) -> dict[str, np.ndarray]:
    """Per region, the mean embedding of the examples that can occur there: cut in that region, or
    cut anywhere (``*``: boxes, pictures) with a class in scope there. Crops cut in another region
    never count: a normal class that spans the catenary and the track must not pull the track's
    centre towards the sky. ``*``, the mean of all, serves any other region."""
    x = embeddings.astype(np.float64)
    where = np.asarray(example_regions, dtype=object)
    centers = {"*": x.mean(axis=0)}
    for region in sorted({r for c in classes for r in c.regions}):
        members = [k for k, c in enumerate(classes) if not c.regions or region in c.regions]
        chosen = (where == region) | ((where == "*") & np.isin(targets, members))
        centers[region] = x[chosen].mean(axis=0) if chosen.any() else x[np.isin(targets, members)].mean(axis=0)
    return centers


def scope_mask(classes: Sequence[ClassSpec], example_regions: Sequence[str]) -> np.ndarray:
    """N x C: which classes apply in each example's region (``*``: the example fits anywhere)."""
    return np.array([[not c.regions or region == "*" or region in c.regions for c in classes]
                     for region in example_regions], bool)


def _check_support(embeddings: np.ndarray, labels: Sequence[str], classes: Sequence[ClassSpec]) -> np.ndarray:
    if len(labels) == 0 or embeddings.size == 0:
        raise AdaptationError("no examples to learn from; label at least one example of each fault type")
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise AdaptationError(f"{len(labels)} labels but embeddings of shape {embeddings.shape}")
    if not np.isfinite(embeddings).all():
        raise AdaptationError("some example embeddings are NaN or infinite; the bundle or the crops are "
                              "broken, re-export the bundle or relabel those examples")
    if (np.linalg.norm(embeddings, axis=1) < 1e-8).any():
        raise AdaptationError("some example embeddings are empty (all zero); check the crops are not blank")
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise AdaptationError(f"class names must be unique, got {names}")
    present = set(labels)
    if len(present) < 2:
        raise AdaptationError(f"only one class ({next(iter(present))}) has examples; a head needs at least two, "
                              "add normal examples or another fault type")
    missing = [n for n in names if n not in present]
    if missing:
        raise AdaptationError(f"no examples for {', '.join(missing)}; label at least one of each")
    unknown = present - set(names)
    if unknown:
        raise AdaptationError(f"examples labelled {', '.join(sorted(unknown))}, which is not a known class")
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[label] for label in labels])


def _prototypes(x: np.ndarray, targets: np.ndarray, classes: Sequence[ClassSpec],
                one_view: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit prototypes per class and, for fault classes, a floor under which a crop is "none of
    these": its least typical example's leave-one-out similarity, less ``margin``. A class whose
    examples are near copies of one view (``one_view``) gets none here (``_view_floors``)."""
    prototypes = np.zeros((len(classes), x.shape[1]), np.float32)
    floors = np.full(len(classes), -1.0, np.float32)
    for k, spec in enumerate(classes):
        members = x[targets == k]
        total = members.sum(axis=0)
        prototypes[k] = total / max(np.linalg.norm(total), 1e-12)
        if spec.normal or len(members) < 2 or one_view[k]:
            continue  # normal classes are never called as faults; one example or one view cannot calibrate
        rest = total[None, :] - members
        rest /= np.maximum(np.linalg.norm(rest, axis=1, keepdims=True), 1e-12)
        similarity = np.einsum("nd,nd->n", members, rest)
        floors[k] = float(similarity.min()) - margin
    return prototypes, floors


def _view_floors(plain: np.ndarray, targets: np.ndarray, one_view: np.ndarray, scope: np.ndarray,
                 margin: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """For fault classes whose examples are near copies of one view: the view (unit mean of the
    plain embeddings) and a floor, the plain similarity of the view to the nearest example of any
    other class in its regions, less ``margin``. Five frames of one passage cannot say how far the
    fault's other instances lie (a sleeper video: their own floor admitted none of 13 passages), but
    a crop farther from the view than the normal examples are is unlike anything labelled (a blank
    tile). Plain embeddings, since in the head's centred space two views lie opposite each other
    whatever they show. None when no class needs it."""
    views = np.zeros((len(one_view), plain.shape[1]), np.float32)
    floors = np.full(len(one_view), -1.0, np.float32)
    for k in np.flatnonzero(one_view):
        members = targets == k
        others = ~members & scope[:, k]
        if not others.any():
            continue
        total = plain[members].sum(axis=0)
        views[k] = total / max(np.linalg.norm(total), 1e-12)
        floors[k] = float((plain[others] @ views[k]).max()) - margin
    return (views, floors) if (floors > -1).any() else (None, None)


def _near_copies(members: np.ndarray, alike: float) -> bool:
    """Whether two or more examples are all alike at ``alike`` or more: five frames of one passage.
    Their spread says nothing of the fault's (``_view_floors``), and the operator is told."""
    if len(members) < 2:
        return False
    similarity = members @ members.T
    return bool(similarity[np.triu_indices(len(members), 1)].min() >= alike)


def self_margin(logits: np.ndarray, targets: np.ndarray) -> float:
    """How sure a head is of its own examples: the class-balanced mean, over examples, of the logit
    of an example's class less the mean of its other in-scope logits (out of scope: -inf).

    The inner loop's logits grow with the support's structure, not with the evidence: on one
    example a class of two classes they keep growing for all 50 steps, on five of five classes they
    stop early. Measured in this unit, the temperature that calibrates new crops is nearly the same
    for 2- and 5-way, 1- and 5-shot tasks of one domain (docs/benchmarks.md, "Calibration"), so a
    domain's calibration carries over between supports of any size."""
    finite = np.isfinite(logits)
    rows = np.arange(len(logits))
    others = np.where(finite, logits, 0.0).sum(axis=1) - logits[rows, targets]
    rivals = finite.sum(axis=1) - 1
    margin = logits[rows, targets] - others / np.maximum(rivals, 1)
    counts = np.bincount(targets)
    weight = np.where(rivals > 0, 1.0 / counts[targets], 0.0)
    return max(float((weight * margin).sum() / max(weight.sum(), 1e-12)), 1e-3)


def _scoped_logits(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, scope: np.ndarray, scale: float) -> np.ndarray:
    return np.where(scope, scale * (x @ weight.T + bias), -np.inf)


def _cross_fitted_logits(x: np.ndarray, targets: np.ndarray, scope: np.ndarray, where: np.ndarray, num_classes: int,
                         params: AdaptationParams, steps: int | None, step_size: float | None) -> np.ndarray:
    """N x C logits, each example's from a head fitted without its fold (classes stratified over
    the folds, a fixed shuffle): what a crop the head never saw looks like to it, in units of that
    head's ``self_margin`` on its examples of the same region (``where``: regions are calibrated
    apart, so a fault type added on the catenary leaves every track score as it was)."""
    rng = np.random.default_rng(0)
    fold = np.empty(len(x), np.int64)
    for k in range(num_classes):
        members = np.flatnonzero(targets == k)
        fold[members] = rng.permutation(len(members)) % CALIBRATION_FOLDS
    logits = np.full((len(x), num_classes), -np.inf)
    for f in range(CALIBRATION_FOLDS):
        held = fold == f
        if not held.any():
            continue
        weight, bias = inner_loop(x[~held], targets[~held], num_classes, params, steps, step_size, scope[~held])
        own = _scoped_logits(x[~held], weight, bias, scope[~held], params.logit_scale)
        for region in set(where[held].tolist()):
            seen = where[~held] == region
            margin = self_margin(own[seen], targets[~held][seen]) if seen.any() else self_margin(own, targets[~held])
            mine = held & (where == region)
            logits[mine] = _scoped_logits(x[mine], weight, bias, scope[mine], params.logit_scale) / margin
    return logits


def fit_temperature(logits: np.ndarray, targets: np.ndarray, weight: np.ndarray) -> float:
    """The temperature T minimising the weighted cross-entropy of softmax(logits / T) (classes out of
    scope at -inf) against smoothed targets: as in Platt scaling, a class of n examples is aimed at
    (n + 1) / (n + 2), not 1, so a separable handful of examples does not give certainty. The loss
    is convex in beta = 1 / T; a golden-section search over log beta finds it whatever the scale
    of the logits. Logits that point the wrong way drive beta to its floor: uniform probabilities
    (no alarm), never inverted ones."""
    finite = np.isfinite(logits)
    raw = np.where(finite, logits, 0.0)
    rows = np.arange(len(raw))
    counts = np.bincount(targets)
    others = np.maximum(finite.sum(axis=1) - 1, 1)
    spread = 1.0 / (counts[targets] + 2)  # the probability mass the target gives up
    aim = np.where(finite, (spread / others)[:, None], 0.0)
    aim[rows, targets] = np.where(finite.sum(axis=1) > 1, 1.0 - spread, 1.0)
    aimed = (aim * raw).sum(axis=1)
    w = weight / weight.sum()

    def loss(log_beta: float) -> float:
        z = np.where(finite, np.exp(log_beta) * raw, -np.inf)
        top = z.max(axis=1)
        return float(w @ (top + np.log(np.exp(z - top[:, None]).sum(axis=1)) - np.exp(log_beta) * aimed))

    low, high = -14.0, 6.0
    golden = (np.sqrt(5) - 1) / 2
    a, b = high - golden * (high - low), low + golden * (high - low)
    fa, fb = loss(a), loss(b)
    while high - low > 1e-4:
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - golden * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + golden * (high - low)
            fb = loss(b)
    return float(np.exp(-(low + high) / 2))


def calibrate(relative: np.ndarray, targets: np.ndarray, classes: Sequence[ClassSpec], scope: np.ndarray,
              example_regions: Sequence[str], margins: dict[str, float],
              prior: float | None = None) -> tuple[dict[str, float], np.ndarray]:
    """A temperature per region, and each fault class's default alarm threshold: the calibrated
    score that at most ``TARGET_FALSE_ALARMS`` of the other in-scope examples exceed, or one of
    them when they are too few to show that rate (never below ``MIN_THRESHOLD``).

    ``relative`` are cross-fitted logits in units of their heads' margins. Each region's sharpness
    (1 / the temperature of those units) is fitted on the ones of the examples cut there whose
    class keeps ``MIN_CALIBRATION_SHOTS`` or more (a class with one example vanishes from its own
    fold), each class weighing the same as in the inner loop, and shrunk towards the bundle's
    ``prior`` (fitted on few-shot episodes of its base examples) as if the prior were
    ``PRIOR_WEIGHT`` examples: five examples of a new fault type move it a little, hundreds of the
    bundle's base examples decide it. The head's temperature in a region is then its margin there
    (``margins``) over that sharpness. Regions are calibrated apart, as they are adapted apart."""
    where = np.asarray(example_regions, dtype=object)
    counts = np.bincount(targets, minlength=len(classes))
    usable = counts[targets] >= MIN_CALIBRATION_SHOTS
    weight = 1.0 / (counts[targets] * (scope & (counts > 0)).sum(axis=1))
    sharpness: dict[str, float] = {}
    for region in sorted(set(where.tolist())):
        mine = (where == region) & usable
        if mine.any():
            fitted = 1.0 / fit_temperature(relative[mine], targets[mine], weight[mine])
            sharpness[region] = fitted if prior is None else float(np.exp(
                (mine.sum() * np.log(fitted) + PRIOR_WEIGHT * np.log(prior)) / (mine.sum() + PRIOR_WEIGHT)))
        else:  # no example to fit on: the prior, or without one the margin itself as the unit
            sharpness[region] = prior if prior is not None else 1.0
    temperatures = {region: margins[region] / value for region, value in sharpness.items()}
    probabilities = softmax(relative * np.array([sharpness[r] for r in where.tolist()])[:, None])
    thresholds = np.full(len(classes), MIN_THRESHOLD)
    for k, spec in enumerate(classes):
        negatives = scope[:, k] & (targets != k)
        if not spec.normal and negatives.any():
            # n examples cannot show a false-alarm rate below 1 / n: aim at the least they can show
            rate = max(TARGET_FALSE_ALARMS, 1 / negatives.sum())
            thresholds[k] = max(MIN_THRESHOLD, float(np.quantile(probabilities[negatives, k], 1 - rate)))
    return temperatures, np.minimum(thresholds, 0.999).astype(np.float32)


def episode_sharpness(embeddings: np.ndarray, labels: Sequence[str], params: AdaptationParams,
                      episodes: int = 100, seed: int = 0) -> float:
    """The sharpness that calibrates this inner loop on new few-shot tasks: 1 / the temperature
    fitted on the query logits of N-way K-shot episodes (2 and 5 ways, 1 and 5 shots, 5 queries)
    drawn from labelled embeddings, each episode's head adapted on its support only and its logits
    divided by its ``self_margin``. Export stores it in the bundle as the prior that small support
    sets lean on."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    by_class = {name: np.flatnonzero(labels == name) for name in np.unique(labels)}
    logits, targets = [], []
    for number in range(episodes):
        way, shot = ((2, 1), (2, 5), (5, 1), (5, 5))[number % 4]
        classes = [c for c, idx in by_class.items() if len(idx) >= shot + 5]
        if len(classes) < way:
            continue
        chosen = rng.choice(classes, way, replace=False)
        picks = [rng.choice(by_class[c], shot + 5, replace=False) for c in chosen]
        support = np.concatenate([p[:shot] for p in picks])
        query = np.concatenate([p[shot:] for p in picks])
        centre = embeddings[support].mean(axis=0)
        x = l2_normalise(embeddings[support].astype(np.float64) - centre)
        truth = np.repeat(np.arange(way), shot)
        weight, bias = inner_loop(x, truth, way, params)
        margin = self_margin(params.logit_scale * (x @ weight.T + bias), truth)
        q = l2_normalise(embeddings[query].astype(np.float64) - centre)
        logits.append(params.logit_scale * (q @ weight.T + bias) / margin)
        targets.append(np.repeat(np.arange(way), 5))
    if not logits:
        raise AdaptationError("too few labelled embeddings to draw calibration episodes (5 per class needed)")
    # Pad to five columns (-inf: a class not in the episode) so all episodes fit one problem.
    padded = np.full((sum(len(l_) for l_ in logits), 5), -np.inf)
    row = 0
    for block in logits:
        padded[row:row + len(block), :block.shape[1]] = block
        row += len(block)
    target = np.concatenate(targets)
    return 1.0 / fit_temperature(padded, target, np.ones(len(target)))


_PRIORS: dict[str, float | None] = {}  # bundle digest -> calibration prior from its base examples


def adaptation_for(bundle: Bundle) -> AdaptationParams:
    """The bundle's adaptation with its calibration prior; bundles exported before the prior
    existed get it from their base examples (once per process)."""
    if bundle.adaptation.sharpness is not None or bundle.base_examples is None:
        return bundle.adaptation
    if bundle.digest not in _PRIORS:
        try:
            embeddings, labels = bundle.load_base_examples()
            _PRIORS[bundle.digest] = episode_sharpness(embeddings.astype(np.float32), labels, bundle.adaptation)
        except InspectorError:  # too few base examples per class to draw episodes
            _PRIORS[bundle.digest] = None
    return replace(bundle.adaptation, sharpness=_PRIORS[bundle.digest])


def _loo_accuracy(x: np.ndarray, targets: np.ndarray, scope: np.ndarray, judged: np.ndarray, num_classes: int,
                  params: AdaptationParams, steps: int | None, step_size: float | None) -> float | None:
    counts = np.bincount(targets, minlength=num_classes)
    hits, tried = 0, 0
    for i in np.flatnonzero(judged):
        if counts[targets[i]] < 2:
            continue  # the only example of its class: leaving it out removes the class
        keep = np.arange(len(x)) != i
        weight, bias = inner_loop(x[keep], targets[keep], num_classes, params, steps, step_size, scope[keep])
        logits = _scoped_logits(x[i], weight, bias, scope[i], params.logit_scale)
        hits += int(np.argmax(logits) == targets[i])
        tried += 1
    return hits / tried if tried else None


def adapt(embeddings: np.ndarray, labels: Sequence[str], classes: Sequence[ClassSpec], params: AdaptationParams,
          example_regions: Sequence[str] | None = None, judged: np.ndarray | None = None, threshold: float = 0.5,
          version: int = 1, info: dict | None = None, steps: int | None = None,
          step_size: float | None = None, thresholds: dict[str, float] | None = None) -> tuple[Head, Quality]:
    """A head over ``classes`` from labelled embeddings, and its quality estimate.

    ``example_regions`` says where each example was cut (default: anywhere); ``judged`` marks the
    examples the leave-one-out estimate is computed on (the operator's, typically; the bundle's
    base examples were evaluated when it was made). ``thresholds`` are alarm thresholds the
    operator set by hand (class name -> calibrated score); other classes get the default.
    """
    targets = _check_support(embeddings, labels, classes)
    where = list(example_regions) if example_regions is not None else ["*"] * len(embeddings)
    centers = region_centers(embeddings, targets, classes, where)
    x = l2_normalise(embeddings.astype(np.float64) - np.stack([centers.get(r, centers["*"]) for r in where]))
    scope = scope_mask(classes, where)
    if not scope[np.arange(len(x)), targets].all():
        raise AdaptationError("an example lies in a region its class does not apply to")
    present = np.bincount(targets, minlength=len(classes)) > 0
    for region in sorted(set(where)):
        rivals = [classes[k].name for k in np.flatnonzero(scope[where.index(region)] & present)]
        if len(rivals) < 2:
            raise AdaptationError(f"in region {region} only {rivals[0]} has examples, so everything there would be "
                                  f"{rivals[0]}; add normal examples of that region")
    weight, bias = inner_loop(x, targets, len(classes), params, steps, step_size, scope)
    # fault classes whose examples are near copies of one view: their spread says nothing of the fault's
    scale = margin_scale(params)
    alike = 1.0 - (1.0 - NEAR_COPY_SIMILARITY) * scale
    one_view = np.array([not spec.normal and _near_copies(x[targets == k], alike) for k, spec in enumerate(classes)])
    prototypes, floors = _prototypes(x.astype(np.float32), targets, classes, one_view, FLOOR_MARGIN * scale)
    views, view_floors = _view_floors(l2_normalise(embeddings.astype(np.float32)), targets, one_view, scope,
                                      FLOOR_MARGIN * scale)
    judged = np.ones(len(x), bool) if judged is None else np.asarray(judged, bool)
    regions = np.asarray(where, dtype=object)
    own = _scoped_logits(x, weight, bias, scope, params.logit_scale)
    margins = {region: self_margin(own[regions == region], targets[regions == region]) for region in set(where)}
    relative = _cross_fitted_logits(x, targets, scope, regions, len(classes), params, steps, step_size)
    temperatures, alarm = calibrate(relative, targets, classes, scope, where, margins, params.sharpness)
    for k, spec in enumerate(classes):
        if thresholds and spec.name in thresholds:
            alarm[k] = thresholds[spec.name]
    head = Head(tuple(c.name for c in classes), weight, bias, tuple(c.normal for c in classes),
                tuple(tuple(c.regions) for c in classes), threshold, params.logit_scale, version, dict(info or {}),
                prototypes, floors, {r: c.astype(np.float32) for r, c in centers.items()}, temperatures, alarm,
                views, view_floors)
    loo = _loo_accuracy(x, targets, scope, judged, len(classes), params, steps, step_size)
    counts = Counter(labels)
    judged_classes = {labels[i] for i in np.flatnonzero(judged)}
    warnings = [f"only {counts[name]} example(s) of {name}: label at least {MIN_EXAMPLES}"
                for name in sorted(judged_classes) if counts[name] < MIN_EXAMPLES]
    warnings += [f"the {counts[spec.name]} examples of {spec.name} are near copies of one view, so they cannot show "
                 f"how much {spec.name} varies: the app calls it wherever a crop is nearer to them than the normal "
                 "examples are; label it where it looks different too (other passages) for sharper decisions"
                 for k, spec in enumerate(classes) if spec.name in judged_classes and one_view[k]]
    if loo is not None and loo < MIN_LOO_ACCURACY:
        warnings.append(f"leave-one-out accuracy is {loo:.0%}: the examples do not separate the classes well; "
                        "add clearer examples before trusting the results")
    return head, Quality(loo, dict(counts), tuple(warnings))


def fit_head(embeddings: np.ndarray, labels: Sequence[str], classes: Sequence[str],
             normal: Sequence[bool], params: AdaptationParams,
             regions: Sequence[Sequence[str]] = (), threshold: float = 0.5,
             steps: int | None = None, step_size: float | None = None, version: int = 1) -> Head:
    """A head over named classes (no quality estimate): for base heads fitted on many examples."""
    specs = [ClassSpec(name, bool(flag), tuple(regions[i]) if regions else ())
             for i, (name, flag) in enumerate(zip(classes, normal))]
    by_name = {spec.name: spec for spec in specs}
    where = [by_name[label].regions[0] if label in by_name and by_name[label].regions else "*" for label in labels]
    try:
        head, _ = adapt(embeddings, labels, specs, params, where, judged=np.zeros(len(labels), bool),
                        threshold=threshold, version=version, steps=steps, step_size=step_size)
    except AdaptationError as exc:
        raise ValueError(str(exc)) from None
    return head


def tta_views(crops: np.ndarray) -> list[np.ndarray]:
    """The original crops and fixed augmented copies (flip, brighter, darker, shifted)."""
    import albumentations as A

    fixed = [A.HorizontalFlip(p=1.0),
             A.RandomBrightnessContrast(brightness_limit=(0.15, 0.15), contrast_limit=(0.0, 0.0), p=1.0),
             A.RandomBrightnessContrast(brightness_limit=(-0.15, -0.15), contrast_limit=(0.0, 0.0), p=1.0),
             A.Affine(translate_percent={"x": (0.06, 0.06), "y": (0.06, 0.06)}, border_mode=1, p=1.0)]
    return [crops] + [np.stack([t(image=c)["image"] for c in crops]) for t in fixed]


def embed_support(backbone: Backbone, crops: np.ndarray, tta: bool = False) -> np.ndarray:
    """Embeddings of support crops; with ``tta`` each is the mean over its augmented views."""
    if not tta:
        return backbone.embed(crops)
    views = [l2_normalise(backbone.embed(v)) for v in tta_views(crops)]
    return np.mean(views, axis=0).astype(np.float32)
