"""Findings before and after learning from review, against a run's ground truth.

The flow a reviewer follows, through the CLI's own functions: scan the run, add the fault types
from their examples, review the first N findings in time order (by the ground truth: confirmed
when its best frame, the one a reviewer sees, lies in a fault passage of its crop, as that
passage's class; else rejected),
``faults refit --reclassify``; then score the findings on the rest of the run (after the last
reviewed finding) against the same part before the review.

    python bench/review_learning.py                      # the demo, bird nest from its 5 examples
    python bench/review_learning.py --video gt/video.mp4 --truth gt/ground_truth.csv \\
        --profile gt/profile.toml --examples crack=gt/labels.csv    # a ../shared/tools video
    python bench/review_learning.py --gt runs/gt/* runs/gt2/*     # many of them, pooled

Prints a Markdown table (per group of fault classes: passages found, findings, precision); with
``--gt``, a row per video folder made by ``make_gt_video.py`` (its fault type added from its
``labels.csv``) and a last row pooling the rest of every run before and after review.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import sys
import tempfile
from dataclasses import astuple
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.cli import main as inspector  # noqa: E402
from inspector.store import FindingRecord, Store  # noqa: E402
from training.demo_truth import Score, Segment, load_truth, score  # noqa: E402

DEMO = ROOT / "assets" / "demo"


def run(*argv: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = inspector(list(argv))
    if code:
        raise SystemExit(f"inspector {' '.join(argv)}: exit code {code}")


def gt_fault(gt: Path) -> str:
    """The fault type of a ``make_gt_video.py`` folder: the class its ground truth marks as a fault."""
    return next(r["cls"] for r in csv.DictReader(open(gt / "ground_truth.csv")) if r["fault"] == "1")


def judge_flow(gt: Path, project: Path, bundle: list[str]) -> str:
    """The judge's flow on a ``make_gt_video.py`` folder up to its findings: scan the video, add its
    fault type from its ``labels.csv`` (5 fault + 5 normal frames) and re-classify. Returns the type."""
    fault = gt_fault(gt)
    run("scan", str(gt / "video.mp4"), "--project", str(project), "--profile", str(gt / "profile.toml"), "-q", *bundle)
    run("faults", "add", fault, "--examples", str(gt / "labels.csv"), "--project", str(project), "--reclassify", *bundle)
    return fault


def verdict(finding: FindingRecord, truth: list[Segment]) -> tuple[str, str | None]:
    """What a reviewer who knows the truth does with a finding, seeing its best frame."""
    for segment in truth:
        if (segment.fault and segment.crop == finding.crop
                and segment.start_frame <= finding.best_frame <= segment.end_frame):
            return "--confirm", None if segment.class_name == finding.class_name else segment.class_name
    return "--reject", None


def table(rows: list[tuple[str, str, object]]) -> str:
    lines = ["| classes | stage | passages found | findings | precision |", "|---|---|---:|---:|---:|"]
    for group, stage, s in rows:
        lines.append(f"| {group} | {stage} | {s.found}/{s.segments} | {s.findings} | {s.precision:.2f} |")
    return "\n".join(lines)


def review_flow(video: Path, truth: list[Segment], profile: str, examples: list[str], reviews: int,
                bundle: list[str], sample_normals: bool) -> tuple[list[tuple[str, str, Score]], list[str]]:
    """Scan, add the fault types, review the first ``reviews`` findings by the truth, refit and
    reclassify: the table's rows per group of fault classes, and the verdicts given."""
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        run("scan", str(video), "--project", str(project), "--profile", profile, *bundle)
        for item in examples:
            name, csv_path = item.split("=", 1)
            run("faults", "add", name, "--examples", csv_path, "--project", str(project), "--reclassify", *bundle)
        with Store(project) as store:
            before = store.findings()
        start = min(s.start_frame for s in truth)
        waiting = sorted((f for f in before if f.end_frame >= start), key=lambda f: (f.start_frame, f.crop))
        first = waiting[:reviews]
        for finding in first:
            decision, as_class = verdict(finding, truth)
            run("review", str(finding.id), decision, *(["--as", as_class] if as_class else []),
                "--project", str(project), *bundle)
        run("faults", "refit", "--project", str(project), "--reclassify", *bundle,
            *(["--sample-normals"] if sample_normals else []))
        with Store(project) as store:
            after = store.findings()
    start = min(s.start_frame for s in truth)  # a ../shared/tools video: its labelled part is not scored
    before, after = ([f for f in fs if f.end_frame >= start] for fs in (before, after))
    cut = max([f.end_frame + 1 for f in first] + [start])
    rest = [s for s in truth if s.start_frame >= cut]
    later = lambda fs: [f for f in fs if f.start_frame >= cut]  # noqa: E731
    groups: dict[str, set[str]] = {}
    for segment in truth:
        if segment.fault:
            groups.setdefault(segment.crop.split("[")[0], set()).add(segment.class_name)
    rows = []
    for group, classes in sorted(groups.items()):
        rows.append((", ".join(sorted(classes)), "whole run, before review", score(before, truth, classes)))
        rows.append(("", f"after frame {cut}, before review", score(later(before), rest, classes)))
        rows.append(("", f"after frame {cut}, after {len(first)} reviews + refit", score(later(after), rest, classes)))
    return rows, [verdict(f, truth)[0] for f in first]


def pooled_videos(folders: list[Path], reviews: int, bundle: list[str], sample_normals: bool) -> None:
    """The flow on each ../shared/tools video, and the rest of the runs pooled before and after review."""
    print("| video | reviews (confirmed) | rest before review: found | findings | precision | "
          "after review: found | findings | precision |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    totals = [Score(0, 0, 0, 0), Score(0, 0, 0, 0)]
    for gt in folders:
        rows, verdicts = review_flow(gt / "video.mp4", load_truth(gt / "ground_truth.csv"), str(gt / "profile.toml"),
                                     [f"{gt_fault(gt)}={gt / 'labels.csv'}"], reviews, bundle, sample_normals)
        rest = [rows[1][2], rows[2][2]]
        totals = [Score(*(a + b for a, b in zip(astuple(t), astuple(r)))) for t, r in zip(totals, rest)]
        shown = " | ".join(f"{r.found}/{r.segments} | {r.findings} | {r.precision:.2f}" for r in rest)
        print(f"| {gt.name} | {len(verdicts)} ({verdicts.count('--confirm')}) | {shown} |", flush=True)
    shown = " | ".join(f"{r.found}/{r.segments} | {r.findings} | {r.precision:.3f}" for r in totals)
    print(f"| all {len(folders)} | | {shown} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEMO / "demo.mp4")
    parser.add_argument("--truth", type=Path, default=DEMO / "ground_truth.csv")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--examples", action="append", metavar="NAME=CSV",
                        help=f"a fault type to add (default: bird_nest={DEMO / 'bird_nest_examples.csv'})")
    parser.add_argument("--gt", nargs="+", type=Path, metavar="DIR",
                        help="folders made by make_gt_video.py, instead of --video/--truth/--profile/--examples")
    parser.add_argument("--reviews", type=int, default=10)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--sample-normals", action="store_true", help="refit with unflagged crops as normals")
    args = parser.parse_args()
    bundle = ["--bundle", str(args.bundle)] if args.bundle else []
    if args.gt:
        pooled_videos(args.gt, args.reviews, bundle, args.sample_normals)
        return
    examples = args.examples or [f"bird_nest={DEMO / 'bird_nest_examples.csv'}"]
    rows, verdicts = review_flow(args.video, load_truth(args.truth), args.profile, examples, args.reviews, bundle,
                                 args.sample_normals)
    print(f"reviewed {len(verdicts)} findings: {verdicts.count('--confirm')} confirmed, "
          f"{verdicts.count('--reject')} rejected\n")
    print(table(rows))


if __name__ == "__main__":
    main()
