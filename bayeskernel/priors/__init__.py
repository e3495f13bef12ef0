"""Gaussian kernel priors, written as whitening maps.

A *linear-Gaussian* prior says ``kernel = kernel_scale * to_kernel(z)`` with
``z ~ N(0, I)`` of length ``num_latent``; ``to_kernel`` is linear and fixed, and
``kernel_scale`` is learned. Every route works from that one map: NUTS and SVI
sample ``z`` (prior-whitened, so the sampler sees unit scales); the exact route
builds ``H @ to_kernel`` and integrates ``z`` out in closed form.

Priors are normalised so that the average prior variance of a kernel entry is
``kernel_scale**2``: the scale reads as "typical size of an entry".

To write your own, subclass :class:`LinearGaussianPrior` and implement
``to_kernel`` (any linear JAX function of the latent vector); the transpose
comes from :func:`jax.linear_transpose`.
"""

from __future__ import annotations

from bayeskernel.priors.base import KernelPrior, LinearGaussianPrior
from bayeskernel.priors.constrained import ConstrainedPrior
from bayeskernel.priors.gaussian import IIDPrior, SmoothPrior
from bayeskernel.priors.lowrank import LowRankPrior
from bayeskernel.priors.parametric import FAMILIES, ParametricPrior
from bayeskernel.priors.radial import RadialPrior

__all__ = [
    "FAMILIES",
    "ConstrainedPrior",
    "IIDPrior",
    "KernelPrior",
    "LinearGaussianPrior",
    "LowRankPrior",
    "ParametricPrior",
    "RadialPrior",
    "SmoothPrior",
    "resolve_prior",
]

_NAMED = {"iid": IIDPrior, "smooth": SmoothPrior, "radial": RadialPrior}


def resolve_prior(prior, kernel_shape: tuple[int, int]) -> KernelPrior:
    """Turn a name or a prior instance into a prior for ``kernel_shape``.

    Names: ``'smooth'``, ``'smooth2'``, ``'iid'``, ``'radial'`` (linear-Gaussian),
    ``'lowrank'`` (rank 1), and the parametric families ``'gaussian'``,
    ``'moffat'``, ``'airy'``, ``'power_law'``.

    Raises
    ------
    ValueError
        If the name is unknown or an instance's ``kernel_shape`` differs.
    """
    kernel_shape = tuple(int(s) for s in kernel_shape)
    if isinstance(prior, str):
        if prior == "smooth2":
            return SmoothPrior(kernel_shape, order=2)
        if prior == "lowrank":
            return LowRankPrior(kernel_shape)
        if prior in FAMILIES:
            return ParametricPrior(kernel_shape, family=prior)
        if prior not in _NAMED:
            names = sorted([*_NAMED, "smooth2", "lowrank", *FAMILIES])
            raise ValueError(
                f"prior must be one of {names} or a KernelPrior instance, got {prior!r}"
            )
        return _NAMED[prior](kernel_shape)
    if not isinstance(prior, KernelPrior):
        raise TypeError(
            f"prior must be a name or a KernelPrior instance, got {type(prior).__name__}"
        )
    if tuple(prior.kernel_shape) != kernel_shape:
        raise ValueError(
            f"prior.kernel_shape {tuple(prior.kernel_shape)} differs from kernel_shape "
            f"{kernel_shape}"
        )
    return prior
