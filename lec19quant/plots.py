"""The figures the book draws, each from the package's own numbers."""
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from . import formats, memory


def footprint_vs_bits(config, name: str, devices=("macbook-air-16gb", "t4"), formats=("BF16", "INT8", "Q4_K"),
                      overhead: float = memory.OVERHEAD, ax=None):
    """Memory to run the model of `config` against bits per weight, with each device's usable
    memory as a horizontal line and the named `formats` marked on the curve."""
    n = memory.count_params(config)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    bits = np.linspace(2, 32, 301)
    ax.plot(bits, [memory.footprint(n, float(b), overhead) / memory.GB for b in bits],
            label=f"{name}: weights × {overhead}")
    ax.plot(bits, [memory.weight_bytes(n, float(b)) / memory.GB for b in bits], "--", color="C0",
            alpha=0.6, label="weights alone")
    for fmt in formats:
        b = memory.BITS_PER_WEIGHT[fmt]
        gb = memory.footprint(n, fmt, overhead) / memory.GB
        ax.plot([b], [gb], "o", color="C0")
        ax.annotate(f"{fmt}: {gb:.1f} GB", (b, gb), textcoords="offset points", xytext=(6, -12))
    for i, key in enumerate(devices):
        device = memory.DEVICES[key]
        ax.axhline(device.usable / memory.GB, color=f"C{i + 1}", linestyle=":",
                   label=f"{device.name}: {device.usable / memory.GB:.1f} GB usable")
    ax.set_xlabel("bits per weight (scales included)")
    ax.set_ylabel("GB")
    ax.set_xlim(0, 33)
    ax.set_ylim(0, None)
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title(f"{name}: {n / 1e9:.2f}B parameters")
    return ax.figure


def activation_heatmap(stats, module: str = "q_proj", ax=None):
    """Max |x| of each input channel (x axis) of the Linear layers named `module` in every layer
    (y axis), on a logarithmic colour scale: outlier channels show as vertical lines."""
    import re

    from matplotlib.colors import LogNorm

    rows = sorted((int(layer.group(1)), s.absmax) for name, s in stats.items()
                  if name.endswith(f".{module}") and (layer := re.search(r"\.(\d+)\.", name)))
    if not rows:
        raise ValueError(f"no captured layer is named *.{module}")
    grid = np.stack([absmax.numpy() for _, absmax in rows])
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.5))
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="magma",
                      norm=LogNorm(vmin=max(np.percentile(grid, 1), 1e-3), vmax=grid.max()))
    ax.figure.colorbar(image, ax=ax, label="max |x| over the tokens")
    ax.set_xlabel(f"input channel of {module}")
    ax.set_ylabel("layer")
    ax.set_yticks(range(0, len(rows), 5), [str(rows[i][0]) for i in range(0, len(rows), 5)])
    return ax.figure


def bit_layout(x, fmt, ax=None):
    """The bits that store x in `fmt` as a row of boxes coloured by field (sign, exponent,
    mantissa), titled with what they mean: (−1)^s · 1.m · 2^(e − bias) (see formats.fields)."""
    f = formats.fields(x, fmt)
    fmt = f.format
    parts = [("sign", str(f.sign), "C3")] if fmt.signed else []
    parts += [(f"exponent\n{_bits(fmt.exp_bits)}, bias {fmt.bias}", f.exponent, "C0"),
              (f"mantissa\n{_bits(fmt.man_bits)}", f.mantissa, "C2")]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(3.5, 0.3 * fmt.bits + 0.6), 1.6))
    start = 0
    for label, bits, colour in parts:
        for i, bit in enumerate(bits):
            ax.add_patch(Rectangle((start + i, 0), 1, 1, facecolor=colour, alpha=0.3, edgecolor="k"))
            ax.text(start + i + 0.5, 0.5, bit, ha="center", va="center", family="monospace")
        if bits:
            ax.text(start + len(bits) / 2, -0.15, label, ha="center", va="top", fontsize="small",
                    color=colour)
        start += len(bits)
    ax.set_xlim(-0.1, start + 0.1)
    ax.set_ylim(-1.4, 1.1)
    ax.axis("off")
    ax.set_title(str(f), fontsize="medium", family="monospace")
    return ax.figure


def _bits(n: int) -> str:
    return f"{n} bit" if n == 1 else f"{n} bits"


def _grid(values_or_format) -> np.ndarray:
    """Values to draw: every finite value of a format or codebook (or a name), else the values."""
    if isinstance(values_or_format, (str, formats.FloatFormat, formats.Codebook)):
        return formats.values(values_or_format).double().numpy()
    return np.asarray(torch.as_tensor(values_or_format, dtype=torch.float64))


def value_grid(grids, normalize: bool = True, ax=None):
    """Each format's values as ticks on its own number line, one row per entry of `grids` (a
    mapping from label to a format, a codebook or a list of values); `normalize` divides each by
    its largest magnitude, as a quantizer's scale would, so that all span [−1, 1]."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.6 * len(grids) + 1))
    labels = []
    for row, (label, grid) in enumerate(grids.items()):
        v = _grid(grid)
        if normalize:
            v = v / np.abs(v).max()
        y = len(grids) - 1 - row
        ax.axhline(y, color="0.8", linewidth=0.8, zorder=0)
        ax.plot(v, np.full_like(v, y), "|", markersize=14, color=f"C{row}")
        labels.insert(0, f"{label} ({len(v)} values)")
    ax.set_yticks(range(len(grids)))
    ax.set_yticklabels(labels)
    ax.set_xlabel("value / largest value" if normalize else "value")
    ax.set_ylim(-0.7, len(grids) - 0.3)
    return ax.figure


def relative_spacing(grids, ax=None):
    """The gap from each positive value to the next, relative to the value, against the value
    (log-log): floats keep it between 2^−(M+1) and 2^−M over their whole normal range, integers
    have a gap of 1 everywhere, so their relative gap falls as 1/x."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for label, grid in grids.items():
        v = _grid(grid)
        v = v[v > 0]
        ax.step(v[:-1], np.diff(v) / v[:-1], where="post", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("value x")
    ax.set_ylabel("(next value − x) / x")
    ax.legend(fontsize="small")
    return ax.figure


def quantization_histogram(x, bits: int = 4, ax=None):
    """Histogram of the values of `x` with the grid that per-tensor absmax quantization at `bits`
    bits puts them on (one vertical line per level q / s): most values share a few levels."""
    from .quantize import absmax_quantize

    q = absmax_quantize(x, bits)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    values = x.detach().float().reshape(-1).numpy()
    ax.hist(values, bins=200, color="C0", alpha=0.8, label=f"{values.size:,} values")
    qmax = 2 ** (bits - 1) - 1
    levels = np.arange(-qmax, qmax + 1) / q.scale.item()
    for i, level in enumerate(levels):
        ax.axvline(level, color="C3", linewidth=0.8, alpha=0.7, label=f"the {len(levels)} levels q / s" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.legend(loc="upper right", fontsize="small")
    return ax.figure


def error_vs_bits(x, bits=range(2, 9), granularities=None, ax=None):
    """SQNR (dB) of absmax quantization of `x` against bits, one curve per granularity
    (`lec19quant.quantize.GRANULARITIES` by default)."""
    from .quantize import GRANULARITIES, absmax_quantize, sqnr_db

    granularities = granularities or GRANULARITIES
    bits = list(bits)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for name, kwargs in granularities.items():
        ax.plot(bits, [sqnr_db(x, absmax_quantize(x, b, **kwargs).dequantize()) for b in bits], "o-", label=name)
    ax.set_xlabel("bits")
    ax.set_ylabel("SQNR (dB, higher is better)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax.figure


def error_heatmaps(x, estimates: dict, title: str = ""):
    """|x − x̂| of a matrix as images side by side, one per named estimate x̂, on one shared
    logarithmic colour scale."""
    from matplotlib.colors import LogNorm

    errors = {name: (x.double() - x_hat.double()).abs().numpy() for name, x_hat in estimates.items()}
    positive = np.concatenate([e[e > 0] for e in errors.values()])
    norm = LogNorm(vmin=np.percentile(positive, 1), vmax=positive.max()) if positive.size else None
    fig, axes = plt.subplots(1, len(errors), figsize=(5.5 * len(errors), 3.5), sharey=True, squeeze=False)
    for ax, (name, err) in zip(axes[0], errors.items()):
        image = ax.imshow(err, aspect="auto", interpolation="nearest", cmap="viridis", norm=norm)
        ax.set_title(f"{title}{name}")
        ax.set_xlabel("column")
    axes[0, 0].set_ylabel("row")
    fig.colorbar(image, ax=list(axes[0]), label="|x − x̂|")
    return fig
