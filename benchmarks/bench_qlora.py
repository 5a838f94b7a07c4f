"""NF4 at batch 1: the fused dequantize + matrix-vector kernel against fp16 and bitsandbytes.

    python benchmarks/bench_qlora.py [--save]

On a CPU: NF4 quantization and dequantization of a 4096×4096 weight (this package's torch
reference and bitsandbytes' CPU kernels), and y = Ŵx at batch 1 through the torch reference
(dequantize, then multiply) against a float32 matrix-vector product.
On a CUDA GPU: y = Ŵx at batch 1 for 4096×4096, 4096×14336 and 8192×8192 weights: torch's fp16
product, this package's Triton kernel (qlora.nf4_matmul), and bitsandbytes' matmul_4bit (its
gemv kernel) when bitsandbytes is installed; plus the Triton dequantization kernel alone.
"""
import torch
from harness import Target, machine, median_seconds, run

from lec19quant import qlora

CPU_SHAPE = (4096, 4096)
GPU_SHAPES = [(4096, 4096), (14336, 4096), (8192, 8192)]  # (out, in)


def _bitsandbytes():
    try:
        import bitsandbytes.functional as bnb
    except ImportError:
        return None
    return bnb


def cpu_rows() -> list[dict]:
    bnb = _bitsandbytes()
    n, k = CPU_SHAPE
    w, x = torch.randn(n, k) * 0.02, torch.randn(k)
    packed, state = qlora.nf4_quantize(w)
    rows = [
        {"operation": "nf4_quantize (double quant)", "ours ms": median_seconds(lambda: qlora.nf4_quantize(w)) * 1e3},
        {"operation": "nf4_dequantize", "ours ms": median_seconds(lambda: qlora.nf4_dequantize(packed, state)) * 1e3},
        {"operation": "y = Ŵx (dequantize, multiply)",
         "ours ms": median_seconds(lambda: qlora.nf4_matmul(x, packed, state, backend="torch")) * 1e3},
        {"operation": "y = Wx, float32", "ours ms": median_seconds(lambda: w @ x) * 1e3},
    ]
    theirs = [float("nan")] * 4
    if bnb is not None:
        bnb_packed, bnb_state = bnb.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
        theirs[0] = median_seconds(lambda: bnb.quantize_4bit(w, quant_type="nf4", compress_statistics=True)) * 1e3
        theirs[1] = median_seconds(lambda: bnb.dequantize_4bit(bnb_packed, bnb_state)) * 1e3
    for row, t in zip(rows, theirs):
        row["bitsandbytes ms"] = t
    return rows


def gpu_rows(target: Target) -> list[dict]:
    bnb = None if target.dry_run else _bitsandbytes()  # on a GPU only: its CUDA kernels are what we compare with
    rows = []
    for n, k in target.sizes(GPU_SHAPES, [(64, 128)]):
        w = torch.randn(n, k, device=target.device) * 0.02
        x = torch.randn(1, k, device=target.device, dtype=torch.float16)
        w16 = w.half()
        packed, state = qlora.nf4_quantize(w)
        state.dtype = torch.float16
        row = {"out × in": f"{n}×{k}",
               "fp16 µs": target.seconds(lambda: x @ w16.T) * 1e6,
               "nf4 triton µs": target.seconds(lambda: qlora.nf4_matmul(x, packed, state, backend="triton")) * 1e6,
               "dequantize µs": target.seconds(lambda: qlora.nf4_dequantize(packed, state, backend="triton")) * 1e6}
        row["bitsandbytes µs"] = float("nan")
        if bnb is not None:
            import bitsandbytes

            bnb_packed, bnb_state = bnb.quantize_4bit(w16, quant_type="nf4", compress_statistics=True)
            row["bitsandbytes µs"] = target.seconds(
                lambda: bitsandbytes.matmul_4bit(x, bnb_packed.t(), quant_state=bnb_state)) * 1e6
        row["fp16 / triton"] = row["fp16 µs"] / row["nf4 triton µs"]
        rows.append(row)
    return rows


def main() -> None:
    run(__doc__, "qlora", cpu_rows, gpu_rows, title=f"NF4 at batch 1 on {machine()}, torch {torch.__version__}",
        formats=lambda row: {k: ".2f" if k.endswith(("ms", "triton")) else ".1f" for k in row
                             if k not in ("operation", "out × in")})


if __name__ == "__main__":
    main()
