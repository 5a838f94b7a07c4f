"""How numbers are stored: integers, floating-point formats from FP32 to FP4, and codebooks.

A b-bit integer is a code c in [0, 2^b); read as signed (two's complement) it is c − 2^b when its
top bit is 1. A float with E exponent bits and M mantissa bits stores (s, e, m) and means
(−1)^s · (1 + m/2^M) · 2^(e − bias) for e ≥ 1 and (−1)^s · (m/2^M) · 2^(1 − bias) for e = 0
(subnormals). A codebook is a table: code i means table[i]. Encoding rounds to the nearest value
the format has.
"""
import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from .display import Table

# ---------------------------------------------------------------------------------------------
# Integers


def _check_width(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 64:
        raise ValueError(f"bits must be an int from 1 to 64, got {bits!r}")
    return bits


def int_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """(min, max) of a `bits`-bit integer: [−2^(b−1), 2^(b−1) − 1] signed, [0, 2^b − 1] unsigned."""
    b = _check_width(bits)
    return (-(2 ** (b - 1)), 2 ** (b - 1) - 1) if signed else (0, 2**b - 1)


def to_bits(value: int, bits: int, signed: bool = True, wrap: bool = False) -> str:
    """The bit pattern that stores `value` in `bits` bits: the code c = value mod 2^b in binary, so a
    negative −v is stored as 2^b − v (two's complement).

    A value outside `int_range(bits, signed)` is an error, unless `wrap=True`: then the low `bits`
    bits are kept, as C casts and torch's `.to(torch.int8)` do (200 becomes −56 in int8).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"value must be an int, got {type(value).__name__}")
    lo, hi = int_range(bits, signed)
    if not wrap and not lo <= value <= hi:
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"{value} does not fit in {bits} bits {kind} [{lo}, {hi}]; "
                         "pass wrap=True to keep its low bits")
    return format(value % 2**bits, f"0{bits}b")


def from_bits(pattern: str, signed: bool = True) -> int:
    """The integer that a bit string stores: c = Σ bit_i · 2^i, minus 2^b when `signed` and the top
    bit is 1. Spaces and underscores are ignored: from_bits("0101 0110", signed=False) == 86."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string of 0s and 1s, got {type(pattern).__name__}")
    digits = pattern.replace(" ", "").replace("_", "")
    if not digits or set(digits) - {"0", "1"}:
        raise ValueError(f"pattern must be a non-empty string of 0s and 1s, got {pattern!r}")
    code = int(digits, 2)
    return code - 2 ** len(digits) if signed and digits[0] == "1" else code


# ---------------------------------------------------------------------------------------------
# Floating-point formats

SPECIALS = ("ieee", "fn", "none")
OVERFLOW_RULES = ("inf", "nan", "saturate")


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: a sign bit (unless `signed=False`), `exp_bits` exponent
    bits e and `man_bits` mantissa bits m, meaning (−1)^s · (1 + m/2^M) · 2^(e − bias) for e ≥ 1
    and (−1)^s · (m/2^M) · 2^(1 − bias) for e = 0. The bias defaults to 2^(E−1) − 1.

    specials: "ieee": the all-ones exponent holds ±inf (m = 0) and NaN (m ≠ 0);
              "fn": finite, no inf; only the all-ones pattern (exponent and mantissa) is NaN;
              "none": no inf and no NaN, every pattern is a number.
    overflow: what a finite value beyond the largest becomes, "inf", "nan" or "saturate" (±max);
              by default inf for "ieee", NaN for "fn", saturate for "none".
    subnormals: False makes e = 0 an ordinary binade, 1.m · 2^(−bias), so that there is no zero
              (E8M0, whose 256 codes are the powers 2^(e − 127) and NaN).
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    specials: str = "ieee"
    overflow: str | None = None
    signed: bool = True
    subnormals: bool = True
    name: str = ""

    def __post_init__(self):
        e, m = self.exp_bits, self.man_bits
        for key, low in (("exp_bits", 1), ("man_bits", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key} must be an int ≥ {low}, got {value!r}")
        if self.specials not in SPECIALS:
            raise ValueError(f"specials must be one of {SPECIALS}, got {self.specials!r}")
        if self.specials == "ieee" and (e < 2 or m < 1):
            raise ValueError("'ieee' specials need exp_bits ≥ 2 and man_bits ≥ 1 (inf and NaN take "
                             "the top exponent, and NaN a non-zero mantissa)")
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (e - 1) - 1)
        elif isinstance(self.bias, bool) or not isinstance(self.bias, int):
            raise ValueError(f"bias must be an int, got {self.bias!r}")
        default = {"ieee": "inf", "fn": "nan", "none": "saturate"}[self.specials]
        object.__setattr__(self, "overflow", _check_overflow(self, self.overflow or default))
        if not self.name:
            object.__setattr__(self, "name", f"E{e}M{m}")
        if m > 23 or self.max_exponent > 127 or self.min_exponent - m * self.subnormals < -149:
            raise ValueError(f"{self.name}'s values must all be float32 values (decode returns "
                             "float32): at most 23 mantissa bits and exponents from −149 to 127")

    def __str__(self) -> str:
        return self.name

    @property
    def bits(self) -> int:
        """Bits per value: sign, exponent and mantissa."""
        return int(self.signed) + self.exp_bits + self.man_bits

    @property
    def code_dtype(self) -> torch.dtype:
        """The dtype of codes: uint8 up to 8 bits, int32 up to 16, int64 beyond (non-negative)."""
        return torch.uint8 if self.bits <= 8 else torch.int32 if self.bits <= 16 else torch.int64

    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.specials != "none"

    @property
    def min_exponent(self) -> int:
        """e_min: the smallest normal value is 2^e_min (1 − bias, or −bias without subnormals)."""
        return 1 - self.bias if self.subnormals else -self.bias

    @property
    def max_exponent(self) -> int:
        """The exponent of the largest finite value."""
        return (self.max_code >> self.man_bits) - self.bias

    @property
    def inf_code(self) -> int:
        """The code of +inf (all-ones exponent, zero mantissa), for "ieee" formats."""
        return (2**self.exp_bits - 1) << self.man_bits

    @property
    def nan_code(self) -> int:
        """The code of the NaN that encode writes (plus the sign bit for −NaN): the quiet NaN
        (mantissa 10…0) for "ieee", the all-ones pattern for "fn"."""
        if self.specials == "ieee":
            return self.inf_code | 1 << (self.man_bits - 1)
        return 2 ** (self.exp_bits + self.man_bits) - 1

    @property
    def max_code(self) -> int:
        """The code of the largest finite value."""
        if self.specials == "ieee":
            return self.inf_code - 1
        return 2 ** (self.exp_bits + self.man_bits) - 1 - (self.specials == "fn")

    @property
    def max(self) -> float:
        """The largest finite value."""
        return decode(self.max_code, self).item()

    @property
    def smallest_normal(self) -> float:
        return math.ldexp(1.0, self.min_exponent)

    @property
    def smallest_subnormal(self) -> float:
        """The smallest positive value: 2^(e_min − M), or 2^e_min without subnormals."""
        return math.ldexp(1.0, self.min_exponent - self.man_bits * self.subnormals)

    @property
    def eps(self) -> float:
        """Machine epsilon: the gap between 1 and the next value, 2^−M."""
        return math.ldexp(1.0, -self.man_bits)


def _check_overflow(fmt: FloatFormat, rule: str) -> str:
    if rule not in OVERFLOW_RULES:
        raise ValueError(f"overflow must be one of {OVERFLOW_RULES}, got {rule!r}")
    if rule == "inf" and not fmt.has_inf or rule == "nan" and not fmt.has_nan:
        raise ValueError(f"overflow={rule!r} needs a format with {rule}, but {fmt.name} has "
                         f"specials={fmt.specials!r}")
    return rule


FP32 = FloatFormat(8, 23, name="FP32")
FP16 = FloatFormat(5, 10, name="FP16")
BF16 = FloatFormat(8, 7, name="BF16")
# OCP FP8 E4M3 (ml_dtypes' float8_e4m3fn): ml_dtypes and torch ≤ 2.12 turn overflow into NaN;
# torch ≥ 2.13's .to(torch.float8_e4m3fn) saturates at ±448: encode(x, FP8_E4M3, overflow="saturate").
FP8_E4M3 = FloatFormat(4, 3, specials="fn", name="FP8_E4M3")
FP8_E5M2 = FloatFormat(5, 2, name="FP8_E5M2")
FP6_E2M3 = FloatFormat(2, 3, specials="none", name="FP6_E2M3")
FP6_E3M2 = FloatFormat(3, 2, specials="none", name="FP6_E3M2")
FP4_E2M1 = FloatFormat(2, 1, specials="none", name="FP4_E2M1")
# OCP MX's scale format. For a float32 subnormal x in (2^−127, 1.5·2^−127), encode gives the
# nearest value, 2^−127; ml_dtypes and torch give 2^−126. Everywhere else they agree.
E8M0 = FloatFormat(8, 0, specials="fn", signed=False, subnormals=False, name="E8M0")

FLOAT_FORMATS = {f.name: f for f in (FP32, FP16, BF16, FP8_E4M3, FP8_E5M2, FP6_E2M3, FP6_E3M2,
                                     FP4_E2M1, E8M0)}


# ---------------------------------------------------------------------------------------------
# Codebooks


@dataclass(frozen=True)
class Codebook:
    """A format that is a table: code i means `table[i]`. A value encodes to the nearest entry; an
    exact midpoint between two entries goes to the lower one, as in bitsandbytes."""

    name: str
    table: tuple[float, ...]

    def __post_init__(self):
        object.__setattr__(self, "table", tuple(float(v) for v in self.table))
        if not 2 <= len(self.table) <= 256:
            raise ValueError(f"a codebook has 2 to 256 entries, got {len(self.table)}")
        if not all(math.isfinite(v) for v in self.table):
            raise ValueError(f"codebook {self.name!r} has a value that is not finite")

    def __str__(self) -> str:
        return self.name

    @property
    def bits(self) -> int:
        return math.ceil(math.log2(len(self.table)))

    @property
    def code_dtype(self) -> torch.dtype:
        return torch.uint8


NF4_OFFSET = 0.9677083  # bitsandbytes' default: about the mean of 1 − 1/(2·15) and 1 − 1/(2·16)


def normal_float(offset: float = NF4_OFFSET) -> Codebook:
    """QLoRA's 4-bit NormalFloat, built as bitsandbytes' create_normal_map builds it.

    The standard normal's quantiles Φ⁻¹(p) at 9 probabilities evenly spaced from `offset` down to
    1/2 give 8 positive values (1/2 itself, the median 0, is dropped); 8 from `offset` to 1/2 give
    7 negative ones; with 0 and divided by the largest they span [−1, 1], so that each of the 16
    codes covers about the same share of normally distributed weights. As in bitsandbytes, the
    probabilities are float32, Φ⁻¹ is evaluated in float64, and the values are float32.
    """
    if not 0.5 < offset < 1:
        raise ValueError(f"offset is a probability in (0.5, 1), got {offset!r}")
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double()).float()
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double()).float()
    values = torch.cat([negative, torch.zeros(1), positive]).sort().values
    return Codebook("NF4", tuple((values / values.max()).tolist()))


NF4 = normal_float()
# bitsandbytes' own 4-bit float (not OCP E2M1): sign in bit 3, the other three bits mean
# 0, 0.0625, 8, 12, 4, 6, 2, 3 in code order, divided by 12 to span [−1, 1]; code 8 is +0 there.
_BNB_FP4_MAGNITUDES = torch.tensor([0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0])
BNB_FP4 = Codebook("BNB_FP4",
                   (torch.cat([_BNB_FP4_MAGNITUDES, -_BNB_FP4_MAGNITUDES]) / 12 + 0.0).tolist())
CODEBOOKS = {"NF4": NF4, "BNB_FP4": BNB_FP4}


def as_format(fmt) -> FloatFormat | Codebook:
    """A `FloatFormat` or `Codebook`, given one or its name ("FP8_E4M3", "NF4", ...)."""
    if isinstance(fmt, (FloatFormat, Codebook)):
        return fmt
    if isinstance(fmt, str):
        known = {**FLOAT_FORMATS, **CODEBOOKS}
        if fmt not in known:
            raise ValueError(f"unknown format {fmt!r}; known: {', '.join(known)}")
        return known[fmt]
    raise TypeError(f"fmt must be a FloatFormat, a Codebook or a name, got {type(fmt).__name__}")


# ---------------------------------------------------------------------------------------------
# Encoding and decoding


def _as_float32(x) -> torch.Tensor:
    """float32 (exactly, from float16/bfloat16; Python numbers are rounded to float32)."""
    if not isinstance(x, torch.Tensor):
        return torch.tensor(x, dtype=torch.float32)
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    if x.dtype != torch.float32:
        raise TypeError(f"x must be a float32, float16 or bfloat16 tensor, got {x.dtype}; a float64 "
                        "tensor would be rounded twice, so convert it yourself with x.float()")
    return x


def encode(x, fmt, overflow: str | None = None) -> torch.Tensor:
    """The codes of the values of `fmt` nearest to x (float32; any shape), in `fmt.code_dtype`.

    For a float format: with e = max(⌊log2|x|⌋, e_min) the binade of |x| and
    q = round(|x| / 2^(e − M)) its significand, rounded to nearest with ties to even,
    the code is s·2^(E+M) + (e − e_min)·2^M + q (less 2^M without subnormals); q = 2^(M+1)
    carries into the next binade. Values beyond the largest follow `overflow` (default
    `fmt.overflow`); ±inf stays inf where the format has it, else overflows. NaN becomes
    the format's NaN (`fmt.nan_code`, payload dropped) with its sign, and so do zero
    without subnormals and negative numbers in an unsigned format; where the format has
    no NaN, that is a ValueError (ml_dtypes stores NaN as ±0 in FP4/FP6).

    For a codebook: the index of the nearest entry, an exact midpoint going to the lower entry.
    """
    fmt = as_format(fmt)
    x = _as_float32(x)
    if isinstance(fmt, Codebook):
        if overflow is not None:
            raise ValueError("a codebook has no overflow rule: values beyond it take its end entries")
        return _encode_codebook(x, fmt)
    rule = fmt.overflow if overflow is None else _check_overflow(fmt, overflow)
    if (fmt.exp_bits, fmt.bias, fmt.specials, fmt.subnormals, fmt.signed, rule) == (
            8, 127, "ieee", True, True, "inf"):
        return _in_chunks(lambda t: _encode_float32_bits(t, fmt), x, fmt.code_dtype)
    return _in_chunks(lambda t: _encode_binades(t, fmt, rule), x, fmt.code_dtype)


CHUNK = 2**18  # values per step on the CPU: a step's temporaries (a few MB) stay in the cache


def _in_chunks(encoder, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """encoder(x), computed CHUNK values at a time on the CPU: for 10^7 values that is two to
    three times faster than one pass of whole-tensor steps, which wait on main memory."""
    if x.device.type != "cpu" or x.numel() <= CHUNK:
        return encoder(x)
    flat = x.reshape(-1)
    codes = torch.empty(flat.shape, dtype=dtype)
    for start in range(0, flat.numel(), CHUNK):
        codes[start:start + CHUNK] = encoder(flat[start:start + CHUNK])
    return codes.view(x.shape)


def _encode_binades(x: torch.Tensor, fmt: FloatFormat, rule: str) -> torch.Tensor:
    """`encode` for any float format, binade by binade (the formula in encode's docstring)."""
    m_bits, e_min = fmt.man_bits, fmt.min_exponent
    # The steps work in place: a fresh tensor per step would cost more than the arithmetic.
    frac, exp = torch.frexp(x)  # x = frac · 2^exp with 1/2 ≤ |frac| < 1, or frac = 0, ±inf, NaN
    lowest, highest = torch.aminmax(frac) if frac.numel() else (0, 0)
    specials = not -1 < lowest <= highest < 1  # inf or NaN in x
    exp.masked_fill_(frac == 0, e_min)  # frexp(0) = (0, 0): put zero in the lowest binade instead
    binade = (exp - 1).clamp_(min=e_min)
    # q = |x| / 2^(binade − M) = |frac| · 2^(exp − binade + M), exact until it is rounded; the
    # power of two is built from its float32 bits, (n + 127) · 2^23, with n ≥ −126 (below that
    # q rounds to 0 anyway)
    n = exp.sub_(binade).add_(m_bits)
    q = frac.abs_().mul_(n.add_(127).clamp_(min=1).bitwise_left_shift_(23).view(torch.float32))
    mag = binade.sub_(e_min).bitwise_left_shift_(m_bits).add_(q.round_().to(torch.int32))
    if not fmt.subnormals:
        mag.sub_(1 << m_bits).clamp_(min=0)  # below 2^e_min the nearest value is 2^e_min
    overflow_code = {"saturate": fmt.max_code, "inf": fmt.inf_code, "nan": fmt.nan_code}[rule]
    mag.masked_fill_(mag > fmt.max_code, overflow_code)
    if specials:
        mag.masked_fill_(torch.isinf(x), fmt.inf_code if fmt.has_inf else overflow_code)
    unrepresentable = _only_nan_can_stand_for(x, fmt, specials)
    if unrepresentable is not None:
        mag.masked_fill_(unrepresentable, fmt.nan_code)
    codes = mag.to(fmt.code_dtype)
    if fmt.signed:
        codes |= torch.signbit(x).to(fmt.code_dtype) << (fmt.exp_bits + fmt.man_bits)
    return codes


def _only_nan_can_stand_for(x: torch.Tensor, fmt: FloatFormat, specials: bool):
    """The mask of NaN, and of zero and negative numbers where the format lacks them (None if
    there are none); a ValueError naming them where the format has no NaN."""
    checks = {"NaN": torch.isnan} if specials else {}
    if not fmt.subnormals:
        checks["zero"] = lambda t: t == 0
    if not fmt.signed:
        checks["negative numbers"] = lambda t: t < 0
    found = {name: mask for name, check in checks.items() if (mask := check(x)).any()}
    if not found:
        return None
    if not fmt.has_nan:
        raise ValueError(f"x holds {' and '.join(found)}, which {fmt.name} cannot represent "
                         "(it has no NaN to stand for them)")
    return torch.stack(list(found.values())).any(0)


def _encode_float32_bits(x: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """`encode` for formats with float32's exponent (BF16, FP32): the float32 bit pattern, read as
    an integer and rounded to its top 1 + 8 + M bits, ties to even. A carry out of the mantissa
    moves into the exponent, up to inf, so this is the same rounding as the general formula."""
    bits = x.view(torch.int32)
    if x.numel() and torch.aminmax(x).max.isnan():
        # every NaN becomes the quiet NaN 0x7FC00000, sign kept: a payload could carry past it
        bits = torch.where(torch.isnan(x), (bits & -(2**31)) | 0x7FC00000, bits)
    drop = 23 - fmt.man_bits
    if drop == 0:
        return bits.to(torch.int64) & 0xFFFFFFFF
    kept = (bits >> drop).bitwise_and_(1).add_(bits).add_(2 ** (drop - 1) - 1)
    return kept.bitwise_right_shift_(drop).bitwise_and_(2**fmt.bits - 1).to(fmt.code_dtype)


def _encode_codebook(x: torch.Tensor, book: Codebook) -> torch.Tensor:
    if torch.isnan(x).any():
        raise ValueError(f"x holds NaN, which codebook {book.name!r} cannot represent")
    table = torch.tensor(book.table, dtype=torch.float32, device=x.device)
    order = torch.argsort(table, stable=True)
    ordered = table[order]
    midpoints = (ordered[1:] + ordered[:-1]) / 2
    return order[torch.searchsorted(midpoints, x.contiguous())].to(torch.uint8)


def _as_codes(codes, fmt) -> torch.Tensor:
    if not isinstance(codes, torch.Tensor):
        codes = torch.tensor(codes, dtype=torch.int64)
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, got {codes.dtype}")
    codes = codes.to(torch.int64)
    n = len(fmt.table) if isinstance(fmt, Codebook) else 2**fmt.bits
    if codes.numel() and (codes.min() < 0 or codes.max() >= n):
        raise ValueError(f"codes of {fmt.name} lie in [0, {n}), got values from {codes.min().item()} "
                         f"to {codes.max().item()} (a signed view of the bits? mask with & {n - 1})")
    return codes


@lru_cache
def _binade_scales(fmt: FloatFormat) -> torch.Tensor:
    """2^(max(e, 1) − bias − M) for each exponent field e (2^(e − bias − M) without subnormals)."""
    lowest = 1 if fmt.subnormals else 0
    return torch.tensor([math.ldexp(1.0, max(e, lowest) - fmt.bias - fmt.man_bits)
                         for e in range(2**fmt.exp_bits)], dtype=torch.float64)


def decode(codes, fmt) -> torch.Tensor:
    """The float32 values of `codes` (integers in [0, 2^bits); any shape).

    A float code (s, e, m) means (−1)^s · (2^M + m) · 2^(e − bias − M) for e ≥ 1 and
    (−1)^s · m · 2^(1 − bias − M) for e = 0 (computed exactly in float64); inf and NaN per
    `fmt.specials`. A codebook's code i means table[i].
    """
    fmt = as_format(fmt)
    codes = _as_codes(codes, fmt)
    if isinstance(fmt, Codebook):
        return torch.tensor(fmt.table, dtype=torch.float32, device=codes.device)[codes]
    m_bits, e_bits = fmt.man_bits, fmt.exp_bits
    field = (codes >> m_bits) & (2**e_bits - 1)
    mantissa = codes & (2**m_bits - 1)
    implicit = field > 0 if fmt.subnormals else torch.ones_like(field, dtype=torch.bool)
    significand = (mantissa + (implicit.long() << m_bits)).double()
    values = (significand * _binade_scales(fmt).to(codes.device)[field]).float()
    magnitude = codes & (2 ** (e_bits + m_bits) - 1)
    if fmt.has_inf:
        values = torch.where(magnitude == fmt.inf_code, torch.inf, values)
        values = torch.where(magnitude > fmt.inf_code, torch.nan, values)
    elif fmt.has_nan:
        values = torch.where(magnitude == fmt.nan_code, torch.nan, values)
    if fmt.signed:
        values = torch.where(codes >> (e_bits + m_bits) == 1, -values, values)
    return values


def round_to(x, fmt, overflow: str | None = None) -> torch.Tensor:
    """x rounded to the nearest value of `fmt`, as float32: decode(encode(x, fmt), fmt)."""
    return decode(encode(x, fmt, overflow), fmt)


def values(fmt) -> torch.Tensor:
    """Every finite value of a format of at most 16 bits (or a codebook), sorted, −0 merged into 0."""
    fmt = as_format(fmt)
    if fmt.bits > 16:
        raise ValueError(f"{fmt.name} has 2^{fmt.bits} codes; values() lists formats of at most 16 bits")
    n = len(fmt.table) if isinstance(fmt, Codebook) else 2**fmt.bits
    v = decode(torch.arange(n), fmt)
    return torch.unique(v[torch.isfinite(v)] + 0.0)


# ---------------------------------------------------------------------------------------------
# One value, taken apart


@dataclass(frozen=True)
class Fields:
    """The fields of one encoded value: sign s, exponent bits, mantissa bits, and what they mean."""

    format: FloatFormat
    code: int
    sign: int
    exponent: str  # the exponent field's bits
    mantissa: str  # the mantissa field's bits
    kind: str  # "zero", "subnormal", "normal", "inf" or "nan"
    unbiased: int | None  # e − bias (1 − bias for subnormals); None for inf and NaN
    significand: float | None  # 1.m (0.m for subnormals)
    value: float

    @property
    def pattern(self) -> str:
        """The bits, sign, exponent and mantissa separated by spaces."""
        return pattern(self.code, self.format)

    def __str__(self) -> str:
        if self.kind in ("inf", "nan"):
            return f"{self.format.name}: {self.pattern} = {self.value}"
        sign = "−" if self.sign else "+"
        return (f"{self.format.name}: {self.pattern} = {sign}{self.significand!r} × "
                f"2^{self.unbiased} = {self.value!r}")

    __repr__ = __str__


def pattern(code: int, fmt) -> str:
    """The bits of one code of a float format, sign, exponent and mantissa separated by spaces:
    pattern(0x7E, FP8_E4M3) == "0 1111 110"."""
    fmt = as_format(fmt)
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"pattern() takes a float format; {fmt.name} is a codebook, a plain table")
    bits = format(int(_as_codes(code, fmt)), f"0{fmt.bits}b")
    cuts = [0, int(fmt.signed), int(fmt.signed) + fmt.exp_bits, fmt.bits]
    return " ".join(bits[a:b] for a, b in zip(cuts, cuts[1:]) if b > a)


def fields(x, fmt, overflow: str | None = None) -> Fields:
    """Encode one number and take its code apart: for a normal value,
    x = (−1)^s · 1.m · 2^(e − bias); e.g. 5.5 in FP32 is 0 10000001 0110…0 = +1.375 × 2^2."""
    fmt = as_format(fmt)
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"fields() takes a float format; {fmt.name} is a codebook, a plain table")
    x = _as_float32(x)
    if x.numel() != 1:
        raise ValueError(f"fields() takes one number, got a tensor of {x.numel()}")
    code = int(encode(x.reshape(1), fmt, overflow).item())
    m_bits, e_bits = fmt.man_bits, fmt.exp_bits
    e, m = (code >> m_bits) & (2**e_bits - 1), code & (2**m_bits - 1)
    value = decode(code, fmt).item()
    if math.isinf(value) or math.isnan(value):
        kind, unbiased, significand = ("inf" if math.isinf(value) else "nan"), None, None
    else:
        normal = e > 0 or not fmt.subnormals
        kind = "normal" if normal else "subnormal" if m else "zero"
        unbiased = (e if normal else 1) - fmt.bias
        significand = normal + m / 2**m_bits
    sign = code >> (e_bits + m_bits) if fmt.signed else 0
    mantissa = format(m, f"0{m_bits}b") if m_bits else ""
    return Fields(fmt, code, sign, format(e, f"0{e_bits}b"), mantissa, kind, unbiased,
                  significand, value)


def summary(formats=tuple(FLOAT_FORMATS.values())):
    """A table of the formats' layouts and limits, as numpy.finfo and ml_dtypes.finfo give them."""
    rows = []
    for fmt in map(as_format, formats):
        rows.append({"format": fmt.name, "bits": fmt.bits, "E": fmt.exp_bits, "M": fmt.man_bits,
                     "bias": fmt.bias, "max": fmt.max, "smallest normal": fmt.smallest_normal,
                     "smallest subnormal": fmt.smallest_subnormal, "eps": fmt.eps,
                     "inf": fmt.has_inf, "NaN": fmt.has_nan})
    return Table(rows, formats={k: ".4g" for k in ("max", "smallest normal", "smallest subnormal",
                                                   "eps")})
