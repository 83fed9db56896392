"""What the window works on: one project, its bundle, head and profile, and the open video.

Plain Python over the runtime services (store, model, faults, scan): the window only shows it,
so the desktop app and the command line never compute anything differently.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from inspector.anomalies import AnomalyExplainer
from inspector.anomaly import AnomalyModel
from inspector.backbone import Backbone
from inspector.bundle import Bundle, load_bundle
from inspector.compare import against_references
from inspector.errors import InspectorError
from inspector.examples import LabelledExample
from inspector.faults import NORMAL, FaultLibrary, active_head
from inspector.heads import Head
from inspector.regions import GENERIC_PROFILE, CropSpec, RegionProfile, load_profile, parse_profile, profile_for
from inspector.status import Review
from inspector.store import STORE_NAME, FindingRecord, ScanRecord, Store
from inspector.video import Frame, VideoReader

log = logging.getLogger(__name__)


def default_project_for(video: Path) -> Path:
    """Where a video opened on its own keeps its project: beside it, named after it."""
    return video.parent / f"{video.stem}.inspector"


@dataclass
class Label:
    """An operator's label on the current video, waiting to become an example: a region (crop)
    of a frame, or a box drawn on it (frame pixels)."""

    frame: int
    crop: str | None
    label: str
    box: tuple[int, int, int, int] | None = None

    @property
    def target(self) -> str:
        return self.crop if self.box is None else f"box {' '.join(map(str, self.box))}"


@dataclass(frozen=True)
class VideoRow:
    """One line of the window's video list."""

    path: Path
    scan_status: str  # of the latest scan: done, partial, interrupted, running; or "not scanned"
    findings: dict[str, int]  # by review status
    present: bool  # the file is still where it was scanned

    def describe(self) -> str:
        total = sum(self.findings.values())
        text = f"{self.path.name} · {self.scan_status}"
        if total:
            text += f" · {total} findings ({self.findings[Review.OPEN]} open)"
        return text + ("" if self.present else " · file missing")


@dataclass
class ReviewQueue:
    """The findings to review, in order, and where the reviewer is: C, X, S and N move forward,
    P and Backspace back, Shift+N to the next one still open."""

    ids: list[int]
    position: int = 0

    @classmethod
    def of(cls, findings: list[FindingRecord], order: str = "time") -> ReviewQueue:
        """The open findings by video and time (``time``) or most confident first (``score``)."""
        waiting = [f for f in findings if f.status == Review.OPEN]
        if order == "score":
            waiting.sort(key=lambda f: (-f.best_score, f.scan_id, f.start_frame))
        else:
            waiting.sort(key=lambda f: (f.scan_id, f.start_frame, f.crop))
        return cls([f.id for f in waiting])

    @property
    def current(self) -> int | None:
        return self.ids[self.position] if 0 <= self.position < len(self.ids) else None

    def move(self, delta: int) -> int | None:
        """Step; past the last finding the queue is done (``current`` None), never before the first."""
        self.position = max(0, min(self.position + delta, len(self.ids)))
        return self.current

    def next_open(self, status_of: Callable[[int], str]) -> int | None:
        for index in range(self.position + 1, len(self.ids)):
            if status_of(self.ids[index]) == Review.OPEN:
                self.position = index
                return self.current
        self.position = len(self.ids)
        return None


@dataclass
class Session:
    project: Path
    bundle: Bundle
    backbone: Backbone
    store: Store
    profile: RegionProfile
    head: Head
    video: VideoReader | None = None
    labels: list[Label] = field(default_factory=list)
    anomaly: dict[str, AnomalyModel] = field(default_factory=dict)  # the active anomaly models per region

    @classmethod
    def open(cls, project: Path, bundle_dir: Path | None = None, backbone: Backbone | None = None) -> Session:
        bundle = load_bundle(bundle_dir)
        store = Store(project)
        backbone = backbone if backbone is not None and backbone.bundle.digest == bundle.digest else Backbone(bundle)
        scans = store.scans()
        profile = (parse_profile(scans[-1].profile_text, f"profile of scan {scans[-1].id}") if scans
                   else load_profile(GENERIC_PROFILE))  # each video opened brings its own
        anomaly = store.anomaly_models(bundle.digest) if backbone.has_patches else {}
        return cls(project, bundle, backbone, store, profile, active_head(store, bundle), anomaly=anomaly)

    @staticmethod
    def is_project(path: Path) -> bool:
        return (path / STORE_NAME).is_file()

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
        self.store.close()

    # video ----------------------------------------------------------------------------------
    def open_video(self, path: Path) -> VideoReader:
        """Open a video with its regions: those it was last scanned with, else the shipped profile
        drawn for its frame size (the generic full-frame tiling for any other size)."""
        reader = VideoReader(path)
        if self.video is not None:
            self.video.close()
        self.video = reader
        record = self.store.add_video(reader.info)
        scans = [s for s in self.store.scans() if s.video_id == record.id]
        self.profile = (parse_profile(scans[-1].profile_text, f"profile of scan {scans[-1].id}") if scans
                        else profile_for(reader.info.width, reader.info.height))
        self.labels = self._saved_labels(reader.info.path)
        return reader

    def last_video(self) -> Path | None:
        for video in reversed(self.store.videos()):
            if video.path.is_file():
                return video.path
        return None

    def read(self, index: int) -> Frame:
        assert self.video is not None
        return self.video.read_frame(index)

    @property
    def crops(self) -> list[CropSpec]:
        return self.profile.crop_specs()

    # findings -------------------------------------------------------------------------------
    def video_scans(self) -> list[ScanRecord]:
        if self.video is None:
            return []
        video = self.store.add_video(self.video.info)
        return [s for s in self.store.scans() if s.video_id == video.id]

    def findings(self) -> list[FindingRecord]:
        return [f for s in self.video_scans() for f in self.store.findings(s.id)]

    def versus_reference(self) -> dict[int, tuple[str, FindingRecord | None]]:
        """Finding id -> ('new', None) or ('persisting', the reference run's finding) against its
        line's reference run (empty without one)."""
        try:
            compared = against_references(self.store)
        except InspectorError as exc:  # e.g. a reference run whose positions were replaced
            log.warning("no comparison with the reference run: %s", exc)
            return {}
        marks: dict[int, tuple[str, FindingRecord | None]] = {i: ("new", None) for v in compared.values()
                                                               for i in v.new}
        marks.update({i: ("persisting", earlier) for v in compared.values() for i, earlier in v.persisting.items()})
        return marks

    def finding_frame(self, finding: FindingRecord) -> tuple[Frame, CropSpec | None]:
        """A finding's best frame, decoded from its own video (another than the one open), and its crop."""
        scan = self.store.scan(finding.scan_id)
        specs = {c.name: c for c in parse_profile(scan.profile_text, f"profile of scan {scan.id}").crop_specs()}
        with VideoReader(self.store.video(scan.video_id).path) as reader:
            return reader.read_frame(finding.best_frame), specs.get(finding.crop)

    def set_status(self, finding_id: int, status: str, reviewed_class: str | None = None) -> None:
        self.store.set_finding_status(finding_id, status, reviewed_class)

    def video_rows(self) -> list[VideoRow]:
        """The project's videos with their latest scan's state and their findings by review status."""
        scans = self.store.scans()
        findings = self.store.findings()
        rows = []
        for video in self.store.videos():
            mine = [s for s in scans if s.video_id == video.id]
            ids = {s.id for s in mine}
            counts = {status: sum(f.scan_id in ids and f.status == status for f in findings)
                      for status in Review}
            rows.append(VideoRow(video.path, mine[-1].status if mine else "not scanned", counts, video.path.is_file()))
        return rows

    def finding(self, finding_id: int) -> FindingRecord:
        finding = self.store.finding(finding_id)
        if finding is not None:
            return finding
        raise InspectorError(f"finding {finding_id} is no longer in the project (scanned again?)")

    def video_of(self, finding: FindingRecord) -> Path:
        return self.store.video(self.store.scan(finding.scan_id).video_id).path

    def reload_head(self) -> None:
        """The active head and anomaly models, after a change of the library or a fit."""
        self.head = active_head(self.store, self.bundle)
        self.anomaly = self.store.anomaly_models(self.bundle.digest) if self.backbone.has_patches else {}

    # labelling ------------------------------------------------------------------------------
    def fault_types(self) -> list[str]:
        """Fault classes the operator can label with, in key order (1, 2, ...)."""
        return [c for c, normal in zip(self.head.classes, self.head.normal) if not normal]

    def add_label(self, frame: int, crop: str | None, label: str,
                  box: tuple[int, int, int, int] | None = None) -> None:
        new = Label(frame, None if box else crop, label, box)
        self.labels = [x for x in self.labels if (x.frame, x.target) != (frame, new.target)]
        self.labels.append(new)
        self.save_labels()

    def undo_label(self) -> Label | None:
        label = self.labels.pop() if self.labels else None
        self.save_labels()
        return label

    def forget_labels(self, names: set[str]) -> None:
        """Labels that became examples (adapted) leave the pending list."""
        self.labels = [x for x in self.labels if x.label not in names]
        self.save_labels()

    @property
    def labels_path(self) -> Path:
        return self.project / "labels.csv"

    def save_labels(self) -> Path:
        """The pending labels of every video as an examples CSV in the project (what 'faults add'
        reads), written on every change, so a label is never lost to a crash or a quit."""
        import csv

        assert self.video is not None
        here = str(self.video.info.path)
        others = [row for row in self._label_rows() if row["video"] != here]
        temporary = self.labels_path.with_suffix(".tmp")
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["video", "frame", "region", "box", "label"])
            for row in others:
                writer.writerow([row["video"], row["frame"], row["region"], row["box"], row["label"]])
            for x in self.labels:
                writer.writerow([here, x.frame, x.crop or "", " ".join(map(str, x.box)) if x.box else "", x.label])
        temporary.replace(self.labels_path)
        return self.labels_path

    def _label_rows(self) -> list[dict[str, str]]:
        import csv

        if not self.labels_path.is_file():
            return []
        with self.labels_path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def _saved_labels(self, video: Path) -> list[Label]:
        """The pending labels saved for ``video`` (a damaged row is skipped, never fatal)."""
        labels = []
        for row in self._label_rows():
            if row.get("video") != str(video):
                continue
            try:
                box = tuple(int(v) for v in row["box"].split()) if row.get("box") else None
                labels.append(Label(int(row["frame"]), row.get("region") or None, row["label"], box))  # type: ignore[arg-type]
            except (KeyError, ValueError):
                continue
        return labels

    def examples_for(self, name: str) -> list[LabelledExample]:
        """The pending labels of a new fault type ``name`` and the normal ones, as examples."""
        assert self.video is not None
        return [LabelledExample(i + 1, x.label, self.video.info.path, x.frame, x.crop, x.box)
                for i, x in enumerate(self.labels) if x.label in (name, NORMAL)]

    def explainer(self) -> AnomalyExplainer:
        """Anomaly heatmaps with the session's anomaly models (reloaded after a fit)."""
        return AnomalyExplainer(self.backbone, self.anomaly)

    def library(self, backbone: Backbone | None = None, store: Store | None = None) -> FaultLibrary:
        return FaultLibrary(store or self.store, self.bundle, backbone or self.backbone)

