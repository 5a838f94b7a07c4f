"""What the chapter "Measuring quality" uses beside lec19quant.quality's core: the online
log-sum-exp it shows, its checks (right answers pass, overflowing or tie-breaking-wrong ones fail)
and its figures."""
import pytest
import torch

from lec19quant import checks, plots, quality


@pytest.mark.parametrize("n, block", [(1, 1), (10, 3), (49_152, 8192), (1000, 4096)])
def test_online_logsumexp_equals_logsumexp(n, block):
    g = torch.Generator().manual_seed(n)
    z = torch.randn(n, generator=g) * 10
    z[n // 2] = 1e4  # the max arrives late: earlier sums are rescaled by exp(−1e4) = 0
    n_read, m, s = quality.online_logsumexp(z, block)[-1]
    assert n_read == n and m == 1e4
    assert m + torch.tensor(s, dtype=torch.float64).log().item() == pytest.approx(
        torch.logsumexp(z.double(), 0).item(), abs=1e-9)


def test_online_logsumexp_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        quality.online_logsumexp(torch.zeros(2, 3), 2)
    with pytest.raises(ValueError, match="block"):
        quality.online_logsumexp(torch.zeros(3), 0)


def solution_kld(base, logits):
    lp = base - torch.logsumexp(base, -1, keepdim=True)
    lq = logits - torch.logsumexp(logits, -1, keepdim=True)
    return torch.where(lp.exp() > 0, lp.exp() * (lp - lq), 0.0).sum(-1)


def test_kl_check_passes_the_solution_and_fails_a_naive_softmax():
    assert "all 6" in repr(checks.check_kl_divergence(solution_kld))

    def naive(base, logits):  # exp(1e4) overflows to inf: NaN
        p, q = base.exp() / base.exp().sum(-1, keepdim=True), logits.exp() / logits.exp().sum(-1, keepdim=True)
        return (p * (p.log() - q.log())).sum(-1)

    with pytest.raises(checks.CheckFailed, match="check_kl_divergence"):
        checks.check_kl_divergence(naive)
    with pytest.raises(checks.CheckFailed):
        checks.check_kl_divergence(lambda b, q: solution_kld(q, b))  # KL(q ‖ p) is not KL(p ‖ q)


def test_same_top_check_counts_the_first_of_tied_logits():
    assert "all 6" in repr(checks.check_same_top(lambda b, q: b.argmax(-1) == q.argmax(-1)))

    def last_of_ties(b, q):
        flip = lambda t: t.shape[-1] - 1 - t.flip(-1).argmax(-1)
        return flip(b) == flip(q)

    with pytest.raises(checks.CheckFailed, match="check_same_top"):
        checks.check_same_top(last_of_ties)


def test_the_figures_draw_from_reports_and_saved_rows():
    g = torch.Generator().manual_seed(0)
    stats = quality.TokenStats(torch.rand(300, generator=g, dtype=torch.float64) ** 4, torch.rand(300, generator=g) < 0.9,
                               torch.rand(300, generator=g, dtype=torch.float64), torch.rand(300, generator=g, dtype=torch.float64))
    fig = plots.kld_distribution({"a": quality.Report(stats)})
    assert len(fig.axes[0].get_lines()) == 2  # the curve and its mean
    with pytest.raises(ValueError, match="no reports"):
        plots.kld_distribution({})
    way = {"mean_kld": 0.05, "mean_kld_err": 0.001, "same_top_p": 0.9}
    rows = [{"file": "F32", **{w: way for w in plots.measuring_quality.WAYS}},
            {"file": "Q8_0", **{w: way for w in plots.measuring_quality.WAYS}}]
    fig = plots.llama_cpp_comparison(rows)
    assert len(fig.axes[0].patches) == 3  # one quantized file, three ways
    with pytest.raises(ValueError, match="no quantized file"):
        plots.llama_cpp_comparison(rows[:1])
