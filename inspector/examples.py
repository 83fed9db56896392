"""Labelled examples: the rows of an examples file and the crops they name.

Examples file, CSV (paths relative to the file; ``region`` a crop of the profile such as
``track`` or ``catenary[2]``, or ``box`` as ``x0 y0 x1 y1`` pixels)::

    video,frame,region,label
    run1.mp4,120,catenary[2],bird_nest

or a labelme JSON file (one box per shape, on the picture it names).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.errors import FaultLibraryError
from inspector.regions import shrink


@dataclass(frozen=True)
class LabelledExample:
    row: int  # line in the examples file, for error messages
    label: str
    video: Path | None = None
    frame: int | None = None
    crop: str | None = None
    box: tuple[int, int, int, int] | None = None
    image: Path | None = None


def _parse_box(text: str, where: str) -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(round(float(v))) for v in text.replace(",", " ").split())
    except ValueError:
        raise FaultLibraryError(f"{where}: box must be 'x0 y0 x1 y1' in pixels, got {text!r}") from None
    if x1 <= x0 or y1 <= y0 or x0 < 0 or y0 < 0:
        raise FaultLibraryError(f"{where}: box {text!r} is empty or negative")
    return x0, y0, x1, y1


def read_examples(path: Path) -> list[LabelledExample]:
    """Examples from a CSV (video, frame, region or box, label) or a labelme JSON file."""
    if not path.is_file():
        raise FaultLibraryError(f"examples file {path}: not found; give a CSV or labelme JSON file")
    if path.suffix.lower() == ".json":
        return _read_labelme(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FaultLibraryError(f"examples file {path}: cannot be read as CSV ({exc})") from None
    if not rows:
        raise FaultLibraryError(f"examples file {path}: no examples in it; add rows video,frame,region,label")
    columns = set(rows[0])
    if not {"video", "frame", "label"} <= columns or not columns & {"region", "box"}:
        raise FaultLibraryError(f"examples file {path}: needs columns video, frame, region (or box) and label; "
                                f"it has {', '.join(sorted(c for c in columns if c))}")
    examples = []
    for number, row in enumerate(rows, start=2):
        where = f"{path.name} line {number}"
        label = (row.get("label") or "").strip()
        if not label:
            raise FaultLibraryError(f"{where}: the label is empty")
        try:
            frame = int(row["frame"])
        except (TypeError, ValueError):
            raise FaultLibraryError(f"{where}: frame must be a whole number, got {row['frame']!r}") from None
        video = Path((row.get("video") or "").strip())
        if not str(video) or str(video) == ".":
            raise FaultLibraryError(f"{where}: the video is empty")
        if not video.is_absolute():
            video = path.parent / video
        region = (row.get("region") or "").strip() or None
        box = _parse_box(row["box"], where) if (row.get("box") or "").strip() else None
        if region is None and box is None:
            raise FaultLibraryError(f"{where}: give a region or a box")
        examples.append(LabelledExample(number, label, video, frame, region, box))
    return examples


def _read_labelme(path: Path) -> list[LabelledExample]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        image = path.parent / data["imagePath"]
        shapes = data["shapes"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise FaultLibraryError(f"labelme file {path}: cannot be read ({exc})") from None
    examples = []
    for number, shape in enumerate(shapes, start=1):
        points = np.asarray(shape.get("points", []), float)
        if points.ndim != 2 or len(points) < 2 or not shape.get("label"):
            raise FaultLibraryError(f"labelme file {path}: shape {number} needs a label and at least two points")
        x0, y0 = points.min(axis=0)
        x1, y1 = points.max(axis=0)
        box = _parse_box(f"{x0} {y0} {x1} {y1}", f"labelme file {path} shape {number}")
        examples.append(LabelledExample(number, str(shape["label"]).strip(), box=box, image=image))
    if not examples:
        raise FaultLibraryError(f"labelme file {path}: no shapes in it; draw boxes around the examples")
    return examples


def crop_box(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """A pixel box of a BGR image (clamped to it) as an RGB ``size`` x ``size`` crop."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"box {box} lies outside the {width}x{height} picture")
    return cv2.cvtColor(shrink(image[y0:y1, x0:x1], size), cv2.COLOR_BGR2RGB)
