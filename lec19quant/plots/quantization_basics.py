"""The figures of the chapter "Quantization basics"."""
import matplotlib.pyplot as plt
import numpy as np
import torch


def quantization_histogram(x, bits: int = 4, ax=None):
    """Histogram of the values of `x` with the grid that per-tensor absmax quantization at `bits`
    bits puts them on (one vertical line per level q / s): most values share a few levels."""
    from ..quantize import absmax_quantize

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
    from ..quantize import GRANULARITIES, absmax_quantize, sqnr_db

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


def outlier_growth(x, index: int, magnitudes, bits: int = 8, ax=None):
    """MSE of the values of `x` other than x[index] under absmax quantization, with x[index] set
    to each of `magnitudes`, on log-log axes; beside it Δ²/12 for the step Δ = m / q_max that an
    outlier m sets (uniform rounding error), and the mean of x² (every other value rounded to 0)."""
    from ..quantize import absmax_quantize, mse

    others = torch.arange(len(x)) != index
    errors = []
    for m in magnitudes:
        loud = x.clone()
        loud[index] = m
        errors.append(mse(loud[others], absmax_quantize(loud, bits).dequantize()[others]))
    step = np.asarray(magnitudes, dtype=float) / (2 ** (bits - 1) - 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    ax.loglog(magnitudes, errors, "o-", label=f"MSE of the other {int(others.sum())} values")
    ax.loglog(magnitudes, step**2 / 12, "--", color="C3", label="Δ²/12, the step Δ = outlier / 127")
    ax.axhline(x[others].pow(2).mean().item(), color="gray", linestyle=":", label="mean x²: all rounded to 0")
    ax.set_xlabel("the outlier's magnitude")
    ax.set_ylabel("MSE")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")
    return ax.figure
