"""Position tracks, mast registers and run comparison (no video decoding: plain records)."""
import time

import pytest

from inspector.compare import Placed, match
from inspector.positions import (
    Fix,
    Location,
    MastRegister,
    PositionError,
    PositionTrack,
    read_gpx,
    read_masts,
    read_track_csv,
)
from inspector.store import FindingRecord


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_track_interpolates_and_leaves_gaps_unknown(tmp_path):
    path = write(tmp_path / "track.csv", "t,line,chainage_m,lat,lon,mast\n"
                                         "0,L4,12000,50.0,8.0,230\n10,L4,12100,50.001,8.002,231\n"
                                         "40,L4,12400,50.004,8.008,234\n")
    track = PositionTrack(read_track_csv(path), max_gap_s=15)
    halfway = track.at(5)
    assert halfway.line == "L4" and halfway.chainage_m == pytest.approx(12050)
    assert halfway.lat == pytest.approx(50.0005) and halfway.mast == "230"
    assert track.at(10).chainage_m == 12100  # exactly on a sample
    assert track.at(25) is None  # 30 s between samples: longer than the gap limit, not invented
    assert track.at(-1) is None and track.at(41) is None  # outside the track


def test_frames_need_the_frame_rate_and_times_are_sorted(tmp_path):
    path = write(tmp_path / "frames.csv", "frame,chainage_m\n250,1025\n0,1000\n")
    fixes = read_track_csv(path, fps=25)
    assert [f.t for f in fixes] == [0, 10]
    with pytest.raises(PositionError, match="frame rate"):
        read_track_csv(path)


BAD_TRACKS = [
    ("no time column", "line,chainage_m\nL4,10\n", "needs a 't'"),
    ("no position column", "t,speed\n0,10\n", "no position column"),
    ("not a number", "t,chainage_m\n0,10\n1,ten\n", r"row 3: chainage_m 'ten' is not a number"),
    ("lat without lon", "t,lat\n0,50\n", "row 2: lat/lon must come together"),
    ("same time twice", "t,chainage_m\n0,10\n0,20\n", "two samples at t = 0"),
    ("chainage turns back", "t,line,chainage_m\n0,L4,100\n1,L4,120\n2,L4,90\n", "chainage turns back at t = 2"),
]


@pytest.mark.parametrize("what, text, message", BAD_TRACKS, ids=[b[0] for b in BAD_TRACKS])
def test_bad_tracks_are_one_clear_line(tmp_path, what, text, message):
    with pytest.raises(PositionError, match=message) as info:
        read_track_csv(write(tmp_path / "bad.csv", text))
    assert "\n" not in str(info.value)


GPX = """<?xml version="1.0"?>
<gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">{meta}
<trk><trkseg>
<trkpt lat="50.0" lon="8.0"><time>2026-05-01T22:14:03Z</time></trkpt>
<trkpt lat="50.001" lon="8.001"><time>2026-05-01T22:14:13Z</time></trkpt>
</trkseg></trk></gpx>"""


def test_gpx_times_count_from_the_video_start(tmp_path):
    from datetime import datetime, timezone

    plain = write(tmp_path / "run.gpx", GPX.format(meta=""))
    with pytest.raises(PositionError, match="start time is unknown; pass --start"):
        read_gpx(plain)
    fixes = read_gpx(plain, datetime(2026, 5, 1, 22, 14, 0, tzinfo=timezone.utc))
    assert [f.t for f in fixes] == [3, 13] and fixes[0].lat == 50.0
    with_meta = write(tmp_path / "meta.gpx", GPX.format(meta="<metadata><time>2026-05-01T22:14:01Z</time></metadata>"))
    assert [f.t for f in read_gpx(with_meta)] == [2, 12]
    assert PositionTrack(read_gpx(with_meta)).at(7).lat == pytest.approx(50.0005)
    broken = write(tmp_path / "broken.gpx", "<gpx><trk>")
    with pytest.raises(PositionError, match="not a readable GPX"):
        read_gpx(broken)


def test_mast_register_gives_the_span(tmp_path):
    register = MastRegister(read_masts(write(tmp_path / "masts.csv", "line,mast,chainage_m\nL4,231,12300\n"
                                                                     "L4,232,12360\nL4,230,12240\nL5,1,0\n")))
    assert register.span("L4", 12347) == ("231", "232")
    assert register.span("L4", 12100) is None  # before the first mast of the register
    assert register.span("L9", 12347) is None
    located = register.locate(Location("L4", 12347.0))
    assert located.describe() == "line L4, km 12.347, masts 231-232"
    with pytest.raises(PositionError, match="listed twice"):
        read_masts(write(tmp_path / "twice.csv", "line,mast,chainage_m\nL4,1,0\nL4,1,5\n"))
    with pytest.raises(PositionError, match="lacks chainage_m"):
        read_masts(write(tmp_path / "short.csv", "line,mast\nL4,1\n"))


def finding(i, cls, status="open"):
    return FindingRecord(i, 1, "track", "track", cls, 0, 1, 0, 0.9, 2, status)


def test_runs_match_by_place_and_class_one_to_one():
    a = [Placed(finding(1, "gap"), "L4", 100.0), Placed(finding(2, "gap"), "L4", 500.0),
         Placed(finding(3, "nest"), "L4", 800.0)]
    b = [Placed(finding(11, "gap"), "L4", 104.0), Placed(finding(12, "gap"), "L4", 108.0),  # two near one
         Placed(finding(13, "nest"), "L4", 1300.0), Placed(finding(14, "gap"), "L5", 500.0)]  # other line
    result = match(a, b, tolerance=10)
    assert [(x.finding.id, y.finding.id) for x, y in result.persisting] == [(1, 11)]  # the closer one
    assert sorted(p.finding.id for p in result.new) == [12, 13, 14]
    assert sorted(p.finding.id for p in result.gone) == [2, 3]


def test_a_reviewers_class_counts_over_the_scans():
    a = [Placed(FindingRecord(1, 1, "t", "t", "gap", 0, 1, 0, 0.9, 2, "confirmed", "crack"), "L4", 100.0)]
    b = [Placed(finding(2, "crack"), "L4", 101.0)]
    assert len(match(a, b, tolerance=5).persisting) == 1


def test_matching_two_runs_of_100000_findings_is_fast():
    import random

    rng = random.Random(0)
    classes = ["gap", "nest", "clip", "bolt"]
    a = [Placed(finding(i, rng.choice(classes)), "L4", rng.uniform(0, 2_000_000)) for i in range(100_000)]
    b = [Placed(p.finding, p.line, p.at + rng.uniform(-3, 3)) for p in a[:90_000]]
    b += [Placed(finding(200_000 + i, rng.choice(classes)), "L4", rng.uniform(0, 2_000_000)) for i in range(10_000)]
    started = time.perf_counter()
    result = match(a, b, tolerance=10)
    seconds = time.perf_counter() - started
    assert len(result.persisting) >= 89_000 and seconds < 5, seconds


def test_track_records_round_trip_through_the_store(tmp_path):
    from inspector.positions import Mast
    from inspector.store import Store
    from inspector.video import VideoInfo

    with Store(tmp_path / "p") as store:
        clip = tmp_path / "v.mp4"
        clip.write_bytes(b"x" * 100)
        video = store.add_video(VideoInfo(clip, "mp4", "h264", 25.0, 250, 64, 48))
        store.set_positions(video.id, [Fix(0.0, "L4", 100.0), Fix(10.0, "L4", 200.0)])
        store.set_positions(video.id, [Fix(0.0, "L4", 300.0)])  # a new import replaces the old track
        assert store.positions(video.id) == [Fix(0.0, "L4", 300.0)]
        store.set_masts([Mast("L4", "1", 0.0), Mast("L4", "2", 60.0)])
        store.set_masts([Mast("L4", "2", 61.0)])
        assert sorted(store.masts(), key=lambda m: m.mast) == [Mast("L4", "1", 0.0), Mast("L4", "2", 61.0)]
