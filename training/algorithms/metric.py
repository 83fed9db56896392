"""Metric-based learners: Prototypical Networks and Matching Networks (no inner loop).

Prototypical: a query's logits are minus its (scaled) squared Euclidean distances to the class
means of the support embeddings. Matching (the attention kernel, without the full-context LSTMs): a query's
class probabilities are the softmax-of-cosine-similarity weighted vote of the support labels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.algorithms.base import MetaConfig, MetaLearner, accuracy
from training.backbone import EmbeddingNet
from training.episodes import Task


def _split(learner: MetaLearner, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    features = learner.features(torch.cat([task.support_x, task.query_x]))
    return features[: len(task.support_y)], features[len(task.support_y):]


class PrototypicalNetwork(MetaLearner):
    """Squared Euclidean distance per embedding dimension, times a learned scale (metric scaling,
    as in TADAM): unscaled distances over 512 dimensions saturate the softmax from the start."""

    def __init__(self, net: EmbeddingNet, cfg: MetaConfig) -> None:
        super().__init__(net, cfg)
        self.log_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale)))

    def outer_loss(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        support, query = _split(self, task)
        onehot = F.one_hot(task.support_y, task.way).to(support.dtype)  # class means without data-dependent indexing
        prototypes = (onehot.T @ support) / onehot.sum(dim=0).unsqueeze(1)
        logits = -self.log_scale.exp() * torch.cdist(query, prototypes).pow(2) / support.shape[1]
        return F.cross_entropy(logits, task.query_y), accuracy(logits, task.query_y)


class MatchingNetwork(MetaLearner):
    """The class probability is the attention mass on that class's support examples; its log is
    taken in log space (log-sum-exp of the class's attention logits minus that of all), so a query
    that is confidently wrong still gets a gradient (a clamped ``log(probs)`` gives it none)."""

    def __init__(self, net: EmbeddingNet, cfg: MetaConfig) -> None:
        super().__init__(net, cfg)
        self.log_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale)))

    def outer_loss(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        support, query = _split(self, task)
        logits = self.log_scale.exp() * F.normalize(query, dim=1) @ F.normalize(support, dim=1).T
        onehot = F.one_hot(task.support_y, task.way).to(torch.bool)
        per_class = logits.unsqueeze(2).masked_fill(~onehot.unsqueeze(0), float("-inf")).logsumexp(dim=1)
        log_probs = per_class - logits.logsumexp(dim=1, keepdim=True)
        return F.nll_loss(log_probs, task.query_y), accuracy(log_probs, task.query_y)
