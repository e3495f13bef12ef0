"""Stochastic variational inference with a low-rank multivariate normal guide."""

from __future__ import annotations

import time
from functools import partial

import jax
import numpy as np
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal
from numpyro.optim import Adam

from bayeskernel.forward import ConvolutionOperator
from bayeskernel.infer.common import assemble_draws
from bayeskernel.model import HyperScales, kernel_model
from bayeskernel.observation import background_samples
from bayeskernel.posterior import KernelPosterior
from bayeskernel.priors import KernelPrior

__all__ = ["run_svi"]


def run_svi(
    operator: ConvolutionOperator,
    prior: KernelPrior,
    scales: HyperScales,
    observed: jax.Array,
    rng_key: jax.Array,
    *,
    mask: jax.Array | None = None,
    num_steps: int = 5000,
    num_samples: int = 1000,
    learning_rate: float = 0.01,
    rank: int | None = None,
    noise_sigma: float | None = None,
    kernel_scale: float | None = None,
    centered: bool = True,
    noise_per_pair: bool = False,
    nuisance: tuple | None = None,
    progress_bar: bool = True,
    draws_dtype=np.float32,
) -> KernelPosterior:
    """Fit a low-rank Gaussian guide by maximising the ELBO; draw from it.

    The guide keeps correlations between kernel entries through a rank-``rank``
    covariance factor (default ``min(50, sqrt(d))``) plus a diagonal. Its
    intervals are approximate; see ``docs/benchmarks.md`` for their coverage.
    """
    model = partial(
        kernel_model,
        operator,
        prior,
        scales,
        noise_sigma=noise_sigma,
        kernel_scale=kernel_scale,
        centered=centered,
        noise_per_pair=noise_per_pair,
        nuisance=nuisance,
    )
    if rank is None:
        size = getattr(prior, "num_latent", int(np.prod(prior.kernel_shape)))
        rank = int(min(50, max(2, np.sqrt(size))))
    guide = AutoLowRankMultivariateNormal(model, rank=rank)
    svi = SVI(model, guide, Adam(learning_rate), Trace_ELBO())
    fit_key, draw_key = jax.random.split(rng_key)
    start = time.perf_counter()
    result = svi.run(fit_key, num_steps, observed, mask, progress_bar=progress_bar)
    draws = guide.sample_posterior(draw_key, result.params, sample_shape=(1, num_samples))
    draws = {k: np.asarray(v) for k, v in draws.items()}
    seconds = time.perf_counter() - start  # after np.asarray: JAX runs asynchronously
    kernels, scale, sigma, parameters = assemble_draws(
        prior, scales, draws, noise_sigma, kernel_scale, centered, draws_dtype
    )
    losses = np.asarray(result.losses)
    return KernelPosterior(
        kernel_draws=kernels,
        noise_sigma_draws=sigma,
        kernel_scale_draws=scale,
        method="svi",
        prior=prior.name,
        mode=(operator[0] if isinstance(operator, tuple) else operator).mode,
        diagnostics={
            "seconds": seconds,
            "num_steps": num_steps,
            "rank": rank,
            "final_loss": float(losses[-1]),
            # Relative change of the ELBO over the last tenth of the steps.
            "loss_change_last_10pct": float(
                abs(losses[-1] - losses[-max(2, num_steps // 10)]) / (abs(losses[-1]) + 1e-300)
            ),
        },
        sample_stats={},
        parameter_draws=parameters,
        background_draws=background_samples(
            draws, len(operator) if isinstance(operator, tuple) else 1
        ),
    )
