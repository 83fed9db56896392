"""A fleet's recordings on a Ray cluster: one task per video, the project store on the driver.

Each video is scanned by a Ray task on whichever node has a free CPU: the task reads the video
and the model bundle from storage every node sees (the same paths), scans it with the ordinary
``Scanner`` into a scratch project of its own, and returns the detections, cached embeddings
and findings. The driver alone writes the project store, in the same transactions as a local
scan, so resuming, "nothing lost or counted twice" and the report work as for a local scan: a
video already scanned is skipped before any task starts; a task whose worker dies is retried
from the start by Ray (its scratch project is thrown away), and the driver writes its result
once. Memory: each video gets a fresh worker process (``max_calls=1``: a worker reused across
videos grew by about 12 MB per video), and a task holds one video's results until it returns
(about 0.5 KB per crop).

    inspector scan /shared/runs/*.mp4 --project DIR --ray              # a local Ray instance
    inspector scan /shared/runs/*.mp4 --project DIR --ray auto         # the cluster this node joined
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from inspector.anomaly import AnomalyModel
from inspector.backbone import Backbone
from inspector.bundle import load_bundle
from inspector.errors import InspectorError
from inspector.heads import Head
from inspector.regions import parse_profile
from inspector.scan import Scanner, ScanResult
from inspector.status import ScanState
from inspector.store import DetectionRow, FindingRecord, Store
from inspector.video import VideoReader

log = logging.getLogger(__name__)

TASK_RETRIES = 3  # a task whose worker dies is run again from the start this many times


@dataclass(frozen=True)
class RemoteScan:
    """What a task sends back: one video scanned to the end (or as far as it decodes)."""

    status: str
    message: str
    samples: int
    next_frame: int
    frames_done: int
    decode_errors: int
    seconds: float
    detections: list[DetectionRow]
    embeddings: list[tuple[int, str, bytes]]
    findings: list[FindingRecord]
    peak_memory_mb: float  # the worker process's peak resident memory so far


def scan_task(bundle_dir: str, precision: str, threads: int, head_json: str, head_npz: bytes, head_version: int,
              profile_text: str, video: str, step: int, keep_embeddings: bool, workdir: str,
              anomaly_parts: list[tuple] = ()) -> RemoteScan:
    """Runs on a worker: the video scanned into a scratch project, its results read back.
    ``anomaly_parts``: the driver's anomaly models as ``AnomalyModel.from_parts`` arguments."""
    backbone = Backbone(load_bundle(Path(bundle_dir)), precision, threads)
    head = Head.from_parts(head_json, head_npz).with_version(head_version)
    anomaly = {parts[0]: AnomalyModel.from_parts(*parts) for parts in anomaly_parts}
    folder = Path(workdir) / f"task-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    (folder / "worker.pid").write_text(str(os.getpid()))  # which process runs it (to watch or stop it)
    try:
        with Store(folder) as store:
            scanner = Scanner(store, backbone, head, parse_profile(profile_text, "profile"), step=step,
                              keep_embeddings=keep_embeddings, anomaly=anomaly)
            result = scanner.scan(video)
            scan = store.scan(result.scan_id)
            embeddings = [(f, c, bytes(v)) for batch in store.scan_embeddings(scan.id) for f, c, v in batch]
            return RemoteScan(result.status, result.message, result.samples, scan.next_frame, scan.frames_done,
                              scan.decode_errors, result.seconds, store.detections(scan.id), embeddings,
                              store.findings(scan.id), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def scan_on_ray(scanner: Scanner, bundle_dir: Path, videos: list[Path], address: str | None = None,
                workers: int | None = None, threads: int = 1,
                on_result: Callable[[ScanResult], None] | None = None,
                on_error: Callable[[Path, InspectorError], None] | None = None) -> tuple[list[ScanResult], list[Path]]:
    """Scan ``videos`` as Ray tasks with the scanner's bundle, head, profile and rate, into the
    scanner's store. ``address``: a running cluster (``auto``, ``ray://host:10001``); None starts a
    local instance with ``workers`` CPUs. Each task takes ``threads`` CPUs (ONNX Runtime threads).
    Returns the results and the videos not scanned fully."""
    try:
        import ray
    except ImportError:
        raise InspectorError("--ray needs Ray: pip install 'inspector[ray]'") from None
    store, head, backbone = scanner.store, scanner.head, scanner.backbone
    results: list[ScanResult] = []
    failed: list[Path] = []
    ray.init(address=address, num_cpus=workers if address is None else None, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING, ignore_reinit_error=True)
    task = ray.remote(max_retries=TASK_RETRIES, num_cpus=threads, max_calls=1)(scan_task)
    workdir = tempfile.mkdtemp(prefix="inspector-ray-")
    anomaly_parts = [(m.region, m.to_npz(), m.threshold, m.bundle_digest, m.normals, m.version)
                     for m in scanner.anomaly.values()]
    pending: dict = {}
    try:
        for path in videos:
            try:
                with VideoReader(path) as reader:
                    record, profile, step = scanner.open(reader.info)
            except InspectorError as exc:
                failed.append(path)
                if on_error:
                    on_error(path, exc)
                continue
            if record.status == ScanState.DONE:
                result = scanner.skipped(path, record)
                results.append(result)
                if on_result:
                    on_result(result)
                continue
            ref = task.remote(str(bundle_dir), backbone.precision, threads, head.to_json(), head.to_npz(),
                              head.version, profile.source, str(path), step, scanner.keep_embeddings, workdir,
                              anomaly_parts)
            pending[ref] = (path, record.id, time.monotonic())
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            path, scan_id, started = pending.pop(ready)
            try:
                remote: RemoteScan = ray.get(ready)
            except Exception as exc:  # the task raised, or its worker died more often than it is retried
                cause = getattr(exc, "cause", None)
                error = cause if isinstance(cause, InspectorError) else InspectorError(
                    f"{path}: the Ray task failed ({type(exc).__name__}); the other videos go on")
                store.finish_scan(scan_id, ScanState.INTERRUPTED, str(error))
                failed.append(path)
                if on_error:
                    on_error(path, error)
                continue
            log.info("%s: scanned on a Ray worker in %.1f s, worker peak memory %.0f MB", path, remote.seconds,
                     remote.peak_memory_mb)
            result = _store_result(store, scan_id, head.version, path, remote, time.monotonic() - started)
            results.append(result)
            if result.status == ScanState.PARTIAL:
                failed.append(path)
            if on_result:
                on_result(result)
    except BaseException:
        for ref, (_, scan_id, _) in pending.items():
            ray.cancel(ref, force=True)
            store.finish_scan(scan_id, ScanState.INTERRUPTED, "stopped before the end; run the same scan to resume")
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        ray.shutdown()
    return results, failed


def _store_result(store: Store, scan_id: int, head_version: int, path: Path, remote: RemoteScan,
                  seconds: float) -> ScanResult:
    """A task's results into the project: replaces, never doubles (primary keys), as a resume does."""
    store.write_batch(scan_id, remote.detections, remote.embeddings, remote.next_frame, remote.frames_done,
                      remote.decode_errors)
    store.replace_findings(scan_id, [replace(f, scan_id=scan_id) for f in remote.findings])
    store.finish_scan(scan_id, remote.status, remote.message or None)
    store.set_classified_with(scan_id, head_version)
    return ScanResult(path, scan_id, remote.status, remote.samples, store.detection_count(scan_id),
                      len(remote.findings), remote.decode_errors, seconds, remote.message)
