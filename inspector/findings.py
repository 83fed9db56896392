"""Group per-frame fault detections into findings.

A fault seen in consecutive sampled frames of one crop is one finding (a dropper passes the
camera over several frames); a short gap of missed samples does not split it. Each finding
keeps its time span and its best frame (highest score), which the report and the GUI show.
"""
from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby

from inspector.status import Review
from inspector.store import DetectionRow, FindingRecord


def group_findings(detections: Iterable[DetectionRow], step: int, max_gap: int = 2,
                   min_frames: int = 1, scan_id: int = 0) -> list[FindingRecord]:
    """``max_gap``: missed samples tolerated inside one finding; ``min_frames``: samples a
    finding needs (raise it to drop one-frame flickers)."""
    findings: list[FindingRecord] = []
    faults = sorted((d for d in detections if d.is_fault and d.class_name),
                    key=lambda d: (d.crop, d.class_name, d.frame))
    for _, group in groupby(faults, key=lambda d: (d.crop, d.class_name)):
        run: list[DetectionRow] = []
        for det in group:
            if run and det.frame - run[-1].frame > (max_gap + 1) * step:
                findings.append(_finding(run, scan_id))
                run = []
            run.append(det)
        if run:
            findings.append(_finding(run, scan_id))
    kept = [f for f in findings if f.frames >= min_frames]
    return sorted(kept, key=lambda f: (f.start_frame, f.crop))


def _finding(run: list[DetectionRow], scan_id: int) -> FindingRecord:
    best = max(run, key=lambda d: d.score)
    return FindingRecord(0, scan_id, best.crop, best.region, best.class_name or "", run[0].frame,
                         run[-1].frame, best.frame, float(best.score), len(run), Review.OPEN)
