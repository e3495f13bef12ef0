"""Parametric kernel families with a handful of parameters, for NUTS.

Each family is a :class:`KernelPrior`: weakly informative priors on its
parameters, scaled to the kernel's size and the data, and a pure function
from parameters to the kernel. Parameters appear in the posterior's
``parameter_draws``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import bessel_jn

from bayeskernel.catalogue import FAMILIES
from bayeskernel.priors.base import KernelPrior
from bayeskernel.priors.gaussian import SmoothPrior

__all__ = ["FAMILIES", "ParametricPrior"]


def _offsets(shape, centre):
    rows = jnp.arange(shape[0]) - centre[0]
    cols = jnp.arange(shape[1]) - centre[1]
    return jnp.meshgrid(rows, cols, indexing="ij")


def family_kernel(family: str, params: dict, shape, centre) -> jax.Array:
    """Evaluate a family on the pixel grid; ``params`` as sampled by the prior."""
    y, x = _offsets(shape, centre)
    amplitude = params["amplitude"]
    if family == "gaussian":
        c, s = jnp.cos(params["angle"]), jnp.sin(params["angle"])
        u, v = c * y + s * x, -s * y + c * x
        return amplitude * jnp.exp(
            -0.5 * ((u / params["width"]) ** 2 + (v / params["width_2"]) ** 2)
        )
    r2 = x**2 + y**2
    if family == "moffat":
        return amplitude * (1 + r2 / params["width"] ** 2) ** (-params["beta"])
    if family == "airy":
        # Airy disk (2 J1(q) / q)^2, q = 3.8317 r / first_zero (first zero of J1).
        q = 3.8317059702 * jnp.sqrt(r2) / params["width"]
        safe = jnp.where(q > 1e-8, q, 1.0)
        j1 = bessel_jn(safe, v=1)[1]
        return amplitude * jnp.where(q > 1e-8, (2 * j1 / safe) ** 2, 1.0)
    if family == "power_law":
        safe = jnp.where(r2 > 0, r2, 1.0)
        return jnp.where(
            r2 > 0, amplitude * safe ** (-0.5 * params["exponent"]), params["centre_value"]
        )
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


@dataclass(frozen=True, eq=False)
class ParametricPrior(KernelPrior):
    """A kernel of a known form with a few unknown parameters.

    Families (``r`` the distance to ``centre``):

    * ``'gaussian'``: ``a exp(-u^2 / 2 w^2 - v^2 / 2 w2^2)`` in axes rotated by
      ``angle`` (anisotropic; ``isotropic=True`` ties ``w2 = w``, ``angle = 0``);
    * ``'moffat'``: ``a (1 + r^2 / w^2)^-beta``;
    * ``'airy'``: ``a (2 J1(q) / q)^2``, ``q = 3.8317 r / w`` (``w`` the first dark ring);
    * ``'power_law'``: ``a r^-exponent`` and a free centre value.

    Priors: ``a ~ N(0, 100 s0)`` (``s0`` the data's kernel scale; wide on
    purpose), widths ``~ LogNormal(log(min(P, Q) / 6), 1.5)``, ``beta ~
    LogNormal(log 2.5, 0.7)``, ``exponent ~ Uniform(0, 5)``, ``angle ~
    Uniform(0, pi)``.

    ``residual=True`` adds a nonparametric correction: ``K = family(params) +
    r T z`` with ``T`` the smooth prior's map (:class:`SmoothPrior`), ``z ~
    N(0, I)`` (site ``residual_latent``) and ``r ~ HalfNormal(s0)`` (site
    ``residual_scale``), for kernels that are *nearly* of the family. The
    posterior of ``r`` says how far from the family the data push.
    """

    kernel_shape: tuple[int, int]
    family: str = "gaussian"
    centre: tuple[float, float] | None = None
    isotropic: bool = False
    residual: bool = False

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.family}+residual" if self.residual else self.family

    @property
    def grid_centre(self) -> tuple[float, float]:
        h, w = self.kernel_shape
        return self.centre if self.centre is not None else ((h - 1) / 2, (w - 1) / 2)

    def sample(self, scales) -> jax.Array:
        width0 = np.log(min(self.kernel_shape) / 6)
        params = {"amplitude": numpyro.sample("amplitude", dist.Normal(0.0, 100 * scales.kernel))}
        if self.family in ("gaussian", "moffat", "airy"):
            params["width"] = numpyro.sample("width", dist.LogNormal(width0, 1.5))
        if self.family == "gaussian":
            if self.isotropic:
                params["width_2"], params["angle"] = params["width"], jnp.asarray(0.0)
            else:
                params["width_2"] = numpyro.sample("width_2", dist.LogNormal(width0, 1.5))
                params["angle"] = numpyro.sample("angle", dist.Uniform(0.0, np.pi))
        if self.family == "moffat":
            params["beta"] = numpyro.sample("beta", dist.LogNormal(np.log(2.5), 0.7))
        if self.family == "power_law":
            params["exponent"] = numpyro.sample("exponent", dist.Uniform(0.0, 5.0))
            params["centre_value"] = numpyro.sample(
                "centre_value", dist.Normal(0.0, 100 * scales.kernel)
            )
        kernel = family_kernel(self.family, params, self.kernel_shape, self.grid_centre)
        if self.residual:
            smooth = SmoothPrior(self.kernel_shape)
            scale = numpyro.sample("residual_scale", dist.HalfNormal(scales.kernel))
            latent = numpyro.sample(
                "residual_latent", dist.Normal(0.0, 1.0).expand([smooth.num_latent]).to_event(1)
            )
            kernel = kernel + scale * smooth.to_kernel(latent)
        return kernel
