"""Albumentations pipelines for training crops and the plain pipeline for evaluation."""
from __future__ import annotations

from functools import partial

import albumentations as A
import cv2
import numpy as np

from inspector.regions import shrink
from training.backbone import IMAGENET_MEAN, IMAGENET_STD


def load_rgb(path, short_side: int) -> np.ndarray:
    """Read an image as RGB uint8, resized so its shorter side is ``short_side``."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def train_pipeline(size: int) -> A.Compose:
    return A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=(0.45, 1.0), ratio=(0.75, 1.33)),
        A.HorizontalFlip(),
        A.VerticalFlip(p=0.2),
        A.Affine(rotate=(-15, 15), p=0.3),
        A.RandomBrightnessContrast(0.25, 0.25, p=0.7),
        A.HueSaturationValue(8, 15, 10, p=0.3),
        A.ToGray(p=0.1),
        A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


def _shrink(image: np.ndarray, size: int, **_: object) -> np.ndarray:
    return shrink(image, size)


def eval_pipeline(size: int) -> A.Compose:
    """Resize straight to the input size: the runtime's crops are resized the same way."""
    return A.Compose([
        A.Lambda(image=partial(_shrink, size=size)),
        A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])
