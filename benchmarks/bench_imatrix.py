"""Quantizing with an importance matrix: throughput against llama.cpp's C.

    python benchmarks/bench_imatrix.py [--save]

On a CPU: Mweights/s of `lec19quant.gguf.quantize(x, fmt, imatrix=...)` (numpy, one thread) and
of llama.cpp's ggml_quantize_chunk with the same importance (one thread, built by
tests/oracles/ggml.py) on the same 64 × 4096 rows, for every format that uses the importance,
with a check that the bytes are the same (goal: at least a third of ggml's speed).
"""
import sys
from pathlib import Path

import numpy as np
import torch
from harness import machine, median_seconds, run

from lec19quant import gguf

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from oracles import ggml as oracle  # noqa: E402  (llama.cpp's ggml, built once per machine)

ROWS, COLS = 64, 4096
WEIGHTED = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]


def cpu_rows() -> list[dict]:
    torch.set_num_threads(1)
    g = np.random.default_rng(0)
    x = (0.02 * g.standard_normal((ROWS, COLS))).astype(np.float32)
    a = g.standard_normal((256, COLS)).astype(np.float32)
    a[:, ::64] *= 20  # outlier channels, as in real activations
    importance = (a * a).mean(axis=0).astype(np.float32)
    try:
        ggml = oracle.load()
    except oracle.NoToolchain as e:
        print(f"llama.cpp's ggml cannot be built here ({e}): timing the package alone")
        ggml = None
    rows = []
    for name in WEIGHTED:
        ours = median_seconds(lambda: gguf.quantize(x, name, imatrix=importance))
        row = {"format": name, "ours Mw/s": x.size / ours / 1e6}
        if ggml is not None:
            theirs = median_seconds(lambda: ggml.quantize(x, name, importance))
            row |= {"llama.cpp Mw/s": x.size / theirs / 1e6, "ours / llama.cpp": theirs / ours,
                    "same bytes": bool(np.array_equal(gguf.quantize(x, name, imatrix=importance),
                                                      ggml.quantize(x, name, importance)))}
        rows.append(row)
    return rows


def main() -> None:
    run(__doc__, "imatrix", cpu_rows,
        title=f"GGUF quantization with an importance matrix, {ROWS} × {COLS} rows, one thread, on {machine()}",
        formats=lambda row: {k: ".2f" for k, v in row.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
