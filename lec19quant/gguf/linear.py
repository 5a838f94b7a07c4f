"""A Linear layer whose weight is kept in a GGUF block format, and its `quantize_model` scheme.

    quantize_model(model, "q4_k")   # every Linear's W stored as Q4_K bytes, as llama.cpp would

A weight whose rows are not a whole number of blocks takes llama.cpp's fallback format
(`recipes.fallback`: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, …).
"""
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import FORMATS, dequantize, matvec, quantize
from .recipes import fallback


class GGUFLinear(nn.Module):
    """y = x·Ŵᵀ + b, Ŵ decoded from the GGUF blocks of W (a uint8 buffer, `format` bytes per
    block). A single token on a GPU with Q4_K goes through the fused dequantize + matrix-vector
    kernel; everything else dequantizes W and calls linear."""

    def __init__(self, linear: nn.Linear, qtype: str):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.format = fallback(qtype, linear.in_features)
        if self.format not in FORMATS:
            raise ValueError(f"in_features={linear.in_features} is not a multiple of 32: no GGUF block format fits")
        raw = quantize(linear.weight.detach(), self.format)
        self.register_buffer("raw", torch.from_numpy(raw).to(linear.weight.device))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize(self.raw, self.format, (self.out_features, self.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and self.format == "Q4_K" and x.numel() == self.in_features:
            y = matvec(self.raw, self.format, (self.out_features, self.in_features), x.reshape(-1))
            y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
            return y if self.bias is None else y + self.bias.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, self.dequantized_weight().to(x.dtype), bias)

    @property
    def nbytes(self) -> int:
        """Bytes as stored: the blocks and the bias."""
        return self.raw.nbytes + (0 if self.bias is None else self.bias.nbytes)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.format}"


@dataclass(frozen=True)
class GGUFWeights:
    """`quantize_model` scheme: every Linear's weight in one GGUF block format (named in lower
    case: "q4_k", "q6_k", "q8_0", …), activations untouched."""

    format: str

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"unknown GGUF block format {self.format!r}; known: {', '.join(FORMATS)}")

    @property
    def name(self) -> str:
        return self.format.lower()

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        return GGUFLinear(linear, self.format)
