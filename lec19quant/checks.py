"""Assignment checks: run a student's function on every case and compare with the package.

A check that passes returns a one-line `Passed` message (a notebook shows it); a wrong answer
raises `CheckFailed`, an AssertionError that says how many cases failed and shows the first:
the input, the expected answer and the student's. An exception inside the student's function
counts as a wrong answer for that case.
"""
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from . import formats


class CheckFailed(AssertionError):
    """A student's function disagreed with the reference."""


@dataclass(frozen=True)
class Passed:
    """The message of a check that passed."""

    message: str

    def __repr__(self) -> str:
        return self.message


def _run(name: str, student: Callable, cases: Iterable, expected: Iterable, same: Callable,
         describe: Callable, what: str) -> Passed:
    """Call `student` on each case and compare with the expected answer by `same(got, want)`."""
    if not callable(student):
        raise TypeError(f"{name} takes your function, got {type(student).__name__}")
    n, failed, first = 0, 0, None
    for case, want in zip(cases, expected):
        n += 1
        try:
            got = student(case)
            ok = same(got, want)
        except Exception as error:  # the student's bug, reported as a wrong answer
            got, ok = f"{type(error).__name__}: {error}", False
        if not ok:
            failed += 1
            first = first or (case, want, got)
    if failed:
        case, want, got = first
        raise CheckFailed(f"✗ {name}: {failed} of {n} {what} wrong; the first: {describe(case)}, "
                          f"expected {want!r}, got {got!r}")
    return Passed(f"✓ {name}: all {n} {what} right")


def check_to_bits(student: Callable[[int], str], bits: int = 8, signed: bool = True) -> Passed:
    """student(value) must return the `bits`-bit pattern of every value in
    `formats.int_range(bits, signed)` as a string of 0s and 1s (two's complement when signed)."""
    lo, hi = formats.int_range(bits, signed)
    values = range(lo, hi + 1)
    return _run("check_to_bits", student, values, (formats.to_bits(v, bits, signed) for v in values),
                lambda got, want: got == want, lambda v: f"value {v}", "values")


def check_from_bits(student: Callable[[str], int], bits: int = 8, signed: bool = True) -> Passed:
    """student(pattern) must return the integer that every `bits`-bit pattern stores."""
    patterns = [format(c, f"0{bits}b") for c in range(2**bits)]
    return _run("check_from_bits", student, patterns,
                (formats.from_bits(p, signed) for p in patterns),
                lambda got, want: got == want, lambda p: f"pattern {p!r}", "patterns")


def _same_float(got, want: float) -> bool:
    """Equal as numbers, with the sign of zero; any NaN equals NaN."""
    got = float(got)
    if math.isnan(want):
        return math.isnan(got)
    return got == want and math.copysign(1, got) == math.copysign(1, want)


def _small(fmt) -> formats.FloatFormat:
    fmt = formats.as_format(fmt)
    if not isinstance(fmt, formats.FloatFormat) or fmt.bits > 16:
        raise ValueError(f"checks run on every code: give a float format of at most 16 bits, got {fmt}")
    return fmt


def check_decode(student: Callable[[int], float], fmt) -> Passed:
    """student(code) must return the value of every code of `fmt` (a float format of at most 16
    bits): the same number, −0 for negative zero, NaN where the code is a NaN."""
    fmt = _small(fmt)
    codes = range(2**fmt.bits)
    return _run(f"check_decode({fmt.name})", student, codes, formats.decode(torch.arange(2**fmt.bits),
                fmt).tolist(), _same_float,
                lambda c: f"code {c} ({formats.pattern(c, fmt)})", "codes")


def encode_cases(fmt) -> torch.Tensor:
    """Inputs that test an encoder of `fmt`: every value, the midpoints between neighbours (ties),
    the float32 numbers just either side of them, a value past the largest, ±0 and ±inf, and NaN
    where the format has a NaN."""
    fmt = _small(fmt)
    v = formats.values(fmt).double()
    beyond = fmt.max + math.ldexp(1.0, fmt.max_exponent - fmt.man_bits)  # the next value, if any
    v = torch.cat([v, torch.tensor([beyond, -beyond], dtype=torch.float64)]).sort().values
    ties = ((v[1:] + v[:-1]) / 2).float()  # exact in float32: one bit more than the format has
    inf = torch.tensor(torch.inf)
    cases = [v.float(), ties, torch.nextafter(ties, inf), torch.nextafter(ties, -inf),
             torch.tensor([0.0, -0.0, torch.inf, -torch.inf])]
    if fmt.has_nan:
        cases.append(torch.tensor([torch.nan]))
    cases = torch.cat(cases)
    return cases if fmt.signed or fmt.has_nan else cases[cases >= 0]


def check_encode(student: Callable[[float], int], fmt, overflow: str | None = None) -> Passed:
    """student(x) must return the code of the value of `fmt` nearest to x (ties to even; beyond
    the largest value, `fmt`'s overflow rule or `overflow`), for every input of `encode_cases`.
    Where the answer is a NaN, any NaN code will do."""
    fmt = _small(fmt)
    x = encode_cases(fmt)
    expected = formats.encode(x, fmt, overflow).tolist()
    every = torch.arange(2**fmt.bits)
    nans = set(every[formats.decode(every, fmt).isnan()].tolist())
    return _run(f"check_encode({fmt.name})", student, x.tolist(), expected,
                lambda got, want: got == want or want in nans and got in nans,
                lambda v: f"x = {v!r}", "inputs")


def check_codebook(student_values, book=formats.NF4) -> Passed:
    """`student_values` (a list or tensor) must equal the codebook's table bit for bit as float32."""
    book = formats.as_format(book)
    want = torch.tensor(book.table, dtype=torch.float32)
    got = torch.as_tensor(student_values).float().flatten()
    if got.numel() != want.numel():
        raise CheckFailed(f"✗ check_codebook({book.name}): expected {want.numel()} values, got "
                          f"{got.numel()}")
    wrong = (got.view(torch.int32) != want.view(torch.int32)).nonzero().flatten().tolist()
    if wrong:
        i = wrong[0]
        raise CheckFailed(f"✗ check_codebook({book.name}): {len(wrong)} of {want.numel()} values "
                          f"differ; the first: code {i}, expected {want[i].item()!r}, got "
                          f"{got[i].item()!r}")
    return Passed(f"✓ check_codebook({book.name}): all {want.numel()} values equal bit for bit")


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


def _same_codes(got, want: torch.Tensor, product: torch.Tensor) -> bool:
    """Integer codes equal, except that where s·x is within 1e-4 of a tie, either neighbour will do
    (a scale computed another way may differ in its last bit)."""
    got = torch.as_tensor(got).long().reshape(want.shape)
    near_tie = ((product - product.floor()) - 0.5).abs() < 1e-4
    return bool(torch.all((got == want) | (near_tie & ((got - want).abs() <= 1))))


def _close(got, want: torch.Tensor) -> bool:
    got = torch.as_tensor(got, dtype=torch.float32).reshape(want.shape)
    return bool(torch.allclose(got, want.float(), rtol=1e-5, atol=1e-7))


def _describe(x: torch.Tensor) -> str:
    return f"x = {x.tolist()}" if x.numel() <= 8 else f"x of {x.numel()} values, max |x| = {x.abs().max():.3g}"


def check_absmax(student: Callable, bits: int = 8) -> Passed:
    """student(x, bits) must return (codes, scale) of absmax quantization with one scale for the
    tensor: s = (2^(bits−1) − 1) / max|x|, codes = round(s·x), ties to even."""
    from .quantize import absmax_quantize

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
    from .quantize import zeropoint_quantize

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
    from .int8 import int8_matmul

    g = torch.Generator().manual_seed(1)
    shapes = [(1, 4, 3), (5, 16, 7), (8, 300, 20), (3, 64, 64)]
    cases = [(torch.randn(m, k, generator=g) * torch.exp(torch.randn(m, 1, generator=g)),
              torch.randn(k, n, generator=g)) for m, k, n in shapes]
    cases[2][0][:, 5] *= 40  # an outlier channel
    return _run("check_vectorwise_matmul", lambda case: student(case[0].clone(), case[1].clone()), cases,
                [int8_matmul(x, w, backend="torch") for x, w in cases], _close,
                lambda case: f"x {tuple(case[0].shape)}, w {tuple(case[1].shape)}", "products")
