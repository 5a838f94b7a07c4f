"""GPTQ (Frantar et al. 2023): rounding the weights of a layer with second-order information.

Objective, for a Linear layer with weight W (rows independent) and calibration inputs X:
    minimize ‖WX − ŴX‖²  over Ŵ on the quantization grid;   H = 2XXᵀ (the same for every row).
Optimal Brain Quantization (OBQ) rounds one weight w_q at a time and moves the not-yet-rounded
weights F to cancel the error it made:
    δ_F = −(w_q − quant(w_q)) / [H_F⁻¹]_qq · (H_F⁻¹)_{F,q},   then H_F⁻¹ loses row and column q.
GPTQ rounds the columns of W in the same order for every row, so H_F⁻¹ is shared; the rows of
U = chol(H⁻¹)ᵀ (upper, UᵀU = H⁻¹) are exactly those successive inverses' rows divided by the
square root of their diagonal, so the update of column j reads
    e = (w_j − ŵ_j) / U_jj,    W[:, j:] −= e · U[j, j:].
Updates to columns beyond the current block of B = 128 are applied once per block (lazy batch
updates, W[:, i2:] −= E · U[i1:i2, i2:]); that changes the order of the float sums, not the result.

Options as in the reference implementation (IST-DASLab/gptq, AutoGPTQ/GPTQModel):
- dampening: H + λI with λ = damp · mean(diag H) (damp = 0.01), so the Cholesky factor exists;
- dead columns (diag H = 0, an input that was always 0): diag set to 1 and the weights to 0;
- groups of g columns, each with its own scale and zero point (`groupwise.group_params`) computed
  when GPTQ reaches the group's first column, from the weights as updated so far; or, with
  static_groups, up front from the original weights (what llm-compressor does);
- act-order: columns in order of decreasing diag(H); groups are then taken in that order, so a
  group's columns are scattered over the row and g_idx records each column's group. With
  static_groups and act-order the groups stay c // g and no g_idx is needed.

Whole models are quantized layer by layer (`quantize_model`): each decoder layer's Hessians come
from the outputs of the layers before it, already quantized.
"""
import contextlib
import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .groupwise import GroupQuantLinear, group_params
from .models import decoder_inputs, decoder_layers
from .quantize import _check_bits


# -- the Hessian ----------------------------------------------------------------------------------

class Hessian:
    """H = (2/n) Σ_s X_s X_sᵀ over the n sequences seen so far, kept as a running average as the
    reference's `add_batch` does (a batch of b sequences counts b; its tokens all enter X)."""

    def __init__(self, columns: int, device=None):
        self.matrix = torch.zeros(columns, columns, device=device)
        self.samples = 0

    def add(self, x: torch.Tensor) -> None:
        batch = x.shape[0] if x.dim() > 2 else 1
        x = x.reshape(-1, x.shape[-1]).float()
        self.matrix *= self.samples / (self.samples + batch)
        self.samples += batch
        x = math.sqrt(2 / self.samples) * x
        self.matrix += x.t() @ x


@contextlib.contextmanager
def collect_hessians(linears: dict[str, nn.Module]):
    """Within the block, every forward call of each Linear (or quantized linear layer) adds its
    input to that layer's Hessian; yields {name: Hessian}."""
    hessians = {name: Hessian(m.in_features, next(iter(m.state_dict().values())).device)
                for name, m in linears.items()}
    handles = [m.register_forward_hook(lambda _, inputs, __, h=hessians[name]: h.add(inputs[0].detach()))
               for name, m in linears.items()]
    try:
        yield hessians
    finally:
        for handle in handles:
            handle.remove()


def inverse_hessian_cholesky(H: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """U, upper triangular with UᵀU = (H + λI)⁻¹, λ = damp · mean(diag H)."""
    H = H.clone()
    H.diagonal().add_(damp * H.diagonal().mean())
    L = torch.linalg.cholesky(H)
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)


def update_column(W: torch.Tensor, q: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The OBQ step for the first column of W (rows, n), rounded to q (rows,), with u = U[j, j:]
    the row of the inverse Hessian's Cholesky factor: e = (w − q) / u₀, W −= e·uᵀ (in place;
    the first column becomes q). Returns e."""
    e = (W[:, 0] - q) / u[0]
    W.addr_(e, u, alpha=-1)
    return e


# -- one layer ------------------------------------------------------------------------------------

@dataclass
class GPTQResult:
    """GPTQ's output for one weight: codes (out, in), float16 scales and zero points (out, groups),
    the group of each input column, the dequantized weight Ŵ = (q − z)·s (in W's dtype) and the
    loss Σ e²/2 (the reference's)."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    g_idx: torch.Tensor
    weight: torch.Tensor
    loss: float
    bits: int
    group_size: int

    def rows(self, start: int, stop: int) -> "GPTQResult":
        """The result for rows start:stop (rows are independent in GPTQ; the loss is the total)."""
        return dataclasses.replace(self, codes=self.codes[start:stop], scales=self.scales[start:stop],
                                   zeros=self.zeros[start:stop], weight=self.weight[start:stop])

    def to_linear(self, bias: torch.Tensor | None = None, backend: str = "auto") -> GroupQuantLinear:
        return GroupQuantLinear(self.codes, self.scales, self.zeros, self.bits, self.group_size, self.g_idx,
                                bias, backend)


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, bits: int = 4, group_size: int | None = 128,
                  sym: bool = False, act_order: bool = False, static_groups: bool = False,
                  damp: float = 0.01, block_size: int = 128, callback=None) -> GPTQResult:
    """GPTQ on weight W (out, in) with Hessian H (in, in); computes in W's float dtype (float32,
    or float64 for checks). group_size None means one group per row. `callback(n, W)`, if given,
    sees the weight after each block: its first n columns (in processing order) quantized, the
    others updated."""
    _check_bits(bits)
    if not (W.is_floating_point() and H.is_floating_point()):
        raise TypeError(f"W and H must be float tensors, got {W.dtype} and {H.dtype}")
    if not (torch.isfinite(W).all() and torch.isfinite(H).all()):
        raise ValueError("W or H contains NaN or inf")
    if W.dim() != 2 or H.shape != (W.shape[1], W.shape[1]):
        raise ValueError(f"W must be (out, in) and H (in, in); got {tuple(W.shape)} and {tuple(H.shape)}")
    if not 0 <= damp:
        raise ValueError(f"damp must be ≥ 0, got {damp!r}")
    dtype = torch.float64 if W.dtype == torch.float64 else torch.float32
    rows, cols = W.shape
    g = cols if group_size is None else group_size
    if not isinstance(g, int) or g < 1:
        raise ValueError(f"group_size must be a positive int or None, got {group_size!r}")
    W, H = W.to(dtype).clone(), H.to(dtype).clone()
    static = static_groups or group_size is None  # group parameters fixed up front

    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    n_groups = -(-cols // g)
    if static:  # parameters from the original weights
        padded = nn.functional.pad(W, (0, n_groups * g - cols)).view(rows, n_groups, g)
        fixed = group_params(padded, bits, sym)  # zero padding keeps each range (it contains 0)
    perm = torch.argsort(H.diagonal(), descending=True, stable=True) if act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    # the group of the column at each position of the processing order
    position_group = perm // g if static else torch.arange(cols) // g
    U = inverse_hessian_cholesky(H, damp)

    maxq = 2**bits - 1
    scales = torch.zeros(n_groups, rows, dtype=dtype)  # per group, per row: float16 values in W's dtype
    zeros = torch.zeros(n_groups, rows, dtype=dtype)
    if static:
        scales, zeros = fixed[0][..., 0].t().to(dtype).contiguous(), fixed[1][..., 0].t().to(dtype).contiguous()
    else:  # a group starts at a block's start or lies inside one: its weights are then up to date
        divisors = [d for d in range(1, min(block_size, g) + 1) if g % d == 0]
        block_size = g * (block_size // g) if block_size >= g else divisors[-1]
    groups = position_group.tolist()
    codes = torch.zeros(cols, rows, dtype=dtype)
    losses = torch.zeros(rows, dtype=dtype)
    # Wt = Wᵀ: column j of W is the contiguous row j of Wt, so that each step reads and updates
    # contiguous memory
    Wt = W.t().contiguous()
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1, U1 = Wt[i1:i2].clone(), U[i1:i2, i1:i2]  # this block's columns, as rows
        Q1, E1 = torch.zeros_like(W1), torch.zeros_like(W1)
        for i in range(i2 - i1):
            j, k = i1 + i, groups[i1 + i]
            if j % g == 0 and not static:
                # the first column of a group: its parameters, from its weights as they are now
                s, z = group_params((Wt[j:j + g] if i == 0 else W1[i:i + g]).t(), bits, sym)
                scales[k], zeros[k] = s[:, 0], z[:, 0]
            # ŵ = (q − z)·s with q = clamp(round(w/s) + z, 0, 2^b − 1)
            s, z = scales[k], zeros[k]
            torch.mul(torch.round(W1[i] / s).clamp_(-z, maxq - z), s, out=Q1[i])
            E1[i] = update_column(W1[i:].t(), Q1[i], U1[i, i:])
        losses += E1.square().sum(0) / 2
        codes[i1:i2] = Q1 / scales[groups[i1:i2]] + zeros[groups[i1:i2]]  # exact: Q1 is (q − z)·s
        Wt[i1:i2] = Q1
        Wt[i2:] -= U[i1:i2, i2:].t() @ E1  # the lazy batch update of the columns after the block
        if callback is not None:
            callback(i2, Wt.t())
    inverse = torch.argsort(perm)
    return GPTQResult(codes.t()[:, inverse].to(torch.uint8), scales.t().half(), zeros.t().to(torch.uint8),
                      position_group[inverse].to(torch.int32), Wt.t()[:, inverse], losses.sum().item(), bits, g)


# -- the scheme -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class GPTQ:
    """The GPTQ settings, and a `nn.quantize_model` scheme once it holds Hessians.

    GPTQ needs calibration data. `quantize_model(model, input_ids, GPTQ(...))` below does it all,
    layer by layer (the recommended way). `GPTQ(...).calibrate(model, input_ids)` instead returns
    a scheme holding every Linear's Hessian from one pass of the unquantized model, which
    `nn.quantize_model(model, scheme)` then applies (faster, a little worse). The named schemes
    ("gptq-w4-g128", ...) have no Hessians and say so when used alone.
    """

    bits: int = 4
    group_size: int | None = 128
    sym: bool = False
    act_order: bool = False
    static_groups: bool = False
    damp: float = 0.01
    block_size: int = 128
    hessians: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self):
        _check_bits(self.bits)
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size < 1):
            raise ValueError(f"group_size must be a positive int or None, got {self.group_size!r}")

    @property
    def name(self) -> str:
        group = f"g{self.group_size}" if self.group_size else "row"
        extras = "".join(s for s, on in (("-sym", self.sym), ("-act", self.act_order),
                                         ("-static", self.static_groups)) if on)
        return f"gptq-w{self.bits}-{group}{extras}"

    def settings(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "hessians"}

    def quantize_weight(self, weight: torch.Tensor, H: torch.Tensor) -> GPTQResult:
        return gptq_quantize(weight, H, **self.settings())

    def quantize_linear(self, linear: nn.Linear) -> GroupQuantLinear:
        if linear not in self.hessians:
            raise ValueError(f"{self.name}: no Hessian for this layer. GPTQ needs calibration data: use "
                             "gptq.quantize_model(model, input_ids, scheme), or "
                             "nn.quantize_model(model, scheme.calibrate(model, input_ids))")
        result = self.quantize_weight(linear.weight.detach(), self.hessians[linear].matrix)
        return result.to_linear(linear.bias)

    @torch.no_grad()
    def calibrate(self, model: nn.Module, input_ids: torch.Tensor, batch_size: int = 8) -> "GPTQ":
        """This scheme holding the Hessian of every Linear of `model`, from one pass over input_ids."""
        linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        with collect_hessians(linears) as hessians:
            for batch in input_ids.split(batch_size):
                model(batch.to(next(model.parameters()).device))
        return dataclasses.replace(self, hessians={linears[n]: h for n, h in hessians.items()})


SCHEMES = [GPTQ(bits, 128, act_order=act) for bits in (4, 3) for act in (False, True)]


# -- a whole model, layer by layer ------------------------------------------------------------------

def calibration_ids(tokenizer, text: str, n_sequences: int = 32, seq_len: int = 512) -> torch.Tensor:
    """(n_sequences, seq_len) token ids: the first consecutive windows of `text`."""
    from .models import token_windows

    windows = [w for w in token_windows(tokenizer, text, seq_len, n_sequences * seq_len) if len(w) == seq_len]
    if len(windows) < n_sequences:
        raise ValueError(f"the text gives {len(windows)} windows of {seq_len} tokens, {n_sequences} asked")
    return torch.stack(windows)


def _same_input(hessians: dict[str, Hessian]) -> list[list[str]]:
    """The layers' names, grouped by equal Hessians (layers that read the same input)."""
    groups = []
    for name, h in hessians.items():
        group = next((g for g in groups if torch.equal(hessians[g[0]].matrix, h.matrix)), None)
        if group is None:
            groups.append([name])
        else:
            group.append(name)
    return groups


@torch.no_grad()
def quantize_model(model: nn.Module, input_ids: torch.Tensor, scheme: GPTQ = GPTQ(), batch_size: int = 8,
                   progress: bool = True):
    """Quantize every Linear inside the model's decoder layers with GPTQ, in place, one layer after
    another: a layer's Hessians come from running it on the outputs of the (already quantized)
    layers before it. Linears that read the same input share one run (rows are independent).
    Linears outside the layers (lm_head) stay. Returns nn's QuantizationReport."""
    from .nn import QuantizationReport, model_nbytes

    if not isinstance(scheme, GPTQ):
        raise TypeError(f"scheme must be a GPTQ, got {type(scheme).__name__}")
    if input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise ValueError("input_ids must be a (sequences, tokens) tensor of token ids (torch.long)")
    before = model_nbytes(model)
    layers = decoder_layers(model)
    prefix = next(name for name, m in model.named_modules() if m is layers)
    inputs = decoder_inputs(model, input_ids, batch_size)
    replaced = []
    for index, layer in enumerate(tqdm(layers, desc=scheme.name, disable=not progress)):
        linears = {name: m for name, m in layer.named_modules() if isinstance(m, nn.Linear)}
        with collect_hessians(linears) as hessians:
            for hidden, args, kwargs in inputs:
                layer(hidden, *args, **kwargs)
        for names in _same_input(hessians):  # q, k, v (and gate, up) read one input: one GPTQ run
            result = scheme.quantize_weight(torch.cat([linears[n].weight.detach() for n in names]),
                                            hessians[names[0]].matrix)
            start = 0
            for name in names:
                linear, stop = linears[name], start + linears[name].out_features
                parent, _, child = name.rpartition(".")
                setattr(layer.get_submodule(parent), child, result.rows(start, stop).to_linear(linear.bias))
                replaced.append(f"{prefix}.{index}.{name}")
                start = stop
        outputs = [layer(hidden, *args, **kwargs) for hidden, args, kwargs in inputs]
        inputs = [(out[0] if isinstance(out, tuple) else out, args, kwargs)
                  for out, (_, args, kwargs) in zip(outputs, inputs)]
    skipped = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return QuantizationReport(scheme.name, replaced, skipped, before, model_nbytes(model))
