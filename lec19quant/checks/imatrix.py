"""The assignment checks of the chapter "llama.cpp's importance matrix and i-quants"."""
from collections.abc import Callable

import numpy as np
import torch

from .core import Passed, _describe, _run


def activation_cases() -> list[torch.Tensor]:
    """Activations (tokens × channels) that test an importance computation: normal ones, one
    outlier channel, a single token, a channel of zeros."""
    g = torch.Generator().manual_seed(10)
    outlier = torch.randn(64, 16, generator=g)
    outlier[:, 3] *= 100
    zeros = torch.randn(20, 8, generator=g)
    zeros[:, 5] = 0
    return [torch.randn(128, 32, generator=g), outlier, torch.randn(1, 12, generator=g), zeros]


def check_importance(student: Callable) -> Passed:
    """student(x) must return the importance llama-quantize weights column j with, for the
    activations x (tokens × channels) of one matrix's input: the mean of x_j² over the tokens."""
    from ..gguf.imatrix import ImportanceMatrix

    cases = activation_cases()
    wants = [ImportanceMatrix({"w": x.double().square().sum(0).float().numpy()}, {"w": x.shape[0]}).weights("w")
             for x in cases]

    def same(got, want):
        got = np.asarray(torch.as_tensor(got, dtype=torch.float32))
        return got.shape == want.shape and np.allclose(got, want, rtol=1e-5, atol=0)

    return _run("check_importance", lambda x: student(x.clone()), cases, wants, same, _describe, "activations")


def iq4_nl_cases() -> list[tuple[torch.Tensor, float]]:
    """(block of 32, scale d) pairs: normal weights, ties between levels, values past the ends."""
    g = torch.Generator().manual_seed(4)
    ties = torch.tensor([-115.5, -4.5, 7.0, 31.5, 0.0, 113.0, -127.0, 200.0] * 4) / 100
    return [(torch.randn(32, generator=g), 0.02), (ties, 0.01), (torch.randn(32, generator=g) * 5, 0.01),
            (torch.zeros(32), 0.5)]


def check_iq4_nl_codes(student: Callable) -> Passed:
    """student(x, d) must return the 32 codes IQ4_NL stores for the block x with scale d: the
    index of the level of kvalues_iq4nl nearest to x/d (on a tie the upper one)."""
    from ..gguf.iquants import nearest_level

    cases = iq4_nl_cases()
    wants = [nearest_level(x.numpy() * np.float32(1 / np.float32(d))).tolist() for x, d in cases]
    return _run("check_iq4_nl_codes", lambda case: [int(c) for c in student(case[0].clone(), case[1])], cases, wants,
                lambda got, want: got == want, lambda case: f"x = {case[0].tolist()}, d = {case[1]}", "blocks")
