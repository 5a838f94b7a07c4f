"""NVFP4: quantizing on a CPU against torchao, and the Triton matmul against float16 on a GPU.

    python benchmarks/bench_nvfp4.py [--save]

On a CPU: nvfp4.nvfp4_quantize against torchao's NVFP4Tensor.to_nvfp4 (its torch reference path)
on a 4096×4096 matrix, float32 and bfloat16, one and two levels of scales; the two must give the
same bytes, and the table shows milliseconds and millions of values per second.
On a CUDA GPU: Y = X·Ŵᵀ with the Triton kernel (NVFP4 weights decoded inside the matmul) against
torch's float16 matmul and the torch reference (dequantize, then matmul), at M = 1 and 4096 with
4096×4096 and 8192×8192 weights. A batch-1 product is memory-bound: its ceiling is about
16 / 4.5 ≈ 3.6 times float16's speed.
"""
import torch
from harness import Target, machine, median_seconds, run

from lec19quant import nvfp4

CPU_SHAPE = (4096, 4096)
GPU_SHAPES = [(m, k, k) for k in (4096, 8192) for m in (1, 4096)]


def cpu_rows() -> list[dict]:
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale

    def torchao(x, two_levels):
        scale = per_tensor_amax_to_scale(x.abs().max()) if two_levels else None
        return NVFP4Tensor.to_nvfp4(x, per_tensor_scale=scale)

    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(CPU_SHAPE).to(dtype)
        for two_levels in (False, True):
            ours, theirs = nvfp4.nvfp4_quantize(x, "auto" if two_levels else None), torchao(x, two_levels)
            assert torch.equal(ours.codes, theirs.qdata), "not the same codes as torchao"
            assert torch.equal(ours.block_scales, theirs.scale.view(torch.uint8)), "not the same scales"
            t_ours = median_seconds(lambda: nvfp4.nvfp4_quantize(x, "auto" if two_levels else None))
            t_ao = median_seconds(lambda: torchao(x, two_levels))
            rows.append({"input": f"{CPU_SHAPE[0]}×{CPU_SHAPE[1]} {str(dtype).removeprefix('torch.')}",
                         "levels": 2 if two_levels else 1, "lec19quant ms": t_ours * 1e3,
                         "torchao ms": t_ao * 1e3, "lec19quant Mvalues/s": x.numel() / t_ours / 1e6,
                         "torchao Mvalues/s": x.numel() / t_ao / 1e6})
    return rows


def gpu_rows(target: Target) -> list[dict]:
    rows = []
    for m, k, n in target.sizes(GPU_SHAPES, [(1, 64, 64), (32, 64, 64)]):
        x = torch.randn(m, k, device=target.device, dtype=torch.float16)
        w = torch.randn(n, k, device=target.device) * 0.02
        q = nvfp4.nvfp4_quantize(w)
        w16 = w.half()
        fp16 = target.seconds(lambda: x @ w16.t())
        kernel = target.seconds(lambda: nvfp4.nvfp4_matmul(x, q, backend="triton"))
        reference = target.seconds(lambda: nvfp4.nvfp4_matmul(x, q, backend="torch"))
        rows.append({"M": m, "K": k, "N": n, "fp16 ms": fp16 * 1e3, "triton nvfp4 ms": kernel * 1e3,
                     "torch reference ms": reference * 1e3, "fp16 / triton": fp16 / kernel})
    return rows


def main() -> None:
    run(__doc__, "nvfp4", cpu_rows, gpu_rows,
        title=f"NVFP4 on {machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        formats=lambda row: {k: ".3f" if k.endswith("ms") else ".1f" for k in row if k.endswith(("ms", "/s"))}
        | {"fp16 / triton": ".2f"})


if __name__ == "__main__":
    main()
