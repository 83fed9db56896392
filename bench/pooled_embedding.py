"""Which trunk stages the embedding should pool, chosen on the validation sets: a distilled
checkpoint's embedding as shipped (stage 4), stage 4 + stage 3 (each pool L2-normalised), stage 3
at half weight, and stage 3 through its hint projector, each under the app's own head
(``inspector.fewshot.evaluate`` with the bundle's adaptation) on the same seeded episodes.

    python bench/pooled_embedding.py runs/distill_broad7/distill_final.pt --bundle assets/models/default --validation
    python bench/pooled_embedding.py runs/distill_broad7/distill_final.pt --bundle assets/models/default   # left-out domains

``--validation``: the rail sets' held-out groups (as ``bench/fewshot_anchor.py``) and Omniglot's
held-out characters; without it, the left-out defect domains (the test split: report, never choose).
Embeddings in torch fp32, so the figures are the features' own, not the int8 app's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.adapt import adaptation_for  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.fewshot import evaluate, held_out, load_crop, load_items  # noqa: E402
from inspector.heads import l2_normalise  # noqa: E402

LEFT_OUT = ("neu", "deeppcb", "magnetic_tile")


def stage_features(checkpoint: Path, items, batch: int = 64) -> dict[str, np.ndarray]:
    """The stage-4 embedding, the stage-3 pool, and stage 3 through the distillation's hint projector."""
    import torch

    from training.distill import normalise
    from training.evaluate import load_model

    net, size = load_model(checkpoint)
    projection = torch.load(checkpoint, map_location="cpu", weights_only=True).get("patch_projection")
    project = None
    if projection:
        index = projection["layers"].index("layer3")
        weight, bias = projection["state"][f"{index}.weight"], projection["state"][f"{index}.bias"]
        project = lambda maps: torch.nn.functional.conv2d(maps, weight, bias)  # noqa: E731
    taps = {}
    net.trunk.layer3.register_forward_hook(lambda _m, _a, out: taps.__setitem__("layer3", out))
    parts: dict[str, list[np.ndarray]] = {"stage4": [], "stage3": [], "stage3_projected": []}
    with torch.no_grad():
        for start in range(0, len(items), batch):
            x = normalise(np.stack([load_crop(i.path, size) for i in items[start:start + batch]]), torch.device("cpu"))
            parts["stage4"].append(net(x).numpy())
            parts["stage3"].append(taps["layer3"].mean((2, 3)).numpy())
            if project:
                parts["stage3_projected"].append(project(taps["layer3"]).mean((2, 3)).numpy())
    return {k: np.concatenate(v) for k, v in parts.items() if v}


def variants(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    four, three = l2_normalise(features["stage4"]), l2_normalise(features["stage3"])
    out = {"stage 4": features["stage4"], "stage 4 + stage 3": np.hstack([four, three]),
           "stage 4 + stage 3 at half weight": np.hstack([four, 0.5 * three])}
    if "stage3_projected" in features:
        out["stage 4 + stage 3 through its hint projector"] = np.hstack([four, l2_normalise(features["stage3_projected"])])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a distillation or meta-training checkpoint")
    parser.add_argument("--bundle", type=Path, required=True, help="whose adaptation schedule the head replays")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--validation", action="store_true")
    args = parser.parse_args()
    params = adaptation_for(load_bundle(args.bundle))
    if args.validation:
        from bench.fewshot_anchor import SETS
        from training.sources import TEST_FRACTION

        sets = [(name, held_out(load_items(args.data / folder, column), TEST_FRACTION, None, 0, classes), settings)
                for name, (folder, column, classes, settings) in SETS.items()]
        omniglot = load_items(args.data / "omniglot_small", "group")
        sets.append(("omniglot_small", held_out(omniglot, None, TEST_FRACTION, 0),
                     [(5, 1, 5), (5, 5, 5), (20, 1, 5), (20, 5, 5)]))
    else:
        from training.sources import domain_folder

        sets = [(d, load_items(domain_folder(args.data, d), "group"), [(2, 1, 15), (2, 5, 15), (5, 1, 15), (5, 5, 15)])
                for d in LEFT_OUT]
    print("| set | embedding | cells (way-shot) | mean |")
    print("|---|---|---|---:|")
    for name, items, settings in sets:
        labels = [i.label for i in items]
        for variant, features in variants(stage_features(args.checkpoint, items)).items():
            cells = [evaluate(features.astype(np.float32), labels, way, shot, queries, args.episodes, params,
                              0).accuracies.mean() * 100 for way, shot, queries in settings]
            shown = " / ".join(f"{way}w{shot}s {c:.1f}" for (way, shot, _), c in zip(settings, cells))
            print(f"| {name} | {variant} | {shown} | {np.mean(cells):.2f} |", flush=True)


if __name__ == "__main__":
    main()
