"""Int8 matrix multiplication with vector-wise scales, as in LLM.int8() (Dettmers et al. 2022).

Rows of X and columns of W get their own absmax scales s_x = 127 / max|X_i,:| and
s_w = 127 / max|W_:,j|; Z = Q_x · Q_w is computed exactly in int32, and X·W ≈ Z / (s_x ⊗ s_w).
"""
from dataclasses import dataclass

import torch
from torch import nn

from .kernels import use_triton
from .quantize import absmax_quantize

MAX_K = 2**31 // 128**2  # beyond this an int32 sum of int8 products could overflow


def matmul_int32(a: torch.Tensor, b: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """C = A·B for int8 A (M, K) and B (K, N), accumulated exactly in int32.

    The torch path is PyTorch's int8 GEMM (`torch._int_mm`, int32 accumulation) on CPU; on CUDA,
    where that one needs M > 16 and K, N multiples of 8, it multiplies in float64, exact here.
    """
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise TypeError(f"matmul_int32 takes int8 matrices, got {a.dtype} and {b.dtype}")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be multiplied")
    if a.shape[1] > MAX_K:
        raise ValueError(f"K = {a.shape[1]} > {MAX_K}: the int32 accumulator could overflow")
    if use_triton(backend, a, b):
        from .kernels import int8_matmul as kernel

        c = torch.empty(a.shape[0], b.shape[1], dtype=torch.int32, device=a.device)
        kernel.matmul_int32(a, b, c)
        return c
    if a.is_cuda:
        return (a.double() @ b.double()).to(torch.int32)
    return torch._int_mm(a, b)


def _dequantize_product(z: torch.Tensor, s_x: torch.Tensor, s_w: torch.Tensor) -> torch.Tensor:
    """Z / (s_x ⊗ s_w), with 0 where a scale is 0 (an all-zero row or column)."""
    outer = s_x * s_w
    return torch.where(outer > 0, z.float() / outer, torch.zeros_like(outer))


def int8_matmul(x: torch.Tensor, w: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """X·W for float X (M, K) and W (K, N), through vector-wise int8 quantization:
    Q_x = round(s_x · X) per row, Q_w = round(s_w · W) per column, X·W ≈ (Q_x·Q_w) / (s_x ⊗ s_w)."""
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"x {tuple(x.shape)} and w {tuple(w.shape)} must be (M, K) and (K, N)")
    qx, qw = absmax_quantize(x, 8, dim=0), absmax_quantize(w, 8, dim=1)
    return _dequantize_product(matmul_int32(qx.codes, qw.codes, backend), qx.scale, qw.scale)


class W8A8Linear(nn.Module):
    """y = x·Wᵀ + b with int8 weights (one scale per output) and int8 activations quantized on the
    fly, one scale per tensor or per token (row of x); the product is exact in int32."""

    def __init__(self, linear: nn.Linear, activations: str = "token", backend: str = "auto"):
        super().__init__()
        if activations not in ("tensor", "token"):
            raise ValueError(f"activations must be 'tensor' or 'token', got {activations!r}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.activations, self.backend = activations, backend
        qw = absmax_quantize(linear.weight.detach(), 8, dim=0)  # per row of W: per output
        self.register_buffer("codes_t", qw.codes.t().contiguous())  # (in, out), as X·Wᵀ needs
        self.register_buffer("scale", qw.scale.reshape(1, -1))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        qx = absmax_quantize(rows, 8, dim=0 if self.activations == "token" else None)
        y = _dequantize_product(matmul_int32(qx.codes, self.codes_t, self.backend), qx.scale, self.scale)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activations={self.activations}"


@dataclass(frozen=True)
class W8A8:
    """`quantize_model` scheme: int8 weights per output, int8 activations per tensor or token."""

    activations: str

    @property
    def name(self) -> str:
        return f"w8a8-{self.activations}"

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        return W8A8Linear(linear, self.activations)
