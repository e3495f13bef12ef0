"""Figures of a kernel posterior. Every function returns a Figure; none shows it.

Figures are built with :class:`matplotlib.figure.Figure`, not pyplot: no global
state, nothing to close, any backend. ArviZ draws into axes made that way too.

=============================  ================================================================
:func:`plot_kernel`            mean, sd and interval width as images (and truth)
:func:`plot_radial_profile`    ring averages by distance from the centre, bands
:func:`plot_residuals`         residual map and histogram against N(0, sigma)
:func:`plot_predictive_check`  observed B against posterior predictive draws
:func:`plot_trace`             ArviZ trace plot of sigma, s and chosen entries
:func:`plot_rank`              ArviZ rank plot of the same
:func:`plot_pair`              ArviZ pair plot of the same
:func:`plot_prior_weights`     ``prior='auto'``: each candidate's log evidence and weight
:func:`plot_kernel_field`      ``spatial_order``: kernels over the image, width and ellipticity
:func:`plot_report`            all of them to PNG files or one multi-page PDF
=============================  ================================================================
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.colors
import numpy as np
import scipy.signal
import scipy.stats
from matplotlib.figure import Figure

from bayeskernel.diagnostics import lag1_autocorrelation, residuals

if TYPE_CHECKING:  # annotations only: results do not depend on their figures
    from bayeskernel.posterior import KernelPosterior

__all__ = [
    "REPORT_FIGURES",
    "plot_kernel",
    "plot_kernel_field",
    "plot_pair",
    "plot_predictive_check",
    "plot_prior_weights",
    "plot_radial_profile",
    "plot_rank",
    "plot_report",
    "plot_residuals",
    "plot_trace",
    "radial_profile",
]

# Ring averages and predictive checks use at most this many draws: the bands'
# Monte Carlo error is then well below their width, and memory stays bounded
# (1,000 draws of a 199x199 kernel are 158 MB).
_MAX_PROFILE_DRAWS = 1000


def _image(ax, values, title, cmap="viridis", vmin=None, vmax=None, log=False):
    norm = None
    if log:
        # Symmetric log: linear within a band around zero (the 10th percentile of
        # |values|, floor 1e-3 of the peak), logarithmic beyond it.
        peak = max(
            abs(vmin if vmin is not None else values.min()),
            abs(vmax if vmax is not None else values.max()),
        )
        threshold = max(np.percentile(np.abs(values), 10), 1e-3 * peak, 1e-300)
        norm = matplotlib.colors.SymLogNorm(threshold, vmin=vmin, vmax=vmax)
        vmin = vmax = None
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, norm=norm, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return im


def _check_truth(true_kernel, shape: tuple[int, int]) -> np.ndarray | None:
    if true_kernel is None:
        return None
    true_kernel = np.asarray(true_kernel, dtype=float)
    if true_kernel.shape != tuple(shape):
        raise ValueError(
            f"true_kernel has shape {true_kernel.shape}, expected the posterior's "
            f"kernel shape {tuple(shape)}"
        )
    return true_kernel


def _draw_subset(posterior: KernelPosterior, limit: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``limit`` draws among the flattened ``chains * draws``."""
    total = posterior.num_chains * posterior.num_draws
    if total <= limit:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))


def plot_kernel(
    posterior: KernelPosterior,
    true_kernel: np.ndarray | None = None,
    prob: float = 0.95,
    log: bool | None = None,
) -> Figure:
    """Posterior mean, sd and interval width as images (truth beside them if given).

    Mean and truth share one colour scale, so they can be compared by eye.

    Parameters
    ----------
    posterior : KernelPosterior
    true_kernel : (P, Q) ndarray, optional
    prob : float
        Probability of the credible interval whose width is shown.
    log : bool, optional
        Symmetric-log colour scales. Default: on when the mean's peak exceeds
        50 times its median magnitude (cusps such as ``1/r``, where a linear
        scale shows one bright pixel).

    Returns
    -------
    Figure
    """
    true_kernel = _check_truth(true_kernel, posterior.kernel_shape)
    lower, upper = posterior.interval(prob)
    panels = 4 if true_kernel is not None else 3
    fig = Figure(figsize=(4.2 * panels, 4), layout="constrained")
    axes = list(fig.subplots(1, panels))
    mean = posterior.kernel_mean
    if log is None:
        log = bool(np.abs(mean).max() > 50 * max(np.median(np.abs(mean)), 1e-300))
    vmin, vmax = mean.min(), mean.max()
    if true_kernel is not None:
        vmin, vmax = min(vmin, true_kernel.min()), max(vmax, true_kernel.max())
        _image(axes.pop(0), true_kernel, "true kernel", vmin=vmin, vmax=vmax, log=log)
    _image(axes[0], mean, "posterior mean", vmin=vmin, vmax=vmax, log=log)
    _image(axes[1], posterior.kernel_sd, "posterior sd", cmap="magma", log=log)
    _image(axes[2], upper - lower, f"{prob:.0%} interval width", cmap="magma", log=log)
    fig.suptitle(
        f"{posterior.kernel_shape[0]}x{posterior.kernel_shape[1]} kernel, "
        f"prior={posterior.prior}, method={posterior.method}, "
        f"noise sd {_noise_text(posterior)}"
    )
    return fig


def radial_profile(kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average of kernel entries in rings of width one around the centre.

    Parameters
    ----------
    kernels : (..., P, Q) ndarray
        One kernel or a stack of draws. The centre is ``((P - 1) / 2, (Q - 1) / 2)``.

    Returns
    -------
    radius : (R,) ndarray
        Mean distance from the centre of the entries in each non-empty ring.
    profile : (..., R) ndarray
        Ring averages; ring ``j`` holds entries at distance ``[j - 1/2, j + 1/2)``.
    """
    kernels = np.asarray(kernels)
    rows, cols = kernels.shape[-2:]
    y, x = np.meshgrid(
        np.arange(rows) - (rows - 1) / 2, np.arange(cols) - (cols - 1) / 2, indexing="ij"
    )
    distance = np.hypot(y, x).ravel()
    ring = np.floor(distance + 0.5).astype(int)
    order = np.argsort(ring, kind="stable")
    used, starts, counts = np.unique(ring[order], return_index=True, return_counts=True)
    del used  # rings are labelled by their mean distance instead
    flat = kernels.reshape(kernels.shape[:-2] + (-1,))[..., order]
    sums = np.add.reduceat(flat.astype(np.float64), starts, axis=-1)
    radius = np.add.reduceat(distance[order], starts) / counts
    return radius, sums / counts


def plot_radial_profile(
    posterior: KernelPosterior, true_kernel: np.ndarray | None = None, prob: float = 0.95
) -> Figure:
    """Kernel against distance from its centre, with a credible band.

    Entries are averaged in rings of width one pixel around the centre
    ``((P - 1) / 2, (Q - 1) / 2)``; the band is the equal-tailed ``prob``
    interval of that ring average over the posterior draws. Grey dots are the
    posterior means of single entries (their spread shows anisotropy).

    Parameters
    ----------
    posterior : KernelPosterior
    true_kernel : (P, Q) ndarray, optional
        Its ring averages are drawn dashed.
    prob : float

    Returns
    -------
    Figure
    """
    true_kernel = _check_truth(true_kernel, posterior.kernel_shape)
    if not 0 < prob < 1:
        raise ValueError(f"prob must lie strictly between 0 and 1, got {prob!r}")
    flat = posterior.kernel_draws.reshape((-1,) + posterior.kernel_shape)
    draws = flat[_draw_subset(posterior, _MAX_PROFILE_DRAWS)]
    radius, profiles = radial_profile(draws)
    lower, upper = np.quantile(profiles, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    _, mean_profile = radial_profile(posterior.kernel_mean)

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    rows, cols = posterior.kernel_shape
    y, x = np.meshgrid(
        np.arange(rows) - (rows - 1) / 2, np.arange(cols) - (cols - 1) / 2, indexing="ij"
    )
    ax.scatter(
        np.hypot(y, x).ravel(), posterior.kernel_mean.ravel(),
        s=4, color="0.6", alpha=0.5, linewidths=0, label="entry means",
    )  # fmt: skip
    ax.fill_between(radius, lower, upper, color="C0", alpha=0.3, label=f"{prob:.0%} band")
    ax.plot(radius, mean_profile, color="C0", label="posterior mean")
    if true_kernel is not None:
        _, true_profile = radial_profile(true_kernel)
        ax.plot(radius, true_profile, "k--", label="truth")
    ax.axhline(0.0, color="0.3", linewidth=0.6)
    ax.set_xlabel("distance from kernel centre (pixels)")
    ax.set_ylabel("kernel value (ring average)")
    ax.set_title("radial profile")
    ax.legend()
    return fig


def _noise_text(posterior: KernelPosterior) -> str:
    """The noise sd for a title: one value, or one per image pair."""
    return ", ".join(f"{v:.3g}" for v in np.atleast_1d(posterior.noise_sigma))


def _require_data(posterior: KernelPosterior, what: str) -> None:
    if posterior.image is None or posterior.observed is None:
        raise ValueError(f"{what} needs the data: the posterior has no image/observed (A and B)")


def plot_residuals(posterior: KernelPosterior, bins: int = 40) -> Figure:
    """Residual map ``B - convolve2d(A, K_mean, mode)`` and its histogram.

    Under the model the residuals are close to white noise with the estimated
    sd: the histogram should follow the drawn N(0, sigma) density and the map
    should show no structure.

    Parameters
    ----------
    posterior : KernelPosterior
        With its data (``image`` and ``observed``).
    bins : int
        Histogram bins.

    Returns
    -------
    Figure
    """
    _require_data(posterior, "plot_residuals")
    residual = residuals(posterior)
    values = residual[np.isfinite(residual)]
    sigma = float(np.mean(posterior.pair_noise_sigma_draws(0)))  # the first pair's map
    rho, _ = lag1_autocorrelation(residual)

    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax_map, ax_hist = fig.subplots(1, 2)
    limit = float(np.max(np.abs(values))) or 1.0
    _image(ax_map, residual, "residual B - A * K_mean", cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax_hist.hist(values, bins=bins, density=True, color="C0", alpha=0.6, label="residuals")
    grid = np.linspace(min(values.min(), -4 * sigma), max(values.max(), 4 * sigma), 200)
    ax_hist.plot(grid, scipy.stats.norm.pdf(grid, 0.0, sigma), "k", label=f"N(0, {sigma:.3g})")
    ax_hist.set_xlabel("residual")
    ax_hist.set_ylabel("density")
    ax_hist.set_title(f"sd {np.std(values):.3g}, lag-1 autocorrelation {rho:.2f}")
    ax_hist.legend()
    return fig


def plot_predictive_check(
    posterior: KernelPosterior, num_draws: int = 100, bins: int = 40, seed: int = 0
) -> Figure:
    """Posterior predictive check: observed ``B`` against replicated data.

    Each replicate is ``convolve2d(A, K_draw, mode) + N(0, sigma_draw^2)`` for
    one posterior draw. Left: the distribution of pixel values. Middle and
    right: the sd and the maximum of ``B``, replicated against observed, with
    the posterior predictive p-value ``P(T_rep >= T_obs)`` (near 0 or 1 is bad).

    Parameters
    ----------
    posterior : KernelPosterior
        With its data (``image`` and ``observed``).
    num_draws : int
        Replicates drawn.
    bins : int
    seed : int
        Picks the draws and the noise.

    Returns
    -------
    Figure
    """
    _require_data(posterior, "plot_predictive_check")
    if num_draws < 1:
        raise ValueError(f"num_draws must be a positive integer, got {num_draws!r}")
    rng = np.random.default_rng(seed)
    observed = posterior.observed
    if isinstance(observed, list):  # several pairs: check the first
        observed = observed[0]
    observed = np.asarray(observed, dtype=float)
    seen = np.isfinite(observed)
    sigmas = np.asarray(posterior.pair_noise_sigma_draws(0)).reshape(-1)
    total = sigmas.size
    chosen = rng.choice(total, size=num_draws, replace=total < num_draws)
    weights = posterior.noise_weights
    weights = weights[0] if isinstance(weights, list) else weights
    # Each pixel's noise sd relative to sigma (a variance map), 1 without one.
    relative = 1.0 if weights is None else 1.0 / np.sqrt(np.where(weights > 0, weights, 1.0))
    replicates = np.empty((num_draws, int(seen.sum())))
    for row, index in enumerate(chosen):
        blurred = _replicate_mean(posterior, int(index))
        noise = rng.normal(0.0, 1.0, blurred.shape) * sigmas[index] * relative
        replicates[row] = (blurred + noise)[seen]
    values = observed[seen]

    fig = Figure(figsize=(13, 4), layout="constrained")
    ax_values, *ax_stats = fig.subplots(1, 3)
    edges = np.histogram_bin_edges(np.concatenate([values, replicates.ravel()]), bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    for replicate in replicates[:50]:
        density, _ = np.histogram(replicate, bins=edges, density=True)
        ax_values.plot(centres, density, color="C0", alpha=0.15, linewidth=0.8)
    density, _ = np.histogram(values, bins=edges, density=True)
    ax_values.plot(centres, density, color="k", linewidth=1.8, label="observed B")
    ax_values.plot([], [], color="C0", label="replicated B")
    ax_values.set_xlabel("pixel value")
    ax_values.set_ylabel("density")
    ax_values.set_title("pixel values")
    ax_values.legend()
    for ax, (name, statistic) in zip(ax_stats, (("sd", np.std), ("max", np.max))):
        replicated = statistic(replicates, axis=1)
        actual = float(statistic(values))
        p_value = float(np.mean(replicated >= actual))
        ax.hist(replicated, bins=20, color="C0", alpha=0.6, label="replicated")
        ax.axvline(actual, color="k", linewidth=1.8, label="observed")
        ax.set_xlabel(f"{name} of B")
        ax.set_title(f"{name}: p = {p_value:.2f}")
        ax.legend()
    fig.suptitle(f"posterior predictive check ({num_draws} replicates)")
    return fig


def _replicate_mean(posterior: KernelPosterior, index: int) -> np.ndarray:
    """Draw ``index``'s noise-free ``B`` of the first pair: blur, field and background."""
    from bayeskernel.observation import background_image

    if posterior.field_draws is None:
        kernel = posterior.kernel_draws.reshape((-1,) + posterior.kernel_shape)[index]
    else:
        kernel = posterior.field_draws.reshape((-1,) + posterior.field_draws.shape[2:])[index]
    blurred = posterior.blur(kernel, 0)
    if posterior.background_draws is not None:
        draws = posterior.background_draws
        coefficients = draws.reshape((-1,) + draws.shape[2:])[index]
        coefficients = coefficients[0] if draws.ndim == 4 else coefficients
        blurred = blurred + background_image(coefficients, blurred.shape)
    return blurred


def plot_kernel_field(posterior: KernelPosterior, grid: int = 3, prob: float = 0.95) -> Figure:
    """A spatially varying kernel: kernels on a grid over ``B``, and maps of their shape.

    Top rows: the posterior mean kernel at ``grid x grid`` positions spread
    over the image (at the centres of equal cells), one shared colour scale,
    each titled with its position, the width (FWHM from second moments,
    :func:`bayeskernel.metrics.kernel_moments`) with its posterior sd, and the
    mean ``prob`` interval width. Bottom: the mean kernel's width and
    ellipticity over the whole image (a 24 x 24 grid of positions).

    Parameters
    ----------
    posterior : KernelPosterior
        From ``fit(..., spatial_order=d)`` with ``d >= 1`` (or ``'auto'``).
    grid : int
        Kernels per side.
    prob : float

    Returns
    -------
    Figure

    Raises
    ------
    ValueError
        A posterior without a field.
    """
    from bayeskernel.field import evaluate_field
    from bayeskernel.metrics import kernel_moments

    if posterior.field_draws is None:
        raise ValueError("plot_kernel_field needs a field: fit with spatial_order=1, 2 or 'auto'")
    if not isinstance(grid, (int, np.integer)) or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    height, width = posterior.field_shape
    ys = (np.arange(grid) + 0.5) * (height - 1) / grid
    xs = (np.arange(grid) + 0.5) * (width - 1) / grid
    fig = Figure(figsize=(2.6 * max(grid, 2), 2.6 * grid + 3.2), layout="constrained")
    rows = fig.subfigures(2, 1, height_ratios=[grid, 1.3])
    axes = np.atleast_2d(rows[0].subplots(grid, grid, squeeze=False))
    subset = _draw_subset(posterior, 200)
    draws = posterior.field_draws.reshape((-1,) + posterior.field_draws.shape[2:])[subset]
    means = {(y, x): posterior.kernel_at(y, x) for y in ys for x in xs}
    peak = max(float(np.max(m.kernel_mean)) for m in means.values())
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            local = means[y, x]
            lower, upper = local.interval(prob)
            fwhm = kernel_moments(evaluate_field(draws.astype(float), y, x, (height, width)))[0]
            ax = axes[i, j]
            ax.imshow(local.kernel_mean, cmap="viridis", vmin=0.0, vmax=peak)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(
                f"({y:.0f}, {x:.0f}) FWHM {np.mean(fwhm):.2f}+-{np.std(fwhm):.2f}\n"
                f"{prob:.0%} width {np.mean(upper - lower):.2g}",
                fontsize=8,
            )
    map_y = np.linspace(0, height - 1, 24)
    map_x = np.linspace(0, width - 1, 24)
    mean_field = np.mean(posterior.field_draws, axis=(0, 1), dtype=np.float64)
    kernels = np.stack([
        np.stack([evaluate_field(mean_field, y, x, (height, width)) for x in map_x])
        for y in map_y
    ])  # fmt: skip
    fwhm_map, ellipticity_map, _ = kernel_moments(kernels)
    left, right = rows[1].subplots(1, 2)
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    for ax, values, title in (
        (left, fwhm_map, "FWHM of the mean kernel (px)"),
        (right, ellipticity_map, "ellipticity of the mean kernel"),
    ):
        im = ax.imshow(values, extent=extent, cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("column of B")
        ax.set_ylabel("row of B")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"kernel field ({', '.join(posterior.field_terms)}): {posterior.prior}")
    return fig


# --- ArviZ figures ------------------------------------------------------------------


@contextmanager
def _quiet_arviz():
    # ArviZ 0.23 calls a matplotlib helper deprecated in 3.11; the warning is
    # ArviZ's to fix and says nothing about the user's results.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"arviz\.")
        yield


def _default_entries(posterior: KernelPosterior) -> list[tuple[int, int]]:
    """The centre entry and the most uncertain one (next most if they coincide)."""
    rows, cols = posterior.kernel_shape
    centre = ((rows - 1) // 2, (cols - 1) // 2)
    ranked = np.argsort(posterior.kernel_sd.ravel())[::-1]
    for flat_index in ranked:
        entry = tuple(int(i) for i in np.unravel_index(flat_index, (rows, cols)))
        if entry != centre:
            return [centre, entry]
    return [centre]


def _trace_data(posterior: KernelPosterior, entries: Sequence[tuple[int, int]] | None):
    """InferenceData of the varying hyperparameters and the chosen kernel entries."""
    import arviz as az

    entries = _default_entries(posterior) if entries is None else list(entries)
    rows, cols = posterior.kernel_shape
    variables = {}
    for name in ("noise_sigma", "kernel_scale"):
        draws = np.asarray(getattr(posterior, f"{name}_draws"), dtype=float)
        # Held fixed or a point estimate (method='map'): nothing to trace.
        if np.ptp(draws) > 0:
            variables[name] = draws
    for entry in entries:
        row, col = (int(i) for i in entry)
        if not (0 <= row < rows and 0 <= col < cols):
            raise ValueError(f"kernel entry {tuple(entry)} is outside the {rows}x{cols} kernel")
        variables[f"kernel[{row}, {col}]"] = np.asarray(
            posterior.kernel_draws[:, :, row, col], dtype=float
        )
    diverging = posterior.sample_stats.get("diverging")
    stats = {"diverging": np.asarray(diverging, dtype=bool)} if diverging is not None else None
    return az.from_dict(posterior=variables, sample_stats=stats), list(variables)


def plot_trace(
    posterior: KernelPosterior, entries: Sequence[tuple[int, int]] | None = None
) -> Figure:
    """ArviZ trace plot: density and trace per chain of sigma, s and kernel entries.

    Parameters
    ----------
    posterior : KernelPosterior
    entries : sequence of (row, col), optional
        Kernel entries to show; default the centre and the most uncertain entry.
        Hyperparameters that are constant (``method='map'``, held fixed) are left out.

    Returns
    -------
    Figure
    """
    import arviz as az

    idata, names = _trace_data(posterior, entries)
    fig = Figure(figsize=(10, 2.2 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 2, squeeze=False)
    with _quiet_arviz():
        az.plot_trace(idata, var_names=names, axes=axes, compact=False)
    fig.suptitle(f"trace ({posterior.num_chains} chain(s), method={posterior.method})")
    return fig


def plot_rank(
    posterior: KernelPosterior, entries: Sequence[tuple[int, int]] | None = None
) -> Figure:
    """ArviZ rank plot: per-chain histograms of pooled ranks (flat when mixed).

    Parameters
    ----------
    posterior : KernelPosterior
    entries : sequence of (row, col), optional
        As in :func:`plot_trace`.

    Returns
    -------
    Figure
    """
    import arviz as az

    idata, names = _trace_data(posterior, entries)
    columns = min(len(names), 3)
    rows = -(-len(names) // columns)
    fig = Figure(figsize=(4 * columns, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    with _quiet_arviz():
        az.plot_rank(idata, var_names=names, ax=axes[: len(names)])
    return fig


def plot_pair(
    posterior: KernelPosterior, entries: Sequence[tuple[int, int]] | None = None
) -> Figure:
    """ArviZ pair plot: joint draws of sigma, s and kernel entries, divergences marked.

    Parameters
    ----------
    posterior : KernelPosterior
    entries : sequence of (row, col), optional
        As in :func:`plot_trace`.

    Returns
    -------
    Figure
        With a note instead of panels when fewer than two quantities vary.
    """
    import arviz as az

    idata, names = _trace_data(posterior, entries)
    size = len(names)
    if size < 2:
        fig = Figure(figsize=(5, 3), layout="constrained")
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "fewer than two varying quantities:\nno pair plot", ha="center")
        return fig
    fig = Figure(figsize=(2.8 * size, 2.8 * size), layout="constrained")
    axes = fig.subplots(size, size, squeeze=False)
    with _quiet_arviz():
        az.plot_pair(
            idata, var_names=names, ax=axes, marginals=True,
            divergences="diverging" in posterior.sample_stats,
        )  # fmt: skip
    return fig


def plot_prior_weights(posterior: KernelPosterior) -> Figure:
    """``prior='auto'``: each candidate prior's log evidence and posterior weight.

    Bars: ``log p(B | prior)`` relative to the best candidate (log Bayes factors,
    in nats; a difference of 3 is odds of 20 to 1), each labelled with its
    weight in the model average and how many of the draws came from it.

    Parameters
    ----------
    posterior : KernelPosterior
        A fit over several priors (``prior='auto'`` or a list), with
        ``diagnostics['prior_evidence']``.

    Returns
    -------
    Figure
        Two panels side by side, one bar per candidate, the best on top.

    Raises
    ------
    ValueError
        When the fit has no ``prior_evidence`` (a single prior).
    """
    evidence = posterior.diagnostics.get("prior_evidence")
    if not evidence:
        raise ValueError(
            "plot_prior_weights needs a fit with prior='auto' or a list of priors "
            f"(diagnostics['prior_evidence']); this one has prior={posterior.prior!r}"
        )
    weights = posterior.diagnostics.get("prior_weights", {})
    draws = posterior.diagnostics.get("prior_draws", {})
    names = sorted(evidence, key=evidence.get)  # best on top
    best = max(evidence.values())
    gaps = np.array([evidence[name] - best for name in names])
    rows = np.arange(len(names))
    fig = Figure(figsize=(8.0, 0.55 * len(names) + 1.7))
    left, right = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": (3, 2)})
    colours = ["C0" if gap == 0 else "0.6" for gap in gaps]
    left.barh(rows, gaps, color=colours)
    # Huge gaps (a motion streak under a radial prior: -1,280 nats) would flatten
    # the close calls that matter: the axis is logarithmic beyond 10 nats.
    left.set_xscale("symlog", linthresh=10.0)
    left.set_xlim(min(-30.0, 2.0 * gaps.min()), 1.0)
    left.axvline(0.0, color="k", lw=0.8)
    left.set_yticks(rows, names)
    left.set_xlabel("log p(B | prior) - best (nats)")
    left.set_title("log evidence (3 nats: odds 20 to 1)", fontsize=9)
    shares = np.array([weights.get(name, np.nan) for name in names])
    right.barh(rows, shares, color=colours)
    right.set_xlim(0.0, 1.6)  # room for the labels after the bars
    right.set_xticks([0.0, 0.5, 1.0])
    right.set_xlabel("posterior probability of the prior")
    right.set_title("weight in the average", fontsize=9)
    for row, name, share in zip(rows, names, shares, strict=True):
        right.annotate(
            f"{share:.3g} ({draws.get(name, 0)} draws)", (share, row),
            xytext=(4, 0), textcoords="offset points", va="center", fontsize=8,
        )  # fmt: skip
    fig.suptitle(f"prior='auto': {posterior.prior}", fontsize=10)
    fig.tight_layout()
    return fig


# --- everything at once -------------------------------------------------------------


#: Names of the report's figures, in order (also the PNG file names).
REPORT_FIGURES = (
    "kernel", "radial_profile", "residuals", "predictive_check", "trace", "rank", "pair",
)  # fmt: skip


def _report_makers(
    posterior: KernelPosterior, true_kernel, prob: float, entries
) -> dict[str, Callable[[], Figure]]:
    makers = {
        "kernel": lambda: plot_kernel(posterior, true_kernel, prob),
        "radial_profile": lambda: plot_radial_profile(posterior, true_kernel, prob),
        "residuals": lambda: plot_residuals(posterior),
        "predictive_check": lambda: plot_predictive_check(posterior),
        "trace": lambda: plot_trace(posterior, entries),
        "rank": lambda: plot_rank(posterior, entries),
        "pair": lambda: plot_pair(posterior, entries),
    }
    if posterior.image is None or posterior.observed is None:
        # A posterior without its data (built by hand) has no residuals.
        del makers["residuals"], makers["predictive_check"]
    if posterior.diagnostics.get("prior_evidence"):  # prior='auto' or a list
        makers["prior_weights"] = lambda: plot_prior_weights(posterior)
    if posterior.field_draws is not None:
        makers["kernel_field"] = lambda: plot_kernel_field(posterior, prob=prob)
    return makers


def plot_report(
    posterior: KernelPosterior,
    path: str | os.PathLike,
    *,
    true_kernel: np.ndarray | None = None,
    prob: float = 0.95,
    entries: Sequence[tuple[int, int]] | None = None,
    dpi: int = 100,
) -> list[Path]:
    """Write every figure: PNG files into a folder, or one multi-page PDF.

    Parameters
    ----------
    posterior : KernelPosterior
    path : str or path-like
        A folder (created if needed) that receives ``<name>.png`` for each name
        in :data:`REPORT_FIGURES` (and ``prior_weights.png`` for a fit with
        ``prior='auto'`` or a list of priors, ``kernel_field.png`` for a fit with
        ``spatial_order``); or a file ending in ``.pdf``, one page each.
    true_kernel : (P, Q) ndarray, optional
        Drawn beside the estimate where it helps.
    prob : float
        Probability of the intervals and bands.
    entries : sequence of (row, col), optional
        Kernel entries for the trace, rank and pair plots.
    dpi : int
        Resolution of the PNG files.

    Returns
    -------
    list of Path
        The files written (one for a PDF).
    """
    path = Path(path)
    true_kernel = _check_truth(true_kernel, posterior.kernel_shape)
    makers = _report_makers(posterior, true_kernel, prob, entries)
    if path.suffix.lower() == ".pdf":
        from matplotlib.backends.backend_pdf import PdfPages

        path.parent.mkdir(parents=True, exist_ok=True)
        with PdfPages(path) as pdf:
            for make in makers.values():
                pdf.savefig(make())
        return [path]
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in makers.items():
        target = path / f"{name}.png"
        make().savefig(target, dpi=dpi)
        written.append(target)
    return written
