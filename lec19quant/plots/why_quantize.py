"""The figures of the chapter "Why quantize"."""
import matplotlib.pyplot as plt
import numpy as np

from .. import memory


def footprint_vs_bits(config, name: str, devices=("macbook-air-16gb", "t4"), formats=("BF16", "INT8", "Q4_K"),
                      context: int = memory.CONTEXT, overhead: float = memory.OVERHEAD, ax=None):
    """Memory to run the model of `config` against bits per weight: weights + KV cache of `context`
    tokens + the runtime allowance (`memory.inference_bytes`), the named `formats` marked on it,
    the lecture's rule of thumb (weights × `overhead`) for comparison, and each device's usable
    memory as a horizontal line."""
    n = memory.count_params(config)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    bits = np.linspace(2, 32, 301)
    ax.plot(bits, [memory.inference_bytes(config, float(b), context) / memory.GB for b in bits],
            label=f"{name}: weights + KV cache ({context:,} tokens) + runtime")
    ax.plot(bits, [memory.footprint(n, float(b), overhead) / memory.GB for b in bits], "-.", color="C0",
            alpha=0.6, label=f"the lecture's rule of thumb: weights × {overhead}")
    ax.plot(bits, [memory.weight_bytes(n, float(b)) / memory.GB for b in bits], "--", color="C0",
            alpha=0.6, label="weights alone")
    for fmt in formats:
        b = memory.BITS_PER_WEIGHT[fmt]
        gb = memory.inference_bytes(config, fmt, context) / memory.GB
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
