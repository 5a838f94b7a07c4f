"""The figures of the chapter "The running example"."""
import matplotlib.pyplot as plt
import numpy as np


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
