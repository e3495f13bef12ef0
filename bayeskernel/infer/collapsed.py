"""The exact route: hyperparameters from their collapsed posterior, exact kernel draws.

Two backends give the same answer (to a reported tolerance):

* ``solver='dense'`` (:mod:`bayeskernel.infer.exact`): one dense
  eigendecomposition of ``W^T W`` or ``W W^T``; exact to rounding.
* ``solver='krylov'`` (:mod:`bayeskernel.infer.krylov`): matrix-free Lanczos
  quadratures for the marginal likelihood and conjugate-gradient
  perturbation-optimisation for the draws; for ``min(n, p)`` beyond a few
  thousand, where the dense eigendecomposition's ``O(r^3)`` dominates.

:func:`run_exact` chains the stages of :mod:`bayeskernel.infer.stages`.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from bayeskernel.catalogue import HYPER_SAMPLERS, SOLVERS
from bayeskernel.forward import ConvolutionOperator
from bayeskernel.infer.progress import Progress
from bayeskernel.infer.stages import (
    DENSE_AUTO_LIMIT,
    choose_solver,
    draw_hyperparameters,
    draw_kernels,
    draw_layout,
    exact_diagnostics,
    hyperparameter_posterior,
    prepare,
    stage_keys,
)
from bayeskernel.model import HyperScales
from bayeskernel.posterior import KernelPosterior
from bayeskernel.priors import LinearGaussianPrior

__all__ = [
    "DENSE_AUTO_LIMIT",
    "HYPER_SAMPLERS",
    "SOLVERS",
    "choose_solver",
    "draw_layout",
    "posterior_from_stages",
    "run_exact",
]


def run_exact(
    operator: ConvolutionOperator | tuple,
    prior: LinearGaussianPrior,
    scales: HyperScales,
    observed,
    rng_key: jax.Array,
    *,
    mask=None,
    observations: tuple | None = None,
    kernel_sum: float | None = None,
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
    sampled = not optimise and (noise_sigma is None or kernel_scale is None)
    probe_key, hyper_key, draw_key = stage_keys(rng_key, sampled)
    with Progress(progress_bar, f"exact {prior.name}") as progress:
        progress.stage("decomposition")
        prepared = prepare(
            operator, prior, observed, probe_key, mask=mask, observations=observations,
            solver=solver, progress=progress.advance, kernel_sum=kernel_sum,
        )  # fmt: skip
        progress.stage("hyperparameters")
        hyper = hyperparameter_posterior(
            prepared, scales, hyper_key, noise_sigma=noise_sigma, kernel_scale=kernel_scale,
            optimise=optimise, hyper_sampler=hyper_sampler,
        )  # fmt: skip
        return posterior_from_stages(
            prepared, hyper, num_chains, num_samples, draw_key, num_warmup=num_warmup,
            thinning=thinning, progress=progress, draws_dtype=draws_dtype,
            method="map" if optimise else "exact",
        )  # fmt: skip


def posterior_from_stages(
    prepared,
    hyper,
    num_chains: int,
    num_samples: int,
    draw_key: jax.Array,
    *,
    hyper_key: jax.Array | None = None,
    num_warmup: int = 500,
    thinning: int = 1,
    progress: Progress | None = None,
    draws_dtype=np.float32,
    method: str = "exact",
) -> KernelPosterior:
    """Draw the hyperparameters, then the kernels, from prepared stages.

    ``hyper_key`` replaces ``hyper``'s own draw key (the model average draws
    each candidate's share with a key of its own).
    """
    progress = progress or Progress(False)
    start = time.perf_counter()
    sigma, scale, hyper_facts, sample_stats = draw_hyperparameters(
        hyper, num_chains, num_samples, draw_key=hyper_key, num_warmup=num_warmup,
        thinning=thinning, progress_bar=progress.enabled,
    )  # fmt: skip
    seconds_hyperparameters = hyper.seconds + time.perf_counter() - start
    progress.stage("kernel draws", total=sigma.size)
    start = time.perf_counter()
    kernels, stats = draw_kernels(
        prepared, sigma, scale, draw_key, dtype=draws_dtype, progress=progress.advance
    )
    timings = {
        "seconds_decomposition": prepared.facts["seconds_decomposition"],
        "seconds_hyperparameters": seconds_hyperparameters,
        "seconds_kernel_draws": time.perf_counter() - start,
    }
    timings["seconds"] = sum(timings.values())
    diagnostics = {**timings, **exact_diagnostics(prepared, sigma, scale, stats), **hyper_facts}
    return KernelPosterior(
        kernel_draws=kernels,
        noise_sigma_draws=sigma,
        kernel_scale_draws=scale,
        method=method,
        prior=prepared.prior.name,
        mode=prepared.mode,
        diagnostics=diagnostics,
        sample_stats=sample_stats,
    )
