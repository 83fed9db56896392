"""Leakage-safe splits (torch-free part of the training package)."""
import csv

from training.data import Sample, load_manifest, scan_folder, split_by_class, split_by_group


def _samples():
    return [Sample(f"/x/{g}_{i}.jpg", f"c{g % 3}", f"g{g}") for g in range(60) for i in range(4)]


def test_split_by_group_never_puts_a_group_on_both_sides():
    train, test = split_by_group(_samples(), 0.3, seed=0)
    assert {s.group for s in train}.isdisjoint({s.group for s in test})
    assert 0.15 < len(test) / (len(train) + len(test)) < 0.45


def test_split_is_stable_across_order_and_changes_with_seed():
    samples = _samples()
    _, test_a = split_by_group(samples, 0.3, seed=0)
    _, test_b = split_by_group(list(reversed(samples)), 0.3, seed=0)
    _, test_c = split_by_group(samples, 0.3, seed=1)
    assert {s.path for s in test_a} == {s.path for s in test_b}
    assert {s.path for s in test_a} != {s.path for s in test_c}


def test_split_by_class_holds_out_whole_classes():
    train, test = split_by_class(_samples(), 0.4, seed=3)
    assert {s.label for s in train}.isdisjoint({s.label for s in test})


def test_load_manifest_and_scan_folder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ("a/1.jpg", "a/2.png", "b/3.jpg"):
        (tmp_path / name).write_bytes(b"x")
    with (tmp_path / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "class", "group", "run"])
        writer.writerows([["a/1.jpg", "a", "g1", "r1"], ["a/2.png", "a", "g1", "r1"], ["b/3.jpg", "b", "g2", "r1"]])
    assert [s.group for s in load_manifest(tmp_path)] == ["g1", "g1", "g2"]
    assert [s.group for s in load_manifest(tmp_path, group_column="run")] == ["r1"] * 3
    assert [s.label for s in load_manifest(tmp_path, classes=["b"])] == ["b"]
    assert [s.label for s in scan_folder(tmp_path)] == ["a", "a", "b"]
