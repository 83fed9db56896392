"""The training package on small CPU problems: sampler, every algorithm learning a toy task,
resume, export (torch vs ONNX, int8). Needs the train extra (torch, torchvision)."""
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.toy import toy_pool
from training.algorithms import Algorithm, MetaConfig, make
from training.backbone import EmbeddingNet, FeatureExtractor, gem
from training.patch_features import add_patch_features, projection_of
from training.runlog import restore
from training.train import TrainConfig, meta_train

torch.set_num_threads(2)

# Per algorithm: settings under which it learns the toy family in a few dozen steps from scratch.
SETTINGS = {
    Algorithm.ANIL: dict(lr=1e-3, steps=60),
    Algorithm.MAML: dict(lr=1e-3, steps=40),
    Algorithm.FOMAML: dict(lr=1e-3, steps=60),
    Algorithm.REPTILE: dict(lr=1e-3, steps=60),
    Algorithm.PROTONET: dict(lr=1e-3, steps=100),
    Algorithm.MATCHING: dict(lr=1e-3, steps=60),
}
META = MetaConfig(inner_steps=3, inner_lr=0.5, backbone_inner_lr=0.01, logit_scale=5.0, batchnorm="batch")


def held_out(learner, pool, tasks=60):
    rng = np.random.default_rng(123)
    losses, accuracies = [], []
    for _ in range(tasks):
        loss, acc = learner.outer_loss(pool.sample(rng, 3, 3, 5))
        losses.append(loss.item())
        accuracies.append(acc.item())
    return float(np.mean(losses)), float(np.mean(accuracies))


def config(tmp_path, algorithm, **changes):
    values = dict(input_size=32, meta_batch=2, way=3, shot=3, queries=3, meta_lr=1e-3, log_every=10,
                  checkpoint_every=10, meta=META, **SETTINGS[Algorithm(algorithm)])
    values.update(changes)
    return TrainConfig(str(algorithm), tmp_path / str(algorithm), **values)


def test_sampler_draws_seeded_well_formed_tasks():
    pool = toy_pool(per_class=10)
    first = pool.sample(np.random.default_rng(5), 3, 2, 4)
    again = pool.sample(np.random.default_rng(5), 3, 2, 4)
    assert first.support_x.shape == (6, 3, 32, 32) and first.query_x.shape == (12, 3, 32, 32)
    assert sorted(first.support_y.tolist()) == [0, 0, 1, 1, 2, 2] and first.way == 3
    assert torch.equal(first.support_y, again.support_y)
    many = pool.sample(np.random.default_rng(0), 9, 1, 1)  # asks for more classes than exist
    assert many.way == 4 and many.query_y.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="fewer than two classes"):
        pool.sample(np.random.default_rng(0), 3, 8, 8)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_every_algorithm_learns_the_toy_task(tmp_path, algorithm):
    """Held-out accuracy rises by 0.05 or more (3-way: chance 0.33), the held-out loss stays finite.

    The margin rests on measured draws, not one seed (``python bench/toy_margins.py --seeds 4``,
    docs/benchmarks.md): the median gain of every algorithm is more than twice the margin, while a
    step that does not learn leaves accuracy exactly where it was. A short run from scratch can still
    go astray (first-order MAML once gained only +0.044 with its loss blown up to 1.6, on another
    OpenCV's augmentations), so a draw that misses is followed by one more from another seed; a real
    regression fails both. The held-out loss is not asserted to fall: in these runs it fell in only
    half to all of the seeds while accuracy rose (the scale grows confident faster than right)."""
    draws = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cfg = config(tmp_path / f"seed{seed}", algorithm, seed=seed)
        train_pool, test_pool = toy_pool(per_class=100, seed=0), toy_pool(per_class=30, seed=1)
        learner = make(algorithm, EmbeddingNet(), cfg.meta)
        learner.train()
        before = held_out(learner, test_pool)
        final = meta_train(cfg, train_pool)
        learner.load_state_dict(torch.load(cfg.out_dir / "meta_last.pt", weights_only=True)["learner"])
        learner.train()
        after = held_out(learner, test_pool)
        draws.append((seed, before, after))
        if after[1] >= before[1] + 0.05 and np.isfinite(after[0]):
            break
    else:
        pytest.fail(f"{algorithm} did not learn in two draws (seed, (loss, accuracy) before, after): {draws}")
    state = torch.load(final, weights_only=True)
    assert state["algorithm"] == algorithm
    if Algorithm(algorithm) in (Algorithm.PROTONET, Algorithm.MATCHING):
        assert state["adaptation"] is None  # no inner loop of their own: export uses the default
    else:
        assert state["adaptation"]["inner_steps"] == 3
    assert (cfg.out_dir / "meta_curves.png").stat().st_size > 0
    assert (cfg.out_dir / "meta_log.csv").read_text().splitlines()[0] == "step,loss,query_acc,seconds"


def test_learned_step_sizes_go_into_the_adaptation(tmp_path):
    torch.manual_seed(0)
    cfg = config(tmp_path, Algorithm.ANIL, steps=20)
    meta_train(cfg, toy_pool(per_class=30))
    adaptation = torch.load(cfg.out_dir / "meta_final.pt", weights_only=True)["adaptation"]
    assert len(adaptation["step_sizes"]) == 3 and adaptation["step_sizes"] != [0.5, 0.5, 0.5]
    assert adaptation["logit_scale"] != 5.0


def test_tasks_draw_their_shot_from_shots_when_given(tmp_path):
    """``shots``: the schedule meets every support size it will serve; without it every task has ``shot``."""
    drawn = []

    class Spy(type(toy_pool(per_class=2))):
        def sample(self, rng, way, shot, queries):
            drawn.append(shot)
            return super().sample(rng, way, shot, queries)

    pool = toy_pool(per_class=30)
    pool.__class__ = Spy
    meta_train(config(tmp_path / "mixed", Algorithm.ANIL, steps=6, shots=(1, 4)), pool)
    assert set(drawn) == {1, 4} and len(drawn) == 12
    drawn.clear()
    meta_train(config(tmp_path / "fixed", Algorithm.ANIL, steps=3), pool)
    assert drawn == [3] * 6


def test_frozen_stages_stay_as_initialised_while_the_rest_learns(tmp_path):
    """``freeze``: meta-training keeps the early stages (anomaly mode's patch features) as they were."""
    torch.manual_seed(0)
    cfg = config(tmp_path, Algorithm.ANIL, steps=5)
    cfg.freeze = ("conv1", "bn1", "layer1", "layer2", "layer3")
    start = {k: v.clone() for k, v in EmbeddingNet().state_dict().items()}
    torch.manual_seed(0)
    meta_train(cfg, toy_pool(per_class=30))
    after = torch.load(cfg.out_dir / "meta_final.pt", weights_only=True)["model"]
    frozen = [k for k in start if k.startswith(("trunk.layer2.", "trunk.conv1.", "trunk.bn1."))
              and not k.endswith("num_batches_tracked")]  # weights and BatchNorm statistics
    assert frozen and all(torch.equal(after[k], start[k]) for k in frozen)
    assert not torch.equal(after["trunk.layer4.1.conv2.weight"], start["trunk.layer4.1.conv2.weight"])
    cfg.freeze = ("layer9",)
    with pytest.raises(SystemExit, match="no stage layer9"):
        meta_train(cfg, toy_pool(per_class=30))


def test_fixed_step_sizes_stay_fixed_while_the_backbone_learns():
    """MAML without MAML++ step-size learning (the peer benchmark's like-for-like setting)."""
    torch.manual_seed(0)
    learner = make(Algorithm.MAML, EmbeddingNet(), replace(META, inner_steps=1, learn_step_sizes=False))
    task = toy_pool(per_class=6).sample(np.random.default_rng(0), 2, 2, 2)
    learner.train().meta_step([task])
    assert learner.log_step_sizes.grad is None and learner.log_backbone_lrs.grad is None
    assert learner.net.trunk.conv1.weight.grad.abs().sum() > 0  # second order reaches the first layer
    assert learner.log_logit_scale.grad is not None


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    """kill -9 a meta-training run after its first checkpoint; the same command resumes there: no
    step runs twice, none is skipped, and the resumed run starts from the checkpoint's weights."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = f"""
import torch
from tests.training.test_training import Algorithm, config, meta_train, toy_pool
torch.manual_seed(0)
meta_train(config(__import__("pathlib").Path({str(tmp_path)!r}), Algorithm.PROTONET, steps=100000), toy_pool(per_class=20))
"""
    child = subprocess.Popen([sys.executable, "-c", script], cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    checkpoint = tmp_path / "protonet" / "meta_last.pt"
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpoint.exists(), "no checkpoint before the deadline"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    saved = torch.load(checkpoint, weights_only=True)
    stopped = saved["step"]
    assert stopped % 10 == 0 and 10 <= stopped < 100000
    resumed = config(tmp_path, Algorithm.PROTONET, steps=stopped + 20)
    pool = toy_pool(per_class=20)
    net = EmbeddingNet()
    learner = make(Algorithm.PROTONET, net, META)
    restore(checkpoint, torch.device("cpu"), learner=learner)
    assert all(torch.equal(a, b) for a, b in zip(learner.state_dict().values(), saved["learner"].values()))
    meta_train(resumed, pool)
    rows = (tmp_path / "protonet" / "meta_log.csv").read_text().splitlines()
    steps = [int(r.split(",")[0]) for r in rows[1:]]
    assert steps == list(range(10, stopped + 21, 10))  # each logged step exactly once, in order
    assert torch.load(checkpoint, weights_only=True)["step"] == stopped + 20


def test_data_parallel_training_over_two_processes(tmp_path):
    """torchrun, two CPU ranks over gloo: gradients averaged, replicas checked equal at the end
    (the run fails otherwise), rank 0 writes the log and checkpoints."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "ddp"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(root / "tests" / "training" / "ddp_toy.py"), str(out)],
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [line.split(",")[0] for line in (out / "meta_log.csv").read_text().splitlines()] == ["step", "2", "4"]
    assert torch.load(out / "meta_final.pt", weights_only=True)["algorithm"] == "anil"


def test_config_file_round_trip(tmp_path):
    path = tmp_path / "anil.toml"
    path.write_text('algorithm = "anil"\nout_dir = "runs/x"\nsteps = 7\n[meta]\ninner_steps = 4\n')
    cfg = TrainConfig.from_toml(path, steps=9)
    assert (cfg.algorithm, cfg.steps, cfg.meta.inner_steps) == ("anil", 9, 4)
    path.write_text('algorithm = "anil"\nout_dir = "x"\nstepz = 7\n')
    with pytest.raises(ValueError, match="unknown settings"):
        TrainConfig.from_toml(path)
    path.write_text('algorithm = "anil"\nout_dir = "x"\nshots = [1, 5]\npooled = ["layer4", "layer3"]\n')
    assert TrainConfig.from_toml(path).shots == (1, 5)


def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path, capsys):
    from training.__main__ import main as training_main

    path = tmp_path / "bad.toml"
    for body, says in (('pooled = ["layer9"]', "pooled stages must be among layer1, layer2, layer3, layer4, not layer9"),
                       ("pooled = []", "pooled stages must be among layer1, layer2, layer3, layer4, not none"),
                       ("shots = [0, 5]", "shots must be whole numbers"), ("stepz = 7", "unknown settings"),
                       ("gem_power = 0.5", "gem_power must be between 1 (the plain average) and 16, not 0.5")):
        path.write_text(f'algorithm = "anil"\nout_dir = "{tmp_path / "out"}"\n{body}\n')
        assert training_main(["meta-train", "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1
    assert training_main(["meta-train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert not (tmp_path / "out").exists()


def test_export_matches_torch_and_int8_loads(tmp_path):
    from inspector.backbone import Backbone
    from inspector.bundle import load_bundle
    from training.export import export_onnx, quantize_int8

    torch.manual_seed(0)
    net = EmbeddingNet().eval()
    extractor = FeatureExtractor(net).eval()
    export_onnx(extractor, 32, tmp_path / "backbone.onnx")
    crops = toy_pool(per_class=8).by_source["stripes"]
    images = np.stack([img[:32, :32] for imgs in crops.values() for img in imgs])
    quantize_int8(tmp_path / "backbone.onnx", tmp_path / "backbone.int8.onnx", images)
    (tmp_path / "bundle.json").write_text(json.dumps({
        "format": "inspector-bundle", "format_version": 1, "name": "toy",
        "input": {"size": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "embedding_size": 512, "backbones": {"fp32": "backbone.onnx", "int8": "backbone.int8.onnx"},
        "adaptation": {"inner_steps": 3, "step_sizes": [0.5], "logit_scale": 5.0}}))
    bundle = load_bundle(tmp_path)
    from training.export import _to_tensor

    with torch.no_grad():
        reference = extractor(_to_tensor(images[:16])).numpy()
    fp32 = Backbone(bundle, "fp32", threads=2).embed(images[:16])
    int8 = Backbone(bundle, "int8", threads=2).embed(images[:16])
    assert np.abs(fp32 - reference).max() < 1e-4
    cosine = (int8 * reference).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.9  # int8 keeps the embedding's direction
    assert (tmp_path / "backbone.int8.onnx").stat().st_size < (tmp_path / "backbone.onnx").stat().st_size / 3


def test_export_writes_a_bundle_the_app_loads_from_a_distilled_checkpoint(tmp_path, capsys):
    """The whole export on a small track_fault look-alike: int8 decided by the base head's group
    cross-validation, the base head and its examples, the provenance, the distillation's hint
    projectors in anomaly mode's patch output, and an embedding that pools two stages."""
    import cv2

    from inspector.bundle import load_bundle
    from tests.training.toy import ORIENTATIONS, stripes
    from training.export import export_bundle
    from training.sources import TRACK_COMPONENT_CLASSES

    rng = np.random.default_rng(0)
    root = tmp_path / "data" / "track_fault"
    rows = ["file,class,group"]
    for c, name in enumerate(TRACK_COMPONENT_CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(12):
            file = f"{name}/{i}.png"
            cv2.imwrite(str(root / file), stripes(list(ORIENTATIONS)[c % 4], rng, size=32) // (1 + c // 4))
            rows.append(f"{file},{name},{name}_{i // 2}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    trunk = {f"trunk.{k}": v for k, v in EmbeddingNet().trunk.state_dict().items()}
    hints = {"0.weight": torch.randn(4, 128, 1, 1), "0.bias": torch.zeros(4),
             "1.weight": torch.randn(6, 256, 1, 1), "1.bias": torch.zeros(6)}
    checkpoint = tmp_path / "distill_final.pt"
    torch.save({"model": trunk, "labels": [], "input_size": 32, "teacher": "teacher T", "views": ["broad_corpus"],
                "pooled": ["layer4", "layer3"], "gem_power": 4.0,
                "patch_projection": {"layers": ["layer2", "layer3"], "state": hints}}, checkpoint)
    out = export_bundle(checkpoint, tmp_path / "data", tmp_path / "bundle")
    bundle = load_bundle(out)
    assert bundle.patch_features.projected and bundle.patch_features.channels == 10
    assert bundle.embedding_size == 768 and bundle.load_base_examples()[0].shape[1] == 768
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["provenance"]["embedding"] == "layer4 + layer3 GeM-pooled (p = 4), each L2-normalised"
    from inspector.cli import main

    assert main(["bundle", "info", str(out)]) == 0
    assert "embedding  768-d (layer4 + layer3 GeM-pooled (p = 4), each L2-normalised)" in capsys.readouterr().out
    figures = meta["provenance"]["evaluation"]
    assert float(figures["onnx_vs_torch_max_abs_diff"]) < 1e-4  # the ONNX graph pools (GeM) as torch does
    assert 0 < meta["adaptation"]["view_spread"] < 2 and bundle.adaptation.view_spread == meta["adaptation"]["view_spread"]
    assert figures["base_head_test_crops"] > 0 and 0 <= figures["base_head_cv_accuracy_int8"] <= 1
    assert "teacher T on views of broad_corpus" in meta["provenance"]["data"]
    assert meta["provenance"]["checkpoint"] == str(checkpoint)  # outside the repository: as given
    from training.export import _repository_path

    root = Path(__file__).resolve().parent.parent.parent
    assert _repository_path(root / "runs" / "x" / "meta_final.pt") == "runs/x/meta_final.pt"
    assert (out / f"{meta['head']}.npz").exists() and (out / meta["base_examples"]).exists()


def test_the_embedding_can_pool_several_stages():
    """``pooled``: each stage's global average pool, L2-normalised, in the order named; the last
    stage alone is ResNet18's own embedding, unnormalised, as every bundle before it."""
    torch.manual_seed(0)
    plain = EmbeddingNet().eval()
    both = EmbeddingNet(pooled=("layer4", "layer3")).eval()
    both.trunk.load_state_dict(plain.trunk.state_dict())
    images = torch.randn(3, 3, 64, 64)
    maps = {}
    for stage in ("layer3", "layer4"):
        getattr(plain.trunk, stage).register_forward_hook(lambda _m, _a, out, stage=stage: maps.__setitem__(stage, out))
    with torch.no_grad():
        alone, joined = plain.forward_features(images), both.forward_features(images)
    assert alone.shape == (3, 512) and joined.shape == (3, both.embedding_size) == (3, 768)
    torch.testing.assert_close(joined[:, :512], torch.nn.functional.normalize(alone, dim=1))
    torch.testing.assert_close(joined[:, 512:], torch.nn.functional.normalize(maps["layer3"].mean((2, 3)), dim=1))
    with pytest.raises(ValueError, match="pooled stages must be among"):
        EmbeddingNet(pooled=("layer5",))


def test_gem_pooling_leans_towards_the_strongest_responses():
    """``gem_power`` p: each channel's (mean of x^p)^(1/p); 1 is the plain average, and a large p
    nears the maximum, so a small bright spot (a fault in a normal crop) is not averaged away."""
    torch.manual_seed(0)
    plain = EmbeddingNet(pooled=("layer4", "layer3")).eval()
    sharp = EmbeddingNet(pooled=("layer4", "layer3"), gem_power=4.0).eval()
    sharp.trunk.load_state_dict(plain.trunk.state_dict())
    maps = {}
    sharp.trunk.layer3.register_forward_hook(lambda _m, _a, out: maps.__setitem__("layer3", out))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = sharp.forward_features(images)
    expected = maps["layer3"].clamp(min=1e-6).pow(4).mean((2, 3)).pow(0.25)
    torch.testing.assert_close(pooled[:, 512:], torch.nn.functional.normalize(expected, dim=1))
    spot = torch.zeros(1, 1, 4, 4)
    spot[0, 0, 1, 2] = 1.0
    assert gem(spot, 1.0).item() == pytest.approx(1 / 16) and gem(spot, 16.0).item() > 0.8
    with pytest.raises(ValueError, match="gem_power must be between 1"):
        EmbeddingNet(gem_power=0.5)


def test_batched_head_adaptation_is_each_episode_on_its_own():
    """``training evaluate`` adapts many episodes as one batch: each must get the head it would alone."""
    from training.algorithms.head import adapt_head, head_logits

    rng = torch.Generator().manual_seed(0)
    support, query = torch.randn(4, 6, 16, generator=rng, dtype=torch.float64), torch.randn(4, 5, 16, generator=rng,
                                                                                          dtype=torch.float64)
    targets = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 2], [2, 2, 1, 0, 0, 0], [0, 1, 2, 0, 1, 2]])
    steps, scale = [1.0, 0.5, 0.5], torch.tensor(10.0, dtype=torch.float64)
    weight, bias, center = adapt_head(support, targets, 3, steps, scale, create_graph=False, weight_decay=0.01)
    together = head_logits(query, weight, bias, center, scale)
    for e in range(4):
        w, b, c = adapt_head(support[e], targets[e], 3, steps, scale, create_graph=False, weight_decay=0.01)
        torch.testing.assert_close(together[e], head_logits(query[e], w, b, c, scale))
    assert not torch.allclose(together[0], together[1])


def test_distillation_matches_the_teacher_and_resumes_mid_run(tmp_path):
    """Function matching on mixed views; a run stopped part-way continues where it stopped (same
    data order) and a finished run is not redone."""
    from tests.training.toy import ORIENTATIONS, stripes
    from training.distill import DistillConfig, distill
    from training.evaluate import load_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pools = {"broad_corpus": [stripes(name, rng, size=48) for name in ORIENTATIONS for _ in range(24)],
             "track_scene": [stripes(name, rng, size=96) for name in ORIENTATIONS for _ in range(2)]}
    teacher = torch.nn.Sequential(torch.nn.Conv2d(3, 24, 8, stride=8), torch.nn.ReLU())  # fixed random features
    # Its ReLU's map (stride 8, as EfficientNet's block 4 at 128 px) is the hint for the student's layer2.
    cfg = DistillConfig(tmp_path, tmp_path / "run", sources=("broad_corpus", "track_scene"), input_size=32,
                        epochs=6, batch_size=16, lr=3e-3, checkpoint_minutes=0, teacher_stages=("1",))
    final = distill(cfg, pools, teacher)
    rows = (cfg.out_dir / "distill_log.csv").read_text().splitlines()
    losses = [float(r.split(",")[2]) for r in rows[1:]]
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0], losses
    assert all(float(r.split(",")[3]) > 0 for r in rows[1:])  # images/s reported per epoch
    net, size = load_model(final)  # a checkpoint the rest of training reads (meta-train init, export)
    assert size == 32 and net(torch.zeros(1, 3, 32, 32)).shape == (1, 512)
    state = torch.load(final, weights_only=True)
    assert state["views"] == ["broad_corpus", "track_scene"] and state["images_seen"] == 6 * 8 * 16
    hints = state["patch_projection"]  # travels with the trunk it fits, for anomaly mode's patches
    assert hints["layers"] == ["layer2"] and hints["state"]["0.weight"].shape == (24, 128, 1, 1)
    assert torch.equal(hints["state"]["0.weight"],
                       torch.load(cfg.out_dir / "distill_last.pt", weights_only=True)["map_projectors"]["0.0.weight"])
    distill(cfg)  # finished: neither the data nor the teacher is loaded again
    assert len((cfg.out_dir / "distill_log.csv").read_text().splitlines()) == 7

    # Stop a second run after 20 of its 48 steps, resume: the same weights as the straight run.
    interrupted = DistillConfig(tmp_path, tmp_path / "stopped", sources=cfg.sources, input_size=32, epochs=6,
                                batch_size=16, lr=3e-3, checkpoint_minutes=0, teacher_stages=("1",))
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        distill(interrupted, pools, _StopAfter(teacher, 20 + 2))  # +2: the size probe, the statistics pass
    assert torch.load(interrupted.out_dir / "distill_last.pt", weights_only=True)["position"] == 20
    torch.manual_seed(0)
    resumed = torch.load(distill(interrupted, pools, teacher), weights_only=True)["model"]
    straight = state["model"]
    assert all(torch.allclose(resumed[k].float(), straight[k].float(), atol=1e-5) for k in straight)
    with pytest.raises(SystemExit, match="started with other settings"):  # one line, not a traceback
        distill(DistillConfig(tmp_path, cfg.out_dir, sources=cfg.sources, input_size=32, epochs=7, batch_size=16))
    with pytest.raises(SystemExit, match="no module _blocks.4"):  # a teacher without the default stages
        distill(DistillConfig(tmp_path, tmp_path / "other", sources=cfg.sources, input_size=32, epochs=1), pools, teacher)


def test_the_teacher_can_see_the_views_at_its_own_scales(tmp_path):
    """--teacher-size: the teacher gets each view resized (its ImageNet scale), the student the view
    as the runtime does; the stage-map hints are pooled onto the student's grid. Several sizes: the
    steps take them in turn, each scale with its own heads and statistics, and a resumed run keeps the turn."""
    from tests.training.toy import ORIENTATIONS, stripes
    from training.distill import DistillConfig, distill

    rng = np.random.default_rng(0)
    pools = {"broad_corpus": [stripes(name, rng, size=48) for name in ORIENTATIONS for _ in range(8)]}
    teacher = torch.nn.Sequential(torch.nn.Conv2d(3, 24, 8, stride=8), torch.nn.ReLU())
    seen = []
    teacher.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    cfg = DistillConfig(tmp_path, tmp_path / "run", sources=("broad_corpus",), input_size=32, epochs=1, batch_size=16,
                        checkpoint_minutes=0, teacher_stages=("1",), teacher_sizes=(56,))
    state = torch.load(distill(cfg, pools, teacher), weights_only=True)
    assert seen[0] == (32, 32) and set(seen[1:]) == {(56, 56)}  # after the size probe: statistics, then steps
    assert len(seen) == 1 + 1 + 2 and state["teacher"].endswith("@ 56 px")
    assert cfg.identity()["teacher_sizes"] == [56] and "teacher_sizes" not in DistillConfig(tmp_path, tmp_path).identity()

    seen.clear()
    both = DistillConfig(tmp_path, tmp_path / "both", sources=("broad_corpus",), input_size=32, epochs=2, batch_size=16,
                         checkpoint_minutes=0, teacher_stages=("1",), teacher_sizes=(32, 56))
    stopping = _StopAfter(teacher, 3 + 3)  # 3 of the 4 steps (+3: the probe, a statistics pass per scale)
    stopping.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    with pytest.raises(KeyboardInterrupt):
        distill(both, pools, stopping)
    distill(both, pools, teacher)
    assert seen[1:3] == [(32, 32), (56, 56)]  # each scale's statistics
    assert seen[3:6] + seen[-1:] == [(32, 32), (56, 56), (32, 32), (56, 56)]  # 3 steps, and the one after resuming
    last = torch.load(both.out_dir / "distill_last.pt", weights_only=True)
    assert len(last["target_stats"]) == 2 and set(last["projectors"]) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    final = torch.load(both.out_dir / "distill_final.pt", weights_only=True)
    assert final["teacher"].endswith("@ 32 + 56 px")
    assert torch.equal(final["patch_projection"]["state"]["0.weight"], last["map_projectors"]["0.0.weight"])


class _StopAfter(torch.nn.Sequential):
    """The same teacher (the same modules, so the same stage taps) raising KeyboardInterrupt on its
    n-th call, as Ctrl-C would mid-run."""

    def __init__(self, teacher: torch.nn.Sequential, calls: int) -> None:
        super().__init__(*teacher)
        self.calls = calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return super().forward(x)


def test_a_bundle_backbone_comes_back_as_a_trainable_network(tmp_path):
    """The bundle in git is the one trained artefact that outlives ``runs/``: training can start again
    from its ONNX (fp32 or int8), BatchNorm re-created from calibration images."""
    from training.backbone import embedding_net
    from training.export import _to_tensor, export_onnx, quantize_int8
    from training.from_onnx import net_from_onnx
    from training.patch_features import add_patch_features

    torch.manual_seed(0)
    net = EmbeddingNet()
    with torch.no_grad():  # BatchNorm statistics far from identity, as after training
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    net.eval()
    export_onnx(FeatureExtractor(net).eval(), 32, tmp_path / "backbone.onnx")
    images = np.stack([img[:32, :32] for imgs in toy_pool(per_class=8).by_source["stripes"].values() for img in imgs])
    x = _to_tensor(images)
    with torch.no_grad():
        reference = net.forward_features(x)
        recovered = net_from_onnx(tmp_path / "backbone.onnx", x[:24])
        assert torch.allclose(recovered.forward_features(x), reference, atol=1e-4, rtol=1e-3)
        recovered.train()  # batch statistics: close to the running ones it was calibrated with
        cosine = torch.nn.functional.cosine_similarity(recovered.forward_features(x), reference)
        assert cosine.min() > 0.95
    quantize_int8(tmp_path / "backbone.onnx", tmp_path / "backbone.int8.onnx", images)
    with torch.no_grad():
        from_int8 = net_from_onnx(tmp_path / "backbone.int8.onnx").forward_features(x)  # frozen statistics
    assert torch.nn.functional.cosine_similarity(from_int8, reference).min() > 0.95
    assert not torch.allclose(from_int8, reference)  # really read back from int8, rounding and all
    # As shipped: anomaly mode's patch output, through hint projectors (1 x 1 convolutions), is not the trunk.
    projection = {"layer2": (np.ones((4, 128, 1, 1), np.float32), np.zeros(4, np.float32)),
                  "layer3": (np.ones((6, 256, 1, 1), np.float32), np.zeros(6, np.float32))}
    add_patch_features(tmp_path / "backbone.int8.onnx", tmp_path / "shipped.int8.onnx", 32, projection)
    with torch.no_grad():
        torch.testing.assert_close(net_from_onnx(tmp_path / "shipped.int8.onnx").forward_features(x), from_int8)
    pooled = EmbeddingNet(pooled=("layer4", "layer3"))
    pooled.load_state_dict(net.state_dict())
    export_onnx(FeatureExtractor(pooled.eval()).eval(), 32, tmp_path / "pooled.onnx")
    with torch.no_grad():
        torch.testing.assert_close(net_from_onnx(tmp_path / "pooled.onnx", pooled=pooled.pooled).forward_features(x),
                                   pooled.forward_features(x), atol=1e-4, rtol=1e-3)
    _write_bundle(tmp_path, {"fp32": "backbone.onnx"})
    assert isinstance(embedding_net(tmp_path), EmbeddingNet)  # a bundle folder is a valid --init-from
    (tmp_path / "other.onnx").write_bytes((tmp_path / "backbone.onnx").read_bytes())
    with pytest.raises(ValueError, match="not a ResNet18"):
        net_from_onnx(_truncated_onnx(tmp_path))


def _write_bundle(folder, backbones):
    from inspector.bundle import AdaptationParams, Preprocessing, bundle_json, write_bundle_json

    write_bundle_json(folder, bundle_json("toy", Preprocessing(32), 512, backbones, AdaptationParams(3, (0.5,), 5.0)))


def _truncated_onnx(folder):
    """The fp32 graph with its last convolution removed."""
    import onnx

    model = onnx.load(str(folder / "backbone.onnx"))
    last = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    model.graph.node.remove(last)
    path = folder / "truncated.onnx"
    onnx.save(model, str(path))
    return path


def test_bundle_provenance_names_the_distillation_behind_a_checkpoint(tmp_path):
    from training.export import _distillation

    init = tmp_path / "distill_final.pt"
    torch.save({"teacher": "teacher T", "views": ["track_fault", "overhead_line"]}, init)
    assert _distillation({"init_from": str(init)}) == "teacher T on views of track_fault, overhead_line"
    assert _distillation({"teacher": "teacher T"}) == "teacher T"  # a distillation checkpoint exported itself
    assert _distillation({"init_from": None}) is None and _distillation({}) is None
    assert "bundle" in _distillation({"init_from": str(tmp_path)})  # a stage started from a bundle folder


def test_base_head_cross_validation_keeps_each_group_on_one_side():
    """Export decides int8 and the ship rules decide bundles with this figure: a split that let a
    group's crops into training and scoring would reward memorising groups (near 1.0 below)."""
    from inspector.bundle import AdaptationParams
    from training.export import BASELINE_ADAPTATION, _cv_accuracy
    from training.sources import TRACK_COMPONENT_CLASSES

    rng = np.random.default_rng(0)
    params = AdaptationParams.from_json(BASELINE_ADAPTATION, "test")
    groups = [f"g{i}" for i in range(60) for _ in range(5)]
    # Each group its own direction and a random class: nothing carries over to an unseen group.
    directions, classes = rng.normal(size=(60, 32)), rng.choice(TRACK_COMPONENT_CLASSES, size=60)
    memorise = np.repeat(directions, 5, axis=0) + 0.05 * rng.normal(size=(300, 32))
    labels = list(np.repeat(classes, 5))
    assert _cv_accuracy(memorise.astype(np.float32), labels, groups, params) < 0.4
    # Classes that do carry over (one direction per class) are found in unseen groups.
    by_class = np.stack([rng.normal(size=32) for _ in TRACK_COMPONENT_CLASSES])
    separable = by_class[[TRACK_COMPONENT_CLASSES.index(c) for c in labels]] + 0.05 * rng.normal(size=(300, 32))
    assert _cv_accuracy(separable.astype(np.float32), labels, groups, params) > 0.95


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_every_algorithm_keeps_its_tensors_on_the_task_device(algorithm):
    """Run on PyTorch's ``meta`` device (shapes only, no data): a tensor made without ``device=``
    lands on the CPU and the step fails here as it would on a GPU."""
    meta = torch.device("meta")
    learner = make(algorithm, EmbeddingNet(), replace(META, inner_steps=2)).to(meta).train()
    task = toy_pool(per_class=6).sample(np.random.default_rng(0), 2, 2, 2).to(meta)
    if Algorithm(algorithm) is Algorithm.REPTILE:
        params, *_ = learner._adapt(task, with_query=True)
        assert params["layer4.1.conv2.weight"].device == meta
    else:
        loss, _ = learner.outer_loss(task)
        loss.backward()
        assert learner.net.trunk.layer4[1].conv2.weight.grad.device == meta
    loss, accuracy = learner.outer_loss(task)
    assert loss.device == meta and accuracy.device == meta


def test_golden_the_app_replays_the_head_that_meta_training_learned_through():
    """The inner loop meta-training differentiates (torch, autograd) and the one the app runs (NumPy,
    hand-written gradient) give the same head on the same support set, to 1e-4, with a bundle's
    learned per-step step sizes, scale and weight decay, and unequal class counts."""
    from inspector.adapt import ClassSpec, adapt
    from inspector.bundle import AdaptationParams
    from training.algorithms.head import adapt_head, head_logits

    rng = np.random.default_rng(0)
    counts = [5, 5, 2, 7]
    support = np.maximum(rng.normal(0.3, 1.0, (sum(counts), 512)), 0).astype(np.float32)  # ReLU-like
    names = ["normal", "crack", "nest", "gap"]
    labels = [name for name, n in zip(names, counts) for _ in range(n)]
    params = AdaptationParams(4, (0.9, 0.6, 0.4, 0.25), 12.5, weight_decay=1e-3, algorithm="anil")
    head, _ = adapt(support, labels, [ClassSpec(n, n == "normal") for n in names], params)
    targets = torch.tensor([names.index(label) for label in labels])
    weight, bias, center = adapt_head(torch.from_numpy(support).double(), targets, len(names),
                                      list(params.step_sizes), torch.tensor(params.logit_scale, dtype=torch.float64),
                                      create_graph=False, weight_decay=params.weight_decay)
    np.testing.assert_allclose(head.weight, weight.detach().numpy(), atol=1e-4)
    np.testing.assert_allclose(head.bias, bias.detach().numpy(), atol=1e-4)
    queries = np.maximum(rng.normal(0.3, 1.0, (20, 512)), 0).astype(np.float32)
    torch_probs = torch.softmax(head_logits(torch.from_numpy(queries).double(), weight, bias, center,
                                            params.logit_scale), dim=-1).detach().numpy()
    np.testing.assert_allclose(head.predict(queries), torch_probs, atol=1e-4)


def test_patch_features_join_the_exported_graph_without_touching_the_embedding(tmp_path, capsys):
    """Anomaly mode's patch output (PatchCore's recipe: stages 2 and 3, 3 x 3 local averages, on
    stage 3's grid) is appended to the fp32 and int8 graphs; the embedding stays bit for bit."""
    import torch.nn.functional as F

    from inspector.backbone import Backbone
    from inspector.bundle import load_bundle
    from training.__main__ import main as training_main
    from training.export import _to_tensor, export_onnx, quantize_int8

    torch.manual_seed(0)
    net = EmbeddingNet().eval()
    export_onnx(FeatureExtractor(net).eval(), 32, tmp_path / "backbone.onnx")
    images = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    quantize_int8(tmp_path / "backbone.onnx", tmp_path / "backbone.int8.onnx", images)
    _write_bundle(tmp_path, {"fp32": "backbone.onnx", "int8": "backbone.int8.onnx"})
    before = {p: Backbone(load_bundle(tmp_path), p).embed(images) for p in ("fp32", "int8")}
    assert training_main(["add-patch-features", str(tmp_path)]) == 0
    bundle = load_bundle(tmp_path)
    assert bundle.patch_features is not None and bundle.patch_features.grid == 2 and bundle.patch_features.channels == 384
    for precision in ("fp32", "int8"):
        embeddings, patches = Backbone(bundle, precision).embed_patches(images)
        assert np.array_equal(embeddings, before[precision]) and patches.shape == (6, 384, 2, 2)
    trunk = net.trunk
    with torch.no_grad():
        x = _to_tensor(images)
        layer2 = trunk.layer2(trunk.layer1(trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))))
        layer3 = trunk.layer3(layer2)
        local = [F.avg_pool2d(m, 3, 1, 1, count_include_pad=False) for m in (layer2, layer3)]
        expected = torch.cat([F.avg_pool2d(local[0], 2), local[1]], 1).numpy()
    _, fp32_patches = Backbone(bundle, "fp32").embed_patches(images)
    assert np.allclose(fp32_patches, expected, atol=1e-4)
    assert training_main(["add-patch-features", str(tmp_path)]) == 2  # once is enough: one line says so
    assert "already has patch features" in capsys.readouterr().err

    # Through the hint projectors (a distilled trunk's): each stage map is projected, then pooled.
    projection = {"layer2": (rng_weights := np.random.default_rng(1)).normal(size=(5, 128, 1, 1)),
                  "layer3": rng_weights.normal(size=(7, 256, 1, 1))}
    projection = {k: (w.astype(np.float32), np.arange(len(w), dtype=np.float32)) for k, w in projection.items()}
    export_onnx(FeatureExtractor(net).eval(), 32, tmp_path / "plain.onnx")
    features = add_patch_features(tmp_path / "plain.onnx", tmp_path / "projected.onnx", 32, projection)
    assert features.channels == 12 and features.projected and "hint projectors" in features.describe()
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "projected.onnx"), providers=["CPUExecutionProvider"])
    projected = session.run(["patches"], {"images": _to_tensor(images).numpy()})[0]
    with torch.no_grad():
        maps = [F.conv2d(m, torch.from_numpy(w), torch.from_numpy(b))
                for m, (w, b) in zip((layer2, layer3), projection.values())]
        local = [F.avg_pool2d(m, 3, 1, 1, count_include_pad=False) for m in maps]
        expected = torch.cat([F.avg_pool2d(local[0], 2), local[1]], 1).numpy()
    assert projected.shape == (6, 12, 2, 2) and np.allclose(projected, expected, atol=1e-3)


def test_patch_projection_is_used_only_with_the_trunk_it_was_learnt_for(tmp_path):
    """Export reads a distillation's hint projectors from the checkpoint, or from the distillation a
    head-only stage started from; a trunk trained further has moved away from them."""
    trunk = {"trunk.conv1.weight": torch.ones(2, 3)}
    hints = {"layers": ["layer2", "layer3"], "state": {"0.weight": torch.ones(4, 128, 1, 1), "0.bias": torch.zeros(4),
                                                       "1.weight": torch.ones(6, 256, 1, 1), "1.bias": torch.ones(6)}}
    distilled = tmp_path / "distill_final.pt"
    torch.save({"model": trunk, "patch_projection": hints}, distilled)
    own = projection_of({"model": trunk, "patch_projection": hints})
    assert [w.shape for w, _ in own.values()] == [(4, 128, 1, 1), (6, 256, 1, 1)]
    head_only = projection_of({"model": {**trunk, "head.weight": torch.ones(1)}, "init_from": str(distilled)})
    assert head_only is not None and np.array_equal(head_only["layer3"][1], np.ones(6))
    assert projection_of({"model": {"trunk.conv1.weight": torch.zeros(2, 3)}, "init_from": str(distilled)}) is None
    assert projection_of({"model": trunk, "init_from": str(tmp_path / "gone.pt")}) is None
    assert projection_of({"model": trunk, "init_from": str(tmp_path)}) is None  # started from a bundle folder
    assert projection_of({"model": trunk, "patch_projection": {**hints, "layers": ["layer2"]}}) is None
