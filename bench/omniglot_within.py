"""Omniglot, within-alphabet N-way 1-shot (the Lake et al. 2015 "runs" protocol, Science 350:1332):
every class of an episode comes from the same alphabet, one drawing of each as the example, another
drawing as the query; error rate, next to the frozen EfficientNet-Lite0 anchor (nearest neighbour,
as the paper's baselines) on the same episodes.

The bundle trained on Omniglot's other characters, so only the held-out characters (30 % of the
groups, the split training used) are used: at most 16 per alphabet in ``omniglot_small``, so N is
the number held out, up to 20, per alphabet (reported). Humans reach 4.5 % error at 20 ways.

    python bench/omniglot_within.py --bundle assets/models/default --episodes 200
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fewshot_anchor import anchor_accuracy  # noqa: E402
from bench.lodo_table import anchor_features  # noqa: E402
from inspector.adapt import adaptation_for  # noqa: E402
from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.fewshot import embed_items, evaluate, held_out, load_items  # noqa: E402

MAX_WAY = 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    items = held_out(load_items(args.data / "omniglot_small", "group"), 0.3, None, 0)
    by_alphabet: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_alphabet[item.label.split("/")[0]].append(index)
    ours_all = embed_items(Backbone(bundle), items)
    anchor_all = anchor_features(items, 128)
    params = adaptation_for(bundle)
    print(f"bundle {bundle.name}, held-out characters of omniglot_small, {args.episodes} episodes per alphabet\n")
    print("| alphabet | ways (held-out characters) | ours: error % | anchor 128 px nearest neighbour: error % |")
    print("|---|---:|---:|---:|")
    totals = []
    for alphabet, index in sorted(by_alphabet.items()):
        labels = [items[i].label for i in index]
        way = min(MAX_WAY, len(set(labels)))
        if way < 2:
            continue
        ours = evaluate(ours_all[index], labels, way, 1, 1, args.episodes, params, seed=0).accuracies
        anchor = anchor_accuracy(anchor_all[index], labels, way, 1, 1, args.episodes, 0, "prototype")
        totals.append((way, ours.mean(), anchor.mean()))
        print(f"| {alphabet} | {way} | {100 * (1 - ours.mean()):.1f} | {100 * (1 - anchor.mean()):.1f} |")
    ways = np.array([t[0] for t in totals])
    print(f"| mean over alphabets | {ways.mean():.1f} | {100 * (1 - np.mean([t[1] for t in totals])):.1f} | "
          f"{100 * (1 - np.mean([t[2] for t in totals])):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
