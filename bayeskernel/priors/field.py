"""Priors of a spatially varying kernel's components (:mod:`bayeskernel.field`).

Each component ``K_p`` is a draw of one linear-Gaussian kernel prior, the
constant one at the fit's kernel scale ``s`` and one of degree ``d`` (a
monomial ``y^a x^b``, ``a + b = d``) at ``ratio**d * s``: higher orders
shrink geometrically, as the terms of a smooth function's Taylor series do.
The ratio is a hyperparameter of the field: how much the kernel changes from
the centre to the edge of the image, relative to its size. The exact route
learns it by evidence over :data:`FIELD_RATIOS`, as ``prior='auto'`` weighs
priors (:mod:`bayeskernel.averaging`). On the kernel-field benchmark the
geometric shrinkage let the evidence choose order 2 for a curved field (one
ratio for every degree gave the quadratic components too broad a prior, and
the evidence order 1), and lowered the error through a star from 0.036 to
0.031.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from bayeskernel.priors.base import LinearGaussianPrior

__all__ = ["FIELD_RATIOS", "FieldPrior", "field_candidates"]

# The varying components' prior scale relative to the constant one: a kernel
# that changes by a tenth, a third or its whole size across the image. On
# the benchmark's fields the evidence puts its weight on 0.1-0.3.
FIELD_RATIOS = (0.1, 0.3, 1.0)
# Polynomial orders a field prior takes (bayeskernel.field's limit; not imported
# from there so that priors stay apart from the linear model).
MAX_ORDER = 3


@dataclass(frozen=True)
class FieldPrior(LinearGaussianPrior):
    """``P`` independent copies of a prior, one per field component.

    Parameters
    ----------
    base : LinearGaussianPrior
        The prior of one kernel.
    num_terms : int
        ``P``, the field's monomials (:func:`bayeskernel.field.num_field_terms`).
    ratio : float
        Prior scale of the degree-1 components relative to the constant one;
        a component of degree ``d`` has ``ratio**d``.
    total_terms : int, optional
        Length of the stack :meth:`to_kernel` returns (default ``num_terms``):
        a field of a lower order inside a higher one's operator, its extra
        components zero, so that fields of several orders share one operator
        and one normal matrix when the evidence compares them.

    Notes
    -----
    The latent vector is ``num_terms`` of the base prior's, component-major;
    :meth:`to_kernel` returns the ``(..., total_terms, kh, kw)`` stack that
    :class:`~bayeskernel.field.FieldOperator` blurs.
    """

    base: LinearGaussianPrior
    num_terms: int
    ratio: float = 0.3
    name: str = ""
    total_terms: int = 0

    def __post_init__(self):
        if not self.base.linear_gaussian:
            raise ValueError(f"a field needs a linear-Gaussian prior; {self.base.name!r} is not")
        valid = [(d + 1) * (d + 2) // 2 for d in range(MAX_ORDER + 1)]
        if self.num_terms not in valid:
            raise ValueError(
                f"num_terms must be the monomial count of a polynomial order, one of {valid}, "
                f"got {self.num_terms!r}"
            )
        if self.total_terms < self.num_terms:
            object.__setattr__(self, "total_terms", self.num_terms)
        if not self.name:
            label = f"{self.base.name} field{self.order}"
            object.__setattr__(
                self, "name", label if self.num_terms == 1 else f"{label} ratio {self.ratio:g}"
            )

    @property
    def kernel_shape(self) -> tuple[int, int]:
        return tuple(self.base.kernel_shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.total_terms,) + self.kernel_shape

    @property
    def order(self) -> int:
        return next(d for d in range(MAX_ORDER + 1) if (d + 1) * (d + 2) // 2 == self.num_terms)

    @property
    def num_latent(self) -> int:
        return self.num_terms * int(self.base.num_latent)

    def latent_scales(self) -> np.ndarray:
        """Each latent's prior scale, ``ratio**degree`` of its component.

        The latent Gram matrix of this prior is that of ratio 1 scaled by these on
        both sides, so fields that differ only in ratio share one.

        Returns
        -------
        (num_latent,) ndarray
        """
        degrees = [d for d in range(self.order + 1) for _ in range(d + 1)]
        scales = np.asarray(self.ratio, np.float64) ** np.asarray(degrees, np.float64)
        return np.repeat(scales, int(self.base.num_latent))

    def _scales(self, dtype) -> jax.Array:
        # ratio ** degree: a component of degree d at ratio^d of the constant one's scale.
        degrees = [d for d in range(self.order + 1) for _ in range(d + 1)]
        scales = np.asarray(self.ratio, np.float64) ** np.asarray(degrees)
        return jnp.asarray(scales, dtype)[:, None, None]

    def to_kernel(self, latent: jax.Array) -> jax.Array:
        parts = latent.reshape(latent.shape[:-1] + (self.num_terms, int(self.base.num_latent)))
        kernels = self.base.to_kernel(parts) * self._scales(latent.dtype)
        missing = self.total_terms - self.num_terms
        if not missing:
            return kernels
        pad = [(0, 0)] * (kernels.ndim - 3) + [(0, missing), (0, 0), (0, 0)]
        return jnp.pad(kernels, pad)

    def to_latent_transpose(self, kernel: jax.Array) -> jax.Array:
        kernel = kernel[..., : self.num_terms, :, :] * self._scales(kernel.dtype)
        parts = self.base.to_latent_transpose(kernel)
        return parts.reshape(parts.shape[:-2] + (self.num_latent,))


def field_candidates(priors, orders, ratios=FIELD_RATIOS) -> list[FieldPrior]:
    """Every prior at every order and (above order 0) every ratio, in one stack.

    Parameters
    ----------
    priors : sequence of LinearGaussianPrior
    orders : sequence of int
        The field orders to weigh; the stack has the highest one's components.
    ratios : sequence of float
    """
    total = (max(orders) + 1) * (max(orders) + 2) // 2
    out = []
    for order in orders:
        terms = (order + 1) * (order + 2) // 2
        for prior in priors:
            for ratio in (1.0,) if order == 0 else ratios:
                out.append(FieldPrior(prior, terms, float(ratio), total_terms=total))
    return out
