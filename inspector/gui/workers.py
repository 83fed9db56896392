"""Work that must never block the window: live inference, scans, adaptation, reports.

Each runs in its own thread with its own store connection (SQLite connections are per thread)
and reports through Qt signals, which Qt delivers in the window's thread. The one ONNX Runtime
session of the process is shared: its ``run`` is thread-safe.
"""
from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QThread, pyqtSignal

from inspector.anomalies import fit_region, normal_crops_from_video
from inspector.anomaly import AnomalyModel
from inspector.backbone import Backbone
from inspector.bundle import Bundle
from inspector.decide import decide_crops
from inspector.errors import InspectorError
from inspector.faults import FaultLibrary, LibraryChange, active_head
from inspector.heads import Head
from inspector.regions import CropSpec, RegionProfile, crop_frame
from inspector.report import build_report
from inspector.scan import Scanner, ScanProgress, reclassify, scan_many
from inspector.store import Store


def _message(exc: BaseException) -> str:
    if isinstance(exc, InspectorError):
        return str(exc)
    return f"unexpected error: {type(exc).__name__}: {exc} ({traceback.format_exc(limit=1).splitlines()[-1]})"


class LiveInference(QThread):
    """Classifies the crops of the frame on screen; only the newest frame waits, older ones are
    dropped, so playback never waits on inference."""

    result = pyqtSignal(int, list)  # frame index, [(crop, class or "", score, is_fault)]

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self._backbone = backbone
        self._lock = threading.Condition()
        self._job: tuple[int, np.ndarray, list[CropSpec], Head, dict[str, AnomalyModel]] | None = None
        self._stop = False

    def submit(self, index: int, image: np.ndarray, specs: list[CropSpec], head: Head,
               anomaly: dict[str, AnomalyModel] | None = None) -> None:
        with self._lock:
            self._job = (index, image, specs, head, anomaly or {})
            self._lock.notify()

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify()
        self.wait(5000)

    def run(self) -> None:
        while True:
            with self._lock:
                while self._job is None and not self._stop:
                    self._lock.wait()
                if self._stop:
                    return
                index, image, specs, head, anomaly = self._job
                self._job = None
            crops = crop_frame(image, specs, self._backbone.bundle.input_size)
            decision = decide_crops(self._backbone, head, crops, [spec.region for spec in specs], anomaly)
            out = [(spec.name, *(decision.call(i, head) or ("", 0.0, False))) for i, spec in enumerate(specs)]
            self.result.emit(index, out)


class ScanWorker(QThread):
    """Scans videos into the project with the session's bundle, head and profile, through the same
    ``scan_many`` as ``inspector scan``: a video that cannot be read is named and skipped, the
    others are scanned."""

    progress = pyqtSignal(str, int, int, int, int, float, float)  # video, n, of N, frame, frames, frames/s, ETA s (-1)
    done = pyqtSignal(str)  # summary line
    failed = pyqtSignal(str)

    def __init__(self, project: Path, backbone: Backbone, head: Head, profile: RegionProfile | None,
                 videos: list[Path], step: int = 1) -> None:
        super().__init__()
        self._args = (project, backbone, head, profile, videos, step)
        self.cancel_event = threading.Event()

    def cancel(self) -> None:
        self.cancel_event.set()

    def run(self) -> None:
        project, backbone, head, profile, videos, step = self._args
        lines: list[str] = []
        current = [0]

        def report(p: ScanProgress) -> None:
            eta = -1.0 if p.eta_seconds is None else p.eta_seconds
            self.progress.emit(p.video.name, current[0] + 1, len(videos), p.frame, p.frame_count,
                               p.frames_per_second, eta)

        try:
            with Store(project) as store:
                scan_many(Scanner(store, backbone, head, profile, step=step), videos, report, self.cancel_event,
                          on_start=lambda index, _path: current.__setitem__(0, index),
                          on_result=lambda r: lines.append(f"{r.video.name}: {r.status}, {r.findings} findings"
                                                           + (f" ({r.message})" if r.message else "")),
                          on_error=lambda path, exc: lines.append(f"{path.name}: not scanned ({exc})"))
        except BaseException as exc:  # shown to the operator as one line
            self.failed.emit(_message(exc))
            return
        self.done.emit("; ".join(lines) if lines else "cancelled")


class LibraryWorker(QThread):
    """One change of the fault library (add a type or examples, take an example out, rename, learn
    from reviews), then the scanned runs classified again with the new head: the refit never runs in
    the window's thread."""

    done = pyqtSignal(object, str)  # LibraryChange, reclassification summary
    failed = pyqtSignal(str)

    def __init__(self, project: Path, bundle: Bundle, backbone: Backbone,
                 change: Callable[[FaultLibrary], LibraryChange]) -> None:
        super().__init__()
        self._args = (project, bundle, backbone, change)

    def run(self) -> None:
        project, bundle, backbone, change = self._args
        try:
            with Store(project) as store:
                made = change(FaultLibrary(store, bundle, backbone))
                result = reclassify(store, active_head(store, bundle))
        except BaseException as exc:
            self.failed.emit(_message(exc))
            return
        self.done.emit(made, f"{result.crops} scanned crops classified again in {result.seconds:.1f} s, "
                             f"{result.findings} findings")


class AnomalyWorker(QThread):
    """A region's anomaly model fitted from a stretch of normal frames of the open video, off the
    window's thread (``inspector anomaly fit`` does the same)."""

    done = pyqtSignal(str)  # one line: what was fitted
    failed = pyqtSignal(str)

    def __init__(self, project: Path, backbone: Backbone, video: Path, frames: tuple[int, int], region: str,
                 profile: RegionProfile) -> None:
        super().__init__()
        self._args = (project, backbone, video, frames, region, profile)

    def run(self) -> None:
        project, backbone, video, (first, last), region, profile = self._args
        try:
            with Store(project) as store:
                crops, count = normal_crops_from_video(store, video, first, last, region,
                                                       backbone.bundle.input_size, profile)
                fit = fit_region(store, backbone, region, crops, count, f"{video.name} frames {first}-{last}")
        except BaseException as exc:
            self.failed.emit(_message(exc))
            return
        self.done.emit(f"anomaly model v{fit.version} of {region} from {count} normal frames ({first}-{last}), "
                       f"{fit.seconds:.1f} s; scan again (Ctrl+R) to flag what differs from them")


class ReportWorker(QThread):
    progress = pyqtSignal(int, int)  # findings done, of
    done = pyqtSignal(str)  # path of report.html
    failed = pyqtSignal(str)

    def __init__(self, project: Path, out: Path, backbone: Backbone) -> None:
        super().__init__()
        self._project, self._out, self._backbone = project, out, backbone

    def run(self) -> None:
        try:
            with Store(self._project) as store:
                summary = build_report(store, self._out, self.progress.emit, backbone=self._backbone)
        except BaseException as exc:
            self.failed.emit(_message(exc))
            return
        self.done.emit(str(summary.html))
