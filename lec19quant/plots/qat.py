"""The figures of the chapter "Quantization-aware training"."""
import matplotlib.pyplot as plt
import numpy as np
import torch


def fake_quantize_node(step: float = 1.0, zero: int = 0, qmin: int = -4, qmax: int = 3, axes=None):
    """Fake quantization x̂ = (clamp(round(x/Δ) + z) − z)·Δ against x (a staircase), and beside
    it its gradients: round's true derivative (0 between the jumps) and the clipped
    straight-through estimate that `lec19quant.qat.fake_quantize` backpropagates (1 inside the
    range, 0 outside)."""
    from ..qat import fake_quantize

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
