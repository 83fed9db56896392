"""Score a scan's findings against a run's ground truth (``assets/demo/ground_truth.csv``).

A fault segment counts as found when a finding of the same crop and class overlaps it; a finding
is correct when it overlaps a fault segment of the same crop and class.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from inspector.store import FindingRecord


@dataclass(frozen=True)
class Segment:
    start_frame: int
    end_frame: int
    crop: str
    class_name: str
    fault: bool


@dataclass(frozen=True)
class Score:
    found: int
    segments: int
    correct: int
    findings: int

    @property
    def recall(self) -> float:
        return self.found / self.segments if self.segments else 0.0

    @property
    def precision(self) -> float:
        return self.correct / self.findings if self.findings else 0.0


def load_truth(path: Path, crop: str = "window") -> list[Segment]:
    """The demo's ground truth, or that of a video made by ``../shared/tools/make_gt_video.py``
    (columns ``cls`` and ``part``, one region: ``crop``; only its evaluation part is kept)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [Segment(int(r["start_frame"]), int(r["end_frame"]), r.get("crop") or crop, r.get("class") or r["cls"],
                    r["fault"] == "1") for r in rows if r.get("part", "eval") == "eval"]


def _overlaps(segment: Segment, finding: FindingRecord) -> bool:
    return (segment.crop == finding.crop and segment.class_name == finding.class_name
            and finding.start_frame <= segment.end_frame and segment.start_frame <= finding.end_frame)


def score(findings: list[FindingRecord], truth: list[Segment], classes: set[str] | None = None) -> Score:
    """Recall and precision over the fault classes in ``classes`` (default: all in the truth)."""
    faults = [s for s in truth if s.fault and (classes is None or s.class_name in classes)]
    judged = [f for f in findings if classes is None or f.class_name in classes]
    found = sum(any(_overlaps(s, f) for f in judged) for s in faults)
    correct = sum(any(_overlaps(s, f) for s in faults) for f in judged)
    return Score(found, len(faults), correct, len(judged))
