"""The figures of the chapter "How numbers are stored"."""
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from .. import formats


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
