"""The figures of the chapter "Choosing a format"."""
import matplotlib.pyplot as plt
import numpy as np

from ..tradeoff import LLAMA3_8B, gib_to_bits_per_weight, pareto_front


def size_quality(rows, ax=None, label_front: bool = True):
    """Every measured scheme (`tradeoff.Measurement`s) as bits per weight against mean KLD (log
    scale, with its standard error), one colour per chapter, and the Pareto frontier as a line."""
    if not rows:
        raise ValueError("no measurements to draw")
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 5.2))
    chapters = list(dict.fromkeys(r.chapter for r in rows))
    colors = dict(zip(chapters, plt.get_cmap("tab10").colors))
    for chapter in chapters:
        mine = [r for r in rows if r.chapter == chapter]
        ax.errorbar([r.bits_per_weight for r in mine], [r.mean_kld for r in mine],
                    yerr=[r.mean_kld_err for r in mine], fmt="o", color=colors[chapter], label=chapter,
                    markersize=5, capsize=2, linewidth=1)
    front = [rows[i] for i in pareto_front([r.bits_per_weight for r in rows], [r.mean_kld for r in rows])]
    ax.plot([r.bits_per_weight for r in front], [r.mean_kld for r in front], color="0.3", linewidth=1,
            linestyle="--", zorder=0, label="Pareto frontier")
    if label_front:
        for i, r in enumerate(front):  # labels above and below the line in turn, so that neighbours do not overlap
            ax.annotate(r.name, (r.bits_per_weight, r.mean_kld), xytext=(4, 3 if i % 2 else -10),
                        textcoords="offset points", fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xticks([3, 4, 5, 6, 8, 12, 16, 24, 32], ["3", "4", "5", "6", "8", "12", "16", "24", "32"])
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight of the block matrices, as stored")
    ax.set_ylabel("mean KLD to the float model (nats)")
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    ax.figure.tight_layout()
    return ax.figure


def against_llama3(ours: dict, model: str = "SmolLM2-135M", ax=None):
    """Mean KLD of llama.cpp's file types: LLaMA 3 8B as llama.cpp publishes it (`tradeoff.LLAMA3_8B`,
    bits per weight of the whole file) and `model` as measured here (`ours`: file type → Measurement)."""
    types = [t for t in LLAMA3_8B if t in ours]
    if not types:
        raise ValueError("none of the measured types is on llama.cpp's LLaMA 3 8B scoreboard")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    theirs = np.array([[gib_to_bits_per_weight(LLAMA3_8B[t][0]), LLAMA3_8B[t][1]] for t in types])
    mine = np.array([[ours[t].bits_per_weight, ours[t].mean_kld] for t in types])
    for (x, y), label in ((theirs.T, "LLaMA 3 8B (llama.cpp's scoreboard)"), (mine.T, f"{model} (measured here)")):
        ax.plot(x, y, "o-", label=label, markersize=5)
    for t, (x, y) in zip(types, mine):
        ax.annotate(t, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    for t, (x, y) in zip(types, theirs):
        ax.annotate(t, (x, y), xytext=(4, -9), textcoords="offset points", fontsize=7, color="0.4")
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("mean KLD (nats)")
    ax.legend(frameon=False, fontsize=8)
    ax.figure.tight_layout()
    return ax.figure
