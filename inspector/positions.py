"""Where the train was: a position track per video and a mast register, to locate findings.

A maintenance crew goes to "line 4, km 12.347, between masts 231 and 232", not to "video 3,
00:41:17". A position track maps video time to line, chainage, GPS and mast; it is read from a CSV
(``t`` seconds or ``frame``, and any of ``line``, ``chainage_m``, ``lat``, ``lon``, ``mast``) or a GPX
track, and interpolated linearly between samples. Gaps longer than ``max_gap_s`` stay unknown: a
position is never invented across a tunnel without GPS. A mast register (``line, mast, chainage_m``
and optional ``lat, lon``) turns a chainage into the span between two masts.
"""
from __future__ import annotations

import bisect
import csv
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from inspector.errors import InspectorError

if TYPE_CHECKING:  # the store imports this module's records
    from inspector.store import FindingRecord, Store

DEFAULT_MAX_GAP_S = 10.0
CHAINAGE_BACKSTEP_M = 1.0  # a chainage that goes back by more than this within a run is an error
FIELDS = ("line", "chainage_m", "lat", "lon", "mast")


class PositionError(InspectorError):
    """A position track or mast register that cannot be read; the message names the row."""


@dataclass(frozen=True)
class Fix:
    """One sample of a track: time in the video and what is known there."""

    t: float
    line: str | None = None
    chainage_m: float | None = None
    lat: float | None = None
    lon: float | None = None
    mast: str | None = None


@dataclass(frozen=True)
class Location:
    """Where a finding is: as much of it as the track and the register know."""

    line: str | None = None
    chainage_m: float | None = None
    lat: float | None = None
    lon: float | None = None
    mast: str | None = None  # the mast passed last (from the track)
    span: tuple[str, str] | None = None  # between these two masts (from the register)

    @property
    def known(self) -> bool:
        return self.chainage_m is not None or self.lat is not None

    def describe(self) -> str:
        parts = []
        if self.line:
            parts.append(f"line {self.line}")
        if self.chainage_m is not None:
            parts.append(f"km {self.chainage_m / 1000:.3f}")
        if self.span:
            parts.append(f"masts {self.span[0]}-{self.span[1]}")
        elif self.mast:
            parts.append(f"after mast {self.mast}")
        if self.lat is not None and self.lon is not None and self.chainage_m is None:
            parts.append(f"{self.lat:.6f}, {self.lon:.6f}")
        return ", ".join(parts)


def _number(value: str, what: str, where: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise PositionError(f"{where}: {what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise PositionError(f"{where}: {what} {value!r} is not a finite number")
    return number


def read_track_csv(path: Path | str, fps: float | None = None) -> list[Fix]:
    """Samples from a CSV with a header: ``t`` (seconds) or ``frame`` (needs ``fps``), and any of
    ``line``, ``chainage_m``, ``lat``, ``lon``, ``mast``."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or [])
            if not columns & {"t", "frame"}:
                raise PositionError(f"{path}: the header needs a 't' (seconds) or 'frame' column, "
                                    f"found {', '.join(sorted(columns)) or 'none'}")
            if not columns & set(FIELDS):
                raise PositionError(f"{path}: no position column; give any of {', '.join(FIELDS)}")
            fixes = []
            for number, row in enumerate(reader, start=2):
                where = f"{path} row {number}"
                if "t" in columns and row.get("t", "").strip():
                    t = _number(row["t"], "t", where)
                elif "frame" in columns and row.get("frame", "").strip():
                    if not fps:
                        raise PositionError(f"{where}: 'frame' needs the video's frame rate")
                    t = _number(row["frame"], "frame", where) / fps
                else:
                    raise PositionError(f"{where}: no time ('t' or 'frame')")
                lat, lon = _number(row.get("lat"), "lat", where), _number(row.get("lon"), "lon", where)
                if (lat is None) != (lon is None) or (lat is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180)):
                    raise PositionError(f"{where}: lat/lon must come together, within -90..90 and -180..180")
                fixes.append(Fix(t, (row.get("line") or "").strip() or None,
                                 _number(row.get("chainage_m"), "chainage_m", where), lat, lon,
                                 (row.get("mast") or "").strip() or None))
    except OSError as exc:
        raise PositionError(f"{path}: cannot be read ({exc.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise PositionError(f"{path}: not a readable CSV ({exc})") from None
    return check_track(fixes, str(path))


GPX_NS = {"gpx": "http://www.topografix.com/GPX/1/1"}


def _parse_time(text: str, where: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise PositionError(f"{where}: time {text!r} is not ISO 8601") from None
    if stamp.tzinfo is None:
        raise PositionError(f"{where}: time {text!r} has no time zone; write it as UTC (…Z) or with an offset")
    return stamp


def read_gpx(path: Path | str, start: datetime | None = None) -> list[Fix]:
    """Track points of a GPX 1.1 file; ``t`` is each point's time minus the video's start (``start``,
    else the GPX's own ``<metadata><time>``)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise PositionError(f"{path}: not a readable GPX file ({exc})") from None
    ns = GPX_NS if root.tag.startswith("{") else {"gpx": ""}
    prefix = "gpx:" if ns["gpx"] else ""
    if start is None:
        meta = root.find(f"{prefix}metadata/{prefix}time", ns)
        if meta is None or not (meta.text or "").strip():
            raise PositionError(f"{path}: the video's start time is unknown; pass --start 2026-05-01T22:14:03Z")
        start = _parse_time(meta.text, f"{path} metadata")
    fixes = []
    for number, point in enumerate(root.iter(f"{{{ns['gpx']}}}trkpt" if ns["gpx"] else "trkpt"), start=1):
        where = f"{path} track point {number}"
        stamp = point.find(f"{prefix}time", ns)
        if stamp is None or not (stamp.text or "").strip():
            raise PositionError(f"{where}: has no <time>")
        lat, lon = _number(point.get("lat"), "lat", where), _number(point.get("lon"), "lon", where)
        if lat is None or lon is None:
            raise PositionError(f"{where}: lat and lon are required")
        fixes.append(Fix((_parse_time(stamp.text, where) - start).total_seconds(), lat=lat, lon=lon))
    if not fixes:
        raise PositionError(f"{path}: no track points")
    return check_track(fixes, str(path))


def check_track(fixes: list[Fix], where: str) -> list[Fix]:
    """Sorted by time, no time twice, chainage monotonic along each line (one direction per run)."""
    fixes = sorted(fixes, key=lambda f: f.t)
    for a, b in zip(fixes, fixes[1:]):
        if a.t == b.t:
            raise PositionError(f"{where}: two samples at t = {a.t:g} s")
    direction = 0
    previous: Fix | None = None
    for fix in fixes:
        if fix.chainage_m is None:
            continue
        if previous is not None and previous.line == fix.line:
            step = fix.chainage_m - previous.chainage_m
            if abs(step) > CHAINAGE_BACKSTEP_M:
                if direction and (step > 0) != (direction > 0):
                    raise PositionError(f"{where}: chainage turns back at t = {fix.t:g} s ({previous.chainage_m:g} -> "
                                        f"{fix.chainage_m:g} m); one run goes one way: split the file per run")
                direction = direction or (1 if step > 0 else -1)
        previous = fix
    return fixes


class PositionTrack:
    """A video's position at any time, interpolated linearly between samples no more than
    ``max_gap_s`` apart; unknown (None) outside the track and across longer gaps."""

    def __init__(self, fixes: list[Fix], max_gap_s: float = DEFAULT_MAX_GAP_S) -> None:
        self.fixes = sorted(fixes, key=lambda f: f.t)
        self._times = [f.t for f in self.fixes]
        self.max_gap_s = max_gap_s

    def at(self, t: float) -> Location | None:
        if not self.fixes:
            return None
        i = bisect.bisect_right(self._times, t)
        if i > 0 and self._times[i - 1] == t:
            return _location(self.fixes[i - 1])
        if i == 0 or i == len(self.fixes):
            return None
        a, b = self.fixes[i - 1], self.fixes[i]
        if b.t - a.t > self.max_gap_s:
            return None
        w = (t - a.t) / (b.t - a.t)

        def mix(x: float | None, y: float | None) -> float | None:
            return None if x is None or y is None else x + w * (y - x)

        same_line = a.line == b.line
        return Location(a.line if same_line else None, mix(a.chainage_m, b.chainage_m) if same_line else None,
                        mix(a.lat, b.lat), mix(a.lon, b.lon), a.mast)


def _location(fix: Fix) -> Location:
    return Location(fix.line, fix.chainage_m, fix.lat, fix.lon, fix.mast)


@dataclass(frozen=True)
class Mast:
    line: str
    mast: str
    chainage_m: float
    lat: float | None = None
    lon: float | None = None


def read_masts(path: Path | str) -> list[Mast]:
    """A mast register: CSV with ``line, mast, chainage_m`` and optional ``lat, lon``."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = {"line", "mast", "chainage_m"} - set(reader.fieldnames or [])
            if missing:
                raise PositionError(f"{path}: the header lacks {', '.join(sorted(missing))} "
                                    "(a mast register is: line, mast, chainage_m[, lat, lon])")
            masts = []
            for number, row in enumerate(reader, start=2):
                where = f"{path} row {number}"
                line, mast = (row["line"] or "").strip(), (row["mast"] or "").strip()
                chainage = _number(row["chainage_m"], "chainage_m", where)
                if not line or not mast or chainage is None:
                    raise PositionError(f"{where}: line, mast and chainage_m are all required")
                masts.append(Mast(line, mast, chainage, _number(row.get("lat"), "lat", where),
                                  _number(row.get("lon"), "lon", where)))
    except OSError as exc:
        raise PositionError(f"{path}: cannot be read ({exc.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise PositionError(f"{path}: not a readable CSV ({exc})") from None
    seen: set[tuple[str, str]] = set()
    for m in masts:
        if (m.line, m.mast) in seen:
            raise PositionError(f"{path}: mast {m.mast} of line {m.line} is listed twice")
        seen.add((m.line, m.mast))
    if not masts:
        raise PositionError(f"{path}: no masts")
    return masts


class MastRegister:
    """Chainage -> the two masts around it, per line."""

    def __init__(self, masts: list[Mast]) -> None:
        self._lines: dict[str, tuple[list[float], list[str]]] = {}
        for line in {m.line for m in masts}:
            ordered = sorted((m for m in masts if m.line == line), key=lambda m: m.chainage_m)
            self._lines[line] = ([m.chainage_m for m in ordered], [m.mast for m in ordered])

    def span(self, line: str | None, chainage_m: float | None) -> tuple[str, str] | None:
        if line is None or chainage_m is None or line not in self._lines:
            return None
        chainages, names = self._lines[line]
        i = bisect.bisect_right(chainages, chainage_m)
        if i == 0 or i == len(chainages):
            return None  # beyond the first or last mast of the register
        return names[i - 1], names[i]

    def locate(self, location: Location | None) -> Location | None:
        if location is None:
            return None
        return replace(location, span=self.span(location.line, location.chainage_m))


class Locator:
    """Locates findings of a project: each video's track (read once) and the mast register."""

    def __init__(self, store: Store, max_gap_s: float = DEFAULT_MAX_GAP_S) -> None:
        self._store = store
        self._tracks: dict[int, PositionTrack] = {}
        self._register = MastRegister(store.masts())
        self._max_gap_s = max_gap_s

    def track(self, video_id: int) -> PositionTrack:
        if video_id not in self._tracks:
            self._tracks[video_id] = PositionTrack(self._store.positions(video_id), self._max_gap_s)
        return self._tracks[video_id]

    def at(self, video_id: int, t: float) -> Location | None:
        return self._register.locate(self.track(video_id).at(t))

    def finding(self, finding: FindingRecord) -> Location | None:
        """Where the finding's best frame was taken."""
        scan = self._store.scan(finding.scan_id)
        video = self._store.video(scan.video_id)
        return self.at(video.id, finding.best_frame / video.fps)
