"""Kernel priors.

Linear-Gaussian priors (exact route): :class:`IIDPrior`, :class:`SmoothPrior`,
:class:`RadialPrior`, :class:`SumPrior` (e.g. a radial profile with a smooth
residual), and :class:`FieldPrior` (the components of a spatially
varying kernel). General priors (NUTS, SVI): :class:`EllipticalRadialPrior`,
:class:`ParametricPrior`,
:class:`LowRankPrior`, :class:`ConstrainedPrior`. The interfaces for writing
your own are in :mod:`bayeskernel.priors.base`.
"""

from __future__ import annotations

from bayeskernel.catalogue import FAMILIES, PRIORS, RESIDUAL_SUFFIX, prior_names
from bayeskernel.priors.base import KernelPrior, LinearGaussianPrior
from bayeskernel.priors.constrained import ConstrainedPrior
from bayeskernel.priors.field import FieldPrior
from bayeskernel.priors.gaussian import IIDPrior, SmoothPrior
from bayeskernel.priors.lowrank import LowRankPrior, effective_rank, rank_probabilities
from bayeskernel.priors.parametric import ParametricPrior
from bayeskernel.priors.radial import EllipticalRadialPrior, RadialPrior
from bayeskernel.priors.sum import SumPrior, radial_residual

__all__ = [
    "FAMILIES",
    "ConstrainedPrior",
    "EllipticalRadialPrior",
    "FieldPrior",
    "IIDPrior",
    "KernelPrior",
    "LinearGaussianPrior",
    "LowRankPrior",
    "PRIORS",
    "ParametricPrior",
    "RadialPrior",
    "SmoothPrior",
    "SumPrior",
    "effective_rank",
    "prior_names",
    "radial_residual",
    "rank_probabilities",
    "resolve_prior",
]


def resolve_prior(prior, kernel_shape: tuple[int, int]) -> KernelPrior:
    """Turn a name or a prior instance into a prior for ``kernel_shape``.

    Names: ``'smooth'``, ``'smooth2'`` (zero boundary), ``'smooth_reflect'``,
    ``'smooth2_reflect'``, ``'iid'``, ``'radial'``, ``'radial1'`` (the radial
    profile with a first-order walk, for profiles with steps),
    ``'radial+smooth'`` and ``'radial+smooth2'`` (the radial profile plus a
    smooth residual; all linear-Gaussian), ``'lowrank'`` (rank 1), ``'lowrank_auto'`` (rank learned
    up to 5 by a shrinkage prior; read it with :func:`effective_rank`), the
    parametric families ``'gaussian'``,
    ``'moffat'``, ``'airy'``, ``'power_law'``, and each family with a smooth
    nonparametric residual, e.g. ``'gaussian+residual'``.

    Parameters
    ----------
    prior : str or KernelPrior
        A name of :func:`prior_names` (``'<family>+residual'`` for each family of
        :data:`FAMILIES`), or an instance, returned as it is.
    kernel_shape : (int, int)
        Shape of the kernel the prior is for.

    Returns
    -------
    KernelPrior
        Its ``kernel_shape`` is ``kernel_shape``.

    Raises
    ------
    ValueError
        If the name is unknown or an instance's ``kernel_shape`` differs.
    TypeError
        If ``prior`` is neither a name nor a :class:`KernelPrior`.
    """
    kernel_shape = tuple(int(s) for s in kernel_shape)
    if isinstance(prior, str):
        if prior in PRIORS:
            return PRIORS[prior].build(kernel_shape)
        family = prior.removesuffix(RESIDUAL_SUFFIX)
        if prior.endswith(RESIDUAL_SUFFIX) and family in FAMILIES:
            return ParametricPrior(kernel_shape, family=family, residual=True)
        raise ValueError(
            f"prior must be one of {prior_names()} or a KernelPrior instance (fit also takes "
            f"'auto' or a list of linear-Gaussian priors), got {prior!r}"
        )
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
