"""Vector-wise int8 matmul: exact int32 products (torch and Triton), and the W8A8 layer."""
import numpy as np
import pytest
import torch
from torch import nn

from lec19quant import int8
from lec19quant.quantize import absmax_quantize


def int64_reference(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return a.cpu().numpy().astype(np.int64) @ b.cpu().numpy().astype(np.int64)


SHAPES = [(1, 7, 3), (1, 64, 64), (5, 33, 9), (17, 100, 65), (64, 256, 48), (3, 1, 2)]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_int32_product_is_exact(backend, m, k, n, device):
    torch.manual_seed(m * k * n)
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8).to(device)
    b = torch.randint(-128, 128, (k, n), dtype=torch.int8).to(device)
    c = int8.matmul_int32(a, b, backend)
    assert c.dtype == torch.int32 and c.shape == (m, n)
    assert np.array_equal(c.cpu().numpy(), int64_reference(a, b))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_sums_beyond_int16_and_float16_are_exact(backend, device):
    k = 3000  # 3000 · 127² ≈ 4.8e7: far beyond int16, and beyond float32's exact 2^24 for the torch path too
    a = torch.full((2, k), 127, dtype=torch.int8)
    a[1] = -128
    b = torch.full((k, 17), -127, dtype=torch.int8)
    b[: k // 2, 3] = 1
    c = int8.matmul_int32(a.to(device), b.to(device), backend)
    assert c[0, 0].item() == -127 * 127 * k and c[1, 0].item() == 128 * 127 * k
    assert np.array_equal(c.cpu().numpy(), int64_reference(a, b))


def test_triton_matches_on_transposed_views(device):
    a = torch.randint(-127, 128, (40, 70), dtype=torch.int8, device=device)
    b = torch.randint(-127, 128, (50, 70), dtype=torch.int8, device=device).t()  # non-contiguous (70, 50)
    assert torch.equal(int8.matmul_int32(a, b, "triton"), int8.matmul_int32(a, b, "torch"))


def test_matmul_int32_arguments():
    a = torch.zeros(2, 3, dtype=torch.int8)
    with pytest.raises(TypeError, match="int8"):
        int8.matmul_int32(a.float(), a.t())
    with pytest.raises(ValueError, match="cannot be multiplied"):
        int8.matmul_int32(a, a)
    with pytest.raises(ValueError, match="int32 accumulator could overflow"):
        int8.matmul_int32(torch.zeros(1, int8.MAX_K + 1, dtype=torch.int8),
                          torch.zeros(int8.MAX_K + 1, 1, dtype=torch.int8))


def test_int8_matmul_is_z_over_the_outer_product_of_scales(device):
    torch.manual_seed(0)
    x, w = torch.randn(6, 40), torch.randn(40, 9)
    s_x = 127 / x.abs().amax(1, keepdim=True)
    s_w = 127 / w.abs().amax(0, keepdim=True)
    z = torch.round(x * s_x).long() @ torch.round(w * s_w).long()
    expected = z / (s_x * s_w)
    for backend in ("torch", "triton"):
        assert torch.allclose(int8.int8_matmul(x.to(device), w.to(device), backend).cpu(), expected, rtol=1e-6, atol=0)
    assert torch.allclose(int8.int8_matmul(x, w), x @ w, atol=0.1)


def test_zero_rows_and_columns_give_zeros():
    x, w = torch.randn(3, 8), torch.randn(8, 4)
    x[1], w[:, 2] = 0, 0
    out = int8.int8_matmul(x, w)
    assert not out.isnan().any() and (out[1] == 0).all() and (out[:, 2] == 0).all()


def test_int8_matmul_shapes():
    with pytest.raises(ValueError, match=r"must be \(M, K\) and \(K, N\)"):
        int8.int8_matmul(torch.randn(3, 4), torch.randn(5, 2))


@pytest.mark.parametrize("activations", ["tensor", "token"])
def test_w8a8_linear(activations):
    torch.manual_seed(1)
    linear = nn.Linear(48, 20)
    layer = int8.W8A8Linear(linear, activations)
    x = torch.randn(2, 5, 48)
    x[0, 0] *= 50  # a loud token: per-tensor scales suffer, per-token scales do not
    rows = x.reshape(-1, 48)
    qx = absmax_quantize(rows, 8, dim=0 if activations == "token" else None)
    qw = absmax_quantize(linear.weight.detach(), 8, dim=0)
    z = qx.codes.long() @ qw.codes.long().t()
    expected = (z / (qx.scale * qw.scale.t()) + linear.bias).reshape(2, 5, 20)
    out = layer(x)
    assert out.shape == (2, 5, 20) and torch.allclose(out, expected, rtol=1e-5, atol=1e-6)
    quiet = (out - linear(x)).abs()[1].max().item()
    assert (quiet < 0.05) == (activations == "token")


def test_w8a8_rejects_unknown_activation_granularity():
    with pytest.raises(ValueError, match="'tensor' or 'token'"):
        int8.W8A8Linear(nn.Linear(4, 4), "channel")


def test_w8a8_schemes_by_name():
    from lec19quant import nn as qnn

    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    report = qnn.quantize_model(model, "w8a8-token", skip=())
    assert report.replaced == ["0", "2"] and isinstance(model[0], int8.W8A8Linear)
    assert {"w8a8-tensor", "w8a8-token"} <= set(qnn.available_schemes())
    assert model(torch.randn(3, 16)).shape == (3, 4)
    assert report.bytes_after == (16 * 16 + 16 * 4) + (16 + 4) * 4 + (16 + 4) * 4  # codes, scales, biases
