"""Scan throughput on one 1080p H.264 clip, measured in one run:

* decode-only frames/s with OpenCV (every frame, to BGR): the limit the goal is set against,
  measured between every two scans; each scan is divided by the mean of the decode-only runs just
  before and after it, so a slower or faster spell of the (shared, virtual) machine cancels out;
  and decode-only with PyAV to YUV planes, the scan's own decoder, a stricter limit;
* ``inspector`` scan end to end (decode thread + batched ONNX inference + SQLite writes), two
  regions, int8 and fp32, every frame and every 2nd/5th frame;
* what each change of issue 16 bought: the every-frame scan with the changes undone one by one
  (the earlier code paths are rebuilt here, in the benchmark only);
* the naive way: torch eager ResNet18, one crop at a time, 224 px (needs torch);
* each stage alone (decode, crop and resize, normalise, int8 backbone), in ms per frame;
* resident memory during a long scan, sampled at each quarter of the video.

    python bench/scan_throughput.py --seconds 60     # writes bench/results/scan_throughput.md

The clip is made from the demo run, upscaled to 1920x1080 and encoded with libx264 by the ffmpeg
binary of the ``imageio-ffmpeg`` package.
"""
from __future__ import annotations

import argparse
import contextlib
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

import inspector.backbone  # noqa: E402
import inspector.regions  # noqa: E402
import inspector.scan  # noqa: E402
from inspector.backbone import Backbone  # noqa: E402
from inspector.bundle import Preprocessing, load_bundle  # noqa: E402
from inspector.heads import Head  # noqa: E402
from inspector.regions import crop_frame, crop_planes, load_profile  # noqa: E402
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


def decode_planes_only(clip: Path) -> float:
    start = time.perf_counter()
    with VideoReader(clip) as reader:
        count = sum(1 for _ in reader.planes())
        assert count == reader.info.frame_count
    return count / (time.perf_counter() - start)


# The code paths issue 16 replaced, rebuilt for the ablation (cumulative: each row undoes one more).
def _area_resize(image: np.ndarray, size: int, dst: np.ndarray | None = None) -> np.ndarray:
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), dst=dst, interpolation=interpolation)


def _decode_bgr(self, reader, specs, start, step, out, cancel, failure) -> None:
    try:
        for frame in reader.frames(start=start, step=step):
            out.put((frame.index, crop_frame(frame.image, specs, self.backbone.bundle.input_size)))
    except BaseException as exc:
        failure.append(exc)
    finally:
        out.put(inspector.scan._END)


def _normalise_transposed(self, crops: np.ndarray) -> np.ndarray:
    x = crops.transpose(0, 3, 1, 2).astype(np.float32)
    x *= (1.0 / (255.0 * np.asarray(self.std, np.float32))).reshape(1, 3, 1, 1)
    x -= (np.asarray(self.mean, np.float32) / np.asarray(self.std, np.float32)).reshape(1, 3, 1, 1)
    return x


UNDO = {
    "fast resize": (inspector.regions, "shrink", _area_resize),
    "YUV planes": (Scanner, "_decode", _decode_bgr),
    "plane-wise normalise": (Preprocessing, "normalise", _normalise_transposed),
    "sleeping workers": (inspector.backbone, "SESSION_CONFIG", {}),
}


@contextlib.contextmanager
def undone(changes: list[str]):
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in (UNDO[c] for c in changes)]
    try:
        for change in changes:
            owner, name, old = UNDO[change]
            setattr(owner, name, old)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def stage_costs(clip: Path, threads: int, frames: int = 300) -> list[tuple[str, float]]:
    """Each stage of an every-frame scan alone, in ms per frame (wall, on the scan's threads)."""
    with VideoReader(clip) as reader:
        started = time.perf_counter()
        read = sum(1 for _ in reader.planes(stop=frames))
        decode = (time.perf_counter() - started) / read
        planes = list(reader.planes(stop=50))  # a few frames in memory for the stages below
    bundle = load_bundle()
    size = bundle.input_size
    specs = load_profile(PROFILE).crop_specs()
    started = time.perf_counter()
    crops = np.concatenate([crop_planes(frame, specs, size) for frame in planes])
    crop = (time.perf_counter() - started) / len(planes)
    started = time.perf_counter()
    batches = [bundle.preprocessing.normalise(crops[i:i + 32]) for i in range(0, len(crops), 32)]
    normalise = (time.perf_counter() - started) / len(planes)
    backbone = Backbone(bundle, "int8", threads)
    backbone.embed(crops[:32])  # warm-up
    started = time.perf_counter()
    backbone.embed(crops, batch_size=32)
    infer = (time.perf_counter() - started) / len(planes) - normalise
    del batches
    return [("decode to YUV planes (FFmpeg through PyAV)", decode),
            (f"crop and resize in the planes, then to RGB ({len(specs)} regions)", crop),
            ("normalise crops to float NCHW", normalise),
            (f"int8 backbone ({len(specs)} crops, batches of 32)", infer)]


def scan_fps(clip: Path, bundle_dir: Path | None, precision: str, step: int, threads: int,
             memory: list | None = None) -> float:
    bundle = load_bundle(bundle_dir)
    backbone = Backbone(bundle, precision, threads)
    backbone.embed(np.zeros((32, bundle.input_size, bundle.input_size, 3), np.uint8))  # ONNX Runtime's first run
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
    parser.add_argument("--also", action="append", default=[], metavar="NAME=BUNDLE",
                        help="another bundle's int8 scan, every frame, in the same run (e.g. the one shipped before)")
    parser.add_argument("--naive-frames", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scan_throughput.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip_1080p.mp4", args.seconds)
        limits = [decode_only(clip)]

        def paired(fps: float) -> tuple[float, float]:
            """A scan's frames/s and the decode-only limit around it (measured next)."""
            limits.append(decode_only(clip))
            return fps, (limits[-2] + limits[-1]) / 2

        planes = paired(decode_planes_only(clip))
        rows = []
        memory: list = []
        runs = [(None, "int8", step, "") for step in (1, 2, 5)]
        if args.fp32_bundle:
            runs += [(args.fp32_bundle, "fp32", step, "") for step in (1, 2)]
        for entry in args.also:
            name, _, folder = entry.partition("=")
            runs.append((Path(folder), "int8", 1, f", {name} ({folder})"))
        for bundle_dir, precision, step, which in runs:
            record = memory if (bundle_dir, precision, step) == (None, "int8", 1) else None
            every = {1: "every frame", 2: "every 2nd frame"}.get(step, f"every {step}th frame")
            rows.append((f"inspector scan, {precision}, {every}{which}",
                         paired(scan_fps(clip, bundle_dir, precision, step, args.threads, record))))
        changes = list(UNDO)
        ablation = []
        for count in range(len(changes) + 1):
            with undone(changes[:count]):
                name = "all of issue 16's changes" if not count else "without " + ", ".join(changes[:count])
                ablation.append((name, paired(scan_fps(clip, None, "int8", 1, args.threads))))
        stages = stage_costs(clip, args.threads)
        naive = naive_torch(clip, args.naive_frames)
        if naive is not None:
            rows.append((f"naive: torch eager, one crop at a time, 224 px (first {args.naive_frames} frames)",
                         paired(naive)))
    frames = int(args.seconds * 25)
    head = ["| run | frames/s | decode-only around it | × decode-only |", "|---|---:|---:|---:|"]
    lines = [f"1080p H.264 clip, {frames} frames at 25 fps, two regions (2 crops a frame), "
             f"{args.threads} threads, {os.cpu_count()} cores. Decode-only (OpenCV to BGR, every frame), "
             f"the limit: {min(limits):.1f} to {max(limits):.1f} frames/s over {len(limits)} runs.", "", *head,
             f"| decode only (PyAV to YUV planes, the scan's decoder) | {planes[0]:.1f} | {planes[1]:.1f} | "
             f"{planes[0] / planes[1]:.2f} |"]
    lines += [f"| {name} | {fps:.1f} | {limit:.1f} | {fps / limit:.2f} |" for name, (fps, limit) in rows]
    lines += ["", "What each change bought (every frame, int8; each row undoes one more):", "", *head]
    lines += [f"| {name} | {fps:.1f} | {limit:.1f} | {fps / limit:.2f} |" for name, (fps, limit) in ablation]
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
