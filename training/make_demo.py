"""Build the demo run in ``assets/demo/`` from the CC BY 4.0 track photos of ``shared/data``.

Each segment shows one real photo, panned so that a labelled component (a fastener clip, a
rail joint, a fishplate) passes through the profile's track window: the demo has known faults
at known frames (``ground_truth.csv``). Only photos from the held-out groups are used, so the
default bundle never trained on them. The overhead line above is drawn (synthetic: there is no
open catenary footage), with bird nests on it in a few segments: a fault type the default
bundle does not know, for trying "add a new fault type".

Each run comes with where the train was (``*_positions.csv``: line, chainage, GPS; synthetic, 60
km/h on a made-up line), and the line with its mast register (``demo_masts.csv``, a mast every 50 m). ``demo2`` is a later, shorter run of the same stretch (its first
``RUN2_SEGMENTS`` segments): one fault repaired since (``RUN2_REPAIRED``: a normal component shown
there instead) and one new (``RUN2_NEW``: a fault where the first run had none), for trying
``inspector compare``.

    python -m training.make_demo --data ../shared/data --out assets/demo [--runs demo demo2]
"""
from __future__ import annotations

import argparse
import csv
import random
import subprocess
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from inspector.fewshot import group_fraction
from inspector.regions import load_profile
from training.sources import SPLIT_SEED, TEST_FRACTION, TRACK_COMPONENT_CLASSES

WIDTH, HEIGHT, FPS = 960, 540, 10
SEGMENT_FRAMES = 15
SEGMENT_M = 25.0  # metres of line per segment: 60 km/h
LINE, START_M, START_LAT, START_LON = "L1", 12000.0, 52.5200, 13.4050
RUN2_SEGMENTS = 10
RUN2_REPAIRED = {3: 2}  # segment -> the segment whose (normal) component it shows instead
RUN2_NEW = {9: 0}  # segment -> the segment whose (faulty) component it shows instead
PER_CLASS = 4
HORIZON = 0.42
FAULTS = {"fastener_clip_missing", "rail_break_or_gap", "fishplate_bolt_missing"}
COMPONENT_EXPORTS = {"yolov5_v1-5ca16", "rail_track_test"}


def pick_boxes(data: Path, rng: random.Random) -> list[dict]:
    """Aligned component boxes from held-out photo groups, ``PER_CLASS`` per class."""
    by_class: dict[str, list[dict]] = defaultdict(list)
    with (data / "track_scene" / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if (row["box_aligned"] == "1" and row["used_for_crop"] == "1" and row["export"] in COMPONENT_EXPORTS
                    and row["class"] in TRACK_COMPONENT_CLASSES
                    and group_fraction(row["group"], SPLIT_SEED) < TEST_FRACTION):
                by_class[row["class"]].append(row)
    chosen = []
    for name in TRACK_COMPONENT_CLASSES:
        rows = sorted(by_class[name], key=lambda r: (r["image"], r["x_center"]))
        rng.shuffle(rows)
        seen_photos: set[str] = set()
        for row in rows:
            if row["photo"] not in seen_photos and len(seen_photos) < PER_CLASS:
                seen_photos.add(row["photo"])
                chosen.append(row)
    rng.shuffle(chosen)
    return chosen


def track_view(photo: np.ndarray, box: dict, track_box: tuple[int, int, int, int], shift: float) -> np.ndarray:
    """The photo warped so the component box sits in the track window, ``shift`` of a window down."""
    h, w = photo.shape[:2]
    cx, cy = float(box["x_center"]) * w, float(box["y_center"]) * h
    side = max(float(box["width"]) * w, float(box["height"]) * h) * 1.6
    x0, y0, x1, y1 = track_box
    scale = (x1 - x0) / side
    tx = (x0 + x1) / 2 - scale * cx
    ty = (y0 + y1) / 2 - scale * cy + shift * (y1 - y0)
    matrix = np.array([[scale, 0, tx], [0, scale, ty]], np.float32)
    view = cv2.warpAffine(photo, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.full((h, w), 255, np.uint8), matrix, (WIDTH, HEIGHT)) > 127
    # Outside the photo: the photo itself, stretched to cover and blurred (no mirrored copies).
    cover = cv2.GaussianBlur(cv2.resize(photo, (WIDTH, HEIGHT)), (0, 0), 12)
    view[~inside] = cover[~inside]
    return view


def draw_catenary(frame: np.ndarray, t: int, nest_x: float | None, rng_noise: np.ndarray) -> None:
    """Sky, messenger and contact wires with droppers, passing masts; optionally a bird nest."""
    top = int(HEIGHT * HORIZON)
    sky = np.linspace([235, 206, 160], [250, 240, 225], top).astype(np.uint8)  # BGR, light blue to haze
    frame[:top] = sky[:, None, :]
    offset = (t * 9) % 480
    contact_y, span = int(top * 0.72), 480
    for mast in range(-1, 4):
        mx = mast * span - offset + 60
        cv2.rectangle(frame, (mx - 7, 0), (mx + 7, top), (90, 95, 100), -1)
        cv2.line(frame, (mx, int(top * 0.18)), (mx + 70, int(top * 0.22)), (80, 85, 90), 4)
    xs = np.arange(WIDTH + 1)
    phase = ((xs + offset - 60) % span) / span
    messenger = (top * 0.22 + top * 0.30 * 4 * phase * (1 - phase)).astype(np.int32)
    cv2.polylines(frame, [np.stack([xs, messenger], 1)], False, (40, 40, 45), 2, cv2.LINE_AA)
    cv2.line(frame, (0, contact_y), (WIDTH, contact_y), (30, 50, 60), 3, cv2.LINE_AA)
    for dx in range(-(offset % 60), WIDTH, 60):
        cv2.line(frame, (dx, int(messenger[max(0, min(WIDTH, dx))])), (dx, contact_y), (60, 60, 60), 1, cv2.LINE_AA)
    if nest_x is not None:
        nx, ny = int(nest_x), int(messenger[max(0, min(WIDTH, int(nest_x)))]) + 6
        nest = np.zeros_like(frame[:top])
        cv2.ellipse(nest, (nx, ny), (34, 18), 0, 0, 360, (255, 255, 255), -1)
        mask = nest[..., 0] > 0
        texture = (rng_noise[:top] * 60).astype(np.int16)
        base = np.array([40, 75, 110], np.int16)  # brown twigs
        frame[:top][mask] = np.clip(base + texture[mask][:, None], 0, 255).astype(np.uint8)
        for k in range(10):
            angle = k * 0.6
            cv2.line(frame, (nx, ny), (int(nx + 40 * np.cos(angle)), int(ny + 16 * np.sin(angle))),
                     (30, 60, 95), 2, cv2.LINE_AA)


class VideoSink:
    """H.264 through the ffmpeg binary of ``imageio-ffmpeg`` (what cameras record, and small);
    MPEG-4 part 2 through OpenCV where that package is missing."""

    def __init__(self, path: Path) -> None:
        try:
            import imageio_ffmpeg
        except ImportError:
            self._pipe = None
            self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
            return
        self._pipe = subprocess.Popen(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
             "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-preset", "slow",
             "-crf", "24", "-g", str(FPS), "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)], stdin=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        if self._pipe is None:
            self._writer.write(frame)
        else:
            self._pipe.stdin.write(frame.tobytes())

    def release(self) -> None:
        if self._pipe is None:
            self._writer.release()
        else:
            self._pipe.stdin.close()
            if self._pipe.wait() != 0:
                raise RuntimeError("ffmpeg failed to encode the demo run")


def positions(segments: int) -> list[dict]:
    """Where the train was at each segment boundary: chainage along the line and GPS (a gentle
    curve to the east-north-east)."""
    rows = []
    for k in range(segments + 1):
        metres = k * SEGMENT_M
        lat = START_LAT + metres * 0.3 / 111_320 + 2e-8 * metres ** 2 / 111_320
        lon = START_LON + metres * 0.95 / (111_320 * np.cos(np.radians(START_LAT)))
        rows.append({"t": round(k * SEGMENT_FRAMES / FPS, 3), "line": LINE, "chainage_m": START_M + metres,
                     "lat": round(lat, 7), "lon": round(lon, 7)})
    return rows


def masts(length_m: float, span_m: float = 50.0, first: int = 240) -> list[dict]:
    """The line's mast register over the demo stretch: a mast every ``span_m`` metres (synthetic)."""
    count = int(length_m // span_m) + 2
    return [{"line": LINE, "mast": str(first + k), "chainage_m": START_M + k * span_m} for k in range(count)]


def build(data: Path, out: Path, name: str = "demo", seed: int = 7, segments: int | None = None,
          swaps: dict[int, int] | None = None) -> tuple[Path, dict[str, str]]:
    """One run: ``segments`` first segments of the stretch (all by default), segment k showing the
    component of segment ``swaps[k]`` where given. Returns the video and the photos' sources."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    profile = load_profile("demo")
    specs = {s.name: s for s in profile.crop_specs()}
    track_box = specs["track"].pixel_box(WIDTH, HEIGHT)
    catenary_tiles = [s for s in profile.crop_specs() if s.region == "catenary"]
    boxes = pick_boxes(data, rng)
    nest_segments = set(rng.sample(range(len(boxes)), k=min(6, len(boxes))))
    noise = np.random.default_rng(seed).random((HEIGHT, WIDTH))
    shown = [boxes[(swaps or {}).get(k, k)] for k in range(segments or len(boxes))]
    video_path = out / f"{name}.mp4"
    writer = VideoSink(video_path)
    truth: list[dict] = []
    sources: dict[str, str] = {}
    with (data / "track_scene" / "manifest.csv").open(newline="") as handle:
        manifest = {row["file"]: row for row in csv.DictReader(handle)}
    frame_index = 0
    for k, box in enumerate(shown):
        photo = cv2.imread(str(data / "track_scene" / box["image"]))
        sources[box["image"]] = manifest[box["image"]]["source"]
        start = frame_index
        nest_tiles: list[tuple[int, str]] = []
        for i in range(SEGMENT_FRAMES):
            shift = -0.12 + 0.24 * i / (SEGMENT_FRAMES - 1)
            frame = track_view(photo, box, track_box, shift)
            nest_x = None
            if k in nest_segments:
                nest_x = WIDTH * (0.85 - 0.6 * i / (SEGMENT_FRAMES - 1))
                tile = next(s.name for s in catenary_tiles
                            if s.box[0] * WIDTH <= nest_x < s.box[2] * WIDTH)
                nest_tiles.append((frame_index, tile))
            draw_catenary(frame, frame_index, nest_x, noise)
            writer.write(frame)
            frame_index += 1
        truth.append({"start_frame": start, "end_frame": frame_index - 1, "crop": "track", "region": "track",
                      "class": box["class"], "fault": int(box["class"] in FAULTS), "photo": box["photo"]})
        for tile in dict.fromkeys(t for _, t in nest_tiles):
            frames = [f for f, t in nest_tiles if t == tile]
            truth.append({"start_frame": frames[0], "end_frame": frames[-1], "crop": tile, "region": "catenary",
                          "class": "bird_nest", "fault": 1, "photo": "synthetic"})
    writer.release()
    truth_name = "ground_truth.csv" if name == "demo" else f"{name}_ground_truth.csv"
    with (out / truth_name).open("w", newline="") as handle:
        fields = ["start_frame", "end_frame", "start_s", "end_s", "crop", "region", "class", "fault", "photo"]
        writer_csv = csv.DictWriter(handle, fieldnames=fields)
        writer_csv.writeheader()
        for row in sorted(truth, key=lambda r: (r["start_frame"], r["crop"])):
            writer_csv.writerow({**row, "start_s": round(row["start_frame"] / FPS, 2),
                                 "end_s": round((row["end_frame"] + 1) / FPS, 2)})
    with (out / f"{name}_positions.csv").open("w", newline="") as handle:
        writer_csv = csv.DictWriter(handle, fieldnames=["t", "line", "chainage_m", "lat", "lon"])
        writer_csv.writeheader()
        writer_csv.writerows(positions(len(shown)))
    return video_path, sources


def write_attribution(out: Path, sources: dict[str, str]) -> None:
    lines = ["# Demo runs: attribution", "",
             "`demo.mp4` and `demo2.mp4` are generated by `python -m training.make_demo` from photos of the Roboflow",
             "Universe project *track-detection-0kr1b/track-fault-detection-badcq* (v1), licensed CC BY 4.0, with",
             "boxes from *own-zsacw/yolov5_v1-5ca16* and *w-t-a/rail_track_test* (v1, CC BY 4.0). The photos are",
             "panned and zoomed (changed); the overhead line and the bird nests above them are drawn (synthetic),",
             "and so are the position tracks (`*_positions.csv`: a made-up line L1 near 52.52 N, 13.41 E).",
             "", "Photos used (source file of each):", ""]
    lines += [f"- `{Path(image).name}`: {source}" for image, source in sorted(sources.items())]
    (out / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("assets/demo"))
    parser.add_argument("--runs", nargs="+", choices=("demo", "demo2"), default=["demo", "demo2"])
    args = parser.parse_args()
    runs = {"demo": {}, "demo2": {"segments": RUN2_SEGMENTS, "swaps": {**RUN2_REPAIRED, **RUN2_NEW}}}
    sources: dict[str, str] = {}
    for name in args.runs:
        path, used = build(args.data, args.out, name, **runs[name])
        sources.update(used)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if "demo" in args.runs:
        write_attribution(args.out, sources)
        write_masts(args.out)


def write_masts(out: Path) -> None:
    with (out / "demo_masts.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["line", "mast", "chainage_m"])
        writer.writeheader()
        writer.writerows(masts(SEGMENT_M * 22))


if __name__ == "__main__":
    main()
