"""Four-bit floats with block scales: NVFP4, and MXFP4 and NF4 to compare it with.

Every format here stores 4-bit codes, two per byte (the first value in the LOW nibble), in blocks
of B consecutive values along the last dimension, each block with its own scale s_b:

    NVFP4  E2M1 codes, B = 16, s_b in FP8 E4M3, and an optional FP32 tensor scale t:
           x̂ = e2m1(q) · (t · s_b)                                        (NVIDIA, 4.5 bits/value)
    MXFP4  E2M1 codes, B = 32, s_b = 2^k in E8M0:  x̂ = e2m1(q) · 2^k       (OCP MX, 4.25)
    NF4    NF4 codebook, B = 64, s_b = max|x| in FP32:  x̂ = nf4(q) · s_b   (QLoRA, 4.5)

E2M1 has the values ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}. Quantizing rounds to the nearest value, ties
to even (formats.encode). NVFP4 follows torchao's NVFP4Tensor byte for byte; MXFP4 follows the
OCP MX rule (see `mxfp4_quantize` for how it differs from gguf's and torchao's quantizers).
"""
import math
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import ClassVar

import torch
from torch import nn

from .formats import E8M0, FP4_E2M1, FP8_E4M3, NF4, Codebook, FloatFormat, decode, encode, values
from .kernels import use_triton
from .qlora import blockwise_quantize
from .quantize import FLOAT_DTYPES, absmax_quantize, mse, sqnr_db

E2M1_MAX = FP4_E2M1.max  # 6.0
E4M3_MAX = FP8_E4M3.max  # 448.0
E4M3_MIN = FP8_E4M3.smallest_normal  # 2^−6: block scales are clamped to [2^−6, 448]
E2M1_EMAX = FP4_E2M1.max_exponent  # 2: MXFP4's scale puts a block's max|x| in [4, 8)
TENSOR_SCALE_MIN = 2.0**-120  # below this, (1 / t) / s_b can overflow float32


@lru_cache
def _table(fmt) -> torch.Tensor:
    """Every code's value, decoded once: a lookup table indexed by the code."""
    n = len(fmt.table) if isinstance(fmt, Codebook) else 2**fmt.bits
    return decode(torch.arange(n), fmt)


@lru_cache
def _pair_table(fmt) -> torch.Tensor:
    """(256, 2): the values of the two 4-bit codes in each byte, low nibble first."""
    byte = torch.arange(256)
    return torch.stack([_table(fmt)[byte & 15], _table(fmt)[byte >> 4]], dim=-1)


@lru_cache
def _midpoints(fmt: FloatFormat) -> torch.Tensor:
    """The midpoints between the format's non-negative values, each moved just below itself
    where `encode` rounds that tie up (ties to even): |y| has magnitude code i when
    mid[i − 1] < |y| ≤ mid[i] (non-negative values have the codes 0, 1, 2, ... in order)."""
    v = values(fmt)
    v = v[v >= 0]
    if not torch.equal(encode(v, fmt).long(), torch.arange(len(v))):
        raise ValueError(f"{fmt.name}'s non-negative values do not have the codes 0, 1, 2, ...")
    mid = (v[1:] + v[:-1]) / 2  # exact in float32: one bit more than the format has
    up = decode(encode(mid, fmt), fmt) == v[1:]
    return torch.where(up, torch.nextafter(mid, torch.tensor(-math.inf)), mid)


def _encode_saturating(y: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """encode(y, fmt, overflow="saturate") for y without NaN, as a search among the midpoints
    between the values (`_midpoints`): ten to thirty times faster than the general `encode`,
    with the same codes (the tests compare them)."""
    magnitude = torch.bucketize(y.abs(), _midpoints(fmt).to(y.device), out_int32=True)
    return magnitude.to(torch.uint8).bitwise_or_(torch.signbit(y).view(torch.uint8) << (fmt.bits - 1))


def pack(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte along the last dimension: byte j = q[2j] | q[2j+1] << 4."""
    if codes.shape[-1] % 2:
        raise ValueError(f"packing needs an even last dimension, got shape {tuple(codes.shape)}")
    return codes[..., 0::2] | codes[..., 1::2] << 4


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """The 4-bit codes of `pack`, in order: q[2j] = byte j & 15, q[2j+1] = byte j >> 4."""
    return torch.stack([packed & 15, packed >> 4], dim=-1).flatten(-2)


@dataclass(eq=False)
class FourBitTensor:
    """4-bit codes in blocks of BLOCK values, each block with a scale, perhaps a tensor scale.

    x̂ = v(q) · (t · s_b), with v the element format's value of code q, s_b the block's scale and
    t the tensor scale (1 when None). Subclasses set the formats; see the module docstring.
    """

    codes: torch.Tensor  # uint8 (..., n / 2): two codes per byte, the first in the low nibble
    block_scales: torch.Tensor  # (..., n / BLOCK): raw scale codes (uint8), or float32 values
    tensor_scale: torch.Tensor | None  # float32, 0-dim
    shape: torch.Size

    ELEMENTS: ClassVar[FloatFormat | Codebook]
    BLOCK: ClassVar[int]
    SCALE: ClassVar[FloatFormat | None]  # None: the block scales are stored as float32 values

    def scales(self) -> torch.Tensor:
        """The float32 scale of each block, t · s_b (multiplied in that order, as torchao does)."""
        if self.SCALE is None:
            s = self.block_scales
        else:
            s = _table(self.SCALE).to(self.block_scales.device)[self.block_scales.long()]
        return s if self.tensor_scale is None else self.tensor_scale * s

    def dequantize(self) -> torch.Tensor:
        """x̂ = v(q) · (t · s_b), float32, of the original shape."""
        pairs = _pair_table(self.ELEMENTS).to(self.codes.device)[self.codes.long()]
        blocks = pairs.view(*self.shape[:-1], -1, self.BLOCK) * self.scales()[..., None]
        return blocks.view(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes as stored: half a byte per code, the block scales, 4 for a tensor scale."""
        extra = 0 if self.tensor_scale is None else 4
        return self.codes.nbytes + self.block_scales.nbytes + extra

    @property
    def bits_per_weight(self) -> float:
        """8 · nbytes / number of values: 4 + (bits of a block scale) / BLOCK, and a little more."""
        return 8 * self.nbytes / math.prod(self.shape)


class NVFP4Tensor(FourBitTensor):
    """NVFP4: E2M1 codes, an E4M3 scale per 16 values, optionally an FP32 tensor scale."""

    ELEMENTS, BLOCK, SCALE = FP4_E2M1, 16, FP8_E4M3


class MXFP4Tensor(FourBitTensor):
    """MXFP4 (OCP MX): E2M1 codes and a power-of-two E8M0 scale per 32 values."""

    ELEMENTS, BLOCK, SCALE = FP4_E2M1, 32, E8M0


class NF4Tensor(FourBitTensor):
    """NF4 (QLoRA): NormalFloat codes and a float32 absmax per 64 values."""

    ELEMENTS, BLOCK, SCALE = NF4, 64, None


def _check_blocks(x: torch.Tensor, block: int) -> None:
    """A float tensor whose last dimension is a non-zero multiple of `block`, or a clear error."""
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be a float32, float16 or bfloat16 tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() == 0 or x.numel() == 0 or x.shape[-1] % block:
        raise ValueError(f"the last dimension of x (shape {tuple(x.shape)}) must be a non-zero "
                         f"multiple of the block size {block}")


def _blocks(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x as float32 (exactly) in blocks of `block` along the last dimension, (..., n / block,
    block), and each block's max|x|; NaN or inf in x is a ValueError."""
    _check_blocks(x, block)
    blocks = x.float().reshape(*x.shape[:-1], -1, block)
    amax = blocks.abs().amax(-1)
    if not amax.amax() < math.inf:  # the largest |x| is inf, or NaN (which max propagates)
        raise ValueError("x contains NaN or inf: quantization needs finite values")
    return blocks, amax


def _tensor_scale(amax: torch.Tensor, tensor_scale) -> torch.Tensor | None:
    """The FP32 tensor scale t, from the blocks' max|x|: max|x| / (448 · 6) for "auto", None for
    None, or the given number."""
    if tensor_scale is None:
        return None
    if isinstance(tensor_scale, str):
        if tensor_scale != "auto":
            raise ValueError(f"tensor_scale must be 'auto', None or a number, got {tensor_scale!r}")
        t = amax.amax() / (E4M3_MAX * E2M1_MAX)
        # a tensor this close to zero (all-zero, or max|x| < 2688 · 2^−120 ≈ 2e−33) has no usable
        # tensor scale (torchao's is 0 and gives NaN scales): it takes one level, where it is 0
        return t if t >= TENSOR_SCALE_MIN else None
    if isinstance(tensor_scale, torch.Tensor):
        if tensor_scale.numel() != 1:
            raise ValueError(f"tensor_scale must be one number, got shape {tuple(tensor_scale.shape)}")
        tensor_scale = tensor_scale.item()
    if isinstance(tensor_scale, bool) or not isinstance(tensor_scale, (int, float)):
        raise TypeError(f"tensor_scale must be 'auto', None or a number, got {type(tensor_scale).__name__}")
    t = torch.tensor(tensor_scale, dtype=torch.float32, device=amax.device)
    if not (TENSOR_SCALE_MIN <= t < math.inf):
        raise ValueError(f"tensor_scale must be a finite float32 of at least 2^−120, got {tensor_scale!r} "
                         "(smaller ones overflow (1 / t) / s_b)")
    return t


def nvfp4_quantize(x: torch.Tensor, tensor_scale="auto") -> NVFP4Tensor:
    """NVFP4 in blocks of 16 along the last dimension, the same bytes as torchao's NVFP4Tensor.

    With a tensor scale t ("auto": t = max|x| / (448 · 6), so that the largest block scale is
    448): s_b = E4M3(clamp(max|x_b| / 6 / t, 2^−6, 448)) and q = E2M1(x · ((1 / t) / s_b)),
    clamped to ±6. With tensor_scale=None (one level): s_b = E4M3(clamp(max|x_b| / 6, 2^−6, 448))
    and q = E2M1(x · (1 / s_b)). Rounding is to nearest, ties to even; the multiplier is rounded
    before it multiplies x, as in torchao and NVIDIA's kernels.

    x: float32, bfloat16 or float16, finite (NaN or inf is a ValueError), last dimension a
    multiple of 16. A given tensor_scale must be finite and at least 2^−120; "auto" on a tensor
    with max|x| below about 2e−33 (an all-zero tensor) gives one level, tensor_scale None.
    """
    blocks, amax = _blocks(x, NVFP4Tensor.BLOCK)
    t = _tensor_scale(amax, tensor_scale)
    block_scale = amax / E2M1_MAX
    if t is not None:
        block_scale = block_scale / t
    scale_codes = _encode_saturating(block_scale.clamp(E4M3_MIN, E4M3_MAX), FP8_E4M3)
    s = _table(FP8_E4M3).to(x.device)[scale_codes.long()]
    multiplier = 1.0 / s if t is None else (1.0 / t) / s
    codes = _encode_saturating(blocks * multiplier[..., None], FP4_E2M1)  # beyond ±6: ±6
    return NVFP4Tensor(pack(codes.view(x.shape)), scale_codes, t, x.shape)


def mxfp4_quantize(x: torch.Tensor) -> MXFP4Tensor:
    """MXFP4 by the OCP MX rule, in blocks of 32 along the last dimension.

    s_b = 2^k with k = ⌊log2 max|x_b|⌋ − 2 (2 is E2M1's largest exponent), clamped to E8M0's
    [−127, 127], and k = −127 for an all-zero block; q = E2M1(x / s_b), ties to even, beyond ±6
    saturating (max|x_b| / s_b lies in [4, 8), so the top of a block can be clipped to 6 · s_b).

    torchao's MX quantizer (scaling FLOOR) gives the same bytes except in blocks with max|x| below
    2^−124, which it scales by 2^−126 while storing 2^−127. gguf's MXFP4 (llama.cpp) gives the same
    bytes except that (1) it rounds ties toward zero, (2) it stores values that round to −0 as +0,
    (3) it computes ⌊log2⌋ in float32, a power of two too high when max|x| is within 2^−23 (relative)
    below one, and (4) below 2^−125 its scale byte wraps around; it also packs the first 16 values of
    a block in the low nibbles and the last 16 in the high ones, where this (and torchao) pairs them.
    """
    blocks, amax = _blocks(x, MXFP4Tensor.BLOCK)
    exponent = torch.frexp(amax).exponent - 1 - E2M1_EMAX  # amax = f · 2^e, 1/2 ≤ f < 1
    exponent = torch.where(amax > 0, exponent, -E8M0.bias).clamp(-E8M0.bias, E8M0.bias)
    scale_codes = (exponent + E8M0.bias).to(torch.uint8)
    s = _table(E8M0).to(x.device)[scale_codes.long()]
    codes = _encode_saturating(blocks / s[..., None], FP4_E2M1)
    return MXFP4Tensor(pack(codes.view(x.shape)), scale_codes, None, x.shape)


def nf4_quantize(x: torch.Tensor) -> NF4Tensor:
    """NF4 with a float32 absmax per 64 values along the last dimension: the codes and absmax of
    `qlora.blockwise_quantize` (bitsandbytes' rule), in this module's layout, whose first value of
    a pair is in the low nibble (bitsandbytes' and `qlora`'s in the high one)."""
    _check_blocks(x, NF4Tensor.BLOCK)  # (blockwise_quantize checks that x is finite)
    codes, absmax = blockwise_quantize(x, NF4, NF4Tensor.BLOCK)
    return NF4Tensor(pack(codes.view(x.shape)), absmax.view(*x.shape[:-1], -1), None, x.shape)


def nvfp4_matmul(x: torch.Tensor, w: NVFP4Tensor, backend: str = "auto") -> torch.Tensor:
    """Y = X · Ŵᵀ (float32, (M, N)) for X (M, K) and NVFP4 weights Ŵ (N, K), as a Linear layer
    computes it. The torch path dequantizes Ŵ and multiplies in float32. The Triton kernel decodes
    E2M1 and E4M3 with integer arithmetic inside the matmul: each e2m1 · s_b is exact in float16,
    so it multiplies X rounded to float16 by them with float32 sums, and scales by t at the end
    (|x| beyond float16's 65504 is a ValueError there).
    """
    if not isinstance(w, NVFP4Tensor) or len(w.shape) != 2:
        raise TypeError("w must be a 2-D NVFP4Tensor (N, K), from nvfp4_quantize")
    if x.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x {tuple(x.shape)} must be (M, K) with K = {w.shape[1]}, as w is {tuple(w.shape)}")
    if use_triton(backend, x, w.codes):
        from .kernels import nvfp4 as kernel

        if x.dtype != torch.float16 and x.numel() and x.abs().amax() > torch.finfo(torch.float16).max:
            raise ValueError("the Triton kernel multiplies x in float16, and x holds values beyond "
                             "its largest, 65504: use backend='torch'")

        y = torch.empty(x.shape[0], w.shape[0], dtype=torch.float32, device=x.device)
        t = 1.0 if w.tensor_scale is None else w.tensor_scale.item()
        kernel.nvfp4_matmul(x, w.codes, w.block_scales, t, y)
        return y
    return x.float() @ w.dequantize().t()


# The 4-bit formats the book compares, each a function x ↦ a quantized tensor with .dequantize()
# and .bits_per_weight; INT4 is plain absmax (lec19quant.quantize) with a float32 scale per group.
COMPARED = {
    "NVFP4": nvfp4_quantize,
    "NVFP4, one level": partial(nvfp4_quantize, tensor_scale=None),
    "MXFP4": mxfp4_quantize,
    "NF4 b64": nf4_quantize,
    "INT4 g16": partial(absmax_quantize, bits=4, group_size=16),
    "INT4 g32": partial(absmax_quantize, bits=4, group_size=32),
}


def compare(x: torch.Tensor, formats: dict = COMPARED) -> list[dict]:
    """For each format: bits per value (scales included), the MSE (1/n) Σ (x − x̂)² and the
    SQNR 10 · log10(Σ x² / Σ (x − x̂)²) in dB of x̂ = dequantize(quantize(x))."""
    rows = []
    for name, quantize in formats.items():
        q = quantize(x)
        x_hat = q.dequantize()
        rows.append({"format": name, "bits per value": q.bits_per_weight, "MSE": mse(x, x_hat),
                     "SQNR (dB)": sqnr_db(x, x_hat)})
    return rows


# the formats of FourBitLinear (NF4 layers are qlora.Linear4bit)
QUANTIZERS = {"nvfp4": nvfp4_quantize, "mxfp4": mxfp4_quantize}
TENSOR_TYPES = {"nvfp4": NVFP4Tensor, "mxfp4": MXFP4Tensor}


def _check_format(fmt: str) -> None:
    if fmt not in QUANTIZERS:
        hint = " (NF4 layers: qlora.Linear4bit, scheme qlora.NF4Scheme)" if fmt == "nf4" else ""
        raise ValueError(f"fmt must be one of {list(QUANTIZERS)}, got {fmt!r}{hint}")


class FourBitLinear(nn.Module):
    """y = x·Ŵᵀ + b with W stored in a 4-bit float format ("nvfp4" or "mxfp4") and
    dequantized on the fly; with `activations=True`, x is first rounded to the same format
    (per token, blocks along the input features; NVFP4 with a tensor scale from each call's x).
    NVFP4 weights use the Triton kernel on a GPU (`nvfp4_matmul`)."""

    def __init__(self, linear: nn.Linear, fmt: str = "nvfp4", activations: bool = False,
                 backend: str = "auto"):
        super().__init__()
        _check_format(fmt)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.fmt, self.activations, self.backend = fmt, activations, backend
        w = QUANTIZERS[fmt](linear.weight.detach())
        self.register_buffer("codes", w.codes)
        self.register_buffer("block_scales", w.block_scales)
        self.register_buffer("tensor_scale", w.tensor_scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def weight_tensor(self) -> FourBitTensor:
        shape = torch.Size((self.out_features, self.in_features))
        return TENSOR_TYPES[self.fmt](self.codes, self.block_scales, self.tensor_scale, shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.activations:
            rows = QUANTIZERS[self.fmt](rows).dequantize()
        w = self.weight_tensor()
        if self.fmt == "nvfp4":
            y = nvfp4_matmul(rows, w, self.backend)
        else:
            y = rows.float() @ w.dequantize().t()
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    @property
    def nbytes(self) -> int:
        """Bytes as stored: the packed codes, the scales, and the bias."""
        bias = 0 if self.bias is None else self.bias.nbytes
        return self.weight_tensor().nbytes + bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"fmt={self.fmt}, activations={self.activations}")


@dataclass(frozen=True)
class FourBit:
    """`quantize_model` scheme: weights in a 4-bit block format, and with `activations=True` the
    inputs of each Linear too (the arithmetic of Blackwell's FP4 tensor cores, emulated)."""

    fmt: str = "nvfp4"
    activations: bool = False

    def __post_init__(self):
        _check_format(self.fmt)

    @property
    def name(self) -> str:
        """"nvfp4", "mxfp4", and their "-w4a4" forms."""
        return self.fmt + ("-w4a4" if self.activations else "")

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        return FourBitLinear(linear, self.fmt, self.activations)
