"""The assignment checks of the chapter "Measuring quality"."""
from collections.abc import Callable

import torch

from .core import Passed, _run


def logit_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(base logits, quantized logits) pairs of (rows, vocabulary) float32 matrices: small and
    large vocabularies, identical rows, logits of ±1e4 (a naive softmax overflows), a token with
    probability ~0 in one model, equal top logits (ties), a constant row."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 50, generator=g) * 3
    extreme = base.clone()
    extreme[:, 0] = 1e4
    extreme_q = extreme.clone()
    extreme_q[0, 0], extreme_q[0, 1] = -1e4, 1e4
    tied = torch.tensor([[1.0, 5.0, 5.0, 0.0], [5.0, 5.0, 1.0, 0.0], [2.0, 2.0, 2.0, 2.0], [5.0, 5.0, 1.0, 0.0]])
    tied_q = torch.tensor([[5.0, 5.0, 1.0, 0.0], [5.0, 5.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [5.0, 1.0, 5.0, 0.0]])
    big = torch.randn(3, 49_152, generator=g) * 4
    return [(base, base + 0.2 * torch.randn(6, 50, generator=g)), (base, base.clone()), (extreme, extreme_q),
            (tied, tied_q), (big, big + 0.1 * torch.randn(3, 49_152, generator=g)),
            (torch.tensor([[0.0, -1e4, 3.0]]), torch.tensor([[0.0, 20.0, 3.0]]))]


def _describe(pair) -> str:
    base, q = pair
    return f"base logits of shape {tuple(base.shape)} (max |z| = {base.abs().max():.3g}), quantized max |z| = {q.abs().max():.3g}"


def _exact_kld(base: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    lb, lq = torch.log_softmax(base.double(), -1), torch.log_softmax(logits.double(), -1)
    return torch.where(lb > -torch.inf, lb.exp() * (lb - lq), 0.0).sum(-1)


def check_kl_divergence(student: Callable) -> Passed:
    """student(base_logits, logits) must return KL(p_base ‖ p_q) = Σ_i p_base,i·(ln p_base,i − ln p_q,i)
    for each row (a float tensor of shape (rows,)), without overflow for logits of ±1e4;
    within 1e-4 relative or 1e-6 absolute of the exact sum over every token in float64 (llama.cpp's
    and `quality.token_stats`' sum leaves out the tokens with ln p_base ≤ −16)."""
    cases = logit_pairs()
    wants = [_exact_kld(b, q) for b, q in cases]

    def same(got, want):
        got = torch.as_tensor(got, dtype=torch.float64).reshape(want.shape)
        return bool(torch.allclose(got, want, rtol=1e-4, atol=1e-6))

    return _run("check_kl_divergence", lambda pair: student(pair[0].clone(), pair[1].clone()), cases, wants, same,
                _describe, "pairs of logit matrices")


def check_same_top(student: Callable) -> Passed:
    """student(base_logits, logits) must return, for each row, whether both models' most likely
    token is the same (a bool tensor of shape (rows,)); among equal logits the first index counts."""
    from ..quality import log_probs, token_stats

    cases = logit_pairs()
    wants = [token_stats(log_probs(b), q, torch.zeros(len(b), dtype=torch.long), backend="torch").same_top
             for b, q in cases]

    def same(got, want):
        return bool(torch.equal(torch.as_tensor(got).bool().reshape(want.shape), want))

    return _run("check_same_top", lambda pair: student(pair[0].clone(), pair[1].clone()), cases, wants, same,
                _describe, "pairs of logit matrices")
