"""QLoRA (Dettmers et al. 2023): fine-tuning a 4-bit model through low-rank adapters.

NF4:        blocks of 64 weights, a = max|w| per block, q = the NF4 code nearest to w/a,
            ŵ = NF4[q]·a; two codes per byte, the first in the high nibble.
Double      the absmax values less their mean μ, quantized to 8 bits with bitsandbytes'
quantization: dynamic map in blocks of 256: â = DYN[c]·a₂ + μ.
LoRA:       y = Ŵx + (α/r)·B·A·x with A (r × in) and B (out × r); only A and B train
            (`prepare_qlora` on NF4 weights, `prepare_lora` on the weights as they are).
AdamW:      m ← β₁m + (1 − β₁)g,  v ← β₂v + (1 − β₂)g²,
            p ← p·(1 − lr·λ) − lr·(m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε).

Everything here produces the same bytes as bitsandbytes' CPU path (tests/test_qlora.py).
"""
import fnmatch
import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

from . import formats, memory
from .kernels import use_triton
from .nn import quantize_model
from .quantize import _check_block_size, _check_input

BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # bitsandbytes' 4-bit block sizes
DOUBLE_QUANT_BLOCKSIZE = 256
TINY_ABSMAX = 1e-38  # a block whose absmax is smaller is scaled as if it were this (bitsandbytes)


def dynamic_map() -> formats.Codebook:
    """bitsandbytes' signed 8-bit dynamic map (Dettmers 2015), which double quantization uses.

    For each decimal exponent 10^e, e = −6 … 0, it has 2^(e+6) magnitudes: the centres of
    2^(e+6) equal intervals of [0.1, 1], times 10^e, so that small numbers keep their relative
    precision; each with both signs, plus 0 and 1: 2·127 + 2 = 256 values in [−0.99297, 1].
    The arithmetic is bitsandbytes' own: float32 centres times a Python float, in float32.
    """
    values = [0.0, 1.0]
    for e in range(-6, 1):
        edges = torch.linspace(0.1, 1, 2 ** (e + 6) + 1)
        magnitudes = 10.0**e * ((edges[:-1] + edges[1:]) / 2)
        values += magnitudes.tolist() + (-magnitudes).tolist()
    return formats.Codebook("DYNAMIC8", sorted(values))


DYNAMIC = dynamic_map()


@lru_cache
def _table(book: formats.Codebook, device: torch.device) -> torch.Tensor:
    return torch.tensor(book.table, dtype=torch.float32, device=device)


@dataclass
class QuantState:
    """What dequantizing NF4 codes needs, with bitsandbytes' field names.

    Without double quantization `absmax` holds the float32 absmax of each block. With it,
    `absmax` holds their uint8 codes in the dynamic map, `offset` their mean μ, and `state2`
    the second level: its `absmax` is a float32 a₂ per 256 codes and its `code` the map.
    """

    absmax: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype  # the dtype of the weights that were quantized, and of nf4_dequantize
    blocksize: int
    code: torch.Tensor  # the float32 values that codes stand for: NF4's 16 (the map's 256 in state2)
    quant_type: str = "nf4"
    offset: torch.Tensor | None = None
    state2: "QuantState | None" = None

    @property
    def nested(self) -> bool:
        """True with double quantization (bitsandbytes' name)."""
        return self.state2 is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _check_blocksize(blocksize) -> int:
    if blocksize not in BLOCKSIZES or isinstance(blocksize, bool):
        raise ValueError(f"blocksize must be one of {BLOCKSIZES} (as in bitsandbytes), got {blocksize!r}")
    return blocksize


def blockwise_quantize(x: torch.Tensor, book: formats.Codebook, blocksize: int):
    """bitsandbytes' blockwise quantization onto a codebook with values in [−1, 1] (NF4, its FP4,
    the dynamic map): x flattened row-major into blocks, a = max|x| per block (a shorter last block
    has its own), q = the entry nearest to clamp(x·(1/a), −1, 1), an exact midpoint going to the
    lower entry. Returns (uint8 q, one per value; float32 a, one per block)."""
    _check_input(x)
    _check_block_size(blocksize)
    flat = x.reshape(-1).float()
    n = flat.numel()
    n_blocks = -(-n // blocksize)
    blocks = F.pad(flat, (0, n_blocks * blocksize - n)).view(n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = (blocks * (1.0 / absmax.clamp(min=TINY_ABSMAX))[:, None]).clamp(-1, 1)
    return formats.encode(scaled.view(-1)[:n], book), absmax


def blockwise_dequantize(codes: torch.Tensor, absmax: torch.Tensor, book: formats.Codebook,
                         blocksize: int) -> torch.Tensor:
    """x̂ = book[q]·a in float32, 1-D, for the codes and absmax of `blockwise_quantize`."""
    values = _table(book, codes.device).index_select(0, codes.reshape(-1).int())
    return _scale_blocks(values, absmax, blocksize)


def _scale_blocks(values: torch.Tensor, absmax: torch.Tensor, blocksize: int) -> torch.Tensor:
    """values · absmax of their block, in float32, for 1-D values in consecutive blocks."""
    n = values.numel()
    padding = absmax.numel() * blocksize - n
    blocks = (F.pad(values, (0, padding)) if padding else values).view(-1, blocksize)
    return (blocks * absmax[:, None]).view(-1)[:n]


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte, the first in the high nibble: (q[0::2] << 4) | q[1::2]. An odd
    count is padded with NF4's code of zero (7), as bitsandbytes pads."""
    codes = codes.reshape(-1).to(torch.uint8)
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_full((1,), formats.NF4.table.index(0.0))])
    return (codes[0::2] << 4) | codes[1::2]


def unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The first `n` 4-bit codes of `packed` (uint8), high nibble first."""
    return torch.stack([packed >> 4, packed & 15], dim=1).view(-1)[:n]


def nf4_quantize(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True):
    """NF4 codes of `w` (any shape, float32/float16/bfloat16, flattened row-major) and the state
    that dequantizes them, as bitsandbytes' quantize_4bit(quant_type="nf4",
    compress_statistics=double_quant) computes them.

    Each block of `blocksize` values has a = max|w| and codes q = the NF4 value nearest to
    w·(1/a) (an exact midpoint goes to the lower one), packed two per byte, the first in the high
    nibble. A block with a < 1e-38 (all zeros, or subnormals) is scaled by 1/1e-38, so that all
    zeros become code 7 (0x77). Double quantization stores instead of the float32 absmax values
    their 8-bit codes c in the dynamic map: μ = mean(a), c and a₂ = the blockwise (256) absmax
    quantization of a − μ.

    Returns (packed uint8 of ⌈n/2⌉ bytes, QuantState).
    """
    _check_blocksize(blocksize)
    codes, absmax = blockwise_quantize(w, formats.NF4, blocksize)
    state = QuantState(absmax, w.shape, w.dtype, blocksize, _table(formats.NF4, w.device))
    if double_quant:
        offset = absmax.mean()
        codes8, absmax2 = blockwise_quantize(absmax - offset, DYNAMIC, DOUBLE_QUANT_BLOCKSIZE)
        state.absmax, state.offset = codes8, offset
        state.state2 = QuantState(absmax2, absmax.shape, torch.float32, DOUBLE_QUANT_BLOCKSIZE,
                                  _table(DYNAMIC, w.device), quant_type="dynamic8")
    return pack_nibbles(codes), state


def block_absmax(state: QuantState) -> torch.Tensor:
    """The float32 absmax of every block: `state.absmax` itself, or with double quantization
    DYN[c]·a₂[i // 256] + μ."""
    if not state.nested:
        return state.absmax
    inner = state.state2
    return blockwise_dequantize(state.absmax, inner.absmax, DYNAMIC, inner.blocksize) + state.offset


def _check_state(packed: torch.Tensor, state: QuantState) -> None:
    if not isinstance(state, QuantState) or state.quant_type != "nf4":
        raise TypeError(f"state must be the NF4 QuantState of nf4_quantize, got {state!r:.80}")
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise TypeError(f"packed must be a uint8 tensor, got {getattr(packed, 'dtype', type(packed))}")
    if packed.numel() != -(-state.numel // 2):
        raise ValueError(f"packed has {packed.numel()} bytes, but {state.numel} codes of shape "
                         f"{tuple(state.shape)} take {-(-state.numel // 2)}")
    n_blocks = -(-state.numel // state.blocksize)
    if state.absmax.numel() != n_blocks:
        raise ValueError(f"state has {state.absmax.numel()} absmax values for {n_blocks} blocks")


def nf4_dequantize(packed: torch.Tensor, state: QuantState, backend: str = "auto") -> torch.Tensor:
    """ŵ = NF4[q]·a in float32 for every code q of `packed` and absmax a of its block, then cast
    to `state.dtype` and shaped `state.shape`. `backend`: "auto", "torch" or "triton"."""
    _check_state(packed, state)
    absmax = block_absmax(state)
    if use_triton(backend, packed):
        from .kernels import nf4 as kernel

        out = torch.empty(state.shape, dtype=state.dtype, device=packed.device)
        kernel.dequantize(packed.reshape(-1), absmax, state.code, out.view(-1), state.blocksize)
        return out
    codes = unpack_nibbles(packed.reshape(-1), state.numel)
    return blockwise_dequantize(codes, absmax, formats.NF4, state.blocksize).view(state.shape).to(state.dtype)


def nf4_matmul(x: torch.Tensor, packed: torch.Tensor, state: QuantState, backend: str = "auto") -> torch.Tensor:
    """y = x·Ŵᵀ for x (..., K) and NF4 weights Ŵ (N, K), in x's dtype: Ŵ is dequantized and cast
    to x.dtype. On the Triton path one row of x (decoding, batch 1; K even) takes the fused kernel that
    dequantizes as it multiplies (float32 sums in another order: equal to within rounding)."""
    _check_state(packed, state)
    if len(state.shape) != 2 or x.shape[-1] != state.shape[1]:
        raise ValueError(f"x {tuple(x.shape)} cannot multiply weights of shape {tuple(state.shape)}")
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[0] == 1 and use_triton(backend, packed, x) and state.shape[1] % 2 == 0:
        from .kernels import nf4 as kernel

        y = torch.empty(state.shape[0], dtype=x.dtype, device=x.device)
        kernel.gemv(rows[0].contiguous(), packed.reshape(-1), block_absmax(state), state.code, y,
                    state.blocksize)
        return y.view(*x.shape[:-1], state.shape[0])
    return F.linear(x, nf4_dequantize(packed, state, backend).to(x.dtype))


# ---------------------------------------------------------------------------------------------
# Layers


class _NF4Linear(torch.autograd.Function):
    """y = x·Ŵᵀ keeping only the 4-bit weights for the backward pass, which dequantizes them
    again for dx = dy·Ŵ (as bitsandbytes' MatMul4Bit does): no weight gradient, Ŵ is frozen."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return nf4_matmul(x, layer.packed, layer.state, layer.backend)

    @staticmethod
    def backward(ctx, dy):
        if not ctx.needs_input_grad[0]:
            return None, None
        return dy @ ctx.layer.dequantized_weight().to(dy.dtype), None


class Linear4bit(nn.Module):
    """y = x·Ŵᵀ + b with a frozen NF4 weight Ŵ, computed in x's dtype (Ŵ is dequantized on the
    fly, in forward and again in backward). Its buffers are what is stored: the packed codes, the
    absmax values (their 8-bit codes, a₂ and μ with double quantization) and the bias."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, blocksize: int = 64,
                 double_quant: bool = True, backend: str = "auto"):
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"weight must be a matrix (out_features, in_features), got shape {tuple(weight.shape)}")
        self.out_features, self.in_features = weight.shape
        self.blocksize, self.double_quant, self.backend, self.dtype = blocksize, double_quant, backend, weight.dtype
        packed, state = nf4_quantize(weight.detach(), blocksize, double_quant)
        self.register_buffer("packed", packed)
        self.register_buffer("absmax", state.absmax)
        if double_quant:
            self.register_buffer("absmax2", state.state2.absmax)
            self.register_buffer("offset", state.offset)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, blocksize: int = 64, double_quant: bool = True,
                    backend: str = "auto") -> "Linear4bit":
        return cls(linear.weight, linear.bias, blocksize, double_quant, backend)

    @property
    def state(self) -> QuantState:
        """The QuantState of the weight, built from the buffers (so it follows .to(device))."""
        device = self.packed.device
        state = QuantState(self.absmax, torch.Size((self.out_features, self.in_features)), self.dtype,
                           self.blocksize, _table(formats.NF4, device))
        if self.double_quant:
            state.offset = self.offset
            state.state2 = QuantState(self.absmax2, self.absmax.shape, torch.float32, DOUBLE_QUANT_BLOCKSIZE,
                                      _table(DYNAMIC, device), quant_type="dynamic8")
        return state

    def dequantized_weight(self) -> torch.Tensor:
        return nf4_dequantize(self.packed, self.state, self.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _NF4Linear.apply(x, self)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes as stored: the packed codes, the absmax values (or their codes, a₂ and μ) and the bias."""
        return sum(t.nbytes for t in (*self.buffers(), *self.parameters()))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"blocksize={self.blocksize}, double_quant={self.double_quant}")


@dataclass(frozen=True)
class NF4Scheme:
    """`quantize_model` scheme: every Linear becomes a Linear4bit (QLoRA's storage format)."""

    blocksize: int = 64
    double_quant: bool = True

    def __post_init__(self):
        _check_blocksize(self.blocksize)

    @property
    def name(self) -> str:
        if (self.blocksize, self.double_quant) == (64, True):
            return "nf4"
        return f"nf4-b{self.blocksize}" + ("" if self.double_quant else "-nodq")

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        return Linear4bit.from_linear(linear, self.blocksize, self.double_quant)


class LoRALinear(nn.Module):
    """y = base(x) + (α/r)·B·A·dropout(x): a frozen layer and a trainable update of rank r.

    A (r × in) starts Kaiming-uniform, as nn.Linear initialises its weight, and B (out × r) at
    zero, so that training starts from the base model exactly. The adapters are float32; the
    update is computed in float32 and added in x's dtype.
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"r must be a positive int, got {r!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout is a probability in [0, 1), got {dropout!r}")
        self.base, self.r, self.alpha = base, r, alpha
        self.in_features, self.out_features = base.in_features, base.out_features
        device = base.packed.device if isinstance(base, Linear4bit) else base.weight.device
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=device))
        self.dropout = nn.Dropout(dropout)

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A), self.lora_B)
        return self.base(x) + (update * self.scaling).to(x.dtype)

    def merged(self, requantize: bool = False) -> nn.Module:
        """The layer with the update folded in, W' = Ŵ + (α/r)·B·A: an nn.Linear in float32, or
        with `requantize` a Linear4bit of W' (which rounds the update away where it is small)."""
        base = self.base
        weight = base.dequantized_weight() if isinstance(base, Linear4bit) else base.weight
        with torch.no_grad():
            weight = weight.float() + self.scaling * (self.lora_B @ self.lora_A)
        bias = None if base.bias is None else base.bias.detach().float()
        if requantize:
            return Linear4bit(weight, bias, base.blocksize, base.double_quant, base.backend)
        linear = nn.utils.skip_init(nn.Linear, self.in_features, self.out_features, bias=bias is not None,
                                    device=weight.device)
        linear.weight.data.copy_(weight)
        if bias is not None:
            linear.bias.data.copy_(bias)
        return linear.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name.rsplit(".", 1)[-1], p) for p in patterns)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def prepare_lora(model: nn.Module, r: int = 8, alpha: float = 16, target_modules=("*",),
                 dropout: float = 0.0, skip=("lm_head",)) -> nn.Module:
    """LoRA (Hu et al. 2022), in place, on the weights as they are: freeze every parameter and give
    each nn.Linear or Linear4bit layer that matches `target_modules` (and not `skip`) a LoRA
    adapter (rank r, scale α/r). Patterns are globs matched against a layer's full name or its last
    part ("q_proj"). On a float model this is plain LoRA, QLoRA's control: under the same seed the
    adapters start equal to those `prepare_qlora` gives the same layers. Returns the model, whose
    only trainable parameters are the adapters."""
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    if isinstance(skip, str):
        skip = (skip,)
    for p in model.parameters():
        p.requires_grad_(False)
    adapted = {id(m.base) for m in model.modules() if isinstance(m, LoRALinear)}
    layers = [name for name, m in model.named_modules()
              if isinstance(m, (nn.Linear, Linear4bit)) and id(m) not in adapted and not _matches(name, skip)]
    targets = [name for name in layers if _matches(name, target_modules)]
    if not targets:
        raise ValueError(f"no layer matches target_modules={target_modules}; "
                         f"the layers are named like {layers[:3]}")
    for name in targets:
        _replace(model, name, LoRALinear(model.get_submodule(name), r, alpha, dropout))
    return model


def prepare_qlora(model: nn.Module, r: int = 8, alpha: float = 16, target_modules=("*",),
                  dropout: float = 0.0, skip=("lm_head",), blocksize: int = 64,
                  double_quant: bool = True) -> nn.Module:
    """QLoRA, in place: freeze every parameter, store every nn.Linear (but those matching `skip`)
    in NF4, and give those matching `target_modules` a LoRA adapter (rank r, scale α/r), as
    `prepare_lora` does. The default "*" adapts every quantized layer, as the QLoRA paper does.
    Returns the model, whose only trainable parameters are the adapters."""
    quantize_model(model, NF4Scheme(blocksize, double_quant), skip)
    return prepare_lora(model, r, alpha, target_modules, dropout, skip)


def merge(model: nn.Module, requantize: bool = False) -> nn.Module:
    """For deployment, in place: replace every LoRALinear by its `merged(requantize)` layer."""
    adapted = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not adapted:
        raise ValueError("the model has no LoRALinear layer to merge")
    for name in adapted:
        _replace(model, name, model.get_submodule(name).merged(requantize))
    return model


# ---------------------------------------------------------------------------------------------
# Paged AdamW


@dataclass
class PagingStats:
    """What the paged optimizer moved: pages are one parameter's optimizer state."""

    bytes_in: int = 0  # host → device
    bytes_out: int = 0  # device → host (write-backs of updated states)
    page_ins: int = 0
    page_outs: int = 0  # evictions, with or without a write-back
    prefetches: int = 0  # page-ins made ahead of use
    hits: int = 0  # states found resident when needed
    peak_resident_bytes: int = 0


class PagedAdamW(torch.optim.Optimizer):
    """torch.optim.AdamW (same arguments, defaults and arithmetic) whose states m and v live in a
    host store (CPU memory, pinned for a CUDA model) and are paged onto the parameter's device
    when it is updated, under a budget of resident bytes.

    Each step walks the parameters in order: it pages the state in (evicting the least recently
    used ones to stay within `budget_bytes`), starts paging in the next parameter's state
    (prefetch, when both fit), and updates. Evicted states that were updated are written back.
    `stats` counts the traffic. The update is bit for bit torch.optim.AdamW(foreach=False)'s.
    On a CPU the device and the host are both CPU memory, but the copies are real.

    The host store is `self.state` (torch's layout: step, exp_avg, exp_avg_sq); states still
    resident are newer than it until `flush()`, which `state_dict()` calls.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 budget_bytes: int | None = None):
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            if isinstance(value, torch.Tensor) or not 0.0 <= value:
                raise ValueError(f"{name} must be a float ≥ 0, got {value!r}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two floats in [0, 1), got {betas!r}")
        if budget_bytes is not None and (isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int)
                                         or budget_bytes < 0):
            raise ValueError(f"budget_bytes must be None (no limit) or an int ≥ 0, got {budget_bytes!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize)
        super().__init__(params, defaults)
        self.budget_bytes = budget_bytes
        self.stats = PagingStats()
        self._resident: OrderedDict = OrderedDict()  # param → its state on the device, LRU first
        self._dirty: set = set()
        for group in self.param_groups:
            for p in group["params"]:
                if p.is_complex():
                    raise ValueError("PagedAdamW does not take complex parameters")
                if budget_bytes is not None and self._state_bytes(p, group) > budget_bytes:
                    raise ValueError(f"a parameter of shape {tuple(p.shape)} has "
                                     f"{self._state_bytes(p, group):,} bytes of optimizer state, "
                                     f"more than budget_bytes={budget_bytes:,}")

    @staticmethod
    def _state_bytes(p: torch.Tensor, group: dict) -> int:
        return (3 if group["amsgrad"] else 2) * p.numel() * p.element_size()

    @property
    def resident_bytes(self) -> int:
        return sum(sum(t.nbytes for t in s.values()) for s in self._resident.values())

    def _host_state(self, p: torch.Tensor, group: dict) -> dict:
        """The host store's entry for p, created at zero (step 0) on first use."""
        state = self.state[p]
        if not state:
            pin = p.is_cuda
            state["step"] = torch.tensor(0.0)
            names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"] else ("exp_avg", "exp_avg_sq")
            for name in names:
                state[name] = torch.zeros(p.shape, dtype=p.dtype, pin_memory=pin)
        return state

    def _evict(self, p: torch.Tensor) -> None:
        resident = self._resident.pop(p)
        if p in self._dirty:
            host = self.state[p]
            for name, t in resident.items():
                host[name].copy_(t)
                self.stats.bytes_out += t.nbytes
            self._dirty.discard(p)
        self.stats.page_outs += 1

    def _make_room(self, nbytes: int, keep) -> bool:
        """Evict least recently used states (never `keep`) until nbytes more fit the budget."""
        if self.budget_bytes is None:
            return True
        resident = self.resident_bytes
        for p in list(self._resident):
            if resident + nbytes <= self.budget_bytes:
                break
            if p is not keep:
                resident -= sum(t.nbytes for t in self._resident[p].values())
                self._evict(p)
        return resident + nbytes <= self.budget_bytes

    def _page_in(self, p: torch.Tensor, group: dict, keep=None) -> dict | None:
        """p's state on its device: resident already, or copied in; None when it does not fit
        beside `keep` (a prefetch only)."""
        if p in self._resident:
            self._resident.move_to_end(p)
            return self._resident[p]
        host = self._host_state(p, group)
        if not self._make_room(self._state_bytes(p, group), keep):
            return None
        state = {name: torch.empty_like(t, device=p.device).copy_(t, non_blocking=True)
                 for name, t in host.items() if name != "step"}
        self._resident[p] = state
        self.stats.page_ins += 1
        self.stats.bytes_in += sum(t.nbytes for t in state.values())
        self.stats.peak_resident_bytes = max(self.stats.peak_resident_bytes, self.resident_bytes)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = [(group, p) for group in self.param_groups for p in group["params"] if p.grad is not None]
        for i, (group, p) in enumerate(work):
            if p.grad.is_sparse:
                raise ValueError("PagedAdamW does not take sparse gradients")
            if p in self._resident:
                self.stats.hits += 1
            state = self._page_in(p, group)
            if i + 1 < len(work) and work[i + 1][1] not in self._resident:
                if self._page_in(work[i + 1][1], work[i + 1][0], keep=p) is not None:
                    self.stats.prefetches += 1
            self._update(p, state, self.state[p]["step"], group)
            self._dirty.add(p)
        return loss

    @staticmethod
    def _update(p: torch.Tensor, state: dict, step_t: torch.Tensor, group: dict) -> None:
        """One AdamW step, in torch.optim.AdamW(foreach=False)'s order of operations."""
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        grad = -p.grad if group["maximize"] else p.grad
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        step_t += 1
        if wd != 0:
            p.mul_(1 - lr * wd)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = step_t.item()
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        if group["amsgrad"]:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            exp_avg_sq = state["max_exp_avg_sq"]
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        p.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))

    def flush(self) -> None:
        """Write every updated resident state back to the host store (they stay resident)."""
        for p in list(self._dirty):
            for name, t in self._resident[p].items():
                self.state[p][name].copy_(t)
                self.stats.bytes_out += t.nbytes
        self._dirty.clear()

    def state_dict(self) -> dict:
        self.flush()
        return super().state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state (this class's or torch.optim.AdamW's) into the host store; nothing stays
        resident."""
        self._resident.clear()
        self._dirty.clear()
        super().load_state_dict(state_dict)
        for p, state in self.state.items():
            for name, t in state.items():
                if name != "step":
                    state[name] = t.to("cpu").pin_memory() if p.is_cuda else t.to("cpu")


# ---------------------------------------------------------------------------------------------
# Memory


# LLaMA-65B (huggyllama/llama-65b config.json), the QLoRA paper's largest model.
LLAMA_65B = dict(model_type="llama", hidden_size=8192, num_hidden_layers=80, intermediate_size=22016,
                 num_attention_heads=64, num_key_value_heads=64, vocab_size=32000, tie_word_embeddings=False)
METHODS = ("full", "lora", "qlora")


def constant_bits(blocksize: int = 64, double_quant: bool = True,
                  blocksize2: int = DOUBLE_QUANT_BLOCKSIZE) -> float:
    """Bits per weight spent on the quantization constants: one float32 absmax per block,
    32/64 = 0.5; with double quantization an 8-bit code per block and a float32 per
    `blocksize2` blocks, 8/64 + 32/(64·256) ≈ 0.127."""
    if double_quant:
        return 8 / blocksize + 32 / (blocksize * blocksize2)
    return 32 / blocksize


def linear_shapes(config) -> list[tuple[int, int]]:
    """(in_features, out_features) of the Linear layers of one transformer block: q, k, v, o and
    the gated MLP's gate, up and down projections."""
    s = memory.shape_of(config)
    q, kv = s.h * s.d_head, s.h_kv * s.d_head
    return [(s.d, q), (s.d, kv), (s.d, kv), (q, s.d), (s.d, s.d_ff), (s.d, s.d_ff), (s.d_ff, s.d)]


def lora_parameters(config, r: int) -> int:
    """Adapter parameters with rank r on every Linear layer of every block: r·(in + out) each."""
    return memory.shape_of(config).n_layers * sum(r * (a + b) for a, b in linear_shapes(config))


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes that fine-tuning keeps on the GPU, activations aside (they depend on batch and
    sequence length, and gradient checkpointing keeps them small)."""

    method: str
    base: float  # the model's weights (16-bit; NF4 for the Linear layers in QLoRA)
    adapters: float  # LoRA's A and B, 16-bit
    gradients: float  # 16-bit, for what trains
    optimizer: float  # AdamW's m and v in float32, for what trains
    trainable: int  # parameters that train

    @property
    def total(self) -> float:
        return self.base + self.adapters + self.gradients + self.optimizer


def memory_budget(config, method: str, r: int = 64) -> MemoryBudget:
    """What full fine-tuning, LoRA and QLoRA keep in GPU memory for the model of `config`.

    full:  16-bit weights, 16-bit gradients, float32 m and v: 2 + 2 + 8 = 12 bytes per parameter.
    lora:  the 16-bit model frozen; rank-r adapters on every Linear layer train (16-bit adapters
           and gradients, float32 m and v: 12 bytes per adapter parameter).
    qlora: as lora, but the Linear layers' weights in NF4 with double quantization
           (4 + 0.127 bits each); the embedding, output head and norms stay 16-bit.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    n = memory.count_params(config)
    if method == "full":
        return MemoryBudget(method, 2 * n, 0, 2 * n, 8 * n, n)
    linear = memory.shape_of(config).n_layers * sum(a * b for a, b in linear_shapes(config))
    adapters = lora_parameters(config, r)
    if method == "lora":
        base = 2 * n
    else:
        base = memory.weight_bytes(linear, 4 + constant_bits()) + 2 * (n - linear)
    return MemoryBudget(method, base, 2 * adapters, 2 * adapters, 8 * adapters, adapters)
