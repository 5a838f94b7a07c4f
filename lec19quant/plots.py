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


def block_max_placement(x, ax=None):
    """Where each block's largest |x| lands on the E2M1 grid, max|x_b| / (t · s_b), for NVFP4
    (an E4M3 scale per 16, close to 6) and MXFP4 (a power of two per 32, anywhere in [4, 8));
    values past 6, the largest E2M1 value, are clipped to it. The legend gives the mean relative
    error of each block's largest value."""
    from .nvfp4 import mxfp4_quantize, nvfp4_quantize

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
    from .nvfp4 import E4M3_MAX, E4M3_MIN, nvfp4_quantize

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


def k_block(block, x=None):
    """One K-quant super-block taken apart (`lec19quant.gguf.explain_block` of a Q4_K or Q5_K
    block): above, its weights by position, each sub-block's range [−dmin·m_j, d·s_j·q_max −
    dmin·m_j] as a band and the decoded values (the originals `x` as grey dots, if given);
    below, the stored 6-bit scales s_j and mins m_j."""
    s, m = block["scales"].double().numpy(), block["mins"].double().numpy()
    d, dmin = block["d"].item(), block["dmin"].item()
    top = 15.0 if block.format == "Q4_K" else 31.0
    values = block.values.double().numpy()
    fig, (ax, bars) = plt.subplots(2, 1, figsize=(9, 5.5), height_ratios=[2.2, 1], constrained_layout=True)
    n = values.size // len(s)
    for j in range(len(s)):
        span = np.arange(j * n, (j + 1) * n)
        low, high = -dmin * m[j], d * s[j] * top - dmin * m[j]
        ax.fill_between([span[0] - 0.5, span[-1] + 0.5], low, high, color=f"C{j % 10}", alpha=0.12, linewidth=0)
        ax.plot(span, values[span], ".", color=f"C{j % 10}", markersize=4)
    if x is not None:
        ax.plot(np.asarray(torch.as_tensor(x, dtype=torch.float64)), ".", color="0.55", markersize=2,
                label="original", zorder=0)
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xlim(-1, values.size)
    ax.set_xlabel("position in the super-block")
    ax.set_ylabel("weight")
    ax.set_title(f"{block.format}: d = {d:.3g}, dmin = {dmin:.3g}; band = the values sub-block j can decode to")
    j = np.arange(len(s))
    bars.bar(j - 0.2, s, width=0.4, label="scale s_j (6 bits)")
    bars.bar(j + 0.2, m, width=0.4, label="min m_j (6 bits)")
    bars.set_xticks(j)
    bars.set_xlabel("sub-block j")
    bars.set_ylim(0, 68)
    bars.axhline(63, color="0.6", linestyle=":", linewidth=0.8)
    bars.legend(loc="upper right", fontsize="small", ncols=2)
    return fig


def gguf_errors(rows, ax=None):
    """SQNR against bits per weight of GGUF block formats, from `rows` of a table with the keys
    "format", "bits per weight" and "SQNR (dB)": the K-quants (circles) against the blocks of
    32 (squares)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        name, bits, sqnr = row["format"], row["bits per weight"], row["SQNR (dB)"]
        kquant = name.endswith("_K")
        ax.plot(bits, sqnr, "o" if kquant else "s", color="C0" if kquant else "C1", markersize=7)
        ax.annotate(name, (bits, sqnr), textcoords="offset points", xytext=(6, -4))
    ax.plot([], [], "o", color="C0", label="K-quants (super-blocks of 256)")
    ax.plot([], [], "s", color="C1", label="blocks of 32")
    ax.set_xlabel("bits per weight (scales included)")
    ax.set_ylabel("SQNR (dB, higher is better)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return ax.figure


def recipe_map(types: dict, title: str = "", ax=None):
    """The format of every weight matrix of a GGUF recipe (`lec19quant.gguf.recipes.choose_types`),
    one row per kind of matrix and one column per layer, coloured by bits per weight."""
    import re

    from matplotlib.colors import ListedColormap

    from .gguf import FORMATS

    layers: dict[str, dict[int, str]] = {}
    for name, qtype in types.items():
        match = re.match(r"blk\.(\d+)\.(\w+)\.weight$", name)
        if match and qtype != "F32":
            layers.setdefault(match.group(2), {})[int(match.group(1))] = qtype
    kinds = sorted(layers)
    n_layers = 1 + max(i for kind in layers.values() for i in kind)
    bits = {name: f.bits_per_weight for name, f in FORMATS.items()} | {"F16": 16.0}
    names = sorted({q for kind in layers.values() for q in kind.values()}, key=bits.get)
    grid = np.array([[names.index(layers[k][i]) for i in range(n_layers)] for k in kinds])
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 0.22 * n_layers + 2), 0.38 * len(kinds) + 1.4))
    colors = [plt.cm.viridis(min(1.0, (bits[q] - 2) / 7)) for q in names]  # darker: fewer bits
    cmap = ListedColormap(colors)
    ax.imshow(grid, aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, interpolation="nearest")
    ax.set_yticks(range(len(kinds)))
    ax.set_yticklabels(kinds)
    ax.set_xlabel("layer")
    ax.set_title(title)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in colors]
    ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    return ax.figure


def roofline(k: int, n: int, gpu: str = "T4", weight_bits: dict | None = None, ax=None):
    """The least time Y = X·Wᵀ (W of shape (n, k)) can take on `gpu`, against the number of
    tokens M, for weights stored at each of `weight_bits` ({label: bits per weight}): flat while
    reading the weights dominates, rising once the arithmetic does."""
    from . import roofline as rl

    weight_bits = weight_bits or {"FP16": 16.0, "Q4_K (4.5 bits)": 4.5}
    g = rl.GPUS[gpu]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    ms = np.unique(np.logspace(0, 14, 57, base=2).astype(int))
    for label, bits in weight_bits.items():
        costs = [rl.matmul_cost(int(m), k, n, weight_bits=bits) for m in ms]
        line, = ax.plot(ms, [rl.min_time(c, g) * 1e6 for c in costs], label=label)
        knee = next(i for i, c in enumerate(costs) if not rl.memory_bound(c, g))
        ax.plot(ms[knee], rl.min_time(costs[knee], g) * 1e6, "o", color=line.get_color())
        ax.annotate(f"compute-bound from M ≈ {ms[knee]}", (ms[knee], rl.min_time(costs[knee], g) * 1e6),
                    textcoords="offset points", xytext=(8, -12), fontsize="small", color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens in the batch (M)")
    ax.set_ylabel("least time (µs)")
    ax.set_title(f"{k}×{n} weights on the {g.name} ({g.bandwidth / 1e9:,.0f} GB/s, {g.fp16_flops / 1e12:,.0f} TFLOP/s)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")
    return ax.figure


def nf4_levels(w, blocksize: int = 64, ax=None):
    """Histogram of the weights of `w` divided by the absmax of their block of `blocksize` (what
    NF4 rounds), with the 16 NF4 values and the 15 levels k/7 of 4-bit absmax as vertical lines.
    Trailing weights that do not fill a block are left out."""
    flat = torch.as_tensor(w).detach().float().reshape(-1)
    blocks = flat[: flat.numel() // blocksize * blocksize].view(-1, blocksize)
    if blocks.numel() == 0:
        raise ValueError(f"w has {flat.numel()} values, fewer than one block of {blocksize}")
    scaled = (blocks / blocks.abs().amax(1, keepdim=True)).reshape(-1)
    scaled = scaled[torch.isfinite(scaled)].numpy()  # all-zero blocks have no scale
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    ax.hist(scaled, bins=200, range=(-1, 1), density=True, color="0.75",
            label=f"w / absmax of its block of {blocksize} ({scaled.size:,} weights)")
    for i, v in enumerate(formats.NF4.table):
        ax.axvline(v, color="C3", linewidth=1.2, label="the 16 NF4 values" if i == 0 else None)
    for i, v in enumerate(np.arange(-7, 8) / 7):
        ax.axvline(v, color="C0", linestyle=":", linewidth=1.2, label="4-bit absmax: k / 7" if i == 0 else None)
    ax.set_xlabel("weight / block absmax")
    ax.set_ylabel("density")
    ax.set_xlim(-1.05, 1.05)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize="small", frameon=False)
    return ax.figure


def finetuning_curve(losses, held_out=None, window: int = 5, ax=None):
    """Training loss at every step (thin line) and its mean over the last `window` steps (thick),
    with the held-out loss as points: `held_out` maps a step (0 = before training) to a loss."""
    losses = np.asarray(losses, dtype=float)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError("losses must be a non-empty list of numbers, one per step")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    steps = np.arange(1, losses.size + 1)
    ax.plot(steps, losses, color="C0", alpha=0.35, linewidth=1, label="training loss (one batch)")
    mean = np.array([losses[max(0, i - window + 1): i + 1].mean() for i in range(losses.size)])
    ax.plot(steps, mean, color="C0", linewidth=2.5, label=f"mean of the last {window} steps")
    if held_out:
        x, y = zip(*sorted(held_out.items()))
        ax.plot(x, y, "o--", color="C3", markersize=7, label="held-out loss")
        for xi, yi in zip(x, y):
            ax.annotate(f"{yi:.3f}", (xi, yi), textcoords="offset points", xytext=(6, 6), color="C3")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax.figure


def memory_budgets(budgets, limit: float | None = None, limit_label: str = "", ax=None):
    """The parts of each fine-tuning memory budget (`budgets` maps a label to a
    qlora.MemoryBudget) as stacked horizontal bars in GB, with an optional vertical line at
    `limit` bytes (a GPU's memory)."""
    parts = {"base": "model weights", "adapters": "adapters", "gradients": "gradients",
             "optimizer": "optimizer states"}
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.6 * len(budgets) + 1.2))
    labels = list(budgets)
    left = np.zeros(len(labels))
    for i, (key, name) in enumerate(parts.items()):
        widths = np.array([getattr(budgets[label], key) for label in labels]) / memory.GB
        ax.barh(labels, widths, left=left, color=f"C{i}", label=name)
        left += widths
    for y, total in enumerate(left):
        ax.annotate(f"{total:,.0f} GB", (total, y), textcoords="offset points", xytext=(4, -4))
    if limit is not None:
        ax.axvline(limit / memory.GB, color="k", linestyle="--", linewidth=1, label=limit_label or None)
    ax.invert_yaxis()
    ax.set_xlabel("GB")
    ax.legend(fontsize="small", loc="lower right")
    return ax.figure


def fake_quantize_node(step: float = 1.0, zero: int = 0, qmin: int = -4, qmax: int = 3, axes=None):
    """Fake quantization x̂ = (clamp(round(x/Δ) + z) − z)·Δ against x (a staircase), and beside
    it its gradients: round's true derivative (0 between the jumps) and the clipped
    straight-through estimate that `lec19quant.qat.fake_quantize` backpropagates (1 inside the
    range, 0 outside)."""
    from .qat import fake_quantize

    x = torch.linspace((qmin - zero - 2.5) * step, (qmax - zero + 2.5) * step, 2001, requires_grad=True)
    x_hat = fake_quantize(x, step, zero, qmin, qmax, backend="torch")
    x_hat.sum().backward()
    x, x_hat, ste = x.detach().numpy(), x_hat.detach().numpy(), x.grad.numpy()
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    left, right = axes
    lo, hi = (qmin - zero - 0.5) * step, (qmax - zero + 0.5) * step
    for ax in axes:
        ax.axvspan(x[0], lo, color="0.92")
        ax.axvspan(hi, x[-1], color="0.92")
        ax.set_xlabel("x")
        ax.set_xlim(x[0], x[-1])
    left.plot(x, x, ":", color="0.5", label="x (no quantization)")
    left.plot(x, x_hat, color="C0", label="x̂ = fake_quantize(x)")
    left.set_ylabel("value")
    left.set_title(f"forward: round onto {qmax - qmin + 1} levels, clamp at the ends", fontsize="medium")
    left.legend(loc="upper left", fontsize="small")
    jumps = (np.arange(qmin - zero, qmax - zero) + 0.5) * step
    right.vlines(jumps, -0.1, 1.15, color="C3", linestyle=":", linewidth=1)
    right.plot(x, np.zeros_like(x), color="C3", label="true dx̂/dx: 0 (undefined at the jumps)")
    right.plot(x, ste, color="C0", label="straight-through estimate (clipped)")
    right.set_ylim(-0.1, 1.3)
    right.set_ylabel("gradient")
    right.set_title("backward: the STE passes the gradient inside the range", fontsize="medium")
    right.legend(loc="upper left", fontsize="small")
    return left.figure


def ptq_vs_qat(bits, ptq, qat, baseline: float, ax=None):
    """Perplexity against bits for post-training quantization and for QAT, with the float
    model as a horizontal line."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    ax.plot(bits, ptq, "o-", color="C3", label="PTQ: round the trained model")
    ax.plot(bits, qat, "o-", color="C0", label="QAT: train through the rounding")
    ax.axhline(baseline, color="0.4", linestyle=":", label=f"float32: {baseline:.2f}")
    ax.set_xticks(list(bits))
    ax.invert_xaxis()
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("held-out perplexity (lower is better)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax.figure


def grid_drift(quantizer, before, after, axes=None):
    """What QAT did to one weight matrix, in units of the step: the histogram of w/Δ + z before
    and after training (grid levels solid, rounding boundaries dotted), and, for the weights
    whose code changed, where they were before and where they ended up."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    left, right = axes
    units, codes = {}, {}
    for label, w in [("before QAT", before), ("after QAT", after)]:
        codes[label], step, zero = quantizer.quantize(w)
        units[label] = (quantizer.config.groups(w.detach()).float() / step + zero).flatten().numpy()
    changed = (codes["before QAT"] != codes["after QAT"]).flatten().numpy()
    levels = np.arange(quantizer.qmin, quantizer.qmax + 1)
    edges = np.linspace(levels[0] - 1, levels[-1] + 1, 161)
    for i, (label, u) in enumerate(units.items()):
        left.hist(np.clip(u, edges[0], edges[-1]), bins=edges, histtype="step", color=f"C{i}", label=label)
        right.hist(np.clip(u[changed], edges[0], edges[-1]), bins=edges, histtype="step", color=f"C{i}",
                   label=label)
    for ax in axes:
        for level in levels:
            ax.axvline(level, color="0.3", linewidth=0.8)
        for boundary in levels[:-1] + 0.5:
            ax.axvline(boundary, color="0.6", linewidth=0.8, linestyle=":")
        ax.set_xlabel("w / Δ + z   (levels solid, rounding boundaries dotted)")
        ax.legend(fontsize="small")
    left.set_yscale("log")
    left.set_ylabel("weights")
    left.set_title(f"all {changed.size:,} weights", fontsize="medium")
    right.set_ylabel("weights")
    right.set_title(f"the {changed.sum():,} weights whose code QAT changed", fontsize="medium")
    return left.figure


def outlier_token_fractions(stats, channels, module: str = "q_proj", min_tokens: float = 0.06, ax=None):
    """For each channel in `channels`, the fraction of tokens whose input to the Linear layers
    named `module` reaches the capture threshold (|x| ≥ 6 by default), layer by layer, with
    LLM.int8()'s `min_tokens` rule as a dashed line."""
    import re

    rows = sorted((int(layer.group(1)), s) for name, s in stats.items()
                  if name.endswith(f".{module}") and (layer := re.search(r"\.(\d+)\.", name)))
    if not rows:
        raise ValueError(f"no captured layer is named *.{module}")
    if not channels:
        raise ValueError("give at least one channel")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    layers = [layer for layer, _ in rows]
    for c in channels:
        ax.plot(layers, [100 * s.fraction_over[c].item() for _, s in rows], "o-", markersize=3,
                label=f"channel {c}")
    ax.axhline(100 * min_tokens, color="k", linestyle="--", linewidth=0.8,
               label=f"{min_tokens:.0%} of the tokens")
    ax.set_xlabel("layer")
    ax.set_ylabel(f"% of tokens with |x| ≥ {rows[0][1].threshold:g}")
    ax.set_title(f"input of {module}")
    ax.legend(loc="upper left", fontsize="small", ncol=2)
    ax.grid(alpha=0.3)
    return ax.figure


def threshold_tradeoff(thresholds, perplexities, fractions_16bit, baseline: float, without: float):
    """LLM.int8()'s threshold α against perplexity (left, with the unquantized baseline and int8
    without decomposition as lines) and the share of input columns multiplied in 16-bit (right)."""
    if not len(thresholds) == len(perplexities) == len(fractions_16bit) > 0:
        raise ValueError("give one perplexity and one 16-bit fraction per threshold")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(thresholds, perplexities, "o-", color="C0", label="LLM.int8()")
    left.axhline(baseline, color="k", linestyle="--", linewidth=0.8, label="unquantized")
    left.axhline(without, color="C3", linestyle=":", label="int8, no decomposition")
    left.set_ylabel("perplexity (lower is better)")
    right.plot(thresholds, [100 * f for f in fractions_16bit], "o-", color="C1")
    right.set_yscale("log")
    right.set_ylabel("% of input columns in 16-bit")
    for ax in (left, right):
        ax.set_xlabel("threshold α")
        ax.grid(alpha=0.3)
    left.legend(fontsize="small")
    fig.tight_layout()
    return fig
