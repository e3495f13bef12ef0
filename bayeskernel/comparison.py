"""Ranking fitted models of the same data by PSIS-LOO (ArviZ)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bayeskernel.forward import make_operator
from bayeskernel.posterior import KernelPosterior

__all__ = ["compare", "pointwise_log_likelihood"]

# Draws are convolved in batches of this many to bound memory.
_BATCH = 32


def pointwise_log_likelihood(posterior: KernelPosterior, max_draws: int = 200) -> np.ndarray:
    """``log N(B_ij | conv(A, K)_ij, sigma^2)`` per draw and observed pixel.

    Pixels are conditionally independent given ``(K, sigma)``, so these terms
    are what leave-one-out cross-validation needs.

    Parameters
    ----------
    posterior : KernelPosterior
        Must carry its data (``image``, ``observed``), as ``fit`` leaves it.
    max_draws : int
        Draws per chain kept (evenly thinned) to bound the cost.

    Returns
    -------
    (chains, draws, pixels) ndarray
    """
    if posterior.image is None or posterior.observed is None:
        raise ValueError("posterior carries no data (image/observed); refit with bayeskernel.fit")
    step = _thinning(posterior, max_draws)
    kernels = posterior.kernel_draws[:, ::step]
    sigmas = posterior.noise_sigma_draws[:, ::step]
    chains, draws = kernels.shape[:2]
    flat_kernels = kernels.reshape((chains * draws,) + posterior.kernel_shape)
    images, observeds = posterior.image, posterior.observed
    if not isinstance(images, list):
        images, observeds = [images], [observeds]
    # (draws, pairs): the shared noise sd repeated, or each pair's own.
    flat_sigmas = sigmas.reshape(chains * draws, -1)
    parts = [
        _pair_log_likelihood(
            a, b, posterior, flat_kernels, flat_sigmas[:, min(i, flat_sigmas.shape[1] - 1)]
        )
        for i, (a, b) in enumerate(zip(images, observeds, strict=True))
    ]
    return np.concatenate(parts, axis=1).reshape(chains, draws, -1)


def _thinning(posterior: KernelPosterior, max_draws: int) -> int:
    """Step that keeps at most ``max_draws`` draws per chain."""
    return max(1, int(np.ceil(posterior.num_draws / max_draws)))


def _pair_log_likelihood(image, observed, posterior, kernels, sigmas) -> np.ndarray:
    """``(draws, observed pixels)`` log-likelihood terms of one image pair."""
    observed = np.asarray(observed, dtype=np.float64)
    seen = np.isfinite(observed).ravel()
    out = np.empty((kernels.shape[0], int(seen.sum())))
    with jax.enable_x64(True):
        operator = make_operator(image, posterior.kernel_shape, posterior.mode)
        data = jnp.asarray(np.nan_to_num(observed).ravel()[seen])
        index = jnp.asarray(np.flatnonzero(seen))

        @jax.jit
        def block(op, k, s):
            predicted = op(k).reshape(k.shape[0], -1)[:, index]
            z = (data - predicted) / s[:, None]
            return -0.5 * z**2 - jnp.log(s)[:, None] - 0.5 * jnp.log(2 * jnp.pi)

        for start in range(0, kernels.shape[0], _BATCH):
            stop = min(kernels.shape[0], start + _BATCH)
            out[start:stop] = np.asarray(
                block(
                    operator,
                    jnp.asarray(kernels[start:stop], dtype=jnp.float64),
                    jnp.asarray(sigmas[start:stop], dtype=jnp.float64),
                )
            )
    return out


def compare(
    posteriors: Mapping[str, KernelPosterior],
    *,
    method: str = "loo",
    max_draws: int = 200,
):
    """Rank models of the same data: PSIS-LOO, or the exact marginal likelihood.

    Parameters
    ----------
    posteriors : mapping of name -> KernelPosterior
        Fits of the same ``A`` and ``B`` (priors, methods or kernel shapes may differ).
    method : {'loo', 'evidence'}
        ``'loo'``: expected log predictive density by Pareto-smoothed
        importance-sampling leave-one-out (ArviZ), any fits. ``'evidence'``: the
        log marginal likelihood ``log p(B)`` of each model, kernel and
        hyperparameters integrated out, which the exact route computes by
        quadrature (``diagnostics['log_evidence']``; linear-Gaussian priors,
        ``method='exact'``); differences are log Bayes factors.
    max_draws : int
        Draws per chain used for the pointwise likelihood (``'loo'``).

    Returns
    -------
    pandas.DataFrame
        Best model first. ``'loo'``: ArviZ's comparison table (``elpd_loo``,
        ``se``, ``dse``, ``weight``, ``warning`` ...). ``'evidence'``:
        ``log_evidence``, ``d_log_evidence`` (to the best), ``stderr`` (Monte
        Carlo error of the Krylov solver's log-determinant, 0 for the dense one)
        and ``weight`` (posterior model probabilities for equal prior odds).

    Notes
    -----
    Pixels are the units left out by LOO; ``warning=True`` marks Pareto k above
    0.7, where the PSIS estimate is unreliable (very flexible priors). The
    evidence depends on the hyperpriors, which ``fit`` sets from the data's
    scale in the same way for every prior.
    """
    import arviz as az

    if method not in ("loo", "evidence"):
        raise ValueError(f"method must be 'loo' or 'evidence', got {method!r}")
    if not isinstance(posteriors, Mapping):
        raise TypeError(
            "posteriors must be a mapping of name -> KernelPosterior, e.g. "
            f"{{'smooth': p, 'radial': q}}; got {type(posteriors).__name__}"
        )
    if len(posteriors) < 2:
        raise ValueError("compare needs at least two posteriors")
    _check_same_data(posteriors)
    if method == "evidence":
        return _compare_evidence(posteriors)
    idatas = {}
    for name, posterior in posteriors.items():
        log_lik = pointwise_log_likelihood(posterior, max_draws=max_draws)
        idatas[name] = az.from_dict(
            posterior={
                "noise_sigma": posterior.noise_sigma_draws[:, :: _thinning(posterior, max_draws)]
            },
            log_likelihood={"B": log_lik},
        )
    with warnings.catch_warnings():
        # High Pareto k is reported per model in the table's "warning" column.
        warnings.filterwarnings(
            "ignore", message=".*shape parameter of Pareto", category=UserWarning
        )
        # ArviZ 0.x calls a pandas method deprecated in pandas 3.1; not ours to fix.
        warnings.filterwarnings("ignore", message="The inplace keyword")
        return az.compare(idatas, ic="loo")


def _check_same_data(posteriors: Mapping[str, KernelPosterior]) -> None:
    reference = None
    for name, posterior in posteriors.items():
        observed = posterior.observed
        if observed is None:
            raise ValueError(f"posterior {name!r} carries no data; refit with bayeskernel.fit")
        if isinstance(observed, list):
            observed = np.concatenate([np.ravel(b) for b in observed])
        observed = np.asarray(observed)
        if reference is None:
            reference = observed
        elif (
            observed.shape != reference.shape
            or not np.array_equal(np.isnan(observed), np.isnan(reference))
            or not np.allclose(np.nan_to_num(observed), np.nan_to_num(reference))
        ):
            raise ValueError(f"posterior {name!r} was fitted to different data than the others")


def _compare_evidence(posteriors: Mapping[str, KernelPosterior]):
    import pandas as pd

    rows = {}
    for name, posterior in posteriors.items():
        value = posterior.diagnostics.get("log_evidence")
        if value is None:
            raise ValueError(
                f"posterior {name!r} has no log evidence: it needs method='exact' with a "
                f"linear-Gaussian prior and the grid hyperparameter sampler (it was fitted "
                f"with method={posterior.method!r}, prior={posterior.prior!r}); "
                "use compare(..., method='loo')"
            )
        rows[name] = (value, posterior.diagnostics.get("log_evidence_stderr", 0.0))
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["log_evidence", "stderr"])
    table = table.sort_values("log_evidence", ascending=False)
    table["d_log_evidence"] = table["log_evidence"].iloc[0] - table["log_evidence"]
    weights = np.exp(-table["d_log_evidence"].to_numpy())
    table["weight"] = weights / weights.sum()
    table.insert(0, "rank", np.arange(len(table)))
    return table[["rank", "log_evidence", "d_log_evidence", "stderr", "weight"]]
