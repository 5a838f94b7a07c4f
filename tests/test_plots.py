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
    n = memory.count_params(config)
    curve = lines["Qwen3-8B: weights + KV cache (4,096 tokens) + runtime"]
    bits, gb = curve.get_xdata(), curve.get_ydata()
    assert bits[0] == 2 and bits[-1] == 32
    kv = 2 * 36 * 8 * 128 * 4096 * 2  # K and V, layers, key/value heads, head size, tokens, bytes
    assert abs(gb[-1] - (n * 4 + kv + memory.RUNTIME) / memory.GB) < 1e-9
    rule = lines["the lecture's rule of thumb: weights × 1.5"]
    assert abs(rule.get_ydata()[-1] - 1.5 * n * 4 / memory.GB) < 1e-9
    bf16 = (n * 2 + kv + memory.RUNTIME) / memory.GB
    assert any(text.get_text() == f"BF16: {bf16:.1f} GB" for text in ax.texts)
    assert ax.get_title() == "Qwen3-8B: 8.19B parameters"
