"""Kernel priors.

Linear-Gaussian priors (exact route): :class:`IIDPrior`, :class:`SmoothPrior`,
:class:`RadialPrior`. General priors (NUTS, SVI): :class:`EllipticalRadialPrior`,
:class:`ParametricPrior`,
:class:`LowRankPrior`, :class:`ConstrainedPrior`. The interfaces for writing
your own are in :mod:`bayeskernel.priors.base`.
"""

from __future__ import annotations

from functools import partial

from bayeskernel.priors.base import KernelPrior, LinearGaussianPrior
from bayeskernel.priors.constrained import ConstrainedPrior
from bayeskernel.priors.gaussian import IIDPrior, SmoothPrior
from bayeskernel.priors.lowrank import LowRankPrior, effective_rank, rank_probabilities
from bayeskernel.priors.parametric import FAMILIES, ParametricPrior
from bayeskernel.priors.radial import EllipticalRadialPrior, RadialPrior

__all__ = [
    "FAMILIES",
    "ConstrainedPrior",
    "EllipticalRadialPrior",
    "IIDPrior",
    "KernelPrior",
    "LinearGaussianPrior",
    "LowRankPrior",
    "ParametricPrior",
    "RadialPrior",
    "SmoothPrior",
    "effective_rank",
    "rank_probabilities",
    "resolve_prior",
]

# Largest rank that prior="lowrank_auto" lets the shrinkage prior use.
AUTO_MAX_RANK = 5

_NAMED = {"iid": IIDPrior, "radial": RadialPrior, "radial1": partial(RadialPrior, order=1)}
# name -> (order, boundary) of SmoothPrior.
_SMOOTH = {
    "smooth": (1, "zero"),
    "smooth2": (2, "zero"),
    "smooth_reflect": (1, "reflect"),
    "smooth2_reflect": (2, "reflect"),
}


def resolve_prior(prior, kernel_shape: tuple[int, int]) -> KernelPrior:
    """Turn a name or a prior instance into a prior for ``kernel_shape``.

    Names: ``'smooth'``, ``'smooth2'`` (zero boundary), ``'smooth_reflect'``,
    ``'smooth2_reflect'``, ``'iid'``, ``'radial'``, ``'radial1'`` (the radial
    profile with a first-order walk, for profiles with steps; all
    linear-Gaussian), ``'lowrank'`` (rank 1), ``'lowrank_auto'`` (rank learned
    up to 5 by a shrinkage prior; read it with :func:`effective_rank`), the
    parametric families ``'gaussian'``,
    ``'moffat'``, ``'airy'``, ``'power_law'``, and each family with a smooth
    nonparametric residual, e.g. ``'gaussian+residual'``.

    Raises
    ------
    ValueError
        If the name is unknown or an instance's ``kernel_shape`` differs.
    """
    kernel_shape = tuple(int(s) for s in kernel_shape)
    if isinstance(prior, str):
        if prior in _SMOOTH:
            order, boundary = _SMOOTH[prior]
            return SmoothPrior(kernel_shape, order=order, boundary=boundary)
        if prior == "lowrank":
            return LowRankPrior(kernel_shape)
        if prior == "lowrank_auto":
            rank = min(AUTO_MAX_RANK, *kernel_shape)
            return LowRankPrior(kernel_shape, rank=rank, shrinkage=True)
        if prior in FAMILIES:
            return ParametricPrior(kernel_shape, family=prior)
        family = prior.removesuffix("+residual")
        if prior.endswith("+residual") and family in FAMILIES:
            return ParametricPrior(kernel_shape, family=family, residual=True)
        if prior not in _NAMED:
            names = sorted(
                [
                    *_NAMED,
                    *_SMOOTH,
                    "lowrank",
                    "lowrank_auto",
                    *FAMILIES,
                    "<family>+residual",
                ]
            )
            raise ValueError(
                f"prior must be one of {names} or a KernelPrior instance (fit also takes "
                f"'auto' or a list of linear-Gaussian priors), got {prior!r}"
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
