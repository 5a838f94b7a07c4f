"""The assignment checks of the chapter "GPTQ"."""
from collections.abc import Callable

import torch

from .core import Passed, _run


def _hessians() -> list[torch.Tensor]:
    """Hessians 2XXᵀ/n: well conditioned, with correlated and unevenly scaled inputs, and one
    with an input column ten thousand times smaller than the others."""
    g = torch.Generator().manual_seed(8)
    cases = []
    for n, spread in [(3, 1.0), (16, 5.0), (40, 100.0)]:
        X = torch.randn(4 * n, n, generator=g, dtype=torch.float64)
        X = X @ (torch.eye(n, dtype=torch.float64) + 0.5 * torch.randn(n, n, generator=g, dtype=torch.float64))
        X *= torch.rand(n, generator=g, dtype=torch.float64) * spread + 0.01
        cases.append(2 * X.t() @ X / X.shape[0])
    cases[-1][0, :] *= 1e-4
    cases[-1][:, 0] *= 1e-4
    return cases


def check_inverse_hessian_cholesky(student: Callable) -> Passed:
    """student(H, damp) must return U, upper triangular with UᵀU = (H + λI)⁻¹ and
    λ = damp · mean(diag H): GPTQ's inverse Hessian in Cholesky form (float64, relative 1e-6)."""
    from ..gptq import inverse_hessian_cholesky

    cases = [(H, damp) for H in _hessians() for damp in (0.01, 0.1)]

    def same(got, want):
        got = torch.as_tensor(got, dtype=torch.float64)
        return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-6, atol=1e-9 * want.abs().max()))

    return _run("check_inverse_hessian_cholesky", lambda case: student(case[0].clone(), case[1]), cases,
                [inverse_hessian_cholesky(H, damp) for H, damp in cases], same,
                lambda case: f"H {tuple(case[0].shape)}, damp {case[1]}", "Hessians")


def check_column_update(student: Callable) -> Passed:
    """student(W, q, u) must return W (rows, n) after GPTQ's step for its first column, rounded to
    q: e = (w₀ − q)/u₀ and W − e·uᵀ, where u is the row of U for that column from the diagonal on
    (float64, relative 1e-9). The first column of the answer is then q."""
    from ..gptq import inverse_hessian_cholesky, update_column

    g = torch.Generator().manual_seed(9)
    cases = []
    for H in _hessians():
        U = inverse_hessian_cholesky(H)
        W = torch.randn(5, H.shape[0], generator=g, dtype=torch.float64)
        for j in (0, H.shape[0] // 2, H.shape[0] - 1):
            cases.append((W[:, j:].clone(), torch.round(W[:, j] * 4) / 4, U[j, j:].clone()))

    def reference(case):
        W = case[0].clone()
        update_column(W, case[1], case[2])
        return W

    def same(got, want):
        got = torch.as_tensor(got, dtype=torch.float64)
        return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-9, atol=1e-12))

    return _run("check_column_update", lambda case: student(case[0].clone(), case[1].clone(), case[2].clone()),
                cases, [reference(c) for c in cases], same,
                lambda case: f"W {tuple(case[0].shape)}, u of length {case[2].numel()}", "columns")
