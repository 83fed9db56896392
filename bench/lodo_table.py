"""Leave-one-domain-out transfer: each fold's bundle on the domain its training never saw, through
the app's own path (ONNX int8 embeddings, ``inspector.adapt``), against the frozen ImageNet
EfficientNet-Lite0 anchor at 128 and 224 px on the same seeded episodes.

A fold's bundle is exported from a meta-training run with ``--exclude-domain D``; its backbone was
distilled on domain-free views (broad corpus, track scenes, synthetic overhead lines), so domain D
entered no stage. The anchor gets two heads: logistic regression (scikit-learn defaults, what a user
tries first) and the app's own adaptation (the same inner loop as ours, on the anchor's pooled features L2-normalised
as our embedding is before the app centres and normalises them), so it has the same head budget; the
better of the two is what ours must beat.

    python bench/lodo_table.py --fold neu=runs/bundle_lodo_neu --fold deeppcb=runs/bundle_lodo_deeppcb \\
        --fold magnetic_tile=runs/bundle_lodo_magnetic_tile --also shipped=assets/models/default \\
        --episodes 600 --out bench/results/lodo.json
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

from bench.fewshot_anchor import anchor_accuracy, named_paths  # noqa: E402
from inspector.adapt import adaptation_for  # noqa: E402
from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import AdaptationParams, load_bundle  # noqa: E402
from inspector.fewshot import embed_items, evaluate, load_crop, load_items  # noqa: E402
from inspector.heads import l2_normalise  # noqa: E402
from training.sources import domain_folder  # noqa: E402

SETTINGS = [(2, 1), (2, 5), (5, 1), (5, 5)]
QUERIES = 15
ANCHOR_HEAD = AdaptationParams(50, (1.0,), 10.0)  # the app's default schedule, applied to the anchor's features


def anchor_features(items, size: int, batch: int = 32) -> np.ndarray:
    import torch

    from training.distill import load_teacher, normalise, teacher_features

    teacher = load_teacher()
    out = []
    with torch.no_grad():
        for start in range(0, len(items), batch):
            crops = np.stack([load_crop(i.path, size) for i in items[start:start + batch]])
            out.append(teacher_features(teacher, normalise(crops, torch.device("cpu"))).numpy())
    return np.concatenate(out)


def cell(accuracies: np.ndarray) -> dict:
    return {"accuracy": round(float(accuracies.mean() * 100), 2),
            "ci95": round(float(1.96 * accuracies.std(ddof=1) / np.sqrt(len(accuracies)) * 100), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--fold", action="append", required=True, metavar="DOMAIN=BUNDLE",
                        help="a held-out domain and the bundle trained without it")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=BUNDLE",
                        help="another bundle to score on every fold's domain (e.g. the shipped one)")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lodo.json")
    args = parser.parse_args()
    others = named_paths(parser, args.also, ("ours",))
    results: dict[str, dict] = {}
    for entry in args.fold:
        domain, bundle_dir = entry.split("=", 1)
        items = load_items(domain_folder(args.data, domain), "group")
        labels = [i.label for i in items]
        started = time.perf_counter()
        columns = {"ours": load_bundle(bundle_dir), **{name: load_bundle(path) for name, path in others.items()}}
        features = {name: (embed_items(Backbone(bundle, "int8" if "int8" in bundle.backbones else "fp32"), items),
                           adaptation_for(bundle)) for name, bundle in columns.items()}
        anchors = {size: anchor_features(items, size) for size in (128, 224)}
        print(f"{domain}: {len(items)} images, {len(set(labels))} classes, embedded in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        rows = {}
        for way, shot in SETTINGS:
            row = {name: cell(evaluate(f, labels, way, shot, QUERIES, args.episodes, params, args.seed).accuracies)
                   for name, (f, params) in features.items()}
            for size, f in anchors.items():
                row[f"anchor{size}_logreg"] = cell(anchor_accuracy(f, labels, way, shot, QUERIES, args.episodes,
                                                                   args.seed, "logreg"))
                row[f"anchor{size}_head"] = cell(evaluate(l2_normalise(f), labels, way, shot, QUERIES, args.episodes,
                                                          ANCHOR_HEAD, args.seed).accuracies)
            best = max((v["accuracy"], k) for k, v in row.items() if k.startswith("anchor"))
            row["best_anchor"] = best[1]
            row["ours_wins"] = row["ours"]["accuracy"] > best[0]
            rows[f"{way}w{shot}s"] = row
            print(f"  {way}-way {shot}-shot: " + ", ".join(f"{k} {v['accuracy']:.1f}" for k, v in row.items()
                                                        if isinstance(v, dict)), flush=True)
        results[domain] = {"bundle": bundle_dir, "images": len(items), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"episodes": args.episodes, "queries": QUERIES, "seed": args.seed,
                                    "results": results}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
