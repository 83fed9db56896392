"""Baseline: plain supervised pre-training of the backbone on all training classes.

Checkpoints every epoch (state dicts, loaded with ``weights_only=True``) so an interrupted run
resumes; a CSV log records loss and accuracy per epoch.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.augment import load_rgb, train_pipeline
from training.backbone import EmbeddingNet
from training.runlog import append_row, restore, save_atomically
from training.sources import load_sources

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    data_root: Path
    out_dir: Path
    input_size: int = 128
    epochs: int = 12
    samples_per_source: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0
    imagenet_weights: bool = False
    threads: int = 2


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pretrain(cfg: PretrainConfig) -> Path:
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    sources = load_sources(cfg.data_root, ("track_fault", "sleeper", "omniglot_small"))
    labels = sorted({f"{s.name}/{x.label}" for s in sources for x in s.train})
    index = {name: i for i, name in enumerate(labels)}
    short = round(cfg.input_size * 1.15)
    pools = []
    for source in sources:
        images = [load_rgb(x.path, short) for x in source.train]
        targets = [index[f"{source.name}/{x.label}"] for x in source.train]
        pools.append((images, targets))
        log.info("%s: %d training images", source.name, len(images))
    device = _device()
    model = EmbeddingNet(len(labels), cfg.imagenet_weights).to(device)
    steps_per_epoch = cfg.samples_per_source * len(pools) // cfg.batch_size
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15)
    ckpt_path = cfg.out_dir / "pretrain_last.pt"
    state = restore(ckpt_path, device, model=model, optimiser=optimiser, schedule=schedule)
    start_epoch = int(state["epoch"]) + 1 if state else 0
    if state:
        log.info("resuming from epoch %d", start_epoch)
    augment = train_pipeline(cfg.input_size)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    log_path = cfg.out_dir / "pretrain_log.csv"
    rng = np.random.default_rng(cfg.seed + start_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        picks = [(p, int(i)) for p, (imgs, _) in enumerate(pools)
                 for i in rng.integers(0, len(imgs), cfg.samples_per_source)]
        rng.shuffle(picks)
        started, total_loss, correct, seen = time.time(), 0.0, 0, 0
        for step in range(steps_per_epoch):
            batch = picks[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x = np.stack([augment(image=pools[p][0][i])["image"] for p, i in batch])
            y = torch.tensor([pools[p][1][i] for p, i in batch], device=device)
            x = torch.from_numpy(x).permute(0, 3, 1, 2).to(device)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total_loss += loss.item() * len(batch)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(batch)
        row = {"epoch": epoch, "loss": total_loss / seen, "train_acc": correct / seen,
               "seconds": round(time.time() - started, 1)}
        log.info("epoch %d loss %.3f acc %.3f (%.0fs)", epoch, row["loss"], row["train_acc"], row["seconds"])
        append_row(log_path, row)
        save_atomically({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                         "schedule": schedule.state_dict(), "epoch": epoch, "labels": labels}, ckpt_path)
    save_atomically({"model": model.state_dict(), "labels": labels, "input_size": cfg.input_size},
                    cfg.out_dir / "pretrain_final.pt")
    return cfg.out_dir / "pretrain_final.pt"
