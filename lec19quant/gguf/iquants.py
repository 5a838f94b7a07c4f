"""llama.cpp's non-linear 4-bit formats IQ4_NL and IQ4_XS, byte for byte.

A 4-bit code indexes a codebook of 16 levels that are not evenly spaced (ggml's kvalues_iq4nl,
denser near zero, where most weights are), scaled per block of 32: x ≈ d·v[q].

    IQ4_NL: blocks of 32, one fp16 d                                  4.5 bits per weight
    IQ4_XS: super-blocks of 256: fp16 d and eight 6-bit sub-block scales s_j,
            x ≈ (d·(s_j − 32))·v[q]                                   4.25 bits per weight

The scale of each block of 32 maximizes (Σw·v·x)² / Σw·v², the weighted least-squares fit, over
15 trial scales (`fit_codebook`); w is x² without an importance matrix and qw·sqrt(σ² + x²)
with one (σ² = 2·Σx²/n over the (super-)block). The codes are then the nearest levels to
x / scale (`nearest_level`, ggml's best_index_int8). Both formats register in
`blocks.FORMATS`, so `quantize(x, "IQ4_XS", imatrix=...)` and `dequantize` take them.
"""
import numpy as np
import torch

from .blocks import FORMATS, QK_K, BlockFormat, _block_rows, _byte_words, _columns, _half
from .blocks import _half_words, _low_high, _nibbles, _sub_block_weights, sum_squares
from .scales import F32, GROUP_MAX_EPS, nearest_int, sequential_sum, signed_absmax

#: ggml's kvalues_iq4nl: the 16 levels of IQ4_NL and IQ4_XS (ggml-common.h)
LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=F32)
_LEVELS_T = torch.from_numpy(LEVELS)
N_TRY = 7  # ggml_quantize_chunk tries the 2·7 + 1 scales (k − 127)/max, k = −7..7


# For v in [k, k + 1) the levels ≤ v are those ≤ k (they are integers): tables over k = −128..114
# of the index of the first level above v (clamped to 1..15) and of the levels around it.
_UPPER = np.clip(np.searchsorted(LEVELS, np.arange(-128, 115), side="right"), 1, 15)
_BELOW, _ABOVE = LEVELS[_UPPER - 1], LEVELS[_UPPER]


def nearest_level(v: np.ndarray) -> np.ndarray:
    """best_index_int8: the index of the level nearest to v (ties go up; below the first
    level 0, above the last 15; NaN 15), as int."""
    k = np.floor(v)
    k = np.fmax(np.fmin(k, F32(114), out=k), F32(-128), out=k).astype(np.intp) + 128  # fmin: NaN → 114
    with np.errstate(invalid="ignore"):
        return _UPPER[k] - (v - _BELOW[k] < _ABOVE[k] - v)


def fit_codebook(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The scale d of each column of x (32, m) (x ≈ d·v[q]): the weighted least-squares scale
    of the codes for 1/d = −127/max, then of those for 1/d = (k − 127)/max, k = −7..7, keeping
    the largest (Σw·v·x)² / Σw·v². A column with max |x| < 1e-15 gets 0."""
    big = signed_absmax(x)
    zero = np.abs(big) < GROUP_MAX_EPS

    def sums(inverse):
        v = LEVELS[nearest_level(inverse * x)]
        wv = w * v
        return sequential_sum(wv * x), sequential_sum(wv * v)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        sumqx, sumq2 = sums(F32(1) / (-big / LEVELS[0]))
        d = np.where(sumq2 > 0, sumqx / sumq2, F32(0))
        best = d * sumqx
        for k in range(-N_TRY, N_TRY + 1):
            sumqx, sumq2 = sums(F32(k + LEVELS[0]) / big)
            better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            d = np.where(better, sumqx / sumq2, d)
            best = np.where(better, d * sumqx, best)
    return np.where(zero, F32(0), d)


def _reciprocal_or_zero(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d != 0, F32(1) / np.where(d != 0, d, F32(1)), F32(0))


def _weights(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """The search weights in columns of 32: x², or qw·sqrt(σ² + x²) with σ² = 2·Σx²/n over
    each block (row) of x (b, n)."""
    if qw is None:
        cols = _columns(x, 32)
        return cols * cols
    return _sub_block_weights(x, qw, 32, sum_squares(x) * F32(2 / x.shape[1]))[0]


def _pack_codes(q: np.ndarray) -> np.ndarray:
    """Codes in columns (32, n) → 16 bytes per column, code j low and code j + 16 high: (8, n) words."""
    return _byte_words(_nibbles(q[:16], q[16:]))


class IQ4_NL(BlockFormat):
    """Blocks of 32: d = the `fit_codebook` scale (fp16), q = nearest level to x/d (with the
    float32 d). Bytes (18): d (fp16), 16 bytes of two codes (j low, j + 16 high)."""

    name, block_size, type_size, fields = "IQ4_NL", 32, 18, ("d", "codes")

    def quantize_blocks(self, x, qw=None, sigma2=None):
        d = fit_codebook(_columns(x, 32), _weights(x, qw))
        with np.errstate(over="ignore", invalid="ignore"):
            q = nearest_level(_reciprocal_or_zero(d) * _columns(x, 32))
        return _block_rows(_half_words(d), _pack_codes(q))

    def unpack(self, raw):
        return {"d": _half(raw, 0), "codes": torch.cat(_low_high(raw[:, 2:]), dim=1)}

    def dequantize_blocks(self, raw):
        f = self.unpack(raw)
        return f["d"] * _LEVELS_T.to(raw.device)[f["codes"].long()]


class IQ4_XS(BlockFormat):
    """Super-blocks of 256 in 8 blocks of 32, each fitted by `fit_codebook`; d = −max/32 with
    max the block scale of largest magnitude (signed), s_j = clamp(round(scale_j/d), −32, 31) + 32
    (6 bits), q = nearest level to x/(d·(s_j − 32)) (float32 d).

    Bytes (136): d (fp16), scales_h (uint16: bits 2j, 2j + 1 are the top bits of s_j),
    scales_l (4 bytes: the low nibble of s_j in byte j/2, low then high), 8 × 16 bytes of codes
    laid out as IQ4_NL's."""

    name, block_size, type_size, fields = "IQ4_XS", QK_K, 136, ("d", "scales", "codes")

    def quantize_blocks(self, x, qw=None, sigma2=None):
        b = x.shape[0]
        cols = _columns(x, 32)
        scale = fit_codebook(cols, _weights(x, qw)).reshape(b, 8)
        d = -signed_absmax(scale, axis=1) / F32(32)
        with np.errstate(over="ignore", invalid="ignore"):
            ls = np.clip(nearest_int(_reciprocal_or_zero(d)[:, None] * scale), -32, 31)
            q = nearest_level(_reciprocal_or_zero(d[:, None] * ls.astype(F32)).reshape(-1) * cols)
        ls = (ls + 32).astype(np.uint16)
        scales_h = ((ls >> 4) << (2 * np.arange(8, dtype=np.uint16))).sum(axis=1, dtype=np.uint16)
        scales_l = _nibbles(ls[:, 0::2], ls[:, 1::2])  # (b, 4)
        codes = _pack_codes(q).reshape(8, b, 8).transpose(1, 2, 0).reshape(b, 64).T  # the 8 blocks in order
        return _block_rows(_half_words(d), scales_h[None], _byte_words(scales_l.T), codes)

    def unpack(self, raw):
        s = raw[:, 2:4].clone().view(torch.int16).int() & 0xFFFF  # scales_h
        top = (s >> (2 * torch.arange(8, device=raw.device))) & 3
        low = torch.stack(_low_high(raw[:, 4:8]), dim=2).reshape(-1, 8).int()
        codes = torch.cat(_low_high(raw[:, 8:].reshape(-1, 8, 16)), dim=2)
        return {"d": _half(raw, 0), "scales": low | (top << 4), "codes": codes}

    def dequantize_blocks(self, raw):
        f = self.unpack(raw)
        dl = f["d"] * (f["scales"] - 32).float()
        return (dl[..., None] * _LEVELS_T.to(raw.device)[f["codes"].long()]).reshape(-1, QK_K)


for _format in (IQ4_NL(), IQ4_XS()):
    FORMATS[_format.name] = _format
