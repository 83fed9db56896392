"""The embedding network: torchvision's ResNet18 without its classifier.

``forward_features`` maps images to pooled embeddings (what the ONNX backbone exports);
``forward_head`` applies the optional linear classifier used by supervised pre-training.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

EMBEDDING_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EmbeddingNet(nn.Module):
    """ResNet18 trunk + global average pool -> 512-d embedding; optional linear head."""

    def __init__(self, num_classes: int = 0, imagenet_weights: bool = False) -> None:
        super().__init__()
        weights = ResNet18_Weights.IMAGENET1K_V1 if imagenet_weights else None
        trunk = resnet18(weights=weights)
        trunk.fc = nn.Identity()
        self.trunk = trunk
        self.head = nn.Linear(EMBEDDING_SIZE, num_classes) if num_classes else nn.Identity()

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))


def embedding_net(init_from: Path | None = None) -> EmbeddingNet:
    """A fresh embedding network, its trunk taken from a checkpoint's ``model`` when given (a
    pre-training classifier in that checkpoint is left behind): how every later stage starts."""
    net = EmbeddingNet()
    if init_from is not None:
        state = torch.load(init_from, map_location="cpu", weights_only=True)
        net.trunk.load_state_dict({k.removeprefix("trunk."): v for k, v in state["model"].items()
                                   if k.startswith("trunk.")})
    return net


class FeatureExtractor(nn.Module):
    """What the bundle exports: images in, embeddings out (no classifier)."""

    def __init__(self, net: EmbeddingNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(images)
