"""Absmax quantization: q = round(x · s) with s = qmax / max|x| and qmax = 2^(b−1) − 1; x̂ = q / s.

Rounding is half to even everywhere (numpy's and torch's `round`), as in the lecture's example
[-3, 1, 2, 4] → [-95, 32, 64, 127].
"""
import torch

from .kernels import use_triton

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_bits(bits: int) -> int:
    """qmax = 2^(bits−1) − 1 for signed codes that fit in int8."""
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int from 2 to 8, got {bits!r}")
    return 2 ** (bits - 1) - 1


def _check_block_size(block_size: int) -> None:
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")


def _scales(absmax: torch.Tensor, qmax: int) -> torch.Tensor:
    """s = qmax / a, correctly rounded, and 0 where that is not finite.

    (A Python number divided by a tensor is computed as number · (1/tensor), rounded twice.)
    """
    scale = torch.full_like(absmax, qmax, dtype=torch.float32) / absmax.float()
    return torch.where(torch.isfinite(scale), scale, torch.zeros_like(scale))


def _triton_max_block() -> int:
    from .kernels import absmax as kernel

    return kernel.MAX_BLOCK


def absmax_blockwise(
    x: torch.Tensor, block_size: int = 64, bits: int = 8, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize `x` in blocks of `block_size` consecutive elements (row-major order).

    Per block: a = max|x|, s = qmax / a, q = round(x · s). Returns int8 codes shaped like `x` and
    the float32 absmax of each block; a shorter last block keeps its own absmax. A block whose s is
    not finite (a = 0, or a < qmax / 3.4e38, subnormal values only) gets codes 0. float16/bfloat16
    inputs are upcast to float32 first.
    `backend` is "auto", "torch" or "triton" (see `lec19quant.kernels.use_triton`); "auto" keeps
    blocks larger than the kernel's MAX_BLOCK (4096) on the torch path.
    """
    qmax = _check_bits(bits)
    _check_block_size(block_size)
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be a float32, float16 or bfloat16 tensor, got {getattr(x, 'dtype', type(x))}")
    if x.numel() == 0:
        raise ValueError("x is empty: there is nothing to quantize")
    if x.numel() >= 2**31:
        raise ValueError(f"x has {x.numel()} elements; at most 2^31 − 1 are supported")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf: absmax quantization needs finite values")
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
    scale = _scales(absmax, qmax)
    codes = torch.round(blocks * scale[:, None]).to(torch.int8)
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
    scale = _scales(absmax, qmax)
    scale = scale.repeat_interleave(block_size)[: codes.numel()]
    values = torch.where(scale > 0, codes.reshape(-1).float() / scale, torch.zeros_like(scale))
    return values.view(codes.shape)
