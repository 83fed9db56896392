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


def restore(path: Path, device: torch.device, **objects) -> dict | None:
    """Resume: load each named object's state dict from the checkpoint at ``path``, if there is one."""
    if not path.exists():
        return None
    state = torch.load(path, map_location=device, weights_only=True)
    for name, target in objects.items():
        target.load_state_dict(state[name])
    return state
