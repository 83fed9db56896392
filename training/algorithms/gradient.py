"""MAML (second order), first-order MAML and ANIL, all on ``torch.func.functional_call``.

The head is the deployed one (``training.algorithms.head``) with MAML++-style learned per-step
step sizes (``learn_step_sizes``) and a learned logit scale. ANIL adapts only the head in the inner loop; MAML and
first-order MAML also adapt trunk weights (``adapt_layers``: the last block by default, or all),
with their own learned per-step step sizes. At deployment the runtime adapts the head only.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from training.algorithms.base import Algorithm, MetaConfig, MetaLearner, accuracy
from training.algorithms.head import adapt_head, balanced_cross_entropy, head_logits
from training.backbone import EmbeddingNet
from training.episodes import Task


class GradientMetaLearner(MetaLearner):
    def __init__(self, net: EmbeddingNet, cfg: MetaConfig, algorithm: Algorithm) -> None:
        super().__init__(net, cfg)
        self.algorithm = algorithm
        learned = cfg.learn_step_sizes
        self.log_step_sizes = nn.Parameter(torch.full((cfg.inner_steps,), math.log(cfg.inner_lr)), learned)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale)))
        if algorithm is not Algorithm.ANIL:
            self.log_backbone_lrs = nn.Parameter(torch.full((cfg.inner_steps,), math.log(cfg.backbone_inner_lr)),
                                                 learned)
            self.adapted = [name for name, _ in net.trunk.named_parameters()
                            if cfg.adapt_layers == "all" or name.startswith(cfg.adapt_layers)]

    @property
    def first_order(self) -> bool:
        return self.algorithm is Algorithm.FOMAML

    def outer_loss(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.log_logit_scale.exp()
        steps = self.log_step_sizes.exp()
        if self.algorithm is Algorithm.ANIL:
            features = self.features(torch.cat([task.support_x, task.query_x]))
            support, query = features[: len(task.support_y)], features[len(task.support_y):]
            weight, bias, center = adapt_head(support, task.support_y, task.way, steps, scale, create_graph=True)
        else:
            weight, bias, center, query = self._adapt_all(task, steps, scale)
        logits = head_logits(query, weight, bias, center, scale)
        return nn.functional.cross_entropy(logits, task.query_y), accuracy(logits, task.query_y)

    def _adapt_all(self, task: Task, steps: torch.Tensor, scale: torch.Tensor):
        """Inner loop over trunk weights and head together; second order unless first-order MAML."""
        params = dict(self.net.trunk.named_parameters())
        trunk_lrs = self.log_backbone_lrs.exp()
        weight = bias = None
        for step in range(self.cfg.inner_steps):
            support = self.features(task.support_x, params)
            if weight is None:
                weight = support.new_zeros(task.way, support.shape[1]).requires_grad_()
                bias = support.new_zeros(task.way).requires_grad_()
            center = support.mean(dim=0)
            loss = balanced_cross_entropy(head_logits(support, weight, bias, center, scale), task.support_y, task.way)
            grads = torch.autograd.grad(loss, [params[n] for n in self.adapted] + [weight, bias],
                                        create_graph=not self.first_order, allow_unused=True)
            if self.first_order:
                grads = [None if g is None else g.detach() for g in grads]
            for name, grad in zip(self.adapted, grads):
                if grad is not None:
                    params[name] = params[name] - trunk_lrs[step] * grad
            weight = weight - steps[step] * grads[-2]
            bias = bias - steps[step] * grads[-1]
        # The queries are centred as the head was fitted: on the last inner step's support mean.
        # (Re-embedding the support set with the adapted weights would cost half again as much
        # time and memory in the second-order graph, for a centre the head never trained on.)
        # First order: the inner loop's graph is gone, so the centre is a constant like its gradients.
        return weight, bias, center.detach() if self.first_order else center, self.features(task.query_x, params)

    def adaptation(self) -> dict:
        return {"algorithm": self.algorithm.value, "inner_steps": self.cfg.inner_steps,
                "step_sizes": [round(float(v), 6) for v in self.log_step_sizes.detach().exp()],
                "logit_scale": round(float(self.log_logit_scale.detach().exp()), 6), "weight_decay": 0.0}
