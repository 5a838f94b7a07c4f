"""Group-wise integer weights (GPTQ/AWQ checkpoints) in Triton: dequantization, and y = x·Ŵᵀ for
a few rows of x that dequantizes as it goes.

The kernels read the hub layout of `lec19quant.groupwise` directly: `qweight` int32 (in·b/32,
out), each output column's codes a little-endian bit stream along the input dimension, so that
code (n, k) sits at bit k·b of column n, possibly straddling into the next word (b = 3); `qzeros`
likewise along the output dimension; `scales` float16 (groups, out). (q − z)·s is exact in
float32 (a small integer times a float16), so dequantization is bit-exact with torch; the product
rounds Ŵ to x's dtype, as the reference casts it, and sums in float32.

Act-order and the exllama reordering: with act-order, GPTQ quantizes the columns in order of
decreasing diag(H), so the columns of one group are scattered over the row and g_idx[k] jumps
about; a tile of K columns then needs a different scale and zero point for almost every column.
Sorting the columns by group once, at load time (perm = argsort(g_idx)), and permuting x at run
time (x[perm], K numbers) makes the groups contiguous again: y = Ŵ[:, perm]·x[perm] is the same
sum in another order. `matmul` does that by default (`act_order="reorder"`); `"gather"` reads
g_idx column by column instead, for comparison.
"""
import torch
import triton
import triton.language as tl

from .nf4 import round_to

SMALL_M = 16  # at most this many rows of x go through the fused kernel; more dequantize first
TILE = {"BLOCK_N": 64, "BLOCK_K": 64}


@triton.jit
def _unpack(ptr, offsets, shift, next_word, mask, BITS: tl.constexpr):
    """The BITS-bit values starting at bit `shift` of the int32 words at `offsets`, continuing into
    the word at `offsets + next_word` when they straddle (only for BITS = 3, 5, 6, 7)."""
    shift = shift.to(tl.uint32)
    low = tl.load(ptr + offsets, mask=mask, other=0).to(tl.uint32, bitcast=True)
    straddles = shift + BITS > 32
    high = tl.load(ptr + offsets + next_word, mask=mask & straddles, other=0).to(tl.uint32, bitcast=True)
    value = (low >> shift) | ((high << (31 - shift)) << 1)  # two shifts: never a shift by 32
    return (value & ((1 << BITS) - 1)).to(tl.int32)


@triton.jit
def _weights(qweight_ptr, qzeros_ptr, scales_ptr, gidx_ptr, k, n, mask, N, group_size,
             BITS: tl.constexpr, HAS_GIDX: tl.constexpr):
    """Ŵ[n, k] = (q − z)·s in float32 for a [BLOCK_K, BLOCK_N] tile (k along dim 0, n along 1)."""
    kbit = k * BITS
    q = _unpack(qweight_ptr, (kbit // 32)[:, None] * N + n[None, :], (kbit % 32)[:, None], N, mask, BITS)
    if HAS_GIDX:
        g = tl.load(gidx_ptr + k)  # k is clamped into the row
    else:
        g = k // group_size
    zero_words = (N * BITS + 31) // 32
    nbit = n * BITS
    z = _unpack(qzeros_ptr, g[:, None] * zero_words + (nbit // 32)[None, :], (nbit % 32)[None, :], 1, mask, BITS)
    s = tl.load(scales_ptr + g[:, None] * N + n[None, :], mask=mask, other=0.0).to(tl.float32)
    return (q - z).to(tl.float32) * s


@triton.jit
def groupwise_dequantize_kernel(qweight_ptr, qzeros_ptr, scales_ptr, gidx_ptr, out_ptr, N, K, group_size,
                                BITS: tl.constexpr, HAS_GIDX: tl.constexpr,
                                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (k < K)[:, None] & (n < N)[None, :]
    k = tl.where(k < K, k, 0)
    w = _weights(qweight_ptr, qzeros_ptr, scales_ptr, gidx_ptr, k, n, mask, N, group_size, BITS, HAS_GIDX)
    tl.store(out_ptr + n[None, :] * K + k[:, None], round_to(w, out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def groupwise_gemv_kernel(x_ptr, qweight_ptr, qzeros_ptr, scales_ptr, gidx_ptr, y_ptr, N, K, group_size,
                          BITS: tl.constexpr, HAS_GIDX: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[m, n] = Σ_k x[m, k]·Ŵ[n, k] for row m = program_id(0) and BLOCK_N outputs n."""
    m = tl.program_id(0)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    x_type = x_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        k = start + tl.arange(0, BLOCK_K)
        in_row = k < K
        mask = in_row[:, None] & (n < N)[None, :]
        k = tl.where(in_row, k, 0)
        w = _weights(qweight_ptr, qzeros_ptr, scales_ptr, gidx_ptr, k, n, mask, N, group_size, BITS, HAS_GIDX)
        x = tl.load(x_ptr + m * K + k, mask=in_row, other=0.0).to(tl.float32)
        acc += x[:, None] * round_to(w, x_type).to(tl.float32)
    tl.store(y_ptr + m * N + n, round_to(tl.sum(acc, axis=0), y_ptr.dtype.element_ty), mask=n < N)


def _check_size(n: int) -> None:
    if n >= 2**31:
        raise ValueError(f"the group-wise kernels index with int32: {n} weights are too many")


def dequantize(qweight, qzeros, scales, g_idx, bits: int, group_size: int, k: int, dtype) -> torch.Tensor:
    """Ŵ (out, in = k) in `dtype` from the packed tensors (g_idx None means c // group_size)."""
    n = scales.shape[1]
    _check_size(n * k)
    out = torch.empty(n, k, dtype=dtype, device=qweight.device)
    grid = (triton.cdiv(n, TILE["BLOCK_N"]), triton.cdiv(k, TILE["BLOCK_K"]))
    groupwise_dequantize_kernel[grid](qweight, qzeros, scales, qweight if g_idx is None else g_idx, out,
                                      n, k, group_size, BITS=bits, HAS_GIDX=g_idx is not None, **TILE)
    return out


def reorder(layer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """exllama's shuffle of an act-order layer: (qweight with its input columns sorted by group,
    the permutation, and the sorted g_idx — None when it is c // g, as GPTQ's act-order gives)."""
    from ..groupwise import default_g_idx, pack

    perm = torch.argsort(layer.g_idx, stable=True)
    qweight = pack(layer.codes()[:, perm], layer.bits).t().contiguous()
    g_idx = layer.g_idx[perm].contiguous()
    if torch.equal(g_idx, default_g_idx(layer.in_features, layer.group_size, g_idx.device)):
        g_idx = None
    return qweight, perm, g_idx


def matmul(layer, x: torch.Tensor, act_order: str = "reorder") -> torch.Tensor:
    """x·Ŵᵀ for a `GroupQuantLinear` (no bias): the fused kernel for at most SMALL_M rows of x,
    else Ŵ dequantized by the kernel and a torch matmul. `act_order`: "reorder" or "gather"."""
    if act_order not in ("reorder", "gather"):
        raise ValueError(f"act_order must be 'reorder' or 'gather', got {act_order!r}")
    if x.shape[-1] != layer.in_features:
        raise ValueError(f"x has {x.shape[-1]} features, the layer takes {layer.in_features}")
    qweight, g_idx = layer.qweight, layer.g_idx
    rows = x.reshape(-1, layer.in_features)
    if g_idx is not None and act_order == "reorder":
        if layer._exllama is None:
            layer._exllama = reorder(layer)
        qweight, perm, g_idx = layer._exllama
        rows = rows[:, perm]
    n, k = layer.out_features, layer.in_features
    _check_size(n * k)
    if rows.shape[0] > SMALL_M:
        w = dequantize(qweight, layer.qzeros, layer.scales, g_idx, layer.bits, layer.group_size, k, x.dtype)
        return (rows @ w.t()).reshape(*x.shape[:-1], n)
    rows = rows.contiguous()
    y = torch.empty(rows.shape[0], n, dtype=x.dtype, device=x.device)
    grid = (rows.shape[0], triton.cdiv(n, TILE["BLOCK_N"]))
    groupwise_gemv_kernel[grid](rows, qweight, layer.qzeros, layer.scales, qweight if g_idx is None else g_idx,
                                y, n, k, layer.group_size, BITS=layer.bits, HAS_GIDX=g_idx is not None, **TILE)
    return y.reshape(*x.shape[:-1], n)


_PACKED = {"qweight_ptr": "*i32", "qzeros_ptr": "*i32", "scales_ptr": "*fp16", "gidx_ptr": "*i32"}
_SIZES = {"N": "i32", "K": "i32", "group_size": "i32"}
COMPILE_SPECS = [
    (groupwise_dequantize_kernel, {**_PACKED, "out_ptr": f"*{dtype}", **_SIZES},
     {"BITS": bits, "HAS_GIDX": has_gidx, **TILE})
    for dtype, bits, has_gidx in (("fp16", 4, False), ("fp32", 3, True), ("bf16", 4, True))
] + [
    (groupwise_gemv_kernel, {"x_ptr": f"*{dtype}", **_PACKED, "y_ptr": f"*{dtype}", **_SIZES},
     {"BITS": bits, "HAS_GIDX": has_gidx, **TILE})
    for dtype, bits, has_gidx in (("fp16", 4, False), ("fp16", 4, True), ("fp16", 3, False), ("fp32", 2, True))
]
