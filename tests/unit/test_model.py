import json
import shutil

import numpy as np
import pytest

from inspector.backbone import Backbone
from inspector.bundle import load_bundle
from inspector.errors import BundleError
from inspector.heads import Head
from tests.factories import RED, make_bundle, solid_crops, tiny_backbone_onnx


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "copy")


def _edit_json(folder, **changes):
    meta = json.loads((folder / "bundle.json").read_text())
    meta.update(changes)
    (folder / "bundle.json").write_text(json.dumps(meta))


def test_backbone_embeds_mean_colour(tiny_bundle):
    backbone = Backbone(load_bundle(tiny_bundle), threads=1)
    assert backbone.precision == "fp32"  # the tiny bundle has no int8 file
    assert backbone.provider == "CPUExecutionProvider"
    emb = backbone.embed(solid_crops(RED, 5), batch_size=2)
    assert emb.shape == (5, 3)
    assert emb[:, 0] == pytest.approx(np.full(5, 220 / 255), abs=0.02)  # R of the RGB crop


def test_backbone_rejects_wrong_crop_shape(tiny_bundle):
    backbone = Backbone(load_bundle(tiny_bundle), threads=1)
    with pytest.raises(ValueError, match="crops must be"):
        backbone.embed(np.zeros((2, 16, 16, 3), np.uint8))


def test_bundle_digest_is_stable_and_content_based(tiny_bundle, bundle_copy):
    assert load_bundle(tiny_bundle).digest == load_bundle(bundle_copy).digest
    _edit_json(bundle_copy, name="renamed")
    assert load_bundle(tiny_bundle).digest != load_bundle(bundle_copy).digest


def test_missing_bundle_folder(tmp_path):
    with pytest.raises(BundleError, match="no such folder"):
        load_bundle(tmp_path / "nope")


def test_folder_without_bundle_json(tmp_path):
    with pytest.raises(BundleError, match="no bundle.json"):
        load_bundle(tmp_path)


def test_corrupt_bundle_json(bundle_copy):
    (bundle_copy / "bundle.json").write_text("{ not json")
    with pytest.raises(BundleError, match="corrupt"):
        load_bundle(bundle_copy)


def test_unsupported_format_version(bundle_copy):
    _edit_json(bundle_copy, format_version=99)
    with pytest.raises(BundleError, match="format version 99"):
        load_bundle(bundle_copy)


def test_missing_field(bundle_copy):
    meta = json.loads((bundle_copy / "bundle.json").read_text())
    del meta["input"]
    (bundle_copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="lacks a field"):
        load_bundle(bundle_copy)


def test_missing_backbone_file(bundle_copy):
    (bundle_copy / "backbone.onnx").unlink()
    with pytest.raises(BundleError, match="backbone backbone.onnx is missing"):
        load_bundle(bundle_copy)


def test_corrupt_backbone_file(bundle_copy):
    (bundle_copy / "backbone.onnx").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(BundleError, match="not a loadable ONNX model") as info:
        Backbone(load_bundle(bundle_copy), threads=1)
    assert "\n" not in str(info.value)


def test_input_size_mismatch(bundle_copy):
    tiny_backbone_onnx(bundle_copy / "backbone.onnx", size=32)  # static 32 px
    _edit_json(bundle_copy, input={"size": 64, "mean": [0, 0, 0], "std": [1, 1, 1]})
    with pytest.raises(BundleError, match="expects 32x32 px but bundle.json says 64 px"):
        Backbone(load_bundle(bundle_copy), threads=1)


def test_embedding_size_mismatch(bundle_copy):
    tiny_backbone_onnx(bundle_copy / "backbone.onnx", extra_dim=True)  # 4-d output
    with pytest.raises(BundleError, match="does not match embedding_size 3"):
        Backbone(load_bundle(bundle_copy), threads=1)


def test_missing_precision(tiny_bundle):
    with pytest.raises(BundleError, match="has no int8 backbone"):
        Backbone(load_bundle(tiny_bundle), "int8", threads=1)


def test_missing_head_file(bundle_copy):
    (bundle_copy / "head.npz").unlink()
    with pytest.raises(BundleError, match="base head head.npz is missing"):
        load_bundle(bundle_copy)


def test_corrupt_head(bundle_copy):
    (bundle_copy / "head.json").write_text("[]")
    with pytest.raises(BundleError, match="cannot be read"):
        Head.load(bundle_copy, "head")


def test_bad_adaptation_parameters(bundle_copy):
    _edit_json(bundle_copy, adaptation={"inner_steps": 3, "step_sizes": [1, 2], "logit_scale": 10})
    with pytest.raises(BundleError, match="one step size or one per step"):
        load_bundle(bundle_copy)
    _edit_json(bundle_copy, adaptation={"inner_steps": 3, "step_sizes": [1], "logit_scale": 10, "view_spread": -1})
    with pytest.raises(BundleError, match="view_spread must be a cosine distance between 0 and 2, not -1"):
        load_bundle(bundle_copy)


def test_shipped_default_bundle_loads_and_embeds():
    bundle = load_bundle()
    backbone = Backbone(bundle, threads=2)
    head = Head.load(bundle.path, bundle.head_stem)
    emb = backbone.embed(solid_crops(RED, 2, size=bundle.input_size))
    assert emb.shape == (2, bundle.embedding_size)
    assert np.isfinite(emb).all()
    assert head.embedding_size == bundle.embedding_size
    assert head.fault_classes and all(scope for scope in head.regions)


def test_make_bundle_without_head(tmp_path):
    bundle = load_bundle(make_bundle(tmp_path / "b", with_head=False))
    assert bundle.head_stem is None
