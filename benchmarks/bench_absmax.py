"""Blockwise absmax quantization (blocks of 64, int8): time per call and effective bandwidth.

    python benchmarks/bench_absmax.py [--save]

Times the torch reference, and the Triton kernel on a CUDA GPU, with torch.utils.benchmark; prints
one table; --save writes it as JSON under benchmarks/results/ with the device, versions and date.
"""
import argparse
import datetime
import json
import platform
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from lec19quant.quantize import absmax_blockwise

SIZES = [2**16, 2**20, 2**24]


def measure(x: torch.Tensor, backend: str) -> float:
    """Median seconds per call."""
    timer = Timer("absmax_blockwise(x, 64, backend=backend)",
                  globals={"absmax_blockwise": absmax_blockwise, "x": x, "backend": backend})
    return timer.blocked_autorange(min_run_time=1.0).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    device_name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    backends = ["torch", "triton"] if device == "cuda" else ["torch"]
    rows = []
    for n in SIZES:
        x = torch.randn(n, device=device, dtype=torch.float16)
        for backend in backends:
            seconds = measure(x, backend)
            moved = n * 2 + n + n // 64 * 4  # fp16 in, int8 codes and fp32 absmax out
            rows.append({"n": n, "backend": backend, "us": seconds * 1e6, "GB/s": moved / seconds / 1e9})
    print(f"absmax_blockwise, fp16 input, blocks of 64, on {device_name}")
    print(f"{'n':>10} {'backend':>8} {'us':>10} {'GB/s':>8}")
    for r in rows:
        print(f"{r['n']:>10} {r['backend']:>8} {r['us']:>10.1f} {r['GB/s']:>8.1f}")
    if args.save:
        out = Path(__file__).parent / "results" / f"absmax_{device_name.replace(' ', '_')}.json"
        out.write_text(json.dumps({
            "benchmark": "absmax_blockwise", "device": device_name, "date": datetime.date.today().isoformat(),
            "torch": torch.__version__, "rows": rows}, indent=1))
        print("wrote", out)


if __name__ == "__main__":
    main()
