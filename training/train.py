"""``python -m training meta-train --config FILE``: episodic meta-training of the backbone.

Checkpoints (state dicts, read back with ``weights_only=True``) every ``checkpoint_every`` steps,
written atomically, so an interrupted run resumes with the same command; a CSV log and PNG curves
record loss and accuracy. CUDA when available. Under ``torchrun`` each process draws its own tasks
and the gradients are averaged across processes (DDP-style all-reduce) before each step.
"""
from __future__ import annotations

import csv
import logging
import os
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from training.algorithms import MetaConfig, MetaLearner, make
from training.backbone import LAST_STAGE, check_gem_power, check_pooled, embedding_net
from training.episodes import TaskPool
from training.runlog import append_row, restore, save_atomically
from training.sources import DOMAINS, load_sources

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    algorithm: str
    out_dir: Path
    data_root: Path = Path("../shared/data")
    init_from: Path | None = None  # a pretrain checkpoint; None trains from scratch
    input_size: int = 128
    steps: int = 1000
    meta_batch: int = 4
    way: int = 5
    shot: int = 5
    # When set, each task draws its shot from these instead: a schedule learned on 5-shot tasks alone
    # over-fits the many-shot heads the app also fits with it (the bundle's base head, grown libraries).
    shots: tuple[int, ...] = ()
    queries: int = 5
    lr: float = 1e-4
    meta_lr: float = 1e-2  # for the algorithm's own meta-parameters (step sizes, scales)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 50
    domains: tuple[str, ...] = DOMAINS  # the labelled domains tasks are drawn from, one domain per task
    exclude: tuple[str, ...] = ()  # domains left out entirely (leave-one-domain-out evaluation)
    source_weights: dict[str, float] = field(default_factory=lambda: {"track_fault": 0.25, "sleeper": 0.1,
                                                                     "omniglot_small": 0.15, "neu": 0.15,
                                                                     "deeppcb": 0.2, "magnetic_tile": 0.15})
    device: str = "auto"
    # Trunk stages kept as initialised (e.g. conv1, bn1, layer1-3): the mid-level patch features
    # that anomaly mode compares stay the distilled ones, while the later stages and the head learn.
    freeze: tuple[str, ...] = ()
    # Trunk stages whose pools make the embedding (training.backbone): layer4 alone, or e.g. layer4 + layer3.
    pooled: tuple[str, ...] = LAST_STAGE
    gem_power: float = 1.0  # each stage's pool: 1 the plain average, above 1 a generalised mean (GeM)
    meta: MetaConfig = field(default_factory=MetaConfig)

    @property
    def training_domains(self) -> tuple[str, ...]:
        return tuple(d for d in self.domains if d not in self.exclude)

    @classmethod
    def from_toml(cls, path: Path, **overrides) -> TrainConfig:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        meta = MetaConfig(**raw.pop("meta", {}))
        raw.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("out_dir", "data_root", "init_from"):
            if raw.get(key) is not None:
                raw[key] = Path(raw[key])
        for key in ("domains", "exclude", "freeze", "pooled", "shots"):
            if key in raw:
                raw[key] = tuple(raw[key])
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
        try:
            check_pooled(raw.get("pooled", LAST_STAGE))
            check_gem_power(float(raw.get("gem_power", 1.0)))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if any(not isinstance(shot, int) or shot < 1 for shot in raw.get("shots", ())):
            raise ValueError(f"{path}: shots must be whole numbers of at least 1, not {list(raw['shots'])}")
        return cls(**raw, meta=meta)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def meta_optimiser(learner: MetaLearner, lr: float, meta_lr: float) -> torch.optim.Optimizer:
    """Adam with the backbone at ``lr`` and the algorithm's own meta-parameters at ``meta_lr``."""
    meta_params = [p for n, p in learner.named_parameters() if not n.startswith("net.")]
    trained = [p for p in learner.net.parameters() if p.requires_grad]
    return torch.optim.Adam([{"params": trained, "lr": lr}, {"params": meta_params, "lr": meta_lr}])


def freeze_stages(net: torch.nn.Module, stages: tuple[str, ...]) -> None:
    """Keep the named trunk stages as they are: no gradient, so no update, and BatchNorm statistics
    that no batch moves (momentum 0)."""
    trunk = net.trunk
    unknown = set(stages) - {name for name, _ in trunk.named_children()}
    if unknown:
        raise SystemExit(f"freeze: the trunk has no stage {', '.join(sorted(unknown))}")
    for name in stages:
        stage = getattr(trunk, name)
        stage.requires_grad_(False)
        for module in stage.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.0


def _check_replicas_agree(learner: MetaLearner) -> None:
    """Every rank must hold the same weights after the averaged updates: a parameter checksum,
    compared across ranks, so a broken reduction fails the run instead of saving rank 0's drift."""
    total = torch.stack([p.detach().double().sum() for p in learner.parameters()]).sum().reshape(1)
    low, high = total.clone(), total.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        raise RuntimeError(f"data-parallel replicas diverged (parameter sums {low.item():.6g} to {high.item():.6g})")


def meta_train(cfg: TrainConfig, pool: TaskPool | None = None) -> Path:
    rank, world = _distributed()
    unknown = (set(cfg.domains) | set(cfg.exclude)) - set(DOMAINS)
    if pool is None and unknown:
        raise SystemExit(f"unknown domains {sorted(unknown)}: choose from {', '.join(DOMAINS)}")
    if cfg.device != "auto":
        device = torch.device(cfg.device)
    else:
        device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    net = embedding_net(cfg.init_from, pooled=cfg.pooled, gem_power=cfg.gem_power).to(device, memory_format=torch.channels_last)
    freeze_stages(net, cfg.freeze)
    learner = make(cfg.algorithm, net, cfg.meta).to(device)
    optimiser = meta_optimiser(learner, cfg.lr, cfg.meta_lr)
    checkpoint = cfg.out_dir / "meta_last.pt"
    state = restore(checkpoint, device, learner=learner, optimiser=optimiser)
    start = int(state["step"]) if state else 0
    spent = float(state.get("seconds", 0.0)) if state else 0.0  # wall time of the stage over all sittings
    if state:
        log.info("resuming %s at step %d", cfg.algorithm, start)
    if pool is None:
        pool = TaskPool(load_sources(cfg.data_root, cfg.training_domains), cfg.input_size, "train", cfg.source_weights,
                        seed=cfg.seed + rank)
    rng = np.random.default_rng([cfg.seed, rank, start])
    log_path = cfg.out_dir / "meta_log.csv"
    learner.train()
    window: list[tuple[float, float]] = []
    started = time.monotonic()
    for step in range(start, cfg.steps):
        shots = rng.choice(cfg.shots, cfg.meta_batch) if cfg.shots else [cfg.shot] * cfg.meta_batch
        tasks = [pool.sample(rng, cfg.way, int(shot), cfg.queries).to(device) for shot in shots]
        optimiser.zero_grad(set_to_none=True)
        window.append(learner.meta_step(tasks))
        if world > 1:
            for p in learner.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world
        optimiser.step()
        done = step + 1
        if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps):
            loss, acc = np.mean(window, axis=0)
            row = {"step": done, "loss": round(float(loss), 5), "query_acc": round(float(acc), 4),
                   "seconds": round(spent + time.monotonic() - started, 1)}
            append_row(log_path, row)
            log.info("%s step %d loss %.4f acc %.3f", cfg.algorithm, done, loss, acc)
            window = []
        if rank == 0 and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            save_atomically({"learner": learner.state_dict(), "optimiser": optimiser.state_dict(), "step": done,
                             "seconds": spent + time.monotonic() - started}, checkpoint)
    if world > 1:
        _check_replicas_agree(learner)
    final = cfg.out_dir / "meta_final.pt"
    if rank == 0:
        save_atomically({"model": net.state_dict(), "labels": [], "input_size": cfg.input_size, "pooled": list(net.pooled),
                          "gem_power": net.gem_power,
                          "algorithm": cfg.algorithm, "adaptation": learner.adaptation(),
                          "init_from": str(cfg.init_from) if cfg.init_from else None,
                          "domains": list(pool.by_source), "steps": cfg.steps,
                          "seconds": round(spent + time.monotonic() - started, 1)}, final)
        plot_curves(log_path, cfg.out_dir / "meta_curves.png")
    if world > 1:
        dist.barrier()
    return final


def plot_curves(log_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with log_path.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(steps, [float(r["loss"]) for r in rows])
    left.set(xlabel="meta-step", ylabel="query loss")
    right.plot(steps, [float(r["query_acc"]) for r in rows])
    right.set(xlabel="meta-step", ylabel="query accuracy")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
