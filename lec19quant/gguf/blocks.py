"""GGUF block formats: llama.cpp's quantized weights, byte for byte.

A row of K weights is cut into blocks; each block is stored as a few scales and small integer
codes. The legacy formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) use blocks of 32 and one fp16 scale:

    Q8_0: x ≈ d·q, q ∈ [−127, 127]          Q4_0: x ≈ d·(q − 8),  Q5_0: x ≈ d·(q − 16)
    Q4_1: x ≈ d·q + m, q ∈ [0, 15]           Q5_1: x ≈ d·q + m, q ∈ [0, 31]

The K-quants use super-blocks of 256 weights in sub-blocks of 32 or 16, whose own scales are
quantized against one fp16 super-scale:

    Q4_K, Q5_K: 8 × 32, x ≈ (d·s_j)·q − (dmin·m_j) with 6-bit s_j, m_j and 4- or 5-bit q
    Q6_K: 16 × 16, x ≈ (d·s_j)·(q − 32), 8-bit s_j, 6-bit q
    Q3_K: 16 × 16, x ≈ (d·(s_j − 32))·(q − 4), 6-bit s_j, 3-bit q
    Q2_K: 16 × 16, x ≈ (d·s_j)·q − (dmin·m_j), 4-bit s_j, m_j, 2-bit q

`quantize` gives the bytes ggml's `ggml_quantize_chunk` writes, i.e. what `llama-quantize`
stores: without an importance matrix the reference quantizers (quantize_row_*_ref), with one
(`imatrix=`, the mean x² of each column over calibration text) the weighted searches
(quantize_row_*_impl), which weight each weight's squared error by its column's importance
times sqrt(σ² + x²). `dequantize` gives the floats of ggml's to_float. Quantizing runs in numpy on the CPU, vectorized across blocks,
because exactness needs float32 sums added in order (see `scales`); dequantizing runs in torch,
on any device, with Triton kernels for Q4_K, Q6_K and IQ4_XS on a GPU.
"""
import importlib
from dataclasses import dataclass

import gguf
import numpy as np
import torch

from ..kernels import use_triton
from .scales import F32, fit_positive, fit_scale_min, fit_symmetric, nearest_int, refine_symmetric, sequential_sum
from .scales import first_extreme, signed_absmax

QK_K = 256  # weights in a K-quant super-block


# ---- bytes and C conversions (numpy side) -----------------------------------------------------

def _half_bytes(v: np.ndarray) -> np.ndarray:
    """float32 (n,) → (n, 2) bytes of IEEE fp16, little-endian, rounded to nearest even."""
    return v.astype("<f2").view(np.uint8).reshape(-1, 2)


def _through_half(v: np.ndarray) -> np.ndarray:
    """The float32 value that an fp16 store and load gives back."""
    return v.astype(np.float16).astype(F32)


def _c_int(v: np.ndarray) -> np.ndarray:
    """C's (int)v: truncated toward zero. numpy's cast is the processor's conversion, as the C
    compiler's is (on x86-64, cvttss2si: INT_MIN for NaN and values outside the int32 range)."""
    with np.errstate(invalid="ignore"):
        return v.astype(np.int32)


def _half_words(v: np.ndarray) -> np.ndarray:
    """float32 (n,) → the IEEE fp16 bits (1, n) as uint16, rounded to nearest even."""
    return v.astype("<f2").view("<u2")[None]


def _byte_words(b: np.ndarray) -> np.ndarray:
    """Bytes in columns (2k, n) → (k, n) little-endian uint16 words: b[2i] | b[2i+1] << 8."""
    b = b.astype("<u2")
    return b[0::2] | (b[1::2] << 8)


def _block_rows(*words: np.ndarray) -> np.ndarray:
    """Blocks as rows of bytes (n, 2k) from their k uint16 words in columns ((k_i, n) each):
    one transpose of 2-byte words, much faster than transposing byte by byte."""
    return np.ascontiguousarray(np.concatenate(words).T).view(np.uint8)


def _reciprocal(d: np.ndarray) -> np.ndarray:
    """id = d ? 1/d : 0, as the legacy quantizers compute it."""
    with np.errstate(divide="ignore", over="ignore"):
        return np.where(d != 0, F32(1) / np.where(d != 0, d, F32(1)), F32(0))


_BELOW_HALF = np.nextafter(F32(0.5), F32(0))


def _roundf(v: np.ndarray) -> np.ndarray:
    """C's roundf (halves away from zero) as an int: trunc(v ± 0.49999997). Adding 0.5 itself
    would turn 0.49999997 into 1; adding its predecessor rounds every tie up to the next integer
    and nothing else, as the float32 sum rounds to nearest even."""
    with np.errstate(invalid="ignore"):
        return _c_int(v + np.copysign(_BELOW_HALF, v))


def _absmax(x: np.ndarray) -> np.ndarray:
    """max |x| of each column (+0 for a column of zeros)."""
    return np.maximum(np.maximum(x.max(axis=0), -x.min(axis=0)), F32(0))


def _signed_absmax(x: np.ndarray) -> np.ndarray:
    """`signed_absmax` of each column, faster: from max and min, looking at the order only
    where +a and −a both occur."""
    hi, lo = x.max(axis=0), x.min(axis=0)
    big = np.where(-lo > hi, lo, hi)
    tie = (-lo == hi) & (hi != 0)
    if tie.any():
        big[tie] = signed_absmax(x[:, tie])
    return np.where(big == 0, F32(0), big)


def _nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return ((lo & 0xF) | ((hi & 0xF) << 4)).astype(np.uint8)


def _columns(x: np.ndarray, n: int) -> np.ndarray:
    """Blocks (b, k·n) as sub-blocks in columns: (n, b·k), one sub-block of n values per column
    (transposed 256 sub-blocks at a time, which stay in the cache)."""
    rows = x.reshape(-1, n)
    out = np.empty((n, rows.shape[0]), rows.dtype)
    for i in range(0, rows.shape[0], 256):
        out[:, i:i + 256] = rows[i:i + 256].T
    return out


def _maybe_columns(qw: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if qw is None else _columns(qw, n)


def sum_squares(x: np.ndarray) -> np.ndarray:
    """Σx² of each block (row) of x (b, n), added in order in float32."""
    return sequential_sum(_columns(x * x, x.shape[1]))


def _sub_block_weights(x: np.ndarray, qw: np.ndarray, n: int, sigma2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weights qw·sqrt(σ² + x²) of a super-block format's search, in sub-block columns
    (n, b·k) (σ²: one per super-block), and their sums Σw per sub-block."""
    w = _weights(_columns(x, n), _columns(qw, n), np.repeat(sigma2, x.shape[1] // n))
    return w, sequential_sum(w)


# ---- bytes (torch side) ---------------------------------------------------------------------

def _half(raw: torch.Tensor, at: int) -> torch.Tensor:
    """The fp16 at byte `at` of each block, as float32 (n, 1)."""
    return raw[:, at:at + 2].clone().view(torch.float16).float()  # clone: a fresh, aligned copy


def _low_high(qs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return qs & 0xF, qs >> 4


def _bits(byte: torch.Tensor, width: int) -> torch.Tensor:
    """Split bytes (..., L) into 8/width fields of `width` bits, lowest first: (..., 8/width, L)."""
    shifts = torch.arange(0, 8, width, device=byte.device, dtype=torch.uint8)
    return (byte.unsqueeze(-2) >> shifts[:, None]) & ((1 << width) - 1)


class BlockFormat:
    """One GGUF block format: `block_size` weights stored in `type_size` bytes.

    `quantize_blocks` maps float32 blocks (n, block_size) to bytes (n, type_size) as llama.cpp
    does, given the importance `qw` (n, block_size) of each weight's column or None (`sigma2`:
    the row's mean x² of each block, for the formats whose weights take it from the row); `unpack` reads the named fields of each block back (scales as stored, integer codes);
    `dequantize_blocks` turns bytes into floats as ggml's to_float does.
    """

    name: str
    block_size: int
    type_size: int
    fields: tuple[str, ...]
    row_sigma2 = False  # the weighted search takes σ² from the whole row, not the block

    @property
    def ggml_type(self) -> gguf.GGMLQuantizationType:
        return gguf.GGMLQuantizationType[self.name]

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.type_size / self.block_size

    def quantize_blocks(self, x: np.ndarray, qw: np.ndarray | None = None,
                        sigma2: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def unpack(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def dequantize_blocks(self, raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.name}({self.block_size} weights in {self.type_size} bytes, {self.bits_per_weight:g} bits each)"


# ---- the legacy formats: blocks of 32, one fp16 scale ---------------------------------------

class Q8_0(BlockFormat):
    """d = max|x| / 127, q = roundf(x / d) (halves away from zero): d (fp16), 32 × int8."""

    name, block_size, type_size, fields = "Q8_0", 32, 34, ("d", "codes")

    def quantize_blocks(self, x, qw=None, sigma2=None):  # ggml ignores the importance here
        x = _columns(x, 32)
        d = _absmax(x) / F32(127)
        with np.errstate(over="ignore", invalid="ignore"):
            q = _roundf(x * _reciprocal(d))
        return _block_rows(_half_words(d), _byte_words(q.astype(np.int8).view(np.uint8)))

    def unpack(self, raw):
        return {"d": _half(raw, 0), "codes": raw[:, 2:].view(torch.int8)}

    def dequantize_blocks(self, raw):
        f = self.unpack(raw)
        return f["codes"].float() * f["d"]


def _weights(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """The weights of a search with an importance matrix: qw·sqrt(σ² + x²), in columns."""
    return qw * np.sqrt(sigma2 + x * x)


class _Offset32(BlockFormat):
    """Q4_0 and Q5_0: d = max / −2^(b−1) with max the signed value of largest magnitude,
    q = min(2^b − 1, trunc(x/d + 2^(b−1) + 0.5)), x̂ = d·(q − 2^(b−1)). With an importance
    matrix, `fit_symmetric` with weights qw·sqrt(σ² + x²) (σ²: the row's mean x²) gives d and q.
    `codes` works on columns: x (32, n) → d (n,), q (32, n)."""

    bits: int
    row_sigma2 = True

    def codes(self, x, qw, sigma2):
        half = 2 ** (self.bits - 1)
        if qw is not None:
            q, d = fit_symmetric(x, half, _weights(x, qw, sigma2))
            return d, q.astype(np.uint8)
        d = _signed_absmax(x) / F32(-half)
        with np.errstate(over="ignore", invalid="ignore"):
            t = x * _reciprocal(d)
            t += F32(half + 0.5)
        return d, np.minimum(_c_int(t).astype(np.int8), 2 * half - 1).view(np.uint8)

    def dequantize_blocks(self, raw):
        f = self.unpack(raw)
        return (f["codes"].int() - 2 ** (self.bits - 1)).float() * f["d"]


class _MinMax32(BlockFormat):
    """Q4_1 and Q5_1: d = (max − min) / (2^b − 1), m = min, q = trunc((x − m)/d + 0.5),
    x̂ = d·q + m. With an importance matrix, `fit_scale_min` with weights qw·sqrt(σ² + x²)
    (σ²: the row's mean x²) gives d, m and q. `codes` works on columns: x (32, n) → d, m (n,),
    q (32, n)."""

    bits: int
    row_sigma2 = True

    def codes(self, x, qw, sigma2):
        if qw is not None:
            q, d, m = fit_scale_min(x, _weights(x, qw, sigma2), 2**self.bits - 1, -0.9, 0.05, 36, use_mad=False)
            return d, -m, q
        lo, hi = first_extreme(x, lowest=True), first_extreme(x, lowest=False)
        d = (hi - lo) / F32(2**self.bits - 1)
        with np.errstate(over="ignore", invalid="ignore"):
            t = x - lo
            t *= _reciprocal(d)
            t += F32(0.5)
        q = _c_int(t)
        if self.bits == 4:  # Q4_1 clamps with MIN(15, (int8_t)…), Q5_1 only casts to uint8_t
            return d, lo, np.minimum(q.astype(np.int8), 15).view(np.uint8)
        return d, lo, q.astype(np.uint8)

    def dequantize_blocks(self, raw):
        f = self.unpack(raw)
        return f["codes"].float() * f["d"] + f["m"]


def _unpack5(raw: torch.Tensor, qh_at: int) -> torch.Tensor:
    """32 five-bit codes: low nibbles of the 16 bytes after the 4 bytes of qh (first half, then
    second half), fifth bit j of the little-endian uint32 qh."""
    b = raw[:, qh_at:qh_at + 4].int()
    qh = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)
    fifth = (qh[:, None] >> torch.arange(32, device=raw.device, dtype=torch.int32)).bitwise_and_(1).bitwise_left_shift_(4)
    return fifth.bitwise_or_(torch.cat(_low_high(raw[:, qh_at + 4:qh_at + 20]), dim=1))


def _pack5(q: np.ndarray) -> list[np.ndarray]:
    """The words of five-bit codes in columns (32, n): qh (2, n), the little-endian uint32 of
    their fifth bits, and qs (8, n), their low nibbles."""
    qh = (((q >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)[:, None]).sum(axis=0, dtype=np.uint32)
    return [np.stack([qh & 0xFFFF, qh >> 16]).astype("<u2"), _byte_words(_nibbles(q[:16], q[16:]))]


class Q4_0(_Offset32):
    __doc__ = _Offset32.__doc__ + " Bytes: d (fp16), 16 bytes of two 4-bit codes (j, j + 16)."
    name, block_size, type_size, fields, bits = "Q4_0", 32, 18, ("d", "codes"), 4

    def quantize_blocks(self, x, qw=None, sigma2=None):
        d, q = self.codes(_columns(x, 32), _maybe_columns(qw, 32), sigma2)
        return _block_rows(_half_words(d), _byte_words(_nibbles(q[:16], q[16:])))

    def unpack(self, raw):
        return {"d": _half(raw, 0), "codes": torch.cat(_low_high(raw[:, 2:]), dim=1)}


class Q5_0(_Offset32):
    __doc__ = _Offset32.__doc__ + " Bytes: d (fp16), qh (32 fifth bits), 16 bytes of nibbles."
    name, block_size, type_size, fields, bits = "Q5_0", 32, 22, ("d", "codes"), 5

    def quantize_blocks(self, x, qw=None, sigma2=None):
        d, q = self.codes(_columns(x, 32), _maybe_columns(qw, 32), sigma2)
        return _block_rows(_half_words(d), *_pack5(q))

    def unpack(self, raw):
        return {"d": _half(raw, 0), "codes": _unpack5(raw, 2)}


class Q4_1(_MinMax32):
    __doc__ = _MinMax32.__doc__ + " Bytes: d, m (fp16), 16 bytes of two 4-bit codes."
    name, block_size, type_size, fields, bits = "Q4_1", 32, 20, ("d", "m", "codes"), 4

    def quantize_blocks(self, x, qw=None, sigma2=None):
        d, m, q = self.codes(_columns(x, 32), _maybe_columns(qw, 32), sigma2)
        return _block_rows(_half_words(d), _half_words(m), _byte_words(_nibbles(q[:16], q[16:])))

    def unpack(self, raw):
        return {"d": _half(raw, 0), "m": _half(raw, 2), "codes": torch.cat(_low_high(raw[:, 4:]), dim=1)}


class Q5_1(_MinMax32):
    __doc__ = _MinMax32.__doc__ + " Bytes: d, m (fp16), qh, 16 bytes of nibbles."
    name, block_size, type_size, fields, bits = "Q5_1", 32, 24, ("d", "m", "codes"), 5

    def quantize_blocks(self, x, qw=None, sigma2=None):
        d, m, q = self.codes(_columns(x, 32), _maybe_columns(qw, 32), sigma2)
        return _block_rows(_half_words(d), _half_words(m), *_pack5(q))

    def unpack(self, raw):
        return {"d": _half(raw, 0), "m": _half(raw, 2), "codes": _unpack5(raw, 4)}


# ---- K-quants: super-blocks of 256 --------------------------------------------------------

def _requantize(x: np.ndarray, d: np.ndarray, offset: np.ndarray | None, lo: int, hi: int,
                fallback: np.ndarray) -> np.ndarray:
    """The final codes: clamp(nearest_int((x + offset)/d), lo, hi) per sub-block with the
    stored (fp16-rounded, 6/8-bit) scales; a sub-block whose d is 0 keeps the codes of the search.
    x, fallback (b, j, n); d, offset (b, j)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        y = x if offset is None else x + offset[..., None]
        q = np.clip(nearest_int(y / d[..., None]), lo, hi)
    return np.where(d[..., None] == 0, fallback, q)


def _scaled_minus_min(f: dict[str, torch.Tensor]) -> torch.Tensor:
    """x̂ = (d·s_j)·q − (dmin·m_j) for the unpacked fields of Q4_K, Q5_K or Q2_K: (n, 256)."""
    d = (f["d"] * f["scales"].float())[..., None]
    m = (f["dmin"] * f["mins"].float())[..., None]
    return (d * f["codes"].float() - m).reshape(-1, QK_K)


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins (b, 8) → 12 bytes: bytes 0–3 hold scales 0–3, bytes 4–7
    mins 0–3, bytes 8–11 the low nibbles of scales and mins 4–7, whose top two bits fill bits
    6–7 of bytes 0–3 (scales) and 4–7 (mins)."""
    return np.concatenate([ls[:, :4] | ((ls[:, 4:] >> 4) << 6), lm[:, :4] | ((lm[:, 4:] >> 4) << 6),
                           (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)], axis=1).astype(np.uint8)


def unpack_scales_k4(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ggml's get_scale_min_k4 for j = 0..7 at once: 12 bytes (n, 12) → scales, mins (n, 8)."""
    lo, mid, top = q[:, 0:4], q[:, 4:8], q[:, 8:12]
    scales = torch.cat([lo & 63, (top & 0xF) | ((lo >> 6) << 4)], dim=1)
    mins = torch.cat([mid & 63, (top >> 4) | ((mid >> 6) << 4)], dim=1)
    return scales, mins


def _unpack_scales_k4_np(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scales, mins = unpack_scales_k4(torch.from_numpy(q))
    return scales.numpy(), mins.numpy()


class _ScaleMinK(BlockFormat):
    """Q4_K and Q5_K: 8 sub-blocks of 32 with weights w = sqrt(Σx²/32) + |x|; each gets a scale
    and a min from `fit_scale_min`; the scales (mins) are stored as 6-bit multiples of
    d = max scale / 63 (dmin = max min / 63), and the codes are found again with those:
    q = clamp(round((x + dmin·m_j) / (d·s_j)), 0, 2^b − 1). With an importance matrix the
    weights are qw·sqrt(σ² + x²) (σ² = 2·Σx²/256 over the super-block), the search takes 37
    finer grids, and the 6-bit scales and mins come from `fit_positive` weighted by Σw."""

    fields = ("d", "dmin", "scales", "mins", "codes")
    nmax: int
    search: tuple  # rmin, rdelta, nstep of fit_scale_min

    def codes(self, x, qw):
        b = x.shape[0]
        cols = _columns(x, 32)
        if qw is None:
            av = np.sqrt(sequential_sum(cols * cols) / F32(32))
            found, scale, mins = fit_scale_min(cols, av + np.abs(cols), self.nmax, *self.search, use_mad=False)
            scale, mins = scale.reshape(b, 8), mins.reshape(b, 8)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                max_scale = np.maximum(scale.max(axis=1), F32(0))
                max_min = np.maximum(mins.max(axis=1), F32(0))
                inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
                inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
                ls = np.minimum(63, nearest_int(inv_scale[:, None] * scale) & 0xFF)
                lm = np.minimum(63, nearest_int(inv_min[:, None] * mins) & 0xFF)
            d, dmin = max_scale / F32(63), max_min / F32(63)
        else:
            w, sw = _sub_block_weights(x, qw, 32, F32(2) * sum_squares(x) / F32(QK_K))
            found, scale, mins = fit_scale_min(cols, w, self.nmax, -0.9, 0.05, 36, use_mad=False)
            sw = sw.reshape(b, 8).T
            ls, d = fit_positive(scale.reshape(b, 8).T, 63, sw)
            lm, dmin = fit_positive(mins.reshape(b, 8).T, 63, sw)
            ls, lm = ls.T.astype(np.int32), lm.T.astype(np.int32)
            if self.nmax == 31:  # Q5_K clamps the 6-bit values, Q4_K stores them as they are
                ls, lm = np.minimum(ls, 63), np.minimum(lm, 63)
        packed = _pack_scales_k4(ls, lm)
        ls, lm = _unpack_scales_k4_np(packed)  # what the requantization reads back
        q = _requantize(x.reshape(b, 8, 32), _through_half(d)[:, None] * ls.astype(F32),
                        _through_half(dmin)[:, None] * lm.astype(F32), 0, self.nmax, found.T.reshape(b, 8, 32))
        return [_half_bytes(d), _half_bytes(dmin), packed], q.reshape(b, 4, 2, 32)

    def unpack(self, raw):
        scales, mins = unpack_scales_k4(raw[:, 4:16])
        return {"d": _half(raw, 0), "dmin": _half(raw, 2), "scales": scales, "mins": mins,
                "codes": self.unpack_codes(raw)}

    def dequantize_blocks(self, raw):
        return _scaled_minus_min(self.unpack(raw))


class Q4_K(_ScaleMinK):
    __doc__ = _ScaleMinK.__doc__ + """

    Bytes (144): d, dmin (fp16), 12 bytes of scales and mins, 128 bytes of codes: byte l of
    chunk c (of 4) holds code l of sub-block 2c (low nibble) and of sub-block 2c + 1 (high)."""
    name, block_size, type_size, nmax, search = "Q4_K", QK_K, 144, 15, (-1.0, 0.1, 20)

    def quantize_blocks(self, x, qw=None, sigma2=None):
        head, q = self.codes(x, qw)
        return np.concatenate([*head, _nibbles(q[:, :, 0], q[:, :, 1]).reshape(-1, 128)], axis=1)

    def unpack_codes(self, raw):
        lo, hi = _low_high(raw[:, 16:].reshape(-1, 4, 1, 32))
        return torch.cat([lo, hi], dim=2).reshape(-1, 8, 32)


class Q5_K(_ScaleMinK):
    __doc__ = _ScaleMinK.__doc__ + """

    Bytes (176): d, dmin, 12 bytes of scales and mins, qh (32 bytes: bit j of byte l is the
    fifth bit of code l of sub-block j), 128 bytes of low nibbles laid out as in Q4_K."""
    name, block_size, type_size, nmax, search = "Q5_K", QK_K, 176, 31, (-0.5, 0.1, 15)

    def quantize_blocks(self, x, qw=None, sigma2=None):
        head, q = self.codes(x, qw)
        fifth = ((q >> 4) & 1).reshape(-1, 8, 32).astype(np.uint8)
        qh = (fifth << np.arange(8, dtype=np.uint8)[:, None]).sum(axis=1, dtype=np.uint8)
        return np.concatenate([*head, qh, _nibbles(q[:, :, 0], q[:, :, 1]).reshape(-1, 128)], axis=1)

    def unpack_codes(self, raw):
        lo, hi = _low_high(raw[:, 48:].reshape(-1, 4, 1, 32))
        fifth = _bits(raw[:, 16:48], 1)  # (n, 8, 32): sub-block j from bit j
        return torch.cat([lo, hi], dim=2).reshape(-1, 8, 32) | (fifth << 4)


def _pack_2bit(q: np.ndarray) -> np.ndarray:
    """Codes (b, 256) of 2 bits → 64 bytes: byte l of half h holds codes 128h + 32s + l in bits
    2s, 2s + 1 (s = 0..3)."""
    q = q.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _unpack_2bit(qs: torch.Tensor) -> torch.Tensor:
    return _bits(qs.reshape(-1, 2, 32), 2).reshape(-1, 16, 16)


class Q6_K(BlockFormat):
    """16 sub-blocks of 16 fitted by `fit_symmetric` (codes −32..31, weights x²); the scales
    are stored as int8 multiples of d = −max_scale/128 (max_scale: the scale of largest
    magnitude, with its sign), then q = clamp(round(x / (d·s_j)), −32, 31) + 32. With an
    importance matrix the search weights are the importance itself.

    Bytes (210): ql (128: low nibbles; byte l of quarter r holds codes l and l + 64 of each
    half), qh (64: the top 2 bits of codes l, l + 32, l + 64, l + 96 of each half), 16 int8
    scales, d (fp16). A super-block whose scales are all below 1e-15 is 210 zero bytes."""

    name, block_size, type_size, fields = "Q6_K", QK_K, 210, ("d", "scales", "codes")

    def quantize_blocks(self, x, qw=None, sigma2=None):
        b = x.shape[0]
        found, scale = fit_symmetric(_columns(x, 16), 32, _maybe_columns(qw, 16))
        found, scale = found.T.reshape(b, 16, 16), scale.reshape(b, 16)
        max_scale = signed_absmax(scale, axis=1)
        zero = np.abs(max_scale) < F32(1e-15)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            iscale = F32(-128) / max_scale
            d = F32(1) / iscale
            sc = np.minimum(127, nearest_int(iscale[:, None] * scale)).astype(np.int8)
        q = _requantize(x.reshape(b, 16, 16), _through_half(d)[:, None] * sc.astype(F32), None, -32, 31,
                        found - 32) + 32
        q = q.reshape(b, 2, 4, 32)
        ql = np.concatenate([_nibbles(q[:, :, 0], q[:, :, 2]), _nibbles(q[:, :, 1], q[:, :, 3])], axis=2)
        qh = (q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6)
        raw = np.concatenate([ql.reshape(b, 128), qh.reshape(b, 64).astype(np.uint8),
                              sc.view(np.uint8), _half_bytes(d)], axis=1)
        raw[zero] = 0
        return raw

    def unpack(self, raw):
        ql = raw[:, :128].reshape(-1, 2, 2, 32)
        lo, hi = _low_high(ql)  # (n, half, 2, 32): quarters 0, 1 low; 2, 3 high
        low = torch.cat([lo, hi], dim=2)  # (n, half, 4, 32)
        top = _bits(raw[:, 128:192].reshape(-1, 2, 32), 2)  # (n, half, 4, 32)
        return {"d": _half(raw, 208), "scales": raw[:, 192:208].view(torch.int8),
                "codes": (low | (top << 4)).reshape(-1, 16, 16)}

    def dequantize_blocks(self, raw):
        f = self.unpack(raw)
        d = (f["d"] * f["scales"].float())[..., None]
        return (d * (f["codes"].int() - 32).float()).reshape(-1, QK_K)


class Q2_K(BlockFormat):
    """16 sub-blocks of 16 fitted by `fit_scale_min` (codes 0..3, weights |x|, absolute error);
    scales and mins as 4-bit multiples of d = max scale / 15 and dmin = max min / 15. With an
    importance matrix: squared error, weights qw·sqrt(σ² + x²) (σ² = Σx²/256), 37 grids, and
    the 4-bit scales and mins from `fit_positive` weighted by Σw.

    Bytes (84): 16 bytes (scale in the low nibble, min in the high), 64 bytes of 2-bit codes,
    d, dmin (fp16)."""

    name, block_size, type_size, fields = "Q2_K", QK_K, 84, ("d", "dmin", "scales", "mins", "codes")

    def quantize_blocks(self, x, qw=None, sigma2=None):
        b = x.shape[0]
        cols = _columns(x, 16)
        if qw is None:
            found, scale, mins = fit_scale_min(cols, np.abs(cols), 3, -0.5, 0.1, 15, use_mad=True)
            scale, mins = scale.reshape(b, 16), mins.reshape(b, 16)
            max_scale = np.maximum(scale.max(axis=1), F32(0))
            max_min = np.maximum(mins.max(axis=1), F32(0))
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                ls = np.where(max_scale[:, None] > 0, nearest_int((F32(15) / max_scale)[:, None] * scale), 0)
                lm = np.where(max_min[:, None] > 0, nearest_int((F32(15) / max_min)[:, None] * mins), 0)
            d = np.where(max_scale > 0, max_scale / F32(15), F32(0))
            dmin = np.where(max_min > 0, max_min / F32(15), F32(0))
        else:
            w, sw = _sub_block_weights(x, qw, 16, sum_squares(x) / F32(QK_K))
            found, scale, mins = fit_scale_min(cols, w, 3, -0.9, 0.05, 36, use_mad=False)
            sw = sw.reshape(b, 16).T
            ls, d = fit_positive(scale.reshape(b, 16).T, 15, sw)
            lm, dmin = fit_positive(mins.reshape(b, 16).T, 15, sw)
            ls, lm = ls.T.astype(np.int32), lm.T.astype(np.int32)
        found = found.T.reshape(b, 16, 16)
        packed = (ls & 0xFF) | ((lm << 4) & 0xFF)
        q = _requantize(x.reshape(b, 16, 16), _through_half(d)[:, None] * (packed & 0xF).astype(F32),
                        _through_half(dmin)[:, None] * (packed >> 4).astype(F32), 0, 3, found)
        return np.concatenate([packed.astype(np.uint8), _pack_2bit(q), _half_bytes(d), _half_bytes(dmin)],
                              axis=1)

    def unpack(self, raw):
        return {"d": _half(raw, 80), "dmin": _half(raw, 82), "scales": raw[:, :16] & 0xF,
                "mins": raw[:, :16] >> 4, "codes": _unpack_2bit(raw[:, 16:80])}

    def dequantize_blocks(self, raw):
        return _scaled_minus_min(self.unpack(raw))


class Q3_K(BlockFormat):
    """16 sub-blocks of 16 fitted by `refine_symmetric` (codes −4..3); scales as 6-bit
    multiples of d = −max_scale/32, stored with an offset of 32. With an importance matrix:
    `fit_symmetric` with weights qw·sqrt(σ² + x²) (σ² = 2·Σx²/256), and the 6-bit scales from
    `fit_symmetric` again, weighted by Σw.

    Bytes (110): hmask (32: bit j of byte l is the third bit of code 32j + l), 64 bytes of the
    low 2 bits (as Q2_K), 12 bytes of scales (low nibbles of scales 0–7 and 8–15 in bytes 0–7,
    top bits in bytes 8–11), d (fp16)."""

    name, block_size, type_size, fields = "Q3_K", QK_K, 110, ("d", "scales", "codes")

    def quantize_blocks(self, x, qw=None, sigma2=None):
        b = x.shape[0]
        if qw is None:
            found, scale = refine_symmetric(_columns(x, 16), 4)
            scale = scale.reshape(b, 16)
            max_scale = signed_absmax(scale, axis=1)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                iscale = F32(-32) / max_scale
                ls = np.clip(nearest_int(iscale[:, None] * scale).astype(np.int8), -32, 31).astype(np.int32) + 32
                d = np.where(max_scale != 0, F32(1) / iscale, F32(0))
            ls = np.where(max_scale[:, None] != 0, ls, 32)
            blank = max_scale == 0  # stores zero bytes for the scales
        else:
            w, sw = _sub_block_weights(x, qw, 16, F32(2) * sum_squares(x) / F32(QK_K))
            found, scale = fit_symmetric(_columns(x, 16), 4, w)
            ls, d = fit_symmetric(scale.reshape(b, 16).T, 32, sw.reshape(b, 16).T)
            ls, blank = ls.T, np.zeros(b, dtype=bool)  # the stored scale is ls − 32
        found = found.T.reshape(b, 16, 16)
        q = _requantize(x.reshape(b, 16, 16), _through_half(d)[:, None] * (ls - 32).astype(F32), None, -4, 3,
                        found - 4) + 4
        low = (ls & 0xF).astype(np.uint8)
        top = (ls >> 4).reshape(b, 4, 4).astype(np.uint8)  # scale j: bits 2·(j // 4) of byte 8 + j % 4
        top = (top << np.array([0, 2, 4, 6], dtype=np.uint8)[:, None]).sum(axis=1, dtype=np.uint8)
        scales = np.concatenate([low[:, :8] | (low[:, 8:] << 4), top], axis=1)
        scales[blank] = 0
        q = q.reshape(b, 8, 32)
        hmask = ((q >> 2).astype(np.uint8) << np.arange(8, dtype=np.uint8)[:, None]).sum(axis=1, dtype=np.uint8)
        return np.concatenate([hmask, _pack_2bit(q & 3), scales, _half_bytes(d)], axis=1)

    def unpack(self, raw):
        s = raw[:, 96:108]
        low = torch.cat(_low_high(s[:, :8]), dim=1)  # scales 0–7, then 8–15
        top = _bits(s[:, 8:12], 2).reshape(-1, 16)  # byte 8 + j % 4, bits 2·(j // 4)
        third = _bits(raw[:, :32], 1).reshape(-1, 16, 16)
        return {"d": _half(raw, 108), "scales": (low | (top << 4)).view(torch.int8) - 32,
                "codes": _unpack_2bit(raw[:, 32:96]) | (third << 2)}

    def dequantize_blocks(self, raw):
        f = self.unpack(raw)
        d = (f["d"] * f["scales"].float())[..., None]
        return (d * (f["codes"].int() - 4).float()).reshape(-1, QK_K)


FORMATS: dict[str, BlockFormat] = {f.name: f for f in (Q8_0(), Q4_0(), Q4_1(), Q5_0(), Q5_1(), Q2_K(), Q3_K(),
                                                     Q4_K(), Q5_K(), Q6_K())}
# formats with a Triton kernel → the module of lec19quant.kernels that holds it (and its function)
TRITON_DEQUANTIZE = {"Q4_K": "gguf", "Q6_K": "gguf", "IQ4_XS": "iquants"}
TRITON_MATVEC = {"Q4_K": ("gguf", "q4_k_matvec"), "IQ4_XS": ("iquants", "iq4_xs_matvec")}


def _listed(names) -> str:
    """"A, B and C"."""
    names = list(names)
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def get_format(qtype) -> BlockFormat:
    """A block format from its name ("Q4_K"), a `BlockFormat` or a gguf.GGMLQuantizationType."""
    if isinstance(qtype, BlockFormat):
        return qtype
    name = qtype.name if isinstance(qtype, gguf.GGMLQuantizationType) else qtype
    if name not in FORMATS:
        raise ValueError(f"unknown block format {qtype!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


def row_bytes(qtype, n: int) -> int:
    """Bytes of one row of n weights."""
    fmt = get_format(qtype)
    if n % fmt.block_size:
        raise ValueError(f"{fmt.name} stores rows in blocks of {fmt.block_size}: a row of {n} weights does not "
                         f"divide (llama.cpp falls back to another type for such tensors)")
    return n // fmt.block_size * fmt.type_size


CHUNK_WEIGHTS = 1 << 17  # blocks are quantized this many weights at a time (fits in cache)


def _float32_rows(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise TypeError(f"x must be a float tensor, got {x.dtype}")
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"x must hold floats, got {x.dtype}")
    if x.ndim == 0 or x.size == 0:
        raise ValueError(f"x must be a non-empty array of rows, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=F32)
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or inf: GGUF block formats store finite weights only")
    return x.reshape(-1, x.shape[-1])


def _importance(imatrix, n: int) -> np.ndarray:
    """The importance of each of the n columns as float32 (n,); it must be finite and ≥ 0."""
    if isinstance(imatrix, torch.Tensor):
        imatrix = imatrix.detach().to("cpu", torch.float32).numpy()
    qw = np.asarray(imatrix)
    if qw.dtype.kind not in "fiu":
        raise TypeError(f"imatrix must hold numbers, got {qw.dtype}")
    if qw.shape != (n,):
        raise ValueError(f"imatrix must hold one importance per column of the row: shape ({n},), got {qw.shape}")
    qw = np.ascontiguousarray(qw, dtype=F32)
    if not np.isfinite(qw).all() or (qw < 0).any():
        raise ValueError("imatrix must be finite and ≥ 0 (a mean of squares per column)")
    return qw


def quantize(x, qtype, imatrix=None) -> np.ndarray:
    """Quantize the rows of `x` (a float tensor or array; its last dimension is the row) to a
    GGUF block format as ggml's ggml_quantize_chunk does: uint8 (rows, row_bytes).

    `imatrix`: the importance of each column (K values, e.g. the mean x² of each input channel
    over calibration text, `imatrix.ImportanceMatrix.weights`), or None for the reference
    quantizer. Q8_0 ignores it, as ggml does."""
    fmt = get_format(qtype)
    rows = _float32_rows(x)
    size = row_bytes(fmt, rows.shape[1])
    blocks = rows.reshape(-1, fmt.block_size)
    per_row = rows.shape[1] // fmt.block_size
    qw = sigma2 = None
    if imatrix is not None:
        qw = _importance(imatrix, rows.shape[1]).reshape(per_row, fmt.block_size)
        if fmt.row_sigma2:
            sigma2 = np.repeat(sum_squares(rows) / F32(rows.shape[1]), per_row)
    step = max(1, CHUNK_WEIGHTS // fmt.block_size)
    out = np.empty((blocks.shape[0], fmt.type_size), dtype=np.uint8)
    with np.errstate(all="ignore"):  # overflow (huge importance) and 0/0 are ggml's arithmetic too
        for start in range(0, blocks.shape[0], step):
            part = slice(start, start + step)
            index = np.arange(start, min(start + step, blocks.shape[0])) % per_row
            out[part] = fmt.quantize_blocks(blocks[part], None if qw is None else qw[index],
                                            None if sigma2 is None else sigma2[part])
    return out.reshape(rows.shape[0], size)


def _raw_blocks(raw, fmt: BlockFormat, n: int) -> torch.Tensor:
    raw = torch.as_tensor(raw)
    if raw.dtype != torch.uint8:
        raise TypeError(f"raw must be uint8 bytes, got {raw.dtype}")
    if raw.numel() != n // fmt.block_size * fmt.type_size:
        raise ValueError(f"{raw.numel()} bytes do not hold {n} weights of {fmt.name}: that takes "
                         f"{n // fmt.block_size * fmt.type_size}")
    return raw.reshape(-1, fmt.type_size)


def dequantize(raw, qtype, shape, backend: str = "auto") -> torch.Tensor:
    """The float32 weights of shape `shape` stored in `raw` (uint8 bytes, any shape), as ggml's
    to_float computes them. `backend` "auto" runs the Triton kernel on a CUDA tensor for the
    formats that have one (Q4_K, Q6_K, IQ4_XS), "torch" never, "triton" always."""
    fmt = get_format(qtype)
    shape = torch.Size(shape)
    row_bytes(fmt, shape[-1] if len(shape) else 1)
    blocks = _raw_blocks(raw, fmt, shape.numel())
    if use_triton(backend, blocks) and (backend == "triton" or fmt.name in TRITON_DEQUANTIZE):
        if fmt.name not in TRITON_DEQUANTIZE:
            raise ValueError(f"there is a Triton kernel for {_listed(TRITON_DEQUANTIZE)}, not {fmt.name}")
        kernel = importlib.import_module(f"..kernels.{TRITON_DEQUANTIZE[fmt.name]}", __package__)
        return kernel.dequantize(blocks, fmt.name).reshape(shape)
    return fmt.dequantize_blocks(blocks).reshape(shape)


def matvec(raw, qtype, shape, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """y = W·x (float32) for W of `shape` (N, K) stored in `raw` and x of K values. "auto" runs
    the fused Triton kernel for Q4_K and IQ4_XS on a CUDA tensor: it reads the 4.5-bit blocks and never
    builds W in memory, which is what makes batch-1 decoding fast. Elsewhere, and for the other
    formats, it is `dequantize(raw, qtype, shape) @ x`."""
    fmt = get_format(qtype)
    shape = torch.Size(shape)
    if len(shape) != 2 or x.shape != (shape[1],):
        raise ValueError(f"W must be (N, K) and x (K,), got {tuple(shape)} and {tuple(x.shape)}")
    blocks = _raw_blocks(raw, fmt, shape.numel())
    row_bytes(fmt, shape[1])
    if use_triton(backend, blocks, x) and (backend == "triton" or fmt.name in TRITON_MATVEC):
        if fmt.name not in TRITON_MATVEC:
            raise ValueError(f"the fused Triton kernel is for {_listed(TRITON_MATVEC)}, not {fmt.name}")
        module, function = TRITON_MATVEC[fmt.name]
        kernel = importlib.import_module(f"..kernels.{module}", __package__)
        return getattr(kernel, function)(blocks.reshape(shape[0], -1), x)
    return dequantize(blocks, fmt, shape, backend) @ x.float()


@dataclass
class BlockAnatomy:
    """One block taken apart: its format, the stored fields (scales as stored, integer codes)
    and the weights they decode to."""

    format: str
    fields: dict[str, torch.Tensor]
    values: torch.Tensor

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.fields[name]


def explain_block(raw_block, qtype) -> BlockAnatomy:
    """Read one block (`type_size` bytes) of a format: d (and dmin), the sub-block scales (and
    mins) as stored, the integer codes per sub-block, and the decoded weights."""
    fmt = get_format(qtype)
    raw = _raw_blocks(raw_block, fmt, fmt.block_size)
    fields = {name: value[0] for name, value in fmt.unpack(raw).items()}
    fields = {name: value.reshape(()) if name in ("d", "dmin", "m") else value for name, value in fields.items()}
    return BlockAnatomy(fmt.name, fields, fmt.dequantize_blocks(raw)[0])
