"""The figures of the SmoothQuant/AWQ chapter draw what they say, and reject what they cannot draw."""
import pytest
import torch

from lec19quant import awq, plots, smoothquant


def test_smoothing_magnitudes_shows_each_alpha():
    a, w = torch.rand(64) + 0.1, torch.rand(64) * 0.1 + 0.01
    a[5] = 900.0
    fig = plots.smoothing_magnitudes(a, w, alphas=(0.0, 0.5, 0.85))
    axes = fig.axes
    assert len(axes) == 8
    heights = [torch.as_tensor(ax.patches[0].get_data().values, dtype=torch.float32) for ax in axes[:4]]
    s = smoothquant.smoothing_factors(a, w, 0.85)
    torch.testing.assert_close(heights[3], (a / s).float())  # the α = 0.85 column shows X/s
    assert heights[3].max() / heights[3].median() < heights[0].max() / heights[0].median()
    with pytest.raises(ValueError, match="one activation and one weight"):
        plots.smoothing_magnitudes(a, w[:10])


def test_awq_loss_curves_marks_the_chosen_alpha():
    group = smoothquant.LayerGroup("qkv", "l0", "l0.norm", ("l0.q",), "l0")
    losses = [1.0 - 0.04 * i + 0.003 * i * i for i in range(20)]
    alpha = awq.grid()[min(range(20), key=losses.__getitem__)][0]
    result = awq.GroupResult(group, alpha, False, torch.ones(4), losses, torch.ones(4))
    fig = plots.awq_loss_curves([result, result], kinds=("qkv",))
    ax = fig.axes[0]
    (x, y), = ax.collections[0].get_offsets().tolist()[:1]
    assert x == alpha and y == pytest.approx(min(losses) / losses[0])
    with pytest.raises(ValueError, match="results"):
        plots.awq_loss_curves([])
