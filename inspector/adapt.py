"""Few-shot adaptation: the MAML inner loop, restricted to the head, in NumPy.

The backbone was meta-trained so that a few gradient steps on a linear softmax head over its
L2-normalised embeddings, from a class-agnostic initialisation (every class starts with the same
weights, so any number of classes works), give a good classifier. The bundle carries those
meta-learned steps, per-step step sizes and the initialisation; this module replays them.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inspector.heads import Head, l2_normalise, softmax
from inspector.model import AdaptationParams


def inner_loop(features: np.ndarray, targets: np.ndarray, num_classes: int, params: AdaptationParams,
               steps: int | None = None, step_size: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gradient descent on the mean cross-entropy of ``scale * (W x + b)``; x L2-normalised.

    ``steps``/``step_size`` override the meta-learned schedule (used for fitting a base head on
    many examples); by default the bundle's schedule is replayed exactly.
    """
    x = l2_normalise(features.astype(np.float64))
    n, dim = x.shape
    weight = np.full((num_classes, dim), params.init_weight_scale / np.sqrt(dim))
    bias = np.full(num_classes, params.init_bias)
    onehot = np.eye(num_classes)[targets]
    total = steps if steps is not None else params.inner_steps
    for step in range(total):
        probs = softmax(params.logit_scale * (x @ weight.T + bias))
        error = (probs - onehot) * (params.logit_scale / n)
        lr = step_size if step_size is not None else params.step_size(min(step, params.inner_steps - 1))
        weight -= lr * (error.T @ x + params.weight_decay * weight)
        bias -= lr * error.sum(axis=0)
    return weight.astype(np.float32), bias.astype(np.float32)


def fit_head(embeddings: np.ndarray, labels: Sequence[str], classes: Sequence[str],
             normal: Sequence[bool], params: AdaptationParams,
             regions: Sequence[Sequence[str]] = (), threshold: float = 0.5,
             steps: int | None = None, step_size: float | None = None, version: int = 1) -> Head:
    """A head over ``classes`` from labelled embeddings (every class needs an example)."""
    index = {name: i for i, name in enumerate(classes)}
    missing = set(classes) - set(labels)
    if missing:
        raise ValueError(f"no examples for {sorted(missing)}")
    targets = np.array([index[label] for label in labels])
    weight, bias = inner_loop(embeddings, targets, len(classes), params, steps, step_size)
    return Head(tuple(classes), weight, bias, tuple(bool(v) for v in normal),
                tuple(tuple(r) for r in regions), threshold, params.logit_scale, version)
