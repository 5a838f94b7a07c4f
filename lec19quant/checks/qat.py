"""The assignment checks of the chapter "Quantization-aware training"."""
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .core import Passed, _describe, _run


def _fake_quantize_cases() -> list[tuple]:
    """(x, Δ, z, qmin, qmax) that test fake quantization: power-of-two steps (so x/Δ is exact and
    so are its ties), values at and beyond the ends of the range, per-row steps, an outlier."""
    g = torch.Generator().manual_seed(2)
    ties = torch.arange(-10.5, 10.0, 0.5) * 0.25
    rows = torch.randn(4, 16, generator=g)
    outlier = torch.randn(64, generator=g)
    outlier[17] = 100.0
    return [(torch.randn(48, generator=g) * 0.7, 0.125, 0, -8, 7), (ties, 0.25, 0, -8, 7),
            (ties, 0.25, 3, -8, 7), (torch.rand(64, generator=g) * 3 - 0.5, 2.0**-6, -96, -128, 127),
            (rows, torch.tensor([[0.5], [0.25], [2.0**-4], [1.0]]), 0, -2, 1), (outlier, 0.5, 0, -8, 7)]


def _describe_fq(case) -> str:
    x, step, zero, qmin, qmax = case
    step = step.flatten().tolist() if isinstance(step, torch.Tensor) else step
    return f"{_describe(x)}, Δ = {step}, z = {zero}, qmin = {qmin}, qmax = {qmax}"


@dataclass(frozen=True)
class _ValueAndGradient:
    """What a fake quantizer returned and the gradient it passed back, shown briefly."""

    value: torch.Tensor
    gradient: torch.Tensor

    def __repr__(self) -> str:
        def head(t):
            values = [round(v, 4) for v in t.flatten()[:8].tolist()]
            return f"{values[:-1] + ['…'] if t.numel() > 8 else values}".replace("'…'", "…")

        return f"(x̂ = {head(self.value)}, gradient = {head(self.gradient)})"


def _value_and_grad(function, case) -> _ValueAndGradient:
    """function(x, Δ, z, qmin, qmax) and the gradient of Σ g·x̂ with respect to x."""
    x, step, zero, qmin, qmax = case
    x = x.clone().requires_grad_()
    x_hat = torch.as_tensor(function(x, step, zero, qmin, qmax))
    if x_hat.requires_grad:
        (x_hat * torch.linspace(-1, 2, x.numel()).reshape(x_hat.shape)).sum().backward()
    grad = x.grad if x.grad is not None else torch.zeros_like(x)  # round alone gives none
    return _ValueAndGradient(x_hat.detach().float(), grad)


def check_fake_quantize(student: Callable) -> Passed:
    """student(x, Δ, z, qmin, qmax) must return x̂ = (clamp(round(x/Δ) + z, qmin, qmax) − z)·Δ
    (ties to even) that backpropagates the clipped straight-through estimate: the incoming
    gradient where round(x/Δ) + z is inside [qmin, qmax], 0 elsewhere."""
    from ..qat import fake_quantize

    cases = _fake_quantize_cases()

    def same(got, want):
        return (torch.equal(got.value.reshape(want.value.shape), want.value)
                and torch.equal(got.gradient, want.gradient))

    return _run("check_fake_quantize", lambda case: _value_and_grad(student, case), cases,
                [_value_and_grad(lambda *a: fake_quantize(*a, backend="torch"), c) for c in cases], same,
                _describe_fq, "cases (values and gradients)")


def check_lsq_gradient(student: Callable) -> Passed:
    """student(x, Δ, qmin, qmax) must return ∂x̂/∂Δ for every element of x (zero point 0), the
    gradient LSQ learns the step with: round(x/Δ) − x/Δ inside the range, qmin or qmax beyond it."""
    from ..qat import fake_quantize

    cases = [c for c in _fake_quantize_cases() if c[2] == 0]

    def expected(case):
        x, step, _, qmin, qmax = case
        steps = torch.as_tensor(step, dtype=torch.float32).expand(x.shape).clone().requires_grad_()
        fake_quantize(x, steps, 0, qmin, qmax, backend="torch").sum().backward()
        return steps.grad

    def same(got, want):
        got = torch.as_tensor(got, dtype=torch.float32)
        return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-6, atol=1e-6))

    return _run("check_lsq_gradient", lambda c: student(c[0].clone(), c[1], c[3], c[4]), cases,
                [expected(c) for c in cases], same, _describe_fq, "cases")
