"""The figures of the chapter "QLoRA"."""
import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import formats, memory


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


def finetuning_curve(losses, held_out=None, window: int = 5, ax=None, control=None,
                     labels=("", "control")):
    """Training loss at every step (thin line) and its mean over the last `window` steps (thick),
    with the held-out loss as points: `held_out` maps a step (0 = before training) to a loss.
    `control`, a second run's (losses, held_out), is drawn the same way in other colours; `labels`
    name the two runs in the legend."""
    runs = [(losses, held_out, "C0", "C3", labels[0])]
    if control is not None:
        runs.append((*control, "C2", "C1", labels[1]))
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5 if control is None else 4.2))
    for run_losses, run_held_out, color, held_color, label in runs:
        losses = np.asarray(run_losses, dtype=float)
        if losses.ndim != 1 or losses.size == 0:
            raise ValueError("losses must be a non-empty list of numbers, one per step")
        prefix = f"{label}: " if label else ""
        steps = np.arange(1, losses.size + 1)
        ax.plot(steps, losses, color=color, alpha=0.35, linewidth=1, label=f"{prefix}training loss (one batch)")
        mean = np.array([losses[max(0, i - window + 1): i + 1].mean() for i in range(losses.size)])
        ax.plot(steps, mean, color=color, linewidth=2.5, label=f"{prefix}mean of the last {window} steps")
        if run_held_out:
            x, y = zip(*sorted(run_held_out.items()))
            ax.plot(x, y, "o--", color=held_color, markersize=7, label=f"{prefix}held-out loss")
            for xi, yi in zip(x, y):
                ax.annotate(f"{yi:.3f}", (xi, yi), textcoords="offset points", xytext=(6, 6), color=held_color)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    if len(runs) == 1:
        ax.legend(fontsize="small")
    else:  # above the axes, one column per run
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize="small", frameon=False)
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
