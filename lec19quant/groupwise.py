"""Group-wise integer weights, the storage that GPTQ and AWQ checkpoints share.

A weight W (out × in) is stored as b-bit unsigned codes q ∈ [0, 2^b − 1], and for each output row
and each group of input columns one float16 scale s and one integer zero point z:

    ŵ[r, c] = (q[r, c] − z[r, G(c)]) · s[r, G(c)],     G(c) = g_idx[c]  (by default c // g)

Parameters of a group x (GPTQ's min–max rule, the same as compressed-tensors'):
    asymmetric: s = (max(x, 0) − min(x, 0)) / (2^b − 1),  z = round(−min(x, 0) / s)
    symmetric:  s = 2·max|x| / (2^b − 1),                  z = 2^(b−1)
    then q = clamp(round(x / s) + z, 0, 2^b − 1); s is rounded to float16 before q and z are
    computed from it, so that the codes are the nearest ones for the scale that is stored.

Why not `quantize.zeropoint_quantize`: the lecture's zero point multiplies by an inverse scale,
uses signed codes and the exact range [min, max]; checkpoints divide by s, use unsigned codes and
a range that always contains 0 (so that 0 is exact). The codes differ on ties and at the ends, and
compatibility with those files is the point of this module. A group whose values are all 0 gets
GPTQ's range [−1, 1].

The last group may be shorter: g_idx = c // g gives ceil(in/g) groups, the last holding in mod g
columns (the running example's 576 columns are 4 groups of 128 and one of 64). This is GPTQ's own
indexing and the shape of its checkpoints' scales; llm-compressor's observers instead require
in % g = 0.

Hub layout (AutoGPTQ/GPTQModel, read by transformers), which `GroupQuantLinear` keeps as its buffers:
    qweight  int32 (in·b/32, out)      codes of each output column packed along the input dim
    qzeros   int32 (groups, out·b/32)  zero points packed along the output dim
    scales   float16 (groups, out)
    g_idx    int32 (in,)               the group of each input column
Packing: the codes of a column form one little-endian bit stream, value i in bits [i·b, i·b + b),
cut into 32-bit words; for b = 2, 4, 8 that is value j of a word at bits j·b, for b = 3 ten and
two thirds values per word, straddling words (AutoGPTQ's layout). Ragged sizes are zero-padded to
whole words. Checkpoint format "gptq" (v1, most hub files) stores z − 1 in qzeros and readers add
1 back, so z = 0 cannot be stored; "gptq_v2" stores z itself. The buffers here are v2.
"""
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .kernels import use_triton
from .quantize import _check_bits, _check_block_size, _check_input

CHECKPOINT_FORMATS = ("gptq", "gptq_v2")
WORD_BITS = 32


# -- parameters and codes ------------------------------------------------------------------------

def group_params(x: torch.Tensor, bits: int, sym: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of each row of `x` (..., n), by the min–max rule above.

    Returns the scale as float16 and the zero point as a float tensor of integers, both shaped
    (..., 1); the scale is ≥ 2⁻²⁴ (float16's smallest subnormal) so that x / s is finite.
    """
    maxq = 2**bits - 1
    x = x.float() if x.dtype != torch.float64 else x
    lo, hi = x.amin(-1, keepdim=True).clamp(max=0), x.amax(-1, keepdim=True).clamp(min=0)
    if sym:
        hi = torch.maximum(-lo, hi)
        lo = -hi
    empty = hi == lo  # an all-zero group: GPTQ's range [−1, 1]
    lo, hi = torch.where(empty, -1.0, lo), torch.where(empty, 1.0, hi)
    scale = ((hi - lo) / maxq).to(torch.float16)
    if not torch.isfinite(scale).all():
        raise ValueError("a group's range exceeds float16 · (2^b − 1): the scale does not fit in float16")
    scale = scale.clamp(min=2.0**-24)
    s = scale.to(x.dtype)
    zero = torch.full_like(s, 2 ** (bits - 1)) if sym else torch.round(-lo / s).clamp(0, maxq)
    return scale, zero


def quantize_codes(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """q = clamp(round(x / s) + z, 0, 2^b − 1), in x's float dtype (s, z broadcast against x)."""
    return (torch.round(x / scale.to(x.dtype)) + zero.to(x.dtype)).clamp(0, 2**bits - 1)


def dequantize_codes(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """ŵ = (q − z) · s in float32 (exact: a small integer times a float16)."""
    return (q.float() - zero.float()) * scale.float()


def default_g_idx(in_features: int, group_size: int, device=None) -> torch.Tensor:
    """GPTQ's group of each input column, c // g."""
    return torch.arange(in_features, device=device, dtype=torch.int32) // group_size


# -- packing into 32-bit words -------------------------------------------------------------------

def _stream_positions(n: int, bits: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    start = torch.arange(n, device=device, dtype=torch.int64) * bits
    return start // WORD_BITS, start % WORD_BITS


def pack(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integers in [0, 2^b) along the last dimension into int32 words (a little-endian bit
    stream, value i at bits [i·b, i·b + b)); (..., n) → (..., ceil(n·b/32))."""
    _check_bits(bits)
    v = values.to(torch.int64)
    if v.numel() and (v.min() < 0 or v.max() >= 2**bits):
        raise ValueError(f"values to pack must lie in [0, {2**bits - 1}]")
    n = v.shape[-1]
    word, shift = _stream_positions(n, bits, v.device)
    words = torch.zeros(*v.shape[:-1], -(-n * bits // WORD_BITS) + 1, dtype=torch.int64, device=v.device)
    words.index_add_(-1, word, (v << shift) & 0xFFFFFFFF)  # the bits are disjoint, so + is |
    words.index_add_(-1, word + 1, v >> (WORD_BITS - shift))  # what straddles into the next word
    words = words[..., :-1]
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack(words: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Invert `pack`: the first n values of each row of int32 `words`, as uint8."""
    _check_bits(bits)
    if words.dtype != torch.int32:
        raise TypeError(f"packed words must be int32, got {words.dtype}")
    if words.shape[-1] != -(-n * bits // WORD_BITS):
        raise ValueError(f"{n} values of {bits} bits need {-(-n * bits // WORD_BITS)} words, got {words.shape[-1]}")
    w = words.to(torch.int64) & 0xFFFFFFFF
    w = torch.cat([w, torch.zeros_like(w[..., :1])], -1)
    word, shift = _stream_positions(n, bits, w.device)
    low = w.index_select(-1, word) >> shift
    high = (w.index_select(-1, word + 1) << (WORD_BITS - shift)) & 0xFFFFFFFF
    return ((low | high) & (2**bits - 1)).to(torch.uint8)


# -- the layer -----------------------------------------------------------------------------------

class GroupQuantLinear(nn.Module):
    """y = x·Ŵᵀ + b with Ŵ = (q − z)·s per group, dequantized on the fly.

    Its buffers are the hub's tensors (see the module docstring): `qweight`, `qzeros` (zero points
    as they are, v2), `scales`, and `g_idx` only when it is not c // g (act-order); `.nbytes` is
    their size plus the bias. `backend` "auto" uses the Triton kernel on CUDA tensors.
    """

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int,
                 group_size: int, g_idx: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                 backend: str = "auto"):
        super().__init__()
        _check_bits(bits)
        _check_block_size(group_size, "group_size")
        if codes.dim() != 2:
            raise ValueError(f"codes must be a matrix (out_features, in_features), got shape {tuple(codes.shape)}")
        self.out_features, self.in_features = codes.shape
        self.bits, self.group_size, self.backend = bits, group_size, backend
        if g_idx is not None:
            g_idx = g_idx.to(torch.int32)
            if g_idx.shape != (self.in_features,):
                raise ValueError(f"g_idx must have shape ({self.in_features},), got {tuple(g_idx.shape)}")
            if torch.equal(g_idx, default_g_idx(self.in_features, group_size, g_idx.device)):
                g_idx = None
        n_groups = -(-self.in_features // group_size) if g_idx is None else int(g_idx.max()) + 1
        if g_idx is not None and g_idx.min() < 0:
            raise ValueError("g_idx must be non-negative")
        if scales.shape != (self.out_features, n_groups) or zeros.shape != scales.shape:
            raise ValueError(f"scales and zeros must have shape ({self.out_features}, {n_groups}) "
                             f"(out_features, groups), got {tuple(scales.shape)} and {tuple(zeros.shape)}")
        self.register_buffer("qweight", pack(codes, bits).t().contiguous())
        self.register_buffer("qzeros", pack(zeros.t(), bits))
        self.register_buffer("scales", scales.t().to(torch.float16).contiguous())
        self.register_buffer("g_idx", g_idx)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self._exllama = None  # the act-order weight reordered for the kernel, made on first use

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 4, group_size: int = 128, sym: bool = False,
                    backend: str = "auto") -> "GroupQuantLinear":
        """Round to nearest (RTN): each weight to its nearest level, the baseline at the same storage."""
        weight = linear.weight.detach()
        _check_input(weight)
        _check_bits(bits)
        _check_block_size(group_size, "group_size")
        rows, cols = weight.shape
        # zero padding leaves a ragged last group's parameters as they are: its range contains 0
        groups = F.pad(weight.float(), (0, -cols % group_size)).view(rows, -1, group_size)
        scale, zero = group_params(groups, bits, sym)
        codes = quantize_codes(groups, scale, zero, bits).view(rows, -1)[:, :cols]
        return cls(codes, scale[..., 0], zero[..., 0], bits, group_size, None, linear.bias, backend)

    @property
    def group_index(self) -> torch.Tensor:
        """The group of each input column: g_idx, or c // g when none is stored."""
        if self.g_idx is not None:
            return self.g_idx
        return default_g_idx(self.in_features, self.group_size, self.qweight.device)

    def codes(self) -> torch.Tensor:
        """The unsigned codes q (out_features, in_features), uint8."""
        return unpack(self.qweight.t(), self.bits, self.in_features)

    def zeros(self) -> torch.Tensor:
        """The zero points z (out_features, groups), uint8."""
        return unpack(self.qzeros, self.bits, self.out_features).t()

    def dequantized_weight(self) -> torch.Tensor:
        """Ŵ (out, in) in float32: (q − z)·s with the group of each column from g_idx."""
        if use_triton(self.backend, self.qweight):
            from .kernels import groupwise as kernel

            return kernel.dequantize(self.qweight, self.qzeros, self.scales, self.g_idx, self.bits,
                                     self.group_size, self.in_features, torch.float32)
        g = self.group_index.long()
        return dequantize_codes(self.codes(), self.scales.t()[:, g], self.zeros()[:, g])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_triton(self.backend, x):
            from .kernels import groupwise as kernel

            y = kernel.matmul(self, x)
        else:
            y = F.linear(x, self.dequantized_weight().to(x.dtype))
        return y if self.bias is None else y + self.bias.to(x.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes as stored: packed codes, packed zero points, float16 scales, g_idx if any, bias."""
        return sum(t.nbytes for t in (*self.buffers(), *self.parameters()))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, act_order={self.g_idx is not None}")

    # -- the hub's tensors -----------------------------------------------------------------------

    def to_gptq(self, checkpoint_format: str = "gptq") -> dict[str, torch.Tensor]:
        """The tensors a hub GPTQ checkpoint stores for this layer (qweight, qzeros, scales, g_idx,
        bias). Format "gptq" (v1) stores z − 1 and cannot store z = 0 (ValueError)."""
        if checkpoint_format not in CHECKPOINT_FORMATS:
            raise ValueError(f"checkpoint_format must be one of {CHECKPOINT_FORMATS}, got {checkpoint_format!r}")
        qzeros = self.qzeros
        if checkpoint_format == "gptq":
            zeros = self.zeros()
            if (zeros == 0).any():
                raise ValueError("a zero point is 0, which checkpoint format 'gptq' (z − 1) cannot store: "
                                 "use checkpoint_format='gptq_v2'")
            qzeros = pack(zeros.t().to(torch.int64) - 1, self.bits)
        tensors = {"qweight": self.qweight, "qzeros": qzeros, "scales": self.scales, "g_idx": self.group_index}
        if self.bias is not None:
            tensors["bias"] = self.bias.detach().to(torch.float16)
        return {k: v.clone() for k, v in tensors.items()}

    @classmethod
    def from_gptq(cls, tensors: dict[str, torch.Tensor], bits: int, group_size: int,
                  checkpoint_format: str = "gptq", backend: str = "auto") -> "GroupQuantLinear":
        """A layer from a hub checkpoint's tensors (the inverse of `to_gptq`)."""
        if checkpoint_format not in CHECKPOINT_FORMATS:
            raise ValueError(f"checkpoint_format must be one of {CHECKPOINT_FORMATS}, got {checkpoint_format!r}")
        missing = {"qweight", "qzeros", "scales"} - set(tensors)
        if missing:
            raise ValueError(f"GPTQ tensors missing: {sorted(missing)}")
        scales = tensors["scales"]
        n_groups, out_features = scales.shape
        in_features = tensors["g_idx"].numel() if "g_idx" in tensors else tensors["qweight"].shape[0] * WORD_BITS // bits
        codes = unpack(tensors["qweight"].t().contiguous(), bits, in_features)
        zeros = unpack(tensors["qzeros"], bits, out_features).to(torch.int64)
        if checkpoint_format == "gptq":
            # readers add 1 back; masked to b bits here, so a stored 2^b − 1 (z = 0 written as −1 by
            # a careless writer) reads as 0, where AutoGPTQ's reader gets 2^b
            zeros = (zeros + 1) & (2**bits - 1)
        return cls(codes, scales.t(), zeros.t(), bits, group_size, tensors.get("g_idx"), tensors.get("bias"), backend)


@dataclass(frozen=True)
class RTN:
    """`nn.quantize_model` scheme: round to nearest at this storage (`GroupQuantLinear.from_linear`),
    the baseline that GPTQ and AWQ are compared with at the same bytes."""

    bits: int = 4
    group_size: int = 128
    sym: bool = False

    def __post_init__(self):
        _check_bits(self.bits)
        _check_block_size(self.group_size, "group_size")

    @property
    def name(self) -> str:
        return f"rtn-w{self.bits}-g{self.group_size}" + ("-sym" if self.sym else "")

    def quantize_linear(self, linear: nn.Linear) -> GroupQuantLinear:
        return GroupQuantLinear.from_linear(linear, self.bits, self.group_size, self.sym)


def bits_per_weight(bits: int, group_size: int) -> float:
    """Storage per weight in bits: b for the code plus (16 + b)/g for the group's scale and zero."""
    return bits + (16 + bits) / group_size

