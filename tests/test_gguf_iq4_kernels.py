"""The Triton IQ4_XS kernels equal the torch reference (run under TRITON_INTERPRET=1 on CPU)."""
import numpy as np
import pytest
import torch

from lec19quant.gguf import blocks


def weights(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.02
    w[:, ::97] *= 30  # a few large weights, so that the sub-block scales differ
    return w


@pytest.mark.parametrize("rows, cols", [(1, 256), (5, 768), (9, 512)])  # 1, 15, 18 super-blocks: ragged tiles
def test_triton_iq4_xs_dequantize_is_bit_exact(rows, cols, device):
    imatrix = torch.rand(cols) ** 4
    raw = torch.from_numpy(blocks.quantize(weights(rows, cols), "IQ4_XS", imatrix=imatrix)).to(device)
    fast = blocks.dequantize(raw, "IQ4_XS", (rows, cols), backend="triton")
    slow = blocks.dequantize(raw, "IQ4_XS", (rows, cols), backend="torch")
    assert torch.equal(fast.view(torch.int32), slow.view(torch.int32))


def test_triton_iq4_xs_decodes_any_bytes_like_torch(device):
    g = np.random.default_rng(3)
    raw = g.integers(0, 256, (11, 136), dtype=np.uint8)
    raw[:, 0:2] = (g.standard_normal(11) * 0.01).astype("<f2").view(np.uint8).reshape(11, 2)
    raw = torch.from_numpy(raw).to(device)
    fast = blocks.dequantize(raw, "IQ4_XS", (11 * 256,), backend="triton")
    assert torch.equal(fast.view(torch.int32), blocks.dequantize(raw, "IQ4_XS", (11 * 256,), backend="torch").view(torch.int32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows, cols", [(1, 256), (37, 512), (16, 768)])
def test_fused_iq4_xs_matvec(rows, cols, dtype, device):
    w = weights(rows, cols, seed=rows)
    x = torch.randn(cols).to(dtype)
    raw = torch.from_numpy(blocks.quantize(w, "IQ4_XS"))
    y = blocks.matvec(raw.to(device), "IQ4_XS", w.shape, x.to(device), backend="triton").cpu()
    reference = blocks.dequantize(raw, "IQ4_XS", w.shape).double() @ x.double()
    assert y.dtype == torch.float32 and y.shape == (rows,)
    # float32 sums of 256·k products of size ≤ 1: within 1e-5 of the float64 result, relative to Σ|w·x|
    scale = (blocks.dequantize(raw, "IQ4_XS", w.shape).double().abs() @ x.double().abs())
    assert ((y.double() - reference).abs() <= 1e-5 * scale + 1e-12).all()
