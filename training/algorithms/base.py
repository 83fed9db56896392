"""What every meta-learning algorithm offers the training loop."""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn
from torch.func import functional_call

from training.backbone import EmbeddingNet
from training.episodes import Task


class Algorithm(StrEnum):
    MAML = "maml"
    FOMAML = "fomaml"
    ANIL = "anil"
    REPTILE = "reptile"
    PROTONET = "protonet"
    MATCHING = "matching"


@dataclass
class MetaConfig:
    inner_steps: int = 5
    inner_lr: float = 0.5  # initial head step size (learned per step by MAML/FOMAML/ANIL)
    backbone_inner_lr: float = 0.01  # MAML/FOMAML/Reptile step size on backbone weights
    adapt_layers: str = "layer4"  # which trunk layers MAML/FOMAML adapt in the inner loop: all | layer4
    logit_scale: float = 10.0
    # MAML++: learn a step size per inner step (head and backbone). False keeps them fixed, as in
    # plain MAML; the meta-step then keeps no copy of the inner gradients for the backward pass.
    learn_step_sizes: bool = True
    # BatchNorm in the trunk: "frozen" running statistics (needs a pre-trained backbone; matches the
    # exported model exactly) or "batch", each task's own statistics (for training from scratch).
    batchnorm: str = "frozen"
    # "bf16": the trunk runs under bfloat16 autocast (AMX on recent Xeons, tensor cores on GPUs;
    # 2-2.5x on the 2-core CPU); the head's inner loop stays in float32.
    precision: str = "fp32"


class MetaLearner(nn.Module, ABC):
    """Holds the backbone and the algorithm's meta-parameters; ``outer_loss`` is one task's loss
    after adaptation (what the outer optimiser minimises) and its query accuracy.

    With ``batchnorm = "frozen"`` the trunk runs with frozen BatchNorm statistics (eval mode),
    exactly as the exported model classifies one crop at a time; its affine parameters still learn.
    """

    def __init__(self, net: EmbeddingNet, cfg: MetaConfig) -> None:
        super().__init__()
        self.net = net
        self.cfg = cfg

    def train(self, mode: bool = True) -> MetaLearner:
        super().train(mode)
        if self.cfg.batchnorm == "frozen":
            self.net.trunk.eval()  # see the class docstring
        return self

    def features(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with low_precision(x.device, self.cfg.precision):
            if params is None:
                out = self.net.forward_features(x)
            else:  # adapted trunk weights, through the whole embedding (the stages it pools included)
                trunk = {f"trunk.{name}": value for name, value in params.items()}
                out = functional_call(self.net, trunk, (x,), strict=False)
        return out.float()

    @abstractmethod
    def outer_loss(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """One task's query loss after adaptation, and the query accuracy (a detached scalar tensor
        on the task's device: no host synchronisation inside the step)."""

    def meta_step(self, tasks: list[Task]) -> tuple[float, float]:
        """Put the meta-gradient of a batch of tasks into ``.grad`` (the loop then steps the
        optimiser); returns mean loss and accuracy."""
        losses, accuracies = zip(*(self.outer_loss(task) for task in tasks))
        loss = torch.stack(losses).mean()
        loss.backward()
        return loss.item(), torch.stack(accuracies).mean().item()

    def adaptation(self) -> dict | None:
        """The inner loop the runtime should replay (bundle.json ``adaptation``); None for a learner
        without a head inner loop of its own (the metric learners): export then uses the default one."""
        return None


def low_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``precision == "bf16"``, else nothing (also on devices autocast lacks)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == targets).float().mean().detach()
