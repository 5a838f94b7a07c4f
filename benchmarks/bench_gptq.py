"""GPTQ: quantization time per layer against llm-compressor, and the group-wise GEMV on a GPU.

    python benchmarks/bench_gptq.py [--save] [--gpu] [--dry-run]

On a CPU: GPTQ (4-bit, groups of 128, static groups so that both do the same work) on weights of
the running example's shapes with a random Hessian: this package's `gptq_quantize` against
llm-compressor's `quantize_weight` (when installed), both in float32, one layer at a time.
On a CUDA GPU: y = Ŵx at batch 1 for 4-bit group-128 weights of Llama-sized layers: torch's fp16
product, the Triton kernel without act-order, with act-order reading g_idx column by column
("gather"), and with exllama's reordering ("reorder").
"""
import torch
from harness import Target, machine, median_seconds, run

from lec19quant import gptq
from lec19quant.groupwise import GroupQuantLinear, default_g_idx

CPU_SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536)]  # SmolLM2's (out, in)
GPU_SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336)]


def _problem(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(4 * k, k, generator=g) * (torch.rand(k, generator=g) * 3 + 0.1)
    return torch.randn(n, k, generator=g) * 0.05, 2 * X.t() @ X / X.shape[0]


def _llm_compressor():
    try:
        from compressed_tensors.quantization import QuantizationArgs
        from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight
    except ImportError:
        return None
    return quantize_weight, QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group",
                                             group_size=128)


def cpu_rows() -> list[dict]:
    oracle = _llm_compressor()
    rows = []
    for n, k in CPU_SHAPES:
        W, H = _problem(n, k)
        result = gptq.gptq_quantize(W, H, 4, 128, static_groups=True)
        row = {"out × in": f"{n}×{k}",
               "ours s": median_seconds(lambda: gptq.gptq_quantize(W, H, 4, 128, static_groups=True), 0.5),
               "llm-compressor s": float("nan")}
        if oracle is not None:
            quantize_weight, args = oracle
            scale, zero = result.scales.float()[None], (result.zeros.float() - 8).to(torch.int8)[None]
            row["llm-compressor s"] = median_seconds(
                lambda: quantize_weight(W[None].clone(), H[None].clone(), scale, zero, None, args), 0.5)
        row["ratio"] = row["ours s"] / row["llm-compressor s"]
        rows.append(row)
    return rows


def gpu_rows(target: Target) -> list[dict]:
    rows = []
    for n, k in target.sizes(GPU_SHAPES, [(64, 256)]):
        g = torch.Generator().manual_seed(0)
        groups = -(-k // 128)
        codes = torch.randint(0, 16, (n, k), generator=g)
        scales, zeros = torch.rand(n, groups, generator=g) * 0.01, torch.randint(1, 16, (n, groups), generator=g)
        shuffled = default_g_idx(k, 128)[torch.randperm(k, generator=g)]
        plain = GroupQuantLinear(codes, scales, zeros, 4, 128, backend="triton").to(target.device)
        act = GroupQuantLinear(codes, scales, zeros, 4, 128, shuffled, backend="triton").to(target.device)
        x = torch.randn(1, k, device=target.device, dtype=torch.float16)
        w16 = plain.dequantized_weight().half()
        from lec19quant.kernels import groupwise as kernel

        kernel.matmul(act, x)  # the reordering happens once, at first use
        row = {"out × in": f"{n}×{k}",
               "fp16 µs": target.seconds(lambda: x @ w16.T) * 1e6,
               "w4 µs": target.seconds(lambda: kernel.matmul(plain, x)) * 1e6,
               "act gather µs": target.seconds(lambda: kernel.matmul(act, x, act_order="gather")) * 1e6,
               "act reorder µs": target.seconds(lambda: kernel.matmul(act, x)) * 1e6}
        row["fp16 / w4"] = row["fp16 µs"] / row["w4 µs"]
        rows.append(row)
    return rows


def main() -> None:
    run(__doc__, "gptq", cpu_rows, gpu_rows, title=f"GPTQ on {machine()}, torch {torch.__version__}",
        formats=lambda row: {k: ".3f" if k.endswith(("s", "ratio", "w4")) and "µs" not in k else ".1f"
                             for k in row if k != "out × in"})


if __name__ == "__main__":
    main()
