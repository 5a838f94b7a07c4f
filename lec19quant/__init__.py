"""lec19quant: the package of the course book on quantizing large language models.

Modules follow the book's chapters: `memory` (why quantize), `formats` (how numbers are stored),
`models` (the running example), `quantize` (quantization basics), `quality`
(measuring what quantization costs, as llama.cpp does), `int8` (int8 matmul and
LLM.int8()), `smoothquant` and `awq` (per-channel scales from calibration text), `groupwise` (the storage of GPTQ and AWQ checkpoints), `gptq` (GPTQ), `gguf` (llama.cpp's block formats, importance matrices and i-quants, recipes and files), `nvfp4` (4-bit floats), `qat`
(quantization-aware training), `qlora` (NF4, LoRA, paged AdamW) and `roofline` (making it fast);
`nn` swaps a model's layers for quantized ones by scheme name; `display`, `plots` and `checks`
serve the notebooks, `assignments` makes their student versions and `grading` grades them; the Triton kernels live in `kernels` and are imported only when used.
"""
import os

__version__ = "0.1.0"

FULL_SIZE_ENV = "LEC19QUANT_FULL"


def full_size() -> bool:
    """The book's one switch: True when LEC19QUANT_FULL is 1/true/yes (Colab, a GPU), False when it
    is unset, empty or 0/false/no. Notebooks scale their work with it; the code path is the same."""
    value = os.environ.get(FULL_SIZE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"{FULL_SIZE_ENV}={value!r}: use 1/true/yes for full size, 0/false/no or unset for small")
