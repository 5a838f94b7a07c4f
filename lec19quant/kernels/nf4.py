"""NF4 in Triton: dequantization, and a matrix-vector product that dequantizes as it goes.

Codes are packed two per byte, the first weight of each pair in the high nibble; weight i
(row-major) belongs to block i // blocksize, whose float32 absmax the caller has decoded (double
quantization is undone in torch: a fused multiply-add here would round differently). The
dequantized weight is NF4[q]·absmax in float32, one rounding, exactly as the torch reference,
then cast to the output dtype. The NF4 values are read from a 16-entry float32 table.
"""
import triton
import triton.language as tl


@triton.jit
def round_to(x, dtype: tl.constexpr):
    """float32 `x` rounded to `dtype`, to nearest with ties to even. For bfloat16 that is done
    on the bits (add 0x7FFF plus the lowest kept bit, drop 16 bits): Triton's interpreter
    truncates instead. Values are finite here."""
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(dtype)


@triton.jit
def nf4_dequantize_kernel(packed_ptr, absmax_ptr, table_ptr, out_ptr, n, blocksize,
                          BYTES: tl.constexpr):
    byte_idx = tl.program_id(0) * BYTES + tl.arange(0, BYTES)
    first = 2 * byte_idx  # the weight in the high nibble; first + 1 in the low one
    byte = tl.load(packed_ptr + byte_idx, mask=first < n, other=0).to(tl.int32)
    # blocksize is even, so both weights of a byte share a block
    absmax = tl.load(absmax_ptr + first // blocksize, mask=first < n, other=0.0)
    high = tl.load(table_ptr + (byte >> 4)) * absmax
    low = tl.load(table_ptr + (byte & 15)) * absmax
    out_type = out_ptr.dtype.element_ty
    tl.store(out_ptr + first, round_to(high, out_type), mask=first < n)
    tl.store(out_ptr + first + 1, round_to(low, out_type), mask=first + 1 < n)


@triton.jit
def nf4_gemv_kernel(x_ptr, packed_ptr, absmax_ptr, table_ptr, y_ptr, N, K, blocksize,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[r] = Σ_k x[k]·Ŵ[r, k] for BLOCK_N rows r, K even; Ŵ is rounded to x's dtype first, as
    the reference casts it, and the products are summed in float32."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    pairs = tl.arange(0, BLOCK_K // 2)
    half_k = K // 2
    x_type = x_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_N, BLOCK_K // 2), dtype=tl.float32)
    for start in range(0, half_k, BLOCK_K // 2):
        j = start + pairs  # byte j of a row holds columns 2j and 2j + 1
        in_row = j < half_k
        mask = (rows[:, None] < N) & in_row[None, :]
        byte = tl.load(packed_ptr + rows[:, None] * half_k + j[None, :], mask=mask, other=0).to(tl.int32)
        absmax = tl.load(absmax_ptr + (rows[:, None] * K + 2 * j[None, :]) // blocksize, mask=mask, other=0.0)
        w_even = round_to(tl.load(table_ptr + (byte >> 4)) * absmax, x_type).to(tl.float32)
        w_odd = round_to(tl.load(table_ptr + (byte & 15)) * absmax, x_type).to(tl.float32)
        x_even = tl.load(x_ptr + 2 * j, mask=in_row, other=0.0).to(tl.float32)
        x_odd = tl.load(x_ptr + 2 * j + 1, mask=in_row, other=0.0).to(tl.float32)
        acc += w_even * x_even[None, :] + w_odd * x_odd[None, :]
    tl.store(y_ptr + rows, round_to(tl.sum(acc, axis=1), y_ptr.dtype.element_ty), mask=rows < N)


DEQUANTIZE_BYTES = 1024  # bytes (2048 weights) per program
GEMV_TILE = {"BLOCK_N": 16, "BLOCK_K": 256}


def _check_size(n: int) -> None:
    if n >= 2**31:
        raise ValueError(f"the NF4 kernels index with int32: {n} weights are too many")


def dequantize(packed, absmax, table, out, blocksize: int) -> None:
    """Launch on 1-D uint8 `packed`, float32 `absmax` and NF4 `table`, writing 1-D `out`."""
    _check_size(out.numel())
    grid = (triton.cdiv(packed.numel(), DEQUANTIZE_BYTES),)
    nf4_dequantize_kernel[grid](packed, absmax, table, out, out.numel(), blocksize, BYTES=DEQUANTIZE_BYTES)


def gemv(x, packed, absmax, table, y, blocksize: int) -> None:
    """Launch y (N,) = Ŵ·x for x (K,), K even, Ŵ (N, K) given by `packed` and `absmax`."""
    n, k = y.numel(), x.numel()
    _check_size(n * k)
    grid = (triton.cdiv(n, GEMV_TILE["BLOCK_N"]),)
    nf4_gemv_kernel[grid](x, packed, absmax, table, y, n, k, blocksize, **GEMV_TILE)


_POINTERS = {"packed_ptr": "*u8", "absmax_ptr": "*fp32", "table_ptr": "*fp32"}
COMPILE_SPECS = [
    (nf4_dequantize_kernel, {**_POINTERS, "out_ptr": f"*{dtype}", "n": "i32", "blocksize": "i32"},
     {"BYTES": DEQUANTIZE_BYTES})
    for dtype in ("fp32", "fp16", "bf16")
] + [
    (nf4_gemv_kernel, {"x_ptr": f"*{dtype}", **_POINTERS, "y_ptr": f"*{dtype}", "N": "i32", "K": "i32",
                       "blocksize": "i32"}, GEMV_TILE)
    for dtype in ("fp32", "fp16", "bf16")
]
