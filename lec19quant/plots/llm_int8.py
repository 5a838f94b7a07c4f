"""The figures of the chapter "LLM.int8()"."""
import matplotlib.pyplot as plt


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
