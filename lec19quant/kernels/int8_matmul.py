"""Exact int8 × int8 → int32 matrix multiplication in Triton, for GPUs without int8 tl.dot (T4).

Each BLOCK_K slice of the product is a float16 tl.dot with float32 accumulation: int8 values are
exact in float16, and a slice's partial sums (|·| ≤ BLOCK_K · 128²  ≤ 2^24) are exact in float32,
so converting each slice to int32 and adding in int32 gives C = A·B exactly.
"""
import triton
import triton.language as tl


@triton.jit
def exact_int8_tile(a_ptr, b_ptr, rm, rn, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """The int32 tile A[rm, :]·B[:, rn] (BLOCK_M, BLOCK_N) of int8 A (M, K) and B (K, N), exact:
    float16 tl.dots of BLOCK_K slices, each converted to int32 and summed in int32."""
    tl.static_assert(BLOCK_K * 128 * 128 <= 2**24, "float32 partial sums would not be exact")
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + rk
        a = tl.load(a_ptr + rm[:, None] * stride_am + k[None, :] * stride_ak,
                    mask=(rm[:, None] < M) & (k[None, :] < K), other=0)
        b = tl.load(b_ptr + k[:, None] * stride_bk + rn[None, :] * stride_bn,
                    mask=(k[:, None] < K) & (rn[None, :] < N), other=0)
        acc += tl.dot(a.to(tl.float16), b.to(tl.float16), out_dtype=tl.float32).to(tl.int32)
    return acc


@triton.jit
def int8_matmul_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = exact_int8_tile(a_ptr, b_ptr, rm, rn, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                          BLOCK_M, BLOCK_N, BLOCK_K)
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn, acc,
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def tile(m: int) -> dict:
    """Tile sizes: 16 rows (tl.dot's minimum) for decoding-sized M, 64 otherwise."""
    return {"BLOCK_M": 16 if m <= 16 else 64, "BLOCK_N": 64, "BLOCK_K": 64}


def matmul_int32(a, b, c) -> None:
    """Launch the kernel: c (M, N) int32 = a (M, K) int8 · b (K, N) int8."""
    (m, k), n = a.shape, b.shape[1]
    sizes = tile(m)
    grid = (triton.cdiv(m, sizes["BLOCK_M"]), triton.cdiv(n, sizes["BLOCK_N"]))
    int8_matmul_kernel[grid](a, b, c, m, n, k, *a.stride(), *b.stride(), *c.stride(), **sizes)


COMPILE_SPECS = [
    (
        int8_matmul_kernel,
        {"a_ptr": "*i8", "b_ptr": "*i8", "c_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32",
         "stride_am": "i32", "stride_ak": "i32", "stride_bk": "i32", "stride_bn": "i32",
         "stride_cm": "i32", "stride_cn": "i32"},
        tile(m),
    )
    for m in (1, 4096)
]
