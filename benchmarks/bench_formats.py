"""Encoding 10^7 float32 values: formats.encode against numpy's own astype to the same format.

    python benchmarks/bench_formats.py [--save]

For each named format with a numpy dtype (numpy's float16, ml_dtypes' others), times
formats.encode (torch, on the CPU threads torch uses) and x.astype(dtype) (numpy, one thread)
with torch.utils.benchmark; prints one table with the ratio, whose target is at most 10×;
--save writes it as JSON under benchmarks/results/ with the machine, versions and date.
"""
import numpy as np
import torch
from harness import machine, median_seconds, run

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


def measure() -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(N)  # normal values: in range for the wide formats, overflowing FP4 and FP6
    x_np = x.numpy()
    rows = []
    for name, dtype in DTYPES.items():
        fmt = formats.FLOAT_FORMATS[name]
        ours = median_seconds(lambda: formats.encode(x, fmt))
        theirs = median_seconds(lambda: x_np.astype(dtype))
        rows.append({"format": name, "numpy ms": theirs * 1e3, "ours ms": ours * 1e3,
                     "ratio": ours / theirs, "target met": "yes" if ours / theirs <= TARGET else "NO"})
    return rows


def main() -> None:
    run(__doc__, "formats", measure,
        title=f"encode {N:,} float32 values on {machine()}, torch {torch.__version__} with "
              f"{torch.get_num_threads()} threads, numpy {np.__version__}, ml_dtypes {ml_dtypes.__version__} "
              f"(target: ratio ≤ {TARGET:g})",
        formats={"numpy ms": ".1f", "ours ms": ".1f", "ratio": ".1f"},
        n=N, numpy=np.__version__, ml_dtypes=ml_dtypes.__version__)


if __name__ == "__main__":
    main()
