"""Scan throughput on one 1080p H.264 clip, measured in one run:

* decode-only frames/s (OpenCV, every frame): the limit a scan cannot beat;
* ``inspector`` scan end to end (decode thread + batched ONNX inference + SQLite writes), two
  regions, int8 and fp32, every frame and every 2nd/5th frame;
* the naive way: torch eager ResNet18, one crop at a time, 224 px (needs torch);
* each stage alone (decode, colour conversion, crop and resize, normalise, int8 backbone), in
  ms per frame, so the gap between the stages' sum and the scan shows what overlap buys;
* resident memory during a long scan, sampled at each quarter of the video.

    python bench/scan_throughput.py --seconds 60     # writes bench/results/scan_throughput.md

The clip is made from the demo run, upscaled to 1920x1080 and encoded with libx264 by the ffmpeg
binary of the ``imageio-ffmpeg`` package.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.heads import Head  # noqa: E402
from inspector.regions import crop_frame, load_profile  # noqa: E402
from inspector.scan import Scanner  # noqa: E402
from inspector.store import Store  # noqa: E402
from inspector.video import VideoReader  # noqa: E402

PROFILE = ROOT / "bench" / "profile_two_regions.toml"


def make_clip(path: Path, seconds: float, fps: int = 25) -> Path:
    import imageio_ffmpeg

    source = cv2.VideoCapture(str(ROOT / "assets" / "demo" / "demo.mp4"))
    frames = []
    while True:
        ok, frame = source.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_LINEAR))
    total = int(seconds * fps)
    ffmpeg = subprocess.Popen(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
         "-s", "1920x1080", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
         "-pix_fmt", "yuv420p", str(path)], stdin=subprocess.PIPE)
    for i in range(total):
        ffmpeg.stdin.write(frames[i % len(frames)].tobytes())
    ffmpeg.stdin.close()
    ffmpeg.wait()
    return path


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def decode_only(clip: Path, step: int = 1) -> float:
    start = time.perf_counter()
    with VideoReader(clip) as reader:
        count = sum(1 for _ in reader.frames(step=step))
        total = reader.info.frame_count
    assert count == len(range(0, total, step))
    return total / (time.perf_counter() - start)


def stage_costs(clip: Path, threads: int, frames: int = 300) -> list[tuple[str, float]]:
    """Each stage of an every-frame scan alone, in ms per frame (wall, on the scan's threads): what
    a crop costs end to end, and where the time goes."""
    capture = cv2.VideoCapture(str(clip))
    started = time.perf_counter()
    grabbed = sum(1 for _ in range(frames) if capture.grab())
    decode = (time.perf_counter() - started) / grabbed
    capture.release()
    with VideoReader(clip) as reader:
        started = time.perf_counter()
        read = sum(1 for _ in reader.frames(stop=frames))
        convert = (time.perf_counter() - started) / read - decode
        images = [f.image for f in reader.frames(stop=50)]  # a few frames in memory for the stages below
    bundle = load_bundle()
    size = bundle.input_size
    specs = load_profile(PROFILE).crop_specs()
    started = time.perf_counter()
    crops = np.concatenate([crop_frame(image, specs, size) for image in images])
    crop = (time.perf_counter() - started) / len(images)
    started = time.perf_counter()
    batches = [bundle.preprocessing.normalise(crops[i:i + 32]) for i in range(0, len(crops), 32)]
    normalise = (time.perf_counter() - started) / len(images)
    backbone = Backbone(bundle, "int8", threads)
    backbone.embed(crops[:32])  # warm-up
    started = time.perf_counter()
    backbone.embed(crops, batch_size=32)
    infer = (time.perf_counter() - started) / len(images) - normalise
    del batches
    return [("decode (FFmpeg through OpenCV, no colour conversion)", decode),
            ("colour conversion of the whole frame to BGR", convert),
            (f"crop and resize ({len(specs)} regions)", crop),
            ("normalise crops to float NCHW", normalise),
            (f"int8 backbone ({len(specs)} crops, batches of 32)", infer)]


def scan_fps(clip: Path, bundle_dir: Path | None, precision: str, step: int, threads: int,
             memory: list | None = None) -> float:
    bundle = load_bundle(bundle_dir)
    backbone = Backbone(bundle, precision, threads)
    head = Head.load(bundle.path, bundle.head_stem)
    with tempfile.TemporaryDirectory() as project, Store(project) as store:
        scanner = Scanner(store, backbone, head, load_profile(PROFILE), step=step)
        marks = {25, 50, 75, 100}

        def progress(p) -> None:
            percent = 100 * p.frame // p.frame_count
            for mark in sorted(marks):
                if percent >= mark and memory is not None:
                    memory.append((mark, p.frame, rss_mb()))
                    marks.discard(mark)

        start = time.perf_counter()
        result = scanner.scan(clip, progress=progress)
        elapsed = time.perf_counter() - start
        assert result.status == "done"
        with VideoReader(clip) as reader:
            return reader.info.frame_count / elapsed


def naive_torch(clip: Path, frames: int) -> float | None:
    """Per crop: resize to 224, to tensor, one eager ResNet18 forward; no batching, no overlap."""
    try:
        import torch
        from torchvision.models import resnet18
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    model = resnet18(weights=None).eval()
    specs = load_profile(PROFILE).crop_specs()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    start = time.perf_counter()
    with VideoReader(clip) as reader, torch.no_grad():
        for frame in reader.frames(stop=frames):
            for crop in crop_frame(frame.image, specs, 224):
                x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255
                model((x - mean) / std)
    return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="clip length (25 fps)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fp32-bundle", type=Path, help="a bundle with an fp32 backbone, to compare")
    parser.add_argument("--naive-frames", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scan_throughput.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip_1080p.mp4", args.seconds)
        limit = decode_only(clip)
        rows = [("decode only (OpenCV, every frame): the limit", limit)]
        memory: list = []
        runs = [(None, "int8", step) for step in (1, 2, 5)]
        if args.fp32_bundle:
            runs += [(args.fp32_bundle, "fp32", step) for step in (1, 2)]
        for bundle_dir, precision, step in runs:
            record = memory if (precision, step) == ("int8", 1) else None
            every = {1: "every frame", 2: "every 2nd frame"}.get(step, f"every {step}th frame")
            rows.append((f"inspector scan, {precision}, {every}",
                         scan_fps(clip, bundle_dir, precision, step, args.threads, record)))
        stages = stage_costs(clip, args.threads)
        naive = naive_torch(clip, args.naive_frames)
        if naive is not None:
            rows.append((f"naive: torch eager, one crop at a time, 224 px (first {args.naive_frames} frames)", naive))
    frames = int(args.seconds * 25)
    lines = [f"1080p H.264 clip, {frames} frames at 25 fps, two regions (2 crops a frame), "
             f"{args.threads} threads, {os.cpu_count()} cores.", "",
             "| run | frames/s | × decode-only |", "|---|---:|---:|"]
    lines += [f"| {name} | {fps:.1f} | {fps / limit:.2f} |" for name, fps in rows]
    lines += ["", "Each stage alone, ms per frame (wall):", "", "| stage | ms/frame |", "|---|---:|"]
    lines += [f"| {name} | {ms * 1000:.2f} |" for name, ms in stages]
    lines += [f"| sum | {sum(ms for _, ms in stages) * 1000:.2f} |"]
    lines += ["", "Resident memory of the int8 every-frame scan (MB):", "",
              "| progress | frame | RSS MB |", "|---:|---:|---:|"]
    lines += [f"| {mark} % | {frame} | {rss:.0f} |" for mark, frame, rss in memory]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
