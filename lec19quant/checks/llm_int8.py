"""The assignment checks of the chapter "LLM.int8()"."""
import math
from collections.abc import Callable

import torch

from .core import Passed, _run


def llm_int8_cases() -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """(x, w, threshold) that test LLM.int8(): planted outlier columns (one large on every row, one
    exactly at the threshold, one negative, one at a single token), an entry just below the
    threshold, no outliers at all, and every column an outlier."""
    g = torch.Generator().manual_seed(2)
    cases = []
    for m, k, n in [(1, 8, 3), (6, 64, 16), (32, 300, 20)]:
        x, w = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g) / math.sqrt(k)
        x[:, 1] *= 15
        x[-1, 2], x[0, 3], x[m // 2, k - 1] = 6.0, -9.0, 60.0
        x[0, 4] = 5.99
        cases.append((x, w, 6.0))
    cases.append((cases[1][0].clamp(-5, 5), cases[1][1], 6.0))  # no outliers
    cases.append((cases[1][0], cases[1][1], 0.01))  # (nearly) every column
    return cases


def check_outlier_columns(student: Callable) -> Passed:
    """student(x, threshold) must return the indices of the columns of x (M, K) that have any
    |x| ≥ threshold, LLM.int8()'s outlier features (in any order)."""
    from ..int8 import outlier_columns

    cases = llm_int8_cases()
    return _run("check_outlier_columns", lambda case: student(case[0].clone(), case[2]), cases,
                [sorted(outlier_columns(x, t).tolist()) for x, _, t in cases],
                lambda got, want: sorted(torch.as_tensor(got).flatten().tolist()) == want,
                lambda case: f"x {tuple(case[0].shape)}, threshold {case[2]}", "matrices")


def check_llm_int8_matmul(student: Callable) -> Passed:
    """student(x, w, threshold) must return X·W by LLM.int8() as the paper writes it: the columns of
    X with any |x| ≥ threshold times the matching rows of W in 16-bit, plus vector-wise int8 of the
    rest (rows of X without those columns, columns of W). Compared within 0.1% of the largest
    output: 16-bit and float32 weights both pass, int8 without decomposition does not."""
    from ..int8 import llm_int8_matmul

    cases = llm_int8_cases()
    wants = [llm_int8_matmul(x, w, t, variant="ideal", backend="torch") for x, w, t in cases]

    def same(got, want):
        got = torch.as_tensor(got, dtype=torch.float32).reshape(want.shape)
        return bool(torch.allclose(got, want, rtol=0, atol=1e-3 * want.abs().max().item()))

    return _run("check_llm_int8_matmul", lambda case: student(case[0].clone(), case[1].clone(), case[2]),
                cases, wants, same, lambda case: f"x {tuple(case[0].shape)}, w {tuple(case[1].shape)}, "
                f"threshold {case[2]}", "products")
