"""Small, fully predictable test material: a tiny ONNX backbone, bundles, heads, videos.

The tiny backbone embeds a crop as its mean colour (global average pool), so a head fitted on
red versus grey crops tells exactly which frames of a synthetic video hold a "fault".
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper

from inspector.adapt import fit_head
from inspector.bundle import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, load_bundle

TINY_SIZE = 32
RED = (40, 40, 220)  # BGR
GREY = (128, 128, 128)
PROFILE_TOML = """
name = "test"
[[regions]]
name = "catenary"
box = [0.0, 0.0, 1.0, 0.4]
tiles = [2, 1]
[[regions]]
name = "track"
box = [0.3, 0.5, 0.7, 1.0]
"""
TRACK_BOX = (0.3, 0.5, 0.7, 1.0)


def tiny_backbone_onnx(path: Path, size: int | str = TINY_SIZE, extra_dim: bool = False) -> None:
    """images N x 3 x S x S -> embeddings N x 3 (mean colour), or N x 4 with ``extra_dim``."""
    spatial = size if isinstance(size, int) else "S"
    nodes = [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1)]
    initializers = []
    out_dim = 3
    if extra_dim:
        nodes.append(helper.make_node("Pad", ["flat", "pads"], ["embeddings"], mode="constant"))
        initializers.append(helper.make_tensor("pads", TensorProto.INT64, [4], [0, 0, 0, 1]))
        out_dim = 4
    else:
        nodes[-1] = helper.make_node("Flatten", ["pooled"], ["embeddings"], axis=1)
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, spatial, spatial])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", out_dim])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def solid_crops(colour_bgr: tuple[int, int, int], count: int, size: int = TINY_SIZE, seed: int = 0) -> np.ndarray:
    """RGB crops of one colour with a little noise."""
    rng = np.random.default_rng(seed)
    rgb = np.array(colour_bgr[::-1], np.float32)
    crops = rgb + rng.normal(0, 6, (count, size, size, 3))
    return np.clip(crops, 0, 255).astype(np.uint8)


def make_bundle(folder: Path, size: int = TINY_SIZE, with_head: bool = True) -> Path:
    """A complete bundle: tiny backbone, bundle.json, and a head (normal grey vs fault red)."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_backbone_onnx(folder / "backbone.onnx", size)
    meta = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "name": "tiny",
            "input": {"size": size, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "channels": "RGB"},
            "embedding_size": 3, "backbones": {"fp32": "backbone.onnx"},
            "adaptation": {"inner_steps": 10, "step_sizes": [2.0], "logit_scale": 10.0},
            "provenance": {"algorithm": "test", "evaluation": {"note": "test bundle"}}}
    (folder / "bundle.json").write_text(json.dumps(meta))
    if with_head:
        from inspector.backbone import Backbone

        bundle = load_bundle(folder)
        backbone = Backbone(bundle, "fp32", threads=1)
        crops = np.concatenate([solid_crops(GREY, 20, size), solid_crops(RED, 20, size, seed=1)])
        labels = ["ok"] * 20 + ["red_fault"] * 20
        support = backbone.embed(crops)
        head = fit_head(support, labels, ["ok", "red_fault"], [True, False], bundle.adaptation,
                        regions=[("track",), ("track",)], steps=200, step_size=1.0)
        head.save(folder, "head")
        np.savez(folder / "base_examples.npz", embeddings=support.astype(np.float16), labels=np.array(labels))
        meta.update(head="head", base_examples="base_examples.npz")
        (folder / "bundle.json").write_text(json.dumps(meta))
    return folder


BLUE = (200, 60, 30)  # BGR: the "new fault" of the few-shot tests, drawn in the right catenary tile


def make_video(path: Path, frames: int, fault_frames: set[int] = frozenset(), size: tuple[int, int] = (160, 120),
               fps: float = 10.0, fourcc: str = "mp4v", blue_frames: set[int] = frozenset(),
               black_frames: set[int] = frozenset()) -> Path:
    """Grey frames; a red patch fills the track region on ``fault_frames``; a blue patch fills
    most of the right catenary tile on ``blue_frames``; that tile is black on ``black_frames``.
    Each frame's index is written into two grey-level blocks (index % 16, index // 16) so seeks
    can be checked."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    x0, y0, x1, y1 = (round(TRACK_BOX[0] * width), round(TRACK_BOX[1] * height),
                      round(TRACK_BOX[2] * width), round(TRACK_BOX[3] * height))
    for index in range(frames):
        frame = np.full((height, width, 3), GREY, np.uint8)
        frame[4:28, 4:28] = (index % 16) * 16
        frame[4:28, 36:60] = (index // 16 % 16) * 16
        if index in fault_frames:
            frame[y0:y1, x0:x1] = RED
        if index in blue_frames:
            frame[round(0.04 * height):round(0.36 * height), round(0.55 * width):round(0.95 * width)] = BLUE
        if index in black_frames:
            frame[:round(0.4 * height), width // 2:] = 0
        writer.write(frame)
    writer.release()
    return path


def frame_index_of(image: np.ndarray) -> int:
    """Read back the index that ``make_video`` wrote into a frame."""
    low = round(float(image[8:24, 8:24].mean()) / 16)
    high = round(float(image[8:24, 40:56].mean()) / 16)
    return high * 16 + low
