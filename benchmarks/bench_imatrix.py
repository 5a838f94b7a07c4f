"""Quantizing with an importance matrix: throughput against llama.cpp's C.

    python benchmarks/bench_imatrix.py [--save]

On a CPU: Mweights/s of `lec19quant.gguf.quantize(x, fmt, imatrix=...)` (numpy, one thread) and
of llama.cpp's ggml_quantize_chunk with the same importance (one thread, built by
tests/oracles/ggml.py) on the same 64 × 4096 rows, for every format that uses the importance,
with a check that the bytes are the same (goal: at least a third of ggml's speed).
"""
import numpy as np
from bench_gguf import against_ggml
from harness import machine, run

ROWS, COLS = 64, 4096
WEIGHTED = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]


def cpu_rows() -> list[dict]:
    g = np.random.default_rng(0)
    x = (0.02 * g.standard_normal((ROWS, COLS))).astype(np.float32)
    a = g.standard_normal((256, COLS)).astype(np.float32)
    a[:, ::64] *= 20  # outlier channels, as in real activations
    return against_ggml(x, WEIGHTED, (a * a).mean(axis=0).astype(np.float32))


def main() -> None:
    run(__doc__, "imatrix", cpu_rows,
        title=f"GGUF quantization with an importance matrix, {ROWS} × {COLS} rows, one thread, on {machine()}",
        formats=lambda row: {k: ".2f" for k, v in row.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
