"""The quantization-basics figures draw the package's numbers."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import torch

from lec19quant import plots
from lec19quant.quantize import absmax_quantize, sqnr_db


def test_histogram_draws_one_line_per_level():
    x = torch.randn(64, 64)
    ax = plots.quantization_histogram(x, bits=3).axes[0]
    levels = sorted(line.get_xdata()[0] for line in ax.get_lines())
    scale = absmax_quantize(x, 3).scale.item()
    assert np.allclose(levels, np.arange(-3, 4) / scale)


def test_error_vs_bits_plots_the_sqnr():
    x = torch.randn(8, 128)
    ax = plots.error_vs_bits(x, bits=[2, 4, 8]).axes[0]
    curves = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert set(curves) == {"per tensor", "per row", "per column", "group 128", "group 32"}
    assert curves["per row"][1] == sqnr_db(x, absmax_quantize(x, 4, dim=0).dequantize())


def test_error_heatmaps_share_one_colour_scale():
    x = torch.randn(16, 64)
    fig = plots.error_heatmaps(x, {"a": absmax_quantize(x, 4).dequantize(),
                                   "b": absmax_quantize(x, 4, group_size=32).dequantize()})
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert len(images) == 2 and images[0].norm is images[1].norm
    assert np.array_equal(images[0].get_array(), (x - absmax_quantize(x, 4).dequantize()).abs().double().numpy())


def test_outlier_growth_draws_the_measured_error_and_the_step_model():
    x = torch.randn(64)
    ax = plots.outlier_growth(x, 17, [3.0, 100.0, 1e4]).axes[0]
    measured, model, floor = ax.get_lines()
    loud = x.clone()
    loud[17] = 100.0
    others = torch.arange(64) != 17
    expected = ((absmax_quantize(loud, 8).dequantize() - loud)[others] ** 2).mean().item()
    assert np.isclose(measured.get_ydata()[1], expected)
    assert np.allclose(model.get_ydata(), (np.array([3.0, 100.0, 1e4]) / 127) ** 2 / 12)
    assert np.isclose(measured.get_ydata()[2], floor.get_ydata()[0])  # 10⁴ rounds every other value to 0
