"""N-way K-shot training tasks drawn from images held in memory.

A task comes from one source at a time (a rail set or Omniglot: classes of different sets are
never mixed in one task), with N classes, K support and Q query images each; N shrinks to the
classes a source has (sleeper has three). Seeded: the same seed draws the same tasks.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch

from training.augment import eval_pipeline, load_rgb, train_pipeline
from training.sources import Source


@dataclass
class Task:
    support_x: torch.Tensor  # N*K x 3 x S x S
    support_y: torch.Tensor  # N*K, labels 0..N-1
    query_x: torch.Tensor
    query_y: torch.Tensor
    way: int
    source: str

    def to(self, device: torch.device) -> Task:
        return Task(self.support_x.to(device), self.support_y.to(device), self.query_x.to(device),
                    self.query_y.to(device), self.way, self.source)


class TaskPool:
    """Images of several sources in memory, grouped by class, ready to be drawn into tasks."""

    def __init__(self, sources: list[Source], size: int, split: str = "train", weights: dict[str, float] | None = None,
                 augment: bool = True, images: dict[str, list[tuple[np.ndarray, str]]] | None = None,
                 seed: int = 0) -> None:
        self.size = size
        self._pipeline: A.Compose = train_pipeline(size) if augment else eval_pipeline(size)
        self._pipeline.set_random_seed(seed)
        self.by_source: dict[str, dict[str, list[np.ndarray]]] = {}
        if images is None:
            short = round(size * 1.15)
            images = {s.name: [(load_rgb(x.path, short), x.label) for x in getattr(s, split)] for s in sources}
        for name, items in images.items():
            classes: dict[str, list[np.ndarray]] = defaultdict(list)
            for image, label in items:
                classes[label].append(image)
            self.by_source[name] = dict(classes)
        names = list(self.by_source)
        raw = np.array([(weights or {}).get(n, 1.0) for n in names], float)
        self._names, self._weights = names, raw / raw.sum()

    def sample(self, rng: np.random.Generator, way: int, shot: int, queries: int) -> Task:
        source = self._names[rng.choice(len(self._names), p=self._weights)]
        classes = [c for c, imgs in self.by_source[source].items() if len(imgs) >= shot + queries]
        if len(classes) < 2:
            raise ValueError(f"{source}: fewer than two classes have {shot + queries} images")
        chosen = [classes[i] for i in rng.choice(len(classes), min(way, len(classes)), replace=False)]
        sx, sy, qx, qy = [], [], [], []
        for label, name in enumerate(chosen):
            pool = self.by_source[source][name]
            picks = rng.choice(len(pool), shot + queries, replace=False)
            for j, index in enumerate(picks):
                image = self._pipeline(image=pool[index])["image"]
                (sx if j < shot else qx).append(image)
                (sy if j < shot else qy).append(label)
        to_tensor = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return Task(to_tensor(sx), torch.tensor(sy), to_tensor(qx), torch.tensor(qy), len(chosen), source)
