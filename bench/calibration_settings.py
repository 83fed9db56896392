"""Why scores are measured in units of the head's own margin: the temperature that calibrates new
crops, per few-shot setting, on raw logits and in margin units.

For each set and each setting (2/5-way, 1/5-shot, 100 seeded episodes, 5 queries a class), the app
adapts a head on the support (``inspector.adapt``, the bundle's schedule) and the temperature that
minimises the queries' cross-entropy is fitted afterwards: an oracle no app has, used only to see
what a calibration prior must capture. On raw logits it moves several-fold with the setting; on
logits divided by ``self_margin`` it should stay nearly constant within a set.

    python bench/calibration_settings.py --set neu=assets/models/default --set track_fault=assets/models/default:0.3
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.reliability import load_set  # noqa: E402
from inspector.adapt import ClassSpec, adapt, adaptation_for, fit_temperature, self_margin  # noqa: E402
from inspector.fewshot import DatasetError, sample_episodes  # noqa: E402

SETTINGS = [(2, 1), (2, 5), (5, 1), (5, 5)]
QUERIES = 5


def oracle_temperatures(embeddings: np.ndarray, labels: list[str], way: int, shot: int, episodes: int,
                        params) -> tuple[float, float]:
    """(raw, margin-unit) temperatures fitted on the query logits of the setting's episodes."""
    raw, relative, truth = [], [], []
    for episode in sample_episodes(labels, way, shot, QUERIES, episodes, 1):
        support, query = np.array(episode.support), np.array(episode.query)
        head, _ = adapt(embeddings[support], [labels[i] for i in support],
                        [ClassSpec(c, False) for c in episode.classes], params, judged=np.zeros(len(support), bool))
        own = head.logits(embeddings[support])
        margin = self_margin(own, np.array([episode.classes.index(labels[i]) for i in support]))
        logits = head.logits(embeddings[query])
        raw.append(logits)
        relative.append(logits / margin)
        truth.append([episode.classes.index(labels[i]) for i in query])
    target = np.concatenate(truth)
    ones = np.ones(len(target))
    return fit_temperature(np.concatenate(raw), target, ones), fit_temperature(np.concatenate(relative), target, ones)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--set", action="append", required=True, metavar="NAME=BUNDLE[:HOLDOUT]",
                        help="a data set and the bundle to adapt with; HOLDOUT: the fraction of groups held out")
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    print("| set | " + " | ".join(f"{w}-way {s}-shot" for w, s in SETTINGS) + " |")
    print("|---|" + "---:|" * len(SETTINGS))
    for entry in args.set:
        name, _, bundle, items, embeddings = load_set(args.data, entry)
        cells = []
        for way, shot in SETTINGS:
            try:
                t_raw, t_rel = oracle_temperatures(embeddings, [i.label for i in items], way, shot, args.episodes,
                                                   adaptation_for(bundle))
                cells.append(f"{t_raw:.1f} / {1 / t_rel:.2f}")
            except DatasetError:
                cells.append("-")
        print(f"| {name} (raw temperature / margin-unit sharpness) | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
