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

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.fft import idctn

__all__ = ["IIDPrior", "LinearGaussianPrior", "SmoothPrior", "resolve_prior"]


class LinearGaussianPrior:
    """Base class: ``kernel = kernel_scale * to_kernel(z)``, ``z ~ N(0, I)``.

    Subclasses set ``kernel_shape`` and ``num_latent`` and implement
    :meth:`to_kernel`.
    """

    kernel_shape: tuple[int, int]
    num_latent: int
    name: str = "custom"

    def to_kernel(self, latent: jax.Array) -> jax.Array:
        """Map ``(..., num_latent)`` latent vectors to ``(..., *kernel_shape)`` kernels."""
        raise NotImplementedError

    def to_latent_transpose(self, kernel: jax.Array) -> jax.Array:
        """Transpose of :meth:`to_kernel`: ``(..., *kernel_shape) -> (..., num_latent)``."""
        batch = kernel.shape[:-2]
        flat = kernel.reshape((-1,) + tuple(self.kernel_shape))
        probe = jax.ShapeDtypeStruct((self.num_latent,), kernel.dtype)
        transpose = jax.linear_transpose(self.to_kernel, probe)
        out = jax.vmap(lambda k: transpose(k)[0])(flat)
        return out.reshape(batch + (self.num_latent,))

    def sample(self, rng_key: jax.Array, kernel_scale: float = 1.0, shape=()) -> jax.Array:
        """Draw kernels from the prior at a given scale."""
        z = jax.random.normal(rng_key, tuple(shape) + (self.num_latent,))
        return kernel_scale * self.to_kernel(z)

    def covariance(self) -> np.ndarray:
        """Dense prior covariance of the flattened kernel at unit scale (small kernels only)."""
        eye = jnp.eye(self.num_latent)
        factor = np.asarray(self.to_kernel(eye)).reshape(self.num_latent, -1)
        return factor.T @ factor


@dataclass(frozen=True)
class IIDPrior(LinearGaussianPrior):
    """Independent ``N(0, kernel_scale**2)`` entries."""

    kernel_shape: tuple[int, int]
    name: str = "iid"

    @property
    def num_latent(self) -> int:
        return int(np.prod(self.kernel_shape))

    def to_kernel(self, latent: jax.Array) -> jax.Array:
        return latent.reshape(latent.shape[:-1] + tuple(self.kernel_shape))


@dataclass(frozen=True)
class SmoothPrior(LinearGaussianPrior):
    """Gaussian Markov random field on differences, reflecting boundary.

    Precision ``(L**order + delta I)`` with ``L`` the 5-point Laplacian with
    Neumann (reflecting) boundary, which the orthonormal DCT-II diagonalises:
    eigenvalues ``4 sin^2(pi i / 2h) + 4 sin^2(pi j / 2w)``. ``order=1`` penalises
    first differences (allows cusps and edges), ``order=2`` second differences
    (smoother kernels). ``delta`` makes the prior proper; by default the constant
    mode gets the variance of the smoothest non-constant mode. The covariance is
    rescaled to an average marginal variance of one.

    Parameters
    ----------
    kernel_shape : (int, int)
    order : {1, 2}
    """

    kernel_shape: tuple[int, int]
    order: int = 1
    name: str = "smooth"

    def __post_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"order must be 1, 2 or 3, got {self.order!r}")

    @property
    def num_latent(self) -> int:
        return int(np.prod(self.kernel_shape))

    def spectrum(self) -> np.ndarray:
        """Prior variances of the DCT-II coefficients, shape ``kernel_shape``."""
        h, w = self.kernel_shape
        lam = (
            4 * np.sin(np.pi * np.arange(h) / (2 * h))[:, None] ** 2
            + 4 * np.sin(np.pi * np.arange(w) / (2 * w))[None, :] ** 2
        ) ** self.order
        positive = lam[lam > 0]
        delta = positive.min() if positive.size else 1.0
        variances = 1.0 / (lam + delta)
        return variances / variances.mean()

    def to_kernel(self, latent: jax.Array) -> jax.Array:
        coeffs = latent.reshape(latent.shape[:-1] + tuple(self.kernel_shape))
        coeffs = coeffs * jnp.sqrt(jnp.asarray(self.spectrum(), latent.dtype))
        return idctn(coeffs, type=2, norm="ortho", axes=(-2, -1))


_NAMED = {"iid": IIDPrior, "smooth": SmoothPrior}


def resolve_prior(prior, kernel_shape: tuple[int, int]) -> LinearGaussianPrior:
    """Turn ``'iid'``, ``'smooth'``, ``'smooth2'`` or a prior instance into a prior.

    Raises
    ------
    ValueError
        If the name is unknown or an instance's ``kernel_shape`` differs.
    """
    kernel_shape = tuple(int(s) for s in kernel_shape)
    if isinstance(prior, str):
        if prior == "smooth2":
            return SmoothPrior(kernel_shape, order=2)
        if prior not in _NAMED:
            raise ValueError(
                f"prior must be one of {sorted(_NAMED) + ['smooth2']} or a "
                f"LinearGaussianPrior instance, got {prior!r}"
            )
        return _NAMED[prior](kernel_shape)
    if not isinstance(prior, LinearGaussianPrior):
        raise TypeError(
            f"prior must be a name or a LinearGaussianPrior instance, got {type(prior).__name__}"
        )
    if tuple(prior.kernel_shape) != kernel_shape:
        raise ValueError(
            f"prior.kernel_shape {tuple(prior.kernel_shape)} differs from kernel_shape "
            f"{kernel_shape}"
        )
    return prior
