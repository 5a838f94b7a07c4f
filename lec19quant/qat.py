"""Quantization-aware training: fake quantization with a straight-through estimator, Linear
layers that train through it, and prepare / convert in the spirit of torchao.

Fake quantization rounds onto the integer grid and straight back, in float, with step Δ and zero
point z (as in PyTorch, torchao and LSQ, the scale is the step: chapter 4's s is 1/Δ):
    q = clamp(round(x / Δ) + z, qmin, qmax),    x̂ = (q − z) · Δ
Round has derivative 0 almost everywhere. The straight-through estimator (STE) differentiates
the rest of the formula with round replaced by the identity, and the clamp zeroes the gradient
outside the range (the clipped STE):
    ∂x̂/∂x = Δ · (1/Δ) (that is, 1) where qmin ≤ round(x / Δ) + z ≤ qmax, and 0 elsewhere.
As in PyTorch and torchao, x / Δ is computed as x · (1/Δ), and the gradient as (g · Δ) · (1/Δ),
so that outputs and gradients equal torchao's bit for bit.
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

from .kernels import BACKENDS, use_triton
from .nn import QuantizationReport, model_nbytes, quantize_model
from .quantize import FLOAT_DTYPES, check_granularity

MAX_CODE = 2**24  # integers beyond this are not exact in float32


def _reference(x: torch.Tensor, step: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int):
    """x̂ = (clamp(round(x · (1/Δ)) + z) − z) · Δ in float32, cast to x's dtype, and the mask
    qmin ≤ round(x · (1/Δ)) + z ≤ qmax of the clipped straight-through estimator."""
    q = torch.round(x.float() * (1.0 / step)) + zero
    inside = (q >= qmin) & (q <= qmax)
    return ((q.clamp(qmin, qmax) - zero) * step).to(x.dtype), inside


def _runs(shape: torch.Size, qshape: torch.Size) -> int | None:
    """How many consecutive elements (row-major) of a tensor of `shape` share one entry of
    quantization parameters of `qshape` (broadcast against it); None if they are not runs."""
    qshape = (1,) * (len(shape) - len(qshape)) + tuple(qshape)
    k = 0
    while k < len(shape) and qshape[k] == shape[k]:
        k += 1
    return math.prod(shape[k:]) if all(s == 1 for s in qshape[k:]) else None


class _FakeQuantize(torch.autograd.Function):
    """Fake quantization whose backward is the clipped straight-through estimator; the gradient
    of the step (LSQ, Esser et al. 2020) is (q − z) − x/Δ inside the range and q − z outside.
    Returns (x̂, mask); `group` is None for the torch path, else the run length for the kernel."""

    @staticmethod
    def forward(ctx, x, step, zero, qmin, qmax, group):
        ctx.group, ctx.qmin, ctx.qmax = group, qmin, qmax
        if group is None:
            out, inside = _reference(x, step, zero, qmin, qmax)
        else:
            from .kernels import fake_quant as kernel

            x = x.contiguous()
            out = torch.empty_like(x)
            inside = torch.empty(x.shape, dtype=torch.bool, device=x.device)
            kernel.fake_quantize(x, step.contiguous(), zero.contiguous(), out, inside.view(torch.uint8),
                                 group, qmin, qmax)
        ctx.mark_non_differentiable(inside)
        ctx.save_for_backward(inside, step, zero, x if ctx.needs_input_grad[1] else None)
        return out, inside

    @staticmethod
    def backward(ctx, grad, _):
        inside, step, zero, x = ctx.saved_tensors
        grad_x = grad_step = None
        if ctx.needs_input_grad[0]:
            if ctx.group is None:
                grad_x = torch.where(inside, grad.float() * step * (1.0 / step), 0.0).to(grad.dtype)
            else:
                from .kernels import fake_quant as kernel

                grad_x = torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)
                kernel.fake_quantize_backward(grad.contiguous(), inside.view(torch.uint8), step.contiguous(),
                                              grad_x, ctx.group)
        if ctx.needs_input_grad[1]:
            scaled = x.float() * (1.0 / step)
            q = (torch.round(scaled) + zero).clamp(ctx.qmin, ctx.qmax)
            d_step = (q - zero) - torch.where(inside, scaled, 0.0)
            grad_step = (grad.float() * d_step).sum_to_size(step.shape)
        return grad_x, grad_step, None, None, None, None


def _fake_quantize(x, step, zero, qmin: int, qmax: int, backend: str):
    """x̂ for float32 `step` and `zero` of one shape that broadcasts against x. Returns (x̂, mask)."""
    group = None
    if use_triton(backend, x, step):
        group = _runs(x.shape, step.shape)
        if group is None:
            if backend == "triton":
                raise ValueError(f"the Triton kernel needs each step to cover consecutive elements: steps of "
                                 f"shape {tuple(step.shape)} do not, for x of shape {tuple(x.shape)}")
        else:
            qshape = (1,) * (x.dim() - step.dim()) + tuple(step.shape)
            step, zero = step.reshape(qshape), zero.reshape(qshape)
    return _FakeQuantize.apply(x, step, zero, qmin, qmax, group)


def _check_qrange(qmin, qmax) -> None:
    if not (isinstance(qmin, int) and isinstance(qmax, int)) or not -MAX_CODE <= qmin < qmax <= MAX_CODE:
        raise ValueError(f"qmin < qmax must be ints within ±2^24, got qmin={qmin!r}, qmax={qmax!r}")


def fake_quantize(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int, group_size: int | None = None,
                  backend: str = "auto") -> torch.Tensor:
    """x̂ = (clamp(round(x / Δ) + z, qmin, qmax) − z) · Δ, differentiable by the clipped
    straight-through estimator (∂x̂/∂x = 1 inside the range, 0 outside), and in the step Δ
    (LSQ) when `scale` requires grad.

    `scale` (the step Δ > 0) and `zero_point` (integers in [qmin, qmax]) broadcast against x, or,
    with `group_size` g, against x viewed as (..., n / g, g): one value per tensor, per channel
    (e.g. shape (out, 1) for a weight) or per group. Computed in float32; x̂ has x's dtype. NaN in
    x gives NaN, ±inf the range's ends, both with gradient 0. `backend` is "auto", "torch" or
    "triton" (a fused kernel, for steps that each cover consecutive elements).
    """
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be a float32, float16 or bfloat16 tensor, got {getattr(x, 'dtype', type(x))}")
    if x.numel() == 0:
        raise ValueError("x is empty: there is nothing to quantize")
    _check_qrange(qmin, qmax)
    view = x
    if group_size is not None:
        if not isinstance(group_size, int) or group_size < 1 or x.dim() == 0 or x.shape[-1] % group_size:
            raise ValueError(f"group_size must be a positive int dividing the last dimension "
                             f"{tuple(x.shape)[-1:]}, got {group_size!r}")
        view = x.reshape(*x.shape[:-1], -1, group_size)
    step = torch.as_tensor(scale, device=x.device)
    zero = torch.as_tensor(zero_point, device=x.device)
    if not step.is_floating_point() or not torch.all(torch.isfinite(step) & (step > 0)):
        raise ValueError("scale (the step Δ) must be a finite, positive float")
    if zero.requires_grad:
        raise ValueError("zero_point is not learned here: pass it without requires_grad")
    whole = zero.double()
    if not torch.all((whole == torch.round(whole)) & (whole >= qmin) & (whole <= qmax)):
        raise ValueError(f"zero_point must hold integers in [qmin, qmax] = [{qmin}, {qmax}]")
    try:
        qshape = torch.broadcast_shapes(step.shape, zero.shape)
        if torch.broadcast_shapes(view.shape, qshape) != view.shape:
            raise RuntimeError
    except RuntimeError:
        raise ValueError(f"scale {tuple(step.shape)} and zero_point {tuple(zero.shape)} must broadcast "
                         f"against x{' viewed in groups' if group_size else ''} {tuple(view.shape)}") from None
    step, zero = step.float().expand(qshape), zero.float().expand(qshape)
    return _fake_quantize(view, step, zero, qmin, qmax, backend)[0].reshape(x.shape)


def qrange(bits: int) -> tuple[int, int]:
    """The signed codes of `bits` bits, as torchao's QAT uses them: −2^(b−1) … 2^(b−1) − 1."""
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int from 2 to 8, got {bits!r}")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


@torch.no_grad()
def choose_qparams(x: torch.Tensor, bits: int, symmetric: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One step Δ and zero point z per row of x (reducing its last dimension), as torchao chooses
    them, computed in x's dtype and returned as float32 (rows, 1):
    symmetric:  Δ = max|x| / ((qmax − qmin) / 2),  z = 0  (for 4 bits, max|x| / 7.5: the largest
                magnitude lands on −8, or on 7.5, which rounds to 8 and is clamped to 7);
    asymmetric: Δ = (max(x, 0) − min(x, 0)) / (qmax − qmin),  z = clamp(qmin − round(min(x, 0) / Δ)).
    Δ is at least the smallest normal number of x's dtype, so an all-zero row gets codes z.
    """
    qmin, qmax = qrange(bits)
    rows = x.reshape(-1, x.shape[-1])
    eps = torch.finfo(x.dtype).smallest_normal
    if symmetric:
        step = (rows.abs().amax(1, keepdim=True) / (float(qmax - qmin) / 2)).clamp(min=eps)
        zero = torch.zeros_like(step)
    else:
        lo, hi = rows.amin(1, keepdim=True).clamp(max=0), rows.amax(1, keepdim=True).clamp(min=0)
        step = ((hi - lo) / float(qmax - qmin)).clamp(min=eps)
        zero = (qmin - torch.round(lo / step)).clamp(qmin, qmax)
    if not torch.isfinite(step).all():
        raise ValueError("x contains NaN or inf, or its range overflows: no step can be chosen")
    return step.float(), zero.float()


GRANULARITIES = ("tensor", "row", "group")


@dataclass(frozen=True)
class FakeQuantConfig:
    """How one tensor is fake quantized: `bits`-bit signed codes, one step per tensor, per row (a
    weight's output channel, an activation's token) or per `group_size` consecutive values of a
    row; symmetric (z = 0) or asymmetric; `learnable`: the steps are trained parameters (LSQ)."""

    bits: int
    granularity: str = "group"
    group_size: int | None = None
    symmetric: bool = True
    learnable: bool = False

    def __post_init__(self):
        qrange(self.bits)
        check_granularity(self.granularity, self.group_size, GRANULARITIES)

    @property
    def name(self) -> str:
        size = f"g{self.group_size}" if self.granularity == "group" else self.granularity
        return f"{self.bits}-{size}" + ("" if self.symmetric else "-asym") + ("-lsq" if self.learnable else "")

    def groups(self, x: torch.Tensor) -> torch.Tensor:
        """x viewed as (groups, values per group): the values that share a step are a row."""
        if self.granularity == "tensor":
            return x.reshape(1, -1)
        if self.granularity == "group" and x.shape[-1] % self.group_size:
            raise ValueError(f"the last dimension ({x.shape[-1]}) is not a multiple of group_size={self.group_size}")
        return x.reshape(-1, x.shape[-1] if self.granularity == "row" else self.group_size)


class FakeQuantizer(nn.Module):
    """Fake quantizes a tensor as its `FakeQuantConfig` says. The step and zero point are chosen
    from the tensor at every call (`choose_qparams`), or, when learnable, chosen once from
    `weight` and the steps trained by LSQ's gradient: the parameter is log Δ, so that Δ stays
    positive and Adam's updates change it by a fraction of itself (LSQ itself learns Δ with
    SGD and scales its gradient by 1/√(values per step · qmax))."""

    def __init__(self, config: FakeQuantConfig, weight: torch.Tensor | None = None, backend: str = "auto"):
        super().__init__()
        self.config, self.backend = config, backend
        self.qmin, self.qmax = qrange(config.bits)
        if config.learnable:
            if weight is None:
                raise ValueError("a learnable step starts from the tensor it quantizes: pass weight")
            step, zero = choose_qparams(config.groups(weight.detach()), config.bits, config.symmetric)
            self.log_step = nn.Parameter(step.log())
            self.register_buffer("zero", zero)

    def qparams(self, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Δ, z), each (groups, 1), for x viewed in groups."""
        if not self.config.learnable:
            return choose_qparams(groups, self.config.bits, self.config.symmetric)
        if groups.shape[0] != self.log_step.shape[0]:
            raise ValueError(f"this quantizer learned {self.log_step.shape[0]} steps; x has {groups.shape[0]} groups")
        return self.log_step.exp(), self.zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.config.groups(x)
        step, zero = self.qparams(groups)
        return _fake_quantize(groups, step, zero, self.qmin, self.qmax, self.backend)[0].reshape(x.shape)

    @torch.no_grad()
    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The integer codes behind `forward(x)`: (int8 codes as x viewed in groups, Δ, z)."""
        groups = self.config.groups(x)
        step, zero = self.qparams(groups)
        if not torch.all(torch.isfinite(step) & (step > 0)):
            raise ValueError("a learned step is not a finite positive number: training diverged")
        codes = (torch.round(groups.float() * (1.0 / step)) + zero).clamp(self.qmin, self.qmax)
        return codes.to(torch.int8), step.detach().clone(), zero.detach().clone()

    def extra_repr(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class QATConfig:
    """A `quantize_model` scheme that prepares Linear layers for QAT: fake-quantized weights and,
    optionally, fake-quantized inputs (activations), on the "auto", "torch" or "triton" backend."""

    weights: FakeQuantConfig
    activations: FakeQuantConfig | None = None
    backend: str = "auto"

    def __post_init__(self):
        if self.activations is not None and self.activations.learnable:
            raise ValueError("learnable steps are for weights: an activation's step would need data to start from")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    @property
    def name(self) -> str:
        return f"qat-w{self.weights.name}" + ("" if self.activations is None else f"-a{self.activations.name}")

    def quantize_linear(self, linear: nn.Linear) -> "QATLinear":
        return QATLinear(linear, self)


class QATLinear(nn.Module):
    """y = x̂·Ŵᵀ + b with Ŵ the fake-quantized weight and x̂ the input, fake quantized too when
    the config has activations. The weight and bias are the Linear layer's own Parameters, so an
    optimizer that held them trains them still."""

    def __init__(self, linear: nn.Linear, config: QATConfig):
        super().__init__()
        for spec in (config.weights, config.activations):
            if spec is not None and spec.granularity == "group" and linear.in_features % spec.group_size:
                raise ValueError(f"in_features={linear.in_features} is not a multiple of group_size={spec.group_size}")
        self.in_features, self.out_features, self.config = linear.in_features, linear.out_features, config
        self.weight, self.bias = linear.weight, linear.bias
        self.weight_fake_quant = FakeQuantizer(config.weights, linear.weight, config.backend)
        self.input_fake_quant = (None if config.activations is None
                                 else FakeQuantizer(config.activations, backend=config.backend))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_fake_quant is not None:
            x = self.input_fake_quant(x)
        return nn.functional.linear(x, self.weight_fake_quant(self.weight), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.config.name}"


class AffineQuantizedLinear(nn.Module):
    """What `convert_qat` makes of a QATLinear: y = x̂·Ŵᵀ + b with Ŵ = (q − z)·Δ dequantized from
    b-bit integer codes q (int8 buffers), one step Δ (and, if asymmetric, zero point z) per group;
    x̂ is the input fake quantized as in training, if it was. Computes exactly what the QATLinear
    computed."""

    def __init__(self, layer: QATLinear):
        super().__init__()
        self.in_features, self.out_features, self.config = layer.in_features, layer.out_features, layer.config
        self.bits = layer.config.weights.bits
        codes, step, zero = layer.weight_fake_quant.quantize(layer.weight.detach())
        self.group = codes.shape[1]
        self.register_buffer("codes", codes.reshape(layer.weight.shape))
        self.register_buffer("step", step.float())
        self.register_buffer("zero", None if layer.config.weights.symmetric else zero.to(torch.int8))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
        self.input_fake_quant = layer.input_fake_quant

    def dequantized_weight(self) -> torch.Tensor:
        q = self.codes.float().reshape(-1, self.group)
        if self.zero is not None:
            q = q - self.zero.float()
        return (q * self.step).reshape(self.codes.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_fake_quant is not None:
            x = self.input_fake_quant(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, self.dequantized_weight().to(x.dtype), bias)

    @property
    def nbytes(self) -> int:
        """Bytes as stored packed: b bits per code and per zero point, 4 per step, and the bias."""
        zero = 0 if self.zero is None else -(-self.zero.numel() * self.bits // 8)
        bias = 0 if self.bias is None else self.bias.nbytes
        return -(-self.codes.numel() * self.bits // 8) + self.step.nbytes + zero + bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.config.name}"


def prepare_qat(model: nn.Module, config: QATConfig, skip=("lm_head",)) -> QuantizationReport:
    """Replace, in place, every nn.Linear of `model` (but those matched by `skip`, as in
    `quantize_model`) by a QATLinear; train the model afterwards, then `convert_qat` it."""
    if not isinstance(config, QATConfig):
        raise TypeError(f"prepare_qat takes a QATConfig, got {type(config).__name__}")
    if any(isinstance(m, QATLinear) for m in model.modules()):
        raise ValueError("the model is prepared for QAT already: convert it, or prepare a fresh copy")
    return quantize_model(model, config, skip)


def convert_qat(model: nn.Module) -> QuantizationReport:
    """Replace, in place, every QATLinear of `model` by the AffineQuantizedLinear that stores its
    weight as integer codes: the model computes what the fake-quantized one computed."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, QATLinear)]
    if not layers:
        raise ValueError("the model has no QATLinear layers: prepare_qat it (and train it) first")
    before = model_nbytes(model)
    for name, layer in layers:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, AffineQuantizedLinear(layer))
    return QuantizationReport(layers[0][1].config.name, [name for name, _ in layers], [], before,
                              model_nbytes(model))


def train(model: nn.Module, ids: torch.Tensor, steps: int, lr: float, context: int = 64,
          batch_size: int = 16, seed: int = 0, callback=None) -> list[float]:
    """Train a causal language model (`model(ids).logits`) for `steps` steps of AdamW on random
    windows of `context` + 1 tokens of `ids`: next-token cross-entropy; the learning rate rises
    linearly over the first 5% of the steps, then decays to 0 along a cosine. The same `seed`
    draws the same windows, so runs that differ only in their model see the same data. Calls
    `callback(step, model)` after each step; returns the losses."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype != torch.long:
        raise TypeError("ids must be a 1-D tensor of token ids (torch.long)")
    if len(ids) <= context + 1:
        raise ValueError(f"{len(ids)} tokens are too few for windows of {context} + 1")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    offsets = torch.arange(context + 1)
    losses = []
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        starts = torch.randint(0, len(ids) - context - 1, (batch_size, 1), generator=generator)
        batch = ids[starts + offsets].to(device)
        logits = model(batch[:, :-1]).logits
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step, model)
    model.eval()
    return losses
