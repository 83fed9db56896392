"""The judge's flow on ground-truth videos of ../shared/tools, side by side with its anchor.

For each video folder made by ``make_gt_video.py``: scan it, add the fault type from its
``labels.csv`` (5 fault + 5 normal frames), and score the findings with ``score_gt_video.py``;
then the tool's anchor (frozen EfficientNet-Lite0 at 224 px + logistic regression on the same
frames) on the same video. A last row pools the videos: passages found, findings, and the share
of the findings that are true.

    python ../shared/tools/make_gt_video.py ../shared/data/sleeper runs/gt/sleeper_poor --fault poor --normal good
    python bench/gt_videos.py runs/gt/sleeper_poor runs/gt/pcb_open ... [--bundle DIR] [--no-anchor]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.review_learning import judge_flow  # noqa: E402

TOOLS = ROOT.parent / "shared" / "tools"


def scored(gt: Path, *who: str) -> dict:
    out = subprocess.run([sys.executable, str(TOOLS / "score_gt_video.py"), str(gt), *who],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cell(result: dict) -> str:
    return f"{result['found']}/{result['fault_segments']} | {result['findings']} | {result['precision']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+", type=Path, help="folders made by make_gt_video.py")
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--no-anchor", action="store_true")
    args = parser.parse_args()
    bundle = ["--bundle", str(args.bundle)] if args.bundle else []
    print("| video | ours: found | findings | precision | anchor: found | findings | precision |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    totals: dict[str, Counter] = {"ours": Counter(), "anchor": Counter()}
    for gt in args.videos:
        with tempfile.TemporaryDirectory() as tmp:
            project = Path(tmp) / "project"
            judge_flow(gt, project, bundle)
            ours = scored(gt, "--project", str(project))
        anchor = None if args.no_anchor else scored(gt, "--anchor")
        for who, result in (("ours", ours), ("anchor", anchor)):
            if result:
                totals[who].update({k: result[k] for k in ("found", "fault_segments", "findings", "true_findings")})
        print(f"| {gt.name} | {cell(ours)} | {cell(anchor) if anchor else ' | '.join(['-'] * 3)} |", flush=True)
    if len(args.videos) > 1:  # pooled over the videos: passages found, findings, share of them true
        shown = [f"{t['found']}/{t['fault_segments']} | {t['findings']} | {t['true_findings'] / max(t['findings'], 1):.2f}"
                 if t else " | ".join(["-"] * 3) for t in totals.values()]
        print(f"| all {len(args.videos)} | {shown[0]} | {shown[1]} |")


if __name__ == "__main__":
    main()
