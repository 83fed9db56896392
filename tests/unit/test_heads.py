import numpy as np
import pytest

from inspector.adapt import fit_head, inner_loop
from inspector.bundle import AdaptationParams
from inspector.heads import Head

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
