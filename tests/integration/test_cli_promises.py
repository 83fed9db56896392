"""What the scan command promises on its help page and in the README, each checked so that it
fails when the behaviour goes: Ctrl-C and resume, the provider line, the rate and precision
options, the progress output on a terminal and in a log."""
import os
import pty
import signal
import subprocess
import sys
import time

import pytest

from inspector.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, main
from inspector.store import Store
from tests.factories import make_video


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """Long enough that a scan is still running a moment after it starts."""
    folder = tmp_path_factory.mktemp("long")
    return make_video(folder / "long.mp4", 3000, set(range(100, 140)) | set(range(2500, 2550)), size=(320, 240))


def scan_command(video, project, bundle, profile, *extra):
    return [sys.executable, "-m", "inspector", "scan", str(video), "--project", str(project), "--bundle", str(bundle),
            "--profile", str(profile), "--threads", "1", *extra]


def test_ctrl_c_exits_130_and_the_same_command_resumes(tmp_path, long_video, tiny_bundle, profile_file):
    project = tmp_path / "p"
    child = subprocess.Popen(scan_command(long_video, project, tiny_bundle, profile_file), stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    first = child.stderr.readline()
    assert "CPUExecutionProvider" in first, first  # the first line names the execution provider
    # Wait until some batches are stored, then press Ctrl-C. On a loaded CI machine the first batch
    # can take long (it once came after the 30 s this waited): wait up to 120 s, and say so if not.
    deadline, stored = time.monotonic() + 120, False
    while not stored and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.2)
        with Store(project) as store:
            scans = store.scans()
            stored = bool(scans) and 0 < scans[0].next_frame
    assert stored, "the scan stored no batch within 120 s, or ended before one was seen"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert child.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in err and "Traceback" not in err
    with Store(project) as store:
        scan = store.scans()[0]
        assert scan.status == "interrupted" and 0 < scan.next_frame < 3000
        stopped_at = scan.next_frame
    verbose = scan_command(long_video, project, tiny_bundle, profile_file)
    verbose.insert(3, "-v")  # python -m inspector -v scan ...
    done = subprocess.run(verbose, capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_OK, done.stderr
    assert f"resuming at frame {stopped_at}" in done.stderr
    fresh = tmp_path / "fresh"
    assert subprocess.run(scan_command(long_video, fresh, tiny_bundle, profile_file, "-q"),
                          capture_output=True, timeout=120).returncode == EXIT_OK
    with Store(project) as resumed, Store(fresh) as whole:
        # nothing lost or counted twice: a detection per frame (the tiny head knows the track only), an
        # embedding per crop
        assert resumed.detection_count(1) == whole.detection_count(1) == 3000
        count = "SELECT COUNT(*) FROM embeddings"
        assert resumed.connection.execute(count).fetchone()[0] == whole.connection.execute(count).fetchone()[0] == 9000
        assert [(f.start_frame, f.end_frame, f.class_name) for f in resumed.findings()] == \
            [(f.start_frame, f.end_frame, f.class_name) for f in whole.findings()]


@pytest.mark.parametrize("options, step, precision", [
    (["--step", "3"], 3, "fp32"), (["--fps", "5"], 2, "fp32"), (["--precision", "fp32", "--threads", "1"], 1, "fp32")])
def test_rate_and_precision_options(tmp_path, capsys, tiny_bundle, profile_file, fault_video, options, step, precision):
    code = main(["scan", str(fault_video), "--project", str(tmp_path / "p"), "--bundle", str(tiny_bundle),
                 "--profile", str(profile_file), "-q", *options])
    assert code == EXIT_OK
    assert "(fp32, CPUExecutionProvider)" in capsys.readouterr().err  # the tiny bundle has no int8 backbone
    with Store(tmp_path / "p") as store:
        scan = store.scans()[0]
        assert (scan.step, scan.precision, scan.frames_done) == (step, precision, -(-60 // step))


@pytest.mark.parametrize("options, message", [(["--step", "0"], "--step"), (["--fps", "-1"], "--fps"),
                                              (["--step", "2", "--fps", "5"], "not allowed with")])
def test_bad_rate_options_are_usage_errors(tmp_path, capsys, tiny_bundle, fault_video, options, message):
    with pytest.raises(SystemExit) as stop:
        main(["scan", str(fault_video), "--project", str(tmp_path / "p"), "--bundle", str(tiny_bundle), *options])
    assert stop.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_progress_on_a_terminal_redraws_one_line_with_rate_and_eta(tmp_path, long_video, tiny_bundle, profile_file):
    leader, follower = pty.openpty()
    child = subprocess.Popen(scan_command(long_video, tmp_path / "p", tiny_bundle, profile_file), stderr=follower,
                             stdout=subprocess.DEVNULL)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    child.wait(timeout=120)
    text = output.decode(errors="replace")
    assert child.returncode == EXIT_OK
    redraws = text.count("\r")
    assert redraws > 5 and "\x1b[K" in text  # one line, redrawn in place
    assert " fps ETA " in text and "100% |" in text


def test_progress_in_a_log_is_a_line_every_tenth(tmp_path, long_video, tiny_bundle, profile_file):
    log = tmp_path / "scan.log"
    with log.open("w") as handle:
        done = subprocess.run(scan_command(long_video, tmp_path / "p", tiny_bundle, profile_file), stderr=handle,
                              timeout=120)
    assert done.returncode == EXIT_OK
    lines = [line for line in log.read_text().splitlines() if " fps ETA " in line]
    assert "\r" not in log.read_text()
    percents = [int(line.split("%")[0].split()[-1]) for line in lines]
    assert 8 <= len(lines) <= 12 and percents == sorted(percents) and percents[-1] == 100
