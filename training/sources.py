"""The shared training sources and their leakage-safe splits, in one place.

Rail sets are split by held-out groups of the same classes (a new photo burst / frame block);
Omniglot by held-out characters, its standard few-shot protocol.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.data import Sample, load_manifest, split_by_class, split_by_group

SPLIT_SEED = 0
TEST_FRACTION = 0.3
TRACK_COMPONENT_CLASSES = (
    "fastener_clip_missing",
    "fastener_clip_present",
    "rail_break_or_gap",
    "rail_joint_ok",
    "fishplate_bolt_missing",
    "fishplate_ok",
)


@dataclass(frozen=True)
class Source:
    name: str
    train: list[Sample]
    test: list[Sample]


def load_sources(data_root: Path | str, names: tuple[str, ...] = ("track_fault", "sleeper", "omniglot_small")) -> list[Source]:
    data_root = Path(data_root)
    sources = []
    for name in names:
        if name == "track_fault":
            samples = load_manifest(data_root / name, TRACK_COMPONENT_CLASSES)
            train, test = split_by_group(samples, TEST_FRACTION, SPLIT_SEED)
        elif name == "sleeper":
            samples = load_manifest(data_root / name, group_column="run")
            train, test = split_by_group(samples, TEST_FRACTION, SPLIT_SEED)
        elif name == "omniglot_small":
            samples = load_manifest(data_root / name)
            train, test = split_by_class(samples, TEST_FRACTION, SPLIT_SEED)
        else:
            raise ValueError(f"unknown source {name!r}")
        sources.append(Source(name, train, test))
    return sources
