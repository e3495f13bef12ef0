"""Low-rank (separable when rank 1) kernels: ``K = s * sum_i u_i v_i^T / sqrt(rank)``."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bayeskernel.priors.base import KernelPrior

__all__ = ["LowRankPrior"]


@dataclass(frozen=True, eq=False)
class LowRankPrior(KernelPrior):
    """Sum of ``rank`` outer products of Gaussian row and column profiles.

    A ``P x Q`` kernel then has ``rank (P + Q)`` unknowns instead of ``P Q``: the
    question's own suggestion for supports larger than the data allow. With
    ``u, v ~ N(0, 1)`` and the ``1/sqrt(rank)`` factor, entries have prior
    variance ``s^2``, as for the other priors. The factors are not identifiable
    (signs, rotations), the kernel is; judge convergence on the kernel.

    Parameters
    ----------
    kernel_shape : (int, int)
    rank : int
    """

    kernel_shape: tuple[int, int]
    rank: int = 1
    name: str = "lowrank"

    def __post_init__(self):
        if not (isinstance(self.rank, int) and self.rank >= 1):
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")

    def sample(self, scales) -> jax.Array:
        scale = numpyro.sample("kernel_scale", dist.HalfCauchy(scales.kernel))
        h, w = self.kernel_shape
        rows = numpyro.sample(
            "row_factors", dist.Normal(0.0, 1.0).expand([self.rank, h]).to_event(2)
        )
        cols = numpyro.sample(
            "col_factors", dist.Normal(0.0, 1.0).expand([self.rank, w]).to_event(2)
        )
        return scale * jnp.einsum("ri,rj->ij", rows, cols) / jnp.sqrt(self.rank)
