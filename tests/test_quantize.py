"""Blockwise absmax quantization: the lecture's example, its invariants, and Triton == torch."""
import math

import pytest
import torch

from kernel_device import near_ties
from lec19quant.quantize import absmax_blockwise, dequantize_blockwise


def test_lecture_example():
    x = torch.tensor([-3.0, 1.0, 2.0, 4.0])
    codes, absmax = absmax_blockwise(x, block_size=4)
    assert codes.tolist() == [-95, 32, 64, 127]
    assert absmax.tolist() == [4.0]
    x_hat = dequantize_blockwise(codes, absmax, block_size=4)
    assert [round(v, 2) for v in x_hat.tolist()] == [-2.99, 1.01, 2.02, 4.0]
    assert f"{torch.mean((x - x_hat) ** 2).item():.1e}" == "9.3e-05"


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_ties_round_to_even(backend, device):
    # qmax / absmax = 1, so the codes are round(x) exactly.
    x = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5], device=device)
    codes, _ = absmax_blockwise(x, block_size=8, backend=backend)
    assert codes.tolist() == [127, 0, 2, 2, 0, -2, -2, 126]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_invariants_on_random_blocks(bits):
    torch.manual_seed(bits)
    x = torch.randn(10, 100) * torch.exp(3 * torch.randn(10, 1))
    codes, absmax = absmax_blockwise(x, block_size=32, bits=bits)
    qmax = 2 ** (bits - 1) - 1
    blocks = torch.nn.functional.pad(x.reshape(-1), (0, 24)).view(-1, 32)
    assert torch.equal(absmax, blocks.abs().amax(1))
    code_blocks = torch.nn.functional.pad(codes.reshape(-1), (0, 24)).view(-1, 32)
    assert torch.equal(code_blocks.abs().amax(1), torch.full((32,), qmax, dtype=torch.int8))
    # Round to nearest: the error is at most half a step, a / (2 qmax), up to float32 rounding.
    err = (dequantize_blockwise(codes, absmax, block_size=32, bits=bits) - x).abs()
    bound = absmax.repeat_interleave(32)[: x.numel()].view(x.shape) / (2 * qmax)
    assert torch.all(err <= bound * (1 + 1e-5))


def test_last_block_keeps_its_own_absmax():
    x = torch.cat([torch.full((64,), 100.0), torch.tensor([0.5, -1.0])])
    codes, absmax = absmax_blockwise(x, block_size=64)
    assert absmax.tolist() == [100.0, 1.0]
    assert codes[-2:].tolist() == [64, -127]  # 0.5·127 = 63.5 rounds to the even 64


def test_zero_and_subnormal_blocks_give_zero_codes():
    tiny = torch.tensor([1e-40, -3e-41, 0.0, 1e-39])  # qmax / 1e-39 overflows float32
    x = torch.cat([torch.zeros(4), torch.tensor([-0.0, 0.0, -0.0, 0.0]), tiny, torch.tensor([1e-30, 0, 0, 0])])
    codes, absmax = absmax_blockwise(x, block_size=4)
    assert codes[:12].tolist() == [0] * 12
    assert codes[12:].tolist() == [127, 0, 0, 0]  # 1e-30 is small but its scale is finite
    assert absmax[:2].tolist() == [0.0, 0.0] and absmax[2].item() == pytest.approx(1e-39)
    x_hat = dequantize_blockwise(codes, absmax, block_size=4)
    assert torch.equal(x_hat[:12], torch.zeros(12)) and not torch.isnan(x_hat).any()


def test_outlier_squeezes_the_rest_of_its_block():
    x = torch.tensor([100.0, 0.3, -0.2, 0.1])
    codes, _ = absmax_blockwise(x, block_size=4)
    assert codes.tolist() == [127, 0, 0, 0]


def random_inputs():
    torch.manual_seed(0)
    heavy = torch.randn(4, 61) * torch.exp(2 * torch.randn(4, 61))
    outlier = torch.randn(300)
    outlier[17] = 1e4
    ties = torch.tensor([127.0, 0.5, 1.5, 2.5, -2.5, 3.5, -0.5, 64.5] * 8)
    mixed = torch.cat([torch.zeros(70), torch.tensor([1e-40, -1e-41] * 20), torch.randn(50) * 1e-30])
    return {
        "randn_1": torch.randn(1), "randn_63": torch.randn(63), "randn_64": torch.randn(64),
        "randn_65": torch.randn(65), "randn_3x37": torch.randn(3, 37), "randn_5x7x11": torch.randn(5, 7, 11),
        "randn_4096": torch.randn(4096), "heavy": heavy, "outlier": outlier, "ties": ties, "mixed": mixed,
        "huge": torch.nn.functional.normalize(torch.randn(200), dim=0, p=math.inf) * 3.3e38, "noncontiguous": torch.randn(40, 30).t(),
    }


@pytest.mark.parametrize("name, x", random_inputs().items())
@pytest.mark.parametrize("block_size", [64, 32, 48, 7, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_equals_torch(name, x, block_size, dtype, device):
    x = x.to(dtype) if dtype != torch.float16 or x.abs().max() < 6e4 else (x / x.abs().max() * 6e4).to(dtype)
    x = x.to(device)
    ref_codes, ref_absmax = absmax_blockwise(x, block_size, backend="torch")
    codes, absmax = absmax_blockwise(x, block_size, backend="triton")
    assert codes.dtype == torch.int8 and codes.shape == x.shape
    assert torch.equal(codes, ref_codes)
    if dtype == torch.bfloat16 and device.type == "cpu":
        # Triton's CPU interpreter flushes bfloat16 subnormals to zero when it loads them; such a
        # block gets codes 0 either way, so only its stored absmax differs.
        normal = ref_absmax >= torch.finfo(torch.float32).tiny
        assert torch.equal(absmax[normal], ref_absmax[normal]) and not absmax[~normal].any()
    else:
        assert torch.equal(absmax, ref_absmax)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_triton_equals_torch_at_every_bit_width(bits, device):
    x = torch.randn(7, 100, device=device)
    assert all(torch.equal(a, b) for a, b in zip(absmax_blockwise(x, 32, bits, backend="torch"),
                                                  absmax_blockwise(x, 32, bits, backend="triton")))


def test_triton_rounds_near_ties_like_torch(device):
    """Products x·(127/3) that round to k + ½ in float32 but are not ties: codes as torch's."""
    ties = near_ties(torch.tensor(127.0) / torch.tensor(3.0))
    x = torch.tensor([3.0, *ties], device=device)
    codes = absmax_blockwise(x, x.numel(), backend="triton")[0]
    assert len(ties) > 200 and torch.equal(codes, absmax_blockwise(x, x.numel(), backend="torch")[0])


def test_auto_backend_uses_torch_on_cpu(monkeypatch):
    import lec19quant.kernels.absmax as kernel

    monkeypatch.setattr(kernel, "absmax_blockwise", lambda *a: pytest.fail("auto ran Triton on CPU"))
    codes, _ = absmax_blockwise(torch.randn(100), backend="auto")
    assert codes.shape == (100,)


def test_triton_on_cpu_without_interpreter_is_explained(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        absmax_blockwise(torch.randn(10), backend="triton")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(x=torch.arange(4)), TypeError, "float32, float16 or bfloat16"),
    (dict(x=[1.0, 2.0]), TypeError, "float32"),
    (dict(x=torch.empty(0)), ValueError, "empty"),
    (dict(x=torch.tensor([1.0, math.nan])), ValueError, "NaN or inf"),
    (dict(x=torch.tensor([1.0, -math.inf])), ValueError, "NaN or inf"),
    (dict(x=torch.ones(4), bits=9), ValueError, "bits must be an int from 2 to 8"),
    (dict(x=torch.ones(4), bits=1), ValueError, "bits"),
    (dict(x=torch.ones(4), block_size=0), ValueError, "block_size must be a positive int"),
    (dict(x=torch.ones(4), block_size=2.0), ValueError, "block_size"),
    (dict(x=torch.ones(4), backend="cuda"), ValueError, "backend must be one of"),
])
def test_bad_input_is_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        absmax_blockwise(**kwargs)


def test_dequantize_checks_the_number_of_scales():
    codes, absmax = absmax_blockwise(torch.randn(130), block_size=64)
    with pytest.raises(ValueError, match=r"need \(3,\)"):
        dequantize_blockwise(codes, absmax[:2], block_size=64)


def test_triton_takes_blocks_up_to_its_limit(device):
    x = torch.randn(3 * 4096 + 5, device=device)
    ref = absmax_blockwise(x, 4096, backend="torch")
    assert all(torch.equal(a, b) for a, b in zip(ref, absmax_blockwise(x, 4096, backend="triton")))
    with pytest.raises(ValueError, match="at most 4096"):
        absmax_blockwise(x, 4097, backend="triton")
