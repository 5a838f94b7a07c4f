"""The assignment checks of the chapter "Quantization basics"."""
from collections.abc import Callable

import torch

from .core import Passed, _close, _describe, _run


def _same_codes(got, want: torch.Tensor, product: torch.Tensor) -> bool:
    """Integer codes equal, except that where s·x is within 1e-4 of a tie, either neighbour will do
    (a scale computed another way may differ in its last bit)."""
    got = torch.as_tensor(got).long().reshape(want.shape)
    near_tie = ((product - product.floor()) - 0.5).abs() < 1e-4
    return bool(torch.all((got == want) | (near_tie & ((got - want).abs() <= 1))))


def quantization_cases() -> list[torch.Tensor]:
    """Float32 tensors with a nonzero range that test a quantizer: the lecture's [-3, 1, 2, 4],
    exact ties, normal and heavy-tailed samples, one huge outlier, ReLU-like data, negative data."""
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(1000, generator=g)
    outlier = normal[:64].clone()
    outlier[17] = 100.0
    return [torch.tensor([-3.0, 1.0, 2.0, 4.0]), torch.tensor([127.0, 0.5, 1.5, 2.5, -2.5, -0.5]),
            normal, normal * torch.exp(2 * torch.randn(1000, generator=g)), outlier,
            torch.relu(normal), -torch.rand(100, generator=g) - 1]


def check_absmax(student: Callable, bits: int = 8) -> Passed:
    """student(x, bits) must return (codes, scale) of absmax quantization with one scale for the
    tensor: s = (2^(bits−1) − 1) / max|x|, codes = round(s·x), ties to even."""
    from ..quantize import absmax_quantize

    cases = quantization_cases()
    wants = [absmax_quantize(x, bits) for x in cases]
    products = {id(w): x * w.scale for x, w in zip(cases, wants)}

    def same(got, want):
        codes, scale = got
        return _close(scale, want.scale.reshape(())) and _same_codes(codes, want.codes.long(), products[id(want)])

    return _run(f"check_absmax(bits={bits})", lambda x: student(x.clone(), bits), cases, wants, same,
                _describe, "tensors")


def check_zeropoint(student: Callable, bits: int = 8) -> Passed:
    """student(x, bits) must return (codes, scale, zero_point) of zero-point quantization with one
    scale for the tensor: s = (2^bits − 1) / (max − min), z = −round(s·min) − 2^(bits−1),
    codes = round(s·x) + z."""
    from ..quantize import zeropoint_quantize

    cases = quantization_cases()
    wants = [zeropoint_quantize(x, bits) for x in cases]
    products = {id(w): x * w.scale for x, w in zip(cases, wants)}

    def same(got, want):
        codes, scale, zero = got
        return (_close(scale, want.scale.reshape(())) and int(zero) == want.zero_point.item()
                and _same_codes(codes, want.codes.long(), products[id(want)]))

    return _run(f"check_zeropoint(bits={bits})", lambda x: student(x.clone(), bits), cases, wants, same,
                _describe, "tensors")


def check_vectorwise_matmul(student: Callable) -> Passed:
    """student(x, w) must return X·W computed through vector-wise int8 quantization: rows of X
    and columns of W absmax-quantized to int8, Z = Q_x·Q_w in integers, X·W ≈ Z / (s_x ⊗ s_w)."""
    from ..int8 import int8_matmul

    g = torch.Generator().manual_seed(1)
    shapes = [(1, 4, 3), (5, 16, 7), (8, 300, 20), (3, 64, 64)]
    cases = [(torch.randn(m, k, generator=g) * torch.exp(torch.randn(m, 1, generator=g)),
              torch.randn(k, n, generator=g)) for m, k, n in shapes]
    cases[2][0][:, 5] *= 40  # an outlier channel
    return _run("check_vectorwise_matmul", lambda case: student(case[0].clone(), case[1].clone()), cases,
                [int8_matmul(x, w, backend="torch") for x, w in cases], _close,
                lambda case: f"x {tuple(case[0].shape)}, w {tuple(case[1].shape)}", "products")
