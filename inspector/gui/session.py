"""What the window works on: one project, its bundle, head and profile, and the open video.

Plain Python over the runtime services (store, model, faults, scan): the window only shows it,
so the desktop app and the command line never compute anything differently.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from inspector.faults import NORMAL, FaultLibrary, LabelledExample, active_head
from inspector.heads import Head
from inspector.model import Backbone, Bundle, load_bundle
from inspector.regions import CropSpec, RegionProfile, load_profile, parse_profile
from inspector.store import STORE_NAME, FindingRecord, ScanRecord, Store
from inspector.video import Frame, VideoReader


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

    @classmethod
    def open(cls, project: Path, bundle_dir: Path | None = None, backbone: Backbone | None = None) -> Session:
        bundle = load_bundle(bundle_dir)
        store = Store(project)
        backbone = backbone if backbone is not None and backbone.bundle.digest == bundle.digest else Backbone(bundle)
        session = cls(project, bundle, backbone, store, load_profile(None), active_head(store, bundle))
        scans = store.scans()
        if scans:  # show the profile the project was scanned with
            session.profile = parse_profile(scans[-1].profile_text, f"profile of scan {scans[-1].id}")
        return session

    @staticmethod
    def is_project(path: Path) -> bool:
        return (path / STORE_NAME).is_file()

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
        self.store.close()

    # video ----------------------------------------------------------------------------------
    def open_video(self, path: Path) -> VideoReader:
        reader = VideoReader(path)
        if self.video is not None:
            self.video.close()
        self.video = reader
        self.store.add_video(reader.info)
        self.labels.clear()
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

    def set_status(self, finding_id: int, status: str) -> None:
        self.store.set_finding_status(finding_id, status)

    def reload_head(self) -> None:
        self.head = active_head(self.store, self.bundle)

    # labelling ------------------------------------------------------------------------------
    def fault_types(self) -> list[str]:
        """Fault classes the operator can label with, in key order (1, 2, ...)."""
        return [c for c, normal in zip(self.head.classes, self.head.normal) if not normal]

    def add_label(self, frame: int, crop: str | None, label: str,
                  box: tuple[int, int, int, int] | None = None) -> None:
        new = Label(frame, None if box else crop, label, box)
        self.labels = [x for x in self.labels if (x.frame, x.target) != (frame, new.target)]
        self.labels.append(new)

    def undo_label(self) -> Label | None:
        return self.labels.pop() if self.labels else None

    def save_labels(self) -> Path:
        """The pending labels as an examples CSV in the project (what 'faults add' reads)."""
        import csv

        assert self.video is not None
        path = self.project / "labels.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["video", "frame", "region", "box", "label"])
            for x in self.labels:
                box = " ".join(map(str, x.box)) if x.box else ""
                writer.writerow([str(self.video.info.path), x.frame, x.crop or "", box, x.label])
        return path

    def examples_for(self, name: str) -> list[LabelledExample]:
        """The pending labels of a new fault type ``name`` and the normal ones, as examples."""
        assert self.video is not None
        return [LabelledExample(i + 1, x.label, self.video.info.path, x.frame, x.crop, x.box)
                for i, x in enumerate(self.labels) if x.label in (name, NORMAL)]

    def library(self, backbone: Backbone | None = None, store: Store | None = None) -> FaultLibrary:
        return FaultLibrary(store or self.store, self.bundle, backbone or self.backbone)

