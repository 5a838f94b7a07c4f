"""The figures of the chapter "GGUF and llama.cpp"."""
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle


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

    from ..gguf import FORMATS

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
