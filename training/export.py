"""Export a trained backbone as the model bundle the runtime loads.

ONNX fp32 (dynamic batch) checked against torch; a static int8 QDQ copy calibrated on training
crops, kept only when it holds accuracy; a base head fitted on the runtime's own embeddings (the
ONNX model through ``inspector.backbone``), so what the app computes is what was evaluated.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from inspector.adapt import episode_sharpness, fit_head, view_spread
from inspector.backbone import Backbone
from inspector.bundle import AdaptationParams, Preprocessing, bundle_json, load_bundle, write_bundle_json
from inspector.fewshot import group_fraction, load_crop
from inspector.heads import Head
from training.backbone import FeatureExtractor, net_from_checkpoint
from training.patch_features import add_patch_features, projection_of
from training.sources import TRACK_COMPONENT_CLASSES, Source, load_sources

log = logging.getLogger(__name__)

NORMAL_CLASSES = {"fastener_clip_present", "rail_joint_ok", "fishplate_ok"}
# Until meta-training (MAML++) learns them, a fixed schedule, chosen on held-out groups of track_fault
# among 10-300 steps (docs/model-card.md). The base head is fitted with it too, so a project that
# refits the base classes (adding a fault type) gets exactly the shipped base head back.
BASELINE_ADAPTATION = {"algorithm": "fixed", "inner_steps": 50, "step_sizes": [1.0], "logit_scale": 10.0, "weight_decay": 0.0}
INT8_MAX_ACCURACY_DROP = 0.02  # of the base head's cross-validated accuracy
CV_FOLDS, CV_SEEDS = 5, (1, 2, 3, 4, 5)  # group folds by keyed hashes (seed 0 makes the held-out split); one
# fold assignment alone moves the figure by several points (a few large groups)


def _to_tensor(crops: np.ndarray) -> torch.Tensor:
    """The bundle's own preprocessing (``inspector.bundle.Preprocessing``), as a tensor."""
    return torch.from_numpy(Preprocessing(crops.shape[1]).normalise(crops))


def export_onnx(model: FeatureExtractor, size: int, path: Path) -> None:
    dummy = torch.zeros(2, 3, size, size)
    torch.onnx.export(model, (dummy,), str(path), input_names=["images"], output_names=["embeddings"],
                      dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}}, opset_version=17,
                      dynamo=False)


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{"images": _to_tensor(calibration[i:i + 16]).numpy()}
                                  for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self._batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _fit_base_head(support: np.ndarray, labels: list[str], params: AdaptationParams) -> Head:
    classes = list(TRACK_COMPONENT_CLASSES)
    return fit_head(support, labels, classes, [c in NORMAL_CLASSES for c in classes],
                    params, regions=[("track",)] * len(classes))


def _accuracy(head: Head, embeddings: np.ndarray, labels: list[str]) -> float:
    predicted = np.asarray(TRACK_COMPONENT_CLASSES)[head.predict(embeddings).argmax(1)]
    return float(np.mean(predicted == np.asarray(labels)))


def _cv_accuracy(support: np.ndarray, labels: list[str], groups: list[str], params: AdaptationParams) -> float:
    """The base head's accuracy under group cross-validation on the training groups: what export
    decides with. The held-out groups (under a hundred crops) only report: there the figure moves by
    several crops with the head's step count or with int8 calibrations whose embeddings agree with
    fp32 at cosine 0.9997 (docs/model-card.md, "What the base-head figure can tell")."""
    labels_array = np.asarray(labels)
    correct = 0.0
    for seed in CV_SEEDS:
        fold = np.array([int(group_fraction(g, seed) * CV_FOLDS) for g in groups])
        for k in range(CV_FOLDS):
            held = fold == k
            if held.all() or not held.any():
                continue
            head = _fit_base_head(support[~held], list(labels_array[~held]), params)
            correct += _accuracy(head, support[held], list(labels_array[held])) * held.sum()
    return correct / (len(labels) * len(CV_SEEDS))


@dataclass(frozen=True)
class BaseHeadData:
    """track_fault's crops at one input size, read once for every backbone measured on them."""
    train_crops: np.ndarray
    train_labels: list[str]
    train_groups: list[str]
    test_crops: np.ndarray
    test_labels: list[str]

    @classmethod
    def load(cls, track: Source, size: int) -> BaseHeadData:
        return cls(np.stack([load_crop(x.path, size) for x in track.train]), [x.label for x in track.train],
                   [x.group for x in track.train], np.stack([load_crop(x.path, size) for x in track.test]),
                   [x.label for x in track.test])


def base_head_figures(backbone: Backbone, data: BaseHeadData, params: AdaptationParams
                      ) -> tuple[Head, np.ndarray, float, float]:
    """The base head fitted on the training crops' embeddings, those embeddings, and its accuracy on
    the held-out groups and under group cross-validation on the training groups."""
    support = backbone.embed(data.train_crops)
    head = _fit_base_head(support, data.train_labels, params)
    held_out = _accuracy(head, backbone.embed(data.test_crops), data.test_labels)
    return head, support, held_out, _cv_accuracy(support, data.train_labels, data.train_groups, params)


def _repository_path(path: Path) -> str:
    """A path as provenance records it: relative to the repository when inside it (``runs/...``), so
    the bundle names the very checkpoint it came from (``bench/fewshot_agreement.py`` checks it)."""
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(path)


def _distillation(state: dict) -> str | None:
    """The teacher and view sources of the distillation behind a checkpoint (its own, or that of
    the checkpoint it was initialised from), as one phrase; None when there was none. A stage that
    started from a bundle folder names that bundle."""
    source = state
    init = Path(state["init_from"]) if state.get("init_from") else None
    if "teacher" not in state and init is not None and init.is_dir():
        return f"the weights of bundle {init} (read back from its ONNX)"
    if "teacher" not in state and init is not None and init.exists():
        source = torch.load(init, map_location="cpu", weights_only=True)
    if "teacher" not in source:
        return None
    views = source.get("views")
    return source["teacher"] + (f" on views of {', '.join(views)}" if views else "")


def export_bundle(checkpoint: Path, data_root: Path, out: Path, algorithm: str = "baseline",
                  keep_fp32: bool = False, fewshot: dict | None = None) -> Path:
    """``fewshot``: the checkpoint's few-shot evaluation (``training evaluate`` figures), recorded
    in the provenance so ``inspector bundle info`` shows how the bundle scored."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    size = int(state.get("input_size", 128))
    net = net_from_checkpoint(state)
    # A meta-trained checkpoint carries the inner loop it learned; pre-training uses the fixed one.
    adaptation = state.get("adaptation") or BASELINE_ADAPTATION
    algorithm = state.get("algorithm", algorithm)
    extractor = FeatureExtractor(net).eval()
    out.mkdir(parents=True, exist_ok=True)
    fp32_path = out / "backbone.onnx"
    export_onnx(extractor, size, fp32_path)

    track = next(s for s in load_sources(data_root, ("track_fault",)))
    data = BaseHeadData.load(track, size)
    train_crops, train_labels = data.train_crops, data.train_labels
    with torch.no_grad():
        reference = extractor(_to_tensor(train_crops[:32])).numpy()
    params = AdaptationParams.from_json(adaptation, "export")
    meta = bundle_json(out.name, Preprocessing(size), net.embedding_size, {"fp32": fp32_path.name}, params)
    write_bundle_json(out, meta)
    fp32 = Backbone(load_bundle(out), "fp32", threads=2)
    max_diff = float(np.abs(fp32.embed(train_crops[:32]) - reference).max())
    log.info("ONNX vs torch: max abs diff %.2e", max_diff)
    # How far one view moves between frames in each graph's embedding: the unit of the open-set
    # margins, so the base head is fitted with it as every project head will be.
    params_fp32 = replace(params, view_spread=round(view_spread(fp32, train_crops), 4))
    head, support, acc_fp32, cv_fp32 = base_head_figures(fp32, data, params_fp32)

    int8_path = out / "backbone.int8.onnx"
    rng = np.random.default_rng(0)
    calibration = train_crops[rng.choice(len(train_crops), min(160, len(train_crops)), replace=False)]
    quantize_int8(fp32_path, int8_path, calibration)
    meta["backbones"]["int8"] = int8_path.name
    write_bundle_json(out, meta)
    int8 = Backbone(load_bundle(out), "int8", threads=2)
    params_int8 = replace(params, view_spread=round(view_spread(int8, train_crops), 4))
    head8, support8, acc_int8, cv_int8 = base_head_figures(int8, data, params_int8)
    keep_int8 = cv_fp32 - cv_int8 <= INT8_MAX_ACCURACY_DROP
    log.info("base head accuracy, group CV on the training groups: fp32 %.3f, int8 %.3f -> %s; "
             "held-out groups: fp32 %.3f, int8 %.3f", cv_fp32, cv_int8,
             "int8 kept" if keep_int8 else "int8 dropped", acc_fp32, acc_int8)
    params = params_int8 if keep_int8 else params_fp32
    meta["adaptation"]["view_spread"] = params.view_spread
    if keep_int8:
        head, support = head8, support8
        if not keep_fp32:  # ship int8 alone: fp32 is 4x larger and re-made by exporting again
            fp32_path.unlink()
            del meta["backbones"]["fp32"]
    else:
        int8_path.unlink()
        del meta["backbones"]["int8"]
    projection = projection_of(state)
    for path in [out / name for name in meta["backbones"].values()]:  # anomaly mode's patch output
        meta["patch_features"] = add_patch_features(path, path, size, projection).to_json()
    head.with_version(1).save(out, "head")
    meta["head"] = "head"
    # The calibration prior: the sharpness that calibrates this inner loop on few-shot episodes
    # of the base examples (small support sets lean on it; see inspector.adapt.calibrate).
    meta["adaptation"]["sharpness"] = round(episode_sharpness(support, train_labels, params), 4)
    # The base head's support set travels with it: a project head refits these classes with its own.
    np.savez(out / "base_examples.npz", embeddings=support.astype(np.float16), labels=np.array(train_labels))
    meta["base_examples"] = "base_examples.npz"
    trained_on = ("shared/data: base head on track_fault (6 component classes), split by group "
                  "(seed 0, 30 % of groups held out)")
    if state.get("domains"):  # a meta-training stage: the domains its episodes came from
        trained_on += f"; meta-trained on episodes of {', '.join(state['domains'])}"
    distilled = _distillation(state)
    if distilled:
        trained_on += f"; backbone distilled from {distilled}"
    meta["provenance"] = {
        "algorithm": algorithm,
        "data": trained_on,
        "checkpoint": _repository_path(checkpoint),
        "initialised_from": state.get("init_from") or state.get("teacher"),
        "embedding": net.describe_embedding(),
        "trained": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "evaluation": {"onnx_vs_torch_max_abs_diff": f"{max_diff:.2e}",
                       "base_head_accuracy_fp32": round(acc_fp32, 4),
                       "base_head_accuracy_int8": round(acc_int8, 4),
                       "base_head_test_crops": len(data.test_labels),
                       "base_head_cv_accuracy_fp32": round(cv_fp32, 4),
                       "base_head_cv_accuracy_int8": round(cv_int8, 4),
                       "base_head_cv": f"{CV_FOLDS}-fold group cross-validation, {len(CV_SEEDS)} fold draws, "
                                       f"on {len(train_labels)} training crops",
                       **({"fewshot_held_out": fewshot} if fewshot else {})},
        "notes": ("adaptation schedule meta-learned (per-step step sizes, logit scale)" if state.get("adaptation")
                  else f"adaptation schedule: the fixed default ({algorithm} learns no head inner loop of its own)"),
    }
    write_bundle_json(out, meta)
    load_bundle(out)  # the result must load as the runtime loads it
    return out
