"""Open, validate and read recorded videos.

Two ways to read, both on FFmpeg: OpenCV's backend gives whole BGR frames with exact seeks (the
player, thumbnails, labelling); PyAV gives the decoder's own YUV planes for the scan, which crops
before converting colour (converting a whole 1080p frame to BGR cost more than decoding it).
A frame that fails to decode is counted and skipped; only a long run of failures (the file stops
decoding) ends the read early, and the caller learns how far it got through
``VideoReader.decode_errors`` and ``stopped_early``.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from inspector.errors import VideoError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".ts", ".mts")
# Consecutive failed frames after which a file is taken to have stopped decoding.
MAX_CONSECUTIVE_FAILURES = 50


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    container: str
    codec: str
    fps: float
    frame_count: int
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps

    def timestamp(self, frame: int) -> float:
        """Seconds from the start for a frame index (constant frame rate)."""
        return frame / self.fps

    def frame_at(self, seconds: float) -> int:
        return min(self.frame_count - 1, max(0, round(seconds * self.fps)))


@dataclass(frozen=True)
class Frame:
    index: int
    timestamp: float
    image: np.ndarray  # BGR uint8, H x W x 3


@dataclass(frozen=True)
class PlanarFrame:
    """A decoded frame as YUV 4:2:0 planes (limited range): Y is H x W, U and V are half size."""

    index: int
    timestamp: float
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray


def _plane(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A plane of a PyAV frame as a uint8 view (no copy; rows are padded to ``line_size``)."""
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, :plane.width]


def _packets(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.Packet]:
    """The stream's packets up to the end, or up to where the file cannot be read any further."""
    packets = container.demux(stream)
    while True:
        try:
            yield next(packets)
        except StopIteration:
            return
        except av.FFmpegError as exc:
            log.warning("%s: reading stops: %s", container.name, exc)
            return


def _fourcc_text(code: float) -> str:
    value = int(code)
    text = "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() and text.strip() else "unknown"


def _open_capture(path: Path) -> cv2.VideoCapture:
    if not path.exists():
        raise VideoError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise VideoError(f"{path}: is not a file; give a video file such as an .mp4")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"{path}: not a readable video (unknown container or codec); "
                         "convert it to H.264 MP4, e.g. with ffmpeg")
    return capture


def probe(path: Path | str) -> VideoInfo:
    """Open a video, check that it has frames and a frame rate, and describe it."""
    path = Path(path)
    capture = _open_capture(path)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        ok, first = capture.read()
        if not ok or first is None or frame_count <= 0:
            raise VideoError(f"{path}: the video has no decodable frames; "
                             "the file is empty or damaged, record or copy it again")
        if not fps or fps <= 0 or fps > 1000:
            raise VideoError(f"{path}: the video has no valid frame rate ({fps}); re-mux it with ffmpeg")
        return VideoInfo(path, path.suffix.lstrip(".").lower() or "unknown",
                         _fourcc_text(capture.get(cv2.CAP_PROP_FOURCC)), float(fps),
                         frame_count, width or first.shape[1], height or first.shape[0])
    finally:
        capture.release()


class VideoReader:
    """Sequential and random access to one video's frames."""

    def __init__(self, path: Path | str) -> None:
        self.info = probe(path)
        self._opened: cv2.VideoCapture | None = None  # OpenCV's reader, opened on first use (``planes`` never needs it)
        self._position = 0  # index of the frame the next read returns
        self.decode_errors = 0
        self.stopped_early = False

    @property
    def _capture(self) -> cv2.VideoCapture:
        if self._opened is None:
            self._opened = _open_capture(self.info.path)
        return self._opened

    def close(self) -> None:
        if self._opened is not None:
            self._opened.release()
            self._opened, self._position = None, 0

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def seek(self, index: int) -> None:
        if not 0 <= index < self.info.frame_count:
            raise VideoError(f"{self.info.path}: frame {index} is outside the video "
                             f"(0..{self.info.frame_count - 1})")
        if index != self._position:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            self._position = index

    def read_frame(self, index: int) -> Frame:
        """Exact seek to one frame (for thumbnails, labelling and the player)."""
        self.seek(index)
        ok, image = self._capture.read()
        if not ok or image is None:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, image = self._capture.read()
        if not ok or image is None:
            self._position = -1
            raise VideoError(f"{self.info.path}: frame {index} cannot be decoded; the file may be damaged")
        self._position = index + 1
        return Frame(index, self.info.timestamp(index), image)

    def frames(self, start: int = 0, step: int = 1, stop: int | None = None) -> Iterator[Frame]:
        """Every ``step``-th frame from ``start``; skipped frames are grabbed, not converted.

        Frames that fail to decode are counted in ``decode_errors`` and skipped. After
        ``MAX_CONSECUTIVE_FAILURES`` failures in a row the file is taken as truncated:
        iteration ends and ``stopped_early`` is set.
        """
        if step < 1:
            raise ValueError("step must be >= 1")
        stop = self.info.frame_count if stop is None else min(stop, self.info.frame_count)
        if start >= stop:
            return
        self.seek(start)
        failures = 0
        index = start
        while index < stop:
            wanted = (index - start) % step == 0
            ok = self._capture.grab()
            image = None
            if ok and wanted:
                ok, image = self._capture.retrieve()
                ok = ok and image is not None
            self._position = index + 1
            if ok:
                failures = 0
                if wanted:
                    yield Frame(index, self.info.timestamp(index), image)
            else:
                failures += 1
                self.decode_errors += 1
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    self.stopped_early = True
                    log.warning("%s stops decoding at frame %d of %d", self.info.path,
                                index - failures + 1, self.info.frame_count)
                    return
            index += 1

    def planes(self, start: int = 0, step: int = 1, stop: int | None = None) -> Iterator[PlanarFrame]:
        """``frames`` for the scan: the same frames, indices and error accounting, as YUV planes.

        Indices come from presentation timestamps, so where the container keeps them (MP4, MKV) a
        frame lost to damage leaves a gap (counted in ``decode_errors``) instead of shifting every
        later index away from what ``read_frame`` shows. Frames in another pixel format or in full
        range (MJPEG) are converted to limited-range 4:2:0 by FFmpeg first."""
        if step < 1:
            raise ValueError("step must be >= 1")
        stop = self.info.frame_count if stop is None else min(stop, self.info.frame_count)
        if start >= stop:
            return
        try:
            container = av.open(str(self.info.path))
        except av.FFmpegError as exc:
            raise VideoError(f"{self.info.path}: not a readable video ({exc}); "
                             "convert it to H.264 MP4, e.g. with ffmpeg") from None
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame and slice threads on every core
            base = stream.start_time or 0
            seconds_per_tick = float(stream.time_base) if stream.time_base else 1 / self.info.fps
            if start:
                container.seek(base + int(start / self.info.fps / seconds_per_tick), stream=stream, backward=True)
            expected = start  # the next index a whole file would give
            failures = 0
            counted = start - 1  # fallback when a frame carries no timestamp
            for packet in _packets(container, stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError:
                    failures += 1
                    if failures >= MAX_CONSECUTIVE_FAILURES:
                        break
                    continue
                for frame in decoded:
                    counted += 1
                    index = (counted if frame.pts is None
                             else round((frame.pts - base) * seconds_per_tick * self.info.fps))
                    counted = index
                    if index < expected:
                        continue  # before the seek target, or a repeated timestamp
                    if index >= stop:
                        return
                    self.decode_errors += index - expected
                    failures = 0
                    expected = index + 1
                    if (index - start) % step:
                        continue
                    full_range = frame.color_range == 2 or frame.format.name.startswith("yuvj")  # JPEG range
                    if full_range or frame.format.name != "yuv420p":
                        frame = frame.reformat(format="yuv420p", src_color_range="JPEG" if full_range else "MPEG",
                                               dst_color_range="MPEG")
                    y, u, v = (_plane(p) for p in frame.planes)
                    yield PlanarFrame(index, self.info.timestamp(index), y, u, v)
            missing = stop - expected  # counted as errors, as ``frames`` counts the reads that fail
            self.decode_errors += missing
            if missing >= MAX_CONSECUTIVE_FAILURES:
                self.stopped_early = True
                log.warning("%s stops decoding at frame %d of %d", self.info.path, expected, self.info.frame_count)


def step_for_rate(info: VideoInfo, target_fps: float) -> int:
    """The frame step that samples a video at about ``target_fps``."""
    if target_fps <= 0:
        raise ValueError("target rate must be positive")
    return max(1, round(info.fps / target_fps))
