"""SmoothQuant's activation side in Triton: divide each channel by its smoothing factor and quantize
each token (row) to int8, in one pass over X.

Matches `lec19quant.smoothquant.quantize_smoothed` bit for bit: y = x / s (correctly rounded),
a = max|y| per row, scale = 127 / a (correctly rounded; 0 where not finite), q = round_half_even(y · scale).
A program holds whole rows of at most MAX_K channels.
"""
import triton
import triton.language as tl

from .absmax import round_half_even

MAX_K = 8192


@triton.jit
def quantize_smoothed_kernel(x_ptr, s_ptr, codes_ptr, scale_ptr, m, k, stride_x,
                             BLOCK_K: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_K)
    mask = (rows[:, None] < m) & (cols[None, :] < k)
    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    s = tl.load(s_ptr + cols, mask=cols < k, other=1.0)
    y = tl.math.div_rn(x, s[None, :])
    amax = tl.max(tl.abs(y), axis=1)
    scale = tl.math.div_rn(tl.full(amax.shape, 127.0, tl.float32), amax)
    scale = tl.where(scale < float("inf"), scale, 0.0)  # an all-zero row: codes 0
    q = round_half_even(y * scale[:, None])
    tl.store(codes_ptr + rows[:, None] * k + cols[None, :], q.to(tl.int8), mask=mask)
    tl.store(scale_ptr + rows, scale, mask=rows < m)


def tile(k: int) -> dict:
    """Constexprs for rows of k channels: k padded to a power of two, and rows per program."""
    block_k = triton.next_power_of_2(k)
    return {"BLOCK_K": block_k, "ROWS": max(1, 4096 // block_k)}


def quantize_smoothed(x, s, codes, scale) -> None:
    """Launch on `x` (M, K) with unit stride along K and float32 factors `s` (K,), writing int8
    `codes` (M, K) and float32 per-row scales `scale` (M, 1)."""
    m, k = x.shape
    if k > MAX_K:
        raise ValueError(f"the Triton kernel takes rows of at most {MAX_K} channels, got {k}")
    constexprs = tile(k)
    grid = (triton.cdiv(m, constexprs["ROWS"]),)
    # no fused multiply-adds, so that y · scale rounds as in torch before round_half_even
    quantize_smoothed_kernel[grid](x, s, codes, scale, m, k, x.stride(0), enable_fp_fusion=False, **constexprs)


# What tests/compile_kernels.py compiles for sm_75 and sm_80: (kernel, signature, constexprs).
COMPILE_SPECS = [
    (
        quantize_smoothed_kernel,
        {"x_ptr": f"*{dtype}", "s_ptr": "*fp32", "codes_ptr": "*i8", "scale_ptr": "*fp32", "m": "i32", "k": "i32",
         "stride_x": "i32"},
        tile(k),
    )
    for dtype in ("fp32", "fp16")
    for k in (576, 4096)
]
