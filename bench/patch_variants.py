"""Anomaly-mode patches beside the trunk's own stage maps: copies of a bundle whose ``patches``
output is the raw stage 2/3 maps alone, or the shipped hint-projected maps concatenated with
w x the raw maps (w scaled so that, at 1, both parts have the same mean squared norm per patch on
track_fault crops). Same PatchCore recipe, same grid; only the channels change.

    python bench/patch_variants.py assets/models/default runs/patch_variants
    python bench/anomaly_anchor.py --split training --episodes 30 --also raw=runs/patch_variants/raw \
        --also cat1=runs/patch_variants/cat1 --also cat05=runs/patch_variants/cat05

Chosen on the training groups (``--split training``, validation); the held-out groups report.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.bundle import load_bundle  # noqa: E402
from inspector.fewshot import load_crop, load_items  # noqa: E402
from training.patch_features import PATCH_LAYERS, PATCH_OUTPUT, pool_onto_grid, stage_output  # noqa: E402
from training.sources import domain_folder  # noqa: E402

RAW_CHANNELS = 128 + 256  # ResNet18's stages 2 and 3


def with_raw_maps(source: Path, target: Path, weight: float | None) -> None:
    """``source``'s graph with its raw stage maps pooled as the patches are; ``weight`` None: both the
    projected (``patches_proj``) and raw (``patches_raw``) maps as outputs, to measure them; inf: raw
    maps alone as ``patches``; else projected beside ``weight`` x raw as ``patches``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    next(n for n in graph.node if PATCH_OUTPUT in n.output).output[0] = "patches_proj"
    pool_onto_grid(graph, [stage_output(graph, layer) for layer in PATCH_LAYERS], "/raw", "patches_raw")
    graph.output.remove(next(o for o in graph.output if o.name == PATCH_OUTPUT))
    if weight is None:
        outputs = ["patches_proj", "patches_raw"]
    else:
        graph.initializer.append(numpy_helper.from_array(np.array(1.0 if np.isinf(weight) else weight, np.float32),
                                                         "/raw/weight"))
        graph.node.append(helper.make_node("Mul", ["patches_raw", "/raw/weight"], ["patches_raw_weighted"]))
        parts = ["patches_raw_weighted"] if np.isinf(weight) else ["patches_proj", "patches_raw_weighted"]
        graph.node.append(helper.make_node("Concat", parts, [PATCH_OUTPUT], axis=1))
        outputs = [PATCH_OUTPUT]
    graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", None, None, None])
                        for o in outputs)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path, help="a folder for the variant bundles")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    import onnxruntime as ort

    bundle = load_bundle(args.bundle)
    features = bundle.patch_features
    if features is None or "int8" not in bundle.backbones:
        parser.error(f"{args.bundle} has no int8 backbone with patch features")
    source = bundle.backbones["int8"]
    args.out.mkdir(parents=True, exist_ok=True)
    probe = args.out / "probe.onnx"
    with_raw_maps(source, probe, None)
    session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    items = load_items(domain_folder(args.data, "track_fault"), "group")[:160]
    crops = bundle.preprocessing.normalise(np.stack([load_crop(i.path, bundle.input_size) for i in items]))
    projected, raw = session.run(["patches_proj", "patches_raw"], {session.get_inputs()[0].name: crops})
    probe.unlink()
    balance = float(np.sqrt((projected ** 2).sum(1).mean() / (raw ** 2).sum(1).mean()))
    print(f"raw maps scaled by {balance:.4f} to the projected maps' mean squared norm per patch")
    for name, weight in (("raw", np.inf), ("cat1", balance), ("cat05", 0.5 * balance)):
        folder = args.out / name
        shutil.copytree(args.bundle, folder, dirs_exist_ok=True)
        with_raw_maps(source, folder / source.name, weight)
        meta = json.loads((folder / "bundle.json").read_text())
        meta["patch_features"]["channels"] = RAW_CHANNELS + (0 if np.isinf(weight) else features.channels)
        (folder / "bundle.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{folder}: {meta['patch_features']['channels']} channels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
