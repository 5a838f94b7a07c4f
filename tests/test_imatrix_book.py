"""The imatrix chapter's figures draw the package's numbers, and its checks pass right answers
and catch the usual mistakes."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lec19quant import checks, plots  # noqa: E402
from lec19quant.gguf import iquants  # noqa: E402


def test_importance_profile_draws_each_text():
    a, b = np.linspace(1, 2, 10), np.linspace(3, 4, 10)
    ax = plots.importance_profile({"a": a, "b": b}).axes[0]
    assert [tuple(line.get_ydata()) for line in ax.get_lines()] == [tuple(a), tuple(b)]
    assert ax.get_yscale() == "log"
    plt.close("all")


def test_weighted_block_draws_both_decodings_and_the_importance():
    x = torch.randn(32)
    imp = torch.rand(32).numpy() + 0.1
    plain, weighted = x.round(decimals=1), x.round(decimals=2)
    top, bottom = plots.weighted_block(x, imp, plain, weighted).axes
    lines = top.get_lines()
    assert np.allclose(lines[1].get_ydata(), plain.numpy()) and np.allclose(lines[2].get_ydata(), weighted.numpy())
    expected = float(np.sum(imp * (x.numpy().astype(np.float64) - plain.numpy()) ** 2))
    assert f"{expected:.3g}" in lines[1].get_label()
    assert np.allclose([p.get_height() for p in bottom.patches], imp)
    plt.close("all")


def test_codebook_levels_draws_the_16_levels():
    ax = plots.codebook_levels(iquants.LEVELS).axes[0]
    segments = ax.collections[-1].get_segments()
    assert sorted(s[0][0] for s in segments) == sorted(iquants.LEVELS.tolist())
    plt.close("all")


def test_imatrix_gain_draws_a_pair_per_file_type():
    rows = [{"file type": t, "imatrix": i, "mean KLD": v}
            for t, i, v in [("A", False, 0.2), ("A", True, 0.1), ("B", False, 0.4), ("B", True, 0.3)]]
    ax = plots.imatrix_gain(rows).axes[0]
    assert [p.get_height() for p in ax.patches] == [0.2, 0.4, 0.1, 0.3]
    plt.close("all")


def test_right_answers_pass():
    assert "all 4 activations right" in repr(checks.check_importance(lambda x: (x.double() ** 2).mean(0)))

    def codes(x, d):
        v = x.float() * torch.tensor(1 / np.float32(d), dtype=torch.float32)
        return iquants.nearest_level(v.numpy())

    assert "all 4 blocks right" in repr(checks.check_iq4_nl_codes(codes))


@pytest.mark.parametrize("wrong", [lambda x: (x**2).sum(0), lambda x: x.abs().mean(0), lambda x: (x**2).mean(1)])
def test_importance_mistakes_fail(wrong):
    with pytest.raises(checks.CheckFailed, match="check_importance"):
        checks.check_importance(wrong)


def _nearest_first(x, d):
    """A tie goes to the lower level: the usual mistake."""
    v = x.float() * torch.tensor(1 / np.float32(d), dtype=torch.float32)
    return (v[:, None] - torch.from_numpy(iquants.LEVELS)[None]).abs().argmin(1)


@pytest.mark.parametrize("wrong", [_nearest_first, lambda x, d: torch.round(x / d).clamp(-8, 7) + 8])
def test_iq4_nl_mistakes_fail(wrong):
    with pytest.raises(checks.CheckFailed, match="check_iq4_nl_codes"):
        checks.check_iq4_nl_codes(wrong)
