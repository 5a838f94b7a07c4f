"""Fake quantization in Triton: the forward pass writes x̂ and the mask of the clipped
straight-through estimator in one pass over x; the backward pass applies the mask.

Each run of `group` consecutive elements (row-major) shares one step Δ and one zero point z.
Matches `lec19quant.qat`'s torch reference bit for bit, as torch computes it:
    r = 1/Δ (correctly rounded),  q = round_half_even(x · r) + z,  inside = qmin ≤ q ≤ qmax,
    x̂ = (clamp(q, qmin, qmax) − z) · Δ,     ∂L/∂x = inside ? (∂L/∂x̂ · Δ) · r : 0.
Launched with enable_fp_fusion=False: a fused multiply-add would round x · r only once inside
round_half_even and could move a tie. bfloat16 is converted to and from float32 with integer
arithmetic: the interpreter flushes its subnormals and truncates instead of rounding.
"""
import triton
import triton.language as tl

from .absmax import round_half_even


@triton.jit
def to_float32(x):
    """`x` as float32, exactly (bfloat16 is the top half of a float32)."""
    if x.dtype == tl.bfloat16:
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    return x.to(tl.float32)


@triton.jit
def to_output_dtype(y, out_ptr):
    """float32 `y` in the element type of `out_ptr`, rounded to nearest, ties to even."""
    if out_ptr.dtype.element_ty == tl.bfloat16:
        bits = y.to(tl.uint32, bitcast=True)
        rounded = tl.where(y != y, 0x7FC0, (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16)
        return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return y.to(out_ptr.dtype.element_ty)


@triton.jit
def fake_quantize_kernel(
    x_ptr, step_ptr, zero_ptr, out_ptr, mask_ptr, n, group, qmin, qmax, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < n
    x = to_float32(tl.load(x_ptr + offs, mask=valid, other=0.0))
    step = tl.load(step_ptr + offs // group, mask=valid, other=1.0)
    zero = tl.load(zero_ptr + offs // group, mask=valid, other=0.0)
    inv = tl.math.div_rn(tl.full(step.shape, 1.0, tl.float32), step)
    q = round_half_even(x * inv) + zero
    inside = (q >= qmin) & (q <= qmax)
    q = tl.where(q < qmin, qmin, tl.where(q > qmax, qmax, q))  # NaN stays NaN, as in torch.clamp
    tl.store(out_ptr + offs, to_output_dtype((q - zero) * step, out_ptr), mask=valid)
    tl.store(mask_ptr + offs, inside.to(tl.uint8), mask=valid)


@triton.jit
def fake_quantize_backward_kernel(
    grad_ptr, mask_ptr, step_ptr, out_ptr, n, group, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < n
    grad = to_float32(tl.load(grad_ptr + offs, mask=valid, other=0.0))
    inside = tl.load(mask_ptr + offs, mask=valid, other=0) != 0
    step = tl.load(step_ptr + offs // group, mask=valid, other=1.0)
    inv = tl.math.div_rn(tl.full(step.shape, 1.0, tl.float32), step)
    tl.store(out_ptr + offs, to_output_dtype(tl.where(inside, (grad * step) * inv, 0.0), out_ptr), mask=valid)


BLOCK = 1024


def fake_quantize(x, step, zero, out, mask, group: int, qmin: int, qmax: int) -> None:
    """Launch the forward kernel on contiguous `x`: float32 `step` and `zero` hold one value per
    `group` elements; writes `out` (x's dtype) and the uint8 `mask` (1 inside the range)."""
    grid = (triton.cdiv(x.numel(), BLOCK),)
    fake_quantize_kernel[grid](x, step, zero, out, mask, x.numel(), group, float(qmin), float(qmax),
                               BLOCK=BLOCK, enable_fp_fusion=False)


def fake_quantize_backward(grad, mask, step, out, group: int) -> None:
    """Launch the backward kernel: `out` = ∂L/∂x from contiguous `grad` = ∂L/∂x̂ and the mask."""
    grid = (triton.cdiv(grad.numel(), BLOCK),)
    fake_quantize_backward_kernel[grid](grad, mask, step, out, grad.numel(), group, BLOCK=BLOCK,
                                        enable_fp_fusion=False)


# What tests/compile_kernels.py compiles for sm_75 and sm_80: (kernel, signature, constexprs).
COMPILE_SPECS = [
    (
        fake_quantize_kernel,
        {"x_ptr": f"*{dtype}", "step_ptr": "*fp32", "zero_ptr": "*fp32", "out_ptr": f"*{dtype}",
         "mask_ptr": "*u8", "n": "i32", "group": "i32", "qmin": "fp32", "qmax": "fp32"},
        {"BLOCK": BLOCK},
    )
    for dtype in ("fp32", "fp16", "bf16")
] + [
    (
        fake_quantize_backward_kernel,
        {"grad_ptr": f"*{dtype}", "mask_ptr": "*u8", "step_ptr": "*fp32", "out_ptr": f"*{dtype}",
         "n": "i32", "group": "i32"},
        {"BLOCK": BLOCK},
    )
    for dtype in ("fp32", "fp16", "bf16")
]
