"""The figures of the chapter "Beyond integers: NVFP4"."""
import matplotlib.pyplot as plt
import numpy as np


def block_max_placement(x, ax=None):
    """Where each block's largest |x| lands on the E2M1 grid, max|x_b| / (t · s_b), for NVFP4
    (an E4M3 scale per 16, close to 6) and MXFP4 (a power of two per 32, anywhere in [4, 8));
    values past 6, the largest E2M1 value, are clipped to it. The legend gives the mean relative
    error of each block's largest value."""
    from ..nvfp4 import mxfp4_quantize, nvfp4_quantize

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.linspace(3.5, 8.5, 81)
    for colour, (name, quantize, block) in enumerate(
            [("NVFP4", nvfp4_quantize, 16), ("MXFP4", mxfp4_quantize, 32)]):
        blocks = x.detach().float().reshape(-1, block)
        q = quantize(blocks)
        amax, at = blocks.abs().max(-1)
        largest = q.dequantize().gather(1, at[:, None])[:, 0].abs()
        error = ((amax - largest).abs() / amax)[amax > 0].mean().item()
        ratio = (amax / q.scales()[:, 0])[amax > 0].numpy()
        ax.hist(ratio, bins=bins, color=f"C{colour}", alpha=0.6,
                label=f"{name}: {ratio.size:,} blocks; largest value off by {error:.1%} on average")
    ax.axvspan(6, 8.5, color="C3", alpha=0.08)
    ax.axvline(6, color="C3", linewidth=1)
    ax.text(6.1, 0.95, "clipped to 6", color="C3", transform=ax.get_xaxis_transform(), va="top")
    ax.set_xlabel("largest |x| of a block / its scale")
    ax.set_ylabel("blocks")
    ax.legend(loc="upper left", fontsize="small")
    return ax.figure


def scale_windows(x, ax=None):
    """Histogram of the block scales that NVFP4 needs, max|x_b| / 6 (log scale), with the range
    that an E4M3 block scale can hold, [2^−6, 448], alone (one level) and multiplied by the FP32
    tensor scale t = max|x| / 2688 (two levels); a block outside a window is clamped to its edge."""
    from ..nvfp4 import E4M3_MAX, E4M3_MIN, nvfp4_quantize

    q = nvfp4_quantize(x)
    needed = (x.detach().float().reshape(-1, 16).abs().amax(-1) / 6).numpy()
    needed = needed[needed > 0]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    low, high = np.log2(needed.min()), np.log2(needed.max())
    t = q.tensor_scale.item()
    for colour, (label, scale) in enumerate([("one level", 1.0), (f"two levels, t = {t:.2g}", t)], start=1):
        lo, hi = E4M3_MIN * scale, E4M3_MAX * scale
        below, above = int((needed < lo).sum()), int((needed > hi).sum())
        ax.axvspan(lo, hi, ymin=0.5 * (colour - 1), ymax=0.5 * colour, color=f"C{colour}", alpha=0.15,
                   label=f"E4M3 range, {label}: {below:,} blocks below it, {above:,} above")
        low, high = min(low, np.log2(lo)), max(high, np.log2(hi))
    ax.hist(needed, bins=np.logspace(np.log2(needed.min()), np.log2(needed.max()), 80, base=2),
            color="C0", label=f"max|x_b| / 6 of each of the {needed.size:,} blocks")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlim(2 ** (low - 1), 2 ** (high + 1))
    ax.set_xlabel("block scale")
    ax.set_ylabel("blocks")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize="small")
    return ax.figure


def format_errors(results: dict, ax=None):
    """SQNR (dB, higher is better) of each 4-bit format on each data set: `results` maps a data
    set's name to the rows of `nvfp4.compare` for it; bars are labelled with bits per value."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.3 * sum(len(rows) for rows in results.values()) + 1))
    names = [row["format"] for row in next(iter(results.values()))]
    height = 0.8 / len(results)
    for i, (data, rows) in enumerate(results.items()):
        sqnr = {row["format"]: row["SQNR (dB)"] for row in rows}
        y = np.arange(len(names)) + (i - (len(results) - 1) / 2) * height
        ax.barh(y, [sqnr[n] for n in names], height=height, color=f"C{i}", label=data)
    bits = {row["format"]: row["bits per value"] for row in next(iter(results.values()))}
    ax.set_yticks(range(len(names)), [f"{n} ({bits[n]:.2f} bits)" for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("SQNR (dB, higher is better)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(results), frameon=False,
              fontsize="small")
    ax.grid(axis="x", alpha=0.3)
    return ax.figure
