"""Anomaly scoring's nearest-neighbour search: the runtime's NumPy against faiss-cpu's exact index.

    pip install faiss-cpu && python bench/nn_search.py

Per crop: 64 patches (384-d) against banks of 512 and 4,096 patches, median of 10 runs.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.anomaly import nearest_distances  # noqa: E402


def per_crop_ms(search, crops: int) -> float:
    search()
    times = []
    for _ in range(10):
        started = time.perf_counter()
        search()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) / crops * 1000


def main() -> None:
    import faiss

    rng = np.random.default_rng(0)
    queries = rng.random((16 * 64, 384), dtype=np.float32)
    for size in (512, 4096):
        bank = rng.random((size, 384), dtype=np.float32)
        index = faiss.IndexFlatL2(384)
        index.add(bank)
        numpy_ms = per_crop_ms(lambda: nearest_distances(queries, bank), 16)
        faiss_ms = per_crop_ms(lambda: index.search(queries, 1), 16)
        print(f"bank {size}: NumPy {numpy_ms:.2f} ms a crop, faiss {faiss_ms:.2f} ms a crop")


if __name__ == "__main__":
    main()
