"""The assignment checks of the chapter "Moving the difficulty: SmoothQuant and AWQ"."""
from collections.abc import Callable

import torch
from torch import nn

from .core import Passed, _run


def smoothing_cases() -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """(activation max, weight max, α): a massive outlier channel, a channel whose weights are all
    0, a channel never active on the calibration text, and α at 0, 0.5, 0.85 and 1."""
    g = torch.Generator().manual_seed(7)
    cases = []
    for n, alpha in [(8, 0.5), (64, 0.85), (576, 0.0), (300, 1.0)]:
        a, w = torch.rand(n, generator=g) * 3, torch.rand(n, generator=g) * 0.2
        a[1] = 2500.0
        w[2] = 0.0
        a[3] = 0.0
        cases.append((a, w, alpha))
    return cases


def check_smoothing_factors(student: Callable) -> Passed:
    """student(a, w, alpha) must return SmoothQuant's s_j = a_j^α / w_j^(1−α), with w floored at
    1e-5 and s floored at 1e-5 (`smoothquant.smoothing_factors`). Compared to 1e-5 relative."""
    from ..smoothquant import smoothing_factors

    cases = smoothing_cases()

    def same(got, want):
        got = torch.as_tensor(got, dtype=torch.float32).reshape(want.shape)
        return bool(torch.allclose(got, want, rtol=1e-5, atol=0))

    return _run("check_smoothing_factors", lambda case: student(case[0].clone(), case[1].clone(), case[2]), cases,
                [smoothing_factors(*case) for case in cases], same,
                lambda case: f"{case[0].numel()} channels, α = {case[2]}", "sets of channels")


def fold_cases() -> list[tuple[nn.Module, nn.Linear, torch.Tensor, torch.Tensor]]:
    """(module that produces X, Linear that reads it, s, input): an RMSNorm-like scale vector
    (nn.LayerNorm without bias, and with one), and a Linear before a Linear, with s from 10⁻³ to 10³."""
    g = torch.Generator().manual_seed(8)
    cases = []
    for before in (nn.LayerNorm(16, bias=False), nn.LayerNorm(16), nn.Linear(12, 16)):
        torch.manual_seed(len(cases))
        with torch.no_grad():
            for p in before.parameters():
                p.uniform_(0.5, 2.0)
        after = nn.Linear(16, 5)
        s = 10 ** (6 * torch.rand(16, generator=g) - 3)
        x = torch.randn(4, before.weight.shape[-1], generator=g)
        cases.append((before, after, s, x))
    return cases


def check_fold_scales(student: Callable) -> Passed:
    """student(before, linear, s) must fold s in place: divide the output of `before` (an
    nn.LayerNorm's weight and bias, or an nn.Linear's output rows and bias) by s and multiply the
    columns of `linear` by s, so that linear(before(x)) is unchanged, and the weights did change."""
    import copy

    cases = fold_cases()

    def run(case):
        before, after, s, x = (copy.deepcopy(c) for c in case)
        with torch.no_grad():
            student(before, after, s.clone())
            return after(before(x)), after.weight.detach().clone()

    def same(got, want):
        (y, w), (y_want, w_want) = got, want
        changed = not torch.allclose(w, w_want)
        return changed and bool(torch.allclose(y, y_want, rtol=1e-4, atol=1e-5 * y_want.abs().max().item()))

    with torch.no_grad():
        wants = [(after(before(x)), after.weight.detach().clone()) for before, after, _, x in cases]
    return _run("check_fold_scales", run, cases, wants, same,
                lambda case: f"{type(case[0]).__name__} then Linear(16, 5), s from {case[2].min():.3g} to "
                f"{case[2].max():.3g}", "pairs of layers")
