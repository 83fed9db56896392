"""How well a backbone's features separate the demo's bird nests from the rest of the catenary.

Every ``catenary[*]`` crop of ``assets/demo/demo.mp4`` is embedded (checkpoints through torch at
their input size, the teacher at 224 px, a bundle through the runtime) and the nests after frame
150 are ranked against the other crops there, two ways (ROC AUC):

- ``five examples``: the app's situation. Features centred on normal crops before frame 150,
  score = cosine to the five labelled nests' mean minus cosine to the normal crops' mean.
- ``probe``: how much nest information the features hold at all. A logistic regression fitted on
  every crop before frame 150 (balanced classes).

    python bench/catenary_separation.py runs/distill_ce/distill_final.pt runs/distill_line/distill_final.pt teacher

Needs the train extra and scikit-learn. Writes bench/results/catenary_separation.md.
"""
from __future__ import annotations

import argparse
import sys
from functools import cache
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.examples import read_examples  # noqa: E402
from inspector.regions import crop_frame, load_profile  # noqa: E402
from inspector.video import VideoReader  # noqa: E402
from training.demo_truth import load_truth  # noqa: E402
from training.distill import load_teacher, normalise, teacher_features  # noqa: E402
from training.evaluate import load_model  # noqa: E402

DEMO = ROOT / "assets" / "demo"
TEACHER_SIZE = 224  # the teacher's own ImageNet resolution
LABELLED_UNTIL = 150  # the five examples lie before this frame (as in tests/integration/test_demo.py)


@cache
def catenary_crops(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Crops (N x size x size x 3 RGB), nest flags, frame numbers and crop names (decoded once a size)."""
    specs = [s for s in load_profile("demo").crop_specs() if s.region == "catenary"]
    nests = [t for t in load_truth(DEMO / "ground_truth.csv") if t.class_name == "bird_nest"]
    crops, flags, frames, names = [], [], [], []
    with VideoReader(DEMO / "demo.mp4") as reader:
        for frame in reader.frames():
            crops.extend(crop_frame(frame.image, specs, size))
            for spec in specs:
                frames.append(frame.index)
                names.append(spec.name)
                flags.append(any(t.crop == spec.name and t.start_frame <= frame.index <= t.end_frame for t in nests))
    return np.stack(crops), np.array(flags), np.array(frames), names


def torch_embeddings(model, crops: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(normalise(crops[i:i + 128], torch.device("cpu"))).numpy()
                               for i in range(0, len(crops), 128)])


def embeddings(spec: str) -> np.ndarray:
    if spec == "teacher":
        teacher = load_teacher()
        return torch_embeddings(lambda x: teacher_features(teacher, x), catenary_crops(TEACHER_SIZE)[0])
    if spec.endswith(".pt"):
        net, size = load_model(Path(spec))
        return torch_embeddings(net.forward_features, catenary_crops(size)[0])
    from inspector.backbone import Backbone
    from inspector.bundle import load_bundle

    backbone = Backbone(load_bundle(spec), threads=2)
    return backbone.embed(catenary_crops(backbone.bundle.input_size)[0])


def separation(features: np.ndarray, flags: np.ndarray, frames: np.ndarray, names: list[str]) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    index = {(int(f), n): k for k, (f, n) in enumerate(zip(frames, names))}
    positives = [index[e.frame, e.crop] for e in read_examples(DEMO / "bird_nest_examples.csv")]
    early, later = frames < LABELLED_UNTIL, frames >= LABELLED_UNTIL
    normals = np.flatnonzero(early & ~flags)
    x = features - features[normals].mean(axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    score = x[later] @ unit(x[positives].mean(axis=0)) - x[later] @ unit(x[normals].mean(axis=0))
    probe = LogisticRegression(max_iter=2000, class_weight="balanced").fit(x[early], flags[early])
    return (float(roc_auc_score(flags[later], score)),
            float(roc_auc_score(flags[later], probe.decision_function(x[later]))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="checkpoints (.pt), bundle folders, or 'teacher'")
    args = parser.parse_args()
    torch.set_num_threads(2)
    _, flags, frames, names = catenary_crops(128)  # the labels; the crops are reused by 128-px models
    lines = [f"Demo catenary crops: {len(flags)} ({int(flags[frames >= LABELLED_UNTIL].sum())} nests among the "
             f"{int((frames >= LABELLED_UNTIL).sum())} after frame {LABELLED_UNTIL}); ROC AUC of nests against the rest.",
             "", "| features | five examples | probe on every earlier crop |", "|---|---:|---:|"]
    for spec in args.models:
        five, probe = separation(embeddings(spec), flags, frames, names)
        lines.append(f"| {spec} | {five:.3f} | {probe:.3f} |")
        print(lines[-1], flush=True)
    out = ROOT / "bench" / "results" / "catenary_separation.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
