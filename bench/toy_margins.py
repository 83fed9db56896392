"""The distribution behind the toy-task test's margins: every algorithm over several seeds.

``tests/training/test_training.py::test_every_algorithm_learns_the_toy_task`` asserts that the
held-out query loss falls and the accuracy rises by a margin. One seed says little (a different
CPU's rounding gives another trajectory), so this measures the gain over seeds. A step that does not
learn leaves the held-out figures exactly where they were (the same tasks, the same weights).

    python bench/toy_margins.py --seeds 10 --out bench/results/toy_margins.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.training.test_training import config, held_out  # noqa: E402
from tests.training.toy import toy_pool  # noqa: E402
from training.algorithms import Algorithm, make  # noqa: E402
from training.backbone import EmbeddingNet  # noqa: E402
from training.train import meta_train  # noqa: E402


def draw(algorithm: Algorithm, seed: int, **changes) -> dict:
    """Train on the toy family with the test's settings (or ``changes`` to them) from ``seed``;
    held-out loss and accuracy before and after."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(seed)
        changes = {"seed": seed, **changes}
        cfg = config(Path(tmp), algorithm, **changes)
        learner = make(algorithm, EmbeddingNet(), cfg.meta)
        learner.train()
        before = held_out(learner, toy_pool(per_class=30, seed=1))
        meta_train(cfg, toy_pool(per_class=100, seed=0))
        learner.load_state_dict(torch.load(cfg.out_dir / "meta_last.pt", weights_only=True)["learner"])
        learner.train()
        after = held_out(learner, toy_pool(per_class=30, seed=1))
    return {"seed": seed, "loss_before": before[0], "loss_after": after[0], "gain": after[1] - before[1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--algorithms", default=",".join(a.value for a in Algorithm))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = {}
    for name in args.algorithms.split(","):
        algorithm = Algorithm(name)
        draws = [draw(algorithm, seed) for seed in range(args.seeds)]
        gains = np.array([d["gain"] for d in draws])
        rows[name] = {"draws": draws, "loss_fell": int(sum(d["loss_after"] < d["loss_before"] for d in draws)),
                      "gain_min": float(gains.min()), "gain_median": float(np.median(gains))}
        print(f"| {name} | {rows[name]['loss_fell']}/{args.seeds} | {gains.min():+.3f} | {np.median(gains):+.3f} |",
              flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
