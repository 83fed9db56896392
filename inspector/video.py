"""Open, validate and read recorded videos.

OpenCV's FFmpeg backend reads H.264/HEVC/MPEG-4. A frame that fails to decode is counted and
skipped; only a long run of failures (the file stops decoding) ends the read early, and the
caller learns how far it got through ``VideoReader.decode_errors`` and ``stopped_early``.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
        self._capture = _open_capture(self.info.path)
        self._position = 0  # index of the frame the next read returns
        self.decode_errors = 0
        self.stopped_early = False

    def close(self) -> None:
        self._capture.release()

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


def step_for_rate(info: VideoInfo, target_fps: float) -> int:
    """The frame step that samples a video at about ``target_fps``."""
    if target_fps <= 0:
        raise ValueError("target rate must be positive")
    return max(1, round(info.fps / target_fps))
