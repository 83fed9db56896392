"""Throughput of a fleet scan on Ray: the same videos scanned with 1 and 2 local workers, against
the ordinary local scan of the same videos (all with the shipped bundle and the demo profile).

    python bench/ray_throughput.py --copies 4        # four copies of the demo run (330 frames each)

Prints a Markdown table: wall time, frames/s, speed-up over one worker, and each worker's peak
memory per video (flat: a worker's memory does not grow with the number of videos it scans).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.faults import active_head  # noqa: E402
from inspector.fleet import scan_on_ray  # noqa: E402
from inspector.regions import load_profile  # noqa: E402
from inspector.scan import Scanner, scan_many  # noqa: E402
from inspector.store import Store  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4)
    args = parser.parse_args()
    memory: list[str] = []

    class Peaks(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "peak memory" in record.getMessage():
                memory.append(record.getMessage().rsplit("memory ", 1)[1])

    logging.getLogger("inspector.fleet").addHandler(Peaks())
    logging.getLogger("inspector.fleet").setLevel(logging.INFO)
    bundle = load_bundle(None)
    with tempfile.TemporaryDirectory() as tmp:
        videos = []
        for k in range(args.copies):  # distinct files (the store keys videos by content): append a byte
            path = Path(tmp) / f"run{k}.mp4"
            shutil.copy(ROOT / "assets" / "demo" / "demo.mp4", path)
            with path.open("ab") as handle:
                handle.write(bytes([k]))
            videos.append(path)
        rows = []
        for label, workers in (("local scan (2 threads)", None), ("Ray, 1 worker", 1), ("Ray, 2 workers", 2)):
            project = Path(tmp) / label.replace(" ", "_").replace(",", "")
            with Store(project) as store:
                head = active_head(store, bundle)
                threads = 2 if workers is None else 1
                scanner = Scanner(store, Backbone(bundle, threads=threads), head, load_profile("demo"))
                memory.clear()
                started = time.perf_counter()
                if workers is None:
                    results, _ = scan_many(scanner, videos)
                else:
                    results, _ = scan_on_ray(scanner, bundle.path, videos, workers=workers)
                seconds = time.perf_counter() - started
            frames = sum(r.samples for r in results)
            rows.append((label, seconds, frames / seconds, ", ".join(memory)))
            print(f"{label}: {seconds:.1f} s", flush=True)
    one = next(r[2] for r in rows if r[0] == "Ray, 1 worker")
    print("\n| scan | wall time | frames/s | vs Ray 1 worker | worker peak memory per video (MB) |")
    print("|---|---:|---:|---:|---|")
    for label, seconds, rate, peaks in rows:
        print(f"| {label} | {seconds:.1f} s | {rate:.0f} | {rate / one:.2f}x | {peaks or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
