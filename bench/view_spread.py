"""How far one view moves between video frames in each bundle's embedding (``inspector.adapt.view_spread``,
what export writes into ``bundle.json``), on the base head's training crops of track_fault: the
unit of the open-set margins (docs/model-card.md, "Open-set rules in the embedding's own units").

    python bench/view_spread.py assets/models/default runs/bundle_gem6v
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.adapt import REFERENCE_VIEW_SPREAD, view_spread  # noqa: E402
from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    from training.export import BaseHeadData
    from training.sources import load_sources

    print("| bundle | view spread | margins' scale against the reference |")
    print("|---|---:|---:|")
    track = next(iter(load_sources(args.data, ("track_fault",))))
    crops: dict[int, np.ndarray] = {}  # per input size, loaded once
    for path in args.bundles:
        bundle = load_bundle(path)
        size = bundle.preprocessing.size
        if size not in crops:
            crops[size] = BaseHeadData.load(track, size).train_crops
        spread = view_spread(Backbone(bundle, "int8" if "int8" in bundle.backbones else "fp32", threads=2), crops[size])
        print(f"| {path} | {spread:.4f} | {spread / REFERENCE_VIEW_SPREAD:.2f} |", flush=True)


if __name__ == "__main__":
    main()
