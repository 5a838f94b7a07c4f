"""Blockwise absmax quantization (blocks of 64, int8): time per call and effective bandwidth.

    python benchmarks/bench_absmax.py [--save]

The torch reference on the CPU; on a CUDA GPU the Triton kernel and the torch reference, with the
bandwidth each reaches as a fraction of the GPU's.
"""
import torch
from harness import Target, bandwidth_fraction, machine, median_seconds, run

from lec19quant.quantize import absmax_blockwise

SIZES = [2**16, 2**20, 2**24]


def measure(target: Target | None = None) -> list[dict]:
    """On the CPU (target None): the torch reference; else both backends on target's device."""
    device, sizes = ("cpu", SIZES) if target is None else (target.device, target.sizes(SIZES, [2**12]))
    seconds_of = median_seconds if target is None else target.seconds
    rows = []
    for n in sizes:
        x = torch.randn(n, device=device, dtype=torch.float16)
        for backend in ["torch"] if target is None else ["torch", "triton"]:
            seconds = seconds_of(lambda: absmax_blockwise(x, 64, backend=backend))
            moved = 2 * n + n + n // 64 * 4  # fp16 in, int8 codes and fp32 absmax out
            rows.append({"n": n, "backend": backend, "us": seconds * 1e6, "GB/s": moved / seconds / 1e9})
            if target is not None:
                rows[-1]["of peak"] = bandwidth_fraction(moved / seconds)
    return rows


def main() -> None:
    run(__doc__, "absmax", measure, measure, title=f"absmax_blockwise, fp16 input, blocks of 64, on {machine()}",
        formats={"us": ".1f", "GB/s": ".1f", "of peak": ".2f"})


if __name__ == "__main__":
    main()
