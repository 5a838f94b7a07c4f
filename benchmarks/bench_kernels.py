"""Every matmul kernel family at the sizes that matter, against torch in the same run.

    python benchmarks/bench_kernels.py [--save] [--out DIR] [--gpu] [--dry-run]

On a CUDA GPU: Y = X·Wᵀ for X of M = 1, 16 and 4096 tokens and W of 4096×4096, 4096×14336 and
8192×8192 (N × K), each family as a layer computes it: the fused Triton kernel where the family has
one (int8, LLM.int8() and NVFP4 at every M; NF4 and Q4_K at M = 1; GPTQ/AWQ's groupwise int4 at
M ≤ 16), else Triton's dequantization
and torch's float16 matmul. Against torch's float16 matmul (× fp16 = its time / the kernel's) and,
for the int8 product, torch._int_mm (which needs M > 16). GB/s counts the bytes the product
must move at least (roofline.matmul_cost: weights at their bits per weight, X and Y once); "of
peak" divides it by the GPU's datasheet bandwidth, "of limit" is the roofline's least time over
the time taken. The goals (printed, never asserted): each 4-bit kernel at M = 1 at least 2.5×
faster than float16 on an H100 or H200 (the memory-bound limit is 16 / 4.5 ≈ 3.6×), and the int8
product at M = 4096 at least 0.7× as fast as torch._int_mm. On a CPU it measures nothing: the
other benchmarks time the CPU paths (--dry-run runs the GPU table here at tiny sizes).
"""
import math
import sys
from dataclasses import dataclass
from typing import Callable

import torch
from bench_llm_int8 import activations
from harness import Target, datasheet_gpu, machine, print_table, run

from lec19quant import gguf, int8, nvfp4, qlora, roofline
from lec19quant.groupwise import GroupQuantLinear

TOKENS = [1, 16, 4096]
WEIGHTS = [(4096, 4096), (4096, 14336), (8192, 8192)]  # (N, K): out × in
TINY_TOKENS, TINY_WEIGHTS = [1, 17], [(64, 512)]
FOUR_BIT_GOAL, INT8_GOAL = 2.5, 0.7


@dataclass(frozen=True)
class Family:
    """A kernel family: prepare(w16 (N, K), target) gives its weights once per shape;
    call(x, weights) computes Y (M, N) (x: float16, or int8 codes for the int8 product);
    weight_bits, act_bits and out_bits count its bytes."""

    name: str
    prepare: Callable
    call: Callable
    weight_bits: float
    act_bits: float = 16
    out_bits: float = 32
    int8: bool = False  # int8 arithmetic: compared with torch._int_mm too


def _q4_k(w16: torch.Tensor, target: Target) -> tuple[torch.Tensor, tuple[int, int]]:
    """Q4_K blocks of W: the first ≤ 256 rows quantized (numpy, on the CPU) and repeated, since
    the time does not depend on the values."""
    n, k = w16.shape
    rows = min(n, 256)
    raw = torch.from_numpy(gguf.quantize(w16[:rows].float().cpu(), "Q4_K"))
    return raw.to(target.device).repeat(n // rows, 1), (n, k)


def _q4_k_call(x: torch.Tensor, weights) -> torch.Tensor:
    raw, shape = weights
    if x.shape[0] == 1:
        return gguf.matvec(raw, "Q4_K", shape, x[0], backend="triton")
    return x @ gguf.dequantize(raw, "Q4_K", shape, backend="triton").view(shape).to(x.dtype).t()


def _nf4(w16: torch.Tensor, target: Target):
    packed, state = qlora.nf4_quantize(w16.float())
    state.dtype = torch.float16
    return packed, state


def _groupwise(w16: torch.Tensor, target: Target) -> GroupQuantLinear:
    """GPTQ/AWQ storage, 4 bits in groups of 128 (random codes: the time does not depend on them)."""
    n, k = w16.shape
    codes = torch.randint(0, 16, (n, k), dtype=torch.int32, device=w16.device)
    scales = torch.rand(n, k // 128, device=w16.device) * 0.01
    return GroupQuantLinear(codes, scales, torch.full_like(scales, 8), 4, 128, backend="triton")


FAMILIES = [
    Family("int8 product (W8A8)", lambda w, t: torch.randint(-127, 128, w.shape, dtype=torch.int8, device=w.device).t(),
           lambda a, b: int8.matmul_int32(a, b, backend="triton"), weight_bits=8, act_bits=8, int8=True),
    Family("LLM.int8() layer", lambda w, t: int8.Int8Linear(w, None, threshold=6.0, backend="triton"),
           lambda x, layer: layer(x), weight_bits=8),
    Family("NF4 (QLoRA)", _nf4, lambda x, w: qlora.nf4_matmul(x, *w, backend="triton"), weight_bits=4.5, out_bits=16),
    Family("Q4_K (GGUF)", _q4_k, _q4_k_call, weight_bits=4.5),
    Family("NVFP4", lambda w, t: nvfp4.nvfp4_quantize(w.float()), lambda x, q: nvfp4.nvfp4_matmul(x, q, backend="triton"),
           weight_bits=4.5),
    Family("GPTQ/AWQ int4 g128", _groupwise, lambda x, layer: layer(x), weight_bits=4 + 20 / 128, out_bits=16),
]


def _codes(x: torch.Tensor) -> torch.Tensor:
    """Random int8 activations of x's shape (the int8 product's timing does not depend on them)."""
    return torch.randint(-127, 128, x.shape, dtype=torch.int8, device=x.device)


def _int_mm_seconds(a: torch.Tensor, b: torch.Tensor, target: Target) -> float:
    try:
        torch._int_mm(a, b)
    except RuntimeError:  # M ≤ 16, or sizes cuBLAS does not take
        return math.nan
    return target.seconds(lambda: torch._int_mm(a, b))


def _attempt(target: Target, what: str, fn, failed=math.nan):
    """fn(); on a GPU, where one run must give every family it can, a failure is printed and
    gives `failed` instead (a dry run lets it raise, so that the test of the script sees it)."""
    try:
        return fn()
    except Exception as e:
        if target.dry_run:
            raise
        print(f"{what} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return failed


def gpu_rows(target: Target) -> list[dict]:
    gpu = None if target.dry_run else datasheet_gpu(machine())
    rows = []
    for n, k in target.sizes(WEIGHTS, TINY_WEIGHTS):
        w16 = (torch.randn(n, k, device=target.device) * 0.02).half()
        prepared = [(f, _attempt(target, f"{f.name}, {n}×{k} weights", lambda: f.prepare(w16, target), None))
                    for f in FAMILIES]
        for m in target.sizes(TOKENS, TINY_TOKENS):
            x = activations(m, k, target.device, torch.float16)
            fp16 = target.seconds(lambda: x @ w16.t())
            a = _codes(x)
            for family, weights in prepared:
                given = a if family.int8 else x
                t = math.nan if weights is None else _attempt(
                    target, f"{family.name}, M = {m}, {n}×{k}", lambda: target.seconds(lambda: family.call(given, weights)))
                int_mm = _int_mm_seconds(a, weights, target) if family.int8 and weights is not None else math.nan
                cost = roofline.matmul_cost(m, k, n, family.weight_bits, family.act_bits, family.out_bits)
                rows.append({"family": family.name, "M": m, "N": n, "K": k, "µs": t * 1e6, "fp16 µs": fp16 * 1e6,
                             "× fp16": fp16 / t, "_int_mm µs": int_mm * 1e6, "× _int_mm": int_mm / t,
                             "GB/s": cost.bytes / t / 1e9,
                             "of peak": cost.bytes / t / gpu.bandwidth if gpu else math.nan,
                             "of limit": roofline.min_time(cost, gpu, family.int8) / t if gpu else math.nan})
    return rows


def goals(rows: list[dict]) -> list[dict]:
    """The goals against the measured rows: each 4-bit family's slowest M = 1 shape, as × fp16,
    and the int8 product's slowest M = 4096 shape, as × _int_mm."""
    def worst(family: str, m: int, column: str) -> float:
        values = [r[column] for r in rows if r["family"] == family and r["M"] == m and not math.isnan(r[column])]
        return min(values) if values else math.nan

    out = [{"goal": f"{f.name}, M = 1: ≥ {FOUR_BIT_GOAL}× fp16", "measured": worst(f.name, 1, "× fp16"),
            "target": FOUR_BIT_GOAL} for f in FAMILIES if f.weight_bits < 8]
    out.append({"goal": f"int8 product, M = 4096: ≥ {INT8_GOAL}× torch._int_mm",
                "measured": worst(FAMILIES[0].name, 4096, "× _int_mm"), "target": INT8_GOAL})
    return [g | {"met": "yes" if g["measured"] >= g["target"] else "NO"} for g in out]


def cpu_rows() -> list[dict]:
    print("bench_kernels times GPU kernels: run it on a CUDA GPU (or with --dry-run)")
    raise SystemExit(0)


def main() -> None:
    table = run(__doc__, "kernels", cpu_rows, gpu_rows,
                title=f"Y = X·Wᵀ, every kernel family against torch, on {machine()}, torch {torch.__version__}",
                formats=lambda row: {k: ".2f" if k.startswith(("×", "of")) else ".1f"
                                     for k, v in row.items() if isinstance(v, float)})
    if table:
        print_table("goals (H100/H200; the slowest shape counts)", goals(table), {"measured": ".2f"})


if __name__ == "__main__":
    main()
