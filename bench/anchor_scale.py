"""Is the frozen anchor's lead at 224 px detail or scale? EfficientNet-Lite0 features of each image
loaded at 128 px, the same 128 px crop upsampled to 224 px, and loaded at 224 px; logistic
regression on the same seeded episodes. What upsampling recovers, a student that sees 128 px can
learn from a teacher shown 224 px (``python -m training distill --teacher-size 224``).

    python bench/anchor_scale.py magnetic_tile deeppcb --episodes 300
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fewshot_anchor import anchor_accuracy  # noqa: E402
from inspector.fewshot import load_crop, load_items  # noqa: E402
from training.sources import domain_folder  # noqa: E402

SETTINGS = [(2, 5), (5, 5), (5, 1)]
QUERIES = 15


def features(teacher, items, size: int, upsample_to: int | None = None, batch: int = 32) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    from training.distill import normalise, teacher_features

    out = []
    with torch.no_grad():
        for start in range(0, len(items), batch):
            x = normalise(np.stack([load_crop(i.path, size) for i in items[start:start + batch]]), torch.device("cpu"))
            if upsample_to:
                x = F.interpolate(x, size=(upsample_to, upsample_to), mode="bilinear", align_corners=False)
            out.append(teacher_features(teacher, x).numpy())
    return np.concatenate(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domains", nargs="+", help="labelled domains of the shared data, e.g. magnetic_tile deeppcb")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from training.distill import load_teacher

    teacher = load_teacher()
    print("| domain | setting | 128 px | 128 px upsampled to 224 | 224 px |\n|---|---|---:|---:|---:|")
    for domain in args.domains:
        items = load_items(domain_folder(args.data, domain), "group")
        labels = [i.label for i in items]
        columns = [features(teacher, items, 128), features(teacher, items, 128, 224), features(teacher, items, 224)]
        for way, shot in SETTINGS:
            cells = [anchor_accuracy(f, labels, way, shot, QUERIES, args.episodes, args.seed, "logreg").mean() * 100
                     for f in columns]
            print(f"| {domain} | {way}-way {shot}-shot | " + " | ".join(f"{c:.1f}" for c in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
