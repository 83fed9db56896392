"""The shared training sources (domains) and their leakage-safe splits, in one place.

Rail sets and the industrial defect sets are split by held-out groups of the same classes (a new
photo burst, frame block, board or tile image); Omniglot by held-out characters, its standard
few-shot protocol. A leave-one-domain-out run leaves a whole domain out of ``load_sources``.
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


DEFECT_DOMAINS = ("neu", "deeppcb", "magnetic_tile")  # under defects_train/
DOMAINS = ("track_fault", "sleeper", "omniglot_small", *DEFECT_DOMAINS)


def domain_folder(data_root: Path | str, name: str) -> Path:
    """Where a domain's folder-per-class images are."""
    return Path(data_root) / ("defects_train" if name in DEFECT_DOMAINS else "") / name


def load_sources(data_root: Path | str, names: tuple[str, ...] = DOMAINS) -> list[Source]:
    data_root = Path(data_root)
    sources = []
    for name in names:
        if name in DEFECT_DOMAINS:
            train, test = split_by_group(load_manifest(domain_folder(data_root, name)), TEST_FRACTION, SPLIT_SEED)
        elif name == "track_fault":
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
