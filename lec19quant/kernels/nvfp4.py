"""NVFP4 weights in a Triton matmul, for GPUs without FP4 hardware (a T4, an A100).

Y = X · Ŵᵀ with Ŵ[n, k] = t · e2m1(q[n, k]) · s[n, k // 16]. The kernel loads the packed codes and
the E4M3 scale bytes and decodes both with integer arithmetic (sm_75 and sm_80 have no fp8 or fp4
types). Each product e2m1 · s is exact in float16: at most 6 significant bits, between 2^−10 and
2688. So a tile of Ŵ / t is exact in float16, X is rounded to float16, tl.dot sums in float32, and
the tensor scale t multiplies the sums once at the end.
"""
import triton
import triton.language as tl


@triton.jit
def e2m1_to_float(code):
    """The value of an E2M1 code (int32, 0..15), sign s, exponent e, mantissa m:
    (−1)^s · m / 2 for e = 0, (−1)^s · (2 + m) · 2^(e − 2) otherwise."""
    e = (code >> 1) & 3
    m = code & 1
    twice = tl.where(e == 0, m, (2 + m) << tl.maximum(e - 1, 0))  # 2 · |value|: 0, 1, ..., 12
    value = twice.to(tl.float32) * 0.5
    return tl.where((code & 8) != 0, -value, value)


@triton.jit
def e4m3_to_float(byte):
    """The value of a positive E4M3 code (int32, 0..126), exponent e, mantissa m:
    m · 2^−9 for e = 0, (1 + m / 8) · 2^(e − 7) otherwise, built from float32 bits."""
    e = (byte >> 3) & 15
    m = byte & 7
    normal = (((e + 120) << 23) | (m << 20)).to(tl.float32, bitcast=True)
    return tl.where(e == 0, m.to(tl.float32) * 0.001953125, normal)


@triton.jit
def nvfp4_matmul_kernel(
    x_ptr, codes_ptr, scales_ptr, y_ptr, tensor_scale, M, N, K,
    stride_xm, stride_xk, stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    tl.static_assert(BLOCK_K % 16 == 0, "a K tile holds whole NVFP4 blocks")
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + rk
        x = tl.load(x_ptr + rm[:, None] * stride_xm + k[None, :] * stride_xk,
                    mask=(rm[:, None] < M) & (k[None, :] < K), other=0.0)
        # Ŵᵀ tile (BLOCK_K, BLOCK_N): weight k of row n is nibble k % 2 of byte k // 2
        w_mask = (k[:, None] < K) & (rn[None, :] < N)
        packed = tl.load(codes_ptr + rn[None, :] * (K // 2) + k[:, None] // 2, mask=w_mask, other=0)
        code = (packed.to(tl.int32) >> ((k[:, None] & 1) * 4)) & 15
        scale = tl.load(scales_ptr + rn[None, :] * (K // 16) + k[:, None] // 16, mask=w_mask, other=0)
        w = e2m1_to_float(code) * e4m3_to_float(scale.to(tl.int32))
        acc += tl.dot(x.to(tl.float32).to(tl.float16), w.to(tl.float16), out_dtype=tl.float32)
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn, acc * tensor_scale,
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def tile(m: int) -> dict:
    """Tile sizes: 16 rows (tl.dot's minimum) for decoding-sized M, 64 otherwise."""
    return {"BLOCK_M": 16 if m <= 16 else 64, "BLOCK_N": 64, "BLOCK_K": 64}


def nvfp4_matmul(x, codes, scales, tensor_scale: float, y) -> None:
    """Launch the kernel: y (M, N) float32 = x (M, K) · Ŵᵀ, Ŵ from contiguous uint8 `codes`
    (N, K / 2) and E4M3 `scales` (N, K / 16), times the float `tensor_scale`."""
    (m, k), n = x.shape, codes.shape[0]
    if not (codes.is_contiguous() and scales.is_contiguous()):
        raise ValueError("the packed codes and scales must be contiguous")
    sizes = tile(m)
    grid = (triton.cdiv(m, sizes["BLOCK_M"]), triton.cdiv(n, sizes["BLOCK_N"]))
    nvfp4_matmul_kernel[grid](x, codes, scales, y, tensor_scale, m, n, k, *x.stride(), *y.stride(), **sizes)


COMPILE_SPECS = [
    (
        nvfp4_matmul_kernel,
        {"x_ptr": f"*{dtype}", "codes_ptr": "*u8", "scales_ptr": "*u8", "y_ptr": "*fp32",
         "tensor_scale": "fp32", "M": "i32", "N": "i32", "K": "i32",
         "stride_xm": "i32", "stride_xk": "i32", "stride_ym": "i32", "stride_yn": "i32"},
        tile(m),
    )
    for dtype in ("fp32", "fp16", "bf16")
    for m in (1, 4096)
]
