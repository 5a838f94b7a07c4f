"""AWQ: activation-aware weight quantization (Lin et al. 2024).

The input channels of a Linear that meet large activations matter most. Scaling weight column j up
by s_j before rounding, and the activation down by s_j (folded into the module before, as in
`smoothquant`), shrinks that column's error relative to its size. AWQ takes

    s = m^α / sqrt(max(m^α)·min(m^α)),      m_j = mean |x_j| over calibration tokens,

and searches α on a grid of 20 for each layer group, minimizing the mean squared error of the
output of the group's block (the attention, the MLP, or the Linear itself):

    L(α) = mean ‖f(X; Q(W·diag(s))·diag(s)⁻¹) − f(X; W)‖².

Optionally the clipping range of each group of weights is searched too: max|w| shrunk to
(1 − i/20)·max|w|, i < 10, the one whose partial products Σ_c x_c·w_c over the group's columns c
err least on calibration tokens. The weights are then rounded group-wise (`groupwise`).
"""
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .groupwise import RTN, dequantize_codes, group_params, quantize_codes
from .models import decoder_inputs
from .smoothquant import KINDS, Calibration, LayerGroup, fold_scales, layer_groups

N_GRID = 20
MIN_SCALE = 1e-4  # llm-compressor's floor on m^α before normalization
CLIP_SKIP = ("q_proj", "k_proj")  # the clip search leaves the query and key projections alone (llm-awq)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Ŵ: W rounded to nearest with a zero point per group of `group_size` input columns and
    dequantized, as `groupwise.GroupQuantLinear.from_linear` stores it (a ragged last group
    included); float32."""
    rows, cols = w.shape
    groups = F.pad(w.float(), (0, -cols % group_size)).view(rows, -1, group_size)
    scale, zero = group_params(groups, bits)
    return dequantize_codes(quantize_codes(groups, scale, zero, bits), scale, zero).view(rows, -1)[:, :cols]


def awq_scales(x_mean: torch.Tensor, alpha: float, w_mean: torch.Tensor | None = None) -> torch.Tensor:
    """s = m^α (or, with `w_mean`, llm-compressor's "duo scaling" m^α / (w_mean^(1−α) + 1e-4)),
    floored at 1e-4 and divided by sqrt(max(s)·min(s)); non-finite entries become 1."""
    s = x_mean.float().pow(alpha)
    if w_mean is not None:
        s = s / (w_mean.float().pow(1 - alpha) + MIN_SCALE)
    s = s.clamp(min=MIN_SCALE)
    s = s / (s.max() * s.min()).sqrt()
    return torch.where(torch.isfinite(s), s, torch.ones_like(s))


def grid(n_grid: int = N_GRID, duo_scaling: bool = False) -> list[tuple[float, bool]]:
    """The (α, duo scaling) pairs searched, as llm-compressor runs them: α = i/(n − 1) for
    i < n; with duo scaling, α = 0 without it and then α = i/(n − 2), i < n − 1, with it."""
    if not isinstance(n_grid, int) or n_grid < 3:
        raise ValueError(f"n_grid must be an int ≥ 3, got {n_grid!r}")
    if not duo_scaling:
        return [(i / (n_grid - 1), False) for i in range(n_grid)]
    return [(0.0, False)] + [(i / (n_grid - 2), True) for i in range(n_grid - 1)]


def weight_means(linears: list[nn.Linear], group_size: int) -> torch.Tensor:
    """Duo scaling's weight statistic: |w| / (max|w| of its group + 1e-6), averaged over all output
    rows of the given Linears, per input column (groups must divide the rows)."""
    rows = torch.cat([m.weight.detach().float().abs().reshape(-1, group_size) for m in linears])
    rows = (rows / (rows.amax(1, keepdim=True) + 1e-6)).reshape(-1, linears[0].in_features)
    return rows.double().sum(0).float() / rows.shape[0]


@dataclass
class GroupResult:
    """What the search chose for one layer group: α, the scales s, and the loss at every grid point."""

    group: LayerGroup
    alpha: float
    duo_scaling: bool
    scales: torch.Tensor
    losses: list[float] = field(repr=False)
    x_mean: torch.Tensor = field(repr=False)


def _output(module: nn.Module, inputs: list[tuple[tuple, dict]]) -> list[torch.Tensor]:
    outs = [module(*args, **kwargs) for args, kwargs in inputs]
    return [o[0] if isinstance(o, tuple) else o for o in outs]


def _mse(reference: list[torch.Tensor], outputs: list[torch.Tensor]) -> float:
    total = sum(F.mse_loss(o, r, reduction="sum") for r, o in zip(reference, outputs))
    return (total / sum(r.numel() for r in reference)).item()


@torch.no_grad()
def search_scales(model: nn.Module, group: LayerGroup, inputs: list[tuple[tuple, dict]], x_mean: torch.Tensor,
                  quantizer: Callable[[torch.Tensor], torch.Tensor], n_grid: int = N_GRID,
                  duo_scaling: bool = False, group_size: int | None = None) -> GroupResult:
    """AWQ's grid search for one layer group: for each α of `grid`, replace every balance Linear's
    W by quantizer(W·diag(s))·diag(s)⁻¹, run the group's parent on the cached `inputs` (args,
    kwargs), and keep the s with the smallest mean squared error against the float output. The
    weights are left as they were (the caller folds the chosen s)."""
    parent = model.get_submodule(group.parent)
    linears = [model.get_submodule(n) for n in group.balance]
    originals = [m.weight.detach().clone() for m in linears]
    w_mean = weight_means(linears, group_size) if duo_scaling else None
    reference = _output(parent, inputs)
    best, losses = None, []
    try:
        for alpha, duo in grid(n_grid, duo_scaling):
            s = awq_scales(x_mean, alpha, w_mean if duo else None).to(originals[0].device)
            for m, w in zip(linears, originals):
                m.weight.copy_((quantizer(w * s) / s).to(w.dtype))
            losses.append(_mse(reference, _output(parent, inputs)))
            if best is None or losses[-1] < best[0]:
                best = (losses[-1], alpha, duo, s.cpu())
    finally:
        for m, w in zip(linears, originals):
            m.weight.copy_(w)
    if not math.isfinite(best[0]):
        raise ValueError(f"{group.parent}: no finite loss on the grid (NaN or inf in the block's output)")
    return GroupResult(group, best[1], best[2], best[3], losses, x_mean)


@torch.no_grad()
def search_clip(weight: torch.Tensor, x: torch.Tensor, bits: int, group_size: int, n_grid: int = N_GRID,
                max_shrink: float = 0.5) -> torch.Tensor:
    """The clipping bound c of each (output row, group): c = (1 − i/n_grid)·max|w| for the
    i < max_shrink·n_grid whose clamped and rounded group Q(clamp(w, −c, c)) gives partial products
    with the smallest mean squared error over the tokens x (T, in): for Δ = Q(…) − w of a group and
    H = xᵀx/T over its columns, that error is Δ·H·Δᵀ. Returns c as (out, groups), float32."""
    rows, cols = weight.shape
    pad = -cols % group_size
    w = F.pad(weight.float(), (0, pad)).view(rows, -1, group_size)
    xg = F.pad(x.float(), (0, pad)).view(x.shape[0], -1, group_size).transpose(0, 1)  # (groups, T, g)
    gram = xg.transpose(1, 2) @ xg / x.shape[0]  # (groups, g, g)
    peak = w.abs().amax(-1)
    best_err = torch.full_like(peak, math.inf)
    best = peak.clone()
    for i in range(int(max_shrink * n_grid)):
        bound = peak * (1 - i / n_grid)
        clipped = torch.maximum(torch.minimum(w, bound[..., None]), -bound[..., None])
        scale, zero = group_params(clipped, bits)
        delta = dequantize_codes(quantize_codes(clipped, scale, zero, bits), scale, zero) - w
        err = torch.einsum("rgi,gij,rgj->rg", delta, gram, delta)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, bound, best)
    return best


def apply_clip(linear: nn.Linear, bound: torch.Tensor, group_size: int) -> None:
    """Clamp each group of `linear`'s weight to [−c, c] in place (c from `search_clip`)."""
    c = bound.repeat_interleave(group_size, dim=1)[:, :linear.in_features].to(linear.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(torch.maximum(torch.minimum(linear.weight, c), -c))


def _capture(modules: dict[str, nn.Module], run: Callable[[], object]) -> dict:
    """Call run() with pre-hooks that cache each module's (args, kwargs) of every call."""
    cached = {name: [] for name in modules}

    def hook(name):
        def record(module, args, kwargs):
            cached[name].append((args, kwargs))
        return record

    handles = [m.register_forward_pre_hook(hook(n), with_kwargs=True) for n, m in modules.items()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return cached


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The activation a module was called with: its first argument, or hidden_states= (attention)."""
    return args[0] if args else kwargs["hidden_states"]


def _by_layer(groups: list[LayerGroup]) -> dict[str, list[LayerGroup]]:
    layers: dict[str, list[LayerGroup]] = {}
    for g in groups:
        layers.setdefault(g.layer, []).append(g)
    return layers


def _layer_calls(model: nn.Module, tokens: torch.Tensor, layers: list[str], modules: Callable[[str], dict]):
    """Run the decoder layers one by one on `tokens` (batch, T) with pre-hooks on `modules(layer)`
    and yield (layer, their cached calls); each layer's input is the previous layer's output in
    the float model, computed before the caller changes the layer."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
        raise TypeError("tokens must be a (batch, T) tensor of token ids (torch.long)")
    (hidden, args, kwargs), = decoder_inputs(model, tokens)
    for name in layers:
        layer, out = model.get_submodule(name), []
        cached = _capture(modules(name), lambda: out.append(layer(hidden, *args, **kwargs)))
        hidden = out[0][0] if isinstance(out[0], tuple) else out[0]
        yield name, cached


@torch.no_grad()
def apply_awq(model: nn.Module, tokens: torch.Tensor, bits: int = 4, group_size: int = 128, clip: bool = False,
              n_grid: int = N_GRID, duo_scaling: bool = False, kinds=KINDS,
              quantizer: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[GroupResult]:
    """AWQ on a Llama-type model, in place, decoder layer by decoder layer, on calibration `tokens`
    (batch, T): search each layer group's scales (`search_scales`) on the inputs its block receives
    in the float model and fold them (`smoothquant.fold_scales`); with `clip`, then `apply_clip_search`.
    Without clipping the float model computes the same function afterwards; round it with
    `AWQ(...).storage()`.

    `quantizer` (W ↦ Ŵ) is the rounding the search simulates; by default `fake_quantize` at
    `bits` and `group_size`. Each layer's input is the float output of the layer before, as in
    llm-awq and llm-compressor.
    """
    quantizer = quantizer or (lambda w: fake_quantize(w, bits, group_size))
    layers = _by_layer(layer_groups(model, kinds))
    parents = lambda layer: {g.parent: model.get_submodule(g.parent) for g in layers[layer]}  # noqa: E731
    results = []
    for layer, cached in _layer_calls(model, tokens, list(layers), parents):
        for group in layers[layer]:
            xs = [_first_input(*call) for call in cached[group.parent]]
            # mean |x| per channel: float32 sums per call, as llm-compressor accumulates them
            x_mean = sum(x.abs().float().flatten(0, -2).sum(0) for x in xs) / sum(x[..., 0].numel() for x in xs)
            result = search_scales(model, group, cached[group.parent], x_mean, quantizer, n_grid, duo_scaling,
                                   group_size)
            fold_scales(model, group, result.scales)
            results.append(result)
    if clip:
        apply_clip_search(model, tokens, bits, group_size, n_grid)
    return results


@torch.no_grad()
def apply_clip_search(model: nn.Module, tokens: torch.Tensor, bits: int = 4, group_size: int = 128,
                      n_grid: int = N_GRID) -> None:
    """AWQ's optional second step, in place: for every Linear of the decoder layers but the query
    and key projections (whose errors the softmax amplifies), `search_clip` on the inputs it
    receives from `tokens`, then `apply_clip`."""
    layers = list(_by_layer(layer_groups(model, ("qkv",))))

    def linears(layer):
        return {f"{layer}.{n}": m for n, m in model.get_submodule(layer).named_modules()
                if isinstance(m, nn.Linear) and not n.endswith(CLIP_SKIP)}

    for _, cached in _layer_calls(model, tokens, layers, linears):
        for name, calls in cached.items():
            linear = model.get_submodule(name)
            x = torch.cat([_first_input(*call).reshape(-1, linear.in_features) for call in calls])
            apply_clip(linear, search_clip(linear.weight, x, bits, group_size, n_grid), group_size)


# -- the salient-channel experiment ---------------------------------------------------------------

def salient_channels(x_mean: torch.Tensor, fraction: float = 0.01) -> torch.Tensor:
    """The input channels with the largest mean |x|, round(fraction·n) of them (at least one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return x_mean.topk(max(1, round(fraction * x_mean.numel()))).indices.sort().values


@torch.no_grad()
def protect_channels(model: nn.Module, stats: dict, bits: int, group_size: int, fraction: float = 0.01,
                     which: str = "salient", protect: str = "fp16", scale: float = 2.0, seed: int = 0,
                     skip=("lm_head",)) -> None:
    """The experiment that motivates AWQ, in place: round every Linear's weight group-wise
    (`fake_quantize`), but protect a `fraction` of its input channels, the `which` = "salient"
    ones (largest mean |x| in `stats`, from `models.capture_activations`) or "random" ones.
    protect="fp16": those columns keep their float weights (mixed precision);
    protect="scale": they are multiplied by `scale` before rounding and divided after,
    Ŵ = Q(W·diag(s))·diag(s)⁻¹ with s = `scale` on them and 1 elsewhere."""
    if which not in ("salient", "random") or protect not in ("fp16", "scale"):
        raise ValueError(f"which must be 'salient' or 'random' and protect 'fp16' or 'scale', got {which!r}, {protect!r}")
    for name, linear in model.named_modules():
        if not isinstance(linear, nn.Linear) or name.rsplit(".", 1)[-1] in skip or name in skip:
            continue
        n = linear.in_features
        if which == "salient":
            channels = salient_channels(stats[name].mean_abs, fraction)
        else:
            generator = torch.Generator().manual_seed(seed)  # the same draw for every layer of a width
            channels = torch.randperm(n, generator=generator)[:max(1, round(fraction * n))].sort().values
        w = linear.weight.float()
        if protect == "fp16":
            w_hat = fake_quantize(w, bits, group_size)
            w_hat[:, channels] = w[:, channels]
        else:
            s = torch.ones(n, device=w.device)
            s[channels] = scale
            w_hat = fake_quantize(w * s, bits, group_size) / s
        linear.weight.copy_(w_hat.to(linear.weight.dtype))


# -- schemes for nn.quantize_model ----------------------------------------------------------------

@dataclass(frozen=True)
class AWQ:
    """`quantize_model` scheme: AWQ's search on calibration text (`apply_awq`, in `prepare_model`),
    then every Linear rounded group-wise and stored as `groupwise.GroupQuantLinear`."""

    bits: int = 4
    group_size: int = 128
    clip: bool = False
    n_grid: int = N_GRID
    duo_scaling: bool = False
    calibration: Calibration = Calibration()

    def __post_init__(self):
        RTN(self.bits, self.group_size)
        grid(self.n_grid)

    @property
    def name(self) -> str:
        return f"awq-w{self.bits}-g{self.group_size}" + ("-clip" if self.clip else "")

    def storage(self) -> RTN:
        """The rounding that follows the search (`groupwise.RTN`, a scheme without calibration)."""
        return RTN(self.bits, self.group_size)

    def prepare_model(self, model: nn.Module, tokenizer=None) -> list[GroupResult]:
        tokens = self.calibration.token_batch(model, tokenizer)
        return apply_awq(model, tokens, self.bits, self.group_size, self.clip, self.n_grid, self.duo_scaling)

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        return self.storage().quantize_linear(linear)
