"""Blockwise absmax quantization (blocks of 64, int8): time per call and effective bandwidth.

    python benchmarks/bench_absmax.py [--save]

The torch reference everywhere, the Triton kernel too on a CUDA GPU.
"""
import torch
from harness import machine, median_seconds, run

from lec19quant.quantize import absmax_blockwise

SIZES = [2**16, 2**20, 2**24]


def measure() -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for n in SIZES:
        x = torch.randn(n, device=device, dtype=torch.float16)
        for backend in ["torch", "triton"] if device == "cuda" else ["torch"]:
            seconds = median_seconds(lambda: absmax_blockwise(x, 64, backend=backend))
            moved = 2 * n + n + n // 64 * 4  # fp16 in, int8 codes and fp32 absmax out
            rows.append({"n": n, "backend": backend, "us": seconds * 1e6, "GB/s": moved / seconds / 1e9})
    return rows


def main() -> None:
    run(__doc__, "absmax", measure, title=f"absmax_blockwise, fp16 input, blocks of 64, on {machine()}",
        formats={"us": ".1f", "GB/s": ".1f"})


if __name__ == "__main__":
    main()
