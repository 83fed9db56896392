"""The deployed head, differentiable: what ``inspector.adapt`` replays, written in torch so that
meta-training can learn through it.

Features are centred on the support mean and L2-normalised; the head starts at zero for every
class (one initialisation for any number of classes) and takes ``len(step_sizes)`` gradient steps
on the class-balanced cross-entropy of ``logit_scale * (W x + b)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def balanced_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each class weighs the same whatever its count; summed over any leading (episode) dimensions,
    so each episode's gradient is its own."""
    onehot = F.one_hot(targets, num_classes).to(logits.dtype)
    counts = onehot.sum(dim=-2, keepdim=True)
    present = (counts > 0).sum(dim=-1, keepdim=True)
    weights = 1.0 / ((onehot * counts).sum(dim=-1) * present.squeeze(-1))
    nll = -(F.log_softmax(logits, dim=-1) * onehot).sum(dim=-1)
    return (nll * weights).sum()


def adapt_head(support: torch.Tensor, targets: torch.Tensor, num_classes: int, step_sizes: torch.Tensor,
               logit_scale: torch.Tensor, create_graph: bool, weight_decay: float = 0.0,
               init_weight_scale: float = 0.0, init_bias: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (weight, bias, centre); with ``create_graph`` the result stays differentiable with
    respect to the support features, the step sizes and the logit scale (second order). The
    optional terms are those of a bundle's ``adaptation`` (``inspector.bundle.AdaptationParams``).
    ``support`` may carry leading episode dimensions (E x n x D, targets E x n): the episodes are
    adapted together, each on its own."""
    center = support.mean(dim=-2)
    x = F.normalize(support - center.unsqueeze(-2), dim=-1)
    batch = x.shape[:-2]
    weight = torch.full((*batch, num_classes, x.shape[-1]), init_weight_scale / x.shape[-1] ** 0.5, dtype=x.dtype,
                        device=x.device, requires_grad=True)
    bias = torch.full((*batch, num_classes), init_bias, dtype=x.dtype, device=x.device, requires_grad=True)
    for lr in step_sizes:
        loss = balanced_cross_entropy(_scaled_linear(x, weight, bias, logit_scale), targets, num_classes)
        grad_w, grad_b = torch.autograd.grad(loss, (weight, bias), create_graph=create_graph)
        if not create_graph:  # plain gradient steps: keep only the graph of the next step
            weight, bias = weight.detach().requires_grad_(), bias.detach().requires_grad_()
        weight = weight - lr * (grad_w + weight_decay * weight)
        bias = bias - lr * grad_b
    return weight, bias, center


def head_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, center: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
    return _scaled_linear(F.normalize(features - center.unsqueeze(-2), dim=-1), weight, bias, logit_scale)


def _scaled_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, logit_scale) -> torch.Tensor:
    """``logit_scale * (W x + b)`` over any leading episode dimensions."""
    return logit_scale * (x @ weight.transpose(-1, -2) + bias.unsqueeze(-2))
