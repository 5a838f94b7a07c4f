"""Blockwise absmax quantization in Triton: each program quantizes ROWS blocks of BLOCK values
(BLOCK ≤ MAX_BLOCK; larger blocks, such as whole rows or tensors, take the torch path).

Matches `lec19quant.quantize.absmax_blockwise` bit for bit: a = max|x| per block,
s = qmax / a (correctly rounded division; 0 where not finite), q = round_half_even(x · s).
"""
import triton
import triton.language as tl


@triton.jit
def round_half_even(y):
    """Round float32 `y` to the nearest integer, ties to even (no libdevice: runs in the interpreter)."""
    f = tl.floor(y)
    frac = y - f
    odd = (f - 2.0 * tl.floor(0.5 * f)) == 1.0
    return tl.where((frac > 0.5) | ((frac == 0.5) & odd), f + 1.0, f)


@triton.jit
def absmax_blockwise_kernel(
    x_ptr, codes_ptr, absmax_ptr, n, n_blocks,
    BLOCK: tl.constexpr, BLOCK_P2: tl.constexpr, ROWS: tl.constexpr, QMAX: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_P2)
    offs = rows[:, None] * BLOCK + cols[None, :]
    mask = (rows[:, None] < n_blocks) & (cols[None, :] < BLOCK) & (offs < n)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(x), axis=1)
    scale = tl.math.div_rn(tl.full(amax.shape, QMAX, tl.float32), amax)
    scale = tl.where(scale < float("inf"), scale, 0.0)  # a = 0 or subnormal: codes 0
    q = round_half_even(x * scale[:, None])
    tl.store(codes_ptr + offs, q.to(tl.int8), mask=mask)
    tl.store(absmax_ptr + rows, amax, mask=rows < n_blocks)


MAX_BLOCK = 4096  # one program holds ROWS · BLOCK_P2 = 4096 values (one block if larger)


def tile(block_size: int) -> dict:
    """The constexprs for a block size: its power-of-two padding and how many blocks per program."""
    block_p2 = triton.next_power_of_2(block_size)
    return {"BLOCK": block_size, "BLOCK_P2": block_p2, "ROWS": max(1, MAX_BLOCK // block_p2)}


def absmax_blockwise(x, codes, absmax, block_size: int, qmax: int) -> None:
    """Launch the kernel on contiguous 1-D `x`, writing int8 `codes` and float32 `absmax`."""
    if block_size > MAX_BLOCK:
        raise ValueError(f"the Triton kernel takes blocks of at most {MAX_BLOCK}, got {block_size}")
    constexprs = tile(block_size)
    grid = (triton.cdiv(absmax.numel(), constexprs["ROWS"]),)
    # No fused multiply-adds: fma(x, s, −floor(x·s)) would round x·s differently from torch.
    absmax_blockwise_kernel[grid](x, codes, absmax, x.numel(), absmax.numel(), QMAX=qmax,
                                  enable_fp_fusion=False, **constexprs)


# What tests/compile_kernels.py compiles for sm_75 and sm_80: (kernel, signature, constexprs).
COMPILE_SPECS = [
    (
        absmax_blockwise_kernel,
        {"x_ptr": f"*{dtype}", "codes_ptr": "*i8", "absmax_ptr": "*fp32", "n": "i32", "n_blocks": "i32"},
        {**tile(block), "QMAX": 127},
    )
    for dtype in ("fp32", "fp16", "bf16")
    for block in (48, 64, MAX_BLOCK)
]
