"""The model card's evaluation table: every trained checkpoint and the EfficientNet-Lite0 anchor,
5-way and 2-way (sleeper: 3-way, it has three classes), 1-shot and 5-shot, on the held-out groups of
each shared dataset (Omniglot: held-out characters), 600 seeded episodes, the same episodes for
every column. Checkpoints go through ``training.evaluate`` (torch fp32, the deployed head adapted
with the checkpoint's own inner loop, or export's default one, 50 steps at 1.0, when it has none).

    python bench/algorithm_table.py --checkpoint baseline=runs/pretrain/pretrain_final.pt \\
        --checkpoint anil=runs/anil/meta_final.pt --anchor        # needs the train extra + scikit-learn

Writes bench/results/algorithm_table.md and .json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fewshot_anchor import anchor_accuracy, anchor_embeddings  # noqa: E402

from inspector.bundle import AdaptationParams  # noqa: E402
from inspector.fewshot import held_out, load_items  # noqa: E402
from training.evaluate import checkpoint_adaptation, embed, evaluate_embeddings, load_model  # noqa: E402
from training.export import BASELINE_ADAPTATION  # noqa: E402
from training.sources import TEST_FRACTION, TRACK_COMPONENT_CLASSES  # noqa: E402

SETS = {  # name: (group column, classes kept, settings as (way, shot, queries))
    "track_fault": ("group", list(TRACK_COMPONENT_CLASSES), [(5, 1, 5), (5, 5, 3), (2, 1, 5), (2, 5, 3)]),
    "sleeper": ("run", None, [(3, 1, 15), (3, 5, 15), (2, 1, 15), (2, 5, 15)]),
    "omniglot_small": ("group", None, [(5, 1, 15), (5, 5, 15), (2, 1, 15), (2, 5, 15)]),
}


def cell(accuracies: np.ndarray) -> dict:
    return {"accuracy": round(float(accuracies.mean() * 100), 2),
            "ci95": round(float(1.96 * accuracies.std(ddof=1) / np.sqrt(len(accuracies)) * 100), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH", required=True)
    parser.add_argument("--anchor", action="store_true", help="add the EfficientNet-Lite0 anchor columns")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "algorithm_table.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    checkpoints = dict(spec.split("=", 1) for spec in args.checkpoint)
    columns = list(checkpoints) + (["anchor + LR", "anchor + proto"] if args.anchor else [])
    results: dict[str, dict[str, dict]] = {}
    for name in args.sets.split(","):
        column, classes, settings = SETS[name]
        items = held_out(load_items(args.data / name, column), TEST_FRACTION, None, 0, classes)
        labels = [i.label for i in items]
        for label, path in checkpoints.items():
            started = time.perf_counter()
            net, size = load_model(Path(path))
            embeddings = embed(net, items, size)
            params = checkpoint_adaptation(Path(path)) or AdaptationParams.from_json(BASELINE_ADAPTATION, "export")
            for way, shot, queries in settings:
                result = evaluate_embeddings(embeddings, labels, way, shot, queries, args.episodes, params, args.seed)
                results.setdefault(f"{name} {way}w{shot}s", {})[label] = cell(result.accuracies)
            print(f"{name} {label}: {time.perf_counter() - started:.0f} s", flush=True)
        if args.anchor:
            features = anchor_embeddings(items)
            for way, shot, queries in settings:
                for method, label in (("logreg", "anchor + LR"), ("proto", "anchor + proto")):
                    accuracies = anchor_accuracy(features, labels, way, shot, queries, args.episodes, args.seed, method)
                    results[f"{name} {way}w{shot}s"][label] = cell(accuracies)
    lines = [f"Held-out groups ({TEST_FRACTION:.0%}, split seed 0), {args.episodes} episodes, accuracy % ± 95 % CI; "
             "best of each row in bold.", "", "| set | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for row, cells in results.items():
        best = max(c["accuracy"] for c in cells.values())
        text = [f"**{c['accuracy']:.1f}** ± {c['ci95']:.1f}" if c["accuracy"] == best
                else f"{c['accuracy']:.1f} ± {c['ci95']:.1f}" for c in (cells[k] for k in columns)]
        lines.append(f"| {row} | " + " | ".join(text) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"checkpoints": checkpoints, "results": results}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
