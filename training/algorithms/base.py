"""What every meta-learning algorithm offers the training loop."""
from __future__ import annotations

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
        if params is None:
            return self.net.forward_features(x)
        return functional_call(self.net.trunk, params, (x,))

    @abstractmethod
    def outer_loss(self, task: Task) -> tuple[torch.Tensor, float]:
        """One task's query loss after adaptation, and the query accuracy."""

    def meta_step(self, tasks: list[Task]) -> tuple[float, float]:
        """Put the meta-gradient of a batch of tasks into ``.grad`` (the loop then steps the
        optimiser); returns mean loss and accuracy."""
        losses, accuracies = zip(*(self.outer_loss(task) for task in tasks))
        loss = torch.stack(losses).mean()
        loss.backward()
        return loss.item(), sum(accuracies) / len(accuracies)

    def adaptation(self) -> dict | None:
        """The inner loop the runtime should replay (bundle.json ``adaptation``); None for a learner
        without a head inner loop of its own (the metric learners): export then uses the default one."""
        return None


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == targets).float().mean().item()
