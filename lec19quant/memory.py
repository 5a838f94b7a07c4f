"""How much memory a language model needs, counted from its config.

A model of N parameters stored at b bits per weight (scales included) takes N·b/8 bytes. Running
it for one sequence of T tokens takes N·b/8 + the KV cache of T tokens + a fixed runtime allowance
(`inference_bytes`); the lecture's rule of thumb, 1.5 × N·b/8 (`footprint`), scales the overhead
with the weights, which the KV cache does not do.
"""
from collections.abc import Mapping
from dataclasses import dataclass

GB = 10**9  # decimal gigabyte, as model cards and file sizes use
GiB = 2**30  # binary gibibyte, as GPU memory is counted

OVERHEAD = 1.5  # the lecture's rule of thumb: running takes about 1.5× the weights

# CUDA's own context, allocated on the GPU at the first CUDA call: about 400 MB with lazy kernel
# loading (CUDA ≥ 11.7, PyTorch's default), as PyTorch's maintainers measure it
# (github.com/pytorch/pytorch/issues/109888).
CUDA_CONTEXT = 400 * 2**20
# An allowance, not a measurement, for what running takes besides the weights and the KV cache:
# activations and the runtime's workspace for one sequence (llama.cpp prints its compute buffer
# when it loads a model).
RUNTIME = GB // 2
CONTEXT = 4096  # tokens: the default context length of `inference_bytes`

# Bits per weight of common storage formats, scales included (block layouts in the GGUF and QLoRA
# chapters): Q8_0 is 34 bytes per 32 weights, Q4_K 144 bytes per 256, NF4 with double
# quantization adds an 8-bit absmax per 64 weights and a float32 per 64·256.
BITS_PER_WEIGHT = {
    "FP32": 32.0,
    "BF16": 16.0,
    "FP16": 16.0,
    "INT8": 8.0,
    "Q8_0": 34 * 8 / 32,
    "Q6_K": 210 * 8 / 256,
    "Q4_K": 144 * 8 / 256,
    "NF4 (double quant)": 4 + 8 / 64 + 32 / (64 * 256),
    "INT4": 4.0,
}

# Architecture hyperparameters from each model's config.json on the Hugging Face hub.
CONFIGS = {
    "Qwen/Qwen3-8B": dict(
        model_type="qwen3", hidden_size=4096, num_hidden_layers=36, intermediate_size=12288,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
        tie_word_embeddings=False,
    ),
    "Qwen/Qwen3-0.6B": dict(
        model_type="qwen3", hidden_size=1024, num_hidden_layers=28, intermediate_size=3072,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "meta-llama/Llama-3.1-8B": dict(
        model_type="llama", hidden_size=4096, num_hidden_layers=32, intermediate_size=14336,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
    ),
    "HuggingFaceTB/SmolLM2-135M-Instruct": dict(
        model_type="llama", hidden_size=576, num_hidden_layers=30, intermediate_size=1536,
        num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
    ),
}


def get_config(name: str) -> dict:
    """A model's config as a dict: from `CONFIGS`, else from the Hugging Face hub (needs
    transformers and internet; the `models` extra)."""
    if name in CONFIGS:
        return dict(CONFIGS[name])
    try:
        from transformers import AutoConfig
    except ImportError as e:
        raise ValueError(
            f"{name!r} is not one of the configs shipped here ({', '.join(CONFIGS)}); to fetch it "
            "from the Hugging Face hub install the models extra: pip install 'lec19quant[models]'"
        ) from e
    return AutoConfig.from_pretrained(name).to_dict()


def _as_dict(config) -> dict:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):  # a transformers PretrainedConfig
        return config.to_dict()
    raise TypeError(f"config must be a dict or a transformers config, got {type(config).__name__}")


def _positive_int(cfg: dict, key: str, why: str) -> int:
    if key not in cfg or cfg[key] is None:
        raise ValueError(f"config is missing {key!r} (needed for {why})")
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config[{key!r}] must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class Shape:
    """The sizes that fix a dense decoder-only transformer's parameter count."""

    d: int  # hidden size
    n_layers: int
    d_ff: int  # MLP inner size
    h: int  # attention heads
    h_kv: int  # key/value heads (grouped-query attention)
    d_head: int
    vocab: int


def shape_of(config) -> Shape:
    """Read a `Shape` from a Hugging Face style config, naming any missing or bad entry."""
    cfg = _as_dict(config)
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if cfg.get(key):
            raise ValueError(f"config has {key}={cfg[key]}: mixture-of-experts models are not supported")
    d = _positive_int(cfg, "hidden_size", "every weight matrix")
    h = _positive_int(cfg, "num_attention_heads", "the attention projections")
    h_kv = h if cfg.get("num_key_value_heads") is None else _positive_int(
        cfg, "num_key_value_heads", "grouped-query attention")
    if h % h_kv:
        raise ValueError(f"num_attention_heads={h} is not a multiple of num_key_value_heads={h_kv}")
    if cfg.get("head_dim") is not None or cfg.get("model_type") == "qwen3":  # Qwen3Config's default is 128
        d_head = _positive_int(cfg, "head_dim", "the attention projections")
    elif d % h:
        raise ValueError(f"hidden_size={d} is not divisible by num_attention_heads={h}; give head_dim")
    else:
        d_head = d // h
    return Shape(d=d, n_layers=_positive_int(cfg, "num_hidden_layers", "the number of blocks"),
                 d_ff=_positive_int(cfg, "intermediate_size", "the MLP"), h=h, h_kv=h_kv, d_head=d_head,
                 vocab=_positive_int(cfg, "vocab_size", "the embedding"))


def param_breakdown(config) -> dict[str, int]:
    """Parameters of a dense decoder-only transformer (Llama, Qwen2/3, Mistral), by part.

    Per layer: attention d·d_h·(h + 2·h_kv) + h·d_h·d (+ biases), gated MLP 3·d·d_ff,
    RMSNorms 2·d (+ 2·d_h for Qwen3's q/k norms); plus embedding V·d, final norm d and an
    output head V·d unless tied to the embedding. d_h is `head_dim`, else d / h (Qwen3 configs
    must give it: their default is not d / h).
    """
    cfg = _as_dict(config)
    s = shape_of(cfg)
    model_type = cfg.get("model_type")
    qkv_bias = model_type == "qwen2" or bool(cfg.get("attention_bias"))
    o_bias = model_type != "qwen2" and bool(cfg.get("attention_bias"))
    qk_norm = cfg.get("qk_norm", model_type == "qwen3")

    qkv = s.d_head * (s.h + 2 * s.h_kv)
    attention = s.d * qkv + s.h * s.d_head * s.d + qkv_bias * qkv + o_bias * s.d
    mlp = 3 * s.d * s.d_ff + bool(cfg.get("mlp_bias")) * (2 * s.d_ff + s.d)
    norms = 2 * s.d + qk_norm * 2 * s.d_head
    return {
        "embedding": s.vocab * s.d,
        "attention": s.n_layers * attention,
        "mlp": s.n_layers * mlp,
        "norms": s.n_layers * norms + s.d,
        "lm_head": 0 if cfg.get("tie_word_embeddings", False) else s.vocab * s.d,
    }


def count_params(config) -> int:
    """Total parameters of the model described by `config` (a dict or transformers config);
    a missing `tie_word_embeddings` means untied, as in LlamaConfig and Qwen3Config."""
    return sum(param_breakdown(config).values())


def kv_cache_bytes(config, n_tokens: int, bits: float = 16, batch: int = 1) -> float:
    """Bytes of the key/value cache: 2 (K and V) · layers · h_kv · d_h values per token, `bits` each."""
    s = shape_of(config)
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 0:
        raise ValueError(f"n_tokens must be a non-negative int, got {n_tokens!r}")
    return 2 * s.n_layers * s.h_kv * s.d_head * n_tokens * batch * _bits(bits) / 8


def _bits(bits_per_weight) -> float:
    bits = BITS_PER_WEIGHT.get(bits_per_weight) if isinstance(bits_per_weight, str) else bits_per_weight
    if bits is None:
        raise ValueError(f"unknown format {bits_per_weight!r}; known: {', '.join(BITS_PER_WEIGHT)}")
    if isinstance(bits, bool) or not isinstance(bits, (int, float)) or not bits > 0:
        raise ValueError(f"bits per weight must be a positive number, got {bits_per_weight!r}")
    return float(bits)


def weight_bytes(n_params: int, bits_per_weight) -> float:
    """Bytes of the weights: N · b / 8, with b a number or a name in `BITS_PER_WEIGHT`."""
    if isinstance(n_params, bool) or not isinstance(n_params, int) or n_params < 0:
        raise ValueError(f"n_params must be a non-negative int, got {n_params!r}")
    return n_params * _bits(bits_per_weight) / 8


def size_ratio(bits_per_weight, smaller) -> float:
    """How many times fewer bytes the weights take in `smaller` than in `bits_per_weight`: the ratio
    of their bits per weight (BF16 to Q4_K: 16 / 4.5 ≈ 3.56), and the most by which a memory-bound
    matrix-vector product can speed up."""
    return _bits(bits_per_weight) / _bits(smaller)


def footprint(n_params: int, bits_per_weight, overhead: float = OVERHEAD) -> float:
    """Bytes needed to run the model by the lecture's rule of thumb: weights × `overhead` (1.5).

    A rough guide: it makes the overhead proportional to the weights, so it predicts 8 GB beside
    16 GB of BF16 weights and 2.3 GB beside 4.6 GB of Q4_K; `inference_bytes` counts the parts."""
    if not overhead >= 1:
        raise ValueError(f"overhead is a factor ≥ 1 on the weights, got {overhead!r}")
    return weight_bytes(n_params, bits_per_weight) * overhead


def inference_bytes(config, bits_per_weight, context: int = CONTEXT, kv_bits: float = 16,
                    runtime: float = RUNTIME) -> float:
    """Bytes needed to run the model of `config` for one sequence of `context` tokens:
    N·b/8 for the weights + 2·layers·h_kv·d_h·T·kv_bits/8 for the KV cache + `runtime`."""
    if isinstance(runtime, bool) or not isinstance(runtime, (int, float)) or not runtime >= 0:
        raise ValueError(f"runtime must be a non-negative number of bytes, got {runtime!r}")
    return (weight_bytes(count_params(config), bits_per_weight)
            + kv_cache_bytes(config, context, bits=kv_bits) + runtime)


@dataclass(frozen=True)
class Device:
    """A machine a model should fit on: its memory and the part of it a model may use."""

    name: str
    memory: int  # bytes on the device
    usable: int  # bytes a model may take
    note: str


DEVICES = {
    "macbook-air-16gb": Device(
        "MacBook Air (16 GB unified memory)", 16 * GiB, 16 * GiB * 2 // 3,
        "CPU and GPU share the 16 GB; macOS lets Metal wire about two thirds of it "
        "(recommendedMaxWorkingSetSize, 10922.67 MB on 16 GB Macs, as llama.cpp prints), and the "
        "operating system and apps need the rest",
    ),
    "t4": Device(
        "NVIDIA T4 (Colab free tier)", 16 * GiB, 15 * GiB - CUDA_CONTEXT,
        "16 GB GDDR6 on the datasheet; nvidia-smi shows 15360 MiB, of which CUDA's context takes "
        "about 400 MiB",
    ),
    "a100-80gb": Device("NVIDIA A100 80GB", 80 * GiB, 80 * GiB, "a data-centre GPU, for contrast"),
}


def _device(device) -> Device:
    if isinstance(device, Device):
        return device
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
    return DEVICES[device]


def fits(n_bytes: float, device) -> bool:
    """Whether `n_bytes` fit in the usable memory of `device` (a `Device` or a name in `DEVICES`)."""
    return n_bytes <= _device(device).usable
