"""Scan videos: decode in one thread, embed and classify in batches in another, write in
transactions, report progress through a callback (the CLI draws a bar, the GUI emits signals).

A scan is identified by (video content, bundle, profile, step): running the same command again
resumes an interrupted scan from its last stored batch and skips a finished one.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inspector.anomaly import ANOMALY, AnomalyModel
from inspector.backbone import Backbone
from inspector.decide import decide, decide_crops
from inspector.errors import BundleError, InspectorError, ProfileError, StoreError
from inspector.findings import group_findings
from inspector.heads import Head
from inspector.regions import CropSpec, RegionProfile, crop_planes, parse_profile, profile_for
from inspector.status import ScanState
from inspector.store import DetectionRow, ScanRecord, Store
from inspector.video import VideoInfo, VideoReader, step_for_rate

log = logging.getLogger(__name__)

QUEUE_FRAMES = 48  # decoded frames waiting for inference: bounds memory whatever the video length


@dataclass(frozen=True)
class ScanProgress:
    video: Path
    frame: int  # frames of the video covered so far
    frame_count: int
    samples: int  # frames actually classified in this run
    frames_per_second: float  # video frames covered per second of wall time
    eta_seconds: float | None
    decode_errors: int


@dataclass(frozen=True)
class ScanResult:
    video: Path
    scan_id: int
    status: str  # done | partial | interrupted | skipped
    samples: int
    detections: int
    findings: int
    decode_errors: int
    seconds: float
    message: str = ""


ProgressCallback = Callable[[ScanProgress], None]
_END = object()


class Scanner:
    """Scans videos of one project with one backbone and head, and one region profile (``None``:
    each video gets the profile drawn for its frame size, see ``regions.profile_for``)."""

    def __init__(self, store: Store, backbone: Backbone, head: Head, profile: RegionProfile | None,
                 step: int = 1, target_fps: float | None = None, batch_size: int = 32,
                 keep_embeddings: bool = True, anomaly: dict[str, AnomalyModel] | None = None) -> None:
        """``anomaly``: the anomaly models per region (default: the project's active ones for the bundle)."""
        bundle = backbone.bundle
        if profile is not None:
            self._check(profile, bundle.input_size)
        if head.embedding_size != bundle.embedding_size:
            raise BundleError(f"head has {head.embedding_size}-d weights but the bundle embeds to "
                              f"{bundle.embedding_size}-d; use a head made for this bundle")
        if step < 1 or (target_fps is not None and target_fps <= 0):
            raise ValueError("step must be >= 1 and target_fps positive")
        self.store = store
        self.backbone = backbone
        self.head = head
        self.profile = profile
        self.step = step
        self.target_fps = target_fps
        self.batch_size = batch_size
        self.keep_embeddings = keep_embeddings
        self._bundle_digest = bundle.digest
        self.anomaly = store.anomaly_models(self._bundle_digest) if anomaly is None else anomaly
        stale = sorted(v.region for v in store.anomaly_versions()
                       if v.active and v.bundle_digest != self._bundle_digest)
        if anomaly is None and stale:
            log.warning("the anomaly models of %s were fitted with another model bundle and are not used; fit them "
                        "again with this one ('inspector anomaly fit')", ", ".join(stale))
        if self.anomaly and not backbone.has_patches:
            raise BundleError(f"the project's anomaly models need patch features, which bundle {bundle.name} "
                              "lacks; scan with the bundle they were fitted with")
        self.anomaly_versions = ",".join(str(m.version) for m in sorted(self.anomaly.values(), key=lambda m: m.version))

    @staticmethod
    def _check(profile: RegionProfile, input_size: int) -> None:
        if profile.crop_size is not None and profile.crop_size != input_size:
            raise ProfileError(f"profile {profile.name}: crop_size {profile.crop_size} does not match the bundle's "
                               f"input size {input_size}; remove crop_size or use a matching bundle")

    def profile_of(self, info: VideoInfo) -> RegionProfile:
        """The profile a video is scanned with."""
        if self.profile is not None:
            return self.profile
        profile = profile_for(info.width, info.height)
        self._check(profile, self.backbone.bundle.input_size)
        return profile

    def open(self, info: VideoInfo) -> tuple[ScanRecord, RegionProfile, int]:
        """The scan of a video with this scanner's bundle, profile and rate (resumed if it exists),
        its profile and frame step."""
        profile = self.profile_of(info)
        step = self.step if self.target_fps is None else step_for_rate(info, self.target_fps)
        video = self.store.add_video(info)
        record = self.store.open_scan(video.id, self._bundle_digest, self.backbone.bundle.name,
                                      self.backbone.precision, profile.name, profile.digest, profile.source, step)
        if record.anomaly_versions != self.anomaly_versions:
            if record.next_frame or record.status == ScanState.DONE:
                log.info("%s: anomaly models changed since its scan; scanning it again (reviews are kept)", info.path)
            record = self.store.restart_scan(record.id, self.anomaly_versions)
        return record, profile, step

    def skipped(self, path: Path, record: ScanRecord) -> ScanResult:
        """A video already scanned to the end: nothing decoded; classified again if the head is newer."""
        message = "already scanned with this bundle, profile and step"
        if record.classified_with != self.head.version:
            reclassify(self.store, self.head, scan_ids=[record.id])
            message += f"; classified again with head version {self.head.version}"
        return ScanResult(path, record.id, ScanState.SKIPPED, 0, self.store.detection_count(record.id),
                          len(self.store.findings(record.id)), record.decode_errors, 0.0, message)

    def scan(self, path: Path | str, progress: ProgressCallback | None = None,
             cancel: threading.Event | None = None) -> ScanResult:
        """Scan one video to the end (or until ``cancel`` is set); raises ``VideoError`` for a
        video that cannot be opened at all."""
        path = Path(path)
        started = time.monotonic()
        reader = VideoReader(path)
        info = reader.info
        try:
            record, profile, step = self.open(info)
        except InspectorError:
            reader.close()
            raise
        specs = profile.crop_specs()
        if record.status == ScanState.DONE:
            reader.close()
            return self.skipped(path, record)
        if record.next_frame:
            log.info("%s: resuming at frame %d of %d", path, record.next_frame, info.frame_count)
        cancel = cancel or threading.Event()
        frames: queue.Queue = queue.Queue(QUEUE_FRAMES)
        failure: list[BaseException] = []
        decoder = threading.Thread(target=self._decode,
                                   args=(reader, specs, record.next_frame, step, frames, cancel, failure),
                                   name="inspector-decode", daemon=True)
        decoder.start()
        samples = 0
        frames_done = record.frames_done
        start_frame = record.next_frame
        try:
            batch: list[tuple[int, np.ndarray]] = []
            finished = False
            while not finished:
                item = frames.get()
                if item is _END:
                    finished = True
                else:
                    batch.append(item)
                if batch and (finished or len(batch) * len(specs) >= self.batch_size):
                    self._classify_and_store(record.id, specs, batch, step, frames_done + len(batch),
                                             record.decode_errors + reader.decode_errors)
                    samples += len(batch)
                    frames_done += len(batch)
                    if progress:
                        progress(self._progress(path, batch[-1][0] + 1, info.frame_count, start_frame,
                                                samples, started, record.decode_errors + reader.decode_errors))
                    batch = []
        except BaseException:
            cancel.set()
            decoder.join(timeout=5)
            reader.close()
            self._mark_interrupted(record.id)
            raise
        decoder.join()
        reader.close()
        if failure:
            self._mark_interrupted(record.id)
            raise failure[0]
        errors = record.decode_errors + reader.decode_errors
        findings = group_findings(self.store.detections(record.id, faults_only=True), step, scan_id=record.id)
        self.store.replace_findings(record.id, findings)
        if cancel.is_set():
            status, message = ScanState.INTERRUPTED, "cancelled; run the same scan to resume"
            self.store.finish_scan(record.id, status, message)
        elif reader.stopped_early:
            last = self.store.scan(record.id).next_frame
            status = ScanState.PARTIAL
            message = (f"stops decoding near frame {last} of {info.frame_count}: the file is truncated or "
                       "damaged; results up to there are kept, copy the file again to scan the rest")
            self.store.finish_scan(record.id, status, message)
        else:
            status = ScanState.DONE
            message = f"{errors} frames could not be decoded and were skipped" if errors else ""
            self.store.finish_scan(record.id, status, message or None)
        self.store.set_classified_with(record.id, self.head.version)
        return ScanResult(path, record.id, status, samples, self.store.detection_count(record.id),
                          len(findings), errors, time.monotonic() - started, message)

    def _mark_interrupted(self, scan_id: int) -> None:
        """Best effort: the stored batches and ``next_frame`` are what resuming relies on."""
        try:
            self.store.finish_scan(scan_id, ScanState.INTERRUPTED, "stopped before the end; run the same scan to resume")
        except InspectorError as exc:
            log.warning("could not mark scan %d as interrupted: %s", scan_id, exc)

    def _decode(self, reader: VideoReader, specs: list[CropSpec], start: int, step: int, out: queue.Queue,
                cancel: threading.Event, failure: list[BaseException]) -> None:
        size = self.backbone.bundle.input_size
        try:
            for frame in reader.planes(start=start, step=step):
                crops = crop_planes(frame, specs, size)
                while not cancel.is_set():
                    try:
                        out.put((frame.index, crops), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if cancel.is_set():
                    break
        except BaseException as exc:  # handed to the scanning thread, which raises it
            failure.append(exc)
        finally:
            out.put(_END)

    def _classify_and_store(self, scan_id: int, specs: list[CropSpec], batch: list[tuple[int, np.ndarray]], step: int,
                            frames_done: int, decode_errors: int) -> None:
        crops = np.concatenate([c for _, c in batch])
        per_frame = len(specs)
        decision = decide_crops(self.backbone, self.head, crops, [spec.region for _ in batch for spec in specs],
                                self.anomaly, batch_size=max(self.batch_size, len(crops)))
        rows = [DetectionRow(frame, spec.name, spec.region, *called)
                for f, (frame, _) in enumerate(batch) for j, spec in enumerate(specs)
                if (called := decision.call(f * per_frame + j, self.head)) is not None]
        embeddings = decision.embeddings
        vectors = embeddings.astype(np.float16)
        stored = ([(frame, spec.name, vectors[i * per_frame + j].tobytes())
                   for i, (frame, _) in enumerate(batch) for j, spec in enumerate(specs)]
                  if self.keep_embeddings else [])
        self.store.write_batch(scan_id, rows, stored, batch[-1][0] + step, frames_done, decode_errors)

    @staticmethod
    def _progress(path: Path, frame: int, total: int, start: int, samples: int, started: float,
                  errors: int) -> ScanProgress:
        elapsed = max(time.monotonic() - started, 1e-6)
        rate = (frame - start) / elapsed
        eta = (total - frame) / rate if rate > 0 else None
        return ScanProgress(path, frame, total, samples, rate, eta, errors)


@dataclass(frozen=True)
class ReclassifyResult:
    scans: int
    crops: int
    findings: int
    seconds: float
    skipped: tuple[int, ...]  # scans without cached embeddings (scanned with --no-embeddings)


def reclassify(store: Store, head: Head, progress: Callable[[int, int], None] | None = None,
               chunk: int = 65536, scan_ids: list[int] | None = None) -> ReclassifyResult:
    """Classify every scanned crop again from its cached embedding, with ``head``: no decoding.

    Each scan's detections and findings are replaced in one transaction (review decisions carry
    over to the matching new findings)."""
    started = time.monotonic()
    scans = [s for s in store.scans() if scan_ids is None or s.id in scan_ids]
    crops = findings = 0
    skipped = []
    for number, scan in enumerate(scans, start=1):
        regions = {s.name: s.region for s in parse_profile(scan.profile_text).crop_specs()}
        # Anomaly scores need patch features, which are not cached: an anomaly stays where the head
        # now calls the crop no fault, and gives way where a fault type now claims it.
        anomalies = {(d.frame, d.crop): d for d in store.detections(scan.id, faults_only=True)
                     if d.class_name == ANOMALY}
        rows: list[tuple] = []  # (scan, frame, crop, region, class, score, fault): straight to executemany
        faults: list[DetectionRow] = []
        seen = 0
        for batch in store.scan_embeddings(scan.id, chunk):
            frames, names, blobs = zip(*batch)
            vectors = np.frombuffer(b"".join(blobs), np.float16).reshape(len(batch), -1).astype(np.float32)
            if vectors.shape[1] != head.embedding_size:
                raise StoreError(f"scan {scan.id}: cached embeddings are {vectors.shape[1]}-d but the head expects "
                                 f"{head.embedding_size}-d; rescan with the project's bundle")
            crop_regions = [regions.get(n, n) for n in names]
            pred = decide(head, vectors, crop_regions)
            picked = np.flatnonzero(pred.class_index >= 0).tolist()
            classes = [head.classes[k] for k in pred.class_index[picked].tolist()]
            scores, flags = pred.score[picked].tolist(), pred.is_fault[picked].tolist()
            rows += [(scan.id, frames[i], names[i], crop_regions[i], c, sc, int(f))
                     for i, c, sc, f in zip(picked, classes, scores, flags)]
            faults += [DetectionRow(frames[i], names[i], crop_regions[i], c, sc, True)
                       for i, c, sc, f in zip(picked, classes, scores, flags) if f]
            seen += len(batch)
        if anomalies:
            claimed = {(r[1], r[2]) for r in rows if r[6]}
            kept = {key: d for key, d in anomalies.items() if key not in claimed}
            rows = [r for r in rows if (r[1], r[2]) not in kept]
            rows += [(scan.id, d.frame, d.crop, d.region, ANOMALY, d.score, 1) for d in kept.values()]
            faults += kept.values()
        if not seen:
            if scan.frames_done:
                skipped.append(scan.id)
            continue
        store.replace_detections(scan.id, rows, head.version)
        grouped = group_findings(faults, scan.step, scan_id=scan.id)
        store.replace_findings(scan.id, grouped)
        crops += seen
        findings += len(grouped)
        if progress:
            progress(number, len(scans))
    return ReclassifyResult(len(scans) - len(skipped), crops, findings, time.monotonic() - started, tuple(skipped))


def scan_many(scanner: Scanner, videos: list[Path], progress: ProgressCallback | None = None,
              cancel: threading.Event | None = None,
              on_start: Callable[[int, Path], None] | None = None,
              on_result: Callable[[ScanResult], None] | None = None,
              on_error: Callable[[Path, InspectorError], None] | None = None) -> tuple[list[ScanResult], list[Path]]:
    """Scan each video in turn; a bad video is reported through ``on_error`` and skipped."""
    results, failed = [], []
    for index, path in enumerate(videos):
        if cancel is not None and cancel.is_set():
            break
        if on_start:
            on_start(index, path)
        try:
            result = scanner.scan(path, progress, cancel)
        except StoreError:
            raise  # the project itself cannot be written: no later video would fare better
        except InspectorError as exc:
            failed.append(path)
            if on_error:
                on_error(path, exc)
            continue
        results.append(result)
        if on_result:
            on_result(result)
        if result.status == ScanState.PARTIAL:
            failed.append(path)
    return results, failed
