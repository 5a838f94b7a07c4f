"""The GGUF chapter's figures draw the package's numbers, and its checks pass right answers and
catch the usual mistakes."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lec19quant import checks, gguf, memory, plots  # noqa: E402
from lec19quant.gguf import recipes  # noqa: E402


def test_k_block_draws_the_decoded_values_and_the_stored_scales():
    x = torch.randn(256)
    block = gguf.explain_block(gguf.quantize(x, "Q4_K")[0], "Q4_K")
    fig = plots.k_block(block, x)
    top, bottom = fig.axes
    decoded = np.concatenate([line.get_ydata() for line in top.get_lines()[:8]])
    assert np.array_equal(decoded, block.values.double().numpy())
    assert np.array_equal(top.get_lines()[8].get_ydata(), x.double().numpy())  # the originals
    heights = [p.get_height() for p in bottom.patches]
    assert heights == block["scales"].tolist() + block["mins"].tolist()


def test_gguf_errors_plots_the_table():
    rows = [{"format": "Q4_K", "bits per weight": 4.5, "SQNR (dB)": 22.0},
            {"format": "Q4_0", "bits per weight": 4.5, "SQNR (dB)": 20.0}]
    ax = plots.gguf_errors(rows).axes[0]
    points = [(line.get_xdata()[0], line.get_ydata()[0], line.get_marker()) for line in ax.get_lines()[:2]]
    assert points == [(4.5, 22.0, "o"), (4.5, 20.0, "s")]


def test_recipe_map_shows_each_layers_format():
    types = recipes.choose_types(recipes.model_tensors(memory.CONFIGS["Qwen/Qwen3-8B"]), "Q4_K_M")
    ax = plots.recipe_map(types).axes[0]
    grid = ax.get_images()[0].get_array()
    kinds = [t.get_text() for t in ax.get_yticklabels()]
    assert grid.shape == (7, 36) and kinds[3] == "attn_v"
    more = [i for i in range(36) if recipes.use_more_bits(i, 36)]
    assert np.flatnonzero(grid[3] == 1).tolist() == more  # Q6_K is the second format by bits
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Q4_K", "Q6_K"]


def right_scale_min(q, j):
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def right_q8_0(x):
    d = x.abs().max() / 127
    v = x * (1 / d if d > 0 else 0.0)
    return d, torch.where(v >= 0, torch.floor(v + 0.5), torch.ceil(v - 0.5)).int().tolist()


def test_right_answers_pass():
    assert "all 344 sub-blocks right" in repr(checks.check_scale_min_k4(right_scale_min))
    assert "all 5 blocks right" in repr(checks.check_q8_0(right_q8_0))
    assert "all 3240 layers right" in repr(checks.check_use_more_bits(
        lambda i, n: i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2))


@pytest.mark.parametrize("wrong", [
    lambda q, j: (q[j] & 63, q[j + 4] & 63),  # the j < 4 rule for every j
    lambda q, j: right_scale_min(q, j) if j < 4 else right_scale_min(q, j)[::-1],  # scale and min swapped
    lambda q, j: right_scale_min(q, j) if j < 4 else ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
                                                      (q[j + 4] >> 4) | ((q[j - 4] >> 6) << 4)),
])
def test_scale_min_mistakes_fail(wrong):
    with pytest.raises(checks.CheckFailed, match="check_scale_min_k4"):
        checks.check_scale_min_k4(wrong)


@pytest.mark.parametrize("wrong", [
    lambda x: (x.abs().max() / 127, torch.round(x / (x.abs().max() / 127)).tolist()),  # half to even
    lambda x: (x.abs().max() / 128, torch.round(x * 128 / x.abs().max()).tolist()),  # 128 levels
    lambda x: (x.max() / 127, torch.trunc(x * 127 / x.max()).tolist()),  # signed max, truncation
])
def test_q8_0_mistakes_fail(wrong):
    with pytest.raises(checks.CheckFailed, match="check_q8_0"):
        checks.check_q8_0(wrong)


def test_use_more_bits_mistakes_fail():
    with pytest.raises(checks.CheckFailed, match="layers wrong"):
        checks.check_use_more_bits(lambda i, n: i < n / 8 or i >= 7 * n / 8 or (i - n // 8) % 3 == 2)
    with pytest.raises(checks.CheckFailed, match="layers wrong"):
        checks.check_use_more_bits(lambda i, n: (i - n // 8) % 3 == 2)
