"""``python -m training evaluate``: the standard few-shot protocol on a trained checkpoint, in torch.

Independent of the runtime on purpose: embeddings come from the torch model in fp32 (not the ONNX
int8 file), and the head's inner loop is meta-training's own (``training.algorithms.head``), its
gradient from autograd (not the hand-derived NumPy gradient of ``inspector.adapt``). Only the episodes are shared (the same seeded sampler), so
``inspector evaluate-fewshot`` on the exported bundle must agree within the confidence interval:
if it does not, export or the runtime is wrong.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from inspector.bundle import AdaptationParams, Preprocessing
from inspector.fewshot import FewShotResult, Item, class_scores, held_out, load_crop, load_items, sample_episodes
from training.algorithms.head import adapt_head, head_logits
from training.backbone import EmbeddingNet, net_from_checkpoint

log = logging.getLogger(__name__)


def load_model(checkpoint: Path) -> tuple[EmbeddingNet, int]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return net_from_checkpoint(state).eval(), int(state.get("input_size", 128))


@torch.no_grad()
def embed(net: EmbeddingNet, items: list[Item], size: int, batch: int = 64) -> torch.Tensor:
    preprocessing = Preprocessing(size)
    device = next(net.parameters()).device
    parts = []
    for start in range(0, len(items), batch):
        crops = np.stack([load_crop(i.path, size) for i in items[start:start + batch]])
        x = torch.from_numpy(preprocessing.normalise(crops)).to(device)
        parts.append(net.forward_features(x).double().cpu())
    return torch.cat(parts)


def checkpoint_adaptation(checkpoint: Path) -> AdaptationParams | None:
    """The inner loop a meta-trained checkpoint learned; None when it has none (pre-training, the
    metric learners): the caller then picks the schedule to evaluate it with."""
    learned = torch.load(checkpoint, map_location="cpu", weights_only=True).get("adaptation")
    return AdaptationParams.from_json(learned, str(checkpoint)) if learned else None


def evaluate_checkpoint(checkpoint: Path, dataset: Path, way: int, shot: int, queries: int, episodes: int,
                        params: AdaptationParams, seed: int = 0, holdout_groups: float | None = None,
                        group_column: str = "group", classes: list[str] | None = None,
                        split_seed: int = 0) -> FewShotResult:
    net, size = load_model(checkpoint)
    items = held_out(load_items(dataset, group_column), holdout_groups, None, split_seed, classes)
    return evaluate_embeddings(embed(net, items, size), [i.label for i in items], way, shot, queries, episodes,
                               params, seed)


def evaluate_embeddings(embeddings: torch.Tensor, labels: list[str], way: int, shot: int, queries: int,
                        episodes: int, params: AdaptationParams, seed: int = 0, chunk: int = 100) -> FewShotResult:
    """The protocol on embeddings computed once: seeded episodes, the deployed head adapted on
    each support set with ``params``, accuracy on its queries. Episodes are adapted ``chunk`` at
    a time as one batch (each its own head): the same numbers, an order of magnitude faster."""
    drawn = list(sample_episodes(labels, way, shot, queries, episodes, seed))
    steps = [params.step_size(k) for k in range(params.inner_steps)]
    accuracies = []
    outcomes: list[tuple[str, str]] = []
    for start in range(0, len(drawn), chunk):
        batch = drawn[start:start + chunk]
        device = embeddings.device
        support = torch.tensor([e.support for e in batch], device=device)
        query = torch.tensor([e.query for e in batch], device=device)
        targets = torch.tensor([[e.classes.index(labels[i]) for i in e.support] for e in batch], device=device)
        weight, bias, center = adapt_head(
            embeddings[support], targets, way, steps,
            torch.tensor(params.logit_scale, dtype=embeddings.dtype, device=device),
            create_graph=False, weight_decay=params.weight_decay, init_weight_scale=params.init_weight_scale,
            init_bias=params.init_bias)
        scores = head_logits(embeddings[query], weight.detach(), bias.detach(), center, params.logit_scale)
        for episode, best in zip(batch, scores.argmax(dim=-1).tolist()):
            predicted = [episode.classes[k] for k in best]
            truth = [labels[i] for i in episode.query]
            accuracies.append(np.mean([p == t for p, t in zip(predicted, truth)]))
            outcomes += zip(predicted, truth)
    return FewShotResult(way, shot, queries, episodes, np.asarray(accuracies, float), class_scores(outcomes))


def write_result(result: FewShotResult, out: Path | None, extra: dict) -> str:
    line = json.dumps({**result.as_json(), **extra})
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(line + "\n")
    return line
