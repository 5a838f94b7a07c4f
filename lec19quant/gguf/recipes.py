"""Which block format each tensor of a model gets in a GGUF file (file sizes: `io.predict_size`).

A file type such as Q4_K_M is a recipe, not one format: llama.cpp's `llama-quantize`
(src/llama-quant.cpp) starts every 2-D weight from a base format and changes a few:

- 1-D tensors and norms stay F32; the output head gets Q6_K (Q8_0 stays Q8_0), and so does the
  token embedding when it is tied to the head; an untied token embedding keeps the base format.
- Q4_K_M / Q5_K_M: attn_v and ffn_down get Q6_K in the layers where `use_more_bits` holds —
  the first and last eighth of the layers and every third layer between them.
- Q4_K_S: attn_v gets Q5_K in the first 4 layers, ffn_down in the first eighth of the layers.
- Q3_K_M: attn_v Q5_K in the first 2 layers, Q4_K after; ffn_down Q5_K in the first 1/16 of
  the layers, Q4_K after; attn_output Q4_K. Q3_K_L: attn_v, ffn_down and attn_output Q5_K.
- Q2_K: attn_v Q3_K (Q4_K when 4 or more query heads share a key/value head), ffn_down and
  attn_output Q3_K.
- IQ4_NL / IQ4_XS: attn_v Q5_K when 4 or more query heads share a key/value head; without an
  importance matrix (`imatrix=False`) ffn_down gets Q5_K in the first eighth of the layers.
- A row length that the chosen block does not divide falls back: Q4_K → Q5_0, Q5_K → Q5_1,
  Q6_K → Q8_0, Q2_K/Q3_K → Q4_0, IQ4_XS → IQ4_NL, and to F16 when even a block of 32 does not
  divide it.

An importance matrix changes the bytes of every quantized tensor (`blocks.quantize(imatrix=)`)
but, for these file types, the formats only of IQ4_NL/IQ4_XS's ffn_down. IQ3_M, IQ2_M and the
other lattice i-quants are not implemented.

Mixture-of-experts, Falcon and 70B-specific rules of llama-quant.cpp are not implemented
(`lec19quant.memory` describes dense models only).
"""
import re
from collections.abc import Iterable, Mapping

import gguf

from .. import memory
from .blocks import get_format

# file type → (base block format, llama.cpp's LLAMA_FTYPE as stored in general.file_type)
FTYPES = {
    "F32": ("F32", gguf.LlamaFileType.ALL_F32),  # unquantized (llama.cpp's convert --outtype)
    "F16": ("F16", gguf.LlamaFileType.MOSTLY_F16),
    "BF16": ("BF16", gguf.LlamaFileType.MOSTLY_BF16),
    "Q4_K_S": ("Q4_K", gguf.LlamaFileType.MOSTLY_Q4_K_S),
    "Q4_K_M": ("Q4_K", gguf.LlamaFileType.MOSTLY_Q4_K_M),
    "Q5_K_S": ("Q5_K", gguf.LlamaFileType.MOSTLY_Q5_K_S),
    "Q5_K_M": ("Q5_K", gguf.LlamaFileType.MOSTLY_Q5_K_M),
    "Q6_K": ("Q6_K", gguf.LlamaFileType.MOSTLY_Q6_K),
    "Q8_0": ("Q8_0", gguf.LlamaFileType.MOSTLY_Q8_0),
    "Q2_K": ("Q2_K", gguf.LlamaFileType.MOSTLY_Q2_K),
    "Q3_K_S": ("Q3_K", gguf.LlamaFileType.MOSTLY_Q3_K_S),
    "Q3_K_M": ("Q3_K", gguf.LlamaFileType.MOSTLY_Q3_K_M),
    "Q3_K_L": ("Q3_K", gguf.LlamaFileType.MOSTLY_Q3_K_L),
    "IQ4_NL": ("IQ4_NL", gguf.LlamaFileType.MOSTLY_IQ4_NL),
    "IQ4_XS": ("IQ4_XS", gguf.LlamaFileType.MOSTLY_IQ4_XS),
}
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "Q2_K": "Q4_0", "Q3_K": "Q4_0", "IQ4_XS": "IQ4_NL"}
PLAIN = {"F32": 4, "F16": 2, "BF16": 2}  # bytes per weight of the formats that are not blocks


def _check_ftype(ftype: str) -> str:
    if ftype not in FTYPES:
        raise ValueError(f"unknown file type {ftype!r}; known: {', '.join(FTYPES)}")
    return FTYPES[ftype][0]


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of layers that get more bits: the first and last eighth, and every
    third layer in between (integer division, as in C)."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def fallback(qtype: str, row: int) -> str:
    """`qtype`, or the format llama.cpp uses instead when a row of `row` weights is not a
    whole number of its blocks."""
    if qtype in PLAIN or row % get_format(qtype).block_size == 0:
        return qtype
    qtype = FALLBACK.get(qtype, qtype)
    return qtype if row % get_format(qtype).block_size == 0 else "F16"


def _layer(name: str) -> int:
    match = re.match(r"blk\.(\d+)\.", name)
    if match is None:
        raise ValueError(f"{name} has no layer number (blk.N.)")
    return int(match.group(1))


def _grouped_query(tensors: dict) -> int:
    """How many query heads share a key/value head (n_gqa): rows of attn_q over rows of attn_k."""
    q, k = tensors.get("blk.0.attn_q.weight"), tensors.get("blk.0.attn_k.weight")
    return q[0] // k[0] if q and k else 1


def choose_types(tensors: Mapping | Iterable, ftype: str = "Q4_K_M", imatrix: bool = False) -> dict[str, str]:
    """The format of each tensor in a file of type `ftype` (a key of `FTYPES`: "F32", "Q4_K_M",
    "Q3_K_M", "Q2_K", "IQ4_XS", ...), following llama.cpp's rules (module docstring); `imatrix`:
    whether the file is quantized with an importance matrix.

    `tensors` maps GGUF tensor names ("blk.3.attn_v.weight") to shapes as torch writes them,
    the last dimension being the row (GGUF's ne0), or is an iterable of (name, shape) pairs.
    """
    base = _check_ftype(ftype)
    tensors = dict(tensors.items() if isinstance(tensors, Mapping) else tensors)
    tied = "output.weight" not in tensors
    n_attn_v = sum("attn_v.weight" in n or "attn_qkv.weight" in n or "attn_kv_b.weight" in n for n in tensors)
    n_ffn_down = sum("ffn_down" in n for n in tensors)
    gqa4 = _grouped_query(tensors) >= 4
    types = {}
    for name, shape in tensors.items():
        shape = tuple(shape)
        if len(shape) < 2 or not name.endswith("weight") or "_norm.weight" in name:
            types[name] = "F32"
            continue
        if base in PLAIN:  # F32, F16, BF16 files: every 2-D weight in that format
            types[name] = base
            continue
        qtype = base
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            if shape[-1] % get_format(qtype).block_size:
                qtype = "Q8_0"
            elif qtype != "Q8_0":
                qtype = "Q6_K"
        elif any(k in name for k in ("attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight")):
            i = _layer(name)
            if ftype == "Q2_K":
                qtype = "Q4_K" if gqa4 else "Q3_K"
            elif ftype == "Q3_K_M":
                qtype = "Q5_K" if i < 2 else "Q4_K"
            elif ftype == "Q3_K_L" or (ftype in ("IQ4_NL", "IQ4_XS") and gqa4):
                qtype = "Q5_K"
            elif ftype in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n_attn_v):
                qtype = "Q6_K"
            elif ftype == "Q4_K_S" and i < 4:
                qtype = "Q5_K"
        elif "ffn_down" in name:
            i = _layer(name)
            if ftype == "Q2_K":
                qtype = "Q3_K"
            elif ftype == "Q3_K_M":
                qtype = "Q5_K" if i < n_ffn_down // 16 else "Q4_K"
            elif ftype == "Q3_K_L":
                qtype = "Q5_K"
            elif ftype in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n_ffn_down):
                qtype = "Q6_K"
            elif ftype in ("IQ4_NL", "IQ4_XS") and not imatrix and i < n_ffn_down // 8:
                qtype = "Q5_K"
            elif ftype == "Q4_K_S" and i < n_ffn_down // 8:
                qtype = "Q5_K"
        elif "attn_output" in name:
            qtype = {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(ftype, qtype)
        types[name] = fallback(qtype, shape[-1])
    return types


def tensor_nbytes(qtype: str, shape) -> int:
    """Bytes of a tensor's data in format `qtype` (shape as torch writes it)."""
    shape = tuple(shape)
    n = 1
    for s in shape:
        n *= s
    if qtype in PLAIN:
        return n * PLAIN[qtype]
    fmt = get_format(qtype)
    if shape[-1] % fmt.block_size:
        raise ValueError(f"rows of {shape[-1]} weights are not a whole number of {fmt.name} blocks of {fmt.block_size}")
    return n // fmt.block_size * fmt.type_size


ARCHITECTURES = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "qwen3": gguf.MODEL_ARCH.QWEN3}


def _architecture(config: dict) -> gguf.MODEL_ARCH:
    model_type = config.get("model_type", "llama")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"model_type {model_type!r} is not one of the architectures written here: "
                         f"{', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]


def model_tensors(config) -> dict[str, tuple[int, ...]]:
    """GGUF names and shapes (torch order) of the tensors of a dense Llama/Qwen2/Qwen3 model,
    in the order llama.cpp's converter writes them."""
    cfg = memory._as_dict(config)
    arch = _architecture(cfg)
    s = memory.shape_of(cfg)
    name = lambda t, **kw: gguf.TENSOR_NAMES[t].format(**kw)  # noqa: E731
    q, kv = s.h * s.d_head, s.h_kv * s.d_head
    tensors = {name(gguf.MODEL_TENSOR.TOKEN_EMBD) + ".weight": (s.vocab, s.d)}
    for i in range(s.n_layers):
        layer = {
            gguf.MODEL_TENSOR.ATTN_NORM: (s.d,), gguf.MODEL_TENSOR.ATTN_Q: (q, s.d),
            gguf.MODEL_TENSOR.ATTN_K: (kv, s.d), gguf.MODEL_TENSOR.ATTN_V: (kv, s.d),
            gguf.MODEL_TENSOR.ATTN_OUT: (s.d, q), gguf.MODEL_TENSOR.FFN_NORM: (s.d,),
            gguf.MODEL_TENSOR.FFN_GATE: (s.d_ff, s.d), gguf.MODEL_TENSOR.FFN_UP: (s.d_ff, s.d),
            gguf.MODEL_TENSOR.FFN_DOWN: (s.d, s.d_ff),
        }
        if arch == gguf.MODEL_ARCH.QWEN3:
            layer |= {gguf.MODEL_TENSOR.ATTN_Q_NORM: (s.d_head,), gguf.MODEL_TENSOR.ATTN_K_NORM: (s.d_head,)}
        for t, shape in layer.items():
            tensors[name(t, bid=i) + ".weight"] = shape
        if arch == gguf.MODEL_ARCH.QWEN2:
            for t, n in ((gguf.MODEL_TENSOR.ATTN_Q, q), (gguf.MODEL_TENSOR.ATTN_K, kv), (gguf.MODEL_TENSOR.ATTN_V, kv)):
                tensors[name(t, bid=i) + ".bias"] = (n,)
    tensors[name(gguf.MODEL_TENSOR.OUTPUT_NORM) + ".weight"] = (s.d,)
    if not cfg.get("tie_word_embeddings", False):
        tensors[name(gguf.MODEL_TENSOR.OUTPUT) + ".weight"] = (s.vocab, s.d)
    return tensors
