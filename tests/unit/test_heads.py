from dataclasses import replace

import numpy as np
import pytest

from inspector.adapt import (
    FLOOR_MARGIN,
    REFERENCE_VIEW_SPREAD,
    ClassSpec,
    adapt,
    fit_head,
    inner_loop,
    margin_scale,
    view_spread,
)
from inspector.backbone import Backbone
from inspector.bundle import AdaptationParams, load_bundle
from inspector.heads import Head
from tests.factories import GREY, RED, make_bundle, solid_crops

PARAMS = AdaptationParams(inner_steps=10, step_sizes=(2.0,), logit_scale=10.0)


def _clusters(n=10, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal([1, 0, 0], 0.1, (n, 3))
    b = rng.normal([0, 1, 0], 0.1, (n, 3))
    c = rng.normal([0, 0, 1], 0.1, (n, 3))
    return np.concatenate([a, b, c]).astype(np.float32), ["a"] * n + ["b"] * n + ["c"] * n


def test_inner_loop_separates_clusters():
    x, labels = _clusters()
    targets = np.array([{"a": 0, "b": 1, "c": 2}[v] for v in labels])
    weight, bias = inner_loop(x, targets, 3, PARAMS)
    assert weight.shape == (3, 3) and bias.shape == (3,)
    predicted = (x / np.linalg.norm(x, axis=1, keepdims=True) @ weight.T + bias).argmax(1)
    assert (predicted == targets).mean() == 1.0


def test_inner_loop_starts_class_agnostic():
    """With zero steps every class has the same weights: one init serves any number of classes."""
    x, _ = _clusters()
    weight, bias = inner_loop(x, np.zeros(len(x), int), 4, PARAMS, steps=0)
    assert np.all(weight == weight[0]) and np.all(bias == bias[0])


def test_fit_head_needs_every_class():
    x, labels = _clusters()
    with pytest.raises(ValueError, match="no examples"):
        fit_head(x, labels, ["a", "b", "c", "d"], [True, False, False, False], PARAMS)


def test_classify_respects_region_scope_and_threshold():
    x, labels = _clusters()
    head = fit_head(x, labels, ["a", "b", "c"], [True, False, False], PARAMS,
                    regions=[(), ("track",), ("catenary",)], threshold=0.6)
    pred = head.classify(x, "track")
    names = [head.classes[i] for i in pred.class_index]
    assert "c" not in names  # c applies to the catenary only
    assert pred.is_fault[np.array(labels) == "b"].all()
    assert not pred.is_fault[np.array(labels) == "a"].any()  # a is a normal class
    nothing = head.classify(x, "platform")
    assert (pred.score > 0).all() and set(head.classes[i] for i in nothing.class_index) == {"a"}
    strict = Head(head.classes, head.weight, head.bias, head.normal, head.regions, threshold=1.01)
    assert not strict.classify(x, "track").is_fault.any()


def test_region_with_no_class_in_scope():
    x, labels = _clusters()
    head = fit_head(x, labels, ["a", "b", "c"], [True, False, False], PARAMS, regions=[("track",)] * 3)
    pred = head.classify(x, "catenary")
    assert (pred.class_index == -1).all() and not pred.is_fault.any()


def test_save_and_load_roundtrip(tmp_path):
    x, labels = _clusters()
    head = fit_head(x, labels, ["a", "b", "c"], [True, False, False], PARAMS, regions=[(), ("t",), ()], version=3)
    head.save(tmp_path, "h")
    loaded = Head.load(tmp_path, "h")
    assert loaded.classes == head.classes and loaded.version == 3 and loaded.regions == head.regions
    np.testing.assert_allclose(loaded.predict(x), head.predict(x), rtol=1e-6)
    assert not list(tmp_path.glob("*.pkl"))


def test_head_shape_is_checked():
    with pytest.raises(ValueError):
        Head(("a", "b"), np.zeros((3, 4)), np.zeros(2), (True, False))


def test_a_crop_unlike_every_example_is_none_of_these():
    """The rejection rule: the top class is a fault, but the crop lies farther from that class's
    examples than any of them did: not called a fault."""
    x, labels = _clusters()
    head = fit_head(x, labels, ["a", "b", "c"], [True, False, False], PARAMS)
    typical = np.array([[0.0, 1.0, 0.0]], np.float32)  # a b like its examples
    odd = np.array([[0.0, 1.0, 0.0]], np.float32) + np.array([[-3.0, 1.0, -3.0]], np.float32)  # b-ish, far off
    for crop, called in ((typical, True), (odd, False)):
        pred = head.classify(crop, "anywhere")
        assert head.classes[pred.class_index[0]] == "b" and pred.is_fault[0] == called
    blind = Head(head.classes, head.weight, head.bias, head.normal, head.regions, head.threshold, head.logit_scale,
                 temperatures=head.temperatures, thresholds=head.thresholds)  # no prototypes: no rejection rule
    assert blind.classify(odd, "anywhere").is_fault[0]


def _reliability_gap(head: Head, crops: np.ndarray, truth: np.ndarray) -> float:
    """Largest |mean score - share right| over the bins of 10 that hold 50 crops or more."""
    logits = head.logits(crops, "r")
    right = logits.argmax(axis=1) == truth
    confidence = head.scores(logits).max(axis=1)
    bins = np.minimum((confidence * 10).astype(int), 9)
    return max(abs(confidence[bins == b].mean() - right[bins == b].mean()) for b in np.unique(bins)
               if (bins == b).sum() >= 50)


def test_scores_are_calibrated():
    """Overlapping clusters, over three draws: the temperature fitted on cross-fitted support logits
    brings the scores of unseen crops within 0.06 of how often the top class is right, in every
    populated bin; the same head's uncalibrated softmax is off by more."""
    sharp = AdaptationParams(inner_steps=100, step_sizes=(0.02,), logit_scale=30.0)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        centres = np.eye(8)[:3] * 1.2

        def draw(n):
            y = rng.integers(0, 3, n)
            return (centres[y] + rng.normal(0, 0.65, (n, 8))).astype(np.float32), y

        x, y = draw(300)
        head = fit_head(x, [str(v) for v in y], ["0", "1", "2"], [False] * 3, sharp)
        test, truth = draw(4000)
        assert 0.6 < (head.logits(test, "r").argmax(axis=1) == truth).mean() < 0.95  # a task with real errors
        assert _reliability_gap(head, test, truth) < 0.06, seed
        assert _reliability_gap(replace(head, temperatures={}), test, truth) > 0.06, seed


def test_each_fault_class_has_its_own_alarm_threshold():
    x, labels = _clusters()
    head = fit_head(x, labels, ["a", "b", "c"], [True, False, False], PARAMS)
    assert head.thresholds is not None and (head.thresholds[1:] >= 0.5).all()
    strict = head.with_thresholds(np.array([0.5, 0.999, 0.5], np.float32))
    pred = strict.classify(x, "anywhere")
    names = np.array(labels)
    assert not pred.is_fault[names == "b"].any() and pred.is_fault[names == "c"].all()


def test_one_calibration_prior_serves_every_support_size():
    """The inner loop's logits grow with the support's structure (two classes of one example keep
    growing, five of five stop early), so one temperature cannot calibrate both; in units of the
    head's own margin one prior fitted on episodes of labelled classes does. Checked on classes the
    prior never saw: mean score within 0.06 of the share right at 2-way 1-shot and 5-way 5-shot."""
    from inspector.adapt import episode_sharpness
    from inspector.fewshot import evaluate

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (24, 32))
    labels = np.repeat(np.arange(24), 40)
    embeddings = (centres[labels] + rng.normal(0, 1.3, (len(labels), 32))).astype(np.float32)
    names = [f"c{v}" for v in labels]
    base = labels < 12
    params = AdaptationParams(inner_steps=50, step_sizes=(1.0,), logit_scale=10.0)
    params = replace(params, sharpness=episode_sharpness(embeddings[base], np.array(names)[base], params, episodes=200))
    new = np.flatnonzero(~base)
    for way, shot in [(2, 1), (5, 5)]:
        result = evaluate(embeddings[new], [names[i] for i in new], way, shot, 10, 120, params, seed=1)
        assert 0.5 < result.correct.mean() < 0.97, (way, shot)  # tasks with real errors
        assert abs(result.confidence.mean() - result.correct.mean()) < 0.06, (way, shot, result.confidence.mean(),
                                                                               result.correct.mean())


def test_one_hard_normal_example_does_not_silence_a_fault_type():
    """Eight normal examples cannot show a 1 % false-alarm rate: the default threshold aims at the
    least they can show (1 in 8), so one normal that looks like the fault (a rejected finding)
    does not lift the threshold above most real fault crops (with the 1 % aim it did, in one draw
    of three: 0.5 % of them called)."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        fault = rng.normal([1.0, 0.2, 0.0], 0.15, (12, 3))
        normal = rng.normal([0.2, 1.0, 0.0], 0.15, (8, 3))
        normal[0] = [1.1, 0.1, 0.0]  # the hard one
        x = np.concatenate([fault, normal]).astype(np.float32)
        head = fit_head(x, ["fault"] * 12 + ["normal"] * 8, ["fault", "normal"], [False, True], PARAMS)
        test = rng.normal([1.0, 0.2, 0.0], 0.15, (200, 3)).astype(np.float32)
        called = head.classify(test, "anywhere").is_fault.mean()
        assert called > 0.5, (seed, called, head.thresholds)


def test_examples_that_are_near_copies_of_one_view_get_a_floor_from_the_other_classes():
    """Five frames of one passage show one view of the fault: a "none of these" floor drawn from
    them (their mutual similarity, 0.99) would admit only that view (a ../shared/tools video: 0 of
    13 found). Instead the crop must be nearer the view than the normal examples are: other
    instances of the fault are found, a blank crop unlike anything labelled is not. The operator is
    told; distinct examples draw no warning and keep their own floor."""
    rng = np.random.default_rng(0)
    view = np.array([1.0, 0.3, 0.0, 0.0])
    normal = rng.normal([0.0, 1.0, 0.0, 0.0], 0.15, (8, 4))
    labels = ["fault"] * 5 + ["normal"] * 8
    specs = [ClassSpec("fault", False), ClassSpec("normal", True)]
    copies = view + rng.normal(0, 0.005, (5, 4))
    head, quality = adapt(np.concatenate([copies, normal]).astype(np.float32), labels, specs, PARAMS)
    assert any("near copies of one view" in w for w in quality.warnings), quality.warnings
    assert head.similarity_floor[0] == -1 and 0 < head.view_floor[0] < 0.9 and head.view_floor[1] == -1
    others = rng.normal([1.0, 0.0, 0.5, 0.0], 0.1, (50, 4)).astype(np.float32)  # the fault, seen otherwise
    assert head.classify(others, "anywhere").is_fault.mean() > 0.9
    blank = np.array([[0.0, -0.3, 0.0, 1.0], [0.2, -0.3, 0.0, 1.0]], np.float32)  # like neither view
    assert head.predict(blank)[:, 0].min() > 0.5 and not head.classify(blank, "anywhere").is_fault.any()
    assert Head.from_parts(head.to_json(), head.to_npz()).view_floor.tolist() == head.view_floor.tolist()
    spread = view + rng.normal(0, 0.2, (5, 4))
    head, quality = adapt(np.concatenate([spread, normal]).astype(np.float32), labels, specs, PARAMS)
    assert not any("near copies" in w for w in quality.warnings), quality.warnings
    assert head.views is None and head.similarity_floor[0] > -1


def test_the_open_set_margins_are_in_units_of_the_bundles_view_spread():
    """The near-copy test and the floors' margin are cosines chosen for the reference bundle. A
    bundle whose views move twice as far from one frame to the next (``view_spread``, measured at
    export) gets both twice as wide: frames alike at 0.93 are distinct views to the reference and one
    view to it; a bundle that states no view spread keeps the reference margins."""
    rng = np.random.default_rng(0)
    view = np.array([1.0, 0.3, 0.0, 0.0])
    normal = rng.normal([0.0, 1.0, 0.0, 0.0], 0.15, (8, 4))
    frames = view + rng.normal(0, 0.08, (5, 4))  # least pair alike at 0.931 (centred)
    x = np.concatenate([frames, normal]).astype(np.float32)
    labels = ["fault"] * 5 + ["normal"] * 8
    specs = [ClassSpec("fault", False), ClassSpec("normal", True)]
    wider = replace(PARAMS, view_spread=2 * REFERENCE_VIEW_SPREAD)
    assert margin_scale(PARAMS) == 1.0 and margin_scale(wider) == pytest.approx(2.0)
    head, quality = adapt(x, labels, specs, PARAMS)
    assert not any("near copies" in w for w in quality.warnings) and head.similarity_floor[0] > -1
    head, quality = adapt(x, labels, specs, wider)
    assert any("near copies" in w for w in quality.warnings) and head.similarity_floor[0] == -1
    distinct = np.concatenate([view + rng.normal(0, 0.2, (5, 4)), normal]).astype(np.float32)
    floors = [adapt(distinct, labels, specs, p)[0].similarity_floor[0] for p in (PARAMS, wider)]
    assert floors[0] - floors[1] == pytest.approx(FLOOR_MARGIN, abs=1e-6)


def test_view_spread_measures_how_far_a_view_moves_between_frames(tmp_path):
    """Shifting and zooming a crop a little moves a mean-colour embedding not at all when the crop is
    one colour, and clearly when a colour edge crosses it."""
    bundle = load_bundle(make_bundle(tmp_path / "bundle", with_head=False))
    backbone = Backbone(bundle, "fp32", threads=1)
    solid = np.concatenate([solid_crops(GREY, 6), solid_crops(RED, 6, seed=1)])
    edged = solid.copy()
    for k, crop in enumerate(edged):
        crop[:, 8 + k:] = solid[(k + 6) % 12, :, 8 + k:]  # the other colour from a column on
    assert view_spread(backbone, solid) < 1e-3 < 0.01 < view_spread(backbone, edged)
