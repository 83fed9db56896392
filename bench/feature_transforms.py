"""Transforms of the pooled embedding before the app's head, for bundles and the frozen anchor alike.

Each transform is applied to a set's embeddings, then the app's own few-shot path scores them
(``inspector.fewshot.evaluate``: the bundle's adaptation for a bundle, the app's default schedule
for the anchor, whose pooled features are L2-normalised first as our embedding is, as in
``bench/lodo_table.py``), on the same seeded episodes:

- ``none``: as the app embeds (the reference);
- ``power``: x ** 0.5 of the non-negative pooled features, then L2 (the power transform of Hu et al.
  2021, "Leveraging the feature distribution in transfer-based few-shot learning");
- ``centre``: minus the mean of all the set's crops (what a scanned run offers, unlabelled), then L2;
- ``standardise``: centred and divided by each dimension's spread over the set's crops, then L2.

The last two use every crop of the set without labels (transductive, as a scan's crops would be).

    python bench/feature_transforms.py --transform none,power                       # validation sets
    python bench/feature_transforms.py --transform none,power --left-out --episodes 600
    python bench/feature_transforms.py --left-out --no-anchor --also actfp32=runs/bundle_actfp32

Validation (default): the rail sets' held-out groups and Omniglot's held-out characters, where a
transform is chosen; ``--left-out``: the defect domains no stage of the bundle's trunk saw (report).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fewshot_anchor import evaluation_sets, named_paths  # noqa: E402
from bench.lodo_table import ANCHOR_HEAD, anchor_features  # noqa: E402
from inspector.adapt import adaptation_for  # noqa: E402
from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.fewshot import embed_items, evaluate  # noqa: E402
from inspector.heads import l2_normalise  # noqa: E402

POWER = 0.5


def _centred(f: np.ndarray) -> np.ndarray:
    return f - f.mean(axis=0)


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda f: f,
    "power": lambda f: l2_normalise(np.maximum(f, 0) ** POWER),
    "centre": lambda f: l2_normalise(_centred(f)),
    "standardise": lambda f: l2_normalise(_centred(f) / (f.std(axis=0) + 1e-3 * f.std(axis=0).mean())),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--bundle", type=Path, default=ROOT / "assets" / "models" / "default")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=BUNDLE", help="more bundles, same run")
    parser.add_argument("--transform", default="none,power,centre,standardise",
                        help=f"comma-separated, of {', '.join(TRANSFORMS)}")
    parser.add_argument("--left-out", action="store_true", help="the left-out defect domains (report, never choose)")
    parser.add_argument("--no-anchor", action="store_true", help="bundles only (no torch needed)")
    parser.add_argument("--episodes", type=int, default=300)
    args = parser.parse_args()
    transforms = args.transform.split(",")
    unknown = sorted(set(transforms) - set(TRANSFORMS))
    if unknown:
        parser.error(f"unknown transform {', '.join(unknown)}; choose from {', '.join(TRANSFORMS)}")
    bundles = {"shipped": load_bundle(args.bundle),
               **{name: load_bundle(path) for name, path in named_paths(parser, args.also, ("shipped",)).items()}}
    print("| set | model | transform | cells (way-shot, as listed) | mean |")
    print("|---|---|---|---|---:|")
    for name, items, settings in evaluation_sets(args.data, args.left_out):
        labels = [i.label for i in items]
        models = {label: (embed_items(Backbone(b, "int8" if "int8" in b.backbones else "fp32"), items),
                          adaptation_for(b)) for label, b in bundles.items()}
        if not args.no_anchor:
            # L2-normalised, as our embedding is: what the anchor's pooled features get before the app head
            models |= {f"anchor {size} px": (l2_normalise(anchor_features(items, size)), ANCHOR_HEAD)
                       for size in (128, 224)}
        for label, (features, params) in models.items():
            for transform in transforms:
                shown = TRANSFORMS[transform](features.astype(np.float64)).astype(np.float32)
                cells = [evaluate(shown, labels, way, shot, queries, args.episodes, params, 0).accuracies.mean() * 100
                         for way, shot, queries in settings]
                print(f"| {name} | {label} | {transform} | " + " / ".join(f"{c:.1f}" for c in cells)
                      + f" | {np.mean(cells):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
