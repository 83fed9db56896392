"""The project store: one SQLite file (WAL) per project.

Every write is one transaction, so a scan killed at any moment (Ctrl-C, kill -9, power cut)
leaves the store as it was after its last finished batch; the scan resumes from there, and the
primary keys make a re-written batch replace, never double, what was stored.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from inspector.anomaly import AnomalyModel
from inspector.errors import StoreError
from inspector.positions import Fix, Mast
from inspector.status import Review
from inspector.video import VideoInfo

STORE_NAME = "project.sqlite"

# Each entry moves the schema one version up; never edit an entry that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE videos(
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        content_hash TEXT NOT NULL UNIQUE,
        fps REAL NOT NULL,
        frame_count INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        added_at TEXT NOT NULL);
    -- Where the train was: time in the video -> line, chainage, GPS, mast, for locating findings.
    CREATE TABLE positions(
        video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
        t REAL NOT NULL,
        line TEXT, chainage_m REAL, lat REAL, lon REAL, mast TEXT,
        PRIMARY KEY(video_id, t));
    CREATE TABLE scans(
        id INTEGER PRIMARY KEY,
        video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
        bundle_digest TEXT NOT NULL,
        bundle_name TEXT NOT NULL,
        precision TEXT NOT NULL,
        head_version INTEGER,
        profile_name TEXT NOT NULL,
        profile_digest TEXT NOT NULL,
        profile_text TEXT NOT NULL,
        step INTEGER NOT NULL,
        status TEXT NOT NULL,
        next_frame INTEGER NOT NULL DEFAULT 0,
        frames_done INTEGER NOT NULL DEFAULT 0,
        decode_errors INTEGER NOT NULL DEFAULT 0,
        message TEXT,
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        finished_at TEXT,
        UNIQUE(video_id, bundle_digest, profile_digest, step));
    CREATE TABLE detections(
        scan_id INTEGER NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
        frame INTEGER NOT NULL,
        crop TEXT NOT NULL,
        region TEXT NOT NULL,
        class TEXT,
        score REAL,
        is_fault INTEGER NOT NULL,
        PRIMARY KEY(scan_id, frame, crop)) WITHOUT ROWID;
    CREATE TABLE embeddings(
        scan_id INTEGER NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
        frame INTEGER NOT NULL,
        crop TEXT NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY(scan_id, frame, crop)) WITHOUT ROWID;
    CREATE TABLE findings(
        id INTEGER PRIMARY KEY,
        scan_id INTEGER NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
        crop TEXT NOT NULL,
        region TEXT NOT NULL,
        class TEXT NOT NULL,
        start_frame INTEGER NOT NULL,
        end_frame INTEGER NOT NULL,
        best_frame INTEGER NOT NULL,
        best_score REAL NOT NULL,
        frames INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'open',
        reviewed_at TEXT);
    CREATE INDEX findings_by_scan ON findings(scan_id, start_frame);
    """,
    """
    CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    -- The fault library: the operator's fault types (and the normal class) with their examples.
    CREATE TABLE fault_types(
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        normal INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        removed_at TEXT);
    CREATE TABLE examples(
        id INTEGER PRIMARY KEY,
        fault_type_id INTEGER NOT NULL REFERENCES fault_types(id),
        source TEXT NOT NULL,
        video_id INTEGER REFERENCES videos(id),
        frame INTEGER,
        crop TEXT,
        region TEXT NOT NULL,
        box TEXT,
        image TEXT NOT NULL,
        pixels_hash TEXT NOT NULL,
        bundle_digest TEXT NOT NULL,
        embedding BLOB NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE(fault_type_id, pixels_hash));
    -- Every change of the library makes a new head version; older ones stay and can be restored.
    CREATE TABLE head_versions(
        version INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL,
        note TEXT NOT NULL,
        bundle_digest TEXT NOT NULL,
        fault_types TEXT NOT NULL,
        quality TEXT,
        head_json TEXT NOT NULL,
        head_npz BLOB NOT NULL);
    ALTER TABLE scans ADD COLUMN classified_with INTEGER;
    """,
    """
    -- A reviewer may confirm a finding as another class than the one the scan called.
    ALTER TABLE findings ADD COLUMN reviewed_class TEXT;
    -- An operator may take a wrong example out; it stays in the store, marked.
    ALTER TABLE examples ADD COLUMN removed_at TEXT;
    -- The mast register of the lines the project's runs cover: chainage -> span between masts.
    CREATE TABLE masts(
        line TEXT NOT NULL,
        mast TEXT NOT NULL,
        chainage_m REAL NOT NULL,
        lat REAL, lon REAL,
        PRIMARY KEY(line, mast));
    """,
    """
    -- A reviewed finding teaches the library its crop: the example remembers which finding.
    ALTER TABLE examples ADD COLUMN finding_id INTEGER;
    """,
    """
    -- Anomaly mode: per region, what normal looks like (a patch bank and its alarm threshold).
    -- Every fit is a new version; the newest one of a region that is not removed is active.
    CREATE TABLE anomaly_models(
        version INTEGER PRIMARY KEY,
        region TEXT NOT NULL,
        created_at TEXT NOT NULL,
        note TEXT NOT NULL,
        bundle_digest TEXT NOT NULL,
        normals INTEGER NOT NULL,
        threshold REAL NOT NULL,
        arrays BLOB NOT NULL,
        removed_at TEXT);
    -- The anomaly model versions a scan scored its crops with ('3,5'; '' for none).
    ALTER TABLE scans ADD COLUMN anomaly_versions TEXT NOT NULL DEFAULT '';
    """,
)

def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def quick_hash(path: Path, chunk: int = 1 << 20) -> str:
    """Identifies a video by size and three 1 MiB samples: instant even on a 10 GB run."""
    size = path.stat().st_size
    sha = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        for offset in sorted({0, max(0, size // 2 - chunk // 2), max(0, size - chunk)}):
            handle.seek(offset)
            sha.update(handle.read(chunk))
    return sha.hexdigest()[:32]


@dataclass(frozen=True)
class VideoRecord:
    id: int
    path: Path
    fps: float
    frame_count: int
    width: int
    height: int


@dataclass(frozen=True)
class ScanRecord:
    id: int
    video_id: int
    bundle_name: str
    precision: str
    profile_name: str
    profile_text: str
    step: int
    status: str
    next_frame: int
    frames_done: int
    decode_errors: int
    message: str | None
    classified_with: int | None = None  # head version of the stored detections
    bundle_digest: str = ""  # the bundle whose embeddings the scan cached
    anomaly_versions: str = ""  # the anomaly models its crops were scored with ('3,5'; '' for none)


@dataclass(frozen=True)
class DetectionRow:
    frame: int
    crop: str
    region: str
    class_name: str | None
    score: float
    is_fault: bool


@dataclass(frozen=True)
class FindingRecord:
    id: int
    scan_id: int
    crop: str
    region: str
    class_name: str
    start_frame: int
    end_frame: int
    best_frame: int
    best_score: float
    frames: int
    status: str
    reviewed_class: str | None = None  # the class a reviewer corrected it to

    @property
    def final_class(self) -> str:
        """The class as reviewed: the reviewer's correction, else what the scan called."""
        return self.reviewed_class or self.class_name


@dataclass(frozen=True)
class FaultTypeRecord:
    id: int
    name: str
    normal: bool
    created_at: str
    removed_at: str | None
    examples: int
    regions: tuple[str, ...]


@dataclass(frozen=True)
class ExampleRow:
    """One labelled example as the library keeps it (the crop image lies in the project folder)."""

    fault_type: str
    source: str  # "operator" or "auto-normal"
    video_id: int | None
    frame: int | None
    crop: str | None
    region: str
    box: tuple[int, int, int, int] | None
    image: str
    pixels_hash: str
    embedding: np.ndarray
    id: int | None = None  # in the store; None until saved
    finding_id: int | None = None  # the reviewed finding it was learned from


@dataclass(frozen=True)
class HeadVersion:
    version: int
    created_at: str
    note: str
    bundle_digest: str
    fault_types: tuple[str, ...]
    quality: dict | None


@dataclass(frozen=True)
class AnomalyVersion:
    version: int
    region: str
    created_at: str
    note: str
    bundle_digest: str
    normals: int
    threshold: float
    removed_at: str | None
    active: bool  # the newest version of its region that is not removed


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    text = str(exc)
    if "full" in text:
        return StoreError(f"project store {path}: the disk is full; free some space and run the same "
                          "command again (work already stored is kept and resumes)")
    if "readonly" in text or "unable to open" in text or "permission" in text.lower():
        return StoreError(f"project store {path}: cannot write ({text}); choose a project folder you can write to")
    if "locked" in text or "busy" in text:
        return StoreError(f"project store {path}: in use by another program ({text}); close it and retry")
    return StoreError(f"project store {path}: {text}; the file may be damaged, keep a copy and report it")


class Store:
    """One project's SQLite database; use one ``Store`` per thread."""

    def __init__(self, project: Path | str) -> None:
        project = Path(project)
        self.path = project / STORE_NAME
        if project.exists() and not project.is_dir():
            raise StoreError(f"project {project}: exists and is not a folder; choose another --project")
        try:
            project.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"project {project}: cannot create the folder ({exc.strerror}); "
                             "choose a project folder you can write to") from None
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise _store_error(self.path, exc) from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing; SQLite errors become one ``StoreError`` line."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from None
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _store_error(self.path, exc) from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """Roll back what is still open: Ctrl-C can land just after COMMIT returned (Python raises
        KeyboardInterrupt between two steps), when there is nothing left to roll back."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"project store {self.path}: made by a newer inspector (schema {version}); "
                             "update inspector")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            try:  # one script, one transaction: a migration is applied whole or not at all
                self._conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
            except sqlite3.Error:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    # videos ---------------------------------------------------------------------------------
    def add_video(self, info: VideoInfo) -> VideoRecord:
        """Register a video by content, so a moved or renamed file keeps its scans."""
        digest = quick_hash(info.path)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO videos(path, content_hash, fps, frame_count, width, height, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(content_hash) DO UPDATE SET path=excluded.path",
                (str(info.path.resolve()), digest, info.fps, info.frame_count, info.width, info.height, now()))
        row = self._conn.execute("SELECT id FROM videos WHERE content_hash=?", (digest,)).fetchone()
        return self.video(row[0])

    def video(self, video_id: int) -> VideoRecord:
        row = self._conn.execute("SELECT id, path, fps, frame_count, width, height FROM videos WHERE id=?",
                                 (video_id,)).fetchone()
        if row is None:
            raise StoreError(f"project store {self.path}: no video {video_id}")
        return VideoRecord(row[0], Path(row[1]), row[2], row[3], row[4], row[5])

    def videos(self) -> list[VideoRecord]:
        ids = [r[0] for r in self._conn.execute("SELECT id FROM videos ORDER BY id")]
        return [self.video(i) for i in ids]

    # scans ----------------------------------------------------------------------------------
    _SCAN_COLUMNS = ("id, video_id, bundle_name, precision, profile_name, profile_text, step, status, "
                     "next_frame, frames_done, decode_errors, message, classified_with, bundle_digest, anomaly_versions")

    def open_scan(self, video_id: int, bundle_digest: str, bundle_name: str, precision: str,
                  profile_name: str, profile_digest: str, profile_text: str, step: int) -> ScanRecord:
        """The scan of this video with this bundle, profile and step: resumed if it exists."""
        stamp = now()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO scans(video_id, bundle_digest, bundle_name, precision, profile_name, "
                "profile_digest, profile_text, step, status, started_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?) "
                "ON CONFLICT(video_id, bundle_digest, profile_digest, step) DO UPDATE SET "
                "status=CASE WHEN status='done' THEN 'done' ELSE 'running' END, updated_at=excluded.updated_at",
                (video_id, bundle_digest, bundle_name, precision, profile_name, profile_digest,
                 profile_text, step, stamp, stamp))
        row = self._conn.execute(
            f"SELECT {self._SCAN_COLUMNS} FROM scans WHERE video_id=? AND bundle_digest=? "
            "AND profile_digest=? AND step=?", (video_id, bundle_digest, profile_digest, step)).fetchone()
        return ScanRecord(*row)

    def restart_scan(self, scan_id: int, anomaly_versions: str) -> ScanRecord:
        """Run a scan again from its first frame, with other anomaly models: its detections go (the
        scan makes them anew; embeddings are replaced batch by batch), its findings stay until the
        scan ends, and then keep their ids and reviews where they match."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM detections WHERE scan_id=?", (scan_id,))
            conn.execute("UPDATE scans SET status='running', next_frame=0, frames_done=0, decode_errors=0, "
                         "message=NULL, finished_at=NULL, anomaly_versions=?, updated_at=? WHERE id=?",
                         (anomaly_versions, now(), scan_id))
        return self.scan(scan_id)

    def scan(self, scan_id: int) -> ScanRecord:
        row = self._conn.execute(f"SELECT {self._SCAN_COLUMNS} FROM scans WHERE id=?", (scan_id,)).fetchone()
        if row is None:
            raise StoreError(f"project store {self.path}: no scan {scan_id}")
        return ScanRecord(*row)

    def scans(self) -> list[ScanRecord]:
        return [ScanRecord(*r) for r in self._conn.execute(f"SELECT {self._SCAN_COLUMNS} FROM scans ORDER BY id")]

    def write_batch(self, scan_id: int, detections: Sequence[DetectionRow],
                    embeddings: Iterable[tuple[int, str, bytes]], next_frame: int,
                    frames_done: int, decode_errors: int) -> None:
        """One batch of results and the scan's progress, in one transaction."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO detections(scan_id, frame, crop, region, class, score, is_fault) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(scan_id, d.frame, d.crop, d.region, d.class_name, d.score, int(d.is_fault)) for d in detections])
            conn.executemany("INSERT OR REPLACE INTO embeddings(scan_id, frame, crop, vector) VALUES (?, ?, ?, ?)",
                             [(scan_id, frame, crop, blob) for frame, crop, blob in embeddings])
            conn.execute("UPDATE scans SET next_frame=?, frames_done=?, decode_errors=?, updated_at=? WHERE id=?",
                         (next_frame, frames_done, decode_errors, now(), scan_id))

    def finish_scan(self, scan_id: int, status: str, message: str | None = None) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE scans SET status=?, message=?, updated_at=?, finished_at=? WHERE id=?",
                         (status, message, now(), now(), scan_id))

    def replace_detections(self, scan_id: int, rows: Sequence[tuple], head_version: int) -> None:
        """All detections of a scan, as classified again by head ``head_version``; ``rows`` are
        (scan_id, frame, crop, region, class, score, is_fault) tuples."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM detections WHERE scan_id=?", (scan_id,))
            conn.executemany(
                "INSERT INTO detections(scan_id, frame, crop, region, class, score, is_fault) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows)
            conn.execute("UPDATE scans SET classified_with=? WHERE id=?", (head_version, scan_id))

    def set_classified_with(self, scan_id: int, head_version: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE scans SET classified_with=? WHERE id=?", (head_version, scan_id))

    def detections(self, scan_id: int, faults_only: bool = False) -> list[DetectionRow]:
        sql = "SELECT frame, crop, region, class, score, is_fault FROM detections WHERE scan_id=?"
        if faults_only:
            sql += " AND is_fault=1"
        rows = self._conn.execute(sql + " ORDER BY crop, frame", (scan_id,))
        return [DetectionRow(f, c, r, k, s, bool(x)) for f, c, r, k, s, x in rows]

    def detection_count(self, scan_id: int) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM detections WHERE scan_id=?", (scan_id,)).fetchone()[0]

    # findings -------------------------------------------------------------------------------
    _FINDING_COLUMNS = ("id, scan_id, crop, region, class, start_frame, end_frame, best_frame, best_score, "
                        "frames, status, reviewed_class")

    def replace_findings(self, scan_id: int, findings: Sequence[FindingRecord]) -> None:
        """Store freshly grouped findings. A new finding that overlaps an old one of the same crop
        and class is that finding: it keeps its id (a review queue or a script holding it stays
        valid) and its review decision, a reviewed one's before an open one's. When it joins several
        old findings (a refit closed the gap between two passages), those with the same decision
        live on in it rather than beside it: one passage, listed once. A reviewed finding with no
        successor (a rejected false alarm the new head no longer raises) stays as it was: a
        decision is never dropped."""
        with self.transaction() as conn:
            old = [(FindingRecord(*row[:-1]), row[-1]) for row in conn.execute(
                f"SELECT {self._FINDING_COLUMNS}, reviewed_at FROM findings WHERE scan_id=? ORDER BY id", (scan_id,))]
            conn.execute("DELETE FROM findings WHERE scan_id=?", (scan_id,))
            taken: set[int] = set()
            rows = []
            # Per (crop, class) the findings never overlap each other, old or new: one sweep in frame
            # order pairs each new finding with the first old one it overlaps (linear, not n x m).
            earlier: dict[tuple[str, str], list[tuple[FindingRecord, str | None]]] = {}
            for record, at in sorted(old, key=lambda pair: pair[0].start_frame):
                earlier.setdefault((record.crop, record.class_name), []).append((record, at))
            cursor: dict[tuple[str, str], int] = {}
            for f in sorted(findings, key=lambda f: f.start_frame):
                key = (f.crop, f.class_name)
                candidates, i = earlier.get(key, []), cursor.get(key, 0)
                while i < len(candidates) and candidates[i][0].end_frame < f.start_frame:
                    i += 1
                cursor[key] = i
                overlapping = []
                for j in range(i, len(candidates)):
                    if candidates[j][0].start_frame > f.end_frame:
                        break
                    if candidates[j][0].id not in taken:
                        overlapping.append(candidates[j])
                if not overlapping:
                    rows.append((None, f.crop, f.region, f.class_name, f.start_frame, f.end_frame, f.best_frame,
                                 f.best_score, f.frames, Review.OPEN, None, None))
                    continue
                record, at = next((c for c in overlapping if c[0].status != Review.OPEN), overlapping[0])
                taken.add(record.id)
                if record.status != Review.OPEN:
                    taken.update(r.id for r, _ in overlapping
                                 if (r.status, r.reviewed_class) == (record.status, record.reviewed_class))
                rows.append((record.id, f.crop, f.region, f.class_name, f.start_frame, f.end_frame, f.best_frame,
                             f.best_score, f.frames, record.status, at, record.reviewed_class))
            rows += [(r.id, r.crop, r.region, r.class_name, r.start_frame, r.end_frame, r.best_frame, r.best_score,
                      r.frames, r.status, at, r.reviewed_class)
                     for r, at in old if r.id not in taken and r.status != Review.OPEN]
            conn.executemany(
                "INSERT INTO findings(id, scan_id, crop, region, class, start_frame, end_frame, best_frame, "
                "best_score, frames, status, reviewed_at, reviewed_class) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # kept ids first: a new id never takes a kept one
                sorted([(row[0], scan_id, *row[1:]) for row in rows], key=lambda row: row[0] is None))

    def findings(self, scan_id: int | None = None) -> list[FindingRecord]:
        sql = f"SELECT {self._FINDING_COLUMNS} FROM findings"
        args: tuple = ()
        if scan_id is not None:
            sql += " WHERE scan_id=?"
            args = (scan_id,)
        return [FindingRecord(*r) for r in self._conn.execute(sql + " ORDER BY scan_id, start_frame, crop", args)]

    def finding(self, finding_id: int) -> FindingRecord | None:
        row = self._conn.execute(f"SELECT {self._FINDING_COLUMNS} FROM findings WHERE id=?", (finding_id,)).fetchone()
        return FindingRecord(*row) if row else None

    def set_finding_status(self, finding_id: int, status: str, reviewed_class: str | None = None,
                           learned: tuple[str, Sequence[tuple[str, bool]], Sequence[ExampleRow]] | None = None) -> None:
        """A review decision; ``reviewed_class`` corrects the class of a confirmed finding.

        ``learned`` (bundle digest, fault types to create, example rows) is what the library
        learns from it; it replaces whatever an earlier decision on the same crop taught, in the
        same transaction as the decision itself."""
        if status not in tuple(Review):
            raise StoreError(f"review status must be one of {', '.join(Review)}, not {status!r}")
        if reviewed_class is not None and status != Review.CONFIRMED:
            raise StoreError("only a confirmed finding can be given another class")
        stamp = now()
        with self.transaction() as conn:
            cur = conn.execute("UPDATE findings SET status=?, reviewed_at=?, reviewed_class=? WHERE id=?",
                               (str(status), stamp if status != Review.OPEN else None, reviewed_class, finding_id))
            if cur.rowcount == 0:
                raise StoreError(f"project store {self.path}: no finding {finding_id}")
            if learned is None:
                return
            digest, new_types, rows = learned
            conn.execute("UPDATE examples SET removed_at=? WHERE finding_id=? AND removed_at IS NULL",
                         (stamp, finding_id))
            self._insert_types(conn, new_types, stamp)
            self._insert_examples(conn, rows, digest, stamp)

    @staticmethod
    def _insert_types(conn: sqlite3.Connection, types: Iterable[tuple[str, bool]], stamp: str) -> None:
        for name, normal in types:
            conn.execute("INSERT INTO fault_types(name, normal, created_at) VALUES (?, ?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET removed_at=NULL", (name, int(normal), stamp))

    @staticmethod
    def _insert_examples(conn: sqlite3.Connection, rows: Iterable[ExampleRow], digest: str, stamp: str) -> None:
        for ex in rows:
            conn.execute(
                "INSERT INTO examples(fault_type_id, source, video_id, frame, crop, region, box, image, "
                "pixels_hash, bundle_digest, embedding, created_at, finding_id) "
                "VALUES ((SELECT id FROM fault_types WHERE name=?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(fault_type_id, pixels_hash) DO UPDATE SET removed_at=NULL, "  # taken out, now back
                "finding_id=COALESCE(excluded.finding_id, finding_id)",
                (ex.fault_type, ex.source, ex.video_id, ex.frame, ex.crop, ex.region,
                 json.dumps(list(ex.box)) if ex.box else None, ex.image, ex.pixels_hash, digest,
                 ex.embedding.astype(np.float32).tobytes(), stamp, ex.finding_id))

    # reference runs: per line, the run later runs are compared with ---------------------------------
    def set_reference(self, line: str, scan_id: int) -> None:
        self.scan(scan_id)
        with self.transaction() as conn:
            conn.execute("INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                         "value=excluded.value", (f"reference:{line}", str(scan_id)))

    def references(self) -> dict[str, int]:
        """Line -> the scan id of its reference run."""
        return {key.removeprefix("reference:"): int(value) for key, value in self._conn.execute(
            "SELECT key, value FROM settings WHERE key LIKE 'reference:%'")}

    # alarm thresholds the operator set --------------------------------------------------------
    def thresholds(self) -> dict[str, float]:
        return {key.removeprefix("threshold:"): float(value) for key, value in self._conn.execute(
            "SELECT key, value FROM settings WHERE key LIKE 'threshold:%'")}

    # fault library --------------------------------------------------------------------------
    def fault_types(self, include_removed: bool = False) -> list[FaultTypeRecord]:
        rows = self._conn.execute(
            "SELECT f.id, f.name, f.normal, f.created_at, f.removed_at, COUNT(e.id), "
            "GROUP_CONCAT(DISTINCT e.region) FROM fault_types f "
            "LEFT JOIN examples e ON e.fault_type_id=f.id AND e.removed_at IS NULL "
            + ("" if include_removed else "WHERE f.removed_at IS NULL ") + "GROUP BY f.id ORDER BY f.id").fetchall()
        return [FaultTypeRecord(i, n, bool(k), c, r, count, tuple(sorted((regions or "").split(",")) if regions else ()))
                for i, n, k, c, r, count, regions in rows]

    def examples(self, fault_types: list[str] | None = None) -> list[ExampleRow]:
        """Examples of the active fault types (or of the named ones, removed or not); examples the
        operator took out are left out."""
        sql = ("SELECT f.name, e.source, e.video_id, e.frame, e.crop, e.region, e.box, e.image, e.pixels_hash, "
               "e.embedding, e.id, e.finding_id FROM examples e JOIN fault_types f ON f.id=e.fault_type_id "
               "WHERE e.removed_at IS NULL ")
        if fault_types is None:
            rows = self._conn.execute(sql + "AND f.removed_at IS NULL ORDER BY e.id").fetchall()
        else:
            marks = ",".join("?" * len(fault_types))
            rows = self._conn.execute(sql + f"AND f.name IN ({marks}) ORDER BY e.id", fault_types).fetchall()
        return [ExampleRow(n, src, v, fr, c, r, tuple(json.loads(b)) if b else None, img, h,
                           np.frombuffer(emb, np.float32).copy(), i, finding)
                for n, src, v, fr, c, r, b, img, h, emb, i, finding in rows]

    def scan_embeddings(self, scan_id: int, chunk: int = 65536) -> Iterator[list[tuple[int, str, bytes]]]:
        """A scan's cached embeddings as (frame, crop, float16 bytes), ``chunk`` rows at a time:
        re-classifying hundreds of thousands of crops never holds them all."""
        cursor = self._conn.execute("SELECT frame, crop, vector FROM embeddings WHERE scan_id=?", (scan_id,))
        while batch := cursor.fetchmany(chunk):
            yield batch

    def cached_embeddings(self, video_id: int, bundle_digest: str,
                          wanted: Sequence[tuple[int, str]]) -> dict[tuple[int, str], np.ndarray]:
        """Embeddings of (frame, crop) pairs cached by scans of this video with this bundle."""
        found: dict[tuple[int, str], np.ndarray] = {}
        scan_ids = [r[0] for r in self._conn.execute(
            "SELECT id FROM scans WHERE video_id=? AND bundle_digest=?", (video_id, bundle_digest))]
        for scan_id in scan_ids:
            for frame, crop in wanted:
                if (frame, crop) in found:
                    continue
                row = self._conn.execute("SELECT vector FROM embeddings WHERE scan_id=? AND frame=? AND crop=?",
                                         (scan_id, frame, crop)).fetchone()
                if row is not None:
                    found[(frame, crop)] = np.frombuffer(row[0], np.float16).astype(np.float32)
        return found

    def scanned_frames(self, video_id: int, bundle_digest: str) -> list[int]:
        """Frames of a video whose crops a scan with this bundle has cached."""
        return [r[0] for r in self._conn.execute(
            "SELECT DISTINCT e.frame FROM embeddings e JOIN scans s ON s.id=e.scan_id "
            "WHERE s.video_id=? AND s.bundle_digest=? ORDER BY e.frame", (video_id, bundle_digest))]

    def all_examples(self) -> list[ExampleRow]:
        """Every stored example, of active and removed fault types alike."""
        names = [t.name for t in self.fault_types(include_removed=True)]
        return self.examples(names) if names else []

    def save_library_change(self, note: str, bundle_digest: str, head_json: str, head_npz: bytes,
                            fault_types: list[str], quality: dict | None,
                            new_types: list[tuple[str, bool]] = (), new_examples: list[ExampleRow] = (),
                            remove: list[str] = (), reactivate: list[str] = (),
                            remove_examples: Sequence[int] = (), rename: tuple[str, str] | None = None,
                            threshold: tuple[str, float | None] | None = None) -> int:
        """One library change (types added, removed, renamed or brought back, examples added or
        taken out, an alarm threshold set or cleared) and the head it produced, as a new active head
        version, all in one transaction."""
        stamp = now()
        with self.transaction() as conn:
            if threshold is not None:
                name, value = threshold
                if value is None:
                    conn.execute("DELETE FROM settings WHERE key=?", (f"threshold:{name}",))
                else:
                    conn.execute("INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                                 "value=excluded.value", (f"threshold:{name}", repr(float(value))))
            if rename is not None:  # the type, and what the scans called by its old name
                old, new = rename
                conn.execute("UPDATE fault_types SET name=? WHERE name=?", (new, old))
                conn.execute("UPDATE findings SET class=? WHERE class=?", (new, old))
                conn.execute("UPDATE findings SET reviewed_class=? WHERE reviewed_class=?", (new, old))
                conn.execute("UPDATE detections SET class=? WHERE class=?", (new, old))
                conn.execute("UPDATE settings SET key=? WHERE key=?", (f"threshold:{new}", f"threshold:{old}"))
            conn.executemany("UPDATE examples SET removed_at=? WHERE id=?", [(stamp, i) for i in remove_examples])
            self._insert_types(conn, new_types, stamp)
            for name in remove:
                conn.execute("UPDATE fault_types SET removed_at=? WHERE name=?", (stamp, name))
            for name in reactivate:
                conn.execute("UPDATE fault_types SET removed_at=NULL WHERE name=?", (name,))
            self._insert_examples(conn, new_examples, bundle_digest, stamp)
            version = (conn.execute("SELECT MAX(version) FROM head_versions").fetchone()[0] or 0) + 1
            conn.execute("INSERT INTO head_versions(version, created_at, note, bundle_digest, fault_types, quality, "
                         "head_json, head_npz) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (version, stamp, note, bundle_digest, json.dumps(fault_types),
                          json.dumps(quality) if quality is not None else None, head_json, head_npz))
            conn.execute("INSERT INTO settings(key, value) VALUES ('active_head', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(version),))
        return version

    def head_versions(self) -> list[HeadVersion]:
        rows = self._conn.execute("SELECT version, created_at, note, bundle_digest, fault_types, quality "
                                  "FROM head_versions ORDER BY version").fetchall()
        return [HeadVersion(v, c, n, d, tuple(json.loads(f)), json.loads(q) if q else None)
                for v, c, n, d, f, q in rows]

    def active_head_version(self) -> int | None:
        row = self._conn.execute("SELECT value FROM settings WHERE key='active_head'").fetchone()
        return int(row[0]) if row else None

    def head_parts(self, version: int) -> tuple[str, bytes, str]:
        """``(head_json, head_npz, bundle_digest)`` of a stored head version."""
        row = self._conn.execute("SELECT head_json, head_npz, bundle_digest FROM head_versions WHERE version=?",
                                 (version,)).fetchone()
        if row is None:
            known = ", ".join(str(h.version) for h in self.head_versions()) or "none"
            raise StoreError(f"project store {self.path}: no head version {version} (versions: {known})")
        return row[0], bytes(row[1]), row[2]

    # anomaly models -------------------------------------------------------------------------
    def save_anomaly_model(self, model: AnomalyModel, note: str) -> int:
        """A region's new anomaly model, active from now on (earlier versions stay)."""
        with self.transaction() as conn:
            cursor = conn.execute("INSERT INTO anomaly_models(region, created_at, note, bundle_digest, normals, "
                                  "threshold, arrays) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                  (model.region, now(), note, model.bundle_digest, model.normals, model.threshold,
                                   model.to_npz()))
        return int(cursor.lastrowid)

    def anomaly_versions(self) -> list[AnomalyVersion]:
        """Every fit, oldest first; the newest version of a region that is not removed is active."""
        rows = self._conn.execute("SELECT version, region, created_at, note, bundle_digest, normals, threshold, "
                                  "removed_at FROM anomaly_models ORDER BY version").fetchall()
        newest = {row[1]: row[0] for row in rows if row[7] is None}
        return [AnomalyVersion(*row, active=newest.get(row[1]) == row[0]) for row in rows]

    def anomaly_models(self, bundle_digest: str) -> dict[str, AnomalyModel]:
        """The active model of each region, fitted with the bundle given (patch features of another
        bundle mean nothing to this one)."""
        models = {}
        for v in self.anomaly_versions():
            if v.active and v.bundle_digest == bundle_digest:
                arrays = self._conn.execute("SELECT arrays FROM anomaly_models WHERE version=?",
                                            (v.version,)).fetchone()[0]
                models[v.region] = AnomalyModel.from_parts(v.region, bytes(arrays), v.threshold, v.bundle_digest,
                                                           v.normals, v.version)
        return models

    def remove_anomaly_models(self, region: str) -> int:
        """Switch anomaly mode off for a region (its versions stay, marked); returns how many."""
        with self.transaction() as conn:
            return conn.execute("UPDATE anomaly_models SET removed_at=? WHERE region=? AND removed_at IS NULL",
                                (now(), region)).rowcount

    # positions ------------------------------------------------------------------------------
    def set_positions(self, video_id: int, fixes: Sequence[Fix]) -> None:
        """A video's position track, replacing any earlier one, in one transaction."""
        self.video(video_id)
        with self.transaction() as conn:
            conn.execute("DELETE FROM positions WHERE video_id=?", (video_id,))
            conn.executemany("INSERT INTO positions(video_id, t, line, chainage_m, lat, lon, mast) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(video_id, f.t, f.line, f.chainage_m, f.lat, f.lon, f.mast) for f in fixes])

    def positions(self, video_id: int) -> list[Fix]:
        return [Fix(*row) for row in self._conn.execute(
            "SELECT t, line, chainage_m, lat, lon, mast FROM positions WHERE video_id=? ORDER BY t", (video_id,))]

    def set_masts(self, masts: Sequence[Mast]) -> None:
        """Add or update masts of the register (a line's other masts stay)."""
        with self.transaction() as conn:
            conn.executemany("INSERT INTO masts(line, mast, chainage_m, lat, lon) VALUES (?, ?, ?, ?, ?) "
                             "ON CONFLICT(line, mast) DO UPDATE SET chainage_m=excluded.chainage_m, "
                             "lat=excluded.lat, lon=excluded.lon",
                             [(m.line, m.mast, m.chainage_m, m.lat, m.lon) for m in masts])

    def masts(self) -> list[Mast]:
        return [Mast(*row) for row in self._conn.execute("SELECT line, mast, chainage_m, lat, lon FROM masts")]
