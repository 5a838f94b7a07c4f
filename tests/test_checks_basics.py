"""The quantization-basics checks pass right answers and catch the usual mistakes."""
import pytest
import torch

from lec19quant import checks


def absmax(x, bits):
    s = (2 ** (bits - 1) - 1) / x.abs().max()  # scalar / tensor: rounded twice, still accepted
    return torch.round(s * x).to(torch.int8), s


def zeropoint(x, bits):
    s = (2**bits - 1) / (x.max() - x.min())
    z = -torch.round(s * x.min()) - 2 ** (bits - 1)
    return torch.round(s * x) + z, s, z


def vectorwise(x, w):
    sx = 127 / x.abs().amax(1, keepdim=True)
    sw = 127 / w.abs().amax(0, keepdim=True)
    z = torch.round(x * sx).long() @ torch.round(w * sw).long()
    return z / (sx * sw)


@pytest.mark.parametrize("bits", [8, 4])
def test_right_answers_pass(bits):
    assert "✓ check_absmax" in repr(checks.check_absmax(absmax, bits))
    assert "all 7 tensors right" in repr(checks.check_zeropoint(zeropoint, bits))


def test_right_vectorwise_matmul_passes():
    assert "all 4 products right" in repr(checks.check_vectorwise_matmul(vectorwise))


@pytest.mark.parametrize("wrong, match", [
    (lambda x, b: (torch.floor(127 / x.abs().max() * x), 127 / x.abs().max()), "check_absmax"),
    (lambda x, b: (torch.round(128 / x.abs().max() * x), 128 / x.abs().max()), "check_absmax"),
    (lambda x, b: (torch.round(127 / x.max() * x), 127 / x.max()), "x = \\[-3.0, 1.0, 2.0, 4.0\\]|tensors wrong"),
])
def test_absmax_mistakes_fail(wrong, match):
    with pytest.raises(checks.CheckFailed, match=match):
        checks.check_absmax(wrong)


def test_zeropoint_mistakes_fail():
    def offset_off_by_one(x, bits):
        codes, s, z = zeropoint(x, bits)
        return codes + 1, s, z + 1

    def lecture_254(x, bits):  # the LLM.int8 paper's 254 instead of 255
        s = 254 / (x.max() - x.min())
        z = -torch.round(s * x.min()) - 128
        return torch.round(s * x) + z, s, z

    for wrong in (offset_off_by_one, lecture_254):
        with pytest.raises(checks.CheckFailed, match="check_zeropoint"):
            checks.check_zeropoint(wrong)


def test_vectorwise_mistakes_fail():
    with pytest.raises(checks.CheckFailed, match="products wrong"):
        checks.check_vectorwise_matmul(lambda x, w: x @ w)  # no quantization at all

    def per_tensor(x, w):
        sx, sw = 127 / x.abs().max(), 127 / w.abs().max()
        return (torch.round(x * sx).long() @ torch.round(w * sw).long()) / (sx * sw)

    with pytest.raises(checks.CheckFailed, match="products wrong"):
        checks.check_vectorwise_matmul(per_tensor)
