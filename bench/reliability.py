"""Are the scores probabilities? The reliability diagram of the app's calibrated scores.

Few-shot episodes through the app's own path (ONNX int8 embeddings, ``inspector.adapt`` with its
cross-fitted temperature, ``Head.scores``): for every query crop, the score of the class it was
given and whether that was right, pooled over episodes and settings (2- and 5-way, 1 and 5 shots).
In 10 bins of score, the mean score against the share right: a calibrated score lies on the
diagonal. Each set is scored by a bundle that never trained on those images: the held-out groups of
a rail set (``--holdout 0.3``, the split training used) or a whole left-out domain (a LODO fold's
bundle).

    python bench/reliability.py --set track_fault=assets/models/default:0.3 --set sleeper=assets/models/default:0.3 \\
        --set neu=runs/bundle_lodo_neu --out docs/reliability.png

Writes the figure and ``bench/results/reliability.json``; prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import inspector.adapt as adapt_module  # noqa: E402
from inspector.adapt import adaptation_for  # noqa: E402
from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.fewshot import DatasetError, embed_items, evaluate, held_out, load_items  # noqa: E402
from training.sources import domain_folder  # noqa: E402

SETTINGS = [(2, 1), (2, 5), (5, 1), (5, 5)]
QUERIES = 5
BINS = 10


def load_set(data: Path, entry: str):
    """``NAME=BUNDLE[:HOLDOUT]`` -> (name, bundle folder, bundle, items, their embeddings by that bundle)."""
    name, rest = entry.split("=", 1)
    bundle_dir, _, holdout = rest.partition(":")
    bundle = load_bundle(bundle_dir)
    items = load_items(domain_folder(data, name), "group")
    if holdout:
        items = held_out(items, float(holdout), None, 0)
    embeddings = embed_items(Backbone(bundle, "int8" if "int8" in bundle.backbones else "fp32"), items)
    return name, bundle_dir, bundle, items, embeddings


def diagram(confidence: np.ndarray, correct: np.ndarray) -> list[dict]:
    """Per populated bin: its range, crops, mean score, share right."""
    index = np.minimum((confidence * BINS).astype(int), BINS - 1)
    rows = []
    for b in range(BINS):
        inside = index == b
        if inside.any():
            rows.append({"bin": f"{b / BINS:.1f}-{(b + 1) / BINS:.1f}", "crops": int(inside.sum()),
                         "score": round(float(confidence[inside].mean()), 3),
                         "right": round(float(correct[inside].mean()), 3)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--set", action="append", required=True, metavar="NAME=BUNDLE[:HOLDOUT]",
                        help="a data set (rail set or domain) and the bundle that never saw it; HOLDOUT: "
                             "the fraction of groups training held out (default: the whole set)")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--min-crops", type=int, default=50, help="bins with fewer crops are drawn, not judged")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.png",
                        help="the figure; the numbers go to bench/results/<its stem>.json")
    parser.add_argument("--prior-weight", type=float, help="override inspector.adapt.PRIOR_WEIGHT (to choose it "
                        "on sets kept out of the reported table)")
    args = parser.parse_args()
    if args.prior_weight is not None:
        adapt_module.PRIOR_WEIGHT = args.prior_weight
    pooled: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for entry in args.set:
        name, bundle_dir, bundle, items, embeddings = load_set(args.data, entry)
        labels = [i.label for i in items]
        results = []
        for way, shot in SETTINGS:
            try:
                results.append(evaluate(embeddings, labels, way, shot, QUERIES, args.episodes, adaptation_for(bundle),
                                        seed=1))
            except DatasetError as exc:  # a small held-out part has too few images of enough classes
                print(f"{name}: {way}-way {shot}-shot left out ({exc})")
        pooled[name] = (np.concatenate([r.confidence for r in results]), np.concatenate([r.correct for r in results]))
        print(f"{name}: {len(items)} images, bundle {bundle.name} ({bundle_dir})", flush=True)
    everything = tuple(np.concatenate(parts) for parts in zip(*pooled.values()))
    table = {name: diagram(*values) for name, values in {**pooled, "all": everything}.items()}
    gaps = {name: max((abs(r["score"] - r["right"]) for r in rows if r["crops"] >= args.min_crops), default=0.0)
            for name, rows in table.items()}
    worst = gaps["all"]
    print("\n| bin | crops | mean score | share right |\n|---|---:|---:|---:|")
    for row in table["all"]:
        print(f"| {row['bin']} | {row['crops']} | {row['score']:.3f} | {row['right']:.3f} |")
    print(f"\nlargest gap in a bin of >= {args.min_crops} crops: {worst:.3f} (" +
          ", ".join(f"{name} {gap:.3f}" for name, gap in gaps.items() if name != "all") + ")")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="calibrated")
    for name, rows in table.items():
        ax.plot([r["score"] for r in rows], [r["right"] for r in rows], marker="o",
                linewidth=2.5 if name == "all" else 1, label=name)
    ax.set_xlabel("score of the class given")
    ax.set_ylabel("share of crops where it was right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Reliability of the app's scores", fontsize=10)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=100)
    results = ROOT / "bench" / "results" / f"{args.out.stem}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"sets": args.set, "episodes": args.episodes, "prior_weight": adapt_module.PRIOR_WEIGHT,
                                   "worst_gap": round(worst, 3),
                                   "worst_gap_per_set": {k: round(v, 3) for k, v in gaps.items()},
                                   "bins": table}, indent=1) + "\n")
    print(f"wrote {args.out} and {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
