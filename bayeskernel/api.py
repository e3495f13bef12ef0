"""``fit``: the one entry point most users need."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from bayeskernel._validation import check_fit_inputs
from bayeskernel.forward import make_operator
from bayeskernel.model import default_hyper_scales
from bayeskernel.posterior import KernelPosterior
from bayeskernel.priors import LinearGaussianPrior, resolve_prior

__all__ = ["fit", "METHODS"]

METHODS = ("exact", "map", "nuts", "svi")


def fit(
    A,
    B,
    kernel_shape: tuple[int, int],
    *,
    mode: Literal["same", "full", "valid"] = "same",
    prior: str | LinearGaussianPrior = "smooth",
    method: Literal["exact", "map", "nuts", "svi"] = "exact",
    mask=None,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
    num_steps: int = 5000,
    noise_sigma: float | None = None,
    kernel_scale: float | None = None,
    centered: bool | None = None,
    seed: int | jax.Array = 0,
    progress_bar: bool = True,
    draws_dtype=np.float32,
) -> KernelPosterior:
    """Posterior of the kernel ``K`` in ``B = convolve2d(A, K, mode) + noise``.

    Parameters
    ----------
    A : (M, N) array_like
        The known input (binary patterns are typical; any real array works).
    B : array_like
        The observed output, of shape ``convolve2d(A, K, mode).shape``. NaN marks
        unobserved pixels.
    kernel_shape : (int, int)
        Shape of ``K``; may exceed ``A``'s shape.
    mode : {'same', 'full', 'valid'}
        Cropping, exactly as :func:`scipy.signal.convolve2d`.
    prior : {'smooth', 'smooth2', 'iid'} or LinearGaussianPrior
        Kernel prior (see :mod:`bayeskernel.priors`).
    method : {'exact', 'map', 'nuts', 'svi'}
        ``'exact'`` (default): hyperparameters by NUTS on their marginal
        posterior, kernel draws from the exact Gaussian conditional. ``'map'``:
        hyperparameters by type-II maximum likelihood, then exact draws.
        ``'nuts'``: NUTS on the full model. ``'svi'``: low-rank Gaussian guide.
    mask : (H, W) bool array_like, optional
        ``True`` where ``B`` is observed.
    num_warmup, num_samples, num_chains : int
        Sampler settings (``num_samples`` per chain; SVI draws ``num_samples``).
    num_steps : int
        Optimisation steps of SVI.
    noise_sigma, kernel_scale : float, optional
        Hold a hyperparameter fixed instead of learning it.
    centered : bool, optional
        Parameterisation for NUTS/SVI; default: centred when there are at
        least as many observed pixels as kernel entries.
    seed : int or jax PRNGKey
        Same seed, same result.
    progress_bar : bool
    draws_dtype : dtype
        Storage dtype of the kernel draws (float32 halves memory).

    Returns
    -------
    KernelPosterior

    Notes
    -----
    Inference runs inside ``jax.enable_x64(True)``: a scoped switch, so the
    caller's global JAX configuration is left untouched.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for name, value in (("num_samples", num_samples), ("num_chains", num_chains)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("noise_sigma", noise_sigma), ("kernel_scale", kernel_scale)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number or None, got {value!r}")
    image, observed, kernel_shape, observed_mask = check_fit_inputs(A, B, kernel_shape, mode, mask)
    prior = resolve_prior(prior, kernel_shape)
    scales = default_hyper_scales(image, observed[observed_mask] if observed_mask is not None else observed, kernel_shape)
    num_observed = observed.size if observed_mask is None else int(observed_mask.sum())
    if centered is None:
        centered = num_observed >= prior.num_latent

    with jax.enable_x64(True):
        rng_key = jax.random.PRNGKey(seed) if np.ndim(seed) == 0 else jnp.asarray(seed)
        operator = make_operator(image, kernel_shape, mode)
        data = jnp.asarray(observed)
        jmask = None if observed_mask is None else jnp.asarray(observed_mask)
        common = dict(
            mask=jmask,
            noise_sigma=noise_sigma,
            kernel_scale=kernel_scale,
            progress_bar=progress_bar,
            draws_dtype=draws_dtype,
        )
        if method == "nuts":
            from bayeskernel.infer.nuts import run_nuts

            posterior = run_nuts(
                operator, prior, scales, data, rng_key,
                num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                centered=centered, **common,
            )  # fmt: skip
        elif method == "svi":
            from bayeskernel.infer.svi import run_svi

            posterior = run_svi(
                operator, prior, scales, data, rng_key,
                num_steps=num_steps, num_samples=num_samples, centered=centered, **common,
            )  # fmt: skip
        else:
            from bayeskernel.infer.exact import run_exact

            posterior = run_exact(
                operator, prior, scales, data, rng_key,
                num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                optimise=(method == "map"), **common,
            )  # fmt: skip
    posterior.image = image
    posterior.observed = np.where(observed_mask, observed, np.nan) if observed_mask is not None else observed
    return posterior
