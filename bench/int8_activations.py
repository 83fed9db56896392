"""What int8 activations cost on domains the calibration never saw: a copy of a bundle whose QDQ
graph keeps its int8 weights but computes every activation in float.

Export calibrates the activations' int8 ranges on 160 training crops of track_fault; circuit boards
and magnetic tiles look nothing like them. The copy removes each activation's Quantize/Dequantize
pair (weights stay as dequantised int8) and restores the ReLUs the quantiser had folded into the
uint8 clipping, so comparing it with the bundle through the same commands isolates the activation
quantisation:

    python bench/int8_activations.py assets/models/default runs/bundle_actfp32
    python bench/feature_transforms.py --left-out --no-anchor --transform none --also actfp32=runs/bundle_actfp32
    python bench/anomaly_anchor.py --also actfp32=runs/bundle_actfp32 --sets deeppcb,track_fastener --episodes 30
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.fewshot import load_crop, load_items  # noqa: E402
from inspector.heads import l2_normalise  # noqa: E402
from training.sources import domain_folder  # noqa: E402


def float_activations(source: Path, target: Path) -> int:
    """Write ``source`` (int8 QDQ ONNX) to ``target`` with activations in float; returns the pairs removed."""
    import onnx
    from onnx import helper

    model = onnx.load(str(source))
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    bypass: dict[str, str] = {}
    dropped: set[int] = set()
    relus: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        quantise = producers.get(node.input[0])
        if node.op_type != "DequantizeLinear" or node.input[0] in constants or quantise is None \
                or quantise.op_type != "QuantizeLinear":
            continue
        value = quantise.input[0]
        if "Relu_output" in value:  # a ReLU the quantiser folded into uint8's clipping at zero
            relus.setdefault(value, helper.make_node("Relu", [value], [value + "_relu"]))
            value += "_relu"
        bypass[node.output[0]] = value
        dropped |= {id(node), id(quantise)}
    def resolve(name: str) -> str:
        while name in bypass:
            name = bypass[name]
        return name

    kept = [node for node in graph.node if id(node) not in dropped]
    for value, relu in relus.items():
        kept.insert(kept.index(producers[value]) + 1, relu)
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
    kept += [helper.make_node("Identity", [resolve(o.name)], [o.name]) for o in graph.output if o.name in bypass]
    del graph.node[:]
    graph.node.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return len(dropped) // 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    if "int8" not in bundle.backbones:
        parser.error(f"{args.bundle} has no int8 backbone")
    shutil.copytree(args.bundle, args.out, dirs_exist_ok=True)
    name = bundle.backbones["int8"].name
    pairs = float_activations(bundle.backbones["int8"], args.out / name)
    print(f"{args.out / name}: {pairs} activation quantise/dequantise pairs removed")
    quantised, floating = Backbone(bundle, "int8"), Backbone(load_bundle(args.out), "int8")
    for domain in ("track_fault", "deeppcb", "magnetic_tile"):
        items = load_items(domain_folder(args.data, domain), "group")[:64]
        crops = np.stack([load_crop(i.path, bundle.input_size) for i in items])
        a, b = quantised.embed(crops).astype(np.float64), floating.embed(crops).astype(np.float64)
        centre = a.mean(axis=0)
        similarity = np.einsum("nd,nd->n", l2_normalise(a - centre), l2_normalise(b - centre))
        print(f"{domain}: centred cosine of int8 and float-activation embeddings, mean {similarity.mean():.4f}, "
              f"least {similarity.min():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
