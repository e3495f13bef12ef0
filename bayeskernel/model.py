"""The NumPyro model: prior-whitened kernel, learned noise sd, Gaussian likelihood.

.. math::

    s &\\sim \\mathrm{HalfCauchy}(s_0), \\qquad \\sigma \\sim \\mathrm{HalfNormal}(\\sigma_0) \\\\
    z &\\sim \\mathcal N(0, I), \\qquad K = s\\, T z \\\\
    B &\\sim \\mathcal N(\\mathrm{conv}(A, K), \\sigma^2 I)

``T`` is the prior's whitening map (:mod:`bayeskernel.priors`). ``s_0`` and
``sigma_0`` come from the data (:func:`default_hyper_scales`), so the model is
invariant to the units of ``A`` and ``B``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayeskernel.forward import ConvolutionOperator
from bayeskernel.priors import KernelPrior, LinearGaussianPrior

__all__ = [
    "HyperScales",
    "check_hyper_scales",
    "collapsed_model",
    "default_hyper_scales",
    "kernel_model",
    "sample_hyperparameters",
]


class HyperScales(NamedTuple):
    """Scales of the hyperpriors (same units as ``B`` and the kernel)."""

    noise: float
    kernel: float


def default_hyper_scales(
    image: np.ndarray, observed: np.ndarray, kernel_shape: tuple[int, int]
) -> HyperScales:
    """Weakly informative scales set from the data.

    The noise sd cannot exceed the spread of ``B`` by much, so
    ``sigma ~ HalfNormal(rms(B))``. A kernel of iid entries of size ``s`` gives
    outputs of rms about ``s * rms(A) * sqrt(n)``, ``n`` the number of image
    pixels under the kernel, so ``s_0 = rms(B) / (rms(A) sqrt(n))``; the
    half-Cauchy's heavy tail lets the data overrule it by orders of magnitude.
    """
    observed = np.asarray(observed, dtype=float)
    finite = observed[np.isfinite(observed)]
    rms_b = float(np.sqrt(np.mean(finite**2))) or 1.0
    rms_a = float(np.sqrt(np.mean(np.asarray(image, dtype=float) ** 2))) or 1.0
    overlap = min(int(np.prod(kernel_shape)), int(np.asarray(image).size))
    return HyperScales(noise=rms_b, kernel=rms_b / (rms_a * np.sqrt(overlap)))


def check_hyper_scales(value) -> HyperScales:
    """``HyperScales`` from a user's ``(noise, kernel)`` pair, or a ValueError naming it."""
    try:
        noise, kernel = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"hyper_scales must be HyperScales(noise, kernel) or a pair of numbers, got {value!r}"
        ) from None
    if not (np.isfinite(noise) and noise > 0 and np.isfinite(kernel) and kernel > 0):
        raise ValueError(f"hyper_scales must be positive and finite, got {(noise, kernel)}")
    return HyperScales(noise=noise, kernel=kernel)


def sample_hyperparameters(
    scales: HyperScales,
    *,
    noise_sigma: float | None = None,
    kernel_scale: float | None = None,
    num_noise: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Sample (or hold fixed, when given) the kernel scale and the noise sd.

    ``num_noise``: one noise sd per image pair (a vector site) instead of one.
    """
    if kernel_scale is None:
        kernel_scale = numpyro.sample("kernel_scale", dist.HalfCauchy(scales.kernel))
    if noise_sigma is None:
        noise_sigma = _sample_noise(scales, num_noise)
    return jnp.asarray(kernel_scale), jnp.asarray(noise_sigma)


def _sample_noise(scales: HyperScales, num_noise: int | None) -> jax.Array:
    if num_noise is None:
        return numpyro.sample("noise_sigma", dist.HalfNormal(scales.noise))
    return numpyro.sample(
        "noise_sigma", dist.HalfNormal(scales.noise).expand([num_noise]).to_event(1)
    )


def kernel_model(
    operator: ConvolutionOperator,
    prior: KernelPrior,
    scales: HyperScales,
    observed: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    noise_sigma: float | None = None,
    kernel_scale: float | None = None,
    centered: bool = False,
    noise_per_pair: bool = False,
    nuisance: tuple | None = None,
) -> None:
    """Full model over the latent kernel and both hyperparameters.

    Parameters
    ----------
    operator : ConvolutionOperator or tuple of them
        Blur by the known image; a tuple for several image pairs sharing one
        kernel and one noise sd (then ``observed`` and ``mask`` are tuples too).
    prior : KernelPrior
        Linear-Gaussian priors are sampled prior-whitened (``kernel_latent``);
        others through their own :meth:`~bayeskernel.priors.KernelPrior.sample`.
    scales : HyperScales
    observed : (H, W) array, optional
        ``B``; ``None`` samples from the prior predictive.
    mask : (H, W) bool array, optional
        ``True`` where ``B`` is observed.
    noise_sigma, kernel_scale : float, optional
        Hold a hyperparameter fixed instead of learning it.
    centered : bool
        ``False`` (default): sample ``z ~ N(0, I)`` and scale it, best when the
        prior matters (more kernel entries than pixels). ``True``: sample
        ``z ~ N(0, s^2 I)``, best when the data pin the kernel down.
    noise_per_pair : bool
        With several pairs: one noise sd per pair (site ``noise_sigma`` of
        shape ``(pairs,)``) instead of one shared.
    nuisance : tuple of PairTerms, optional
        Per pair (:func:`bayeskernel.observation.model_terms`): a background
        block (site ``background``, or ``background_<i>`` with several pairs)
        and the pixels' noise sd relative to ``sigma``.
    """
    num_noise = len(operator) if noise_per_pair else None
    if not isinstance(prior, LinearGaussianPrior):
        if noise_sigma is None:
            noise_sigma = _sample_noise(scales, num_noise)
        _likelihood(operator, prior.sample(scales), noise_sigma, observed, mask, nuisance)
        return
    scale, sigma = sample_hyperparameters(
        scales, noise_sigma=noise_sigma, kernel_scale=kernel_scale, num_noise=num_noise
    )
    if centered:
        latent = numpyro.sample(
            "kernel_latent", dist.Normal(0.0, scale).expand([prior.num_latent]).to_event(1)
        )
        kernel = prior.to_kernel(latent)
    else:
        latent = numpyro.sample(
            "kernel_latent", dist.Normal(0.0, 1.0).expand([prior.num_latent]).to_event(1)
        )
        kernel = scale * prior.to_kernel(latent)
    _likelihood(operator, kernel, sigma, observed, mask, nuisance)


def _likelihood(operator, kernel, sigma, observed, mask, nuisance=None) -> None:
    """Gaussian likelihood of ``B`` around the blurred kernel, masked pixels left out.

    With tuples (several pairs) each pair is its own site ``observed_<i>``.
    """
    if isinstance(operator, tuple):
        observed = observed if observed is not None else (None,) * len(operator)
        mask = mask if mask is not None else (None,) * len(operator)
        nuisance = nuisance if nuisance is not None else (None,) * len(operator)
        for index, parts in enumerate(zip(operator, observed, mask, nuisance, strict=True)):
            # A vector sigma holds one noise sd per pair.
            pair_sigma = sigma[index] if jnp.ndim(sigma) == 1 else sigma
            _pair_likelihood(f"observed_{index}", kernel, pair_sigma, *parts, f"_{index}")
    else:
        terms = None if nuisance is None else nuisance[0]
        _pair_likelihood("observed", kernel, sigma, operator, observed, mask, terms, "")


def _pair_likelihood(name, kernel, sigma, operator, observed, mask, terms=None, suffix=""):
    mean = operator(kernel)
    if terms is not None and terms.design is not None:
        beta = numpyro.sample(
            "background" + suffix,
            dist.Normal(0.0, terms.prior_scale).expand([terms.design.shape[-1]]).to_event(1),
        )
        mean = mean + terms.design @ beta
    if terms is not None and terms.noise_sd is not None:
        sigma = sigma * terms.noise_sd
    likelihood = dist.Normal(mean, sigma)
    if mask is not None:
        likelihood = likelihood.mask(mask)
    numpyro.sample(name, likelihood.to_event(2), obs=observed)


def collapsed_model(
    summary,
    scales: HyperScales,
    *,
    log_likelihood,
    noise_sigma: float | None = None,
    kernel_scale: float | None = None,
) -> None:
    """Hyperparameters alone, the kernel integrated out analytically.

    ``log_likelihood(summary, noise_sigma, kernel_scale)`` is ``log p(B | sigma, s)``
    from a solver's summary of the data (see :mod:`bayeskernel.infer.exact` and
    :mod:`bayeskernel.infer.krylov`). The summary is a model argument rather
    than a closure so that compiled potentials are reused across fits. Any
    hyperprior written here works with the exact route.
    """
    scale, sigma = sample_hyperparameters(
        scales, noise_sigma=noise_sigma, kernel_scale=kernel_scale
    )
    numpyro.factor("marginal_likelihood", log_likelihood(summary, sigma, scale))
