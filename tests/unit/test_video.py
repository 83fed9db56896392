from pathlib import Path

import numpy as np
import pytest

from inspector.errors import VideoError
from inspector.video import VideoInfo, VideoReader, probe, step_for_rate
from tests.factories import frame_index_of, make_video


def test_probe_describes_the_video(fault_video):
    info = probe(fault_video)
    assert (info.frame_count, info.fps, info.width, info.height) == (60, 10.0, 160, 120)
    assert info.container == "mp4"
    assert info.duration == pytest.approx(6.0)
    assert info.timestamp(15) == pytest.approx(1.5)
    assert info.frame_at(1.5) == 15


def test_frames_with_step_return_the_right_indices(fault_video):
    with VideoReader(fault_video) as reader:
        frames = list(reader.frames(start=3, step=7))
    assert [f.index for f in frames] == list(range(3, 60, 7))
    assert [frame_index_of(f.image) for f in frames] == list(range(3, 60, 7))
    assert frames[1].timestamp == pytest.approx(1.0)


@pytest.mark.parametrize("order", [[17, 3, 59, 0, 33], [59, 58, 1]])
def test_seek_is_exact_in_any_order(fault_video, order):
    with VideoReader(fault_video) as reader:
        assert [frame_index_of(reader.read_frame(i).image) for i in order] == order


def test_seek_outside_the_video_is_a_clear_error(fault_video):
    with VideoReader(fault_video) as reader, pytest.raises(VideoError, match="outside the video"):
        reader.read_frame(60)


def test_step_for_rate():
    video = VideoInfo(Path("x.mp4"), "mp4", "avc1", 25.0, 100, 10, 10)
    assert step_for_rate(video, 5) == 5
    assert step_for_rate(video, 100) == 1


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path / "nope.mp4")


def test_folder_is_not_a_video(tmp_path):
    with pytest.raises(VideoError, match="is not a file"):
        probe(tmp_path)


def test_not_a_video(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are my notes, not a video\n" * 50)
    with pytest.raises(VideoError, match="not a readable video|no decodable frames"):
        probe(fake)


def test_zero_frame_video(tmp_path):
    empty = make_video(tmp_path / "empty.mp4", 0)
    with pytest.raises(VideoError):
        probe(empty)


def test_empty_file(tmp_path):
    empty = tmp_path / "zero.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError):
        probe(empty)


def test_truncated_file_stops_early_and_says_so(tmp_path):
    """A copy cut off at 40 %: the first frames decode, the rest is reported, nothing raises."""
    full = make_video(tmp_path / "full.avi", 200, fourcc="MJPG")
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    with VideoReader(cut) as reader:
        indices = [f.index for f in reader.frames()]
        assert 0 < len(indices) < 200
        assert indices == list(range(len(indices)))
        assert reader.stopped_early or reader.decode_errors > 0


@pytest.mark.parametrize("read", ["frames", "planes"])
def test_garbage_in_the_middle_is_skipped_not_fatal(tmp_path, read):
    """An MJPEG frame overwritten with noise: it is counted and skipped, reading goes on, and every
    frame is either read or counted (the player's BGR read and the scan's planar read alike)."""
    full = make_video(tmp_path / "full.avi", 120, fourcc="MJPG")
    data = bytearray(full.read_bytes())
    start = len(data) // 2
    data[start:start + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    with VideoReader(damaged) as reader:
        indices = [f.index for f in getattr(reader, read)()]
        assert reader.decode_errors > 0
        assert not reader.stopped_early
    assert 50 < len(indices) < 120 and len(indices) + reader.decode_errors == 120
    assert indices[-1] > 100  # reading went on past the damage


def _index_in_planes(frame) -> int:
    """``frame_index_of`` on a planar frame: its Y plane back to full-range grey."""
    return frame_index_of((frame.y.astype(np.float32) - 16) * 255 / 219)


@pytest.mark.parametrize("fourcc", ["mp4v", "MJPG"])  # 4:2:0 limited range, and JPEG full range converted
def test_planes_give_the_frames_read_frame_gives(tmp_path, fourcc):
    """The scan's planar read and the player's BGR read agree on which frame is which, from the
    start and after a seek (resuming a scan), and on what a crop looks like."""
    from inspector.regions import CropSpec, crop_frame, crop_planes

    video = make_video(tmp_path / f"v.{'avi' if fourcc == 'MJPG' else 'mp4'}", 60, set(range(20, 30)),
                       fourcc=fourcc)
    specs = [CropSpec("track", "track", (0.3, 0.45, 0.7, 1.0)), CropSpec("all", "all", (0.0, 0.0, 1.0, 1.0))]
    with VideoReader(video) as reader:
        for start, step in [(0, 1), (37, 3)]:
            frames = list(reader.planes(start=start, step=step))
            assert [f.index for f in frames] == list(range(start, 60, step))
            assert [_index_in_planes(f) for f in frames] == list(range(start, 60, step))
        assert reader.decode_errors == 0 and not reader.stopped_early
        for frame in frames[:3]:
            expected = crop_frame(reader.read_frame(frame.index).image, specs, 32).astype(np.int16)
            assert np.abs(crop_planes(frame, specs, 32) - expected).mean() < 3


def test_planes_of_a_truncated_file_stop_early_and_say_so(tmp_path):
    full = make_video(tmp_path / "full.avi", 200, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.4)])
    with VideoReader(cut) as reader:
        indices = [f.index for f in reader.planes()]
        assert 0 < len(indices) < 200 and indices == list(range(len(indices)))
        assert reader.stopped_early and reader.decode_errors == 200 - len(indices)


def test_planes_end_cleanly_where_the_file_cannot_be_read_further(tmp_path, monkeypatch):
    """An I/O error in the middle of the file (e.g. storage gone): the frames before it, the rest
    counted, the read reported as stopped early; nothing raises into the scan."""
    import av

    import inspector.video

    class FailingAfter:
        def __init__(self, container, packets: int) -> None:
            self._container, self._packets = container, packets

        def __getattr__(self, name):
            return getattr(self._container, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._container.close()

        def demux(self, stream):
            for number, packet in enumerate(self._container.demux(stream)):
                if number == self._packets:
                    raise av.error.OSError(5, "Input/output error")
                yield packet

    video = make_video(tmp_path / "v.mp4", 120)
    real_open = av.open
    monkeypatch.setattr(inspector.video.av, "open", lambda path: FailingAfter(real_open(path), 40))
    with VideoReader(video) as reader:
        indices = [f.index for f in reader.planes()]
        assert 30 < len(indices) <= 40 and indices == list(range(len(indices)))
        assert reader.stopped_early and reader.decode_errors == 120 - len(indices)
