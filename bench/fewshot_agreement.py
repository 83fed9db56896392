"""Training and app must not disagree: ``python -m training evaluate`` (torch fp32 checkpoint,
autograd inner loop) against ``inspector evaluate-fewshot`` (the exported int8 ONNX bundle, NumPy
inner loop) on the same data and seeded episodes, through both command lines.

    python bench/fewshot_agreement.py runs/distill_broad3/distill_final.pt --bundle assets/models/default

The bundle must be the one exported from the checkpoint (its ``provenance.checkpoint``); the
script refuses a pair that does not match.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = ("fastener_clip_missing,fastener_clip_present,rail_break_or_gap,rail_joint_ok,"
              "fishplate_bolt_missing,fishplate_ok")
GRID = [("track_fault", ["--classes", COMPONENTS], w, s, q) for w, s, q in [(2, 1, 5), (2, 5, 3), (5, 1, 5), (5, 5, 3)]]
GRID += [("sleeper", ["--group-column", "run"], w, s, 15) for w, s in [(3, 1), (3, 5)]]


def last_json(command: list[str]) -> dict:
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--bundle", type=Path, default=ROOT / "assets" / "models" / "default",
                        help="the bundle exported from CHECKPOINT (default: the shipped one)")
    args = parser.parse_args()
    source = json.loads((args.bundle / "bundle.json").read_text()).get("provenance", {}).get("checkpoint", "")
    if (ROOT / source).resolve() != args.checkpoint.resolve():  # provenance paths are relative to the repository
        sys.exit(f"{args.bundle} was exported from {source or 'an unnamed checkpoint'}, not {args.checkpoint}; "
                 "pass the bundle exported from it with --bundle")
    lines = ["| set | way | shot | training evaluate (torch fp32) | inspector evaluate-fewshot (ONNX int8) "
             "| difference | within CI |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, extra, way, shot, queries in GRID:
        common = [str(args.data / name), "--way", str(way), "--shot", str(shot), "--queries", str(queries),
                  "--episodes", str(args.episodes), "--holdout-groups", "0.3", *extra]
        train = last_json([sys.executable, "-m", "training", "evaluate", str(args.checkpoint), *common])
        app = last_json([sys.executable, "-m", "inspector", "evaluate-fewshot", *common, "--bundle", str(args.bundle),
                         "--json"])
        diff = app["accuracy"] - train["accuracy"]
        ok = abs(diff) <= max(train["ci95"], app["ci95"])
        lines.append(f"| {name} | {way} | {shot} | {train['accuracy']:.2f} ± {train['ci95']:.2f} | "
                     f"{app['accuracy']:.2f} ± {app['ci95']:.2f} | {diff:+.2f} | {'yes' if ok else 'NO'} |")
        print(lines[-1], flush=True)
    out = ROOT / "bench" / "results" / "fewshot_agreement.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
