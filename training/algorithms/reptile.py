"""Reptile: adapt a copy of the weights with plain SGD on a task, then move the weights toward it.

The meta-gradient put into ``.grad`` is (weights - adapted weights), averaged over the tasks of a
batch; the outer optimiser applies it. Inner loop on the trunk layers named by ``adapt_layers``
and the deployed head, on the task's support and query images together.
"""
from __future__ import annotations

import torch
from torch import nn

from training.algorithms.base import MetaConfig, MetaLearner, accuracy
from training.algorithms.head import balanced_cross_entropy, head_logits
from training.backbone import EmbeddingNet
from training.episodes import Task


class Reptile(MetaLearner):
    def __init__(self, net: EmbeddingNet, cfg: MetaConfig) -> None:
        super().__init__(net, cfg)
        self.adapted = [name for name, _ in net.trunk.named_parameters()
                        if cfg.adapt_layers == "all" or name.startswith(cfg.adapt_layers)]

    def _adapt(self, task: Task, with_query: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor,
                                                              torch.Tensor]:
        """Inner SGD on the support images (and the query ones too for the meta-update, as Reptile
        learns from all of a task's data; never when the query accuracy is to be measured)."""
        params = {name: p.detach().clone().requires_grad_(name in self.adapted)
                  for name, p in self.net.trunk.named_parameters()}
        x = torch.cat([task.support_x, task.query_x]) if with_query else task.support_x
        y = torch.cat([task.support_y, task.query_y]) if with_query else task.support_y
        weight = bias = None
        scale = torch.tensor(self.cfg.logit_scale, device=x.device)
        for _ in range(self.cfg.inner_steps):
            features = self.features(x, params)
            if weight is None:
                weight = features.new_zeros(task.way, features.shape[1]).requires_grad_()
                bias = features.new_zeros(task.way).requires_grad_()
            center = features.mean(dim=0)
            loss = balanced_cross_entropy(head_logits(features, weight, bias, center, scale), y, task.way)
            grads = torch.autograd.grad(loss, [params[n] for n in self.adapted] + [weight, bias])
            with torch.no_grad():
                for name, grad in zip(self.adapted, grads):
                    params[name] -= self.cfg.backbone_inner_lr * grad
                weight = (weight - self.cfg.inner_lr * grads[-2]).requires_grad_(True)
                bias = (bias - self.cfg.inner_lr * grads[-1]).requires_grad_(True)
        return params, weight, bias, scale

    def outer_loss(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        params, weight, bias, scale = self._adapt(task, with_query=False)
        with torch.no_grad():
            support = self.features(task.support_x, params)
            logits = head_logits(self.features(task.query_x, params), weight, bias, support.mean(dim=0), scale)
        return nn.functional.cross_entropy(logits, task.query_y), accuracy(logits, task.query_y)

    def adaptation(self) -> dict:
        """Its own inner loop on the head, as trained (fixed step size: Reptile does not learn one)."""
        return {"algorithm": "reptile", "inner_steps": self.cfg.inner_steps, "step_sizes": [self.cfg.inner_lr] * self.cfg.inner_steps,
                "logit_scale": self.cfg.logit_scale, "weight_decay": 0.0}

    def meta_step(self, tasks: list[Task]) -> tuple[float, float]:
        trunk = dict(self.net.trunk.named_parameters())
        for name in self.adapted:
            trunk[name].grad = torch.zeros_like(trunk[name])
        losses, accuracies = [], []
        for task in tasks:
            params, *_ = self._adapt(task, with_query=True)
            for name in self.adapted:
                trunk[name].grad += (trunk[name].detach() - params[name]) / len(tasks)
            loss, acc = self.outer_loss(task)  # measured on a support-only adaptation
            losses.append(loss.item())
            accuracies.append(acc.item())
        return sum(losses) / len(losses), sum(accuracies) / len(accuracies)
