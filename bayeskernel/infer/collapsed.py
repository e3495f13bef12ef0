"""The exact route: hyperparameters from their collapsed posterior, exact kernel draws.

Two backends give the same answer (to a reported tolerance):

* ``solver='dense'`` (:mod:`bayeskernel.infer.exact`): one dense
  eigendecomposition of ``W^T W`` or ``W W^T``; exact to rounding.
* ``solver='krylov'`` (:mod:`bayeskernel.infer.krylov`): matrix-free Lanczos
  quadratures for the marginal likelihood and conjugate-gradient
  perturbation-optimisation for the draws; for ``min(n, p)`` beyond a few
  thousand, where the dense eigendecomposition's ``O(r^3)`` dominates.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from numpyro.infer import MCMC, NUTS

from bayeskernel.forward import ConvolutionOperator
from bayeskernel.infer.common import constant_draws
from bayeskernel.infer.exact import (
    DENSE_LIMIT,
    conditional_draws,
    decompose,
    kernel_gram,
    log_marginal_likelihood,
    observed_vector,
    whitened_operator,
)
from bayeskernel.infer.grid import grid_draws
from bayeskernel.infer.krylov import (
    CG_RTOL,
    krylov_draws,
    krylov_log_marginal_likelihood,
    krylov_summary,
    log_det_error,
)
from bayeskernel.model import HyperScales, collapsed_model
from bayeskernel.posterior import KernelPosterior
from bayeskernel.priors import LinearGaussianPrior

__all__ = ["HYPER_SAMPLERS", "SOLVERS", "run_exact"]

SOLVERS = ("auto", "dense", "krylov")
HYPER_SAMPLERS = ("auto", "grid", "nuts")
# 'auto' goes matrix-free above this many unknowns in the smaller space. The
# dense route costs r matrix-vector products plus an O(r^3) eigendecomposition;
# the Krylov route about 2,000 products plus ~30 per kernel draw. The limit is a
# judgement, not a measured crossover: bench_scaling.py has dense at 10 s for
# r = 3,969 and Krylov at 16 s for r = 9,801 (100x100 image, 'map').
DENSE_AUTO_LIMIT = 5_000
# Build W^T W from the kernel-grid normal matrix H^T H only when the kernel grid
# has at most this many times as many entries as the latent space.
NORMAL_MATRIX_RATIO = 4
# Kernel draws made per batched call.
_DRAW_BATCH = 64
# NUTS on the two hyperparameters keeps every third draw: hyperparameter draws
# cost microseconds, kernel draws (one per kept pair) do not, so thinning buys
# nearly independent pairs (ESS ~ draws) for almost nothing.
HYPER_THINNING = 3


def choose_solver(solver: str, num_latent: int, num_observed: int) -> str:
    """Resolve ``solver='auto'`` from the problem size."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    size = min(num_latent, num_observed)
    if solver == "dense" and size > DENSE_LIMIT:
        raise MemoryError(
            f"solver='dense' needs a dense {size}x{size} eigendecomposition "
            f"(limit {DENSE_LIMIT}); use solver='krylov' (or 'auto')"
        )
    if solver == "auto":
        return "dense" if size <= DENSE_AUTO_LIMIT else "krylov"
    return solver


def run_exact(
    operator: ConvolutionOperator | tuple,
    prior: LinearGaussianPrior,
    scales: HyperScales,
    observed,
    rng_key: jax.Array,
    *,
    mask=None,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
    noise_sigma: float | None = None,
    kernel_scale: float | None = None,
    optimise: bool = False,
    solver: str = "auto",
    thinning: int = 1,
    hyper_sampler: str = "auto",
    progress_bar: bool = True,
    draws_dtype=np.float32,
) -> KernelPosterior:
    """Collapsed-hyperparameter posterior with exact kernel draws.

    ``optimise=False``: draws of ``(sigma, s)`` from their marginal posterior
    (the NumPyro model :func:`bayeskernel.model.collapsed_model`), then one
    exact kernel draw per hyperparameter draw. ``hyper_sampler='grid'`` (the
    default through ``'auto'``) tabulates that two-parameter posterior and
    draws independently (:mod:`bayeskernel.infer.grid`); ``'nuts'`` runs NUTS
    on it (``'auto'`` falls back to NUTS when a user model has more
    parameters). ``optimise=True`` (``method='map'``):
    type-II maximum likelihood for ``(sigma, s)``, then ``num_samples`` exact
    draws at those values (intervals that ignore hyperparameter uncertainty).
    """
    timings = {}
    start = time.perf_counter()
    whitened = whitened_operator(operator, prior, mask)
    flat = observed_vector(observed, mask)
    solver = choose_solver(solver, whitened.num_latent, whitened.num_observed)
    rng_key, probe_key = jax.random.split(rng_key)
    if solver == "dense":
        gram = None
        masks = mask if isinstance(mask, tuple) else (mask,)
        kernel_size = int(np.prod(prior.kernel_shape))
        # The normal matrix is kernel-grid sized (kernel_size^2): worth it when the
        # latent space is about as large (iid, smooth), not for a radial profile
        # of 140 knots on a 199x199 grid (a 12 GB matrix for 140 columns).
        if (
            whitened.num_latent <= whitened.num_observed
            and all(m is None for m in masks)
            and kernel_size <= min(DENSE_LIMIT, NORMAL_MATRIX_RATIO * whitened.num_latent)
        ):
            operators = operator if isinstance(operator, tuple) else (operator,)
            gram = kernel_gram(operators, prior)
        summary = decompose(whitened, flat, gram)
        gram_build = "normal matrix" if gram is not None else "operator columns"
        log_likelihood = log_marginal_likelihood
        # The marginal likelihood needs the spectrum, not the eigenvectors.
        terms = replace(summary, basis=None, latent_projection=None)
    else:
        summary = krylov_summary(whitened, flat, probe_key)
        log_likelihood = krylov_log_marginal_likelihood
        terms = replace(summary, ritz_vectors=None)
    # Device arrays once, not a host-to-device copy per call.
    terms = jax.tree_util.tree_map(jnp.asarray, terms)
    timings["seconds_decomposition"] = time.perf_counter() - start

    start = time.perf_counter()
    fixed = {"noise_sigma": noise_sigma, "kernel_scale": kernel_scale}
    sample_stats = {}
    hyper_diagnostics = {}
    if optimise or (noise_sigma is not None and kernel_scale is not None):
        values = (
            _optimise_hyperparameters(log_likelihood, terms, scales, fixed) if optimise else fixed
        )
        num_chains = 1
        sigma = constant_draws(values["noise_sigma"], 1, num_samples)
        scale = constant_draws(values["kernel_scale"], 1, num_samples)
    else:
        # The model and its keywords are compile-time constants, the data
        # summary and scales arguments: the compiled potential is reused.
        model_args = (terms, HyperScales(float(scales.noise), float(scales.kernel)))
        model_kwargs = {
            "log_likelihood": log_likelihood,
            "noise_sigma": noise_sigma,
            "kernel_scale": kernel_scale,
        }
        rng_key, hyper_key = jax.random.split(rng_key)
        samples = None
        if hyper_sampler in ("auto", "grid"):
            samples = grid_draws(
                collapsed_model, model_args, model_kwargs, hyper_key, num_chains, num_samples
            )
            if samples is None and hyper_sampler == "grid":
                raise ValueError(
                    "hyper_sampler='grid' needs a model with at most two free "
                    "hyperparameters and a well-defined mode; use 'nuts'"
                )
        if samples is not None:
            hyper_diagnostics = {"hyper_sampler": "grid", **samples.pop("_grid")}
        else:
            samples, sample_stats["diverging"] = _nuts_hyperparameters(
                partial(collapsed_model, **model_kwargs), model_args, hyper_key,
                num_warmup, num_samples, num_chains, thinning, progress_bar,
            )  # fmt: skip
            hyper_diagnostics = {"hyper_sampler": "nuts"}
        sigma = samples.get(
            "noise_sigma", constant_draws(noise_sigma or 0, num_chains, num_samples)
        )
        scale = samples.get(
            "kernel_scale", constant_draws(kernel_scale or 0, num_chains, num_samples)
        )
    timings["seconds_hyperparameters"] = time.perf_counter() - start

    start = time.perf_counter()
    kernels, stats = _kernel_draws(
        rng_key, solver, summary, whitened, flat, sigma, scale, draws_dtype
    )
    timings["seconds_kernel_draws"] = time.perf_counter() - start
    timings["seconds"] = sum(timings.values())

    diagnostics = {**timings, "solver": solver, "space": summary.space, **hyper_diagnostics}
    if solver == "dense":
        diagnostics["gram_build"] = gram_build
        diagnostics["rank"] = int(np.sum(summary.eigenvalues > summary.eigenvalues.max() * 1e-12))
        diagnostics["dense_size"] = int(summary.eigenvalues.shape[0])
        # Effective number of parameters at the median t = s^2 / sigma^2: the
        # trace of the hat matrix, sum_j t g_j / (1 + t g_j).
        ratio = float(np.median(scale.reshape(-1) ** 2 / sigma.reshape(-1) ** 2))
        shrink = ratio * summary.eigenvalues / (1.0 + ratio * summary.eigenvalues)
        diagnostics["effective_parameters"] = float(np.sum(shrink))
    else:
        # Includes effective_parameters, from the same probes.
        diagnostics.update(_krylov_diagnostics(summary, stats, sigma, scale))
    diagnostics["num_latent"] = int(whitened.num_latent)
    return KernelPosterior(
        kernel_draws=kernels,
        noise_sigma_draws=sigma,
        kernel_scale_draws=scale,
        method="map" if optimise else "exact",
        prior=prior.name,
        mode=(operator[0] if isinstance(operator, tuple) else operator).mode,
        diagnostics=diagnostics,
        sample_stats=sample_stats,
    )


def _nuts_hyperparameters(
    model, model_args, rng_key, num_warmup, num_samples, num_chains, thinning, progress
):
    """NUTS on the collapsed model; returns the draws and the divergence flags."""
    mcmc = MCMC(
        NUTS(model),
        num_warmup=num_warmup,
        num_samples=num_samples * HYPER_THINNING * thinning,
        thinning=HYPER_THINNING * thinning,
        num_chains=num_chains,
        chain_method="sequential",
        progress_bar=progress,
    )
    mcmc.run(rng_key, *model_args, extra_fields=("diverging",))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    diverging = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
    return samples, diverging


def _optimise_hyperparameters(log_likelihood, terms, scales: HyperScales, fixed: dict) -> dict:
    """Type-II maximum likelihood of the free hyperparameters (log scale, L-BFGS).

    ``log_likelihood(terms, noise_sigma, kernel_scale)`` is the collapsed
    marginal likelihood of the solver's summary ``terms``.
    """
    names = tuple(k for k in ("noise_sigma", "kernel_scale") if fixed[k] is None)
    static = (log_likelihood, names, tuple(sorted(fixed.items())))
    reference = {"noise_sigma": scales.noise, "kernel_scale": scales.kernel}

    def value_and_grad(x):
        value, grad = _type2_value_and_grad(static, terms, jnp.asarray(x))
        return float(value), np.asarray(grad, dtype=float)

    best = None
    # A small grid of starts guards against the (rare) second mode in which the
    # kernel absorbs the noise.
    for factor in (0.1, 1.0, 10.0):
        x0 = np.log([reference[k] * (factor if k == "noise_sigma" else 1 / factor) for k in names])
        result = scipy.optimize.minimize(value_and_grad, x0, jac=True, method="L-BFGS-B")
        if best is None or result.fun < best.fun:
            best = result
    return {**fixed, **{k: float(np.exp(best.x[i])) for i, k in enumerate(names)}}


@partial(jax.jit, static_argnums=0)
def _type2_value_and_grad(static, terms, x):
    log_likelihood, names, fixed = static

    def objective(x):
        values = dict(fixed)
        values.update({k: jnp.exp(x[i]) for i, k in enumerate(names)})
        return -log_likelihood(terms, values["noise_sigma"], values["kernel_scale"])

    return jax.value_and_grad(objective)(x)


def draw_layout(total: int) -> tuple[int, int]:
    """Number and size of the equal batches in which ``total`` kernel draws are made.

    Equal batches (the last padded by repeating a pair): one compiled shape per
    fit, and at most ``num_batches - 1`` wasted draws. ``fit_tiles``' batched
    route uses the same layout, so its random keys match a separate fit's.
    """
    num_batches = -(-total // _DRAW_BATCH)
    return num_batches, -(-total // num_batches)


def _kernel_draws(rng_key, solver, summary, whitened, observed, sigma, scale, dtype):
    """One exact kernel draw per ``(chain, draw)`` hyperparameter pair, batched.

    Returns the kernels and the per-draw solver statistics (empty for 'dense').
    """
    chains, draws = sigma.shape
    total = chains * draws
    shape = tuple(whitened.prior.kernel_shape)
    num_batches, batch = draw_layout(total)
    padded = num_batches * batch
    sigma_flat = np.pad(sigma.reshape(-1), (0, padded - total), mode="edge")
    scale_flat = np.pad(scale.reshape(-1), (0, padded - total), mode="edge")
    out = np.empty((padded,) + shape, dtype=dtype)
    # Device arrays once: the dense basis can be hundreds of MB.
    summary = jax.tree_util.tree_map(jnp.asarray, summary)
    stats = []
    keys = jax.random.split(rng_key, num_batches)
    for i in range(num_batches):
        block = slice(i * batch, (i + 1) * batch)
        kernels, block_stats = _draw_block(
            solver, keys[i], jnp.asarray(sigma_flat[block]), jnp.asarray(scale_flat[block]),
            summary, whitened, observed,
        )  # fmt: skip
        out[block] = np.asarray(kernels)
        stats.append({k: np.asarray(v) for k, v in block_stats.items()})
    merged = {k: np.concatenate([s[k] for s in stats])[:total] for k in stats[0]}
    return out[:total].reshape((chains, draws) + shape), merged


# Module level, with the data as arguments: compiled once per prior, solver and
# shape, then reused by later fits.
@partial(jax.jit, static_argnums=0)
def _draw_block(solver, key, sigma, scale, summary, whitened, observed):
    if solver == "dense":
        latent = conditional_draws(key, summary, whitened, observed, sigma, scale)
        stats = {}
    else:
        latent, count, residual = krylov_draws(key, summary, whitened, observed, sigma, scale)
        stats = {"iterations": count, "residual": residual}
    return scale[:, None, None] * whitened.prior.to_kernel(latent), stats


def _krylov_diagnostics(summary, stats, sigma, scale) -> dict:
    """Solver statistics of the Krylov route, in the result's diagnostics."""
    log_ratio = np.log(scale.reshape(-1) ** 2 / sigma.reshape(-1) ** 2)
    errors = log_det_error(summary, float(np.exp(np.median(log_ratio))))
    spread = float(np.std(log_ratio))
    return {
        "lanczos_steps": int(summary.quad_nodes.shape[0]),
        "slq_probes": int(summary.logdet_nodes.shape[0]),
        "slq_steps": int(summary.logdet_nodes.shape[1]),
        "deflation_rank": int(summary.ritz_values.shape[0]),
        **errors,
        # log p(B) carries half the log-determinant's Monte Carlo error.
        "log_evidence_stderr": 0.5 * errors["logdet_stderr"],
        # The log-determinant's probe error tilts log p by about half its slope
        # error per unit log t; that moves the posterior of log t by this many
        # of its own standard deviations (0 when the hyperparameters are fixed).
        "logdet_shift_in_sd": 0.5 * errors["logdet_slope_stderr"] * spread,
        "cg_rtol": CG_RTOL,
        "cg_iterations_mean": float(np.mean(stats["iterations"])),
        "cg_iterations_max": int(np.max(stats["iterations"])),
        "cg_max_residual": float(np.max(stats["residual"])),
    }
