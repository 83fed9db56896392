"""The anomaly scoring core: coreset, nearest-neighbour distances, AUROC, fitting and calibration."""
import numpy as np
import pytest

from inspector.anomaly import (
    AnomalyFitError,
    AnomalyModel,
    auroc,
    evaluate_anomaly,
    fit_anomaly,
    flag_anomalies,
    greedy_coreset,
    nearest_distances,
)


def test_the_coreset_keeps_the_rare_patterns_that_random_sampling_loses():
    rng = np.random.default_rng(0)
    common = rng.normal(0, 0.01, (2000, 16)).astype(np.float32)  # sky, over and over
    rare = np.eye(16, dtype=np.float32)[:5] * 10  # five patterns seen once each
    vectors = np.concatenate([common, rare])
    chosen = set(greedy_coreset(vectors, 8).tolist())
    assert set(range(2000, 2005)) <= chosen
    assert len(greedy_coreset(vectors[:5], 8)) == 5  # fewer rows than asked: all of them


def test_nearest_distances_match_brute_force():
    rng = np.random.default_rng(1)
    queries, bank = rng.normal(size=(300, 24)).astype(np.float32), rng.normal(size=(70, 24)).astype(np.float32)
    brute = np.sqrt(((queries[:, None] - bank[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(nearest_distances(queries, bank, block_elements=64 * 70), brute, atol=1e-4)


def test_auroc_counts_pairs_and_ties():
    assert auroc(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == 1.0
    assert auroc(np.array([0.3, 0.4]), np.array([0.1, 0.2])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.5
    assert auroc(np.array([0.1, 0.3]), np.array([0.2, 0.4])) == 0.75


def _patches(count: int, rng, anomalous: bool = False) -> np.ndarray:
    """N x 8 x 4 x 4 patch maps: normal ones near one pattern; an anomaly has one patch far off."""
    maps = rng.normal(0, 0.1, (count, 8, 4, 4)).astype(np.float32) + 1
    if anomalous:
        maps[:, :, 2, 1] += 3
    return maps


def test_a_fitted_model_flags_the_odd_patch_and_shows_where():
    rng = np.random.default_rng(2)
    model = fit_anomaly(_patches(50, rng), "catenary", "digest", bank_size=200)
    assert len(model.bank) == 200 and len(model.calibration) == 10  # the last fifth set the threshold
    odd = model.score(_patches(3, rng, anomalous=True))
    normal = model.score(_patches(20, rng))
    assert (odd.scores > model.threshold).all() and (normal.scores <= model.threshold).mean() >= 0.9
    assert all(np.unravel_index(m.argmax(), m.shape) == (2, 1) for m in odd.maps)
    assert model.probability(np.array([model.threshold]))[0] == pytest.approx(0.5)
    assert model.probability(odd.scores).min() > 0.9
    again = AnomalyModel.from_parts("catenary", model.to_npz(), model.threshold, "digest", 50, 7)
    assert again.version == 7  # stored as plain arrays and read back the same
    assert np.array_equal(again.bank, model.bank) and np.array_equal(again.calibration, model.calibration)


def test_a_crop_the_model_was_fitted_from_is_never_an_anomaly():
    """A small bank covers the fitted patches only to within its covering radius; a rare pattern in
    the fitted frames (a mast passing) that the held-out frames never show must not alarm."""
    rng = np.random.default_rng(5)
    patches = 1 + rng.normal(0, 0.01, (60, 8, 4, 4)).astype(np.float32)  # sky, over and over
    patches[:45:5] += rng.normal(0, 0.5, (9, 8, 4, 4)).astype(np.float32)  # rare, varied, only in the bank's frames
    model = fit_anomaly(patches, "catenary", "digest", bank_size=16)
    quantile = float(np.quantile(model.calibration, 0.99, method="higher"))
    assert model.threshold > quantile  # the held-out crops alone would have set it lower
    assert (model.score(patches[:-12]).scores <= model.threshold).all()
    assert "covering radius" in model.threshold_basis(0.01)
    assert "covering radius" not in fit_anomaly(_patches(60, rng), "catenary", "digest").threshold_basis(0.01)


def test_flagging_leaves_alone_what_a_fault_type_claims_and_regions_without_a_model():
    rng = np.random.default_rng(3)
    model = fit_anomaly(_patches(40, rng), "catenary", "digest")
    patches = np.concatenate([_patches(2, rng, anomalous=True), _patches(1, rng), _patches(1, rng, anomalous=True)])
    flagged = flag_anomalies({"catenary": model}, patches, ["catenary", "catenary", "catenary", "track"],
                             np.array([False, True, False, False]))
    assert set(flagged) == {0}  # 1 is a known fault, 2 is normal, 3 has no model


def test_too_few_normals_and_a_bad_rate_are_refused():
    rng = np.random.default_rng(4)
    with pytest.raises(AnomalyFitError, match="too few"):
        fit_anomaly(_patches(5, rng), "catenary", "digest")
    with pytest.raises(AnomalyFitError, match="false-alarm rate"):
        fit_anomaly(_patches(20, rng), "catenary", "digest", false_alarm_rate=1.5)


def test_the_evaluation_protocol_separates_what_differs():
    rng = np.random.default_rng(5)
    patches = np.concatenate([_patches(30, rng), _patches(10, rng, anomalous=True)])
    normal = np.array([True] * 30 + [False] * 10)
    result = evaluate_anomaly(patches, normal, [f"g{i}" for i in range(40)], shot=2, episodes=4)
    assert result.auroc == 100.0 and result.episodes == 4 and len(result.aurocs) == 4
    with pytest.raises(AnomalyFitError, match="more than 30 groups"):
        evaluate_anomaly(patches, normal, [f"g{i}" for i in range(40)], shot=30, episodes=1)
