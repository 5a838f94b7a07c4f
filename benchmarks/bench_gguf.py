"""GGUF: quantization throughput against llama.cpp's C, and the fused Q4_K matrix-vector kernel.

    python benchmarks/bench_gguf.py [--save]

On a CPU: Mweights/s of `lec19quant.gguf.quantize` (numpy, one thread) and of llama.cpp's
reference quantizer (ggml_quantize_chunk, one thread, built by tests/oracles/ggml.py) on the
same 256 × 4096 rows, for every format, with a check that the bytes are the same.
On a CUDA GPU: y = W·x at batch 1 for W of 4096 × 4096, 4096 × 14336 and 8192 × 8192, the
fused Triton Q4_K kernel against torch's fp16 matrix-vector product (the memory-bound limit is
16 / 4.5 ≈ 3.6× faster), with the bandwidth each reaches (and the fraction of the GPU's).
"""
import sys
from pathlib import Path

import numpy as np
import torch
from harness import Target, bandwidth_fraction, machine, median_seconds, run

from lec19quant import gguf

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from oracles import ggml as oracle  # noqa: E402  (llama.cpp's ggml, built once per machine)

ROWS, COLS = 256, 4096
GPU_SHAPES = [(4096, 4096), (4096, 14336), (8192, 8192)]  # W: (out, in)


def against_ggml(x: np.ndarray, names, importance: np.ndarray | None = None) -> list[dict]:
    """For each format: Mweights/s of `gguf.quantize` and of llama.cpp's ggml_quantize_chunk on
    the rows `x` (one thread each, with the same importance per column or none), and whether
    their bytes are the same."""
    torch.set_num_threads(1)
    try:
        ggml = oracle.load()
    except oracle.NoToolchain as e:
        print(f"llama.cpp's ggml cannot be built here ({e}): timing the package alone")
        ggml = None
    rows = []
    for name in names:
        ours = median_seconds(lambda: gguf.quantize(x, name, imatrix=importance))
        row = {"format": name, "ours Mw/s": x.size / ours / 1e6}
        if ggml is not None:
            theirs = median_seconds(lambda: ggml.quantize(x, name, importance))
            row |= {"llama.cpp Mw/s": x.size / theirs / 1e6, "ours / llama.cpp": theirs / ours,
                    "same bytes": bool(np.array_equal(gguf.quantize(x, name, imatrix=importance),
                                                      ggml.quantize(x, name, importance)))}
        rows.append(row)
    return rows


def cpu_rows() -> list[dict]:
    x = (0.02 * np.random.default_rng(0).standard_normal((ROWS, COLS))).astype(np.float32)
    return against_ggml(x, gguf.FORMATS)


def gpu_rows(target: Target) -> list[dict]:
    rows = []
    for n, k in target.sizes(GPU_SHAPES, [(64, 512)]):
        w = 0.02 * torch.randn(n, k)
        raw = torch.from_numpy(gguf.quantize(w, "Q4_K")).to(target.device)
        w16 = gguf.dequantize(raw, "Q4_K", (n, k)).half()
        x = torch.randn(k, device=target.device, dtype=torch.float16)
        fused = target.seconds(lambda: gguf.matvec(raw, "Q4_K", (n, k), x, backend="triton"))
        dense = target.seconds(lambda: w16 @ x)
        error = (gguf.matvec(raw, "Q4_K", (n, k), x, backend="triton") - w16.float() @ x.float()).abs().max().item()
        rows.append({"N": n, "K": k, "fp16 µs": dense * 1e6, "fused Q4_K µs": fused * 1e6,
                     "speed-up": dense / fused, "fp16 GB/s": w16.nbytes / dense / 1e9,
                     "Q4_K GB/s": raw.nbytes / fused / 1e9, "Q4_K of peak": bandwidth_fraction(raw.nbytes / fused),
                     "max |Δy|": error})
    return rows


def main() -> None:
    run(__doc__, "gguf", cpu_rows, gpu_rows,
        title=(f"fused Q4_K matrix-vector product on {machine()}" if torch.cuda.is_available() else
               f"GGUF quantization, {ROWS} × {COLS} rows, one thread, on {machine()}"),
        formats=lambda row: {k: ".3g" if k == "max |Δy|" else ".2f" for k, v in row.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
