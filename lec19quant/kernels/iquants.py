"""llama.cpp's IQ4_XS in Triton: dequantization, and y = W·x with W in IQ4_XS.

A super-block of 256 weights is 136 bytes: d (fp16), scales_h (uint16, two top bits per
sub-block), scales_l (4 bytes of low nibbles), then 8 sub-blocks of 16 bytes of 4-bit codes
(code l in the low nibble of byte l, code l + 16 in the high one). The kernels unpack the 6-bit
sub-block scales s_j with shifts and masks, and look each code up in the 16-entry codebook
(kvalues_iq4nl, passed as a float32 tensor): x̂ = (d·(s_j − 32))·v[q].

Bit-exactness: d·(s_j − 32) has at most 11 + 6 significant bits and v[q] at most 7, so both
products are exact in float32 and the kernel gives the torch reference's floats bit for bit.
The matrix-vector kernel sums per sub-block, y_r = Σ_j d_j·(Σ_l v[q_l]·x_l), in float32: equal
to the dequantized W times x up to float rounding.
"""
import triton
import triton.language as tl

from .gguf import DEQUANTIZE_BLOCKS, MATVEC_ROWS, launch_dequantize, launch_matvec

IQ4_XS_BYTES = 136


@triton.jit
def _iq4_xs_scales(raw_ptr, half_ptr, blocks):
    """d·(s_j − 32) of the super-blocks `blocks` (a [R] tensor): [R, 8] float32."""
    row = blocks * 136
    d = tl.load(half_ptr + blocks * 68).to(tl.float32)
    high = tl.load(raw_ptr + row + 2).to(tl.int32) | (tl.load(raw_ptr + row + 3).to(tl.int32) << 8)
    j = tl.arange(0, 8)[None, :]
    low = tl.load(raw_ptr + row[:, None] + 4 + j // 2).to(tl.int32)
    s = ((low >> ((j % 2) * 4)) & 0xF) | (((high[:, None] >> (2 * j)) & 3) << 4)
    return d[:, None] * (s - 32).to(tl.float32)


@triton.jit
def _iq4_xs_levels(raw_ptr, levels_ptr, blocks):
    """The codebook levels v[q] of the super-blocks `blocks`: [R, 8, 32] float32."""
    j = tl.arange(0, 8)[None, :, None]
    l = tl.arange(0, 32)[None, None, :]
    byte = tl.load(raw_ptr + blocks[:, None, None] * 136 + 8 + j * 16 + l % 16).to(tl.int32)
    return tl.load(levels_ptr + ((byte >> ((l // 16) * 4)) & 0xF))


@triton.jit
def iq4_xs_dequantize_kernel(raw_ptr, half_ptr, levels_ptr, out_ptr, n_blocks, BLOCKS: tl.constexpr):
    """x̂ = (d·(s_j − 32))·v[q] for BLOCKS super-blocks per program."""
    blocks = tl.program_id(0) * BLOCKS + tl.arange(0, BLOCKS)
    live = blocks < n_blocks
    blocks = tl.where(live, blocks, 0)  # finished rows re-read block 0 and store nothing
    y = _iq4_xs_scales(raw_ptr, half_ptr, blocks)[:, :, None] * _iq4_xs_levels(raw_ptr, levels_ptr, blocks)
    offs = blocks[:, None, None] * 256 + tl.arange(0, 8)[None, :, None] * 32 + tl.arange(0, 32)[None, None, :]
    tl.store(out_ptr + offs, y, mask=live[:, None, None])


@triton.jit
def iq4_xs_matvec_kernel(raw_ptr, half_ptr, levels_ptr, x_ptr, y_ptr, n_rows, k_blocks, BLOCK_N: tl.constexpr):
    """y = W·x for W (n_rows, 256·k_blocks) in IQ4_XS, BLOCK_N rows per program."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    live = rows < n_rows
    rows = tl.where(live, rows, 0)
    sub = tl.arange(0, 8)[:, None] * 32 + tl.arange(0, 32)[None, :]  # [8, 32] positions in a super-block
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for kb in range(0, k_blocks):
        blocks = rows * k_blocks + kb
        x = tl.load(x_ptr + kb * 256 + sub).to(tl.float32)  # [8, 32]
        vx = tl.sum(_iq4_xs_levels(raw_ptr, levels_ptr, blocks) * x[None, :, :], axis=2)  # [BLOCK_N, 8]
        acc += tl.sum(_iq4_xs_scales(raw_ptr, half_ptr, blocks) * vx, axis=1)
    tl.store(y_ptr + rows, acc, mask=live)


def _levels(device):
    import torch

    from ..gguf.iquants import LEVELS

    return torch.from_numpy(LEVELS).to(device)


def dequantize(raw, name: str = "IQ4_XS"):
    """Dequantize contiguous IQ4_XS blocks `raw` (n, 136) uint8 to float32 (n·256,)."""
    if name != "IQ4_XS":
        raise ValueError(f"this kernel decodes IQ4_XS, not {name}")
    return launch_dequantize(iq4_xs_dequantize_kernel, raw, _levels(raw.device))


def iq4_xs_matvec(raw, x):
    """y = W·x: raw (N, K/256·136) uint8 blocks of W (N, K) in IQ4_XS, x (K,) → y (N,) float32."""
    return launch_matvec(iq4_xs_matvec_kernel, raw, x, IQ4_XS_BYTES, _levels(raw.device))


COMPILE_SPECS = [
    (iq4_xs_dequantize_kernel, {"raw_ptr": "*u8", "half_ptr": "*fp16", "levels_ptr": "*fp32", "out_ptr": "*fp32",
                                "n_blocks": "i32"}, {"BLOCKS": DEQUANTIZE_BLOCKS}),
    *[(iq4_xs_matvec_kernel, {"raw_ptr": "*u8", "half_ptr": "*fp16", "levels_ptr": "*fp32", "x_ptr": f"*{dtype}",
                              "y_ptr": "*fp32", "n_rows": "i32", "k_blocks": "i32"}, {"BLOCK_N": MATVEC_ROWS})
      for dtype in ("fp16", "fp32", "bf16")],
]
