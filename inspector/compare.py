"""What changed on the line between two runs: findings matched by place and fault type.

Two runs of the same line see the same fault at (nearly) the same chainage. A finding of run B is
**persisting** when run A has one of the same class on the same line within ``tolerance_m``,
**new** when it has none; a finding of A left unmatched is **gone** (repaired, or missed by B).
Matching is one to one, closest pairs first. Only the stretch both runs covered is compared: a
finding of one run where the other never went is neither new nor gone (``uncovered``).
Rejected findings are not faults and take no part;
a reviewer's corrected class counts over the scan's. Without positions, runs can be matched by
time in the video instead (``by_time``), which only makes sense for runs recorded the same way.
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from inspector.errors import InspectorError
from inspector.positions import Location, Locator
from inspector.status import Review
from inspector.store import FindingRecord, ScanRecord, Store


class CompareError(InspectorError):
    """Runs that cannot be compared as asked."""


@dataclass(frozen=True)
class Placed:
    """A finding with the coordinate it is matched on (chainage in m, or time in s)."""

    finding: FindingRecord
    line: str | None
    at: float
    location: Location | None = None

    @property
    def key(self) -> tuple[str | None, str]:
        return self.line, self.finding.final_class


@dataclass
class Comparison:
    new: list[Placed] = field(default_factory=list)
    gone: list[Placed] = field(default_factory=list)
    persisting: list[tuple[Placed, Placed]] = field(default_factory=list)  # (in A, in B)
    unlocated: int = 0  # findings left out: no position at their time (a gap in the track)
    uncovered: int = 0  # findings left out: the other run never passed there

    def counts(self) -> dict[str, int]:
        return {"new": len(self.new), "gone": len(self.gone), "persisting": len(self.persisting),
                "unlocated": self.unlocated, "uncovered": self.uncovered}


def match(a: list[Placed], b: list[Placed], tolerance: float) -> Comparison:
    """One-to-one matching within ``tolerance`` per (line, class), closest pairs first:
    O(n log n) plus the candidate pairs, which a tolerance of metres keeps few."""
    result = Comparison()
    groups_a: dict[tuple, list[Placed]] = defaultdict(list)
    groups_b: dict[tuple, list[Placed]] = defaultdict(list)
    for p in a:
        groups_a[p.key].append(p)
    for p in b:
        groups_b[p.key].append(p)
    for key in set(groups_a) | set(groups_b):
        left = sorted(groups_a.get(key, []), key=lambda p: p.at)
        right = sorted(groups_b.get(key, []), key=lambda p: p.at)
        positions = [p.at for p in right]
        pairs = []
        for i, p in enumerate(left):
            lo = bisect.bisect_left(positions, p.at - tolerance)
            hi = bisect.bisect_right(positions, p.at + tolerance)
            pairs.extend((abs(positions[j] - p.at), i, j) for j in range(lo, hi))
        pairs.sort()
        used_left, used_right = set(), set()
        for _, i, j in pairs:
            if i not in used_left and j not in used_right:
                used_left.add(i)
                used_right.add(j)
                result.persisting.append((left[i], right[j]))
        result.gone += [p for i, p in enumerate(left) if i not in used_left]
        result.new += [p for j, p in enumerate(right) if j not in used_right]
    result.persisting.sort(key=lambda pair: (pair[1].line or "", pair[1].at))
    result.new.sort(key=lambda p: (p.line or "", p.at))
    result.gone.sort(key=lambda p: (p.line or "", p.at))
    return result


def resolve_run(store: Store, name: str) -> ScanRecord:
    """A run named by scan id, or by a scanned video's path or file name (its latest scan)."""
    scans = store.scans()
    if name.isdigit():
        for scan in scans:
            if scan.id == int(name):
                return scan
        raise CompareError(f"no scan {name} in the project; 'inspector findings' lists the scans")
    wanted = Path(name)
    videos = [v for v in store.videos() if v.path == wanted or v.path.name == wanted.name]
    if len(videos) > 1 and not any(v.path == wanted for v in videos):
        raise CompareError(f"{name} names {len(videos)} videos of the project; give its full path or a scan id")
    ids = {v.id for v in videos if len(videos) == 1 or v.path == wanted}
    mine = [s for s in scans if s.video_id in ids]
    if not mine:
        raise CompareError(f"{name} is not a scanned video of the project; scan it first or give a scan id")
    return mine[-1]


def place(store: Store, scan: ScanRecord, by_time: bool, locator: Locator) -> tuple[list[Placed], int]:
    """The scan's findings (rejected ones left out), each with where it is; and how many have no
    position."""
    video = store.video(scan.video_id)
    placed, unlocated = [], 0
    for f in store.findings(scan.id):
        if f.status == Review.REJECTED:
            continue
        t = f.best_frame / video.fps
        if by_time:
            placed.append(Placed(f, None, t))
            continue
        where = locator.at(video.id, t)
        if where is None or where.chainage_m is None:
            unlocated += 1
            continue
        placed.append(Placed(f, where.line, where.chainage_m, where))
    return placed, unlocated


def compare_runs(store: Store, run_a: str, run_b: str, tolerance_m: float = 10.0, by_time: bool = False,
                 tolerance_s: float = 1.0) -> tuple[Comparison, ScanRecord, ScanRecord]:
    scan_a, scan_b = resolve_run(store, run_a), resolve_run(store, run_b)
    if scan_a.id == scan_b.id:
        raise CompareError(f"{run_a} and {run_b} are the same run (scan {scan_a.id})")
    locator = Locator(store)
    if not by_time:
        for scan, name in ((scan_a, run_a), (scan_b, run_b)):
            if not any(f.chainage_m is not None for f in store.positions(scan.video_id)):
                raise CompareError(f"run {name} has no positions with chainage: import them with 'inspector positions "
                                   "import', or compare by time in the video with --by-time")
    (placed_a, lost_a), (placed_b, lost_b) = place(store, scan_a, by_time, locator), place(store, scan_b, by_time,
                                                                                           locator)
    outside = 0
    if not by_time:
        reach_a, reach_b = coverage(store, scan_a), coverage(store, scan_b)
        kept_a = [p for p in placed_a if covered(p, reach_b, tolerance_m)]
        kept_b = [p for p in placed_b if covered(p, reach_a, tolerance_m)]
        outside = len(placed_a) - len(kept_a) + len(placed_b) - len(kept_b)
        placed_a, placed_b = kept_a, kept_b
    result = match(placed_a, placed_b, tolerance_s if by_time else tolerance_m)
    result.unlocated = lost_a + lost_b
    result.uncovered = outside
    return result, scan_a, scan_b


def coverage(store: Store, scan: ScanRecord) -> dict[str | None, tuple[float, float]]:
    """Per line, the chainage range the run's position track spans."""
    reach: dict[str | None, tuple[float, float]] = {}
    for fix in store.positions(scan.video_id):
        if fix.chainage_m is not None:
            lo, hi = reach.get(fix.line, (fix.chainage_m, fix.chainage_m))
            reach[fix.line] = (min(lo, fix.chainage_m), max(hi, fix.chainage_m))
    return reach


def covered(placed: Placed, reach: dict[str | None, tuple[float, float]], tolerance: float) -> bool:
    span = reach.get(placed.line)
    return span is not None and span[0] - tolerance <= placed.at <= span[1] + tolerance


@dataclass(frozen=True)
class Versus:
    """One run against its line's reference run, for the report: which of its findings are new,
    which persist (with the reference's finding), and which of the reference's are gone."""

    reference: ScanRecord
    new: frozenset[int]  # finding ids of this run
    persisting: dict[int, FindingRecord]  # finding id of this run -> the reference's finding
    gone: list[Placed]


def against_references(store: Store, tolerance_m: float = 10.0) -> dict[int, Versus]:
    """For every scan on a line that has a reference run (not the reference itself), its comparison
    with that reference; scans without positions on such a line are left out."""
    references = store.references()
    out: dict[int, Versus] = {}
    for scan in store.scans():
        lines = {fix.line for fix in store.positions(scan.video_id) if fix.chainage_m is not None}
        for line in sorted(lines & set(references)):
            if references[line] == scan.id:
                continue
            result, reference, _ = compare_runs(store, str(references[line]), str(scan.id), tolerance_m)
            out[scan.id] = Versus(reference, frozenset(p.finding.id for p in result.new),
                                  {b.finding.id: a.finding for a, b in result.persisting},
                                  [p for p in result.gone if p.line == line])
            break
    return out
