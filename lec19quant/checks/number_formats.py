"""The assignment checks of the chapter "How numbers are stored"."""
import math
from collections.abc import Callable

import torch

from .. import formats
from .core import Passed, _run


def _same_float(got, want: float) -> bool:
    """Equal as numbers, with the sign of zero; any NaN equals NaN."""
    got = float(got)
    if math.isnan(want):
        return math.isnan(got)
    return got == want and math.copysign(1, got) == math.copysign(1, want)


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

    def value(code: int) -> float:
        got = torch.as_tensor(student_values).float().flatten()
        if got.numel() != want.numel():
            raise ValueError(f"expected {want.numel()} values, got {got.numel()}")
        return got[code].item()

    return _run(f"check_codebook({book.name})", value, range(want.numel()), want.tolist(), _same_float,
                lambda code: f"code {code}", "values")
