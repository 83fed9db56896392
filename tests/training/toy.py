"""A toy task family for the training tests: stripe orientation, random colours and phase."""
from __future__ import annotations

import numpy as np

from training.episodes import TaskPool

ORIENTATIONS = {"horizontal": (0, 1), "vertical": (1, 0), "diagonal": (1, 1), "antidiagonal": (1, -1)}


def stripes(orientation: str, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    ax, ay = ORIENTATIONS[orientation]
    y, x = np.mgrid[0:size, 0:size]
    period = rng.uniform(6, 10)
    wave = np.sin(2 * np.pi * (ax * x + ay * y) / period + rng.uniform(0, 2 * np.pi)) > 0
    fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    image = np.where(wave[..., None], fg, bg) + rng.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def toy_pool(per_class: int = 30, seed: int = 0, size: int = 32) -> TaskPool:
    rng = np.random.default_rng(seed)
    images = {"stripes": [(stripes(name, rng), name) for name in ORIENTATIONS for _ in range(per_class)]}
    return TaskPool([], size, images=images, seed=seed)
