"""Adding fault types from a few examples: the library, head versions, re-classification."""
import csv
import json

import cv2
import numpy as np
import pytest

from inspector.backbone import Backbone
from inspector.bundle import load_bundle
from inspector.cli import EXIT_FAILED, EXIT_OK, main
from inspector.examples import read_examples
from inspector.faults import FaultLibrary, FaultLibraryError, active_head
from inspector.regions import parse_profile
from inspector.scan import Scanner, reclassify
from inspector.store import Store
from tests.factories import BLUE, PROFILE_TOML, make_video

BLUE_FRAMES = set(range(20, 30)) | set(range(90, 100))
RED_FRAMES = set(range(60, 70))


@pytest.fixture(scope="module")
def blue_video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blue")
    return make_video(folder / "blue.mp4", 120, RED_FRAMES, blue_frames=BLUE_FRAMES, black_frames={5})


@pytest.fixture
def project(tmp_path, tiny_bundle, blue_video):
    """A project with the blue video scanned by the tiny bundle's base head."""
    bundle = load_bundle(tiny_bundle)
    store = Store(tmp_path / "p")
    backbone = Backbone(bundle, threads=1)
    Scanner(store, backbone, active_head(store, bundle), parse_profile(PROFILE_TOML)).scan(blue_video)
    yield store, bundle, backbone
    store.close()


def write_examples(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "frame", "region", "label"])
        writer.writerows(rows)
    return path


def blue_rows(video, frames=(20, 22, 24, 26, 28), normal=(40, 45, 50, 110)):
    return ([(str(video), f, "catenary[1]", "blue_thing") for f in frames]
            + [(str(video), f, "catenary[1]", "normal") for f in normal])


def library_state(store):
    return ([(t.name, t.removed_at, t.examples) for t in store.fault_types(include_removed=True)],
            [h.version for h in store.head_versions()], store.active_head_version(),
            sorted(p.name for p in (store.path.parent / "examples").rglob("*.png")))


def spans(store, class_name):
    return sorted((f.crop, f.start_frame, f.end_frame) for f in store.findings() if f.class_name == class_name)


def test_new_fault_type_is_found_at_its_other_frames_and_nothing_is_forgotten(tmp_path, project, blue_video):
    store, bundle, backbone = project
    red_before = spans(store, "red_fault")
    assert red_before == [("track", 60, 69)]
    library = FaultLibrary(store, bundle, backbone)
    change = library.add("blue_thing", read_examples(write_examples(tmp_path / "ex.csv", blue_rows(blue_video))))
    assert change.version == 1 and change.examples == {"blue_thing": 5, "normal": 4}
    assert change.quality.loo_accuracy == 1.0
    # Frames 20-28 of one passage: the operator is told they show one view (found here because the
    # synthetic passage at 90-99 looks just like it).
    assert [w for w in change.quality.warnings if 'near copies of one view' in w] == list(change.quality.warnings)
    head = active_head(store, bundle)
    assert head.classes == ("ok", "red_fault", "blue_thing", "normal")
    assert head.regions[2] == ("catenary",) and head.normal[3]
    result = reclassify(store, head)
    assert result.crops == 120 * 3 and result.seconds < 5
    assert spans(store, "blue_thing") == [("catenary[1]", 20, 29), ("catenary[1]", 90, 99)]
    assert spans(store, "red_fault") == red_before  # the known fault type is untouched
    saved = list((tmp_path / "p" / "examples" / "blue_thing").glob("*.png"))
    assert len(saved) == 5 and cv2.imread(str(saved[0])) is not None


def test_auto_normal_examples_come_from_unlabelled_frames(tmp_path, project, blue_video):
    store, bundle, backbone = project
    rows = [(str(blue_video), f, "catenary[1]", "blue_thing") for f in (20, 22, 24, 26, 28)]
    change = FaultLibrary(store, bundle, backbone).add("blue_thing", read_examples(write_examples(tmp_path / "e.csv", rows)))
    normals = [e for e in store.examples() if e.fault_type == "normal"]
    assert change.examples["normal"] == len(normals) > 0
    assert all(e.source == "auto-normal" and abs(e.frame - 24) > 20 for e in normals)
    assert {e.crop for e in normals} <= {"catenary[0]", "catenary[1]"}


def test_remove_and_restore_make_new_versions(tmp_path, project, blue_video):
    store, bundle, backbone = project
    library = FaultLibrary(store, bundle, backbone)
    library.add("blue_thing", read_examples(write_examples(tmp_path / "ex.csv", blue_rows(blue_video))))
    removed = library.remove("blue_thing")
    assert removed.version == 2 and "blue_thing" not in active_head(store, bundle).classes
    reclassify(store, active_head(store, bundle))
    assert spans(store, "blue_thing") == []
    restored = library.restore(1)
    assert restored.version == 3 and [h.version for h in store.head_versions()] == [1, 2, 3]
    assert "blue_thing" in {t.name for t in store.fault_types()}
    reclassify(store, active_head(store, bundle))
    assert spans(store, "blue_thing") == [("catenary[1]", 20, 29), ("catenary[1]", 90, 99)]


def test_a_finished_scan_is_classified_again_when_rerun_with_a_newer_head(tmp_path, project, blue_video):
    store, bundle, backbone = project
    FaultLibrary(store, bundle, backbone).add(
        "blue_thing", read_examples(write_examples(tmp_path / "ex.csv", blue_rows(blue_video))))
    result = Scanner(store, backbone, active_head(store, bundle), parse_profile(PROFILE_TOML)).scan(blue_video)
    assert result.status == "skipped" and "classified again with head version 1" in result.message
    assert spans(store, "blue_thing")


def test_labelme_boxes_on_a_picture(tmp_path, project):
    store, bundle, backbone = project
    picture = np.full((100, 200, 3), 128, np.uint8)
    picture[10:40, 10:40] = BLUE
    picture[60:90, 150:190] = BLUE
    cv2.imwrite(str(tmp_path / "frame.png"), picture)
    shapes = [{"label": "blue_thing", "points": [[10, 10], [40, 40]], "shape_type": "rectangle"},
              {"label": "blue_thing", "points": [[150, 60], [190, 90]], "shape_type": "rectangle"},
              {"label": "normal", "points": [[60, 10], [120, 50]], "shape_type": "rectangle"},
              {"label": "normal", "points": [[60, 55], [110, 95]], "shape_type": "rectangle"}]
    (tmp_path / "frame.json").write_text(json.dumps({"imagePath": "frame.png", "shapes": shapes}))
    change = FaultLibrary(store, bundle, backbone).add("blue_thing", read_examples(tmp_path / "frame.json"))
    assert change.examples == {"blue_thing": 2, "normal": 2}
    assert active_head(store, bundle).regions[2] == ()  # drawn on a picture: applies to every region


BAD_INPUTS = [
    ("zero examples", lambda v: [], "no examples in it"),
    ("one class only", lambda v: [(str(v), f, "catenary[1]", "blue_thing") for f in (20, 22, 24)],
     "only new_thing has examples"),
    ("frame outside the video", lambda v: blue_rows(v) + [(str(v), 500, "catenary[1]", "blue_thing")],
     "frame 500 is outside blue.mp4"),
    ("unknown region", lambda v: [(str(v), 20, "pantograph", "blue_thing")], "no region 'pantograph'"),
    ("duplicate example", lambda v: blue_rows(v) + [(str(v), 20, "catenary[1]", "blue_thing")],
     "are the same crop"),
    ("missing video", lambda v: [(str(v.parent / "gone.mp4"), 3, "catenary[1]", "blue_thing")], "no such file"),
    ("empty embedding", lambda v: blue_rows(v) + [(str(v), 5, "catenary[1]", "normal")], r"empty \(all zero\)"),
    ("wrong label", lambda v: blue_rows(v) + [(str(v), 3, "catenary[1]", "bird")], "labelled bird"),
]


@pytest.mark.parametrize("what, rows, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_examples_leave_the_library_unchanged(tmp_path, project, blue_video, what, rows, message):
    store, bundle, backbone = project
    library = FaultLibrary(store, bundle, backbone)
    before = library_state(store)
    with pytest.raises(FaultLibraryError, match=message) as info:
        library.add("new_thing" if what != "wrong label" else "blue2",
                    read_examples(write_examples(tmp_path / "bad.csv", [
                        (v, f, r, "new_thing" if lab == "blue_thing" else lab) for v, f, r, lab in rows(blue_video)]))
                    , auto_normal=False)
    assert "\n" not in str(info.value)
    assert library_state(store) == before


def test_adding_to_a_fault_type_extends_it_and_brings_back_a_removed_one(tmp_path, project, blue_video):
    """No dead ends when teaching: more examples of a type, or a removed type again, each make a new
    head version; only what cannot be done (the same crops again, a bundle class) is refused."""
    store, bundle, backbone = project
    library = FaultLibrary(store, bundle, backbone)
    library.add("blue_thing", read_examples(write_examples(tmp_path / "ex.csv", blue_rows(blue_video))))
    before = library_state(store)
    with pytest.raises(FaultLibraryError, match="already in the library"):
        library.add("blue_thing", read_examples(write_examples(tmp_path / "same.csv", blue_rows(blue_video))))
    red = read_examples(write_examples(tmp_path / "red.csv", blue_rows(blue_video, normal=())))
    with pytest.raises(FaultLibraryError, match="comes with the model bundle"):
        library.add("red_fault", [e.__class__(e.row, "red_fault", e.video, e.frame, e.crop) for e in red])
    assert library_state(store) == before
    more = library.add("blue_thing", read_examples(write_examples(
        tmp_path / "more.csv", [(str(blue_video), f, "catenary[1]", "blue_thing") for f in (90, 92, 94)])))
    assert more.examples == {"blue_thing": 3} and more.version == 2
    assert next(t for t in store.fault_types() if t.name == "blue_thing").examples == 8
    assert "3 more examples of blue_thing" in store.head_versions()[-1].note
    library.remove("blue_thing")
    back = library.add("blue_thing", read_examples(write_examples(
        tmp_path / "back.csv", [(str(blue_video), f, "catenary[1]", "blue_thing") for f in (96, 98)])))
    assert back.examples == {"blue_thing": 2} and "brought back" in store.head_versions()[-1].note
    assert next(t for t in store.fault_types() if t.name == "blue_thing").examples == 10  # old ones came back
    assert "blue_thing" in back.head.classes
    with pytest.raises(FaultLibraryError, match="comes with the model bundle"):
        library.remove("red_fault")
    assert [h.version for h in store.head_versions()] == [1, 2, 3, 4]


def test_examples_already_in_the_library(tmp_path, project, blue_video):
    store, bundle, backbone = project
    library = FaultLibrary(store, bundle, backbone)
    library.add("blue_thing", read_examples(write_examples(tmp_path / "first.csv", blue_rows(blue_video))))
    before = library_state(store)
    reused = [(v, f, r, "other" if lab == "blue_thing" else lab) for v, f, r, lab in blue_rows(blue_video)]
    change = library.add("other", read_examples(write_examples(tmp_path / "again.csv", reused)))
    assert change.examples == {"other": 5}  # the normal rows were already kept: reused, not doubled
    assert library_state(store) != before
    before = library_state(store)
    same = [(str(blue_video), 20, "catenary[1]", "other"), (str(blue_video), 40, "catenary[1]", "normal")]
    with pytest.raises(FaultLibraryError, match="already in the library"):
        library.add("other", read_examples(write_examples(tmp_path / "dup.csv", same)))
    assert library_state(store) == before


def test_unreadable_picture(tmp_path, project):
    store, bundle, backbone = project
    (tmp_path / "frame.png").write_bytes(b"not a png")
    (tmp_path / "frame.json").write_text(json.dumps({"imagePath": "frame.png", "shapes": [
        {"label": "blue_thing", "points": [[1, 1], [20, 20]]}, {"label": "normal", "points": [[30, 1], [60, 20]]}]}))
    with pytest.raises(FaultLibraryError, match="cannot be read"):
        FaultLibrary(store, bundle, backbone).add("blue_thing", read_examples(tmp_path / "frame.json"))
    assert store.head_versions() == []


@pytest.mark.parametrize("text, message", [
    ("video,frame,label\nx.mp4,1,a\n", "needs columns"),
    ("video,frame,region,label\nx.mp4,one,track,a\n", "frame must be a whole number"),
    ("video,frame,box,label\nx.mp4,1,10 10 5 5,a\n", "empty or negative"),
    ("video,frame,region,label\nx.mp4,1,track,\n", "label is empty"),
])
def test_malformed_examples_files(tmp_path, text, message):
    path = tmp_path / "ex.csv"
    path.write_text(text)
    with pytest.raises(FaultLibraryError, match=message):
        read_examples(path)


def test_faults_cli(tmp_path, capsys, tiny_bundle, profile_file, blue_video):
    project = tmp_path / "p"
    common = ["--project", str(project), "--bundle", str(tiny_bundle)]
    assert main(["scan", str(blue_video), *common, "--profile", str(profile_file), "-q"]) == EXIT_OK
    examples = write_examples(tmp_path / "ex.csv", blue_rows(blue_video))
    capsys.readouterr()
    assert main(["faults", "add", "blue_thing", "--examples", str(examples), *common, "--reclassify"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert "added blue_thing as head version 1" in out and "leave-one-out accuracy 100%" in out
    assert "again with head version 1" in err
    assert main(["faults", "list", *common]) == EXIT_OK
    out = capsys.readouterr().out
    assert "blue_thing" in out and "5 examples" in out and "*  1" in out
    assert main(["faults", "add", "blue_thing", "--examples", str(examples), *common]) == EXIT_FAILED
    assert "inspector: error: every example of blue_thing given is already in the library" in capsys.readouterr().err
    assert main(["faults", "remove", "blue_thing", *common]) == EXIT_OK
    assert main(["faults", "restore", "1", *common, "--reclassify"]) == EXIT_OK
    assert main(["faults", "restore", "9", *common]) == EXIT_FAILED
    assert "no head version 9" in capsys.readouterr().err
    assert main(["scan", "--reclassify", *common]) == EXIT_OK
    with Store(project) as store:
        assert spans(store, "blue_thing") == [("catenary[1]", 20, 29), ("catenary[1]", 90, 99)]


def test_scan_needs_videos_or_reclassify(tmp_path, capsys, tiny_bundle):
    assert main(["scan", "--project", str(tmp_path / "p"), "--bundle", str(tiny_bundle)]) == EXIT_FAILED
    assert "nothing to do" in capsys.readouterr().err


def test_head_of_another_bundle_is_refused(tmp_path, project, blue_video):
    from tests.factories import make_bundle

    store, bundle, backbone = project
    FaultLibrary(store, bundle, backbone).add(
        "blue_thing", read_examples(write_examples(tmp_path / "ex.csv", blue_rows(blue_video))))
    other = make_bundle(tmp_path / "other")
    meta = json.loads((other / "bundle.json").read_text())
    (other / "bundle.json").write_text(json.dumps({**meta, "name": "other"}))
    with pytest.raises(FaultLibraryError, match="made with another model bundle"):
        active_head(store, load_bundle(other))


def test_take_a_wrong_example_out_and_rename_a_type(tmp_path, project, blue_video, capsys):
    from inspector.cli import main

    store, bundle, backbone = project
    library = FaultLibrary(store, bundle, backbone)
    library.add("blue_thing", read_examples(write_examples(tmp_path / "ex.csv", blue_rows(blue_video))))
    wrong = [e for e in store.examples() if e.fault_type == "blue_thing"][-1]
    change = library.remove_example(wrong.id)
    assert wrong.id not in {e.id for e in store.examples()}
    assert next(t for t in store.fault_types() if t.name == "blue_thing").examples == 4
    assert change.version == 2 and "took example" in store.head_versions()[-1].note
    with pytest.raises(FaultLibraryError, match="no example 9999"):
        library.remove_example(9999)
    scans_before = len(store.findings())
    library.rename("blue_thing", "bird_nest")
    assert "bird_nest" in library.active_head().classes and "blue_thing" not in library.active_head().classes
    assert {t.name for t in store.fault_types()} >= {"bird_nest"}
    assert len(store.findings()) == scans_before
    with pytest.raises(FaultLibraryError, match="cannot be the new name"):
        library.rename("bird_nest", "red_fault")  # a bundle class
    with pytest.raises(FaultLibraryError, match="no fault type named blue_thing"):
        library.rename("blue_thing", "x")
    # The same example labelled again comes back instead of clashing with the one taken out.
    again = library.add("bird_nest", read_examples(write_examples(
        tmp_path / "again.csv", [(str(blue_video), wrong.frame, "catenary[1]", "bird_nest")])))
    assert again.examples == {"bird_nest": 1}
    assert next(t for t in store.fault_types() if t.name == "bird_nest").examples == 5
    project_dir = store.path.parent
    assert main(["faults", "examples", "bird_nest", "--project", str(project_dir), "--bundle", str(bundle.path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


def test_a_refit_killed_half_way_loses_nothing(tmp_path, project, blue_video):
    """kill -9 while a refit is adapting the head: every example and review, and the head in force,
    are as before; the next refit works."""
    import os
    import signal
    import subprocess
    import sys
    import time

    store, bundle, backbone = project
    library = FaultLibrary(store, bundle, backbone)
    library.add("blue_thing", read_examples(write_examples(tmp_path / "ex.csv", blue_rows(blue_video))))
    finding = next(f for f in store.findings() if f.class_name == "red_fault")
    library.record_review(finding.id, "rejected")
    before = library_state(store), [(e.id, e.fault_type, e.source) for e in store.examples()]
    marker = tmp_path / "adapting"
    script = f"""
import time
import inspector.faults as faults
from inspector.backbone import Backbone
from inspector.bundle import load_bundle
from inspector.store import Store

real = faults.adapt
def slow(*args, **kwargs):
    head = real(*args, **kwargs)
    open({str(marker)!r}, "w").close()
    time.sleep(60)
    return head
faults.adapt = slow
bundle = load_bundle({str(bundle.path)!r})
with Store({str(tmp_path / "p")!r}) as store:
    faults.FaultLibrary(store, bundle, Backbone(bundle, threads=1)).refit()
"""
    child = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the refit never reached its adaptation"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with Store(tmp_path / "p") as fresh:
        assert (library_state(fresh), [(e.id, e.fault_type, e.source) for e in fresh.examples()]) == before
        assert fresh.finding(finding.id).status == "rejected"
        assert fresh.connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    change = FaultLibrary(store, bundle, backbone).refit()
    assert change.version == max(before[0][1]) + 1


def test_refit_grows_the_normal_bank_from_unflagged_crops_away_from_findings(tmp_path, project, blue_video):
    store, bundle, backbone = project
    library = FaultLibrary(store, bundle, backbone)
    library.add("blue_thing", read_examples(write_examples(tmp_path / "ex.csv", blue_rows(blue_video))))
    reclassify(store, active_head(store, bundle))
    assert library.refit().examples == {}  # off by default
    change = library.refit(sample_normals=True)
    sampled = [e for e in store.examples() if e.source == "auto-normal" and e.image == ""]
    assert change.examples == {"normal": len(sampled)} and 0 < len(sampled) <= 2 * 24  # two regions with faults
    margin = 2.0 * 10  # AUTO_NORMAL_MARGIN_S at 10 fps
    for example in sampled:
        assert not any(f.crop == example.crop and f.start_frame - margin <= example.frame <= f.end_frame + margin
                       for f in store.findings())
    assert library.refit(sample_normals=True).examples == {}  # the same crops are not added twice
    reclassify(store, active_head(store, bundle))
    assert spans(store, "blue_thing") == [("catenary[1]", 20, 29), ("catenary[1]", 90, 99)]
    assert spans(store, "red_fault") == [("track", 60, 69)]


def test_adding_from_poor_examples_warns(tmp_path, capsys, tiny_bundle, profile_file, blue_video):
    """Examples that do not separate (the 'fault' is plain grey catenary like the normals) and too
    few of them: the type is added, with one warning line per problem."""
    project = tmp_path / "p"
    common = ["--project", str(project), "--bundle", str(tiny_bundle)]
    assert main(["scan", str(blue_video), *common, "--profile", str(profile_file), "-q"]) == EXIT_OK
    grey = [(str(blue_video), f, "catenary[1]", "grey_thing") for f in (40, 50)]
    grey += [(str(blue_video), f, "catenary[1]", "normal") for f in (45, 55, 110)]
    capsys.readouterr()
    assert main(["faults", "add", "grey_thing", "--examples", str(write_examples(tmp_path / "g.csv", grey)),
                 *common]) == EXIT_OK
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("inspector: warning:")]
    assert any("only 2 example(s) of grey_thing" in line for line in warnings), err
    assert any("leave-one-out accuracy is" in line and "add clearer examples" in line for line in warnings), err
    assert "added grey_thing" in out
