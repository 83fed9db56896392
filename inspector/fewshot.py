"""The standard few-shot protocol, run through exactly the app's code path.

Images of a folder-per-class dataset are embedded by the bundle's ONNX backbone (resized to the
input size as region crops are); each episode samples N classes, K support and Q query images per
class, adapts a head with ``inspector.adapt`` (the bundle's inner loop) and scores the queries.
The result is the mean accuracy with its 95 % confidence interval over episodes.

Splits are by group where the dataset has a ``manifest.csv`` (leakage-safe: a photo burst or a
block of video frames never sits on both sides); the keyed hash here is the one training uses.
"""
from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from inspector.adapt import AdaptationError, ClassSpec, adapt, embed_support
from inspector.backbone import Backbone
from inspector.errors import InspectorError
from inspector.regions import shrink

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class DatasetError(InspectorError):
    """A dataset folder that cannot be evaluated as asked."""


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    group: str


@dataclass(frozen=True)
class Episode:
    classes: tuple[str, ...]
    support: tuple[int, ...]  # indices into the item list
    query: tuple[int, ...]


@dataclass(frozen=True)
class FewShotResult:
    way: int
    shot: int
    queries: int
    episodes: int
    accuracies: np.ndarray  # per episode, 0..1
    per_class: dict[str, dict[str, float]]  # precision, recall, f1 over all episodes
    # Per query over all episodes, where the app's calibrated head scored them (empty otherwise):
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the predicted class's score
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # whether it was right

    @property
    def accuracy(self) -> float:
        return float(self.accuracies.mean() * 100)

    @property
    def ci95(self) -> float:
        return float(1.96 * self.accuracies.std(ddof=1) / np.sqrt(len(self.accuracies)) * 100) \
            if len(self.accuracies) > 1 else 0.0

    def as_json(self) -> dict:
        return {"accuracy": round(self.accuracy, 2), "ci95": round(self.ci95, 2), "way": self.way,
                "shot": self.shot, "queries": self.queries, "episodes": self.episodes,
                "per_class": self.per_class}


def group_fraction(group: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, group): the basis of every split, here and in training."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def load_items(dataset: Path, group_column: str = "group") -> list[Item]:
    """Every image of a dataset: from its ``manifest.csv`` if it has one, else one sub-folder per
    class (each image then its own group)."""
    if not dataset.is_dir():
        raise DatasetError(f"dataset {dataset}: no such folder; give a folder with one sub-folder of images per class")
    manifest = dataset / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if rows and not {"file", "class"} <= set(rows[0]):
            raise DatasetError(f"dataset {dataset}: manifest.csv needs 'file' and 'class' columns")
        if rows and group_column not in rows[0]:
            raise DatasetError(f"dataset {dataset}: manifest.csv has no {group_column!r} column")
        return [Item(dataset / r["file"], r["class"], r[group_column]) for r in rows]
    items = []
    for folder in sorted(p for p in dataset.iterdir() if p.is_dir()):
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                items.append(Item(path, folder.name, str(path.relative_to(dataset))))
    if not items:
        raise DatasetError(f"dataset {dataset}: no images in class sub-folders")
    return items


def held_out(items: list[Item], groups: float | None = None, classes: float | None = None,
             seed: int = 0, only: list[str] | None = None) -> list[Item]:
    """The held-out part: groups (same classes, unseen photos) or whole classes (unseen classes);
    ``only`` keeps the named classes."""
    if only:
        unknown = set(only) - {i.label for i in items}
        if unknown:
            raise DatasetError(f"no class named {', '.join(sorted(unknown))} in the dataset")
        items = [i for i in items if i.label in only]
    if groups is not None:
        items = [i for i in items if group_fraction(i.group, seed) < groups]
    if classes is not None:
        items = [i for i in items if group_fraction(i.label, seed) < classes]
    return items


def eligible_classes(labels: list[str], way: int, shot: int, queries: int) -> dict[str, list[int]]:
    """Classes with enough items for an episode, with their item indices; raises if too few."""
    if way < 2 or shot < 1 or queries < 1:
        raise DatasetError("need --way >= 2, --shot >= 1 and --queries >= 1")
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[label].append(index)
    eligible = {c: members for c, members in sorted(by_class.items()) if len(members) >= shot + queries}
    if len(eligible) < way:
        raise DatasetError(f"only {len(eligible)} classes have {shot + queries} images (shot + queries) or more; "
                           f"lower --way, --shot or --queries")
    return eligible


def sample_episodes(labels: list[str], way: int, shot: int, queries: int, episodes: int,
                    seed: int = 0) -> Iterator[Episode]:
    """Seeded N-way K-shot episodes: N classes, then K support and Q query items per class."""
    by_class = eligible_classes(labels, way, shot, queries)
    eligible = list(by_class)
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        chosen = [eligible[i] for i in rng.choice(len(eligible), way, replace=False)]
        support, query = [], []
        for name in chosen:
            picks = rng.choice(by_class[name], shot + queries, replace=False)
            support += picks[:shot].tolist()
            query += picks[shot:].tolist()
        yield Episode(tuple(chosen), tuple(support), tuple(query))


def load_crop(path: Path, size: int) -> np.ndarray:
    """An image as the runtime sees a region: resized straight to the input size, RGB."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"image {path} cannot be read")
    return cv2.cvtColor(shrink(image, size), cv2.COLOR_BGR2RGB)


def embed_items(backbone: Backbone, items: list[Item], tta: bool = False, batch: int = 64) -> np.ndarray:
    size = backbone.bundle.input_size
    parts = [embed_support(backbone, np.stack([load_crop(i.path, size) for i in items[s:s + batch]]), tta)
             for s in range(0, len(items), batch)]
    return np.concatenate(parts)


def evaluate(embeddings: np.ndarray, labels: list[str], way: int, shot: int, queries: int, episodes: int,
             params, seed: int = 0, progress: Callable[[int, int], None] | None = None,
             support_embeddings: np.ndarray | None = None) -> FewShotResult:
    """Run the protocol on precomputed embeddings with the bundle's adaptation ``params``.

    ``support_embeddings`` (same rows) replace ``embeddings`` for support items only: the app
    augments the operator's examples (test-time augmentation), never the crops it classifies."""
    support_source = embeddings if support_embeddings is None else support_embeddings
    accuracies, confidence, correct = [], [], []
    outcomes: list[tuple[str, str]] = []  # (predicted, true) over all episodes
    for number, episode in enumerate(sample_episodes(labels, way, shot, queries, episodes, seed), start=1):
        specs = [ClassSpec(name, False) for name in episode.classes]
        support = np.array(episode.support)
        try:
            head, _ = adapt(support_source[support], [labels[i] for i in support], specs, params,
                            judged=np.zeros(len(support), bool))
        except AdaptationError as exc:
            raise DatasetError(f"episode {number}: {exc}") from None
        query = np.array(episode.query)
        scores = head.scores(head.logits(embeddings[query]))  # calibrated, as the scan scores crops
        predicted = [episode.classes[k] for k in scores.argmax(axis=1)]
        truth = [labels[i] for i in query]
        hits = [p == t for p, t in zip(predicted, truth)]
        accuracies.append(np.mean(hits))
        confidence.append(scores.max(axis=1))
        correct.append(hits)
        outcomes += zip(predicted, truth)
        if progress:
            progress(number, episodes)
    return FewShotResult(way, shot, queries, episodes, np.asarray(accuracies, float), class_scores(outcomes),
                         np.concatenate(confidence), np.concatenate(correct).astype(bool))


def class_scores(outcomes: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 per class from (predicted, true) pairs pooled over episodes."""
    counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(3))  # true positives, predicted, actual
    for predicted, true in outcomes:
        counts[true] += (predicted == true, 0, 1)
        counts[predicted] += (0, 1, 0)
    scores = {}
    for name, (hits, predicted, actual) in sorted(counts.items()):
        precision = hits / predicted if predicted else 0.0
        recall = hits / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[name] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}
    return scores
