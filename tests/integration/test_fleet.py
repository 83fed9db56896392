"""Scanning on Ray (a local instance, two workers): the same findings as a local scan, a video
already scanned is skipped, a bad file is named, and a worker killed half-way is retried with
nothing doubled."""
import os
import signal
import threading
import time

import pytest

from inspector.cli import EXIT_OK, EXIT_PARTIAL, main
from inspector.store import Store
from tests.factories import make_video


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet")
    return [make_video(folder / "a.mp4", 60, set(range(10, 20))),
            make_video(folder / "b.mp4", 80, set(range(30, 45)) | set(range(70, 75))),
            make_video(folder / "c.mp4", 4000, set(range(100, 130)) | set(range(3900, 3920)), size=(320, 240))]


def scanned(project):
    with Store(project) as store:
        videos = {v.id: v.path.name for v in store.videos()}
        scans = {s.id: s for s in store.scans()}
        findings = sorted((videos[scans[f.scan_id].video_id], f.crop, f.class_name, f.start_frame, f.end_frame)
                          for f in store.findings())
        counts = {videos[s.video_id]: (s.status, s.frames_done, store.detection_count(s.id)) for s in scans.values()}
        embeddings = store.connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
    return findings, counts, embeddings


def test_ray_scan_equals_the_local_scan(tmp_path, capsys, tiny_bundle, profile_file, three_runs):
    common = ["--bundle", str(tiny_bundle), "--profile", str(profile_file), "-q"]
    assert main(["scan", *map(str, three_runs), "--project", str(tmp_path / "local"), *common]) == EXIT_OK
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 2048)
    code = main(["scan", *map(str, three_runs), str(bad), "--project", str(tmp_path / "ray"), *common,
                 "--ray", "--workers", "2"])
    err = capsys.readouterr().err
    assert code == EXIT_PARTIAL and "bad.mp4" in err.splitlines()[-1]
    assert scanned(tmp_path / "ray") == scanned(tmp_path / "local")
    # the same command again: every video is already scanned, no task runs
    assert main(["scan", *map(str, three_runs), "--project", str(tmp_path / "ray"), *common, "--ray",
                 "--workers", "2"]) == EXIT_OK
    assert capsys.readouterr().err.count("already scanned") == 3


def test_a_worker_killed_half_way_is_retried_without_duplicates(tmp_path, tiny_bundle, profile_file, three_runs,
                                                               monkeypatch):
    """The long video's task loses its worker (SIGKILL) while scanning; Ray runs it again and the
    project holds each detection once."""
    import tempfile

    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.setattr(tempfile, "mkdtemp", lambda prefix="": str(workdir))
    killed = []

    def kill_the_long_one():
        """Kill the worker of the first task still running half a second after it started (a task's
        scratch folder goes when it ends): the long video's."""
        seen: dict = {}
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for pid in workdir.glob("task-*/worker.pid"):
                first = seen.setdefault(pid, time.monotonic())
                if time.monotonic() - first > 0.5 and pid.exists():
                    os.kill(int(pid.read_text()), signal.SIGKILL)
                    killed.append(pid.parent.name)
                    return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_the_long_one)
    watcher.start()
    code = main(["scan", *map(str, three_runs), "--project", str(tmp_path / "ray"), "--bundle", str(tiny_bundle),
                 "--profile", str(profile_file), "-q", "--ray", "--workers", "2"])
    watcher.join()
    assert killed, "no worker was killed: the test did not test anything"
    assert code == EXIT_OK
    assert main(["scan", *map(str, three_runs), "--project", str(tmp_path / "local"), "--bundle", str(tiny_bundle),
                 "--profile", str(profile_file), "-q"]) == EXIT_OK
    assert scanned(tmp_path / "ray") == scanned(tmp_path / "local")


def test_a_ray_scan_flags_the_same_anomalies_as_a_local_scan(tmp_path):
    """The driver's anomaly models travel with each task: a Ray scan of the demo flags what a local one does."""
    from inspector.assets import assets_dir

    demo = assets_dir() / "demo" / "demo.mp4"
    for name in ("local", "ray"):
        assert main(["anomaly", "fit", "--project", str(tmp_path / name), "--region", "catenary", "--video",
                     str(demo), "--frames", "90-164"]) == EXIT_OK
    assert main(["scan", str(demo), "--project", str(tmp_path / "local"), "-q"]) == EXIT_OK
    assert main(["scan", str(demo), "--project", str(tmp_path / "ray"), "--ray", "--workers", "1", "-q"]) == EXIT_OK
    local, ray = scanned(tmp_path / "local")[0], scanned(tmp_path / "ray")[0]
    anomalies = [f for f in local if f[2] == "anomaly"]
    assert len(anomalies) >= 18 and local == ray
