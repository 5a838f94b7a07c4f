"""Number formats against the implementations people deploy: numpy and ml_dtypes for every float
format, torch's own casts, bitsandbytes' 4-bit tables; every code where a format has at most 2^16,
and over a million random and adversarial float32 inputs per format otherwise."""
import math

import matplotlib
import numpy as np
import pytest
import torch

from lec19quant import formats as F

matplotlib.use("Agg")
ml_dtypes = pytest.importorskip("ml_dtypes")

# The numpy dtype that each named format is the same as (bit for bit, decode and encode).
ORACLES = {
    "FP32": np.float32, "FP16": np.float16, "BF16": ml_dtypes.bfloat16,
    "FP8_E4M3": ml_dtypes.float8_e4m3fn, "FP8_E5M2": ml_dtypes.float8_e5m2,
    "FP6_E2M3": ml_dtypes.float6_e2m3fn, "FP6_E3M2": ml_dtypes.float6_e3m2fn,
    "FP4_E2M1": ml_dtypes.float4_e2m1fn, "E8M0": ml_dtypes.float8_e8m0fnu,
}
# Formats that no name here covers, to test the general codec: ml_dtypes' IEEE-like FP8s.
GENERIC = {"E3M4": (F.FloatFormat(3, 4), ml_dtypes.float8_e3m4),
           "E4M3 (IEEE)": (F.FloatFormat(4, 3), ml_dtypes.float8_e4m3)}
SMALL = [name for name in ORACLES if F.FLOAT_FORMATS[name].bits <= 16]
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32}


def oracle_codes(x: np.ndarray, dtype) -> np.ndarray:
    """numpy's / ml_dtypes' codes for float32 x (round to nearest, ties to even)."""
    with np.errstate(over="ignore", invalid="ignore"):
        y = x.astype(dtype)
    return y.view(UINT[y.itemsize]).astype(np.int64)


def oracle_decode(codes: np.ndarray, dtype) -> np.ndarray:
    return codes.astype(UINT[np.dtype(dtype).itemsize]).view(dtype).astype(np.float32)


def version_of(module) -> tuple[int, int]:
    """(major, minor) of an installed module: the oracles' behaviour changed between versions."""
    return tuple(int(part) for part in module.__version__.split(".")[:2])


def ours(x: np.ndarray, fmt, **kw) -> np.ndarray:
    return F.encode(torch.from_numpy(x), fmt, **kw).numpy().astype(np.int64)


def same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit, except that any NaN equals any NaN."""
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and
                np.array_equal(a[~nan].view(np.uint32), b[~nan].view(np.uint32)))


def adversarial(fmt: F.FloatFormat, n_random: int = 520_000, seed: int = 0) -> np.ndarray:
    """float32 inputs that catch rounding mistakes: every value of the format (at most 16 bits),
    the midpoints between neighbours (ties, including the one past the largest value) and the
    float32 numbers either side of them, signed zeros, ±inf, NaNs with and without payloads,
    float32's extremes and subnormals; then random bit patterns (every exponent) and random
    values spread over the format's own exponent range (those past float32's range become inf)."""
    with np.errstate(over="ignore"):
        return _adversarial(fmt, n_random, np.random.default_rng(seed))


def _adversarial(fmt: F.FloatFormat, n_random: int, rng: np.random.Generator) -> np.ndarray:
    parts = [np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1.0, -1.0], np.float32),
             np.array([0x7F800001, 0xFFC00001, 0x7FFFFFFF, 0x00000001, 0x807FFFFF, 0x00800000,
                       0x7F7FFFFF, 0xFF7FFFFF], np.uint32).view(np.float32)]
    if fmt.bits <= 16:
        v = F.values(fmt).double().numpy()
        step_past_max = math.ldexp(1.0, fmt.max_exponent - fmt.man_bits)
        v = np.concatenate([v, [fmt.max + step_past_max]])
        v = np.concatenate([v, -v])
        v.sort()
        ties = ((v[1:] + v[:-1]) / 2).astype(np.float32)  # exact: one more bit than the format
        grid = np.concatenate([v.astype(np.float32), ties])
        parts += [grid, np.nextafter(grid, np.float32(np.inf)), np.nextafter(grid, np.float32(-np.inf))]
    parts.append(rng.integers(0, 2**32, n_random, dtype=np.uint64).astype(np.uint32).view(np.float32))
    log2_smallest = math.log2(fmt.smallest_subnormal)
    exponents = rng.uniform(log2_smallest - 2, fmt.max_exponent + 2, n_random)
    signs = rng.choice([-1.0, 1.0], n_random)
    parts.append((signs * np.exp2(exponents)).astype(np.float32))
    return np.concatenate(parts)


# --- integers -------------------------------------------------------------------------------


def test_the_lectures_byte():
    assert F.from_bits("01010110", signed=False) == 86
    assert F.to_bits(86, 8, signed=False) == "01010110"
    assert F.from_bits("0101 0110") == 86
    assert F.to_bits(-86, 8) == "10101010"  # 256 − 86 = 170


@pytest.mark.parametrize("bits", [4, 8])
def test_every_small_integer_matches_numpy_twos_complement(bits):
    lo, hi = F.int_range(bits, signed=True)
    assert (lo, hi) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert F.int_range(bits, signed=False) == (0, 2**bits - 1)
    for v in range(lo, hi + 1):
        stored = int(np.array(v, np.int8).view(np.uint8)) & (2**bits - 1)
        assert F.to_bits(v, bits) == format(stored, f"0{bits}b")
        assert F.from_bits(F.to_bits(v, bits)) == v
    for v in range(2**bits):
        assert F.from_bits(F.to_bits(v, bits, signed=False), signed=False) == v


def test_int_range_matches_torch_iinfo():
    for bits, dtype in [(8, torch.int8), (16, torch.int16), (32, torch.int32), (64, torch.int64)]:
        info = torch.iinfo(dtype)
        assert F.int_range(bits) == (info.min, info.max)
    assert F.int_range(8, signed=False) == (0, torch.iinfo(torch.uint8).max)


def test_overflow_is_an_error_unless_wrapping_which_matches_torch():
    with pytest.raises(ValueError, match=r"200 does not fit in 8 bits signed \[-128, 127\]"):
        F.to_bits(200, 8)
    with pytest.raises(ValueError, match="does not fit in 8 bits unsigned"):
        F.to_bits(-1, 8, signed=False)
    values = torch.arange(-300, 301)
    wrapped = values.to(torch.int8).tolist()
    for v, w in zip(values.tolist(), wrapped):
        assert F.from_bits(F.to_bits(v, 8, wrap=True)) == w


def test_integer_bad_inputs():
    with pytest.raises(TypeError, match="value must be an int"):
        F.to_bits(1.0, 8)
    with pytest.raises(TypeError, match="value must be an int"):
        F.to_bits(True, 8)
    with pytest.raises(ValueError, match="bits must be an int from 1 to 64"):
        F.int_range(0)
    with pytest.raises(ValueError, match="string of 0s and 1s"):
        F.from_bits("0102")
    with pytest.raises(ValueError, match="string of 0s and 1s"):
        F.from_bits("")
    with pytest.raises(TypeError, match="pattern must be a string"):
        F.from_bits(101)


# --- the formats' definitions ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(ORACLES))
def test_limits_match_finfo(name):
    fmt, info = F.FLOAT_FORMATS[name], ml_dtypes.finfo(ORACLES[name])
    assert fmt.bits == info.bits
    assert fmt.max == float(info.max)
    assert fmt.smallest_normal == float(info.smallest_normal)
    assert fmt.smallest_subnormal == float(info.smallest_subnormal)
    assert fmt.eps == float(info.eps)


def test_limits_match_torch_finfo():
    for fmt, dtype in [(F.FP32, torch.float32), (F.FP16, torch.float16), (F.BF16, torch.bfloat16),
                       (F.FP8_E4M3, torch.float8_e4m3fn), (F.FP8_E5M2, torch.float8_e5m2)]:
        info = torch.finfo(dtype)
        assert (fmt.max, fmt.smallest_normal, fmt.eps) == (info.max, info.smallest_normal, info.eps)


def test_summary_table():
    table = F.summary()
    assert [row[0] for row in table.cells] == list(F.FLOAT_FORMATS)
    row = dict(zip(table.columns, table.cells[list(F.FLOAT_FORMATS).index("FP8_E4M3")]))
    assert (row["max"], row["inf"], row["NaN"], row["bias"]) == ("448", "no", "yes", "7")


def test_bad_formats_are_rejected():
    with pytest.raises(ValueError, match="specials must be one of"):
        F.FloatFormat(4, 3, specials="fnuz")
    with pytest.raises(ValueError, match="overflow='inf' needs a format with inf"):
        F.FloatFormat(4, 3, specials="fn", overflow="inf")
    with pytest.raises(ValueError, match="overflow='nan' needs a format with nan"):
        F.FloatFormat(2, 1, specials="none", overflow="nan")
    with pytest.raises(ValueError, match="overflow must be one of"):
        F.FloatFormat(4, 3, overflow="clip")
    with pytest.raises(ValueError, match="'ieee' specials need"):
        F.FloatFormat(4, 0)
    with pytest.raises(ValueError, match="must all be float32 values"):
        F.FloatFormat(8, 24)
    with pytest.raises(ValueError, match="must all be float32 values"):
        F.FloatFormat(9, 2)
    with pytest.raises(ValueError, match="exp_bits must be an int"):
        F.FloatFormat(0, 3)
    with pytest.raises(ValueError, match="unknown format 'FP3'"):
        F.encode(1.0, "FP3")
    with pytest.raises(TypeError, match="fmt must be a FloatFormat"):
        F.encode(1.0, torch.float16)


# --- decode: every code ---------------------------------------------------------------------


@pytest.mark.parametrize("name", SMALL)
def test_decode_every_code_matches_ml_dtypes(name):
    fmt = F.FLOAT_FORMATS[name]
    codes = np.arange(2**fmt.bits)
    assert same_floats(F.decode(torch.from_numpy(codes), fmt).numpy(),
                       oracle_decode(codes, ORACLES[name]))


@pytest.mark.parametrize("name", list(GENERIC))
def test_decode_every_code_of_other_formats(name):
    fmt, dtype = GENERIC[name]
    codes = np.arange(256)
    assert same_floats(F.decode(torch.from_numpy(codes), fmt).numpy(), oracle_decode(codes, dtype))


@pytest.mark.parametrize("fmt, dtype", [(F.FP16, torch.float16), (F.BF16, torch.bfloat16)])
def test_decode_every_16_bit_code_matches_torch(fmt, dtype):
    codes = torch.arange(2**16, dtype=torch.int32)
    reference = codes.to(torch.int16).view(dtype).float()  # int32 → int16 keeps the low 16 bits
    assert same_floats(F.decode(codes, fmt).numpy(), reference.numpy())


def test_decode_fp32_every_class():
    rng = np.random.default_rng(1)
    mantissas = rng.integers(0, 2**23, 20_000)
    classes = [mantissas * 0, mantissas,  # zero and subnormals
               (rng.integers(1, 255, 20_000) << 23) | mantissas,  # normals
               np.full(1, 255 << 23), (255 << 23) | (mantissas | 1)]  # inf and NaNs
    codes = np.concatenate([np.concatenate([c, c | 1 << 31]) for c in classes]).astype(np.int64)
    assert same_floats(F.decode(torch.from_numpy(codes), F.FP32).numpy(),
                       codes.astype(np.uint32).view(np.float32))


def test_decode_takes_codes_in_range():
    assert F.decode(torch.tensor([0x3C00], dtype=torch.int32), F.FP16).item() == 1.0
    assert F.decode([0x7E, 0xFE], F.FP8_E4M3).tolist() == [448.0, -448.0]
    with pytest.raises(ValueError, match=r"codes of FP16 lie in \[0, 65536\).*mask with & 65535"):
        F.decode(torch.tensor([-1], dtype=torch.int16), F.FP16)
    with pytest.raises(TypeError, match="codes must be an integer tensor"):
        F.decode(torch.tensor([1.0]), F.FP16)
    assert F.decode(torch.zeros(0, 3, dtype=torch.uint8), F.FP8_E4M3).shape == (0, 3)


# --- encode: a million inputs per format ----------------------------------------------------


def compare_encode(fmt, dtype, x):
    """Our codes against the oracle's on x; NaN inputs to formats without NaN are left out (they
    are a ValueError here, see below)."""
    if not fmt.has_nan:
        x = x[~np.isnan(x)]
    assert x.size >= 10**6
    got, want = ours(x, fmt), oracle_codes(x, dtype)
    wrong = np.flatnonzero(got != want)
    assert wrong.size == 0, (f"{wrong.size} inputs differ, e.g. x={x[wrong[:5]]!r}: "
                             f"ours {got[wrong[:5]]}, oracle {want[wrong[:5]]}")


@pytest.mark.parametrize("name", ["BF16", "FP8_E4M3", "FP8_E5M2", "FP6_E2M3", "FP6_E3M2", "FP4_E2M1"])
def test_encode_matches_ml_dtypes(name):
    fmt = F.FLOAT_FORMATS[name]
    compare_encode(fmt, ORACLES[name], adversarial(fmt))


@pytest.mark.parametrize("name", list(GENERIC))
def test_encode_matches_ml_dtypes_for_other_formats(name):
    fmt, dtype = GENERIC[name]
    compare_encode(fmt, dtype, adversarial(fmt))


def test_encode_e8m0_matches_ml_dtypes_and_float32_subnormals_go_to_the_nearest():
    """A float32 subnormal x in (2^−127, 1.5·2^−127) is nearer to 2^−127 (code 0) than to 2^−126
    (code 1), and encode gives code 0. ml_dtypes 0.7 does too; 0.6 (and torch, 2.11 to 2.13)
    round these up to code 1. Which ml_dtypes is installed decides what it is compared with."""
    x = adversarial(F.E8M0)
    low, high = np.float32(2.0**-127), np.float32(1.5 * 2.0**-127)
    deviation = (x > low) & (x < high)
    sub = np.concatenate([x[deviation], np.nextafter([low], np.float32(1)),
                          np.nextafter([high], np.float32(0))])
    assert sub.size > 2 and (np.abs(sub - 2.0**-127) < np.abs(sub - 2.0**-126)).all()
    assert (ours(sub, F.E8M0) == 0).all()
    assert torch.tensor(sub).to(torch.float8_e8m0fnu).view(torch.uint8).eq(1).all()
    if version_of(ml_dtypes) >= (0, 7):
        compare_encode(F.E8M0, ORACLES["E8M0"], x)
        assert (oracle_codes(sub, ORACLES["E8M0"]) == 0).all()
    else:
        compare_encode(F.E8M0, ORACLES["E8M0"], x[~deviation])
        assert (oracle_codes(sub, ORACLES["E8M0"]) == 1).all()


def test_e8m0_rounds_ties_up_and_has_no_zero():
    x = torch.tensor([1.0, 1.5, 3.0, 0.75, 1.4, 2.0**-140, 0.0, -0.0, -1.0, 2.0**127, 1.5 * 2.0**127,
                      float("inf"), float("nan")])
    # Ties: the significands are 1 (odd) and 2 (even), so ties to even means up, as in ml_dtypes.
    assert F.encode(x, F.E8M0).tolist() == [127, 128, 129, 127, 127, 0, 255, 255, 255, 254, 255,
                                            255, 255]


@pytest.mark.parametrize("fmt, dtype", [(F.FP16, np.float16), (F.FP32, np.float32)])
def test_encode_fp16_fp32_match_numpy_and_nans_are_canonical(fmt, dtype):
    """numpy keeps (part of) a NaN's payload; encode writes the quiet NaN, sign kept, as ml_dtypes
    does for BF16 and FP8."""
    x = adversarial(fmt)
    nan = np.isnan(x)
    compare_encode(fmt, dtype, x[~nan])
    sign = np.signbit(x[nan]).astype(np.int64) << (fmt.bits - 1)
    assert np.array_equal(ours(x[nan], fmt), sign | fmt.nan_code)


def test_encode_fp32_round_trips_every_bit_pattern_class():
    x = adversarial(F.FP32)
    back = F.decode(F.encode(torch.from_numpy(x), F.FP32), F.FP32).numpy()
    assert same_floats(back, x)
    assert np.array_equal(np.signbit(back), np.signbit(x))  # −0, −inf and −NaN keep their sign


def test_bf16_encode_matches_torch_on_a_million_inputs():
    torch.manual_seed(0)
    x = torch.randn(10**6) * torch.exp2(torch.randint(-140, 128, (10**6,)).float())
    x = torch.cat([x, torch.randint(-(2**31), 2**31, (10**6,), dtype=torch.int32).view(torch.float32)])
    x = x[~torch.isnan(x)]
    assert x.numel() > 10**6
    want = x.to(torch.bfloat16).view(torch.int16).to(torch.int32) & 0xFFFF
    assert torch.equal(F.encode(x, F.BF16), want)


def test_bf16_to_fp32_is_a_shift():
    codes = torch.arange(2**16, dtype=torch.int32)
    finite = torch.isfinite(F.decode(codes, F.BF16))
    assert torch.equal(F.encode(F.decode(codes, F.BF16), F.FP32)[finite], (codes.long() << 16)[finite])


def test_the_general_formula_agrees_with_the_bit_rounding_of_bf16_and_fp32():
    x = torch.from_numpy(adversarial(F.BF16, n_random=100_000))
    for fmt in (F.BF16, F.FP32):
        assert torch.equal(F._encode_binades(x, fmt, "inf"), F._encode_float32_bits(x, fmt))


def test_e4m3_overflow_nan_or_saturate_like_the_installed_torch():
    """torch's float32 → float8_e4m3fn turns overflow (|x| > 464, ±inf) into NaN up to 2.12, like
    ml_dtypes, and saturates to ±448 from 2.13 (pytorch/pytorch#178817)."""
    x = adversarial(F.FP8_E4M3)
    got = ours(x, F.FP8_E4M3, overflow="saturate" if version_of(torch) >= (2, 13) else "nan")
    want = torch.from_numpy(x).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    assert np.array_equal(got, want)
    edge = torch.tensor([448.0, 464.0, 464.01, 1e9, float("inf"), -float("inf")])
    assert F.encode(edge, F.FP8_E4M3).tolist() == [126, 126, 127, 127, 127, 255]
    assert F.encode(edge, F.FP8_E4M3, overflow="saturate").tolist() == [126, 126, 126, 126, 126, 254]


def test_e5m2_matches_torch_except_for_the_nan_it_writes():
    x = adversarial(F.FP8_E5M2)
    x = x[~np.isnan(x)]
    want = torch.from_numpy(x).to(torch.float8_e5m2).view(torch.uint8).numpy()
    assert np.array_equal(ours(x, F.FP8_E5M2), want)
    assert F.encode(float("nan"), F.FP8_E5M2).item() == 0x7E  # torch writes 0x7F, also a NaN


def test_ieee_overflow_can_saturate_and_inf_stays_inf():
    x = torch.tensor([1e6, -1e6, float("inf"), 65519.0, 65520.0])
    assert F.encode(x, F.FP16).tolist() == [0x7C00, 0xFC00, 0x7C00, 0x7BFF, 0x7C00]
    assert F.encode(x, F.FP16, overflow="saturate").tolist() == [0x7BFF, 0xFBFF, 0x7C00, 0x7BFF, 0x7BFF]


def test_large_inputs_are_encoded_in_chunks_with_the_same_result():
    torch.manual_seed(0)
    x = torch.randn(3, F.CHUNK + 5) * 100
    for fmt in (F.FP8_E4M3, F.BF16, F.FP4_E2M1):
        codes = F.encode(x, fmt)
        assert codes.shape == x.shape
        assert torch.equal(codes[:, -9:], F.encode(x[:, -9:], fmt))
    x[2, -1] = torch.nan
    with pytest.raises(ValueError, match="x holds NaN"):
        F.encode(x, F.FP4_E2M1)


def test_nan_in_a_format_without_nan_is_an_error():
    """ml_dtypes stores NaN as ±0 in FP4 and FP6 (with the sign flipped); here it is refused."""
    assert oracle_codes(np.array([np.nan], np.float32), ml_dtypes.float4_e2m1fn)[0] in (0, 8)
    for fmt in (F.FP4_E2M1, F.FP6_E2M3, F.FP6_E3M2):
        with pytest.raises(ValueError, match=f"x holds NaN, which {fmt.name} cannot represent"):
            F.encode(torch.tensor([1.0, float("nan")]), fmt)
    assert F.encode(torch.tensor([float("inf"), -float("inf")]), F.FP4_E2M1).tolist() == [7, 15]


def test_unsigned_format_without_nan_refuses_negatives_and_zero():
    unsigned = F.FloatFormat(4, 3, specials="none", signed=False, subnormals=False)
    assert F.encode(torch.tensor([1.0, 2.0**-9]), unsigned).tolist() == [7 << 3, 0]
    with pytest.raises(ValueError, match="x holds zero and negative numbers, which E4M3"):
        F.encode(torch.tensor([0.0, -1.0]), unsigned)


def test_encode_inputs_shapes_and_dtypes():
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    assert F.encode(x, F.FP8_E4M3).shape == (2, 2) and F.encode(x, F.FP8_E4M3).dtype == torch.uint8
    assert F.encode(x, F.FP16).dtype == torch.int32 and F.encode(x, F.FP32).dtype == torch.int64
    assert torch.equal(F.encode(x.half(), F.FP8_E4M3), F.encode(x, F.FP8_E4M3))
    assert torch.equal(F.encode(x.bfloat16(), F.FP4_E2M1), F.encode(x, F.FP4_E2M1))
    assert F.encode(5.5, F.FP32).item() == 0x40B00000
    for fmt in (F.FP8_E4M3, F.BF16):
        assert torch.equal(F.encode(x.t(), fmt), F.encode(x.t().contiguous(), fmt))
    assert F.encode([], F.FP8_E4M3).shape == (0,)
    with pytest.raises(TypeError, match="float64 tensor would be rounded twice"):
        F.encode(x.double(), F.FP16)
    with pytest.raises(TypeError, match="got torch.int64"):
        F.encode(torch.tensor([1]), F.FP16)


@pytest.mark.parametrize("name", ["FP8_E4M3", "FP8_E5M2", "FP6_E2M3", "FP4_E2M1", "E8M0", "FP16"])
def test_round_to_returns_the_nearest_value(name):
    fmt = F.FLOAT_FORMATS[name]
    x = torch.from_numpy(adversarial(fmt, n_random=20_000))
    x = x[torch.isfinite(x) & (x.abs() <= fmt.max)]
    if not fmt.signed:
        x = x[x > 0]
    grid = F.values(fmt).double()
    x = x.double()
    above = torch.searchsorted(grid, x).clamp(max=grid.numel() - 1)
    below = (above - 1).clamp(min=0)
    nearest = torch.minimum((x - grid[below]).abs(), (x - grid[above]).abs())
    assert torch.equal((x - F.round_to(x.float(), fmt).double()).abs(), nearest)


def test_values_lists_every_finite_value():
    assert F.values(F.FP4_E2M1).tolist() == [-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6]
    for name in SMALL:
        fmt = F.FLOAT_FORMATS[name]
        every = oracle_decode(np.arange(2**fmt.bits), ORACLES[name])
        assert np.array_equal(F.values(fmt).numpy(), np.unique(every[np.isfinite(every)] + 0.0))
    assert len(F.values(F.FP8_E4M3)) == 253  # 256 codes, less 2 NaNs, −0 and 0 together
    with pytest.raises(ValueError, match="at most 16 bits"):
        F.values(F.FP32)


# --- fields ---------------------------------------------------------------------------------


def test_the_lectures_float():
    f = F.fields(5.5, F.FP32)
    assert (f.sign, f.exponent, f.mantissa) == (0, "10000001", "011" + "0" * 20)
    assert (f.unbiased, f.significand, f.value, f.kind) == (2, 1.375, 5.5, "normal")
    assert str(f) == "FP32: 0 10000001 01100000000000000000000 = +1.375 × 2^2 = 5.5"


def test_fields_of_special_and_small_values():
    assert str(F.fields(2.0**-9, F.FP8_E4M3)) == "FP8_E4M3: 0 0000 001 = +0.125 × 2^-6 = 0.001953125"
    assert F.fields(2.0**-9, F.FP8_E4M3).kind == "subnormal"
    assert F.fields(-0.0, F.FP16).kind == "zero" and F.fields(-0.0, F.FP16).sign == 1
    assert str(F.fields(1e9, F.FP16)) == "FP16: 0 11111 0000000000 = inf"
    assert F.fields(1e9, F.FP8_E4M3).kind == "nan"
    assert F.fields(1e9, F.FP8_E4M3, overflow="saturate").value == 448.0
    assert str(F.fields(0.4, F.E8M0)) == "E8M0: 01111110 = +1.0 × 2^-1 = 0.5"
    assert str(F.fields(torch.tensor(-3.0), "FP4_E2M1")) == "FP4_E2M1: 1 10 1 = −1.5 × 2^1 = -3.0"
    with pytest.raises(ValueError, match="one number"):
        F.fields(torch.ones(2), F.FP16)
    with pytest.raises(TypeError, match="codebook"):
        F.fields(0.5, F.NF4)


# --- codebooks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bnb_functional():
    import bitsandbytes.functional  # an ImportError where it is absent: deselect with -m "not bitsandbytes"

    return bitsandbytes.functional


@pytest.mark.bitsandbytes
@pytest.mark.parametrize("book, name", [(F.NF4, "nf4"), (F.BNB_FP4, "fp4")])
def test_codebooks_equal_bitsandbytes_bit_for_bit(bnb_functional, book, name):
    reference = bnb_functional.get_4bit_type(name, device="cpu")
    assert torch.equal(F.decode(torch.arange(16), book).view(torch.int32), reference.view(torch.int32))


def test_nf4_is_built_from_normal_quantiles():
    assert F.NF4.table[7] == 0.0 and F.NF4.table[0] == -1.0 and F.NF4.table[15] == 1.0
    # The positive half: Φ⁻¹ at 8 probabilities from the offset down towards 1/2, normalized.
    top = torch.special.ndtri(torch.tensor(F.NF4_OFFSET, dtype=torch.float64))
    p = torch.linspace(F.NF4_OFFSET, 0.5, 9, dtype=torch.float64)[1:-1]
    expected = (torch.special.ndtri(p) / top).flip(0)
    assert torch.allclose(torch.tensor(F.NF4.table[8:15], dtype=torch.float64), expected, atol=1e-7)
    assert abs(F.NF4_OFFSET - (1 - 1 / 30 + 1 - 1 / 32) / 2) < 1e-7
    with pytest.raises(ValueError, match="offset is a probability"):
        F.normal_float(1.0)


@pytest.mark.bitsandbytes
@pytest.mark.parametrize("book, name", [(F.NF4, "nf4"), (F.BNB_FP4, "fp4")])
def test_codebook_encode_matches_bitsandbytes_quantize_4bit(bnb_functional, book, name):
    """bitsandbytes divides each block of 64 by its absmax; a ±1 in every block makes that 1, so
    its codes are the codebook's nearest entries of x itself."""
    torch.manual_seed(0)
    x = torch.rand(64 * 500) * 2 - 1
    ordered = torch.tensor(book.table).sort().values
    ties = (ordered[1:] + ordered[:-1]) / 2
    special = torch.cat([ties, torch.nextafter(ties, torch.tensor(2.0)),
                         torch.nextafter(ties, torch.tensor(-2.0)), ordered, torch.tensor([0.0, -0.0])])
    x[1:1 + special.numel()] = special
    x[::64] = torch.where(torch.arange(500) % 2 == 0, 1.0, -1.0)
    packed, _ = bnb_functional.quantize_4bit(x, blocksize=64, quant_type=name)
    packed = packed.flatten()
    want = torch.stack([packed >> 4, packed & 15], 1).flatten()  # first element in the high nibble
    assert torch.equal(F.encode(x, book), want)


def test_codebook_encode_decode():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.05, 0.9, 2.0])
    codes = F.encode(x, "NF4")
    assert codes.tolist() == [0, 0, 7, 8, 15, 15]
    assert F.round_to(x, F.NF4).tolist() == [F.NF4.table[c] for c in codes.tolist()]
    assert F.values(F.BNB_FP4).numel() == 15  # ±0 as one
    with pytest.raises(ValueError, match="codebook has no overflow rule"):
        F.encode(x, F.NF4, overflow="saturate")
    with pytest.raises(ValueError, match="holds NaN"):
        F.encode(torch.tensor([float("nan")]), F.NF4)
    with pytest.raises(ValueError, match=r"codes of NF4 lie in \[0, 16\)"):
        F.decode([16], F.NF4)
    with pytest.raises(ValueError, match="2 to 256 entries"):
        F.Codebook("one", (1.0,))


# --- figures --------------------------------------------------------------------------------


def test_bit_layout_draws_every_bit_with_the_value():
    from lec19quant import plots

    fig = plots.bit_layout(5.5, F.FP32)
    ax = fig.axes[0]
    assert ax.get_title() == str(F.fields(5.5, F.FP32))
    bits = "".join(t.get_text() for t in ax.texts if t.get_text() in ("0", "1"))
    assert bits == "0" + "10000001" + "011" + "0" * 20
    assert len(ax.patches) == 32
    assert len(plots.bit_layout(4.0, F.E8M0).axes[0].patches) == 8


def test_value_grid_and_relative_spacing():
    from lec19quant import plots

    grids = {"FP8 E4M3": F.FP8_E4M3, "NF4": F.NF4, "INT4": torch.arange(-8, 8)}
    ax = plots.value_grid(grids).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "INT4 (16 values)", "NF4 (16 values)", "FP8 E4M3 (253 values)"]
    ticks = [line for line in ax.get_lines() if line.get_marker() == "|"]
    assert ticks[0].get_xdata().max() == 1.0 and ticks[2].get_xdata().min() == -1.0
    ax = plots.relative_spacing({"FP16": F.FP16, "INT8": torch.arange(1, 128)}).axes[0]
    fp16, int8 = ax.get_lines()
    normal = fp16.get_xdata() >= F.FP16.smallest_normal
    assert set(fp16.get_ydata()[normal]) <= {2.0**-10 / s for s in 1 + np.arange(1024) / 1024}
    assert np.allclose(int8.get_ydata(), 1 / np.arange(1, 127))
