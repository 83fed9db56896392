"""Which of the app's gates stops each passage of ground-truth videos (../shared/tools): for every
passage of a video's evaluation part, whether any of its frames has the added fault type as the
head's top class, also above its alarm threshold, and also within its "none of these" floor. Says
whether misses come from the features (top class) or from the open-set rules (threshold, floor).

    python bench/gt_gates.py runs/gt/mt_crack runs/gt2/mt_crack_s* [--bundle DIR]
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.review_learning import judge_flow  # noqa: E402
from inspector.heads import Head  # noqa: E402
from inspector.store import Store  # noqa: E402

GATES = ("top class", "+ threshold", "+ floor")


def gates(gt: Path, bundle: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Passages (fault, normal) of the evaluation part that pass each gate: 4 counts each."""
    truth = list(csv.DictReader(open(gt / "ground_truth.csv")))
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        fault = judge_flow(gt, project, bundle)
        with Store(project) as store:
            head = Head.from_parts(*store.head_parts(store.head_versions()[-1].version)[:2])
            rows = [row for chunk in store.scan_embeddings(store.scans()[-1].id) for row in chunk]
    frames = np.array([r[0] for r in rows])
    embeddings = np.stack([np.frombuffer(r[2], np.float16).astype(np.float32) for r in rows])
    region = next(iter(set(r[1] for r in rows)))
    features = head.features(embeddings, region)
    logits = head.logit_scale * (features @ head.weight.T + head.bias)
    logits[:, ~head.applies(region)] = -np.inf
    top = logits.argmax(axis=1)
    score = head.scores(logits, region)[np.arange(len(top)), top]
    on_top = top == head.classes.index(fault)
    alarmed = on_top & (score > head.threshold_of(top))
    known = alarmed & head.known(features, top, embeddings)
    counts = {"1": np.zeros(4, int), "0": np.zeros(4, int)}
    for segment in truth:
        if segment["part"] == "eval":
            chosen = (frames >= int(segment["start_frame"])) & (frames <= int(segment["end_frame"]))
            counts[segment["fault"]] += [1, on_top[chosen].any(), alarmed[chosen].any(), known[chosen].any()]
    return counts["1"], counts["0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+", type=Path, help="folders made by make_gt_video.py")
    parser.add_argument("--bundle", type=Path)
    args = parser.parse_args()
    bundle = ["--bundle", str(args.bundle)] if args.bundle else []
    print("| video | fault passages | " + " | ".join(GATES) + " | normal passages | " + " | ".join(GATES) + " |")
    print("|---|" + "---:|" * 8)
    totals = [np.zeros(4, int), np.zeros(4, int)]
    for gt in args.videos:
        passed = gates(gt, bundle)
        for total, counts in zip(totals, passed):
            total += counts
        print(f"| {gt.name} | " + " | ".join(" | ".join(map(str, c)) for c in passed) + " |", flush=True)
    if len(args.videos) > 1:
        print(f"| all {len(args.videos)} | " + " | ".join(" | ".join(map(str, c)) for c in totals) + " |")


if __name__ == "__main__":
    main()
