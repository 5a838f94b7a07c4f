"""The figures of the chapter "Making it fast", and the GPU measurements it shows."""
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def roofline(k: int, n: int, gpu: str = "T4", weight_bits: dict | None = None, ax=None):
    """The least time Y = X·Wᵀ (W of shape (n, k)) can take on `gpu`, against the number of
    tokens M, for weights stored at each of `weight_bits` ({label: bits per weight}): flat while
    reading the weights dominates, rising once the arithmetic does."""
    from .. import roofline as rl

    weight_bits = weight_bits or {"FP16": 16.0, "Q4_K (4.5 bits)": 4.5}
    g = rl.GPUS[gpu]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    ms = np.unique(np.logspace(0, 14, 57, base=2).astype(int))
    for label, bits in weight_bits.items():
        costs = [rl.matmul_cost(int(m), k, n, weight_bits=bits) for m in ms]
        line, = ax.plot(ms, [rl.min_time(c, g) * 1e6 for c in costs], label=label)
        knee = next(i for i, c in enumerate(costs) if not rl.memory_bound(c, g))
        ax.plot(ms[knee], rl.min_time(costs[knee], g) * 1e6, "o", color=line.get_color())
        ax.annotate(f"compute-bound from M ≈ {ms[knee]}", (ms[knee], rl.min_time(costs[knee], g) * 1e6),
                    textcoords="offset points", xytext=(8, -12), fontsize="small", color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens in the batch (M)")
    ax.set_ylabel("least time (µs)")
    ax.set_title(f"{k}×{n} weights on the {g.name} ({g.bandwidth / 1e9:,.0f} GB/s, {g.fp16_flops / 1e12:,.0f} TFLOP/s)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")
    return ax.figure


def gpu_results(folder) -> list[dict]:
    """The benchmark tables a GPU measured, for the chapter's last section: the JSON files
    <benchmark>_gpu_<GPU>.json in `folder` (benchmarks/results/), dry runs left out, by file name.
    Empty when there are none, or no such folder (outside a checkout of the repository)."""
    folder = Path(folder)
    tables = [json.loads(p.read_text()) for p in sorted(folder.glob("*_gpu_*.json"))] if folder.is_dir() else []
    return [t for t in tables if not t.get("dry_run")]
