"""The assignment checks of the chapter "Beyond integers: NVFP4"."""
from collections.abc import Callable

import torch

from .. import formats
from .core import Passed, _describe, _run


def nvfp4_cases() -> list[torch.Tensor]:
    """Float32 matrices (last dimension a multiple of 16) that test an NVFP4 quantizer: normal
    and heavy-tailed samples, rows of very different magnitude, exact E2M1 ties and signed zeros,
    an all-zero block, values so small that the block scale reaches its 2^−6 clamp, huge values."""
    g = torch.Generator().manual_seed(8)
    normal = torch.randn(8, 64, generator=g)
    ties = torch.tensor([6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0,
                         -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5.0, -0.0])
    mixed = torch.cat([ties, torch.zeros(16), normal[0, :16] * 1e-4, normal[1, :16] * 50])
    return [normal, normal * torch.exp(3 * torch.randn(8, 64, generator=g)),
            normal * torch.exp(4 * torch.randn(8, 1, generator=g)), mixed[None],
            normal[:2] * 1e-3, normal[:2] * 1e30]


class _Shown:
    """An answer whose repr is set when it is compared: the block that differs, not the tensor."""

    def __init__(self, value):
        self.value, self.text = value, "…"

    def __repr__(self) -> str:
        return self.text


def _agrees(got: torch.Tensor, want: torch.Tensor, y: torch.Tensor, fmt) -> torch.Tensor:
    """Where codes agree: equal, or neighbours where y (the number rounded) is within 1e-5
    (relative) of a midpoint between two values of `fmt` (y computed in another order may differ
    in its last bits and round the other way)."""
    from ..nvfp4 import _midpoints

    y, mid = y.abs().reshape(want.shape), _midpoints(fmt)
    i = torch.bucketize(y, mid)  # mid[i − 1] < y ≤ mid[i]
    gap = torch.minimum(mid[i.clamp(max=len(mid) - 1)] - y, y - mid[(i - 1).clamp(min=0)]).abs()
    return (got == want) | ((gap <= 1e-5 * y) & ((got - want).abs() == 1))


def check_nvfp4_quantize(student: Callable, tensor_scale=None) -> Passed:
    """student(x) must return NVFP4's codes (one per value, unpacked, shaped like x) and block
    scales as raw E4M3 bytes (one per 16 values), and with tensor_scale="auto" also the FP32
    tensor scale t = max|x| / (448 · 6): the numbers of `nvfp4.nvfp4_quantize(x, tensor_scale)`.
    One level: s_b = E4M3(clamp(max|x_b| / 6, 2^−6, 448)), q = E2M1(x / s_b); two levels divide
    the block scale by t first and multiply x by (1 / t) / s_b."""
    from ..nvfp4 import nvfp4_quantize, unpack

    if tensor_scale not in (None, "auto"):
        raise ValueError(f"tensor_scale is None or 'auto', got {tensor_scale!r}")
    cases = nvfp4_cases()
    wants = [_Shown(nvfp4_quantize(x, tensor_scale)) for x in cases]
    inputs = {id(want): x for x, want in zip(cases, wants)}
    n_outputs = 2 if tensor_scale is None else 3

    def same(got: _Shown, want: _Shown) -> bool:
        q, x = want.value, inputs[id(want)]
        if not isinstance(got.value, (tuple, list)) or len(got.value) != n_outputs:
            got.text = f"{type(got.value).__name__} (expected a tuple of {n_outputs})"
            want.text = f"a tuple of {n_outputs}: codes, block scales" + (", tensor scale" if n_outputs == 3 else "")
            return False
        if n_outputs == 3 and torch.as_tensor(got.value[2]).float().item() != q.tensor_scale.item():
            got.text, want.text = f"tensor scale {got.value[2]!r}", f"tensor scale {q.tensor_scale.item()!r}"
            return False
        t = 1.0 if q.tensor_scale is None else q.tensor_scale
        blocks = x.reshape(-1, 16)
        codes = torch.as_tensor(got.value[0]).long().reshape(blocks.shape)
        scales = torch.as_tensor(got.value[1]).long().reshape(-1)
        want_codes, want_scales = unpack(q.codes).long().reshape(blocks.shape), q.block_scales.long().reshape(-1)
        scale_ok = _agrees(scales, want_scales, (blocks.abs().amax(-1) / 6 / t).clamp(2**-6, 448),
                           formats.FP8_E4M3)
        y = blocks / q.scales().reshape(-1, 1)
        ok = scale_ok & _agrees(codes, want_codes, y, formats.FP4_E2M1).all(-1)
        if ok.all():
            return True
        b = int((~ok).nonzero()[0])
        want.text = f"block {b}: scale byte {int(want_scales[b])}, codes {want_codes[b].tolist()}"
        got.text = f"block {b}: scale byte {int(scales[b])}, codes {codes[b].tolist()}"
        return False

    levels = "one level" if tensor_scale is None else "two levels"
    return _run(f"check_nvfp4_quantize({levels})", lambda x: _Shown(student(x.clone())), cases,
                wants, same, _describe, "tensors")


def check_nvfp4_dequantize(student: Callable) -> Passed:
    """student(codes, block_scales, tensor_scale) must return x̂ = e2m1(q) · s_b · t (float32, one
    value per code; t = 1 when tensor_scale is None) from the fields of an NVFP4Tensor: packed
    codes, the first value of each byte in its low nibble, and raw E4M3 block-scale bytes."""
    from ..nvfp4 import nvfp4_quantize

    quantized = [nvfp4_quantize(x, t) for x in nvfp4_cases() for t in (None, "auto")]

    def same(got: _Shown, want: _Shown) -> bool:
        values = torch.as_tensor(got.value, dtype=torch.float32).reshape(-1, 16)
        expected = want.value.reshape(-1, 16)
        ok = ((values - expected).abs() <= 1e-6 * expected.abs()).all(-1)
        if ok.all():
            return True
        b = int((~ok).nonzero()[0])
        want.text = f"block {b}: {[float(f'{v:.4g}') for v in expected[b].tolist()]}"
        got.text = f"block {b}: {[float(f'{v:.4g}') for v in values[b].tolist()]}"
        return False

    return _run("check_nvfp4_dequantize",
                lambda q: _Shown(student(q.codes.clone(), q.block_scales.clone(), q.tensor_scale)),
                quantized, (_Shown(q.dequantize()) for q in quantized), same,
                lambda q: f"an NVFP4Tensor of shape {tuple(q.shape)}, tensor scale "
                          f"{'None' if q.tensor_scale is None else format(q.tensor_scale.item(), '.3g')}",
                "tensors")
