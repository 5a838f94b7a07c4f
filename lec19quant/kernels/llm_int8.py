"""LLM.int8() in Triton (Dettmers et al. 2022): find the outlier columns of X, quantize the rest of
each row to int8, and one fused kernel for Y = Z / (s_x ⊗ s_w) + X[:, O]·W[O, :] + b.

Matches the torch reference in `lec19quant.int8` (`split_outliers`, `llm_int8_matmul`): outlier
columns, codes and scales bit for bit, and the int8 part of Y bit for bit; the outlier part is a
float32 product whose sums run in another order.

The int8 product is int8_matmul.py's exact one, for GPUs without an int8 tl.dot (T4).
"""
import torch
import triton
import triton.language as tl

from .absmax import round_half_even
from .int8_matmul import exact_int8_tile, tile


@triton.jit
def outlier_columns_kernel(x_ptr, flags_ptr, M, K, stride_xm, stride_xk, threshold,
                           BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """flags[k] = 1 where any |x[:, k]| ≥ threshold, else 0."""
    rk = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    hit = tl.zeros((BLOCK_K,), dtype=tl.int32)
    for m0 in range(0, M, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M)
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk,
                    mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0).to(tl.float32)
        hit = tl.maximum(hit, tl.max((tl.abs(x) >= threshold).to(tl.int32), axis=0))
    tl.store(flags_ptr + rk, hit.to(tl.int8), mask=rk < K)


@triton.jit
def quantize_rows_kernel(x_ptr, flags_ptr, codes_ptr, scale_ptr, M, K, stride_xm, stride_xk, threshold,
                         bitsandbytes, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """Per row: a = max|x| over the entries outside the outlier columns (the ideal variant) or below the
    threshold (bitsandbytes); s = 127 / a (bitsandbytes: 127 · (1/a)), 0 where not finite;
    codes = round(x · s), ties to even, and 0 in the outlier columns."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    amax = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk,
                    mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0).to(tl.float32)
        outlier = tl.load(flags_ptr + rk, mask=rk < K, other=0) != 0
        keep = tl.where(bitsandbytes != 0, tl.abs(x) < threshold, (outlier == 0)[None, :])
        amax = tl.maximum(amax, tl.max(tl.where(keep, tl.abs(x), 0.0), axis=1))
    exact = tl.math.div_rn(tl.full(amax.shape, 127.0, tl.float32), amax)
    twice = tl.math.div_rn(tl.full(amax.shape, 1.0, tl.float32), amax) * 127.0
    scale = tl.where(bitsandbytes != 0, twice, exact)
    scale = tl.where(scale < float("inf"), scale, 0.0)  # a = 0 (or subnormal): codes 0
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        mask = (rm[:, None] < M) & (rk[None, :] < K)
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk, mask=mask, other=0.0).to(tl.float32)
        outlier = tl.load(flags_ptr + rk, mask=rk < K, other=0) != 0
        q = tl.where(outlier[None, :], 0.0, round_half_even(x * scale[:, None]))
        tl.store(codes_ptr + rm[:, None] * K + rk[None, :], q.to(tl.int8), mask=mask)
    tl.store(scale_ptr + rm, scale, mask=rm < M)


@triton.jit
def int8_outlier_matmul_kernel(
    a_ptr, sa_ptr, b_ptr, sb_ptr, x_ptr, cols_ptr, wo_ptr, bias_ptr, y_ptr, M, N, K, n_outliers,
    stride_am, stride_ak, stride_bk, stride_bn, stride_xm, stride_xk, stride_wk, stride_wn,
    stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_O: tl.constexpr,
    DEQUANTIZE: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    """Y = (A·B) / (s_a ⊗ s_b) + X[:, cols]·Wo[cols, :] (+ bias), A (M, K) and B (K, N) int8.
    Wo is the 16-bit W (ideal variant) or, with DEQUANTIZE, B itself, dequantized as B / s_b (bitsandbytes)."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = exact_int8_tile(a_ptr, b_ptr, rm, rn, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                          BLOCK_M, BLOCK_N, BLOCK_K)
    s_a = tl.load(sa_ptr + rm, mask=rm < M, other=0.0)
    s_b = tl.load(sb_ptr + rn, mask=rn < N, other=0.0)
    outer = s_a[:, None] * s_b[None, :]
    y = tl.where(outer > 0, tl.math.div_rn(acc.to(tl.float32), tl.where(outer > 0, outer, 1.0)), 0.0)
    # the outlier columns: gathered from X and from the rows of Wo, multiplied in float32
    extra = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for o0 in range(0, n_outliers, BLOCK_O):
        o = o0 + tl.arange(0, BLOCK_O)
        cols = tl.load(cols_ptr + o, mask=o < n_outliers, other=0)
        xs = tl.load(x_ptr + rm[:, None] * stride_xm + cols[None, :] * stride_xk,
                     mask=(rm[:, None] < M) & (o[None, :] < n_outliers), other=0.0).to(tl.float32)
        ws = tl.load(wo_ptr + cols[:, None] * stride_wk + rn[None, :] * stride_wn,
                     mask=(o[:, None] < n_outliers) & (rn[None, :] < N), other=0).to(tl.float32)
        if DEQUANTIZE:
            ws = tl.where(s_b[None, :] > 0, tl.math.div_rn(ws, tl.where(s_b > 0, s_b, 1.0)[None, :]), 0.0)
        extra += tl.dot(xs, ws, input_precision="ieee")
    y = y + extra
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn, y,
             mask=(rm[:, None] < M) & (rn[None, :] < N))


COLUMNS_TILE = {"BLOCK_M": 32, "BLOCK_K": 128}
ROWS_TILE = {"BLOCK_M": 16, "BLOCK_K": 256}
BLOCK_O = 16  # outlier columns per step: tl.dot's smallest K


def _limit(threshold: float, x: torch.Tensor) -> float:
    """The threshold as PyTorch compares it with x: rounded to x's dtype; 0 (no decomposition) → ∞."""
    return float(torch.tensor(threshold, dtype=x.dtype)) if threshold > 0 else float("inf")


def outlier_flags(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """int8 (K,): 1 for the columns of x (M, K) with any |x| ≥ threshold (none when threshold is 0)."""
    m, k = x.shape
    flags = torch.zeros(k, dtype=torch.int8, device=x.device)
    if threshold > 0:
        grid = (triton.cdiv(k, COLUMNS_TILE["BLOCK_K"]),)
        outlier_columns_kernel[grid](x, flags, m, k, *x.stride(), _limit(threshold, x), **COLUMNS_TILE)
    return flags


def quantize_rows(x: torch.Tensor, flags: torch.Tensor, threshold: float,
                  bitsandbytes: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes (M, K) and float32 scales (M,) of the rows of x outside the flagged columns."""
    m, k = x.shape
    codes = torch.empty((m, k), dtype=torch.int8, device=x.device)
    scale = torch.empty(m, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(m, ROWS_TILE["BLOCK_M"]),)
    # No fused multiply-adds: x·(127/rowmax) must round exactly as torch rounds it.
    quantize_rows_kernel[grid](x, flags, codes, scale, m, k, *x.stride(), _limit(threshold, x),
                               int(bitsandbytes), enable_fp_fusion=False, **ROWS_TILE)
    return codes, scale


def int8_outlier_matmul(codes, scale, codes_w, scale_w, x, columns, weight16, bias) -> torch.Tensor:
    """float32 (M, N) = codes·codes_w / (scale ⊗ scale_w) + x[:, columns]·W[columns, :] + bias, where
    W is `weight16` (K, N) or, when that is None, codes_w / scale_w. (No tensor passed is empty:
    without outliers a placeholder index is passed and never read.)"""
    (m, k), n = codes.shape, codes_w.shape[1]
    y = torch.empty((m, n), dtype=torch.float32, device=codes.device)
    wo = codes_w if weight16 is None else weight16
    cols = columns.to(torch.int32) if len(columns) else torch.zeros(1, dtype=torch.int32, device=codes.device)
    sizes = tile(m)
    grid = (triton.cdiv(m, sizes["BLOCK_M"]), triton.cdiv(n, sizes["BLOCK_N"]))
    int8_outlier_matmul_kernel[grid](
        codes, scale, codes_w, scale_w, x, cols, wo, scale_w if bias is None else bias, y,
        m, n, k, len(columns), *codes.stride(), *codes_w.stride(), *x.stride(), *wo.stride(), *y.stride(),
        BLOCK_O=BLOCK_O, DEQUANTIZE=weight16 is None, HAS_BIAS=bias is not None, **sizes)
    return y


_MATMUL = {"a_ptr": "*i8", "sa_ptr": "*fp32", "b_ptr": "*i8", "sb_ptr": "*fp32", "x_ptr": "*fp16",
           "cols_ptr": "*i32", "y_ptr": "*fp32", "M": "i32", "N": "i32", "K": "i32", "n_outliers": "i32",
           **{f"stride_{s}": "i32" for s in ("am", "ak", "bk", "bn", "xm", "xk", "wk", "wn", "ym", "yn")}}

# What tests/compile_kernels.py compiles for sm_75 and sm_80: (kernel, signature, constexprs).
COMPILE_SPECS = [
    (outlier_columns_kernel,
     {"x_ptr": "*fp16", "flags_ptr": "*i8", "M": "i32", "K": "i32", "stride_xm": "i32", "stride_xk": "i32",
      "threshold": "fp32"}, COLUMNS_TILE),
    (quantize_rows_kernel,
     {"x_ptr": "*fp16", "flags_ptr": "*i8", "codes_ptr": "*i8", "scale_ptr": "*fp32", "M": "i32", "K": "i32",
      "stride_xm": "i32", "stride_xk": "i32", "threshold": "fp32", "bitsandbytes": "i32"}, ROWS_TILE),
    # bitsandbytes at decoding size (M = 1): the outlier rows dequantized from the codes, no bias
    (int8_outlier_matmul_kernel, {**_MATMUL, "wo_ptr": "*i8", "bias_ptr": "*fp32"},
     {**tile(1), "BLOCK_O": BLOCK_O, "DEQUANTIZE": True, "HAS_BIAS": False}),
    # the ideal variant at prefill size: the 16-bit W, and a bias
    (int8_outlier_matmul_kernel, {**_MATMUL, "wo_ptr": "*fp16", "bias_ptr": "*fp16"},
     {**tile(4096), "BLOCK_O": BLOCK_O, "DEQUANTIZE": False, "HAS_BIAS": True}),
]
