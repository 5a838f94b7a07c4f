"""Encoding 10^7 float32 values: formats.encode against numpy's own astype to the same format.

    python benchmarks/bench_formats.py [--save]

For each named format with a numpy dtype (numpy's float16, ml_dtypes' others), times
formats.encode (torch, on the CPU threads torch uses) and x.astype(dtype) (numpy, one thread)
with torch.utils.benchmark; prints one table with the ratio, whose target is at most 10×;
--save writes it as JSON under benchmarks/results/ with the machine, versions and date.
"""
import argparse
import datetime
import json
import platform
from pathlib import Path

import numpy as np
import torch
from torch.utils.benchmark import Timer

from lec19quant import formats

try:
    import ml_dtypes
except ImportError as e:
    raise SystemExit("this benchmark compares with ml_dtypes: pip install 'lec19quant[test]'") from e

N = 10**7
TARGET = 10.0
DTYPES = {
    "FP16": np.float16, "BF16": ml_dtypes.bfloat16,
    "FP8_E4M3": ml_dtypes.float8_e4m3fn, "FP8_E5M2": ml_dtypes.float8_e5m2,
    "FP6_E2M3": ml_dtypes.float6_e2m3fn, "FP6_E3M2": ml_dtypes.float6_e3m2fn,
    "FP4_E2M1": ml_dtypes.float4_e2m1fn, "E8M0": ml_dtypes.float8_e8m0fnu,
}


def median_seconds(stmt: str, **names) -> float:
    return Timer(stmt, globals=names).blocked_autorange(min_run_time=1.0).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(N)  # normal values: in range for the wide formats, overflowing FP4 and FP6
    x_np = x.numpy()
    rows = []
    for name, dtype in DTYPES.items():
        fmt = formats.FLOAT_FORMATS[name]
        ours = median_seconds("encode(x, fmt)", encode=formats.encode, x=x, fmt=fmt)
        theirs = median_seconds("x.astype(dtype)", x=x_np, dtype=dtype)
        rows.append({"format": name, "numpy ms": theirs * 1e3, "ours ms": ours * 1e3,
                     "ratio": ours / theirs})
    machine = platform.processor() or platform.machine()
    print(f"encode {N:,} float32 values on {machine}, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, numpy {np.__version__}, ml_dtypes {ml_dtypes.__version__}")
    print(f"{'format':<10} {'numpy ms':>9} {'ours ms':>9} {'ratio':>6}")
    for r in rows:
        flag = "" if r["ratio"] <= TARGET else f"  > {TARGET:g}× target"
        print(f"{r['format']:<10} {r['numpy ms']:>9.1f} {r['ours ms']:>9.1f} {r['ratio']:>6.1f}{flag}")
    if args.save:
        out = Path(__file__).parent / "results" / f"formats_{machine.replace(' ', '_')}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({
            "benchmark": "formats.encode vs numpy astype", "n": N, "machine": machine,
            "threads": torch.get_num_threads(), "date": datetime.date.today().isoformat(),
            "torch": torch.__version__, "numpy": np.__version__,
            "ml_dtypes": ml_dtypes.__version__, "rows": rows}, indent=1))
        print("wrote", out)


if __name__ == "__main__":
    main()
