"""Vector-wise int8 matmul X·Wᵀ against float matmul, at decoding (M = 1, 16) and prefill (4096).

    python benchmarks/bench_int8.py [--save]

On a CPU: the torch reference (int8.int8_matmul, which quantizes both operands every call)
and its integer product alone against a float32 matmul, at 4096×4096.
On a CUDA GPU: the int32 product of the Triton kernel against torch's fp16 matmul and
torch._int_mm, at 4096×4096 and 8192×8192 weights.
"""
import torch
from harness import Target, machine, median_seconds, run

from lec19quant import int8

CPU_SHAPES = [(m, 4096, 4096) for m in (1, 16, 256)]
GPU_SHAPES = [(m, k, k) for k in (4096, 8192) for m in (1, 16, 4096)]


def cpu_rows() -> list[dict]:
    rows = []
    for m, k, n in CPU_SHAPES:
        x, w = torch.randn(m, k), torch.randn(k, n)
        a, b = (torch.randint(-127, 128, shape, dtype=torch.int8) for shape in [(m, k), (k, n)])
        fp32 = median_seconds(lambda: x @ w)
        ours = median_seconds(lambda: int8.int8_matmul(x, w, backend="torch"))
        product = median_seconds(lambda: int8.matmul_int32(a, b, backend="torch"))
        rows.append({"M": m, "K": k, "N": n, "fp32 ms": fp32 * 1e3, "int8_matmul ms": ours * 1e3,
                     "of which Z = QxQw ms": product * 1e3})
    return rows


def gpu_rows(target: Target) -> list[dict]:
    rows, device = [], target.device
    for m, k, n in target.sizes(GPU_SHAPES, [(1, 64, 64), (32, 64, 64)]):
        x, w = torch.randn(m, k, device=device, dtype=torch.float16), torch.randn(k, n, device=device, dtype=torch.float16)
        a = torch.randint(-127, 128, (m, k), dtype=torch.int8, device=device)
        b = torch.randint(-127, 128, (k, n), dtype=torch.int8, device=device)
        row = {"M": m, "K": k, "N": n, "fp16 ms": target.seconds(lambda: x @ w) * 1e3,
               "triton int8 ms": target.seconds(lambda: int8.matmul_int32(a, b, backend="triton")) * 1e3}
        row["_int_mm ms"] = target.seconds(lambda: torch._int_mm(a, b)) * 1e3 if m > 16 else float("nan")
        rows.append(row)
    return rows


def main() -> None:
    run(__doc__, "int8", cpu_rows, gpu_rows, title=f"int8 matmul on {machine()}, torch {torch.__version__}",
        formats=lambda row: {k: ".3f" for k in row if k.endswith("ms")})


if __name__ == "__main__":
    main()
