"""Plain-English warnings about a fitted posterior: convergence and residual checks.

Each warning says what looks wrong and what to try. The checks are:

* r_hat above 1.01 or bulk ESS below 100 for the noise sd and the kernel scale
  (and, for ``method='nuts'``, for a subset of kernel entries);
* divergent transitions of NUTS;
* residuals ``B - convolve2d(A, K_mean, mode)`` that do not look like white noise
  of the estimated sd: their sd far from the noise sd estimate, or a positive
  lag-1 spatial autocorrelation well above what white noise gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bayeskernel.posterior import KernelPosterior

__all__ = ["RHAT_LIMIT", "ESS_LIMIT", "diagnose", "lag1_autocorrelation", "residuals"]

# Vehtari et al. (2021), "Rank-normalization, folding, and localization": r_hat
# below 1.01 and a bulk ESS of at least 100 before trusting posterior summaries.
RHAT_LIMIT = 1.01
ESS_LIMIT = 100

# Residual sd over the noise sd estimate. Under the model the ratio sits a little
# below 1 (the fit absorbs p_eff of the n pixels: sqrt(1 - p_eff / n)); a kernel
# larger than the image can bring it to ~0.8. Outside these bounds something is off.
_RESIDUAL_RATIO_LOW = 0.5
_RESIDUAL_RATIO_HIGH = 1.2

# White noise has lag-1 autocorrelation ~ N(0, 1 / n_pairs); warn beyond four
# standard errors, and never below 0.1, which a correct fit with many kernel
# entries can reach by absorbing smooth structure.
_AUTOCORRELATION_SE = 4.0
_AUTOCORRELATION_FLOOR = 0.1

# Kernel entries checked by r_hat/ESS under method='nuts': rank r_hat costs about
# 1 ms per entry, so a 199x199 kernel in full would take a minute.
_MAX_ENTRIES_CHECKED = 256


def residuals(posterior: KernelPosterior, standardised: bool = False) -> np.ndarray | None:
    """Residual map ``B - convolve2d(A, K_mean, mode) - background``.

    Parameters
    ----------
    posterior : KernelPosterior
        Must carry its data (``image`` and ``observed``).
    standardised : bool
        Times ``sqrt(weights)`` where the fit had a noise variance map, so
        that white noise of sd ``noise_sigma`` is what a good fit leaves.

    Returns
    -------
    (H, W) ndarray or None
        NaN where ``B`` is unobserved; ``None`` when the posterior has no data.
        With several image pairs, the first pair's residual.
    """
    return _residual_and_signal(posterior, standardised)[0]


def _residual_and_signal(posterior: KernelPosterior, standardised: bool):
    """Pair 0's residual and its predicted blurred signal (``None, None`` without data)."""
    if posterior.image is None or posterior.observed is None:
        return None, None
    observed, weights = posterior.observed, posterior.noise_weights
    if isinstance(observed, list):  # several pairs: the first pair's map
        observed = observed[0]
        weights = None if weights is None else weights[0]
    predicted = posterior.blurred(0)
    residual = np.asarray(observed, dtype=float) - predicted
    if posterior.background_draws is not None:
        residual = residual - posterior.background_image(0)
    if standardised and weights is not None:
        weights = np.asarray(weights, dtype=float)
        residual = np.where(weights > 0, residual * np.sqrt(weights), np.nan)
    return residual, predicted


def lag1_autocorrelation(residual: np.ndarray) -> tuple[float, int]:
    """Lag-1 spatial autocorrelation of a map, pooled over rows and columns.

    Parameters
    ----------
    residual : (H, W) ndarray
        NaN marks missing pixels; pairs touching one are skipped.

    Returns
    -------
    rho : float
        Mean product of horizontally and vertically adjacent centred values over
        their variance; NaN when there are no adjacent pairs.
    pairs : int
        Number of adjacent pairs used (white noise gives ``rho`` with sd about
        ``1 / sqrt(pairs)``).
    """
    residual = np.asarray(residual, dtype=float)
    observed = np.isfinite(residual)
    if observed.sum() < 2:
        return float("nan"), 0
    centred = np.where(observed, residual - residual[observed].mean(), 0.0)
    variance = np.sum(centred**2) / observed.sum()
    # Missing pixels are zero in `centred`, so their products drop out of the sums.
    products = np.sum(centred[1:] * centred[:-1]) + np.sum(centred[:, 1:] * centred[:, :-1])
    pairs = int(np.sum(observed[1:] & observed[:-1]) + np.sum(observed[:, 1:] & observed[:, :-1]))
    if pairs == 0 or variance == 0:
        return float("nan"), pairs
    return float(products / pairs / variance), pairs


def _convergence_warnings(posterior: KernelPosterior) -> list[str]:
    if posterior.method == "map":
        # Hyperparameters are point estimates: r_hat/ESS do not apply.
        return []
    more = (
        "run longer (num_samples / --samples, num_warmup) or more chains"
        if posterior.method in ("nuts", "exact")
        else "draw more samples (num_samples / --samples)"
    )
    # Grid quadrature (and the model average, built on it) draws independently:
    # the "chains" are a split of one iid sample, and r_hat above 1.01 is then
    # chance (of 250-draw chains, a few percent of fits), not disagreement.
    facts = posterior.diagnostics
    independent = facts.get("hyper_sampler") == "grid" or "prior_weights" in facts
    found = []
    for name, values in posterior.convergence().items():
        label = name.replace("_", " ").replace("sigma", "sd")
        r_hat, ess = values["r_hat"], values["ess"]
        # NaN means constant (held fixed) or too few draws to judge: nothing to say.
        if not independent and np.isfinite(r_hat) and r_hat > RHAT_LIMIT:
            found.append(
                f"r_hat of the {label} is {r_hat:.3f} (> {RHAT_LIMIT}): the chains disagree; "
                f"{more}, and do not trust the intervals until it is below {RHAT_LIMIT}."
            )
        if np.isfinite(ess) and ess < ESS_LIMIT:
            found.append(
                f"effective sample size of the {label} is {ess:.0f} (< {ESS_LIMIT}): "
                f"interval ends are noisy; {more}."
            )
    if posterior.method == "nuts":
        found += _kernel_entry_warnings(posterior)
    return found


def _kernel_entry_warnings(posterior: KernelPosterior) -> list[str]:
    import arviz as az

    if posterior.num_draws < 8:
        return []
    flat = posterior.kernel_draws.reshape(posterior.num_chains, posterior.num_draws, -1)
    step = max(1, flat.shape[-1] // _MAX_ENTRIES_CHECKED)
    subset = np.asarray(flat[..., ::step], dtype=float)
    if posterior.num_chains == 1:
        half = posterior.num_draws // 2
        subset = subset[:, : 2 * half].reshape(2, half, -1)
    dataset = az.convert_to_dataset({"kernel": subset})
    r_hat = np.asarray(az.rhat(dataset)["kernel"])
    ess = np.asarray(az.ess(dataset)["kernel"])
    found = []
    bad = np.isfinite(r_hat) & (r_hat > RHAT_LIMIT)
    if bad.any():
        found.append(
            f"{bad.sum()} of {r_hat.size} checked kernel entries have r_hat > {RHAT_LIMIT} "
            f"(worst {np.nanmax(r_hat):.3f}): NUTS has not mixed; run longer, or use "
            "method='exact', which integrates the kernel out."
        )
    if np.isfinite(ess).any() and np.nanmin(ess) < ESS_LIMIT:
        found.append(
            f"smallest effective sample size over {ess.size} checked kernel entries is "
            f"{np.nanmin(ess):.0f} (< {ESS_LIMIT}): run longer, or use method='exact'."
        )
    return found


def _divergence_warnings(posterior: KernelPosterior) -> list[str]:
    diverging = posterior.sample_stats.get("diverging")
    if diverging is None:
        return []
    count = int(np.sum(diverging))
    if count == 0:
        return []
    fraction = count / np.size(diverging)
    return [
        f"{count} divergent transition(s) ({fraction:.1%} of draws): the sampler met "
        "curvature it could not follow and the draws may be biased; try more warmup "
        "(num_warmup), method='exact' if you used 'nuts', or a different prior."
    ]


def _residual_warnings(posterior: KernelPosterior) -> list[str]:
    residual, signal = _residual_and_signal(posterior, standardised=True)
    if residual is None:
        return []
    values = residual[np.isfinite(residual)]
    found = _missing_block_warnings(posterior, residual, signal)
    sigma = float(np.mean(posterior.pair_noise_sigma_draws(0)))  # residual() is pair 0's
    if values.size > 1 and sigma > 0:
        ratio = float(np.std(values)) / sigma
        if ratio > _RESIDUAL_RATIO_HIGH:
            found.append(
                f"residual sd {np.std(values):.3g} is {ratio:.2f} times the noise sd estimate "
                f"{sigma:.3g}: the fitted kernel does not explain B; check that A and B are "
                "paired and aligned, the mode, a larger kernel_shape, and that the noise sd "
                "is not held too small."
            )
        elif ratio < _RESIDUAL_RATIO_LOW:
            found.append(
                f"residual sd {np.std(values):.3g} is only {ratio:.2f} times the noise sd "
                f"estimate {sigma:.3g}: the kernel fits the noise itself or the noise sd is "
                "overestimated; try a smoother prior ('smooth', 'smooth2'), a smaller "
                "kernel_shape, or fixing noise_sigma if you know it."
            )
    rho, pairs = lag1_autocorrelation(residual)
    if pairs and np.isfinite(rho):
        limit = max(_AUTOCORRELATION_SE / np.sqrt(pairs), _AUTOCORRELATION_FLOOR)
        if rho > limit:
            found.append(
                f"residuals are spatially correlated (lag-1 autocorrelation {rho:.2f}, white "
                f"noise over {pairs} pixel pairs stays below {limit:.2f}): structure is left "
                "unexplained; try a larger kernel_shape, check the mode and the alignment of "
                "A and B, or whether the noise is really white."
            )
    return found


def _missing_block_warnings(posterior: KernelPosterior, residual, signal) -> list[str]:
    """Residual structure that names a missing part of the model: a background, a variance map."""
    seen = np.isfinite(residual)
    values = residual[seen]
    if values.size < _MIN_PIXELS_CHECKED:
        return []
    found = []
    spread = float(np.std(values))
    mean = float(np.mean(values))
    if (
        posterior.background_draws is None
        and abs(mean) > _OFFSET_SE * spread / np.sqrt(values.size)
        and abs(mean) > _OFFSET_FRACTION * spread
    ):
        found.append(
            f"residuals have a mean of {mean:.3g} ({mean / spread:.2f} of their sd): B holds "
            "an offset the kernel cannot explain (a sky or bias level); fit it with "
            "background=0 (a constant), or background=1 for a gradient."
        )
    if posterior.noise_weights is None:
        order = np.argsort(signal[seen])
        fifth = max(1, values.size // 5)
        faint, bright = values[order[:fifth]], values[order[-fifth:]]
        ratio = float(np.var(bright) / max(np.var(faint), 1e-300))
        # log of a ratio of two variances of `fifth` values each has sd ~ 2 / sqrt(fifth):
        # few pixels need a larger ratio before it means anything.
        needed = max(np.log(_VARIANCE_GROWTH), _VARIANCE_GROWTH_SE * 2 / np.sqrt(fifth))
        if ratio > 0 and np.log(ratio) > needed:
            found.append(
                f"the residual variance grows with the signal ({ratio:.1f} times larger in the "
                "brightest fifth of the pixels than in the faintest): the noise is not white "
                "(photon noise); give the noise variance map, variance= (e.g. "
                "bayeskernel.ccd_variance(B, gain, read_noise))."
            )
    return found


# The missing-block checks read at least this many observed pixels.
_MIN_PIXELS_CHECKED = 50
# A residual mean this many standard errors from 0, and at least this fraction
# of the residual sd, names a missing background.
_OFFSET_SE = 5.0
_OFFSET_FRACTION = 0.1
# Residual variance in the brightest fifth of pixels over that in the faintest
# fifth: white noise keeps it near 1 (about 1 +- 0.3 on 250 pixels); photon
# noise on stars gives tens. The ratio must also be this many of its standard
# errors (in log) above 1.
_VARIANCE_GROWTH = 3.0
_VARIANCE_GROWTH_SE = 5.0


# Below this fraction of the latent degrees of freedom determined by the data,
# the prior decides the kernel almost everywhere (the motivating case with the
# smooth prior: 3,100 of 39,601, i.e. 0.08).
PRIOR_DOMINATED_FRACTION = 0.1


def prior_dominance_warnings(posterior: KernelPosterior) -> list[str]:
    """Warn when the data determine only a small part of the kernel.

    Uses the effective number of parameters ``sum_j t g_j / (1 + t g_j)`` (the
    trace of the hat matrix, ``t = s^2 / sigma^2``), which the exact route
    reports in ``diagnostics['effective_parameters']`` (for a model average's
    mixture, that of its candidate of largest weight).
    """
    facts = posterior.diagnostics
    if facts.get("components"):
        facts = next(iter(facts["components"].values()))
    effective = facts.get("effective_parameters")
    total = facts.get("num_latent")
    if effective is None or not total or effective >= PRIOR_DOMINATED_FRACTION * total:
        return []
    return [
        f"the data determine only about {effective:.0f} of the kernel's {total} degrees of "
        f"freedom ({effective / total:.0%}): the prior decides the rest, so there the "
        "posterior mean and intervals reflect the prior, not the data. Consider a "
        "structured prior (e.g. prior='radial' or a parametric family; compare them with "
        "bayeskernel.compare), a smaller kernel_shape, or more image pairs."
    ]


def diagnose(posterior: KernelPosterior) -> list[str]:
    """Plain-English warnings about a posterior, each with what to try.

    Parameters
    ----------
    posterior : KernelPosterior

    Returns
    -------
    list of str
        Empty when nothing looks wrong. Convergence checks are skipped for
        ``method='map'`` (its hyperparameters are point estimates) and for
        hyperparameters held fixed, and ``r_hat`` for independent draws (the
        exact route's grid sampler, the model average); residual checks need the data on the
        posterior (``image``, ``observed``).

    Examples
    --------
    >>> for line in diagnose(posterior):  # doctest: +SKIP
    ...     print("warning:", line)
    """
    return (
        _convergence_warnings(posterior)
        + _divergence_warnings(posterior)
        + _residual_warnings(posterior)
        + prior_dominance_warnings(posterior)
    )
