"""Figures of a kernel posterior. Every function returns a Figure; none shows it."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from bayeskernel.posterior import KernelPosterior

__all__ = ["plot_kernel"]


def _image(ax, values, title, cmap="viridis", vmin=None, vmax=None):
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return im


def plot_kernel(
    posterior: KernelPosterior, true_kernel: np.ndarray | None = None, prob: float = 0.95
) -> Figure:
    """Posterior mean, sd and interval width as images (truth beside them if given).

    Mean and truth share one colour scale, so they can be compared by eye.
    """
    lower, upper = posterior.interval(prob)
    panels = 4 if true_kernel is not None else 3
    # Figure() rather than pyplot: no global state, no backend, nothing to close.
    fig = Figure(figsize=(4.2 * panels, 4), layout="constrained")
    axes = list(fig.subplots(1, panels))
    mean = posterior.kernel_mean
    vmin, vmax = mean.min(), mean.max()
    if true_kernel is not None:
        vmin, vmax = min(vmin, true_kernel.min()), max(vmax, true_kernel.max())
        _image(axes.pop(0), true_kernel, "true kernel", vmin=vmin, vmax=vmax)
    _image(axes[0], mean, "posterior mean", vmin=vmin, vmax=vmax)
    _image(axes[1], posterior.kernel_sd, "posterior sd", cmap="magma")
    _image(axes[2], upper - lower, f"{prob:.0%} interval width", cmap="magma")
    fig.suptitle(
        f"{posterior.kernel_shape[0]}x{posterior.kernel_shape[1]} kernel, "
        f"prior={posterior.prior}, method={posterior.method}, "
        f"noise sd {posterior.noise_sigma:.3g}"
    )
    return fig
