"""Recover a trainable ResNet18 from a bundle's exported backbone (fp32 or int8 QDQ ONNX).

The bundle is the one trained artefact kept in git; checkpoints live in ``runs/`` and may be gone
in the next session. Export folds each BatchNorm into its convolution (and int8 quantises the
weights), so the weights are read back per convolution (dequantised), and each BatchNorm is then
re-created from the statistics of its convolution's output on calibration images: running mean
and variance as measured, scale and shift set so that the eval-mode network computes exactly the
bundle's function (up to int8 rounding), while in training mode the batch statistics land near the
running ones, so a warm start does not begin with a jolt.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.backbone import LAST_STAGE, EmbeddingNet
from training.patch_features import PATCH_OUTPUT


def _onnx_convolutions(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per convolution (torchvision module name, e.g. ``layer2.0.downsample.0``): weight and bias
    as float32, dequantised when the graph is QDQ."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}

    def value(name: str) -> np.ndarray:
        if name in constants:
            return constants[name].astype(np.float32)
        node = producers[name]
        if node.op_type != "DequantizeLinear":
            raise ValueError(f"{path.name}: convolution input {name} is neither a constant nor dequantised")
        q, scale = constants[node.input[0]].astype(np.float32), constants[node.input[1]].astype(np.float32)
        zero = constants[node.input[2]].astype(np.float32) if len(node.input) > 2 else np.zeros_like(scale)
        shape = (-1,) + (1,) * (q.ndim - 1) if scale.ndim == 1 and q.ndim > 1 else scale.shape
        return (q - zero.reshape(shape)) * scale.reshape(shape)

    convs = {}
    for node in graph.node:
        if node.op_type != "Conv" or node.name.startswith(f"/{PATCH_OUTPUT}/"):
            continue  # anomaly mode's hint projectors sit on the trunk's maps; they are not the trunk
        # /trunk/layer2/layer2.0/downsample/downsample.0/Conv; no /trunk when the embedding pools several stages
        scopes = [p for p in node.name.split("/") if p][:-1]
        if not scopes or len(node.input) < 3:
            raise ValueError(f"{path.name}: unexpected convolution {node.name!r}; not a backbone exported by training")
        qualified: list[str] = []
        for scope in scopes[scopes.index("trunk") + 1 if "trunk" in scopes else 0:]:
            # each scope repeats its parent's name: layer2 / layer2.0 -> layer2.0
            if qualified and scope.startswith(qualified[-1] + "."):
                qualified[-1] = scope
            else:
                qualified.append(scope)
        convs[".".join(qualified)] = (value(node.input[1]), value(node.input[2]))
    return convs


def _batchnorm_of(conv: str) -> str:
    """torchvision's ResNet: conv1 -> bn1, layerX.Y.conv2 -> layerX.Y.bn2, ...downsample.0 -> ...downsample.1."""
    if conv.endswith("downsample.0"):
        return conv[:-1] + "1"
    head, _, leaf = conv.rpartition(".")
    return (head + "." if head else "") + leaf.replace("conv", "bn")


def net_from_onnx(path: Path | str, calibration: torch.Tensor | None = None,
                  pooled: tuple[str, ...] = LAST_STAGE, gem_power: float = 1.0) -> EmbeddingNet:
    """A ResNet18 embedding net computing what the ONNX backbone at ``path`` computes.

    ``calibration``: normalised images (N x 3 x S x S, a few dozen of the kind it will train on)
    from which each BatchNorm's statistics are measured. Without them each BatchNorm is an identity
    plus the folded bias: exact in eval mode (frozen statistics), not fit for training its statistics."""
    path = Path(path)
    convs = _onnx_convolutions(path)
    net = EmbeddingNet(pooled=pooled, gem_power=gem_power).eval()
    trunk = net.trunk
    modules = dict(trunk.named_modules())
    expected = {name for name, m in modules.items() if isinstance(m, nn.Conv2d)}
    if set(convs) != expected:
        raise ValueError(f"{path.name}: its convolutions are not a ResNet18's (missing {sorted(expected - set(convs))[:3]})")
    with torch.no_grad():
        for name, (weight, bias) in convs.items():
            modules[name].weight.copy_(torch.from_numpy(weight))
            bn = modules[_batchnorm_of(name)]
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(bias))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # identity: eval computes conv(x) + bias, as the ONNX graph
        if calibration is None:
            return net
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        hooks = [modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: stats.__setitem__(name, (out.mean((0, 2, 3)), out.var((0, 2, 3)))))
            for name in convs]
        reference = net.forward_features(calibration)
        for hook in hooks:
            hook.remove()
        for name, (mean, var) in stats.items():
            bn = modules[_batchnorm_of(name)]
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_((var + bn.eps).sqrt())
            bn.bias.add_(mean)
        recovered = net.forward_features(calibration)
    if not torch.allclose(recovered, reference, rtol=1e-3, atol=1e-3 * float(reference.abs().max())):
        raise ValueError(f"{path.name}: the recovered network does not reproduce the ONNX graph")
    return net
