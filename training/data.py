"""Folder-per-class datasets read through their manifests, split by leakage-safe groups.

The shared data sets carry a ``group`` column (a burst of photos, a block of video frames, an
Omniglot character): splitting by file would put near-duplicates on both sides, so every split
here is by group, decided by a keyed hash so it is stable across machines, runs and file order.
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from inspector.fewshot import group_fraction

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    group: str


def load_manifest(
    root: Path | str,
    classes: Iterable[str] | None = None,
    group_column: str = "group",
) -> list[Sample]:
    """Read ``root/manifest.csv``; keep only ``classes`` when given."""
    root = Path(root)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: a dataset folder needs a manifest.csv")
    wanted = set(classes) if classes is not None else None
    samples = []
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if wanted is not None and row["class"] not in wanted:
                continue
            samples.append(Sample(root / row["file"], row["class"], row[group_column]))
    return samples


def scan_folder(root: Path | str) -> list[Sample]:
    """A plain folder-per-class dataset without a manifest: every image is its own group."""
    root = Path(root)
    samples = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(path, class_dir.name, str(path.relative_to(root))))
    return samples


def split_by_group(
    samples: Sequence[Sample], test_fraction: float, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Split so that no group is on both sides; about ``test_fraction`` of groups go to test."""
    train, test = [], []
    for sample in samples:
        (test if group_fraction(sample.group, seed) < test_fraction else train).append(sample)
    return train, test


def split_by_class(
    samples: Sequence[Sample], test_fraction: float, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Class-disjoint split (Omniglot's protocol: test characters are never seen in training)."""
    train, test = [], []
    for sample in samples:
        (test if group_fraction(sample.label, seed) < test_fraction else train).append(sample)
    return train, test
