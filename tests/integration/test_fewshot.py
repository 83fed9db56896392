"""inspector evaluate-fewshot: the standard protocol through the app's code path."""
import csv
import json

import cv2
import numpy as np
import pytest

from inspector.cli import EXIT_FAILED, EXIT_OK, main
from inspector.fewshot import DatasetError, evaluate, held_out, load_items, sample_episodes

COLOURS = {"red": (40, 40, 220), "green": (40, 200, 40), "blue": (200, 60, 30), "yellow": (40, 220, 220)}


def colour_dataset(root, per_class=4, two_only=None):
    rng = np.random.default_rng(0)
    for name, bgr in COLOURS.items():
        (root / name).mkdir(parents=True)
        count = 2 if name == two_only else per_class
        for i in range(count):
            image = np.clip(np.array(bgr) + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / name / f"{i}.png"), image)
    return root


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_result_on_a_folder_per_class_dataset(tmp_path, capsys, tiny_bundle):
    data = colour_dataset(tmp_path / "colours")
    code, out, err = run(capsys, "evaluate-fewshot", data, "--way", 3, "--shot", 1, "--queries", 2,
                         "--episodes", 40, "--bundle", tiny_bundle, "--json")
    assert code == EXIT_OK, err
    result = json.loads(out)  # stdout is the JSON alone; the summary line went to stderr
    assert "3-way 1-shot" in err
    assert {"accuracy", "ci95", "way", "shot", "episodes"} <= set(result)
    assert (result["way"], result["shot"], result["episodes"]) == (3, 1, 40)
    assert result["accuracy"] > 90 and 0 <= result["ci95"] < 10  # colours are easy for a mean-colour backbone
    assert set(result["per_class"]) == set(COLOURS)


def test_works_down_to_two_images_per_class(tmp_path, capsys, tiny_bundle):
    data = colour_dataset(tmp_path / "colours", per_class=2)
    code, out, _ = run(capsys, "evaluate-fewshot", data, "--way", 2, "--shot", 1, "--queries", 1,
                       "--episodes", 30, "--bundle", tiny_bundle)
    assert code == EXIT_OK
    assert "2-way 1-shot" in out and "accuracy" in out


def test_chance_level_on_indistinguishable_classes(tmp_path, tiny_bundle):
    """A protocol that cannot fail is no protocol: grey vs grey must score near chance."""
    from inspector.bundle import AdaptationParams

    rng = np.random.default_rng(1)
    embeddings = rng.normal(0.5, 0.01, (40, 3)).astype(np.float32)
    labels = ["a"] * 20 + ["b"] * 20
    result = evaluate(embeddings, labels, 2, 1, 5, 300, AdaptationParams(50, (1.0,), 10.0))
    assert 40 < result.accuracy < 60


def test_episodes_are_seeded_and_disjoint():
    labels = [c for c in "abcdef" for _ in range(10)]
    first = list(sample_episodes(labels, 3, 2, 4, 5, seed=3))
    assert first == list(sample_episodes(labels, 3, 2, 4, 5, seed=3))
    assert first != list(sample_episodes(labels, 3, 2, 4, 5, seed=4))
    for episode in first:
        assert not set(episode.support) & set(episode.query)
        assert len(episode.support) == 6 and len(episode.query) == 12
        assert {labels[i] for i in episode.support} == set(episode.classes)


def test_holdout_by_group_uses_the_manifest(tmp_path):
    data = colour_dataset(tmp_path / "colours", per_class=10)
    with (data / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "class", "group"])
        for name in COLOURS:
            for i in range(10):
                writer.writerow([f"{name}/{i}.png", name, f"{name}-burst{i // 2}"])
    items = load_items(data)
    test = held_out(items, groups=0.5, seed=0)
    train_groups = {i.group for i in items} - {i.group for i in test}
    assert test and train_groups and not {i.group for i in test} & train_groups
    assert [i.label for i in held_out(items, only=["red"])] == ["red"] * 10


@pytest.mark.parametrize("args, message", [
    (["--way", "5", "--shot", "1", "--queries", "1"], "only 4 classes"),
    (["--way", "4", "--shot", "3", "--queries", "2"], "only 3 classes have 5 images"),
    (["--way", "2", "--shot", "1", "--classes", "red,purple"], "no class named purple"),
])
def test_impossible_requests(tmp_path, capsys, tiny_bundle, args, message):
    data = colour_dataset(tmp_path / "colours", per_class=5, two_only="yellow")
    code, _, err = run(capsys, "evaluate-fewshot", data, *args, "--bundle", tiny_bundle)
    assert code == EXIT_FAILED and message in err and "Traceback" not in err


def test_missing_and_unreadable_data(tmp_path, capsys, tiny_bundle):
    code, _, err = run(capsys, "evaluate-fewshot", tmp_path / "nope", "--way", 2, "--shot", 1, "--bundle", tiny_bundle)
    assert code == EXIT_FAILED and "no such folder" in err
    data = colour_dataset(tmp_path / "colours")
    (data / "red" / "broken.png").write_bytes(b"nope")
    code, _, err = run(capsys, "evaluate-fewshot", data, "--way", 2, "--shot", 1, "--queries", 1,
                       "--bundle", tiny_bundle)
    assert code == EXIT_FAILED and "broken.png cannot be read" in err
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        load_items(tmp_path / "empty")
