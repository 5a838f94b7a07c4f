"""GGUF K-quants in Triton: dequantization of Q4_K and Q6_K, and y = W·x with W in Q4_K.

Each kernel reads the raw blocks (uint8, one row of `type_size` bytes per super-block of 256
weights) and, through an fp16 view of the same memory, the super-block scales d (and dmin).
Codes and sub-block scales are unpacked with integer shifts and masks, as
`lec19quant.gguf.blocks` does in torch.

Bit-exactness: in Q4_K, d·s_j (fp16 × 6 bits) and (d·s_j)·q (× 4 bits) are exact in float32, as
is dmin·m_j, so x̂ = (d·s_j)·q − dmin·m_j is one rounding whichever way the compiler schedules it
(a fused multiply-add included); in Q6_K, (d·s_j)·(q − 32) has at most 11 + 7 + 5 significant
bits and is exact. So the kernels give the torch reference's floats bit for bit.

The matrix-vector kernel sums per sub-block as llama.cpp does, y_r = Σ_j (d·s_j)·(Σ_l q_l·x_l)
− (dmin·m_j)·(Σ_l x_l), in float32: equal to the dequantized W times x up to float rounding.
"""
import triton
import triton.language as tl

Q4_K_BYTES, Q6_K_BYTES = 144, 210


@triton.jit
def _q4_k_scales(raw_ptr, row):
    """The 6-bit scales and mins (get_scale_min_k4) of the super-blocks at byte offsets `row`
    (a [R] tensor): two [R, 8] int32 tensors."""
    j = tl.arange(0, 8)
    q = raw_ptr + row[:, None] + 4  # the 12 bytes of scales and mins
    a = tl.load(q + j[None, :]).to(tl.int32)
    b = tl.load(q + j[None, :] + 4).to(tl.int32)
    c = tl.load(q + tl.where(j < 4, j, j - 4)[None, :]).to(tl.int32)
    low = (j < 4)[None, :]
    scales = tl.where(low, a & 63, (b & 0xF) | ((c >> 6) << 4))
    mins = tl.where(low, b & 63, (b >> 4) | ((a >> 6) << 4))
    return scales, mins


@triton.jit
def _q4_k_codes(raw_ptr, row):
    """The 4-bit codes of the super-blocks at byte offsets `row`: [R, 8, 32] int32, sub-block j
    from the low (j even) or high (j odd) nibbles of the 32 bytes of chunk j // 2."""
    j = tl.arange(0, 8)[None, :, None]
    l = tl.arange(0, 32)[None, None, :]
    byte = tl.load(raw_ptr + row[:, None, None] + 16 + (j // 2) * 32 + l).to(tl.int32)
    return (byte >> ((j % 2) * 4)) & 0xF


@triton.jit
def q4_k_dequantize_kernel(raw_ptr, half_ptr, out_ptr, n_blocks, BLOCKS: tl.constexpr):
    """x̂ = (d·s_j)·q − (dmin·m_j) for BLOCKS super-blocks per program."""
    blocks = tl.program_id(0) * BLOCKS + tl.arange(0, BLOCKS)
    live = blocks < n_blocks
    blocks = tl.where(live, blocks, 0)  # finished rows re-read block 0 and store nothing
    row = blocks * 144
    d = tl.load(half_ptr + blocks * 72).to(tl.float32)
    dmin = tl.load(half_ptr + blocks * 72 + 1).to(tl.float32)
    scales, mins = _q4_k_scales(raw_ptr, row)
    dl = d[:, None] * scales.to(tl.float32)
    ml = dmin[:, None] * mins.to(tl.float32)
    y = dl[:, :, None] * _q4_k_codes(raw_ptr, row).to(tl.float32) - ml[:, :, None]
    offs = blocks[:, None, None] * 256 + tl.arange(0, 8)[None, :, None] * 32 + tl.arange(0, 32)[None, None, :]
    tl.store(out_ptr + offs, y, mask=live[:, None, None])


@triton.jit
def q6_k_dequantize_kernel(raw_ptr, half_ptr, out_ptr, n_blocks, BLOCKS: tl.constexpr):
    """x̂ = (d·s_{e/16})·(q_e − 32) for BLOCKS super-blocks per program; weight e of a
    super-block: half h = e / 128, quarter r, position l; low nibble from ql[64h + 32(r % 2) + l]
    (high nibble for r ≥ 2), top two bits from bits 2r of qh[32h + l]."""
    blocks = tl.program_id(0) * BLOCKS + tl.arange(0, BLOCKS)
    live = blocks < n_blocks
    blocks = tl.where(live, blocks, 0)
    row = (blocks * 210)[:, None]
    e = tl.arange(0, 256)[None, :]
    h, r, l = e // 128, (e % 128) // 32, e % 32
    ql = tl.load(raw_ptr + row + 64 * h + 32 * (r % 2) + l).to(tl.int32)
    qh = tl.load(raw_ptr + row + 128 + 32 * h + l).to(tl.int32)
    code = ((ql >> ((r // 2) * 4)) & 0xF) | (((qh >> (2 * r)) & 3) << 4)
    scale = (tl.load(raw_ptr + row + 192 + e // 16).to(tl.int32) ^ 128) - 128  # the int8 it stores
    d = tl.load(half_ptr + blocks * 105 + 104).to(tl.float32)
    y = (d[:, None] * scale.to(tl.float32)) * (code - 32).to(tl.float32)
    tl.store(out_ptr + blocks[:, None] * 256 + e, y, mask=live[:, None])


@triton.jit
def q4_k_matvec_kernel(raw_ptr, half_ptr, x_ptr, y_ptr, n_rows, k_blocks, BLOCK_N: tl.constexpr):
    """y = W·x for W (n_rows, 256·k_blocks) in Q4_K, BLOCK_N rows per program."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    live = rows < n_rows
    rows = tl.where(live, rows, 0)
    sub = tl.arange(0, 8)[:, None] * 32 + tl.arange(0, 32)[None, :]  # [8, 32] positions in a super-block
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for kb in range(0, k_blocks):
        blocks = rows * k_blocks + kb
        row = blocks * 144
        x = tl.load(x_ptr + kb * 256 + sub).to(tl.float32)  # [8, 32]
        d = tl.load(half_ptr + blocks * 72).to(tl.float32)
        dmin = tl.load(half_ptr + blocks * 72 + 1).to(tl.float32)
        scales, mins = _q4_k_scales(raw_ptr, row)
        qx = tl.sum(_q4_k_codes(raw_ptr, row).to(tl.float32) * x[None, :, :], axis=2)  # [BLOCK_N, 8]
        sx = tl.sum(x, axis=1)  # [8]
        dl = d[:, None] * scales.to(tl.float32)
        ml = dmin[:, None] * mins.to(tl.float32)
        acc += tl.sum(dl * qx - ml * sx[None, :], axis=1)
    tl.store(y_ptr + rows, acc, mask=live)


DEQUANTIZE_BLOCKS = 8  # super-blocks per program
MATVEC_ROWS = 16  # rows of W per program


def launch_dequantize(kernel, raw, *tables):
    """Run a dequantization kernel on contiguous super-blocks `raw` (n, type_size) uint8: float32
    (n·256,). `tables` (a codebook) go to the kernel between the fp16 view and the output."""
    import torch

    raw = raw.contiguous()
    out = torch.empty(raw.shape[0] * 256, dtype=torch.float32, device=raw.device)
    grid = (triton.cdiv(raw.shape[0], DEQUANTIZE_BLOCKS),)
    kernel[grid](raw, raw.view(torch.float16), *tables, out, raw.shape[0], BLOCKS=DEQUANTIZE_BLOCKS)
    return out


def launch_matvec(kernel, raw, x, type_size: int, *tables):
    """Run a matrix-vector kernel: raw (N, K/256·type_size) uint8 blocks of W (N, K), x (K,) →
    y = W·x (N,) float32. `tables` as in `launch_dequantize`."""
    import torch

    raw, x = raw.contiguous(), x.contiguous()
    n_rows, k_blocks = raw.shape[0], raw.shape[1] // type_size
    y = torch.empty(n_rows, dtype=torch.float32, device=raw.device)
    grid = (triton.cdiv(n_rows, MATVEC_ROWS),)
    kernel[grid](raw, raw.view(torch.float16), *tables, x, y, n_rows, k_blocks, BLOCK_N=MATVEC_ROWS)
    return y


def dequantize(raw, name: str):
    """Dequantize contiguous blocks `raw` (n, type_size) uint8 of "Q4_K" or "Q6_K" to float32 (n·256,)."""
    return launch_dequantize({"Q4_K": q4_k_dequantize_kernel, "Q6_K": q6_k_dequantize_kernel}[name], raw)


def q4_k_matvec(raw, x):
    """y = W·x: raw (N, K/256·144) uint8 blocks of W (N, K) in Q4_K, x (K,) → y (N,) float32."""
    return launch_matvec(q4_k_matvec_kernel, raw, x, Q4_K_BYTES)


_DEQUANTIZE = {"raw_ptr": "*u8", "half_ptr": "*fp16", "out_ptr": "*fp32", "n_blocks": "i32"}
COMPILE_SPECS = [
    (q4_k_dequantize_kernel, _DEQUANTIZE, {"BLOCKS": DEQUANTIZE_BLOCKS}),
    (q6_k_dequantize_kernel, _DEQUANTIZE, {"BLOCKS": DEQUANTIZE_BLOCKS}),
    *[(q4_k_matvec_kernel, {"raw_ptr": "*u8", "half_ptr": "*fp16", "x_ptr": f"*{dtype}", "y_ptr": "*fp32",
                            "n_rows": "i32", "k_blocks": "i32"}, {"BLOCK_N": MATVEC_ROWS})
      for dtype in ("fp16", "fp32", "bf16")],
]
