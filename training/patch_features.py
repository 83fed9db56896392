"""Give an exported backbone a second output: the patch feature map of anomaly mode (issue 15).

PatchCore (Roth et al. 2022) describes each patch of an image by mid-level features: the outputs
of ResNet stages 2 and 3, each averaged over its 3 x 3 neighbourhood, concatenated on one grid.
Here the grid is stage 3's (8 x 8 at 128 px; stage 2 is averaged 2 x 2 onto it) rather than
PatchCore's finer stage 2 grid: a quarter of the patches to compare, so anomaly scoring costs
under a millisecond a crop, and on held-out magnetic tile and circuit board images it scored as
well or better (AUROC, docs/benchmarks.md). The nodes are appended to the exported graph (fp32 or int8 QDQ alike), so
one ONNX run yields the pooled embedding and the patches, and the embedding stays bit for bit what
it was: adding patch features to a shipped bundle changes none of its heads or findings.

A distilled trunk also has its hint projectors: per stage a 1 x 1 convolution learnt to predict the
teacher's channel-standardised map from the student's. With them the patches are the student's
estimate of the teacher's maps, which describe texture as the teacher sees it (model card,
"Seventh step"); a convolution is linear, so projecting before the local averages is the same as
after.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from inspector.bundle import PatchFeatures, load_bundle

log = logging.getLogger(__name__)

PATCH_OUTPUT = "patches"
PATCH_LAYERS = ("layer2", "layer3")
CHANNELS = {"layer2": 128, "layer3": 256}  # ResNet18's; the grid is stage 3's, stride 16

Projection = dict[str, tuple[np.ndarray, np.ndarray]]  # per stage: 1 x 1 conv weight (out x in x 1 x 1), bias


def stage_output(graph, layer: str) -> str:
    """The tensor a ResNet stage hands on: its last block's final ReLU (dequantised in a QDQ graph).
    Its scope is ``/trunk/`` when the trunk runs whole, bare when the embedding pools several stages."""
    relu = f"/{layer}/{layer}.1/relu_1/Relu_output_0"
    produced = {out for node in graph.node for out in node.output}
    for suffix in (relu + "_DequantizeLinear_Output", relu):
        for name in (f"/trunk{suffix}", suffix):
            if name in produced:
                return name
    raise ValueError(f"no output of stage {layer} in the graph; not a ResNet18 backbone exported by training")


def pool_onto_grid(graph, stage_maps: list[str], scope: str, output: str) -> None:
    """Append to ``graph`` the patch pooling of PatchCore: each of ``stage_maps`` (stages 2 and 3, or
    their projections) averaged over its 3 x 3 neighbourhood, stage 2 then averaged 2 x 2 onto stage
    3's grid, concatenated into ``output``; node and tensor names under ``scope``."""
    from onnx import helper

    pooled = []
    for layer, stage in zip(PATCH_LAYERS, stage_maps):
        name = f"{scope}/{layer}_pool"
        graph.node.append(helper.make_node("AveragePool", [stage], [name], name=name,
                                           kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                                           count_include_pad=0))
        pooled.append(name)
    # Stage 2 has twice stage 3's resolution: averaged 2 x 2 onto stage 3's grid.
    graph.node.append(helper.make_node("AveragePool", [pooled[0]], [f"{scope}/layer2_grid"], name=f"{scope}/layer2_grid",
                                       kernel_shape=[2, 2], strides=[2, 2]))
    graph.node.append(helper.make_node("Concat", [f"{scope}/layer2_grid", pooled[1]], [output],
                                       name=f"{scope}/concat", axis=1))


def add_patch_features(source: Path, target: Path, input_size: int,
                       projection: Projection | None = None) -> PatchFeatures:
    """Write ``source`` with the ``patches`` output (N x C x G x G) to ``target``; with
    ``projection``, each stage map goes through its hint projector first."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    model = onnx.load(str(source))
    graph = model.graph
    if any(o.name == PATCH_OUTPUT for o in graph.output):
        raise ValueError(f"{source.name} already has patch features")
    maps: list[str] = []  # per stage: its map, or its projection
    channels = 0
    for layer in PATCH_LAYERS:
        stage = stage_output(graph, layer)
        if projection is not None:
            weight, bias = projection[layer]
            graph.initializer.extend([numpy_helper.from_array(weight.astype(np.float32), f"/patches/{layer}_proj.weight"),
                                      numpy_helper.from_array(bias.astype(np.float32), f"/patches/{layer}_proj.bias")])
            graph.node.append(helper.make_node("Conv", [stage, f"/patches/{layer}_proj.weight",
                                                        f"/patches/{layer}_proj.bias"],
                                               [f"/patches/{layer}_proj"], name=f"/patches/{layer}_proj"))
            stage = f"/patches/{layer}_proj"
        channels += len(projection[layer][1]) if projection is not None else CHANNELS[layer]
        maps.append(stage)
    pool_onto_grid(graph, maps, "/patches", PATCH_OUTPUT)
    graph.output.append(helper.make_tensor_value_info(PATCH_OUTPUT, TensorProto.FLOAT, ["batch", None, None, None]))
    model = shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return PatchFeatures(PATCH_OUTPUT, channels, input_size // 16, PATCH_LAYERS, projected=projection is not None)


def projection_of(state: dict) -> Projection | None:
    """The hint projectors that fit a checkpoint's trunk: its own (a distillation's final
    checkpoint), or those of the distillation it was initialised from when training after that left
    the trunk as it was (a head-only stage). None otherwise: projectors of another trunk would
    describe features it no longer has."""
    import torch

    source = state
    if "patch_projection" not in state and state.get("init_from"):
        init = Path(state["init_from"])
        if not init.is_file():
            return None
        source = torch.load(init, map_location="cpu", weights_only=True)
        trunk = {k: v for k, v in source.get("model", {}).items() if k.startswith("trunk.")}
        mine = state.get("model", {})
        if not trunk or any(k not in mine or not torch.equal(mine[k], v) for k, v in trunk.items()):
            log.info("the trunk changed after %s: patch features read the raw stage maps", init)
            return None
    raw = source.get("patch_projection")
    if raw is None or tuple(raw["layers"]) != PATCH_LAYERS:
        return None
    return {layer: (raw["state"][f"{i}.weight"].float().numpy(), raw["state"][f"{i}.bias"].float().numpy())
            for i, layer in enumerate(PATCH_LAYERS)}


def add_to_bundle(folder: Path) -> PatchFeatures:
    """Add patch features to every backbone of a bundle folder and say so in its ``bundle.json``;
    the embeddings, heads and scans of the bundle stay valid (the embedding output is untouched)."""
    bundle = load_bundle(folder)
    features = None
    for path in bundle.backbones.values():
        features = add_patch_features(path, path, bundle.input_size)
    meta = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    meta["patch_features"] = features.to_json()
    (folder / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    load_bundle(folder)
    return features
