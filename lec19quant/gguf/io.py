"""GGUF files: write a transformers model as llama.cpp would, read one back.

The container is written and parsed by the `gguf` package (llama.cpp's own gguf-py); this module
supplies what goes in it: the tensors under llama.cpp's names, quantized by `blocks` with the
formats of a recipe (`recipes.choose_types`), and the metadata llama.cpp needs to run the model
(architecture sizes, tokenizer). A GGUF file is a header (magic "GGUF", version, counts, the
key/values, one entry per tensor: name, shape, format, offset) followed by the tensors' bytes,
each aligned to 32 bytes.

Llama-architecture files store the rows of W_q and W_k in llama.cpp's RoPE order (the two
halves of each head interleaved, as Meta's original checkpoints had them); Hugging Face models
keep the halves apart. `write_gguf` reorders them like llama.cpp's convert_hf_to_gguf.py, and
`load_weights` undoes it.
"""
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import gguf
import numpy as np
import torch
from tqdm.auto import tqdm

from .. import memory
from .blocks import dequantize, quantize
from .recipes import FTYPES, _architecture, _check_ftype, choose_types, model_tensors, tensor_nbytes

MAGIC = b"GGUF"
ALIGNMENT = gguf.GGUF_DEFAULT_ALIGNMENT  # every tensor's data starts at a multiple of 32 bytes


class GGUFError(ValueError):
    """A file that is not a (complete) GGUF file, or one that does not fit the model."""


class Value(NamedTuple):
    """A metadata value with its GGUF type (and the type of its items, for an array)."""

    value: object
    type: gguf.GGUFValueType
    sub_type: gguf.GGUFValueType | None = None


_U32, _F32, _STR, _BOOL, _ARR = (gguf.GGUFValueType.UINT32, gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.STRING,
                                 gguf.GGUFValueType.BOOL, gguf.GGUFValueType.ARRAY)
_FIXED = {gguf.GGUFValueType.UINT8: 1, gguf.GGUFValueType.INT8: 1, gguf.GGUFValueType.BOOL: 1,
          gguf.GGUFValueType.UINT16: 2, gguf.GGUFValueType.INT16: 2, gguf.GGUFValueType.UINT32: 4,
          gguf.GGUFValueType.INT32: 4, gguf.GGUFValueType.FLOAT32: 4, gguf.GGUFValueType.UINT64: 8,
          gguf.GGUFValueType.INT64: 8, gguf.GGUFValueType.FLOAT64: 8}


def _value_nbytes(value, vtype, sub_type=None) -> int:
    if vtype in _FIXED:
        return _FIXED[vtype]
    if vtype == _STR:
        return 8 + len(value.encode())
    return 4 + 8 + sum(_value_nbytes(item, sub_type) for item in value)  # item type, count, items


def metadata_nbytes(keys: Mapping[str, Value]) -> int:
    """Bytes of key/values in a GGUF header: per key its name (u64 length + UTF-8), its type
    (u32) and its value (a string is u64 length + UTF-8; an array is item type, u64 count, items)."""
    return sum(8 + len(k.encode()) + 4 + _value_nbytes(*v) for k, v in keys.items())


def _tokenizer_metadata(tokenizer, vocab_size: int, pre: str) -> dict[str, Value]:
    """The tokenizer as llama.cpp reads a byte-level BPE ("gpt2" model): tokens by id (padded
    to the model's vocabulary with [PAD<id>]), their types, the merges, special ids, template."""
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(max(vocab_size, len(by_id))):
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        if i not in by_id:
            types.append(gguf.TokenType.USER_DEFINED)
        elif i in added:
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model["type"] != "BPE":
        raise ValueError(f"only byte-level BPE tokenizers are written here, this one is {model['type']}")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    keys = {
        gguf.Keys.Tokenizer.MODEL: Value("gpt2", _STR),
        gguf.Keys.Tokenizer.PRE: Value(pre, _STR),
        gguf.Keys.Tokenizer.LIST: Value(tokens, _ARR, _STR),
        gguf.Keys.Tokenizer.TOKEN_TYPE: Value([int(t) for t in types], _ARR, gguf.GGUFValueType.INT32),
        gguf.Keys.Tokenizer.MERGES: Value(merges, _ARR, _STR),
    }
    for key, token_id in ((gguf.Keys.Tokenizer.BOS_ID, tokenizer.bos_token_id),
                          (gguf.Keys.Tokenizer.EOS_ID, tokenizer.eos_token_id),
                          (gguf.Keys.Tokenizer.UNK_ID, tokenizer.unk_token_id),
                          (gguf.Keys.Tokenizer.PAD_ID, tokenizer.pad_token_id)):
        if token_id is not None:
            keys[key] = Value(token_id, _U32)
    if getattr(tokenizer, "add_bos_token", None) is not None:
        keys[gguf.Keys.Tokenizer.ADD_BOS] = Value(bool(tokenizer.add_bos_token), _BOOL)
    if getattr(tokenizer, "chat_template", None):
        keys[gguf.Keys.Tokenizer.CHAT_TEMPLATE] = Value(tokenizer.chat_template, _STR)
    return keys


def _rope_theta(cfg: dict) -> float | None:
    """RoPE's base θ: `rope_theta` (transformers 4) or `rope_parameters["rope_theta"]` (5)."""
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ValueError(f"RoPE scaling {kind!r} is not written by this writer (only plain RoPE)")
    return cfg.get("rope_theta", rope.get("rope_theta"))


def metadata(config, ftype: str, tokenizer=None, tokenizer_pre: str = "default", imatrix=None) -> dict[str, Value]:
    """The key/values `write_gguf` writes for a model `config` (and `tokenizer`, if given): the
    architecture and its sizes, the file type, and the tokenizer. `tokenizer_pre` names the
    pre-tokenizer (how llama.cpp splits text before BPE; SmolLM2: "smollm", Qwen2/3: "qwen2",
    Llama 3: "llama-bpe"); llama.cpp warns and uses its default for "default". With an
    `imatrix` (`imatrix.ImportanceMatrix`), the keys llama-quantize adds: its dataset, number of
    entries and chunks."""
    _check_ftype(ftype)
    cfg = memory._as_dict(config)
    arch = gguf.MODEL_ARCH_NAMES[_architecture(cfg)]
    s = memory.shape_of(cfg)
    keys = {
        gguf.Keys.General.ARCHITECTURE: Value(arch, _STR),
        gguf.Keys.General.TYPE: Value("model", _STR),
        gguf.Keys.General.NAME: Value(Path(cfg.get("_name_or_path") or arch).name or arch, _STR),
        gguf.Keys.General.FILE_TYPE: Value(int(FTYPES[ftype][1]), _U32),
        gguf.Keys.General.QUANTIZATION_VERSION: Value(gguf.GGML_QUANT_VERSION, _U32),
    }
    sizes = {
        gguf.Keys.LLM.VOCAB_SIZE: s.vocab, gguf.Keys.LLM.BLOCK_COUNT: s.n_layers,
        gguf.Keys.LLM.EMBEDDING_LENGTH: s.d, gguf.Keys.LLM.FEED_FORWARD_LENGTH: s.d_ff,
        gguf.Keys.Attention.HEAD_COUNT: s.h, gguf.Keys.Attention.HEAD_COUNT_KV: s.h_kv,
        gguf.Keys.Attention.KEY_LENGTH: s.d_head, gguf.Keys.Attention.VALUE_LENGTH: s.d_head,
        gguf.Keys.Rope.DIMENSION_COUNT: s.d_head, gguf.Keys.LLM.CONTEXT_LENGTH: cfg.get("max_position_embeddings"),
    }
    keys |= {k.format(arch=arch): Value(v, _U32) for k, v in sizes.items() if v is not None}
    floats = {gguf.Keys.Rope.FREQ_BASE: _rope_theta(cfg), gguf.Keys.Attention.LAYERNORM_RMS_EPS: cfg.get("rms_norm_eps")}
    keys |= {k.format(arch=arch): Value(float(v), _F32) for k, v in floats.items() if v is not None}
    if tokenizer is not None:
        keys |= _tokenizer_metadata(tokenizer, s.vocab, tokenizer_pre)
    if imatrix is not None:
        if imatrix.datasets:
            keys["quantize.imatrix.dataset"] = Value(imatrix.datasets[0], _STR)
        keys["quantize.imatrix.entries_count"] = Value(len(imatrix), gguf.GGUFValueType.INT32)
        if imatrix.chunk_count > 0:
            keys["quantize.imatrix.chunks_count"] = Value(imatrix.chunk_count, gguf.GGUFValueType.INT32)
    return keys


# Without the tokenizer at hand, its three arrays (tokens, token types, merges) are estimated at
# this many bytes per vocabulary entry: what they take in the running example's GGUF file
# (SmolLM2-135M-Instruct, a byte-level BPE of 49,152 tokens and 48,900 merges:
# 762,431 + 196,657 + 808,722 bytes, the keys and array headers included).
TOKENIZER_BYTES_PER_TOKEN = (762_431 + 196_657 + 808_722) / 49_152


def _pad(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def tensor_info_nbytes(name: str, shape) -> int:
    """A tensor's entry in the header: name (u64 length + UTF-8), n_dims (u32), dims (u64
    each), type (u32), offset (u64)."""
    return 8 + len(name.encode()) + 4 + 8 * len(shape) + 4 + 8


@dataclass(frozen=True)
class FileSize:
    """The bytes of a GGUF file, by part."""

    tensor_data: int  # every tensor, each padded to 32 bytes
    header: int  # magic, counts, key/values and tensor infos, padded to 32 bytes
    tokenizer: int  # the tokenizer's arrays (part of the header)
    tokenizer_estimated: bool  # True when no tokenizer was given
    types: dict  # format → number of tensors

    @property
    def total(self) -> int:
        return self.tensor_data + self.header

    @property
    def gb(self) -> float:
        return self.total / memory.GB


def predict_size(config, ftype: str = "Q4_K_M", tokenizer=None, tokenizer_pre: str = "default",
                 imatrix=None) -> FileSize:
    """Bytes of the GGUF file of type `ftype` that `write_gguf` writes for a
    model described by `config` (a dict or transformers config of a dense Llama/Qwen2/Qwen3).

    Everything is counted as written: each tensor's data (`choose_types`) padded to 32 bytes,
    each tensor's entry in the header, every key/value of the metadata, and the header padded
    to 32 bytes. The tokenizer's arrays are counted exactly when `tokenizer` (a transformers
    tokenizer) is given, else estimated from the vocabulary size (TOKENIZER_BYTES_PER_TOKEN).
    `imatrix`: the importance matrix the file is quantized with, if any (it changes a few formats
    of the IQ4 recipes, and adds keys).
    """
    cfg = memory._as_dict(config)
    tensors = model_tensors(cfg)
    types = choose_types(tensors, ftype, imatrix=imatrix is not None)
    data = sum(_pad(tensor_nbytes(types[n], shape)) for n, shape in tensors.items())
    keys = metadata(cfg, ftype, tokenizer, tokenizer_pre, imatrix)
    arrays = (gguf.Keys.Tokenizer.LIST, gguf.Keys.Tokenizer.TOKEN_TYPE, gguf.Keys.Tokenizer.MERGES)
    if tokenizer is None:
        tok = round(TOKENIZER_BYTES_PER_TOKEN * memory.shape_of(cfg).vocab)
    else:
        tok = metadata_nbytes({k: v for k, v in keys.items() if k in arrays})
    header = 4 + 4 + 8 + 8  # magic, version, tensor count, key/value count
    header += metadata_nbytes({k: v for k, v in keys.items() if k not in arrays}) + tok
    header += sum(tensor_info_nbytes(n, shape) for n, shape in tensors.items())
    return FileSize(data, _pad(header), tok, tokenizer is None, dict(Counter(types.values())))


def rope_interleave(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows of W_q or W_k from Hugging Face's RoPE order (each head: first half, second half)
    to llama.cpp's (each head: pairs interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def rope_deinterleave(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """The inverse of `rope_interleave`."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _rope_heads(config: dict, hf_name: str) -> int | None:
    """How many heads to reorder a Llama tensor by (None: leave it)."""
    if config.get("model_type", "llama") != "llama":
        return None
    if hf_name.endswith("q_proj.weight"):
        return config["num_attention_heads"]
    if hf_name.endswith("k_proj.weight"):
        return config.get("num_key_value_heads") or config["num_attention_heads"]
    return None


def gguf_names(model) -> dict[str, str]:
    """Hugging Face parameter name → GGUF tensor name, for every tensor a GGUF file holds (a
    tied output head is not stored: llama.cpp reads token_embd for it)."""
    cfg = model.config.to_dict()
    names = gguf.get_tensor_name_map(_architecture(cfg), cfg["num_hidden_layers"])
    out = {}
    for hf_name in model.state_dict():
        if hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings", False):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"{hf_name} has no GGUF name for architecture {cfg.get('model_type')!r}")
        out[hf_name] = name
    return out


def _blocks(cache: dict, hf_name: str, weight: torch.Tensor, qtype: str, imatrix=None, name: str = "") -> np.ndarray:
    """The bytes of `weight` in block format `qtype`, from `cache` when it has them; weighted
    by the importance of tensor `name` when `imatrix` has an entry for it (as llama-quantize,
    which quantizes a tensor without an entry without weights)."""
    importance = imatrix.weights(name) if imatrix is not None and name in imatrix else None
    key = (hf_name, qtype, None if importance is None else imatrix)
    if key not in cache:
        cache[key] = quantize(weight, qtype, imatrix=importance)
    return cache[key]


def _encode(cache: dict, config: dict, hf_name: str, weight: torch.Tensor, qtype: str, imatrix=None,
            name: str = "") -> np.ndarray:
    """A tensor as the file stores it: float32, float16 or blocks, W_q and W_k in llama.cpp's
    RoPE order (reordering rows of weights reorders the rows of their blocks the same way)."""
    heads = _rope_heads(config, hf_name)
    if qtype in ("F32", "F16", "BF16"):
        weight = weight.detach().to("cpu", torch.float32)
        x = (weight if heads is None else rope_interleave(weight, heads)).numpy()
        if qtype == "BF16":  # bytes, rounded to nearest even by gguf's converter
            return gguf.quants.quantize(x, gguf.GGMLQuantizationType.BF16)
        return x if qtype == "F32" else x.astype(np.float16)
    raw = _blocks(cache, hf_name, weight, qtype, imatrix, name)
    return raw if heads is None else rope_interleave(torch.from_numpy(raw), heads).numpy()


def write_gguf(model, tokenizer, path, ftype: str = "Q4_K_M", tokenizer_pre: str = "default",
               progress: bool = True, cache: dict | None = None, imatrix=None) -> dict[str, str]:
    """Write `model` (a transformers Llama/Qwen2/Qwen3 causal LM) and its `tokenizer` to a GGUF
    file of type `ftype` at `path`, quantizing tensor by tensor as it writes (one tensor in
    memory at a time, a progress bar over them). Returns each tensor's format. The file appears
    under its name only when complete. `cache` (see `quantized_weights`) reuses blocks already
    computed. `imatrix` (an `imatrix.ImportanceMatrix`) weights the quantization of every tensor
    it has an entry for, as `llama-quantize --imatrix` does."""
    _check_ftype(ftype)
    cfg = model.config.to_dict()
    names = gguf_names(model)
    params = model.state_dict()
    shapes = {g: tuple(params[h].shape) for h, g in names.items()}
    types = choose_types(shapes, ftype, imatrix=imatrix is not None)
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    keys = metadata(cfg, ftype, tokenizer, tokenizer_pre, imatrix)
    writer = gguf.GGUFWriter(partial, keys[gguf.Keys.General.ARCHITECTURE].value)
    try:
        for key, value in keys.items():
            if key != gguf.Keys.General.ARCHITECTURE:  # the writer adds it itself
                writer.add_key_value(key, *value)
        for name, shape in shapes.items():
            qtype, nbytes = types[name], tensor_nbytes(types[name], shape)
            if qtype in ("F32", "F16"):
                writer.add_tensor_info(name, shape, np.dtype(np.float32 if qtype == "F32" else np.float16), nbytes)
            else:
                writer.add_tensor_info(name, (*shape[:-1], nbytes // int(np.prod(shape[:-1]))), np.dtype(np.uint8),
                                       nbytes, raw_dtype=gguf.GGMLQuantizationType[qtype])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        keep, cache = cache is not None, {} if cache is None else cache
        bar = tqdm(names.items(), desc=f"writing {path.name} ({ftype})", unit="tensor", disable=not progress)
        for hf_name, name in bar:
            writer.write_tensor_data(_encode(cache, cfg, hf_name, params[hf_name], types[name], imatrix, name))
            if not keep:
                cache.clear()  # one tensor's blocks in memory at a time
        writer.close()
        os.replace(partial, path)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return types


def quantized_weights(model, ftype: str = "Q4_K_M", cache: dict | None = None,
                      imatrix=None, only=None) -> tuple[dict, dict[str, str]]:
    """The model's state dict as a GGUF file of type `ftype` would give it back — every tensor
    quantized to its recipe's format and dequantized, which is what llama.cpp computes with —
    and each GGUF tensor's format, without writing a file. (Blocks lie within rows, so the RoPE
    reordering of W_q and W_k does not change them.) `cache`, a dict, keeps the bytes of each
    (tensor, format, importance matrix) for the next call, so that recipes share the work they
    have in common. `imatrix`: as in `write_gguf`. `only`: a function of the GGUF name that
    says which tensors to quantize (the others keep their weights; default: all)."""
    names = gguf_names(model)
    params = model.state_dict()
    types = choose_types({g: tuple(params[h].shape) for h, g in names.items()}, ftype, imatrix=imatrix is not None)
    cache = {} if cache is None else cache
    weights = dict(params)
    for hf_name, name in names.items():
        qtype, w = types[name], params[hf_name]
        if qtype == "F32" or (only is not None and not only(name)):
            continue
        if qtype in ("F16", "BF16"):
            weights[hf_name] = w.to(torch.float16 if qtype == "F16" else torch.bfloat16).float()
            continue
        weights[hf_name] = dequantize(_blocks(cache, hf_name, w, qtype, imatrix, name), qtype, w.shape).to(w.device)
    if "lm_head.weight" in params and "lm_head.weight" not in names:  # tied to the embedding
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    return weights, types


@dataclass
class GGUFContents:
    """What a GGUF file holds: its metadata, each tensor's format, and the tensors dequantized
    to float32 (torch shapes: the last dimension is the row)."""

    metadata: dict
    types: dict[str, str]
    tensors: dict[str, torch.Tensor]


def _reader(path: Path) -> gguf.GGUFReader:
    with path.open("rb") as f:
        head = f.read(4)
    if head != MAGIC:
        raise GGUFError(f"{path} is not a GGUF file: it starts with {head!r}, not {MAGIC!r}")
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # gguf raises many kinds (struct, reshape, value errors) on a damaged file
        raise GGUFError(f"{path} ({path.stat().st_size:,} bytes) is truncated or corrupt: gguf cannot "
                        f"parse it ({type(e).__name__}: {e})") from e


def read_gguf(path, device="cpu") -> GGUFContents:
    """Read a GGUF file: metadata (key → value), formats, and every tensor dequantized to
    float32 as ggml does. A file that is not GGUF, truncated or corrupt raises GGUFError."""
    reader = _reader(Path(path))
    meta = {name: field.contents() for name, field in reader.fields.items()}
    types, tensors = {}, {}
    for t in reader.tensors:
        qtype = t.tensor_type.name
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))
        raw = torch.from_numpy(np.array(t.data)).to(device)
        if qtype in ("F32", "F16"):
            tensors[t.name] = raw.float().reshape(shape)
        elif qtype == "BF16":
            tensors[t.name] = raw.contiguous().view(torch.bfloat16).float().reshape(shape)
        else:
            tensors[t.name] = dequantize(raw, qtype, shape)
        types[t.name] = qtype
    return GGUFContents(meta, types, tensors)


@torch.no_grad()
def load_weights(model, contents: GGUFContents):
    """Copy the tensors of a GGUF file (read by `read_gguf`) into `model`, in place, under its
    Hugging Face names and RoPE order; returns the model."""
    cfg = model.config.to_dict()
    params = model.state_dict()
    for hf_name, name in gguf_names(model).items():
        if name not in contents.tensors:
            raise GGUFError(f"the file has no tensor {name} (the model's {hf_name})")
        weight = contents.tensors[name]
        if weight.shape != params[hf_name].shape:
            raise GGUFError(f"{name} has shape {tuple(weight.shape)}, the model's {hf_name} {tuple(params[hf_name].shape)}")
        heads = _rope_heads(cfg, hf_name)
        params[hf_name].copy_(weight if heads is None else rope_deinterleave(weight, heads))
    return model
