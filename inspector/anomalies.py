"""A project's anomaly models: fitted from normal frames of a region, used by every scan, shown as
heatmaps. One function per job, shared by the CLI and the desktop app."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from inspector.anomaly import DEFAULT_BANK_SIZE, DEFAULT_FALSE_ALARM_RATE, AnomalyFitError, AnomalyModel, fit_anomaly
from inspector.backbone import Backbone
from inspector.errors import InspectorError
from inspector.examples import crop_box, read_examples
from inspector.regions import CropSpec, RegionProfile, crop_frame, crop_planes, video_profile
from inspector.store import Store
from inspector.video import VideoReader

MAX_FIT_FRAMES = 400  # a longer stretch of normal video is sampled evenly down to this many frames


class AnomalyError(InspectorError):
    """An anomaly model that cannot be fitted or used as asked."""


@dataclass(frozen=True)
class AnomalyFit:
    version: int
    model: AnomalyModel
    frames: int
    seconds: float


def region_specs(profile: RegionProfile, region: str) -> list[CropSpec]:
    """The crops of one region of a profile (every tile of a tiled region)."""
    specs = [s for s in profile.crop_specs() if s.region == region]
    if not specs:
        known = ", ".join(dict.fromkeys(s.region for s in profile.crop_specs()))
        raise AnomalyError(f"no region {region!r} in profile {profile.name} (regions: {known}); pick one of those")
    return specs


def normal_crops_from_video(store: Store, video: Path, first: int, last: int, region: str, size: int,
                            profile: RegionProfile | None = None) -> tuple[np.ndarray, int]:
    """The region's crops of frames ``first``..``last`` (sampled evenly down to ``MAX_FIT_FRAMES``),
    in time order; returns them and the number of frames read."""
    with VideoReader(video) as reader:
        count = reader.info.frame_count
        if not 0 <= first <= last or first >= count:
            raise AnomalyError(f"frames {first}-{last} are not in {video.name} (frames 0-{count - 1}); "
                               "give a range of normal frames inside the video")
        last = min(last, count - 1)
        specs = region_specs(video_profile(store, store.add_video(reader.info).id, profile), region)
        step = max(1, (last - first + 1) // MAX_FIT_FRAMES)
        crops, frames = [], 0
        for frame in reader.planes(start=first, step=step, stop=last + 1):  # as the scan crops them
            crops.append(crop_planes(frame, specs, size))
            frames += 1
    if not crops:
        raise AnomalyError(f"no frame of {video.name} between {first} and {last} could be decoded")
    return np.concatenate(crops), frames


def normal_crops_from_examples(store: Store, path: Path, region: str, size: int,
                               profile: RegionProfile | None = None) -> np.ndarray:
    """The crops an examples file names (CSV or labelme; every row is taken as normal), in file order."""
    crops = []
    readers: dict[Path, VideoReader] = {}  # one per video, however many rows name it
    try:
        for ex in read_examples(path):
            where = f"{path.name} example {ex.row}"
            try:
                if ex.image is not None:
                    image = cv2.imread(str(ex.image), cv2.IMREAD_COLOR)
                    if image is None:
                        raise AnomalyError(f"{where}: picture {ex.image} cannot be read")
                    crops.append(crop_box(image, ex.box, size))
                    continue
                if ex.video not in readers:
                    readers[ex.video] = VideoReader(ex.video)
                reader = readers[ex.video]
                image = reader.read_frame(ex.frame).image
                if ex.box is not None:
                    crops.append(crop_box(image, ex.box, size))
                    continue
                specs = {s.name: s for s in region_specs(video_profile(store, store.add_video(reader.info).id,
                                                                       profile), region)}
                if ex.crop not in specs and ex.crop != region:
                    raise AnomalyError(f"{where}: {ex.crop!r} is not a crop of region {region!r} "
                                       f"({', '.join(specs)})")
                chosen = [specs[ex.crop]] if ex.crop in specs else list(specs.values())
                crops.append(crop_frame(image, chosen, size))
            except ValueError as exc:
                raise AnomalyError(f"{where}: {exc}") from None
    finally:
        for reader in readers.values():
            reader.close()
    return np.concatenate([c if c.ndim == 4 else c[None] for c in crops])


def fit_region(store: Store, backbone: Backbone, region: str, crops: np.ndarray, frames: int, source: str,
               bank_size: int = DEFAULT_BANK_SIZE,
               false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> AnomalyFit:
    """Fit and store a region's anomaly model from its normal crops (time order), active at once."""
    started = time.perf_counter()
    if not backbone.has_patches:
        raise AnomalyError(f"bundle {backbone.bundle.name} has no patch features, so no anomaly mode; add them with "
                           "'python -m training add-patch-features' or use the shipped bundle")
    _, patches = backbone.embed_patches(crops)
    try:
        model = fit_anomaly(patches, region, backbone.bundle.digest, bank_size, false_alarm_rate)
    except AnomalyFitError as exc:
        raise AnomalyError(str(exc)) from None
    note = f"{len(crops)} normal crops of {frames} frames from {source}; threshold at {model.threshold_basis(false_alarm_rate)}"
    version = store.save_anomaly_model(model, note)
    return AnomalyFit(version, replace(model, version=version), frames, time.perf_counter() - started)


class AnomalyExplainer:
    """Why a crop is an anomaly: its map against the active model of its region, drawn over the
    crop. The report's thumbnails and the app's review panel use it alike."""

    def __init__(self, backbone: Backbone, models: dict[str, AnomalyModel]) -> None:
        self.backbone = backbone
        self.models = models

    @classmethod
    def for_project(cls, store: Store, backbone: Backbone) -> AnomalyExplainer | None:
        """With the project's active models for this backbone's bundle; None where there are none."""
        models = store.anomaly_models(backbone.bundle.digest) if backbone.has_patches else {}
        return cls(backbone, models) if models else None

    def relative_map(self, region: str, crop_bgr: np.ndarray) -> np.ndarray | None:
        """G x G patch distances over the alarm threshold (above 1: beyond normal); None where the
        region has no model."""
        model = self.models.get(region)
        if model is None:
            return None
        size = self.backbone.bundle.input_size
        crop = crop_box(crop_bgr, (0, 0, crop_bgr.shape[1], crop_bgr.shape[0]), size)
        _, patches = self.backbone.embed_patches(crop[None])
        return model.score(patches).maps[0] / model.threshold

    def overlay(self, region: str, crop_bgr: np.ndarray) -> np.ndarray | None:
        relative = self.relative_map(region, crop_bgr)
        return None if relative is None else heatmap_overlay(crop_bgr, relative)


def heatmap_overlay(image_bgr: np.ndarray, relative_map: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The anomaly map (distance / alarm threshold per patch) over a picture: colour from blue
    (normal) to red (twice the threshold and more), blended where the map is above half the
    threshold so the normal parts stay readable."""
    height, width = image_bgr.shape[:2]
    level = np.clip(relative_map / 2, 0, 1).astype(np.float32)
    level = cv2.resize(level, (width, height), interpolation=cv2.INTER_CUBIC)
    colours = cv2.applyColorMap((np.clip(level, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    weight = (alpha * np.clip((level - 0.25) * 4, 0, 1))[..., None]
    return (image_bgr * (1 - weight) + colours * weight).astype(np.uint8)
