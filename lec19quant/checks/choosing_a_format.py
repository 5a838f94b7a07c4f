"""The assignment checks of the chapter "Choosing a format"."""
from collections.abc import Callable

import torch

from ..tradeoff import pareto_front
from .core import Passed, _run


def chart_cases() -> list[tuple[list[float], list[float]]]:
    """(bits per weight, mean KLD) lists: a few schemes, ties in size, ties in KLD, a scheme
    that equals another, one point alone, and a random cloud of 200."""
    g = torch.Generator().manual_seed(0)
    cloud = (torch.rand(200, generator=g) * 12 + 3).tolist(), torch.rand(200, generator=g).exp().tolist()
    return [([8.5, 4.5, 6.6, 3.4, 5.5], [0.001, 0.03, 0.005, 0.2, 0.04]),
            ([4.5, 4.5, 8.5], [0.05, 0.03, 0.001]),  # same size: only the closer one
            ([4.5, 6.5, 8.5], [0.03, 0.03, 0.001]),  # same KLD: only the smaller one
            ([4.5, 4.5], [0.03, 0.03]),  # equal points: the first
            ([16.0], [0.0]),
            cloud]


def _describe(case) -> str:
    sizes, errors = case
    return f"{len(sizes)} points: bits per weight {[round(s, 2) for s in sizes[:6]]}…, KLD {[round(e, 4) for e in errors[:6]]}…"


def check_pareto_front(student: Callable) -> Passed:
    """student(sizes, errors) must return the indices of the points that no other point beats
    (smaller or equal size and smaller error, or smaller size and equal error), in order of
    size; of equal points, the first."""
    cases = chart_cases()
    wants = [pareto_front(*case) for case in cases]
    return _run("check_pareto_front", lambda case: student(list(case[0]), list(case[1])), cases, wants,
                lambda got, want: [int(i) for i in got] == want, _describe, "charts")


def _best_under(sizes, errors, budget):
    fitting = [i for i, s in enumerate(sizes) if s <= budget]
    return min(fitting, key=lambda i: (errors[i], sizes[i], i)) if fitting else None


def budget_cases() -> list[tuple[list[float], list[float], float]]:
    """Charts with a budget in bits per weight: one that every scheme fits, one that only some
    fit, one exactly at a scheme's size, one below them all, ties in KLD."""
    charts = chart_cases()
    (sizes, errors), (cloud_sizes, cloud_errors) = charts[0], charts[-1]
    return [(sizes, errors, 16.0), (sizes, errors, 5.0), (sizes, errors, 4.5), (sizes, errors, 3.0),
            ([4.5, 4.0, 6.0], [0.03, 0.03, 0.01], 5.0), (cloud_sizes, cloud_errors, 4.0)]


def check_best_under(student: Callable) -> Passed:
    """student(sizes, errors, budget) must return the index of the scheme with the smallest error
    among those of at most `budget` bits per weight (of equal errors, the smaller; then the
    first), or None when none fits."""
    cases = budget_cases()
    wants = [_best_under(*case) for case in cases]
    return _run("check_best_under", lambda case: student(list(case[0]), list(case[1]), case[2]), cases, wants,
                lambda got, want: got == want, lambda case: f"{_describe(case[:2])}, budget {case[2]}",
                "charts with a budget")
