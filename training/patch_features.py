"""Give an exported backbone a second output: the patch feature map of anomaly mode (issue 15).

PatchCore (Roth et al. 2022) describes each patch of an image by mid-level features: the outputs
of ResNet stages 2 and 3, each averaged over its 3 x 3 neighbourhood, stage 3 upsampled to stage
2's grid, concatenated. The nodes are appended to the exported graph (fp32 or int8 QDQ alike), so
one ONNX run yields the pooled embedding and the patches, and the embedding stays bit for bit what
it was: adding patch features to a shipped bundle changes none of its heads or findings.
"""
from __future__ import annotations

from pathlib import Path

PATCH_OUTPUT = "patches"
PATCH_LAYERS = ("layer2", "layer3")


def _stage_output(graph, layer: str) -> str:
    """The tensor a ResNet stage hands on: its last block's final ReLU (dequantised in a QDQ graph)."""
    relu = f"/trunk/{layer}/{layer}.1/relu_1/Relu_output_0"
    produced = {out for node in graph.node for out in node.output}
    for name in (relu + "_DequantizeLinear_Output", relu):
        if name in produced:
            return name
    raise ValueError(f"no output of stage {layer} in the graph; not a ResNet18 backbone exported by training")


def add_patch_features(source: Path, target: Path) -> int:
    """Write ``source`` with the ``patches`` output (N x C x G x G) to ``target``; returns C."""
    import onnx
    from onnx import TensorProto, helper, shape_inference

    model = onnx.load(str(source))
    graph = model.graph
    if any(o.name == PATCH_OUTPUT for o in graph.output):
        raise ValueError(f"{source.name} already has patch features")
    pooled = []
    for layer in PATCH_LAYERS:
        name = f"/patches/{layer}_pool"
        graph.node.append(helper.make_node("AveragePool", [_stage_output(graph, layer)], [name], name=name,
                                           kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                                           count_include_pad=0))
        pooled.append(name)
    # Stage 3 has half stage 2's resolution: bilinear upsampling onto stage 2's grid.
    scales = helper.make_tensor("/patches/scales", TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0])
    graph.initializer.append(scales)
    graph.node.append(helper.make_node("Resize", [pooled[1], "", "/patches/scales"], ["/patches/layer3_up"],
                                       name="/patches/layer3_up", mode="linear"))
    graph.node.append(helper.make_node("Concat", [pooled[0], "/patches/layer3_up"], [PATCH_OUTPUT],
                                       name="/patches/concat", axis=1))
    graph.output.append(helper.make_tensor_value_info(PATCH_OUTPUT, TensorProto.FLOAT, ["batch", None, None, None]))
    model = shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    channels = {"layer2": 128, "layer3": 256}
    return sum(channels[layer] for layer in PATCH_LAYERS)
