"""Absmax and zero-point quantization at every granularity, and the error they make (MSE, SQNR,
and the entropy of the codes).

Absmax:      s = qmax / max|x|,        q = round(s·x),      x̂ = q / s,        qmax = 2^(b−1) − 1
Zero-point:  s = (2^b − 1) / (max − min),  z = −round(s·min) − 2^(b−1),  q = round(s·x) + z,
             x̂ = (q − z) / s
Rounding is half to even (numpy's and torch's `round`), as in the lecture's example
[-3, 1, 2, 4] → [-95, 32, 64, 127].
"""
import math
from dataclasses import dataclass

import torch

from .kernels import use_triton

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_bits(bits: int) -> int:
    """qmax = 2^(bits−1) − 1 for signed codes that fit in int8."""
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int from 2 to 8, got {bits!r}")
    return 2 ** (bits - 1) - 1


def check_granularity(granularity: str, group_size: int | None, allowed: tuple[str, ...]) -> None:
    """A clear error unless `granularity` is one of `allowed` and a positive int group_size is given
    exactly when it is "group"."""
    if granularity not in allowed:
        raise ValueError(f"granularity must be one of {allowed}, got {granularity!r}")
    if (granularity == "group") != (group_size is not None):
        raise ValueError("group_size is required for granularity 'group' and only for it")
    if group_size is not None:
        _check_block_size(group_size, "group_size")


def _check_block_size(size: int, name: str = "block_size") -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"{name} must be a positive int, got {size!r}")


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be a float32, float16 or bfloat16 tensor, got {getattr(x, 'dtype', type(x))}")
    if x.numel() == 0:
        raise ValueError("x is empty: there is nothing to quantize")
    if x.numel() >= 2**31:
        raise ValueError(f"x has {x.numel()} elements; at most 2^31 − 1 are supported")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf: quantization needs finite values")


def _scales(levels: int, extent: torch.Tensor) -> torch.Tensor:
    """s = levels / extent in float32, correctly rounded, and 0 where that is not finite (an
    all-zero slice, or one so tiny that s overflows): such a slice gets codes 0 and x̂ = 0.

    (A Python number divided by a tensor is computed as number · (1/tensor), rounded twice.)
    """
    scale = torch.full_like(extent, levels, dtype=torch.float32) / extent.float()
    return torch.where(torch.isfinite(scale), scale, torch.zeros_like(scale))


@dataclass
class QTensor:
    """Integer codes and the scale(s) and zero point(s) that map them back: x̂ = (q − z) / s.

    `codes` has the input's shape; `scale` and `zero_point` broadcast against the codes, or,
    with `group_size` g, against the codes viewed as (..., n / g, g). Absmax has no zero point.
    """

    codes: torch.Tensor  # int8
    scale: torch.Tensor  # float32; 0 marks a slice that dequantizes to 0
    zero_point: torch.Tensor | None  # int32
    shape: torch.Size
    bits: int
    group_size: int | None = None

    def dequantize(self) -> torch.Tensor:
        q = self.codes.float()
        if self.group_size is not None:
            q = q.reshape(*self.shape[:-1], -1, self.group_size)
        if self.zero_point is not None:
            q = q - self.zero_point
        x = torch.where(self.scale > 0, q / self.scale, torch.zeros_like(q))
        return x.reshape(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes as stored: the codes packed at `bits` each, plus the scales and zero points."""
        extra = 0 if self.zero_point is None else self.zero_point.nbytes
        return math.ceil(self.codes.numel() * self.bits / 8) + self.scale.nbytes + extra

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.nbytes / self.codes.numel()


def _slices(x: torch.Tensor, dim: int | None, group_size: int | None) -> tuple[torch.Tensor, tuple[int, ...]]:
    """x as float32, viewed so that reducing over the returned dimensions gives one statistic per
    slice: the whole tensor (dim None), each index along `dim`, or groups along the last dim."""
    x = x.float()
    if group_size is not None:
        if dim is not None:
            raise ValueError("give dim or group_size, not both (groups run along the last dimension)")
        _check_block_size(group_size, "group_size")
        if x.shape[-1] % group_size:
            raise ValueError(f"the last dimension ({x.shape[-1]}) is not a multiple of group_size={group_size}")
        return x.reshape(*x.shape[:-1], -1, group_size), (-1,)
    if dim is None:
        return x, tuple(range(x.dim()))
    if not isinstance(dim, int) or not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim must be None or an int in [{-x.dim()}, {x.dim()}), got {dim!r}")
    return x, tuple(d for d in range(x.dim()) if d != dim % x.dim())


def absmax_quantize(x: torch.Tensor, bits: int = 8, dim: int | None = None,
                    group_size: int | None = None) -> QTensor:
    """Symmetric quantization: s = qmax / max|x| per slice, q = round(s·x), qmax = 2^(b−1) − 1.

    dim=None: one scale for the tensor; dim=d: one scale for each index along d (for a matrix,
    dim=0 is per row and dim=1 per column); group_size=g: one per g consecutive values of the last
    dimension. An all-zero slice gets scale 0 and codes 0.
    """
    qmax = _check_bits(bits)
    _check_input(x)
    view, dims = _slices(x, dim, group_size)
    scale = _scales(qmax, view.abs().amax(dims, keepdim=True))
    codes = torch.round(view * scale).to(torch.int8)
    return QTensor(codes.reshape(x.shape), scale, None, x.shape, bits, group_size)


def zeropoint_quantize(x: torch.Tensor, bits: int = 8, dim: int | None = None,
                       group_size: int | None = None) -> QTensor:
    """Asymmetric quantization onto the 2^b codes −2^(b−1) … 2^(b−1) − 1 (slices as in
    `absmax_quantize`): s = (2^b − 1) / (max − min), z = −round(s·min) − 2^(b−1),
    q = clamp(round(s·x) + z). A constant slice c ≠ 0 uses the range [min(c, 0), max(c, 0)];
    an all-zero slice gets scale 0.
    """
    _check_bits(bits)
    _check_input(x)
    levels, half = 2**bits - 1, 2 ** (bits - 1)
    view, dims = _slices(x, dim, group_size)
    lo, hi = view.amin(dims, keepdim=True), view.amax(dims, keepdim=True)
    constant = lo == hi
    lo, hi = torch.where(constant, lo.clamp(max=0), lo), torch.where(constant, hi.clamp(min=0), hi)
    extent = hi - lo
    if not torch.isfinite(extent).all():
        raise ValueError("max − min overflows float32 (|x| near 3.4e38): use absmax_quantize")
    scale = _scales(levels, extent)
    zero = -torch.round(scale * lo) - half
    if zero.abs().max() >= 2**31:
        raise ValueError("the zero point does not fit in int32: x's values are far from 0 relative to their range")
    codes = (torch.round(view * scale) + zero).clamp(-half, half - 1)
    return QTensor(codes.to(torch.int8).reshape(x.shape), scale, zero.to(torch.int32), x.shape, bits, group_size)


def _triton_max_block() -> int:
    from .kernels import absmax as kernel

    return kernel.MAX_BLOCK


def absmax_blockwise(
    x: torch.Tensor, block_size: int = 64, bits: int = 8, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax quantization in blocks of `block_size` consecutive elements (row-major order), the
    storage layout of the book's block formats; a shorter last block keeps its own absmax.

    Returns int8 codes shaped like `x` and the float32 absmax a of each block (s = qmax / a, as in
    `absmax_quantize`). `backend` is "auto", "torch" or "triton" (`lec19quant.kernels.use_triton`);
    "auto" keeps blocks larger than the kernel's MAX_BLOCK (4096) on the torch path.
    """
    qmax = _check_bits(bits)
    _check_block_size(block_size)
    _check_input(x)
    n_blocks = -(-x.numel() // block_size)
    if use_triton(backend, x) and (backend == "triton" or block_size <= _triton_max_block()):
        from .kernels import absmax as kernel

        codes = torch.empty(x.shape, dtype=torch.int8, device=x.device)
        absmax = torch.empty(n_blocks, dtype=torch.float32, device=x.device)
        kernel.absmax_blockwise(x.contiguous().view(-1), codes.view(-1), absmax, block_size, qmax)
        return codes, absmax
    flat = x.reshape(-1).float()
    blocks = torch.nn.functional.pad(flat, (0, n_blocks * block_size - flat.numel())).view(n_blocks, block_size)
    absmax = blocks.abs().amax(dim=1)
    codes = torch.round(blocks * _scales(qmax, absmax)[:, None]).to(torch.int8)
    return codes.view(-1)[: x.numel()].view(x.shape), absmax


def dequantize_blockwise(
    codes: torch.Tensor, absmax: torch.Tensor, block_size: int = 64, bits: int = 8
) -> torch.Tensor:
    """Invert `absmax_blockwise`: x̂ = q / s with s = qmax / a per block (0 where s is not finite)."""
    qmax = _check_bits(bits)
    _check_block_size(block_size)
    n_blocks = -(-codes.numel() // block_size)
    if absmax.shape != (n_blocks,):
        raise ValueError(
            f"absmax has shape {tuple(absmax.shape)}, but {codes.numel()} codes in blocks of "
            f"{block_size} need ({n_blocks},)"
        )
    scale = _scales(qmax, absmax).repeat_interleave(block_size)[: codes.numel()]
    values = torch.where(scale > 0, codes.reshape(-1).float() / scale, torch.zeros_like(scale))
    return values.view(codes.shape)


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean squared error (1/n) Σ (x − x̂)², in float64."""
    return (x.double() - x_hat.double()).square().mean().item()


def max_abs_error(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """max |x − x̂|."""
    return (x.double() - x_hat.double()).abs().max().item()


def sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(Σ x² / Σ (x − x̂)²) in dB; inf when x̂ = x."""
    noise = (x.double() - x_hat.double()).square().sum().item()
    return math.inf if noise == 0 else 10 * math.log10(x.double().square().sum().item() / noise)


def code_entropy(codes: torch.Tensor) -> float:
    """Bits of information per code: −Σ p·log2 p over the frequencies p of the distinct codes (any
    integer codes, negative ones included); log2 of the number of codes when all are used equally."""
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, got {codes.dtype}")
    if codes.numel() == 0:
        raise ValueError("codes is empty: no frequencies to take the entropy of")
    counts = torch.unique(codes.flatten(), return_counts=True)[1].double()
    p = counts / counts.sum()
    return max(0.0, -(p * p.log2()).sum().item())  # max: one code alone gives −0.0


# The granularities the book compares, as keyword arguments of absmax_quantize / zeropoint_quantize.
GRANULARITIES = {
    "per tensor": {},
    "per row": {"dim": 0},
    "per column": {"dim": 1},
    "group 128": {"group_size": 128},
    "group 32": {"group_size": 32},
}
