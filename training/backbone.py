"""The embedding network: torchvision's ResNet18 without its classifier.

``forward_features`` maps images to pooled embeddings (what the ONNX backbone exports);
``forward_head`` applies the optional linear classifier used by supervised pre-training.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from inspector.bundle import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (the bundle's normalisation, re-exported)

EMBEDDING_SIZE = 512


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


def embedding_net(init_from: Path | None = None, calibration: torch.Tensor | None = None) -> EmbeddingNet:
    """A fresh embedding network, or one that starts where an earlier stage ended: a checkpoint's
    trunk (its ``model``; a pre-training classifier in it is left behind), or a model bundle folder
    (the weights read back from its ONNX, ``training.from_onnx``; ``calibration`` images re-create
    its BatchNorm statistics, without them BatchNorm is exact only with frozen statistics)."""
    if init_from is None:
        return EmbeddingNet()
    init_from = Path(init_from)
    if init_from.is_dir():
        from inspector.bundle import load_bundle
        from training.from_onnx import net_from_onnx

        bundle = load_bundle(init_from)
        return net_from_onnx(bundle.backbones.get("fp32") or bundle.backbones["int8"], calibration)
    net = EmbeddingNet()
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
