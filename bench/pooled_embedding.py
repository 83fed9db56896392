"""Which trunk stages the embedding should pool, and how, chosen on the validation sets: a distilled
checkpoint's embedding as shipped (stage 4), stage 4 + stage 3 (each pool L2-normalised), stage 3
at half weight, and stage 3 through its hint projector, each under the app's own head
(``inspector.fewshot.evaluate`` with the bundle's adaptation) on the same seeded episodes. With
``--pooling``: stage 4 + stage 3 pooled by the average, generalised means (GeM) of several powers,
the maximum, the average beside each stage's standard deviation, and stage 2 added.

    python bench/pooled_embedding.py runs/distill_broad7/distill_final.pt --bundle assets/models/default --validation
    python bench/pooled_embedding.py runs/distill_broad7/distill_final.pt --bundle assets/models/default   # left-out domains
    python bench/pooled_embedding.py runs/distill_broad7/distill_final.pt --bundle assets/models/default \
        --validation --pooling --episodes 200

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

from bench.fewshot_anchor import evaluation_sets  # noqa: E402
from inspector.adapt import adaptation_for  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.fewshot import evaluate, load_crop  # noqa: E402
from inspector.heads import l2_normalise  # noqa: E402

GEM_POWERS = (2, 3, 4, 6, 8, 12)


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


def pooling_features(checkpoint: Path, items, batch: int = 64) -> dict[str, np.ndarray]:
    """Stages 2-4 of the trunk, each pooled by the average, GeM of each power, the maximum and the
    standard deviation (keys ``layer3_gem6``, ``layer4_max``, ...)."""
    import torch

    from training.backbone import gem
    from training.distill import normalise
    from training.evaluate import load_model

    net, size = load_model(checkpoint)
    taps = {}
    for stage in ("layer2", "layer3", "layer4"):
        getattr(net.trunk, stage).register_forward_hook(lambda _m, _a, out, stage=stage: taps.__setitem__(stage, out))
    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, len(items), batch):
            net(normalise(np.stack([load_crop(i.path, size) for i in items[start:start + batch]]), torch.device("cpu")))
            for stage, maps in taps.items():
                pools = {"mean": maps.mean((2, 3)), "max": maps.amax((2, 3)), "std": maps.std((2, 3)),
                         **{f"gem{p}": gem(maps, float(p)) for p in GEM_POWERS}}
                for kind, pooled in pools.items():
                    parts.setdefault(f"{stage}_{kind}", []).append(pooled.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def pooling_variants(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    def pair(kind: str) -> list[np.ndarray]:
        return [l2_normalise(features[f"layer4_{kind}"]), l2_normalise(features[f"layer3_{kind}"])]

    out = {"average (shipped)": np.hstack(pair("mean"))}
    out.update({f"GeM p = {p}": np.hstack(pair(f"gem{p}")) for p in GEM_POWERS})
    out["maximum"] = np.hstack(pair("max"))
    out["average, plus each stage's standard deviation"] = np.hstack(pair("mean") + pair("std"))
    out["average, plus stage 2"] = np.hstack(pair("mean") + [l2_normalise(features["layer2_mean"])])
    return out


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
    parser.add_argument("--pooling", action="store_true", help="compare ways of pooling stages 4 and 3")
    args = parser.parse_args()
    params = adaptation_for(load_bundle(args.bundle))
    sets = evaluation_sets(args.data, left_out=not args.validation)
    print("| set | embedding | cells (way-shot) | mean |")
    print("|---|---|---|---:|")
    for name, items, settings in sets:
        labels = [i.label for i in items]
        compared = (pooling_variants(pooling_features(args.checkpoint, items)) if args.pooling
                    else variants(stage_features(args.checkpoint, items)))
        for variant, features in compared.items():
            cells = [evaluate(features.astype(np.float32), labels, way, shot, queries, args.episodes, params,
                              0).accuracies.mean() * 100 for way, shot, queries in settings]
            shown = " / ".join(f"{way}w{shot}s {c:.1f}" for (way, shot, _), c in zip(settings, cells))
            print(f"| {name} | {variant} | {shown} | {np.mean(cells):.2f} |", flush=True)


if __name__ == "__main__":
    main()
