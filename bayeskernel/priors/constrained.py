"""Positivity and unit sum on top of a Gaussian prior, for NUTS and SVI."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayeskernel.priors.base import KernelPrior, LinearGaussianPrior

__all__ = ["ConstrainedPrior"]


@dataclass(frozen=True, eq=False)
class ConstrainedPrior(KernelPrior):
    """A linear-Gaussian prior made positive and/or summing to one.

    * ``positive=True``: the *log* kernel has the base prior,
      ``K = exp(level + s T z)``, with ``level ~ N(log s0, 3)``; every draw is
      strictly positive (optics, densities).
    * ``unit_sum=True``: each draw is normalised to sum to one — divided by its
      sum when positive, shifted by a constant otherwise (the projection of the
      Gaussian onto the plane ``sum K = 1``).

    Neither is linear-Gaussian any more, so these run with ``method='nuts'``
    (the default for them) or ``'svi'``.

    Parameters
    ----------
    base : LinearGaussianPrior
        The correlation structure, e.g. ``SmoothPrior(shape)``.
    positive, unit_sum : bool
    """

    base: LinearGaussianPrior
    positive: bool = True
    unit_sum: bool = False

    def __post_init__(self):
        if not isinstance(self.base, LinearGaussianPrior):
            raise TypeError("base must be a LinearGaussianPrior (e.g. SmoothPrior(shape))")
        if not (self.positive or self.unit_sum):
            raise ValueError("ConstrainedPrior needs positive=True or unit_sum=True")

    @property
    def kernel_shape(self) -> tuple[int, int]:  # type: ignore[override]
        return tuple(self.base.kernel_shape)

    @property
    def name(self) -> str:  # type: ignore[override]
        parts = [self.base.name] + ["positive"] * self.positive + ["unit_sum"] * self.unit_sum
        return "+".join(parts)

    def sample(self, scales) -> jax.Array:
        latent = numpyro.sample(
            "kernel_latent", dist.Normal(0.0, 1.0).expand([self.base.num_latent]).to_event(1)
        )
        if self.positive:
            # The log kernel varies by O(1) across entries, so its scale is O(1).
            spread = numpyro.sample("log_kernel_scale", dist.HalfNormal(2.0))
            level = numpyro.sample("log_kernel_level", dist.Normal(np.log(scales.kernel), 3.0))
            kernel = jnp.exp(level + spread * self.base.to_kernel(latent))
            return kernel / jnp.sum(kernel) if self.unit_sum else kernel
        scale = numpyro.sample("kernel_scale", dist.HalfCauchy(scales.kernel))
        kernel = scale * self.base.to_kernel(latent)
        return kernel + (1.0 - jnp.sum(kernel)) / kernel.size
