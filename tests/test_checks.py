"""Assignment checks: a correct student function passes, a typical mistake fails with a message
that names the first wrong case."""
import math

import pytest
import torch

from lec19quant import checks, formats


def decode_e4m3(code: int) -> float:
    """A student's FP8 E4M3 decoder, written from the format's definition."""
    sign, exponent, mantissa = code >> 7, (code >> 3) & 0b1111, code & 0b111
    if exponent == 0b1111 and mantissa == 0b111:
        return math.nan
    if exponent == 0:
        value = mantissa / 8 * 2.0 ** (1 - 7)
    else:
        value = (1 + mantissa / 8) * 2.0 ** (exponent - 7)
    return -value if sign else value


E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def encode_e2m1(x: float) -> int:
    """A student's FP4 E2M1 encoder: the nearest magnitude, at a tie the even code, saturating."""
    sign = 8 if math.copysign(1, x) < 0 else 0
    a = min(abs(x), 6.0)
    return sign | min(range(8), key=lambda c: (abs(E2M1[c] - a), c & 1))


def test_correct_functions_pass():
    assert repr(checks.check_to_bits(lambda v: format(v % 256, "08b"))) == \
        "✓ check_to_bits: all 256 values right"
    assert repr(checks.check_from_bits(lambda p: int(p, 2) - 256 * (p[0] == "1"))) == \
        "✓ check_from_bits: all 256 patterns right"
    assert repr(checks.check_decode(decode_e4m3, formats.FP8_E4M3)) == \
        "✓ check_decode(FP8_E4M3): all 256 codes right"
    assert checks.check_encode(encode_e2m1, formats.FP4_E2M1).message.startswith(
        "✓ check_encode(FP4_E2M1): all")


@pytest.mark.parametrize("name", ["FP16", "BF16", "FP8_E4M3", "FP8_E5M2", "FP6_E2M3", "FP6_E3M2",
                                  "FP4_E2M1", "E8M0"])
def test_the_reference_passes_its_own_checks(name):
    fmt = formats.FLOAT_FORMATS[name]
    checks.check_decode(formats.decode(torch.arange(2**fmt.bits), fmt).tolist().__getitem__, fmt)
    x = checks.encode_cases(fmt)
    codes = {(v, math.copysign(1, v)): c for v, c in zip(x.tolist(), formats.encode(x, fmt).tolist())}
    checks.check_encode(lambda v: formats.encode(v, fmt).item() if math.isnan(v)
                        else codes[v, math.copysign(1, v)], fmt)


def test_sign_magnitude_is_not_twos_complement():
    with pytest.raises(checks.CheckFailed, match=r"✗ check_to_bits: 127 of 256 values wrong; the "
                       r"first: value -127, expected '10000001', got '01111111'"):
        checks.check_to_bits(lambda v: format(abs(v), "08b"))
    with pytest.raises(checks.CheckFailed, match="128 of 256 patterns wrong"):
        checks.check_from_bits(lambda p: int(p, 2))


def test_a_decoder_without_subnormals_fails_on_the_first_one():
    def no_subnormals(code):
        return decode_e4m3(code) if code & 0b01111000 else (1 + (code & 7) / 8) * 2.0**-7

    with pytest.raises(checks.CheckFailed, match=r"16 of 256 codes wrong; the first: code 0 "
                       r"\(0 0000 000\), expected 0.0, got 0.0078125"):
        checks.check_decode(no_subnormals, formats.FP8_E4M3)


def test_signs_of_zero_and_nans_count():
    with pytest.raises(checks.CheckFailed, match=r"code 128 \(1 0000 000\), expected -0.0, got 0.0"):
        checks.check_decode(lambda c: decode_e4m3(c) + 0.0, formats.FP8_E4M3)
    with pytest.raises(checks.CheckFailed, match=r"code 127 \(0 1111 111\), expected nan, got 480.0"):
        checks.check_decode(lambda c: (1 + (c & 7) / 8) * 2.0 ** ((c >> 3 & 15) - 7)
                            if c & 127 == 127 else decode_e4m3(c), formats.FP8_E4M3)


def test_rounding_ties_away_from_zero_fails_on_a_tie():
    def ties_up(x):
        a = min(abs(x), 6.0)
        return (8 if math.copysign(1, x) < 0 else 0) | min(range(8), key=lambda c: (abs(E2M1[c] - a), -c))

    with pytest.raises(checks.CheckFailed, match=r"the first: x = -5.0, expected 14, got 15"):
        checks.check_encode(ties_up, formats.FP4_E2M1)


def test_any_nan_code_is_a_nan():
    def torch_e5m2(x):
        return torch.tensor([x]).to(torch.float8_e5m2).view(torch.uint8).item()

    assert torch_e5m2(math.nan) == 0x7F != formats.encode(math.nan, formats.FP8_E5M2).item()
    checks.check_encode(torch_e5m2, formats.FP8_E5M2)


def test_an_exception_is_a_wrong_answer():
    with pytest.raises(checks.CheckFailed, match=r"code 0 \(0 0000 000\), expected 0.0, got "
                       r"'ZeroDivisionError: division by zero'"):
        checks.check_decode(lambda c: 1 / c, formats.FP8_E4M3)


def test_check_codebook():
    positive = torch.special.ndtri(torch.linspace(formats.NF4_OFFSET, 0.5, 9)[:-1].double()).float()
    negative = -torch.special.ndtri(torch.linspace(formats.NF4_OFFSET, 0.5, 8)[:-1].double()).float()
    table = torch.cat([negative, torch.zeros(1), positive]).sort().values
    assert checks.check_codebook(table / table.max()).message == \
        "✓ check_codebook(NF4): all 16 values right"
    wrong = list(formats.NF4.table)
    wrong[3] += 1e-6
    with pytest.raises(checks.CheckFailed, match="1 of 16 values wrong; the first: code 3"):
        checks.check_codebook(wrong)
    with pytest.raises(checks.CheckFailed, match="expected 16 values, got 15"):
        checks.check_codebook(wrong[:15])


def test_bad_arguments():
    with pytest.raises(TypeError, match="takes your function"):
        checks.check_to_bits("01010110")
    with pytest.raises(ValueError, match="at most 16 bits"):
        checks.check_decode(float, formats.FP32)
    with pytest.raises(ValueError, match="at most 16 bits"):
        checks.check_encode(int, formats.NF4)
