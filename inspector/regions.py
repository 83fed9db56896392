"""Region profiles: where the catenary and the track are in a camera's frame.

A profile is a TOML file (one per camera set-up, shipped ones in ``assets/profiles/``)::

    name = "cab-camera"
    frame_size = [1920, 1080]        # optional: the camera's frame size (chosen for such videos)
    [[regions]]
    name = "track"
    box = [0.30, 0.45, 0.70, 1.00]   # x0, y0, x1, y1 as fractions of the frame
    tiles = [1, 1]                   # optional: columns, rows

Each region (or each tile of it) becomes one square crop resized to the bundle's input size.
"""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from inspector.assets import assets_dir
from inspector.errors import ProfileError
from inspector.video import PlanarFrame

if TYPE_CHECKING:
    from inspector.store import Store

GENERIC_PROFILE = "full-frame"  # for footage no profile's frame_size matches


@dataclass(frozen=True)
class CropSpec:
    """One crop of a frame: a region, or one tile of a tiled region."""

    name: str  # "track", or "catenary[2]" for the third tile
    region: str
    box: tuple[float, float, float, float]

    def pixel_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = self.box
        return (round(x0 * width), round(y0 * height), max(round(x1 * width), round(x0 * width) + 1),
                max(round(y1 * height), round(y0 * height) + 1))


@dataclass(frozen=True)
class Region:
    name: str
    box: tuple[float, float, float, float]
    tiles: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class RegionProfile:
    name: str
    regions: tuple[Region, ...]
    crop_size: int | None
    source: str  # the TOML text, so a scan can record exactly what it used
    frame_size: tuple[int, int] | None = None  # the camera's frame size it was drawn for

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def crop_specs(self) -> list[CropSpec]:
        specs = []
        for region in self.regions:
            x0, y0, x1, y1 = region.box
            cols, rows = region.tiles
            if cols * rows == 1:
                specs.append(CropSpec(region.name, region.name, region.box))
                continue
            for row in range(rows):
                for col in range(cols):
                    box = (x0 + (x1 - x0) * col / cols, y0 + (y1 - y0) * row / rows,
                           x0 + (x1 - x0) * (col + 1) / cols, y0 + (y1 - y0) * (row + 1) / rows)
                    specs.append(CropSpec(f"{region.name}[{row * cols + col}]", region.name, box))
        return specs


def shrink(image: np.ndarray, size: int, dst: np.ndarray | None = None) -> np.ndarray:
    """Resize to ``size`` x ``size``: box-average by the whole factor first (OpenCV's fast path for
    integer ratios, anti-aliased), then bilinear for the rest. About 3x cheaper than INTER_AREA at
    the scan's fractional ratios, which was a quarter of an every-frame scan's time."""
    factor = min(image.shape[0], image.shape[1]) // size
    if factor >= 2:
        image = cv2.resize(image, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (size, size), dst=dst, interpolation=cv2.INTER_LINEAR)


def crop_frame(image_bgr: np.ndarray, specs: list[CropSpec], size: int) -> np.ndarray:
    """Cut every crop out of a BGR frame and resize it: N x size x size x 3, RGB uint8."""
    height, width = image_bgr.shape[:2]
    crops = np.empty((len(specs), size, size, 3), np.uint8)
    for i, spec in enumerate(specs):
        x0, y0, x1, y1 = spec.pixel_box(width, height)
        cv2.cvtColor(shrink(image_bgr[y0:y1, x0:x1], size), cv2.COLOR_BGR2RGB, dst=crops[i])
    return crops


def crop_planes(frame: PlanarFrame, specs: list[CropSpec], size: int) -> np.ndarray:
    """``crop_frame`` for a frame still in the decoder's YUV 4:2:0 planes: each crop is cut and
    resized plane by plane and only then converted to RGB, so the whole frame is never converted
    (BT.601 limited range, as OpenCV's own conversion of a decoded frame; a crop differs from
    ``crop_frame``'s by about one grey level). ``size`` must be even."""
    if size % 2:
        raise ValueError(f"crop size {size} must be even for 4:2:0 planes")
    height, width = frame.y.shape
    crops = np.empty((len(specs), size, size, 3), np.uint8)
    i420 = np.empty((size * 3 // 2, size), np.uint8)  # Y, then U and V at half size, as OpenCV wants
    half = size // 2
    u_out, v_out = (i420[size:size + size // 4].reshape(half, half),
                    i420[size + size // 4:].reshape(half, half))
    for i, spec in enumerate(specs):
        x0, y0, x1, y1 = (v & ~1 for v in spec.pixel_box(width, height))  # even: chroma is 2 x 2
        x1, y1 = max(x1, x0 + 2), max(y1, y0 + 2)
        shrink(frame.y[y0:y1, x0:x1], size, dst=i420[:size])
        u_out[:] = shrink(frame.u[y0 // 2:y1 // 2, x0 // 2:x1 // 2], half)
        v_out[:] = shrink(frame.v[y0 // 2:y1 // 2, x0 // 2:x1 // 2], half)
        cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420, dst=crops[i])
    return crops


def _parse_region(raw: object, where: str) -> Region:
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: each [[regions]] entry must be a table with name and box")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "[]"):
        raise ProfileError(f"{where}: a region needs a name (text without brackets)")
    box = raw.get("box")
    if (not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, int | float) for v in box)):
        raise ProfileError(f"{where}: region {name!r} needs box = [x0, y0, x1, y1] as fractions 0..1")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ProfileError(f"{where}: region {name!r} box {box} must satisfy 0 <= x0 < x1 <= 1 "
                           "and 0 <= y0 < y1 <= 1")
    tiles = raw.get("tiles", [1, 1])
    if (not isinstance(tiles, list) or len(tiles) != 2
            or not all(isinstance(v, int) and 1 <= v <= 16 for v in tiles)):
        raise ProfileError(f"{where}: region {name!r} tiles must be [columns, rows], each 1..16")
    return Region(name.strip(), (x0, y0, x1, y1), (tiles[0], tiles[1]))


def parse_profile(text: str, where: str = "profile") -> RegionProfile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{where}: not valid TOML ({exc}); fix the file") from None
    raw_regions = data.get("regions")
    if not isinstance(raw_regions, list) or not raw_regions:
        raise ProfileError(f"{where}: no regions; add at least one [[regions]] table with name and box")
    regions = tuple(_parse_region(raw, where) for raw in raw_regions)
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise ProfileError(f"{where}: region names must be unique, got {names}")
    crop_size = data.get("crop_size")
    if crop_size is not None and (not isinstance(crop_size, int) or not 16 <= crop_size <= 1024):
        raise ProfileError(f"{where}: crop_size must be a whole number of pixels (16..1024)")
    frame_size = data.get("frame_size")
    if frame_size is not None and (not isinstance(frame_size, list) or len(frame_size) != 2
                                   or not all(isinstance(v, int) and v > 0 for v in frame_size)):
        raise ProfileError(f"{where}: frame_size must be [width, height] in pixels")
    name = data.get("name", Path(where).stem)
    return RegionProfile(str(name), regions, crop_size, text, tuple(frame_size) if frame_size else None)


def load_profile(name_or_path: str | Path) -> RegionProfile:
    """A shipped profile by name (``demo``) or a TOML file by path."""
    profiles = assets_dir() / "profiles"
    candidate = Path(name_or_path)
    if candidate.suffix != ".toml":
        shipped = profiles / f"{candidate}.toml"
        if shipped.is_file():
            candidate = shipped
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in profiles.glob("*.toml"))) or "none"
        raise ProfileError(f"profile {name_or_path}: no such file or shipped profile (shipped: {known})")
    try:
        text = candidate.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"profile {candidate}: cannot be read ({exc})") from None
    return parse_profile(text, str(candidate))


def profile_for(width: int, height: int) -> RegionProfile:
    """The shipped profile drawn for this frame size; for any other size the generic full-frame
    tiling (callers say so: never a camera's layout applied to another camera's footage)."""
    for path in sorted((assets_dir() / "profiles").glob("*.toml")):
        profile = load_profile(path)
        if profile.frame_size == (width, height):
            return profile
    return load_profile(GENERIC_PROFILE)


def video_profile(store: Store, video_id: int, given: RegionProfile | None = None) -> RegionProfile:
    """The profile a video's crops are named by: the one given, else the one its last scan used,
    else the shipped one drawn for its frame size (examples and anomaly models refer to it)."""
    if given is not None:
        return given
    for scan in reversed(store.scans()):
        if scan.video_id == video_id:
            return parse_profile(scan.profile_text, f"profile of scan {scan.id}")
    video = store.video(video_id)
    return profile_for(video.width, video.height)
