"""What every training loop writes: CSV log rows and checkpoints that survive being killed."""
from __future__ import annotations

import csv
from pathlib import Path

import torch


def append_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def save_atomically(state: dict, path: Path) -> None:
    """Write beside, then rename: a kill mid-write leaves the previous checkpoint intact."""
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)
