"""The embedding network: torchvision's ResNet18 without its classifier.

``forward_features`` maps images to pooled embeddings (what the ONNX backbone exports);
``forward_head`` applies the optional linear classifier used by supervised pre-training.

The embedding is the last stage's global average pool (512-d), or, with ``pooled`` naming several
stages, their pools each L2-normalised and concatenated (layer4 + layer3: 768-d): mid-level
features carry more of what tells textures and surface defects apart in domains the trunk never
saw (docs/model-card.md, "Stage 3 pooled beside stage 4"). ``gem_power`` above 1 makes each pool
a generalised mean (GeM, Radenovic et al. 2018: the mean of x^p, to the power 1/p), which leans
towards each channel's strongest responses: a fault is a small part of a crop, and a plain average
dilutes it among the normal surroundings (docs/model-card.md, "Generalised-mean pooling").
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from inspector.bundle import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (the bundle's normalisation, re-exported)

EMBEDDING_SIZE = 512  # the last stage's pool: ResNet18's own embedding
STAGE_WIDTHS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
LAST_STAGE = ("layer4",)
GEM_FLOOR = 1e-6  # activations are clamped to this before x^p, so the gradient and the root stay finite


def check_pooled(pooled: tuple[str, ...]) -> None:
    """Raise ValueError unless ``pooled`` names one or more trunk stages (a config is checked with
    it before training starts, the network when it is built)."""
    unknown = [stage for stage in pooled if stage not in STAGE_WIDTHS]
    if unknown or not pooled:
        raise ValueError(f"pooled stages must be among {', '.join(STAGE_WIDTHS)}, not {', '.join(unknown) or 'none'}")


def check_gem_power(power: float) -> None:
    """Raise ValueError unless ``power`` is a usable GeM exponent (1: the plain average)."""
    if not 1.0 <= power <= 16.0:
        raise ValueError(f"gem_power must be between 1 (the plain average) and 16, not {power}")


def gem(maps: torch.Tensor, power: float) -> torch.Tensor:
    """Per-channel generalised mean over the spatial positions (N x C x H x W -> N x C)."""
    if power == 1.0:
        return maps.mean(dim=(2, 3))
    return maps.clamp(min=GEM_FLOOR).pow(power).mean(dim=(2, 3)).pow(1.0 / power)


class EmbeddingNet(nn.Module):
    """ResNet18 trunk + global (generalised-mean) pool of the ``pooled`` stages -> embedding; optional
    linear head."""

    def __init__(self, num_classes: int = 0, imagenet_weights: bool = False,
                 pooled: tuple[str, ...] = LAST_STAGE, gem_power: float = 1.0) -> None:
        super().__init__()
        check_pooled(pooled)
        check_gem_power(gem_power)
        weights = ResNet18_Weights.IMAGENET1K_V1 if imagenet_weights else None
        trunk = resnet18(weights=weights)
        trunk.fc = nn.Identity()
        self.trunk = trunk
        self.pooled = tuple(pooled)
        self.gem_power = float(gem_power)
        self.embedding_size = sum(STAGE_WIDTHS[stage] for stage in self.pooled)
        self.head = nn.Linear(self.embedding_size, num_classes) if num_classes else nn.Identity()

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        if self.pooled == LAST_STAGE and self.gem_power == 1.0:
            return self.trunk(images)
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(images))))
        pools = {}
        for stage in STAGE_WIDTHS:
            x = getattr(t, stage)(x)
            if stage in self.pooled:
                pools[stage] = gem(x, self.gem_power)
            if len(pools) == len(self.pooled):
                break
        if len(pools) == 1:
            return pools[self.pooled[0]]
        return torch.cat([F.normalize(pools[stage], dim=1) for stage in self.pooled], dim=1)

    def describe_embedding(self) -> str:
        """How the embedding is pooled, for the bundle's provenance (``inspector bundle info``)."""
        pool = "pooled" if self.gem_power == 1.0 else f"GeM-pooled (p = {self.gem_power:g})"
        return " + ".join(self.pooled) + f" {pool}" + (", each L2-normalised" if len(self.pooled) > 1 else "")

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))


def net_from_checkpoint(state: dict) -> EmbeddingNet:
    """The network a training checkpoint's ``model`` holds (a pre-training classifier included),
    pooling the stages it was trained with, as it was trained."""
    net = EmbeddingNet(num_classes=len(state["labels"]), pooled=tuple(state.get("pooled", LAST_STAGE)),
                       gem_power=float(state.get("gem_power", 1.0)))
    net.load_state_dict(state["model"])
    return net


def embedding_net(init_from: Path | None = None, calibration: torch.Tensor | None = None,
                  pooled: tuple[str, ...] = LAST_STAGE, gem_power: float = 1.0) -> EmbeddingNet:
    """A fresh embedding network, or one that starts where an earlier stage ended: a checkpoint's
    trunk (its ``model``; a pre-training classifier in it is left behind), or a model bundle folder
    (the weights read back from its ONNX, ``training.from_onnx``; ``calibration`` images re-create
    its BatchNorm statistics, without them BatchNorm is exact only with frozen statistics).
    ``pooled``, ``gem_power``: how the embedding pools (the trunk's weights do not depend on it)."""
    if init_from is None:
        return EmbeddingNet(pooled=pooled, gem_power=gem_power)
    init_from = Path(init_from)
    if init_from.is_dir():
        from inspector.bundle import load_bundle
        from training.from_onnx import net_from_onnx

        bundle = load_bundle(init_from)
        return net_from_onnx(bundle.backbones.get("fp32") or bundle.backbones["int8"], calibration, pooled, gem_power)
    net = EmbeddingNet(pooled=pooled, gem_power=gem_power)
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
