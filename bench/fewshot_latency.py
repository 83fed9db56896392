"""Few-shot latencies on this CPU, with the shipped bundle:

* "add" to a usable head for 5 examples: ``FaultLibrary.add``, the one path of ``inspector faults
  add`` and the app's Adapt (frames decoded from the video, embedded, normal examples from the
  scan's cache, head fitted and calibrated, leave-one-out quality, stored);
* re-classification of 400,000 cached crops (a synthetic store: 80,000 frames x 5 crops).

    python bench/fewshot_latency.py        # writes bench/results/fewshot_latency.md
    python bench/fewshot_latency.py --bundle runs/bundle_x     # a candidate bundle instead
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.adapt import ClassSpec, adapt, adaptation_for  # noqa: E402
from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.examples import read_examples  # noqa: E402
from inspector.faults import FaultLibrary, active_head  # noqa: E402
from inspector.regions import load_profile  # noqa: E402
from inspector.scan import Scanner, reclassify  # noqa: E402
from inspector.store import DetectionRow, Store  # noqa: E402

DEMO = ROOT / "assets" / "demo"


def add_latency(work: Path, bundle_dir: Path | None, repeats: int = 5) -> list[float]:
    bundle = load_bundle(bundle_dir)
    backbone = Backbone(bundle)
    scanned = work / "scanned"
    with Store(scanned) as store:
        Scanner(store, backbone, active_head(store, bundle), load_profile("demo")).scan(DEMO / "demo.mp4")
    examples = read_examples(DEMO / "bird_nest_examples.csv")
    total = []
    for i in range(repeats):
        project = work / f"p{i}"
        shutil.copytree(scanned, project)
        with Store(project) as store:
            library = FaultLibrary(store, bundle, backbone)
            started = time.perf_counter()
            change = library.add("bird_nest", examples)
            total.append(time.perf_counter() - started)
            assert change.quality.loo_accuracy is not None
    return total


def reclassify_latency(work: Path, bundle_dir: Path | None, crops: int = 400_000,
                       per_frame: int = 5) -> tuple[float, float]:
    bundle = load_bundle(bundle_dir)
    with Store(work / "big") as store:
        from inspector.video import VideoInfo

        clip = work / "stand-in.mp4"
        clip.write_bytes(b"\0" * 1024)
        video = store.add_video(VideoInfo(clip, "mp4", "h264", 25.0, crops // per_frame, 1920, 1080))
        profile = load_profile("demo")
        scan = store.open_scan(video.id, bundle.digest, bundle.name, "int8", profile.name, profile.digest,
                               profile.source, 1)
        names = [s.name for s in profile.crop_specs()]
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        for start in range(0, crops // per_frame, 4000):
            frames = range(start, min(start + 4000, crops // per_frame))
            vectors = rng.normal(0, 1, (len(frames) * per_frame, bundle.embedding_size)).astype(np.float16)
            blobs = [(f, n, vectors[i * per_frame + j].tobytes()) for i, f in enumerate(frames)
                     for j, n in enumerate(names)]
            store.write_batch(scan.id, [DetectionRow(f, "track", "track", None, 0.0, False) for f in frames], blobs,
                              frames[-1] + 1, frames[-1] + 1, 0)
        fill = time.perf_counter() - started
        store.finish_scan(scan.id, "done")
        # A head with classes in every region (the base head's track classes plus a catenary fault and
        # its normal class), so all 400,000 crops are classified, not only the track ones.
        base = active_head(store, bundle)
        support = rng.normal(0, 1, (len(base.classes) * 5 + 10, bundle.embedding_size)).astype(np.float32)
        specs = [ClassSpec(c, n, r) for c, n, r in zip(base.classes, base.normal, base.regions)]
        specs += [ClassSpec("bird_nest", False, ("catenary",)), ClassSpec("normal", True, ("catenary",))]
        labels = [c for c in base.classes for _ in range(5)] + ["bird_nest"] * 5 + ["normal"] * 5
        where = ["track"] * (len(base.classes) * 5) + ["catenary"] * 10
        head, _ = adapt(support, labels, specs, adaptation_for(bundle), where, judged=np.zeros(len(labels), bool))
        started = time.perf_counter()
        result = reclassify(store, head)
        seconds = time.perf_counter() - started
        assert result.crops == crops
    return seconds, fill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle folder (default: the shipped one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        total = add_latency(work, args.bundle)
        seconds, fill = reclassify_latency(work, args.bundle)
    lines = ["| measurement | median | runs |", "|---|---:|---|",
             f"| `faults add` / the app's Adapt, 5 examples on the scanned demo: decode 5 frames, embed, 12 cached "
             f"normals, fit and calibrate, leave-one-out, store | {statistics.median(total):.3f} s | "
             f"{', '.join(f'{t:.3f}' for t in total)} |",
             f"| re-classify 400,000 cached crops (float16, 80,000 frames x 5 crops, every crop in a classified region) | {seconds:.2f} s | 1 |",
             "", f"(Writing the synthetic 400,000-crop store took {fill:.0f} s.)"]
    text = "\n".join(lines) + "\n"
    out = ROOT / "bench" / "results" / "fewshot_latency.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
