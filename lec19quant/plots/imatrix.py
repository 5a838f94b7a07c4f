"""The figures of the chapter "llama.cpp's importance matrix and i-quants"."""
import matplotlib.pyplot as plt
import numpy as np


def importance_profile(named: dict, title: str = "", ax=None):
    """The importance (mean x² per input channel) of one weight matrix, one line per text:
    `named` maps a label ("sotu") to the importance vector. Log scale: a few channels stand out."""
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.2), constrained_layout=True)
    for i, (label, values) in enumerate(named.items()):
        v = np.asarray(values, dtype=np.float64)
        ax.plot(np.arange(v.size), v, lw=0.8, color=f"C{i}", alpha=0.85, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("input channel j")
    ax.set_ylabel("importance  Σx_j² / n")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    return ax.figure


def weighted_block(x, importance, plain, weighted, title: str = ""):
    """One sub-block of real weights `x` decoded after quantization without (`plain`) and with
    (`weighted`) the importance matrix; below, each weight's importance. The weighted search
    moves the grid so that the important weights land closer to their values."""
    x, imp = np.asarray(x, np.float64), np.asarray(importance, np.float64)
    plain, weighted = np.asarray(plain, np.float64), np.asarray(weighted, np.float64)
    fig, (ax, bars) = plt.subplots(2, 1, figsize=(9, 5), height_ratios=[2.2, 1], sharex=True, constrained_layout=True)
    j = np.arange(x.size)
    ax.plot(j, x, "o", color="0.55", markersize=5, label="weight", zorder=0)
    ax.plot(j, plain, "_", color="C0", markersize=12, mew=2, label=f"without imatrix (weighted error {_err(x, plain, imp):.3g})")
    ax.plot(j, weighted, "_", color="C3", markersize=12, mew=2,
            label=f"with imatrix (weighted error {_err(x, weighted, imp):.3g})")
    ax.set_ylabel("weight")
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    bars.bar(j, imp, color="C2")
    bars.set_yscale("log")
    bars.set_ylabel("importance")
    bars.set_xlabel("position in the sub-block")
    return fig


def _err(x, y, w):
    return float(np.sum(w * (x - y) ** 2))


def codebook_levels(levels, ax=None):
    """IQ4_NL's 16 levels (kvalues_iq4nl) against the 16 evenly spaced levels of Q4_0 over the
    same range, with the Gaussian the weights roughly follow."""
    levels = np.asarray(levels, np.float64)
    uniform = np.linspace(levels.min(), levels.max(), 16)
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 2.8), constrained_layout=True)
    grid = np.linspace(levels.min() * 1.1, levels.max() * 1.1, 400)
    sigma = levels.max() / 2.5
    ax.fill_between(grid, 0, np.exp(-0.5 * (grid / sigma) ** 2), color="0.9", label="a Gaussian of weights")
    ax.vlines(uniform, 0.05, 0.45, color="C0", lw=2, label="Q4_0: 16 evenly spaced levels")
    ax.vlines(levels, 0.55, 0.95, color="C3", lw=2, label="IQ4_NL: kvalues_iq4nl")
    ax.set_yticks([])
    ax.set_xlabel("level (× the block scale d)")
    ax.legend(loc="upper left", fontsize="small", ncols=3, bbox_to_anchor=(0, 1.25), frameon=False)
    return ax.figure


def imatrix_gain(rows: list[dict], metric: str = "mean KLD", ax=None):
    """One pair of bars per file type: `metric` without and with the importance matrix
    (`rows`: dicts with "file type", "imatrix" (bool) and `metric`)."""
    types = list(dict.fromkeys(r["file type"] for r in rows))
    value = {(r["file type"], r["imatrix"]): r[metric] for r in rows}
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2), constrained_layout=True)
    x = np.arange(len(types))
    ax.bar(x - 0.2, [value[t, False] for t in types], width=0.4, color="C0", label="without imatrix")
    ax.bar(x + 0.2, [value[t, True] for t in types], width=0.4, color="C3", label="with imatrix")
    ax.set_xticks(x)
    ax.set_xticklabels(types)
    ax.set_yscale("log")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    return ax.figure
