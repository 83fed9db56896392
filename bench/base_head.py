"""The base head of bundles as exported: accuracy on the held-out groups of track_fault and under
group cross-validation on its training groups (what export and the ship rules decide with).

    python bench/base_head.py --bundle shipped=assets/models/default --bundle candidate=runs/bundle_x

Each bundle is measured with every backbone it ships (fp32, int8) and its own adaptation schedule.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fewshot_anchor import named_paths  # noqa: E402
from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from training.export import CV_FOLDS, CV_SEEDS, BaseHeadData, base_head_figures  # noqa: E402
from training.sources import load_sources  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--bundle", action="append", default=[], metavar="NAME=FOLDER", required=True)
    args = parser.parse_args()
    track, = load_sources(args.data, ("track_fault",))
    print(f"| bundle | backbone | held-out groups ({len(track.test)} crops) | "
          f"{CV_FOLDS}-fold group CV x {len(CV_SEEDS)} ({len(track.train)} training crops) |")
    print("|---|---|---:|---:|")
    data: dict[int, BaseHeadData] = {}  # by input size: the crops are read once
    for name, folder in named_paths(parser, args.bundle).items():
        bundle = load_bundle(folder)
        if bundle.input_size not in data:
            data[bundle.input_size] = BaseHeadData.load(track, bundle.input_size)
        for precision in bundle.backbones:
            backbone = Backbone(bundle, precision, threads=2)
            _, _, held_out, cv = base_head_figures(backbone, data[bundle.input_size], bundle.adaptation)
            print(f"| {name} | {precision} | {held_out:.3f} | {cv:.3f} |", flush=True)


if __name__ == "__main__":
    main()
