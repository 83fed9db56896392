"""Anomaly mode's cost, in one run on the 1080p clip of ``scan_throughput.py``:

* fitting a region from 200 normal frames (decode, crop, patch features, coreset, threshold), with
  the demo profile's catenary band (4 tiles: 800 crops) and the two-region profile's (1 crop);
* a scan every frame with the two-region profile, with and without an anomaly model of its
  catenary region: frames/s and their ratio, and resident memory at each quarter.

    python bench/anomaly_speed.py --seconds 40    # needs imageio-ffmpeg; writes bench/results/anomaly_speed.md
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scan_throughput import PROFILE, make_clip, rss_mb  # noqa: E402
from inspector.anomalies import fit_region, normal_crops_from_video  # noqa: E402
from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.heads import Head  # noqa: E402
from inspector.regions import load_profile  # noqa: E402
from inspector.scan import Scanner  # noqa: E402
from inspector.store import Store  # noqa: E402
from inspector.video import VideoReader  # noqa: E402


def fit_seconds(clip: Path, profile_name: str, backbone: Backbone) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as project, Store(project) as store:
        started = time.perf_counter()
        crops, _ = normal_crops_from_video(store, clip, 0, 199, "catenary", backbone.bundle.input_size,
                                           load_profile(profile_name))
        fit_region(store, backbone, "catenary", crops, 200, "bench")
        return time.perf_counter() - started, len(crops)


def scan(clip: Path, backbone: Backbone, with_anomaly: bool) -> tuple[float, list[float]]:
    head = Head.load(backbone.bundle.path, backbone.bundle.head_stem)
    profile = load_profile(PROFILE)
    with tempfile.TemporaryDirectory() as project, Store(project) as store:
        if with_anomaly:
            crops, _ = normal_crops_from_video(store, clip, 0, 199, "catenary", backbone.bundle.input_size, profile)
            fit_region(store, backbone, "catenary", crops, 200, "bench")
        scanner = Scanner(store, backbone, head, profile)
        assert bool(scanner.anomaly) == with_anomaly
        memory: list[float] = []
        marks = [25, 50, 75, 100]

        def progress(p) -> None:
            if marks and 100 * p.frame // p.frame_count >= marks[0]:
                marks.pop(0)
                memory.append(rss_mb())

        started = time.perf_counter()
        assert scanner.scan(clip, progress=progress).status == "done"
        elapsed = time.perf_counter() - started
    with VideoReader(clip) as reader:
        return reader.info.frame_count / elapsed, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "anomaly_speed.md")
    args = parser.parse_args()
    backbone = Backbone(load_bundle(), "int8")
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", args.seconds)
        fits = {name: fit_seconds(clip, name, backbone) for name in ("demo", str(PROFILE))}
        plain, plain_memory = scan(clip, backbone, with_anomaly=False)
        anomaly, anomaly_memory = scan(clip, backbone, with_anomaly=True)
    lines = ["| measurement | value |", "|---|---:|"]
    for name, (seconds, crops) in fits.items():
        lines.append(f"| fit from 200 frames of 1080p, {Path(name).stem} profile ({crops} crops) | {seconds:.1f} s |")
    lines += [f"| scan every frame, no anomaly model | {plain:.1f} frames/s |",
              f"| scan every frame, anomaly model on the catenary | {anomaly:.1f} frames/s |",
              f"| ratio with / without | {anomaly / plain:.2f} |",
              "| memory at 25/50/75/100 %, without | " + ", ".join(f"{m:.0f}" for m in plain_memory) + " MB |",
              "| memory at 25/50/75/100 %, with | " + ", ".join(f"{m:.0f}" for m in anomaly_memory) + " MB |"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
