import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from inspector.backbone import Backbone
from inspector.bundle import load_bundle
from inspector.errors import ProfileError, StoreError
from inspector.heads import Head
from inspector.regions import parse_profile
from inspector.scan import Scanner, scan_many
from inspector.store import STORE_NAME, Store
from tests.factories import PROFILE_TOML, make_video

FAULT_FRAMES = set(range(10, 20)) | set(range(40, 45))


def _scanner(store, bundle_dir, step=1, batch_size=32, **kw):
    bundle = load_bundle(bundle_dir)
    return Scanner(store, Backbone(bundle, threads=1), Head.load(bundle.path, "head"), parse_profile(PROFILE_TOML),
                   step=step, batch_size=batch_size, **kw)


def _detections(store, scan_id):
    return [(d.frame, d.crop, d.class_name, d.is_fault) for d in store.detections(scan_id)]


def test_scan_finds_the_faults_at_their_frames(tmp_path, tiny_bundle, fault_video):
    with Store(tmp_path / "p") as store:
        seen = []
        result = _scanner(store, tiny_bundle).scan(fault_video, progress=seen.append)
        assert result.status == "done" and result.samples == 60
        faults = {d.frame for d in store.detections(result.scan_id, faults_only=True)}
        assert faults == FAULT_FRAMES
        findings = store.findings(result.scan_id)
        assert [(f.start_frame, f.end_frame, f.frames) for f in findings] == [(10, 19, 10), (40, 44, 5)]
        # the catenary tiles have no class in scope: their embeddings are kept, no detections
        assert {d.crop for d in store.detections(result.scan_id)} == {"track"}
        count = store.connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        assert count == 60 * 3
        assert seen and seen[-1].frame == 60 and seen[-1].frame_count == 60
        assert all(a.frame < b.frame for a, b in zip(seen, seen[1:]))


def test_scan_with_step_and_target_rate(tmp_path, tiny_bundle, fault_video):
    with Store(tmp_path / "p") as store:
        result = _scanner(store, tiny_bundle, step=5).scan(fault_video)
        assert result.samples == 12
        assert {d.frame for d in store.detections(result.scan_id)} == set(range(0, 60, 5))
        by_rate = _scanner(store, tiny_bundle, target_fps=2.5).scan(fault_video)  # 10 fps video -> step 4
        assert by_rate.samples == 15 and by_rate.scan_id != result.scan_id


def test_finished_scan_is_skipped(tmp_path, tiny_bundle, fault_video):
    with Store(tmp_path / "p") as store:
        scanner = _scanner(store, tiny_bundle)
        first = scanner.scan(fault_video)
        again = scanner.scan(fault_video)
        assert again.status == "skipped" and again.scan_id == first.scan_id and again.findings == 2


def test_cancelled_scan_resumes_with_nothing_lost_or_doubled(tmp_path, tiny_bundle, fault_video):
    with Store(tmp_path / "ref") as store:
        reference = _detections(store, _scanner(store, tiny_bundle, batch_size=6).scan(fault_video).scan_id)
    with Store(tmp_path / "p") as store:
        cancel = threading.Event()

        def stop_after_two_batches(progress):
            if progress.samples >= 4:
                cancel.set()

        scanner = _scanner(store, tiny_bundle, batch_size=6)
        first = scanner.scan(fault_video, progress=stop_after_two_batches, cancel=cancel)
        assert first.status == "interrupted"
        stored = store.detection_count(first.scan_id)
        assert 0 < stored < 60
        resumed = scanner.scan(fault_video)
        assert resumed.status == "done" and resumed.scan_id == first.scan_id
        assert resumed.samples == 60 - first.samples  # only what was missing was decoded again
        assert _detections(store, first.scan_id) == reference
        assert store.scan(first.scan_id).frames_done == 60


def test_keyboard_interrupt_marks_the_scan_resumable(tmp_path, tiny_bundle, fault_video):
    with Store(tmp_path / "p") as store:
        def interrupt(progress):
            raise KeyboardInterrupt

        scanner = _scanner(store, tiny_bundle, batch_size=6)
        with pytest.raises(KeyboardInterrupt):
            scanner.scan(fault_video, progress=interrupt)
        scan = store.scans()[0]
        assert scan.status == "interrupted" and scan.next_frame == 2
        assert scanner.scan(fault_video).status == "done"
        assert store.detection_count(scan.id) == 60


def test_batch_goes_on_past_a_bad_video(tmp_path, tiny_bundle, fault_video):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    errors = []
    with Store(tmp_path / "p") as store:
        results, failed = scan_many(_scanner(store, tiny_bundle), [bad, fault_video, tmp_path / "gone.mp4"],
                                    on_error=lambda path, exc: errors.append((path, str(exc))))
    assert [r.status for r in results] == ["done"]
    assert failed == [bad, tmp_path / "gone.mp4"]
    assert "not a readable video" in errors[0][1] and "no such file" in errors[1][1]


def test_truncated_video_is_kept_as_partial(tmp_path, tiny_bundle):
    full = make_video(tmp_path / "full.avi", 300, set(range(20, 30)), fourcc="MJPG")
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with Store(tmp_path / "p") as store:
        result = _scanner(store, tiny_bundle).scan(cut)
        assert result.status == "partial" and "truncated or damaged" in result.message
        assert 0 < result.samples < 300
        assert result.findings == 1  # the fault before the cut is kept


def test_profile_crop_size_must_match_bundle(tmp_path, tiny_bundle):
    profile = parse_profile("crop_size = 64\n" + PROFILE_TOML)
    bundle = load_bundle(tiny_bundle)
    with Store(tmp_path / "p") as store, pytest.raises(ProfileError, match="does not match the bundle"):
        Scanner(store, Backbone(bundle, threads=1), Head.load(bundle.path, "head"), profile)


def test_disk_full_during_scan_stops_with_a_clear_error(tmp_path, tiny_bundle, fault_video):
    with Store(tmp_path / "p") as store:
        scanner = _scanner(store, tiny_bundle, batch_size=6)
        calls = []

        def fill_disk(progress):
            calls.append(progress)
            if len(calls) == 2:
                pages = store.connection.execute("PRAGMA page_count").fetchone()[0]
                store.connection.execute(f"PRAGMA max_page_count={pages}")

        with pytest.raises(StoreError, match="disk is full"):
            scan_many(scanner, [fault_video], progress=fill_disk)
        kept = store.detection_count(store.scans()[0].id)
    with Store(tmp_path / "p") as store:
        assert store.detection_count(store.scans()[0].id) == kept > 0
        result = _scanner(store, tiny_bundle, batch_size=6).scan(fault_video)
        assert result.status == "done" and store.detection_count(result.scan_id) == 60


@pytest.mark.slow
def test_kill_minus_nine_then_rerun_completes_exactly(tmp_path, tiny_bundle, profile_file):
    """A real process killed with SIGKILL mid-scan; the same command then finishes the job."""
    video = make_video(tmp_path / "long.mp4", 1500, set(range(700, 720)), size=(640, 360))
    project = tmp_path / "p"
    command = [sys.executable, "-m", "inspector", "scan", str(video), "--project", str(project),
               "--bundle", str(tiny_bundle), "--profile", str(profile_file), "-q"]
    env = {**os.environ, "INSPECTOR_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_at_kill = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if (project / STORE_NAME).exists():
            try:
                conn = sqlite3.connect(f"file:{project / STORE_NAME}?mode=ro", uri=True, timeout=1)
                row = conn.execute("SELECT frames_done FROM scans").fetchone()
                conn.close()
            except sqlite3.Error:
                row = None
            if row and row[0] > 0:
                process.send_signal(signal.SIGKILL)
                done_at_kill = row[0]
                break
        time.sleep(0.005)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the scan ended before it could be killed"
    assert 0 < done_at_kill < 1500
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    with Store(project) as store:
        scan = store.scans()[0]
        assert scan.status == "done" and scan.frames_done == 1500
        frames = [d.frame for d in store.detections(scan.id)]
        assert frames == sorted(set(frames)) and len(frames) == 1500
        assert [(f.start_frame, f.end_frame) for f in store.findings(scan.id)] == [(700, 719)]


def test_unreadable_frames_are_skipped_and_counted(tmp_path, tiny_bundle):
    import numpy as np

    full = make_video(tmp_path / "full.avi", 120, set(range(100, 110)), fourcc="MJPG")
    data = bytearray(full.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    with Store(tmp_path / "p") as store:
        result = _scanner(store, tiny_bundle).scan(damaged)
        assert result.status == "done" and result.decode_errors > 0
        assert "could not be decoded and were skipped" in result.message
        assert result.findings == 1  # the fault after the damage is still found
        assert store.scan(result.scan_id).decode_errors == result.decode_errors
