"""Swapping a model's Linear layers for quantized ones: `quantize_model(model, scheme)`.

A scheme turns one nn.Linear into a module that computes y = x·Wᵀ + b from a quantized W (and
perhaps quantized x). Chapters add schemes; this module holds the mechanism, the weight-only
round-to-nearest absmax family (per tensor, per output row, per group of g weights), and the
names of the others (W8A8 from `int8`).
"""
import fnmatch
import re
from dataclasses import dataclass

import torch
from torch import nn

from .quantize import absmax_blockwise, check_granularity, dequantize_blockwise


class QuantizedLinear(nn.Module):
    """y = x·Ŵᵀ + b, where Ŵ is dequantized on the fly from b-bit absmax codes, one float32
    absmax per block of `block_size` consecutive weights (row-major)."""

    def __init__(self, linear: nn.Linear, bits: int, block_size: int, backend: str = "auto"):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bits, self.block_size = bits, block_size
        codes, absmax = absmax_blockwise(linear.weight.detach(), block_size, bits, backend=backend)
        self.register_buffer("codes", codes)
        self.register_buffer("absmax", absmax)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_blockwise(self.codes, self.absmax, self.block_size, self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, self.dequantized_weight().to(x.dtype), bias)

    @property
    def nbytes(self) -> int:
        """Bytes as stored packed: b bits per weight, 4 per absmax, and the bias."""
        bias = 0 if self.bias is None else self.bias.nbytes
        return -(-self.codes.numel() * self.bits // 8) + self.absmax.nbytes + bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, block_size={self.block_size}"


@dataclass(frozen=True)
class WeightOnlyRTN:
    """Round-to-nearest absmax weights at `bits` bits with one scale per tensor, per output row,
    or per group of `group_size` consecutive weights in a row; activations stay as they are."""

    bits: int
    granularity: str  # "tensor", "row" or "group"
    group_size: int | None = None

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be an int from 2 to 8, got {self.bits!r}")
        check_granularity(self.granularity, self.group_size, ("tensor", "row", "group"))

    @property
    def name(self) -> str:
        return f"w{self.bits}-" + (f"g{self.group_size}" if self.granularity == "group" else self.granularity)

    def block_size(self, linear: nn.Linear) -> int:
        if self.granularity == "tensor":
            return linear.weight.numel()
        if self.granularity == "row":
            return linear.in_features
        if linear.in_features % self.group_size:
            raise ValueError(f"in_features={linear.in_features} is not a multiple of group_size={self.group_size}")
        return self.group_size

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        return QuantizedLinear(linear, self.bits, self.block_size(linear))


_WEIGHT_ONLY = re.compile(r"w(\d+)-(tensor|row|g(\d+))")

def named_schemes() -> dict:
    """The schemes known by name beside the weight-only family "w<bits>-<tensor|row|g<size>>",
    one or more per chapter, imported here so that a chapter's module need not import this one."""
    from .int8 import W8A8

    schemes = [W8A8("tensor"), W8A8("token")]
    from .nvfp4 import FourBit

    schemes += [FourBit(fmt, activations) for fmt in ("nvfp4", "mxfp4") for activations in (False, True)]
    from .qlora import NF4Scheme

    schemes += [NF4Scheme()]
    from .gguf.linear import GGUFWeights

    schemes += [GGUFWeights(f) for f in ("Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q4_0", "Q3_K", "Q2_K")]
    from .int8 import LLMInt8

    schemes += [LLMInt8(), LLMInt8(variant="ideal")]
    from .gptq import SCHEMES as GPTQ_SCHEMES  # they need calibration: see gptq.GPTQ

    schemes += GPTQ_SCHEMES
    from .smoothquant import SmoothQuantW8A8

    schemes += [SmoothQuantW8A8("tensor"), SmoothQuantW8A8("token")]
    from .awq import AWQ
    from .groupwise import RTN

    schemes += [cls(bits, 128) for cls in (AWQ, RTN) for bits in (4, 3)]
    return {s.name: s for s in schemes}


def get_scheme(scheme):
    """A scheme object, or one from its short name: "w8-tensor", "w4-row", "w4-g32", "w8a8-token", ..."""
    if not isinstance(scheme, str):
        if not hasattr(scheme, "quantize_linear"):
            raise TypeError(f"a scheme is a name or an object with quantize_linear(), got {type(scheme).__name__}")
        return scheme
    named = named_schemes()
    if scheme in named:
        return named[scheme]
    match = _WEIGHT_ONLY.fullmatch(scheme)
    if match is None:
        raise ValueError(f"unknown scheme {scheme!r}; examples: {', '.join(available_schemes())}")
    bits, granularity, group = match.groups()
    if group is not None:
        return WeightOnlyRTN(int(bits), "group", int(group))
    return WeightOnlyRTN(int(bits), granularity)


def available_schemes() -> list[str]:
    """Short names of the built-in schemes (any bits from 2 to 8 and any group size also work)."""
    return [f"w{b}-{g}" for b in (8, 4, 3, 2) for g in ("tensor", "row", "g32", "g128")] + list(named_schemes())


def _saved_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The module's own parameters and persistent buffers (what its state_dict holds)."""
    buffers = [t for name, t in module.named_buffers(recurse=False)
               if name not in module._non_persistent_buffers_set]
    return [*module.parameters(recurse=False), *buffers]


def model_nbytes(model: nn.Module) -> int:
    """Bytes of a model's weights as stored: a module with an `nbytes` property (a quantized
    layer whose codes are packed) counts that, shared (tied) tensors count once, non-persistent
    buffers (such as rotary tables) not at all."""
    seen, total = set(), 0
    for module in model.modules():
        own = [t for t in _saved_tensors(module) if t.data_ptr() not in seen]
        seen.update(t.data_ptr() for t in own)
        total += module.nbytes if hasattr(module, "nbytes") else sum(t.nbytes for t in own)
    return total


@dataclass
class QuantizationReport:
    scheme: str
    replaced: list[str]  # names of the Linear layers that were quantized
    skipped: list[str]  # Linear layers left as they were
    bytes_before: int
    bytes_after: int

    def __repr__(self) -> str:
        return (f"{self.scheme}: {len(self.replaced)} Linear layers quantized, {len(self.skipped)} skipped "
                f"({', '.join(self.skipped) or 'none'}); weights {self.bytes_before / 1e6:,.1f} MB → "
                f"{self.bytes_after / 1e6:,.1f} MB")


def quantize_model(model: nn.Module, scheme, skip=("lm_head",), tokenizer=None) -> QuantizationReport:
    """Replace, in place, every nn.Linear of `model` by `scheme.quantize_linear(linear)`, except
    those whose name or last name component matches a glob pattern in `skip`. A scheme with a
    `prepare_model(model, tokenizer)` method (one that calibrates, such as SmoothQuant or AWQ)
    changes the float model with it first; `tokenizer` reads its calibration text (default: the
    model's own, loaded by its name)."""
    scheme = get_scheme(scheme)
    if isinstance(skip, str):
        skip = (skip,)
    before = model_nbytes(model)
    if hasattr(scheme, "prepare_model"):
        scheme.prepare_model(model, tokenizer)
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    replaced, skipped = [], []
    for name, linear in linears:
        if any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name.rsplit(".", 1)[-1], p) for p in skip):
            skipped.append(name)
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, scheme.quantize_linear(linear))
        replaced.append(name)
    return QuantizationReport(getattr(scheme, "name", type(scheme).__name__), replaced, skipped,
                              before, model_nbytes(model))
