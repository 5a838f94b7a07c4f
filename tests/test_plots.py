import matplotlib

matplotlib.use("Agg")

from lec19quant import memory, plots  # noqa: E402


def test_footprint_plot_draws_the_devices_and_the_formats():
    config = memory.CONFIGS["Qwen/Qwen3-8B"]
    fig = plots.footprint_vs_bits(config, "Qwen3-8B", devices=("macbook-air-16gb", "t4"), formats=("BF16",))
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    t4 = next(line for label, line in lines.items() if label.startswith("NVIDIA T4"))
    assert t4.get_ydata()[0] == memory.DEVICES["t4"].usable / memory.GB
    curve = lines["Qwen3-8B: weights × 1.5"]
    bits, gb = curve.get_xdata(), curve.get_ydata()
    assert bits[0] == 2 and bits[-1] == 32
    assert abs(gb[-1] - memory.footprint(memory.count_params(config), 32) / memory.GB) < 1e-9
    assert any(text.get_text() == "BF16: 24.6 GB" for text in ax.texts)
    assert ax.get_title() == "Qwen3-8B: 8.19B parameters"
