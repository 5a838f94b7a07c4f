"""Triton kernels for Q4_K, Q6_K and IQ4_XS (TRITON_INTERPRET=1, see conftest.py) against the torch
reference, and the GGUF weight-only scheme."""
import numpy as np
import pytest
import torch
from torch import nn

from lec19quant import nn as qnn
from lec19quant.gguf import blocks, linear


def weights(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * torch.exp(torch.randn(rows, 1, generator=g))
    w[:, ::97] *= 30  # a few large weights, so that the sub-block scales differ
    w[0, :256] = 0  # an all-zero super-block
    w[-1, 3] = 40.0  # an outlier
    return w


def quantize(w: torch.Tensor, fmt: str):
    """The raw blocks of w in `fmt` (IQ4_XS with a random importance per column, as it is used)."""
    imatrix = torch.rand(w.shape[1], generator=torch.Generator().manual_seed(2)) ** 4 if fmt == "IQ4_XS" else None
    return torch.from_numpy(blocks.quantize(w, fmt, imatrix=imatrix))


@pytest.mark.parametrize("fmt", ["Q4_K", "Q6_K", "IQ4_XS"])
@pytest.mark.parametrize("rows, cols", [(1, 256), (5, 768), (9, 512)])  # 1, 15, 18 super-blocks: ragged tiles
def test_triton_dequantize_is_bit_exact(fmt, rows, cols, device):
    raw = quantize(weights(rows, cols), fmt).to(device)
    fast = blocks.dequantize(raw, fmt, (rows, cols), backend="triton")
    assert torch.equal(fast.view(torch.int32), blocks.dequantize(raw, fmt, (rows, cols), backend="torch").view(torch.int32))


@pytest.mark.parametrize("fmt", ["Q4_K", "Q6_K", "IQ4_XS"])
def test_triton_decodes_any_bytes_like_torch(fmt, device):
    f = blocks.FORMATS[fmt]
    g = np.random.default_rng(1)
    raw = g.integers(0, 256, (11, f.type_size), dtype=np.uint8)
    halves = {"Q4_K": (0, 2), "Q6_K": (208,), "IQ4_XS": (0,)}[fmt]
    for at in halves:
        raw[:, at:at + 2] = (g.standard_normal(11) * 0.01).astype("<f2").view(np.uint8).reshape(11, 2)
    raw = torch.from_numpy(raw).to(device)
    fast = blocks.dequantize(raw, fmt, (11 * 256,), backend="triton")
    assert torch.equal(fast.view(torch.int32), blocks.dequantize(raw, fmt, (11 * 256,), backend="torch").view(torch.int32))


@pytest.mark.parametrize("fmt", ["Q4_K", "IQ4_XS"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows, cols", [(1, 256), (37, 512), (16, 768)])
def test_fused_matvec(fmt, rows, cols, dtype, device):
    w = weights(rows, cols, seed=rows)
    x = torch.randn(cols).to(dtype)
    raw = quantize(w, fmt)
    y = blocks.matvec(raw.to(device), fmt, w.shape, x.to(device), backend="triton").cpu()
    dequantized = blocks.dequantize(raw, fmt, w.shape).double()
    assert y.dtype == torch.float32 and y.shape == (rows,)
    # float32 sums of 256·k products: within 1e-5 of the float64 result, relative to Σ|w·x|
    assert ((y.double() - dequantized @ x.double()).abs() <= 1e-5 * (dequantized.abs() @ x.double().abs()) + 1e-12).all()
    raw, x = raw.to(device), x.to(device)
    assert torch.equal(blocks.matvec(raw, fmt, w.shape, x, backend="torch"),
                       blocks.dequantize(raw, fmt, w.shape) @ x.float())


def test_kernel_choices_are_checked():
    raw = torch.from_numpy(blocks.quantize(torch.randn(2, 256), "Q8_0"))
    with pytest.raises(ValueError, match="Triton kernel for Q4_K, Q6_K and IQ4_XS, not Q8_0"):
        blocks.dequantize(raw, "Q8_0", (2, 256), backend="triton")
    with pytest.raises(ValueError, match="fused Triton kernel is for Q4_K and IQ4_XS, not Q8_0"):
        blocks.matvec(raw, "Q8_0", (2, 256), torch.randn(256), backend="triton")
    with pytest.raises(ValueError, match=r"W must be \(N, K\) and x \(K,\)"):
        blocks.matvec(raw, "Q8_0", (2, 256), torch.randn(255))


def test_gguf_scheme_quantizes_every_linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 8, bias=False))
    x = torch.randn(3, 256)
    report = qnn.quantize_model(model, "q4_k", skip=())
    assert report.replaced == ["0", "2"] and {"q4_k", "q6_k", "q8_0"} <= set(qnn.available_schemes())
    first, second = model[0], model[2]
    assert isinstance(first, linear.GGUFLinear) and first.format == "Q4_K"
    assert second.format == "Q5_0"  # rows of 64: llama.cpp's fallback for Q4_K
    assert report.bytes_after == 64 * 144 + 64 * 4 + 8 * 2 * 22
    expected = nn.functional.linear(torch.relu(nn.functional.linear(x, first.dequantized_weight(), first.bias)),
                                    second.dequantized_weight())
    assert torch.equal(model(x), expected)
    with pytest.raises(ValueError, match="not a multiple of 32"):
        linear.GGUFLinear(nn.Linear(48, 4), "Q4_K")
    with pytest.raises(ValueError, match="unknown GGUF block format 'Q7_K'"):
        linear.GGUFWeights("Q7_K")
