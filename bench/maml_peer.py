"""Our meta-learning against learn2learn 0.2.0's MAML (the peer), side by side, same ResNet18
backbone, input size and episodes.

(a) ``step``: one second-order MAML meta-step on the same 5-way 5-shot task (5 queries a class),
    full network adapted, one inner step, frozen BatchNorm statistics, both from the same weights.
    Time (median of the measured steps after one warm-up), peak memory above the set-up
    (resident memory sampled every 2 ms on the CPU, ``max_memory_allocated`` on CUDA) and the bytes
    the autograd graph saves for the backward pass (deterministic), each side in fresh processes.
    Ours runs twice: as trained (MAML++ learned step sizes, whose backward needs the inner
    gradients kept) and with the step sizes fixed, like the peer's.
(b) ``race``: the algorithm behind the default bundle (``--ours``, e.g. ANIL) against the peer's
    MAML, both from the same starting backbone on the same stream of training tasks, each given
    the same training wall time. Every ``--eval-every`` seconds of training (the clock stops while
    evaluating) the backbone is scored the way the app uses it: frozen, the deployed head adapted
    with the default bundle's schedule, 5-way 5-shot on the held-out track_fault groups.

    python bench/maml_peer.py step
    python bench/maml_peer.py race --init runs/distill_line/distill_final.pt --ours matching --seconds 240
    python bench/maml_peer.py race --ours matching --lr 1e-3 --batchnorm batch --seconds 600 --eval-every 30

learn2learn 0.2.0 from its source package (its generated C files do not build on Python 3.11):
    pip download learn2learn==0.2.0 --no-deps --no-binary :all: && tar xzf learn2learn-0.2.0.tar.gz
    cd learn2learn-0.2.0 && pip install "cython<3.1" gym qpth && for f in meta_dataset task_dataset transforms;
    do cython -3 learn2learn/data/$f.pyx -o learn2learn/data/$f.c; done && pip install --no-build-isolation --no-deps .
Writes bench/results/maml_peer_<mode>.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.bundle import load_bundle  # noqa: E402
from inspector.fewshot import held_out, load_items  # noqa: E402
from training.algorithms import MetaConfig, make  # noqa: E402
from training.backbone import EMBEDDING_SIZE, EmbeddingNet, embedding_net  # noqa: E402
from training.episodes import Task, TaskPool  # noqa: E402
from training.evaluate import embed, evaluate_embeddings  # noqa: E402
from training.sources import TEST_FRACTION, TRACK_COMPONENT_CLASSES, load_sources  # noqa: E402
from training.train import TrainConfig, meta_optimiser  # noqa: E402

WAY, SHOT, QUERIES, SIZE = 5, 5, 5, 128
PEER = "learn2learn maml"
STEP_SIDES = {"ours": "ours (`training.algorithms` MAML, learned per-step step sizes)",
              "ours-fixed": "ours, step sizes fixed (as the peer's)", "peer": "learn2learn 0.2.0 MAML"}
INNER_LR, OUTER_LR = 0.01, 1e-5


class PeakMemory:
    """Peak resident memory (CPU) or allocated memory (CUDA) above the level at ``start``."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()


class SavedTensors:
    """Bytes the autograd graph keeps for the backward pass (distinct storages): the activation
    memory of a meta-step, deterministic, unlike resident memory on the CPU."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def megabytes(self) -> float:
        return sum(self.storages.values()) / 2**20


class Ours:
    """One of our algorithms with the training loop's optimiser set-up."""

    def __init__(self, algorithm: str, net: EmbeddingNet, cfg: MetaConfig, lr: float = OUTER_LR) -> None:
        self.net, self.learner = net, make(algorithm, net, cfg)
        self.optimiser = meta_optimiser(self.learner, lr, 1e-3)
        self.train_mode()

    def train_mode(self) -> None:
        """Training mode, BatchNorm as the config says (frozen statistics or each batch's)."""
        self.learner.train()

    def step(self, tasks: list[Task]) -> None:
        self.optimiser.zero_grad(set_to_none=True)
        self.learner.meta_step(tasks)
        self.optimiser.step()


class Peer:
    """learn2learn's MAML (second order) over the whole network: trunk + a linear head."""

    def __init__(self, net: EmbeddingNet, inner_steps: int, lr: float = OUTER_LR,
                 batch_statistics: bool = False) -> None:
        import learn2learn as l2l

        self.net, self.batch_statistics = net, batch_statistics
        self.model = nn.Sequential(net.trunk, nn.Linear(EMBEDDING_SIZE, WAY)).to(next(net.parameters()).device)
        self.train_mode()
        self.maml = l2l.algorithms.MAML(self.model, lr=INNER_LR, first_order=False)
        self.optimiser = torch.optim.Adam(self.maml.parameters(), lr=lr)
        self.inner_steps = inner_steps

    def train_mode(self) -> None:
        """BatchNorm frozen (eval mode), as ours by default, or on each batch's statistics."""
        self.model.train(self.batch_statistics)

    def step(self, tasks: list[Task]) -> None:
        self.optimiser.zero_grad(set_to_none=True)
        for task in tasks:
            learner = self.maml.clone()
            for _ in range(self.inner_steps):
                learner.adapt(nn.functional.cross_entropy(learner(task.support_x), task.support_y))
            (nn.functional.cross_entropy(learner(task.query_x), task.query_y) / len(tasks)).backward()
        self.optimiser.step()


def step_worker(side: str, steps: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    pool = TaskPool(load_sources(ROOT.parent / "shared" / "data", ("track_fault",)), SIZE, seed=0)
    task = pool.sample(np.random.default_rng(0), WAY, SHOT, QUERIES).to(device)
    net = embedding_net().to(device)
    runner = Peer(net, 1) if side == "peer" else Ours("maml", net, MetaConfig(
        inner_steps=1, inner_lr=0.5, backbone_inner_lr=INNER_LR, adapt_layers="all",
        learn_step_sizes=side == "ours"))
    runner.step([task])  # warm-up
    saved = SavedTensors()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda tensor: tensor):
        runner.step([task])
    times = []
    with PeakMemory(device) as memory:
        for _ in range(steps):
            started = time.perf_counter()
            runner.step([task])
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    return {"side": side, "median_s": float(np.median(times)), "peak_mb": memory.peak / 2**20,
            "saved_mb": saved.megabytes}


def held_out_score(net: EmbeddingNet, items, labels, params, episodes: int) -> float:
    net.eval()
    result = evaluate_embeddings(embed(net, items, SIZE).cpu(), labels, WAY, SHOT, 3, episodes, params)
    return result.accuracy


def race(args, device: torch.device) -> list[str]:
    data = ROOT.parent / "shared" / "data"
    items = held_out(load_items(data / "track_fault"), TEST_FRACTION, None, 0, list(TRACK_COMPONENT_CLASSES))
    labels = [i.label for i in items]
    params = load_bundle().adaptation
    pool = TaskPool(load_sources(data, ("track_fault", "sleeper", "omniglot_small")), SIZE, seed=0)
    curves = {}
    for side in (args.ours, PEER):
        torch.manual_seed(0)
        net = embedding_net(args.init).to(device)
        if side == PEER:
            runner = Peer(net, args.peer_inner_steps, args.lr, batch_statistics=args.batchnorm == "batch")
        else:
            meta = TrainConfig.from_toml(ROOT / "training" / "configs" / f"{side}.toml").meta
            runner = Ours(side, net, replace(meta, batchnorm=args.batchnorm or meta.batchnorm), args.lr)
        rng = np.random.default_rng(0)
        curve = [(0.0, 0, held_out_score(net, items, labels, params, args.episodes))]
        runner.train_mode()
        clock, steps, next_eval = 0.0, 0, args.eval_every
        while clock < args.seconds:
            tasks = [pool.sample(rng, WAY, SHOT, QUERIES).to(device) for _ in range(2)]
            started = time.perf_counter()
            runner.step(tasks)
            clock += time.perf_counter() - started
            steps += 1
            if clock >= next_eval or clock >= args.seconds:
                curve.append((round(clock, 1), steps, held_out_score(net, items, labels, params, args.episodes)))
                print(side, curve[-1], flush=True)
                next_eval += args.eval_every
                runner.train_mode()  # scoring left the network in eval mode
        curves[side] = curve
    (ROOT / "bench" / "results" / "maml_peer_race.json").write_text(json.dumps(curves))
    return race_table(curves, args.ours)


def race_table(curves: dict[str, list[tuple[float, int, float]]], ours: str) -> list[str]:
    """Per side: steps, time per step, held-out accuracy at start, best and end; then who reached what when."""
    lines = ["| side | meta-steps | s per step | held-out 5w5s: start | best (when) | end |",
             "|---|---:|---:|---:|---:|---:|"]
    for side, curve in curves.items():
        best = max(curve, key=lambda point: point[2])
        (clock, steps, end) = curve[-1]
        lines.append(f"| {side} | {steps} | {clock / steps:.2f} | {curve[0][2]:.1f} | {best[2]:.1f} "
                     f"({best[0]:.0f} s, step {best[1]}) | {end:.1f} |")
    start = curves[ours][0][2]
    peer_best = max(curves[PEER], key=lambda point: point[2])
    ours_best = max(curves[ours], key=lambda point: point[2])
    if peer_best[1] == 0:
        verdict = (f"The peer never rose above the starting {start:.1f} % in {curves[PEER][-1][0]:.0f} s of training, "
                   f"so its time to reach our best ({ours_best[2]:.1f} %, after {ours_best[0]:.0f} s) is beyond the "
                   "budget; a time ratio cannot be given.")
    else:
        reach = next((point for point in curves[ours] if point[2] >= peer_best[2]), None)
        verdict = (f"Peer's best {peer_best[2]:.1f} % after {peer_best[0]:.0f} s; ours reached it after "
                   + (f"{reach[0]:.0f} s ({peer_best[0] / max(reach[0], 1e-9):.1f}x less time)." if reach
                      else "no time within the budget."))
    return lines + ["", verdict]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["step", "race"])
    parser.add_argument("--steps", type=int, default=5, help="step: measured meta-steps per process")
    parser.add_argument("--repeats", type=int, default=3, help="step: processes per side")
    parser.add_argument("--worker", choices=list(STEP_SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--init", type=Path, help="race: the starting backbone checkpoint (default: random weights)")
    parser.add_argument("--ours", default="anil", help="race: our algorithm")
    parser.add_argument("--peer-inner-steps", type=int, default=1)
    parser.add_argument("--batchnorm", choices=["frozen", "batch"],
                        help="race: BatchNorm of both sides while training (default: our config's, frozen; "
                             "'batch' suits a start from random weights)")
    parser.add_argument("--lr", type=float, default=OUTER_LR, help="race: outer learning rate of both sides "
                                                                   "(1e-3 suits a start from scratch)")
    parser.add_argument("--seconds", type=float, default=360, help="race: training wall time per side")
    parser.add_argument("--eval-every", type=float, default=60)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--summarise", action="store_true", help="race: re-print the last race from its JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.worker:
        print(json.dumps(step_worker(args.worker, args.steps, device)))
        return
    if args.mode == "step":
        runs: dict[str, list[dict]] = {side: [] for side in STEP_SIDES}
        for _ in range(args.repeats):  # alternate sides: drift of the machine hits both alike
            for side in runs:
                out = subprocess.run([sys.executable, __file__, "step", "--worker", side, "--steps", str(args.steps)],
                                     check=True, capture_output=True, text=True).stdout
                runs[side].append(json.loads(out.strip().splitlines()[-1]))
        medians = {side: {key: float(np.median([r[key] for r in rs])) for key in ("median_s", "peak_mb", "saved_mb")}
                   for side, rs in runs.items()}
        spread = ", ".join(f"{side} {min(r['peak_mb'] for r in rs):.0f}-{max(r['peak_mb'] for r in rs):.0f} MB"
                           for side, rs in runs.items())
        peer = medians["peer"]
        lines = [f"Second-order MAML meta-step, ResNet18 at {SIZE} px, {WAY}-way {SHOT}-shot {QUERIES} queries, "
                 f"full network, 1 inner step, {device.type}; {args.repeats} fresh processes a side, alternating, "
                 f"each timing {args.steps} steps after a warm-up; medians (peak memory range: {spread}):", "",
                 "| | time per step | peak memory above set-up | saved for backward | ratios to the peer |",
                 "|---|---:|---:|---:|---|",
                 *(f"| {STEP_SIDES[side]} | {r['median_s']:.2f} s | {r['peak_mb']:.0f} MB | {r['saved_mb']:.0f} MB | "
                   + ("" if side == "peer" else f"time {r['median_s'] / peer['median_s']:.2f}, peak "
                      f"{r['peak_mb'] / peer['peak_mb']:.2f}, saved {r['saved_mb'] / peer['saved_mb']:.2f}") + " |"
                   for side, r in medians.items())]
    elif args.summarise:
        raw = json.loads((ROOT / "bench" / "results" / "maml_peer_race.json").read_text())
        lines = race_table(raw, next(side for side in raw if side != PEER))
    else:
        lines = race(args, device)
    out = ROOT / "bench" / "results" / f"maml_peer_{args.mode}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
