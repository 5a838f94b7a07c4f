"""Triton kernels, one module per family. Imported lazily: the package never requires triton.

`use_triton(backend, *tensors)` is the one place that decides between a kernel and its torch
reference: "torch" never uses Triton, "triton" always does, "auto" does on CUDA tensors when
triton imports.
"""
import importlib.util
import os

import torch

BACKENDS = ("auto", "torch", "triton")


def triton_available() -> bool:
    """True when the `triton` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when TRITON_INTERPRET=1, i.e. kernels run on CPU tensors through Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    """Whether an operation on `tensors` should run its Triton kernel for this `backend`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if backend == "auto":
        return on_cuda and triton_available()
    if not triton_available():
        raise RuntimeError("backend='triton' needs triton: pip install 'lec19quant[gpu]'")
    if not on_cuda and not interpreting():
        raise RuntimeError(
            "backend='triton' on CPU tensors needs Triton's interpreter: set TRITON_INTERPRET=1 "
            "before lec19quant's kernels are first imported"
        )
    return True
