"""llama.cpp's GGUF: block formats bit-exact with ggml (`blocks`; the non-linear IQ4_NL and
IQ4_XS in `iquants`), importance matrices (`imatrix`), the per-tensor recipes of Q4_K_M and
friends (`recipes`), and reading and writing .gguf files (`io`).

The package is `lec19quant.gguf`; the GGUF container itself comes from the PyPI package `gguf`
(imported absolutely, so the two never clash).
"""
from . import iquants  # noqa: F401  (registers IQ4_NL and IQ4_XS in FORMATS)
from .blocks import FORMATS, BlockFormat, dequantize, explain_block, get_format, matvec, quantize, row_bytes

__all__ = ["FORMATS", "BlockFormat", "dequantize", "explain_block", "get_format", "matvec", "quantize", "row_bytes"]
