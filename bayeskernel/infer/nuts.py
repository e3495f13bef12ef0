"""NUTS on the full model (kernel latents and both hyperparameters)."""

from __future__ import annotations

import time
from functools import partial

import jax
import numpy as np
from numpyro.infer import MCMC, NUTS

from bayeskernel.forward import ConvolutionOperator
from bayeskernel.infer.common import assemble_draws
from bayeskernel.model import HyperScales, kernel_model
from bayeskernel.observation import background_samples
from bayeskernel.posterior import KernelPosterior
from bayeskernel.priors import KernelPrior

__all__ = ["run_nuts"]

# A dense mass matrix costs O(d^2) memory and an O(d^3) factorisation per
# adaptation window; beyond this many latents we fall back to a diagonal one.
_DENSE_MASS_LIMIT = 2500


def run_nuts(
    operator: ConvolutionOperator,
    prior: KernelPrior,
    scales: HyperScales,
    observed: jax.Array,
    rng_key: jax.Array,
    *,
    mask: jax.Array | None = None,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
    noise_sigma: float | None = None,
    kernel_scale: float | None = None,
    centered: bool = False,
    noise_per_pair: bool = False,
    nuisance: tuple | None = None,
    thinning: int = 1,
    dense_mass: bool | None = None,
    target_accept_prob: float = 0.8,
    progress_bar: bool = True,
    draws_dtype=np.float32,
) -> KernelPosterior:
    """Sample the full model with NUTS and return a :class:`KernelPosterior`.

    ``dense_mass=None`` uses a dense mass matrix up to 2,500 latents: the
    likelihood correlates neighbouring kernel entries strongly.
    """
    if dense_mass is None:
        dense_mass = getattr(prior, "num_latent", 0) <= _DENSE_MASS_LIMIT
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
    kernel = NUTS(model, dense_mass=dense_mass, target_accept_prob=target_accept_prob)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples * thinning,
        thinning=thinning,
        num_chains=num_chains,
        chain_method="sequential",
        progress_bar=progress_bar,
    )
    start = time.perf_counter()
    mcmc.run(rng_key, observed, mask, extra_fields=("diverging", "num_steps"))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    # After np.asarray: JAX dispatches asynchronously, so the run may not be over before.
    seconds = time.perf_counter() - start
    kernels, scale, sigma, parameters = assemble_draws(
        prior, scales, samples, noise_sigma, kernel_scale, centered, draws_dtype
    )
    return KernelPosterior(
        kernel_draws=kernels,
        noise_sigma_draws=sigma,
        kernel_scale_draws=scale,
        method="nuts",
        prior=prior.name,
        mode=(operator[0] if isinstance(operator, tuple) else operator).mode,
        diagnostics={
            "seconds": seconds,
            "dense_mass": dense_mass,
            "centered": centered,
            "thinning": thinning,
            "mean_steps_per_draw": float(extra["num_steps"].mean()),
        },
        sample_stats={"diverging": extra["diverging"], "n_steps": extra["num_steps"]},
        parameter_draws=parameters,
        background_draws=background_samples(
            samples, len(operator) if isinstance(operator, tuple) else 1
        ),
    )
