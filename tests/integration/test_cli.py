"""The command line as an operator meets it: one clear line per problem, the right exit code."""
import csv
import json
import shutil

import pytest

from inspector.cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main
from inspector.store import Store


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_clear_line(err, *fragments):
    errors = [line for line in err.splitlines() if line.startswith("inspector: error:")]
    assert errors, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert any(fragment in line for line in errors), (fragment, err)


@pytest.fixture
def scan_args(tmp_path, tiny_bundle, profile_file):
    return ["scan", "--project", tmp_path / "p", "--bundle", tiny_bundle, "--profile", profile_file, "-q"]


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "scan" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "inspector" in capsys.readouterr().out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["scan", "video.mp4"])  # --project missing
    assert info.value.code == EXIT_USAGE
    assert "--project" in capsys.readouterr().err


def test_scan_then_report(capsys, tmp_path, scan_args, fault_video):
    code, _, err = run(capsys, *scan_args, fault_video)
    assert code == EXIT_OK, err
    assert "2 findings" in err
    code, out, err = run(capsys, "report", "--project", tmp_path / "p", "--out", tmp_path / "r")
    assert code == EXIT_OK, err
    html = (tmp_path / "r" / "report.html").read_text()
    assert html.count("<tr id='f") == 2 and "red_fault" in html and "<svg" in html
    rows = list(csv.DictReader((tmp_path / "r" / "findings.csv").open()))
    assert [(r["class"], r["start_s"], r["end_s"]) for r in rows] == [("red_fault", "1.0", "1.9"),
                                                                     ("red_fault", "4.0", "4.4")]
    import re

    import cv2

    from tests.factories import TRACK_BOX
    for row in rows:
        frame = cv2.imread(str(tmp_path / "r" / "thumbs" / f"finding{row['finding_id']}_frame.jpg"))
        crop = cv2.imread(str(tmp_path / "r" / "thumbs" / f"finding{row['finding_id']}_crop.jpg"))
        assert frame is not None and crop is not None and frame.shape[1] == 320
        # the finding's region is outlined in red on the frame: its left edge, halfway down the box
        x = round(TRACK_BOX[0] * frame.shape[1]) + 1
        y = round((TRACK_BOX[1] + TRACK_BOX[3]) / 2 * frame.shape[0])
        b, g, r = frame[y, x].astype(int)
        assert r > 150 and g < 100 and b < 100, frame[y, x]
        assert crop[crop.shape[0] // 2, crop.shape[1] // 2, 2] > 150  # the crop is the red track region
        # the row shows the same score as the CSV, and links both pictures
        cells = re.search(rf"<tr id='f{row['finding_id']}'>(.*?)</tr>", html, re.S).group(1)
        assert f"{float(row['score']):.2f}" in cells and f"finding{row['finding_id']}_crop.jpg" in cells
    counts = re.search(r"<h2>Faults by class</h2><table>.*?</table>", html, re.S).group(0)
    assert re.search(r"red_fault</td><td class='num'>2</td><td class='num'>0</td><td class='num'>0</td>"
                     r"<td class='num'>2</td>", counts), counts  # 2 findings: 0 confirmed, 0 rejected, 2 to review


def test_report_shows_review_status(capsys, tmp_path, scan_args, fault_video):
    run(capsys, *scan_args, fault_video)
    with Store(tmp_path / "p") as store:
        first, second = store.findings()
        store.set_finding_status(first.id, "confirmed")
        store.set_finding_status(second.id, "rejected")
    run(capsys, "report", "--project", tmp_path / "p")
    rows = list(csv.DictReader((tmp_path / "p" / "report" / "findings.csv").open()))
    assert [r["status"] for r in rows] == ["confirmed", "rejected"]
    assert "class='status-confirmed'" in (tmp_path / "p" / "report" / "report.html").read_text()


def test_report_without_the_video_still_works(capsys, tmp_path, scan_args, fault_video):
    moved = tmp_path / "moved.mp4"
    shutil.copy(fault_video, moved)
    run(capsys, *scan_args, moved)
    moved.unlink()
    code, out, err = run(capsys, "report", "--project", tmp_path / "p")
    assert code == EXIT_OK
    assert "not found" in err
    assert "video not available" in (tmp_path / "p" / "report" / "report.html").read_text()


def test_report_of_an_empty_folder(capsys, tmp_path):
    code, _, err = run(capsys, "report", "--project", tmp_path)
    assert code == EXIT_FAILED
    assert_one_clear_line(err, "no project store there")


def test_bad_videos_are_named_and_the_rest_scanned(capsys, tmp_path, scan_args, fault_video):
    text = tmp_path / "notes.mp4"
    text.write_text("hello")
    code, _, err = run(capsys, *scan_args, tmp_path / "missing.mp4", text, fault_video)
    assert code == EXIT_PARTIAL
    assert_one_clear_line(err, "missing.mp4: no such file", "notes.mp4: not a readable video")
    assert "not scanned fully" in err and "missing.mp4" in err.splitlines()[-1]
    with Store(tmp_path / "p") as store:
        assert [s.status for s in store.scans()] == ["done"]


def test_zero_frame_video(capsys, tmp_path, scan_args):
    from tests.factories import make_video

    code, _, err = run(capsys, *scan_args, make_video(tmp_path / "empty.mp4", 0))
    assert code == EXIT_PARTIAL
    assert_one_clear_line(err, "empty.mp4")


def test_truncated_video_exits_non_zero_and_keeps_results(capsys, tmp_path, scan_args):
    from tests.factories import make_video

    full = make_video(tmp_path / "full.avi", 300, set(range(20, 30)), fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    code, _, err = run(capsys, *scan_args, cut)
    assert code == EXIT_PARTIAL
    assert "truncated or damaged" in err and "cut.avi" in err.splitlines()[-1]
    with Store(tmp_path / "p") as store:
        assert store.scans()[0].status == "partial" and len(store.findings()) == 1


@pytest.mark.parametrize("breakage, fragment", [
    (lambda b: (b / "bundle.json").unlink(), "no bundle.json"),
    (lambda b: (b / "bundle.json").write_text("{"), "bundle.json is corrupt"),
    (lambda b: (b / "backbone.onnx").write_bytes(b"junk"), "not a loadable ONNX model"),
    (lambda b: (b / "bundle.json").write_text(json.dumps(
        {**json.loads((b / "bundle.json").read_text()), "input": {"size": 64, "mean": [0, 0, 0], "std": [1, 1, 1]}})),
     "expects"),
])
def test_broken_bundle(capsys, tmp_path, tiny_bundle, profile_file, fault_video, breakage, fragment):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    breakage(bundle)
    code, _, err = run(capsys, "scan", fault_video, "--project", tmp_path / "p", "--bundle", bundle,
                       "--profile", profile_file)
    assert code == EXIT_FAILED
    assert_one_clear_line(err, fragment)


def test_bad_profile(capsys, tmp_path, tiny_bundle, fault_video):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[regions]\nname=")
    code, _, err = run(capsys, "scan", fault_video, "--project", tmp_path / "p", "--bundle", tiny_bundle,
                       "--profile", bad)
    assert code == EXIT_FAILED
    assert_one_clear_line(err, "not valid TOML")


def test_unwritable_project(capsys, tmp_path, tiny_bundle, profile_file, fault_video):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the project folder should go")
    code, _, err = run(capsys, "scan", fault_video, "--project", blocker / "project", "--bundle", tiny_bundle,
                       "--profile", profile_file)
    assert code == EXIT_FAILED
    assert_one_clear_line(err, "cannot create the folder")


def test_bundle_info(capsys, tiny_bundle):
    code, out, _ = run(capsys, "bundle", "info", tiny_bundle)
    assert code == EXIT_OK
    assert "32x32" in out and "red_fault" in out and "[regions: track]" in out
    code, out, _ = run(capsys, "bundle", "info", tiny_bundle, "--json")
    data = json.loads(out)
    assert data["input"]["size"] == 32
    assert [c["name"] for c in data["head_classes"]] == ["ok", "red_fault"]


def test_bundle_info_on_a_broken_bundle(capsys, tmp_path):
    code, _, err = run(capsys, "bundle", "info", tmp_path)
    assert code == EXIT_FAILED
    assert_one_clear_line(err, "no bundle.json")


def test_locate_findings_and_compare_two_runs(capsys, tmp_path, scan_args, tiny_bundle, profile_file):
    """Two runs of the same stretch at 10 m/s: run A has faults at about 1010 m and 1040 m; run B,
    starting 20 m further on, sees the one at 1040 m again and a new one at 1070 m; the first is gone."""
    from tests.factories import make_video

    run_a = make_video(tmp_path / "a.mp4", 60, set(range(10, 20)) | set(range(40, 45)))
    run_b = make_video(tmp_path / "b.mp4", 60, set(range(20, 25)) | set(range(50, 55)))  # 1040 m again; 1070 m new
    project = tmp_path / "p"
    assert run(capsys, *scan_args, run_a, run_b)[0] == EXIT_OK
    (tmp_path / "a.csv").write_text("t,line,chainage_m,lat,lon\n0,L4,1000,52.0,13.0\n6,L4,1060,52.0,13.001\n")
    (tmp_path / "b.csv").write_text("frame,line,chainage_m\n0,L4,1020\n60,L4,1080\n")  # starts 20 m further on
    (tmp_path / "masts.csv").write_text("line,mast,chainage_m\nL4,7,1000\nL4,8,1030\nL4,9,1060\nL4,10,1090\n")
    code, out, err = run(capsys, "positions", "import", run_a, tmp_path / "a.csv", "--project", project)
    assert code == EXIT_OK and "2 positions for a.mp4 (line, chainage_m, lat, lon)" in out, err
    assert run(capsys, "positions", "import", run_b, tmp_path / "b.csv", "--project", project)[0] == EXIT_OK
    code, out, _ = run(capsys, "positions", "masts", tmp_path / "masts.csv", "--project", project)
    assert code == EXIT_OK and "4 masts of 1 line(s)" in out
    code, out, _ = run(capsys, "findings", "--project", project, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    first = next(r for r in rows if r["video"].endswith("a.mp4") and r["start_frame"] == 10)
    assert first["line"] == "L4" and 1010 <= first["chainage_m"] <= 1020 and first["mast_span"] == "7-8"
    code, out, err = run(capsys, "compare", "--project", project, "--run", "a.mp4", "--run", "b.mp4", "--json")
    assert code == EXIT_OK, err
    result = json.loads(out)
    assert (result["new"], result["gone"], result["persisting"]) == (1, 1, 1), result
    code, out, err = run(capsys, "report", "--project", project, "--out", tmp_path / "r", "--geojson")
    page = (tmp_path / "r" / "report.html").read_text()
    assert "masts 7-8" in page
    rows = list(csv.DictReader((tmp_path / "r" / "findings.csv").open()))
    assert {r["mast_span"] for r in rows} >= {"7-8"}
    # the line diagram: one row per run, a mark per located finding; the track plot from run A's GPS
    assert "src='line.svg'" in page and "src='track.svg'" in page
    diagram = (tmp_path / "r" / "line.svg").read_text()
    assert "line L4" in diagram and "a.mp4" in diagram and "b.mp4" in diagram and "chainage (km)" in diagram
    # GeoJSON: run A's two findings have GPS (b.csv has none), at the interpolated longitudes
    geo = json.loads((tmp_path / "r" / "findings.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and "2 findings with GPS" in out
    points = sorted(f["geometry"]["coordinates"][0] for f in geo["features"])
    assert len(points) == 2 and 13.0001 < points[0] < 13.00035 and 13.0006 < points[1] < 13.0008
    assert {f["properties"]["class"] for f in geo["features"]} == {"red_fault"}


def test_positions_and_compare_bad_input(capsys, tmp_path, scan_args, fault_video):
    project = tmp_path / "p"
    assert run(capsys, *scan_args, fault_video)[0] == EXIT_OK
    (tmp_path / "bad.csv").write_text("t,chainage_m\n0,10\n1,ten\n")
    code, _, err = run(capsys, "positions", "import", fault_video, tmp_path / "bad.csv", "--project", project)
    assert code == EXIT_FAILED
    assert_one_clear_line(err, "row 3: chainage_m 'ten' is not a number")
    with Store(project) as store:
        assert store.positions(store.videos()[0].id) == []  # nothing half-imported
    (tmp_path / "late.csv").write_text("t,chainage_m\n500,10\n510,20\n")
    code, _, err = run(capsys, "positions", "import", fault_video, tmp_path / "late.csv", "--project", project)
    assert_one_clear_line(err, "no sample falls within the video")
    code, _, err = run(capsys, "positions", "reference", "run.mp4", "--project", project)
    assert code == EXIT_FAILED
    assert_one_clear_line(err, "has positions on no line", "import its position track first")
    code, _, err = run(capsys, "compare", "--project", project, "--run", "run.mp4", "--run", "other.mp4")
    assert code == EXIT_FAILED
    assert_one_clear_line(err, "other.mp4 is not a scanned video of the project")
    code, _, err = run(capsys, "compare", "--project", project, "--run", "run.mp4", "--run", "1")
    assert_one_clear_line(err, "are the same run")
    code, _, err = run(capsys, "findings", "--project", tmp_path / "nowhere")
    assert_one_clear_line(err, "no project store there")


def test_review_from_the_command_line(capsys, tmp_path, scan_args, fault_video, tiny_bundle):
    project = tmp_path / "p"
    bundle = ["--bundle", tiny_bundle]
    assert run(capsys, *scan_args, fault_video)[0] == EXIT_OK
    ids = [json.loads(line)["id"] for line in run(capsys, "findings", "--project", project, "--json")[1].splitlines()]
    code, out, _ = run(capsys, "review", ids[0], "--confirm", "--project", project, *bundle)
    assert code == EXIT_OK and "learned a red_fault example of track" in out
    code, out, _ = run(capsys, "review", ids[1], "--reject", "--project", project, *bundle)
    assert code == EXIT_OK and "learned a normal example of track" in out
    code, out, _ = run(capsys, "findings", "--project", project, "--status", "open", "--json")
    assert code == EXIT_OK and out == ""
    with Store(project) as store:
        assert [f.status for f in store.findings()] == ["confirmed", "rejected"]
        assert sorted((e.fault_type, e.source) for e in store.examples()) == [("normal", "review"),
                                                                               ("red_fault", "review")]
    # the reviews become the head: refit makes a version, the decisions and the finding ids survive it
    code, out, err = run(capsys, "faults", "refit", "--reclassify", "--project", project, *bundle)
    assert code == EXIT_OK and "refitted: head version 1" in out, err
    with Store(project) as store:
        after = store.findings()
        assert {f.id: f.status for f in after if f.status != "open"} == {ids[0]: "confirmed", ids[1]: "rejected"}
    # reopening takes the example back out; a changed decision replaces what the first one taught
    assert run(capsys, "review", ids[0], "--reopen", "--project", project, *bundle)[0] == EXIT_OK
    assert run(capsys, "review", ids[1], "--confirm", "--project", project, *bundle)[0] == EXIT_OK
    with Store(project) as store:
        assert [(e.fault_type, e.frame) for e in store.examples()] == [(
            "red_fault", store.finding(ids[1]).best_frame)]
    code, _, err = run(capsys, "review", 999, "--confirm", "--project", project, *bundle)
    assert code == EXIT_FAILED
    assert_one_clear_line(err, "no finding 999")
    code, _, err = run(capsys, "review", ids[0], "--confirm", "--as", "bird", "--project", project, *bundle)
    assert_one_clear_line(err, "bird is not a fault type of the project")
    code, _, err = run(capsys, "review", ids[0], "--reject", "--as", "red_fault", "--project", project, *bundle)
    assert_one_clear_line(err, "--as CLASS goes with --confirm")
    code, _, err = run(capsys, "review", ids[0], "--confirm", "--project", project)  # the shipped bundle
    assert_one_clear_line(err, "scanned with model bundle tiny")
    with Store(project) as store:
        assert [f.status for f in store.findings()] == ["open", "confirmed"]  # the bad calls changed nothing
        assert len(store.examples()) == 1


def test_review_of_a_finding_whose_video_is_gone(capsys, tmp_path, scan_args, fault_video, tiny_bundle):
    """The crop comes from the scan's cached embedding; with no cache either, one clear line."""
    import shutil

    video = tmp_path / "run.mp4"
    shutil.copy(fault_video, video)
    project = tmp_path / "p"
    assert run(capsys, *scan_args, video)[0] == EXIT_OK
    video.unlink()
    with Store(project) as store:
        first = store.findings()[0]
    code, out, err = run(capsys, "review", first.id, "--reject", "--project", project, "--bundle", tiny_bundle)
    assert code == EXIT_OK, err
    with Store(project) as store:
        assert [(e.fault_type, e.frame, e.image) for e in store.examples()] == [("normal", first.best_frame, "")]
        store.connection.execute("DELETE FROM embeddings")
    code, _, err = run(capsys, "review", first.id, "--confirm", "--project", project, "--bundle", tiny_bundle)
    assert_one_clear_line(err, "put the video back")
    with Store(project) as store:
        assert store.finding(first.id).status == "rejected" and len(store.examples()) == 1


def test_alarm_thresholds(capsys, tmp_path, scan_args, fault_video, tiny_bundle):
    project = tmp_path / "p"
    bundle = ["--bundle", tiny_bundle]
    assert run(capsys, *scan_args, fault_video)[0] == EXIT_OK
    code, out, err = run(capsys, "faults", "threshold", "red_fault", "0.9999", "--reclassify", "--project", project,
                         *bundle)
    assert code == EXIT_OK and "alarm threshold of red_fault: 1" in out, err
    assert "0 findings" in err  # no calibrated score reaches it
    code, out, _ = run(capsys, "faults", "list", "--project", project, *bundle)
    assert "red_fault                   1.00" in out
    code, out, err = run(capsys, "faults", "threshold", "red_fault", "--default", "--reclassify", "--project",
                         project, *bundle)
    assert code == EXIT_OK and "(default)" in out and "2 findings" in err
    for bad, message in ((["ok", "0.7"], "no fault type named ok"), (["red_fault", "1.5"], "between 0 and 1")):
        code, _, err = run(capsys, "faults", "threshold", *bad, "--project", project, *bundle)
        assert code == EXIT_FAILED
        assert_one_clear_line(err, message)
    with Store(project) as store:
        assert store.thresholds() == {} and len(store.head_versions()) == 2

def test_scan_without_a_profile_says_which_regions_it_cuts(capsys, tmp_path, tiny_bundle, fault_video):
    """160x120 footage matches no camera profile: the generic tiling, said before the scan starts."""
    code, _, err = run(capsys, "scan", fault_video, "--project", tmp_path / "p", "--bundle", tiny_bundle, "-q")
    assert code == EXIT_OK, err
    warning = next(line for line in err.splitlines() if "no shipped profile" in line)
    assert "160x120" in warning and "full-frame" in warning and "--profile" in warning
    assert err.index(warning) < err.index("frames classified")
    with Store(tmp_path / "p") as store:
        assert store.scans()[0].profile_name == "full-frame"
