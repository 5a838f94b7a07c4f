"""The assignment checks of the chapter "QLoRA"."""
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import formats
from .core import Passed, _close, _describe, _run
from .quantization_basics import quantization_cases


def _nf4_cases() -> list[torch.Tensor]:
    """`quantization_cases()` and a block of exact ties: a 1 sets the absmax to 1, so x·(1/a) and
    x / a are both exact and each midpoint between NF4 values must go to the lower code."""
    table = torch.tensor(formats.NF4.table)
    ties = torch.cat([torch.tensor([1.0, -0.0]), (table[1:] + table[:-1]) / 2,
                      torch.linspace(-1, 1, 47), torch.randn(10, generator=torch.Generator().manual_seed(2))])
    return quantization_cases() + [ties]


@dataclass(frozen=True)
class _NF4Answer:
    codes: torch.Tensor
    absmax: torch.Tensor
    near_tie: torch.Tensor  # where x / a is within 1e-6 of a midpoint (and a ≠ 1): either code

    def __repr__(self) -> str:
        def short(t):
            values = t.tolist()
            return str(values) if len(values) <= 8 else str(values[:8])[:-1] + ", …]"

        return f"codes {short(self.codes)}, absmax {short(self.absmax)}"


def check_nf4_quantize(student: Callable) -> Passed:
    """student(x) must return (codes, absmax) of NF4 quantization of 1-D float32 x in blocks of
    64: absmax a = max|x| of each block (a shorter last block has its own) and, for every value,
    the index of the NF4 value nearest to x / a, an exact midpoint going to the lower index.
    Where x / a lies within 1e-6 of a midpoint (and a ≠ 1), either neighbour will do."""
    from ..qlora import nf4_quantize, unpack_nibbles

    table = torch.tensor(formats.NF4.table)
    midpoints = (table[1:] + table[:-1]) / 2

    def answer(x):
        packed, state = nf4_quantize(x, 64, double_quant=False)
        a = state.absmax.repeat_interleave(64)[: x.numel()]
        near = ((x / a)[:, None] - midpoints).abs().le(1e-6).any(1) & (a != 1)
        return _NF4Answer(unpack_nibbles(packed, x.numel()).long(), state.absmax, near)

    def same(got, want):
        codes, absmax = got
        codes = torch.as_tensor(codes).long().reshape(want.codes.shape)
        return _close(absmax, want.absmax) and bool(torch.all(
            (codes == want.codes) | (want.near_tie & ((codes - want.codes).abs() <= 1))))

    cases = _nf4_cases()
    return _run("check_nf4_quantize", lambda x: student(x.clone()), cases, map(answer, cases), same,
                _describe, "tensors")


def check_lora_merge(student: Callable) -> Passed:
    """student(w, a, b, alpha) must return the merged weight W + (α/r)·B·A of a LoRA layer, for W
    (out × in), A (r × in) and B (out × r)."""
    g = torch.Generator().manual_seed(3)
    cases = [(torch.randn(out, n, generator=g), torch.randn(r, n, generator=g),
              torch.randn(out, r, generator=g), alpha)
             for out, n, r, alpha in [(4, 6, 1, 1.0), (16, 8, 2, 16.0), (64, 96, 8, 16.0), (32, 32, 16, 8.0)]]
    return _run("check_lora_merge", lambda c: student(*(t.clone() for t in c[:3]), c[3]), cases,
                [w + alpha / a.shape[0] * (b @ a) for w, a, b, alpha in cases], _close,
                lambda c: f"W {tuple(c[0].shape)}, r = {c[1].shape[0]}, α = {c[3]}", "layers")


def check_adamw_step(student: Callable) -> Passed:
    """student(p, grad, m, v, step, lr, betas, eps, weight_decay) must return (p, m, v) after
    AdamW's update number `step` (1, 2, …) from the moments m and v of the step before:
    decoupled weight decay p·(1 − lr·λ), then the Adam step with bias-corrected moments,
    as torch.optim.AdamW computes it (to within float32 rounding)."""
    from ..qlora import PagedAdamW

    g = torch.Generator().manual_seed(4)
    settings = [(1, 1e-3, (0.9, 0.999), 1e-8, 0.01), (2, 1e-2, (0.9, 0.999), 1e-8, 0.0),
                (10, 3e-4, (0.8, 0.95), 1e-6, 0.1), (1000, 1e-3, (0.9, 0.999), 1e-8, 0.01)]
    cases, wants = [], []
    for step, lr, betas, eps, wd in settings:
        p, grad = torch.randn(6, generator=g), torch.randn(6, generator=g)
        m = torch.randn(6, generator=g) * 0.1 * (step > 1)
        v = torch.rand(6, generator=g) * 0.01 * (step > 1)
        cases.append((p, grad, m, v, step, lr, betas, eps, wd))
        state, new_p = {"exp_avg": m.clone(), "exp_avg_sq": v.clone()}, p.clone()
        new_p.grad = grad
        PagedAdamW._update(new_p, state, torch.tensor(step - 1.0),
                           dict(lr=lr, betas=betas, eps=eps, weight_decay=wd, amsgrad=False, maximize=False))
        wants.append((new_p, state["exp_avg"], state["exp_avg_sq"]))

    def same(got, want):
        return len(got) == 3 and all(_close(a, b) for a, b in zip(got, want))

    return _run("check_adamw_step", lambda c: student(*(t.clone() for t in c[:4]), *c[4:]), cases, wants,
                same, lambda c: f"step {c[4]}, lr {c[5]}, betas {c[6]}, weight decay {c[8]}", "steps")
