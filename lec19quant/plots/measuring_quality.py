"""The figures of the chapter "Measuring quality"."""
import matplotlib.pyplot as plt
import numpy as np


def kld_distribution(reports: dict, ax=None):
    """For each model (name → `quality.Report`), the fraction of scored tokens whose KL divergence
    to the base exceeds x, on logarithmic axes, with the mean marked: the mean hides a long tail."""
    if not reports:
        raise ValueError("no reports to draw")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.8))
    for name, report in reports.items():
        kld = np.sort(np.clip(report.stats.kld.numpy(), 1e-7, None))
        tail = 1 - np.arange(len(kld)) / len(kld)
        line, = ax.step(kld, tail, where="post", label=f"{name} (mean {report['mean_kld']:.3g})")
        ax.axvline(report["mean_kld"], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("KL divergence of a token's next-token distribution to the base (nats)")
    ax.set_ylabel("fraction of tokens above")
    ax.legend(frameon=False, fontsize=8)
    return ax.figure


WAYS = ("llama.cpp", "package", "package, llama.cpp arithmetic")


def llama_cpp_comparison(rows: list[dict], axes=None):
    """Mean KLD (log scale, with its standard error) and same-top-token % of each quantized file,
    measured three ways: by llama-perplexity, by the package with float activations, and by the
    package emulating llama.cpp's CPU arithmetic (rows as benchmarks/bench_quality.py saves them)."""
    rows = [r for r in rows if r["file"] != "F32"]
    if not rows:
        raise ValueError("no quantized file in the rows")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(rows))
    width = 0.8 / len(WAYS)
    for i, way in enumerate(WAYS):
        kld = [r[way]["mean_kld"] for r in rows]
        err = [r[way]["mean_kld_err"] for r in rows]
        same = [100 * r[way]["same_top_p"] for r in rows]
        axes[0].bar(x + (i - 1) * width, kld, width, yerr=err, label=way)
        axes[1].bar(x + (i - 1) * width, same, width, label=way)
    for ax in axes:
        ax.set_xticks(x, [r["file"] for r in rows])
    axes[0].set_yscale("log")
    axes[0].set_ylabel("mean KLD to the F32 model (nats)")
    axes[1].set_ylabel("same top token (%)")
    axes[1].set_ylim(min(100 * r[w]["same_top_p"] for r in rows for w in WAYS) - 5, 100)
    axes[0].legend(frameon=False, fontsize=8)
    axes[0].figure.tight_layout()
    return axes[0].figure
