"""The figures of the chapter "Moving the difficulty: SmoothQuant and AWQ"."""
import matplotlib.pyplot as plt
import torch


def smoothing_magnitudes(activation: torch.Tensor, weight: torch.Tensor, alphas=(0.0, 0.5, 0.85)):
    """SmoothQuant's identity at work: per input channel, max|X_j| (top row) and max|W_:,j| (bottom
    row) before smoothing and after it with s = a^α / w^(1−α), one column per α (α = 0 divides
    by the weights' own range and changes X little; larger α moves more of X's range into W)."""
    from ..smoothquant import smoothing_factors

    if activation.shape != weight.shape or activation.dim() != 1:
        raise ValueError("give one activation and one weight statistic per channel")
    fig, axes = plt.subplots(2, len(alphas) + 1, figsize=(3.2 * (len(alphas) + 1), 4.6), sharex=True, sharey="row")
    edges = torch.arange(len(activation) + 1) - 0.5  # one step per channel: one artist, not a bar each
    columns = [("before", torch.ones_like(activation))]
    columns += [(f"α = {a:g}", smoothing_factors(activation, weight, a)) for a in alphas]
    for col, (title, s) in enumerate(columns):
        a, w = activation / s, weight * s
        axes[0, col].stairs(a, edges, fill=True, color="C0")
        axes[1, col].stairs(w, edges, fill=True, color="C1")
        axes[0, col].set_title(f"{title}\nmax/median {a.max() / a.median():.0f} · {w.max() / w.median():.0f}",
                               fontsize="small")
        axes[1, col].set_xlabel("input channel")
    axes[0, 0].set_ylabel("max |X_j| / s_j")
    axes[1, 0].set_ylabel("max |W_:,j| · s_j")
    for ax in axes.flat:
        ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def awq_loss_curves(results, kinds=("qkv", "gate_up", "down"), ax=None):
    """AWQ's search: the block-output loss against α (relative to α = 0, no scaling), one thin line
    per decoder layer and layer group, the median over layers thick, and each chosen α marked."""
    from ..awq import grid

    if not results:
        raise ValueError("give the results of awq.apply_awq")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.8))
    for i, kind in enumerate(kinds):
        rows = [r for r in results if r.group.kind == kind]
        if not rows:
            continue
        alphas = [a for a, _ in grid(len(rows[0].losses))]
        curves = torch.tensor([r.losses for r in rows], dtype=torch.float64)
        curves = curves / curves[:, :1]
        for curve in curves:
            ax.plot(alphas, curve, color=f"C{i}", alpha=0.15, linewidth=0.8)
        ax.plot(alphas, curves.median(0).values, color=f"C{i}", linewidth=2.2, label=f"{kind} (median of {len(rows)})")
        chosen = [(r.alpha, curves[j, alphas.index(r.alpha)].item()) for j, r in enumerate(rows)]
        ax.scatter(*zip(*chosen), color=f"C{i}", s=12, zorder=3)
    ax.axhline(1, color="k", linestyle="--", linewidth=0.8)
    ax.set_xlabel("α")
    ax.set_ylabel("block output MSE / MSE at α = 0")
    ax.set_yscale("log")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax.figure
