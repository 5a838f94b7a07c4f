"""SmoothQuant: move the difficulty of quantizing activations into the weights (Xiao et al. 2023).

For any s > 0, one per input channel j:    X·Wᵀ = (X·diag(s)⁻¹) · (W·diag(s))ᵀ.
The division folds into the module that produces X (an RMSNorm's or LayerNorm's weight, or the
output rows of a Linear), the multiplication into the columns of every Linear that reads X, so the
float model computes the same function. SmoothQuant picks, from calibration statistics,

    s_j = max|X_j|^α / max|W_:,j|^(1−α)        (max over the tokens, and over the Linears that read X)

which at α = 0.5 gives channel j the same range in X·diag(s)⁻¹ and in W·diag(s). AWQ (`awq`) folds
its own scales through the same layer groups.
"""
from dataclasses import dataclass

import torch
from torch import nn

from .int8 import ACTIVATION_SCALES, W8A8Linear
from .kernels import use_triton
from .models import ChannelStats, capture_activations
from .quantize import QTensor, _check_input, absmax_quantize

MIN_SCALE = 1e-5  # the smallest smoothing factor and weight statistic (the reference implementations' floor)
CONVENTIONS = ("paper", "llm-compressor")

# Llama-type decoder layers (Llama, Mistral, Qwen2/3, SmolLM): (kind, module that produces X, the
# Linears that read X, their lowest common ancestor), relative to a decoder layer.
LLAMA_GROUPS = (
    ("qkv", "input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn"),
    ("o", "self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj"),
    ("gate_up", "post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
    ("down", "mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj"),
)
KINDS = tuple(kind for kind, *_ in LLAMA_GROUPS)
SMOOTHQUANT_KINDS = ("qkv", "gate_up")  # llm-compressor's SmoothQuant mappings for Llama-type models


@dataclass(frozen=True)
class LayerGroup:
    """The Linear layers (`balance`) that read one activation X, the module (`smooth`) whose output
    X is, and `parent`, their lowest common ancestor, whose output AWQ's search compares."""

    kind: str
    layer: str  # the decoder layer
    smooth: str
    balance: tuple[str, ...]
    parent: str


def layer_groups(model: nn.Module, kinds=KINDS) -> list[LayerGroup]:
    """The layer groups of every decoder layer of a Llama-type model, for the given kinds
    ("qkv", "o", "gate_up", "down"; see LLAMA_GROUPS), in the order of the layers.

    "o" (v_proj → o_proj) is left out where v_proj has fewer outputs than o_proj has inputs, as
    with grouped-query attention, where each value head serves several heads (llm-compressor's rule).
    """
    unknown = set(kinds) - set(KINDS)
    if isinstance(kinds, str) or unknown:
        raise ValueError(f"kinds must be a collection of {KINDS}, got {kinds!r}")
    layers = [name for name, m in model.named_modules()
              if all(hasattr(m, a) for a in ("input_layernorm", "self_attn", "mlp", "post_attention_layernorm"))]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Llama-type decoder layers (input_layernorm, self_attn, "
                         "post_attention_layernorm, mlp): its layer groups are unknown")
    groups = []
    for layer in layers:
        for kind, smooth, balance, parent in LLAMA_GROUPS:
            if kind not in kinds:
                continue
            full = [f"{layer}.{n}" for n in (smooth, *balance, parent)]
            if kind == "o" and model.get_submodule(full[0]).out_features != model.get_submodule(full[1]).in_features:
                continue
            groups.append(LayerGroup(kind, layer, full[0], tuple(full[1:-1]), full[-1]))
    return groups


def _check_foldable(name: str, module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.LayerNorm)):
        return
    kind = type(module).__name__
    weight = getattr(module, "weight", None)
    # Gemma's RMSNorm multiplies by (1 + w): dividing w by s would not divide the output by s
    if not (kind.endswith("RMSNorm") and "Gemma" not in kind and isinstance(weight, torch.Tensor) and weight.dim() == 1):
        raise TypeError(f"{name} is a {kind}: scales fold into an nn.Linear, an nn.LayerNorm or an RMSNorm "
                        "that computes w·x/rms(x)")


def _check_scales(s: torch.Tensor, n: int, what: str) -> None:
    if not isinstance(s, torch.Tensor) or s.shape != (n,):
        raise ValueError(f"{what}: the scales must be a tensor of shape ({n},), got {getattr(s, 'shape', type(s))}")
    if not (torch.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"{what}: the scales must be finite and positive")


@torch.no_grad()
def fold_scales(model: nn.Module, group: LayerGroup, s: torch.Tensor) -> None:
    """Fold s into the model in place: the output of `group.smooth` is divided by s (its weight, or
    its weight's rows, and its bias), the columns of each Linear in `group.balance` multiplied by s.
    The float model computes the same function (up to rounding)."""
    smooth = model.get_submodule(group.smooth)
    _check_foldable(group.smooth, smooth)
    balance = [model.get_submodule(name) for name in group.balance]
    _check_scales(s, balance[0].in_features, group.smooth)
    s = s.to(smooth.weight.device)
    if isinstance(smooth, nn.Linear):
        smooth.weight.div_(s.to(smooth.weight.dtype)[:, None])
    else:
        smooth.weight.div_(s.to(smooth.weight.dtype))
    if getattr(smooth, "bias", None) is not None:
        smooth.bias.div_(s.to(smooth.bias.dtype))
    for linear in balance:
        linear.weight.mul_(s.to(linear.weight.dtype)[None, :])


def weight_absmax(linears: list[nn.Linear]) -> torch.Tensor:
    """max |W_:,j| per input channel j, over all the given Linears (float32)."""
    return torch.stack([m.weight.detach().abs().amax(0).float().cpu() for m in linears]).amax(0)


def smoothing_factors(activation: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant's s_j = a_j^α / w_j^(1−α) for the activation statistic a (max|X_j|) and weight
    statistic w (max|W_:,j|) of each channel; w is floored at 1e-5 and so is s (a channel that was
    0 on the calibration text gets s = 1e-5, as in the reference implementations)."""
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 <= alpha <= 1):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    if activation.shape != weight.shape or activation.dim() != 1:
        raise ValueError(f"activation {tuple(activation.shape)} and weight {tuple(weight.shape)} statistics "
                         "must be vectors of the same length")
    if not (torch.isfinite(activation).all() and torch.isfinite(weight).all()) or (activation < 0).any() or (weight < 0).any():
        raise ValueError("the statistics must be finite and non-negative")
    a, w = activation.float(), weight.float().clamp(min=MIN_SCALE)
    return (a.pow(alpha) / w.pow(1 - alpha)).clamp(min=MIN_SCALE)


def group_factors(model: nn.Module, group: LayerGroup, stats: dict[str, ChannelStats], alpha: float = 0.5,
                  convention: str = "paper") -> torch.Tensor:
    """The smoothing factors of one layer group from calibration statistics (`capture_activations`).

    convention="paper": a = max|X_j|, w = max|W_:,j|, s = a^α / w^(1−α).
    convention="llm-compressor": a = max X_j − min X_j (the range) and w = 2·max|W_:,j|, with s = a
    where w = 0 and no floor on w, as llm-compressor's SmoothQuantModifier computes them. Its s is
    the paper's times ((max − min)/max|X_j|)^α · 2^(α−1): a factor 2^(2α−1) for a channel symmetric
    about 0 (common to all such channels, which absmax quantization does not see), less for a
    channel of one sign, such as a massive outlier.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if group.balance[0] not in stats:
        raise ValueError(f"no statistics for {group.balance[0]}: capture them with models.capture_activations")
    st = stats[group.balance[0]]
    w = weight_absmax([model.get_submodule(n) for n in group.balance])
    if convention == "paper":
        return smoothing_factors(st.absmax, w, alpha)
    a = (st.maximum - st.minimum).float()
    s = smoothing_factors(a, 2 * w, alpha)
    return torch.where(w > 0, s, a).clamp(min=MIN_SCALE)


def smooth(model: nn.Module, stats: dict[str, ChannelStats], alpha: float = 0.5, kinds=SMOOTHQUANT_KINDS,
           convention: str = "paper") -> dict[str, torch.Tensor]:
    """SmoothQuant, in place: compute each layer group's factors (`group_factors`) and fold them
    (`fold_scales`). Returns the factors by the name of the module they divide."""
    factors = {}
    for group in layer_groups(model, kinds):
        factors[group.smooth] = s = group_factors(model, group, stats, alpha, convention)
        fold_scales(model, group, s)
    return factors


def quantize_smoothed(x: torch.Tensor, s: torch.Tensor, backend: str = "auto") -> QTensor:
    """Per-token int8 codes of X·diag(s)⁻¹ (M, K): for an activation whose smoothing could not be
    folded into the module before it, divide by s and quantize in one pass:
    q = round(x_j / s_j · 127 / max_j |x_j / s_j|), one scale per row (as `absmax_quantize(x / s, 8, dim=0)`)."""
    _check_input(x)
    if x.dim() != 2:
        raise ValueError(f"x must be a matrix (tokens, channels), got shape {tuple(x.shape)}")
    _check_scales(s, x.shape[1], "quantize_smoothed")
    if use_triton(backend, x, s):
        from .kernels import smoothquant as kernel

        codes = torch.empty(x.shape, dtype=torch.int8, device=x.device)
        scale = torch.empty(x.shape[0], 1, dtype=torch.float32, device=x.device)
        kernel.quantize_smoothed(x.contiguous(), s.float().contiguous(), codes, scale)
        return QTensor(codes, scale, None, x.shape, 8)
    return absmax_quantize(x.float() / s.float(), 8, dim=0)


def _tokenizer(model: nn.Module):
    """The tokenizer saved with the model (its name or directory, `model.name_or_path`)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model.name_or_path)


@dataclass(frozen=True)
class Calibration:
    """Where a scheme's calibration statistics come from: the first `tokens` tokens of a shipped
    text (`models.load_text(text, "train")`) in windows of `context`. The book calibrates on
    "sotu" and evaluates on "moby-dick"."""

    text: str = "sotu"
    tokens: int = 512
    context: int = 512

    def token_batch(self, model: nn.Module, tokenizer=None) -> torch.Tensor:
        """The calibration tokens as one (windows, context) batch (a shorter last window is dropped)."""
        from .models import load_text, token_windows

        windows = token_windows(tokenizer or _tokenizer(model), load_text(self.text, "train"), self.context, self.tokens)
        return torch.stack([w for w in windows if len(w) == len(windows[0])])

    def statistics(self, model: nn.Module, tokenizer=None) -> dict[str, ChannelStats]:
        from .models import load_text

        return capture_activations(model, tokenizer or _tokenizer(model), load_text(self.text, "train"),
                                   self.context, self.tokens)


@dataclass(frozen=True)
class SmoothQuantW8A8:
    """`quantize_model` scheme: SmoothQuant (factors from `calibration`, folded into the model by
    `prepare_model`), then W8A8 with int8 weights per output row and int8 activations per tensor
    or per token (`int8.W8A8Linear`)."""

    activations: str = "tensor"
    alpha: float = 0.5
    kinds: tuple[str, ...] = SMOOTHQUANT_KINDS
    calibration: Calibration = Calibration()

    def __post_init__(self):
        if self.activations not in ACTIVATION_SCALES:
            raise ValueError(f"activations must be one of {ACTIVATION_SCALES}, got {self.activations!r}")
        smoothing_factors(torch.ones(1), torch.ones(1), self.alpha)  # checks alpha

    @property
    def name(self) -> str:
        alpha = "" if self.alpha == 0.5 else f"-a{self.alpha:g}"
        kinds = "" if self.kinds == SMOOTHQUANT_KINDS else "-" + "+".join(self.kinds)
        return f"smoothquant-w8a8-{self.activations}{alpha}{kinds}"

    def prepare_model(self, model: nn.Module, tokenizer=None) -> None:
        smooth(model, self.calibration.statistics(model, tokenizer), self.alpha, self.kinds)

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        return W8A8Linear(linear, self.activations)
