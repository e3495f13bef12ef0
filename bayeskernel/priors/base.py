"""Prior interfaces: linear-Gaussian (whitening maps) and general (NumPyro sites).

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

Priors that are not linear-Gaussian (parametric families, low rank,
positivity) subclass :class:`KernelPrior`: a ``sample`` method of NumPyro
sample statements that returns the kernel. They run with NUTS or SVI.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["KernelPrior", "LinearGaussianPrior"]


class KernelPrior:
    """Base class of every prior: NumPyro sites that make a kernel.

    Subclasses set ``kernel_shape`` and ``name`` and implement :meth:`sample`.
    ``linear_gaussian`` tells the exact route whether it applies.
    """

    kernel_shape: tuple[int, int]
    name: str = "custom"
    linear_gaussian: bool = False

    def sample(self, scales) -> jax.Array:
        """Inside a NumPyro model: sample the prior's parameters, return the kernel.

        Parameters
        ----------
        scales : bayeskernel.model.HyperScales
            Data-derived reference scales (``scales.kernel`` is a typical entry size).

        Returns
        -------
        (P, Q) jax.Array
            The kernel, of ``kernel_shape``.
        """
        raise NotImplementedError


class LinearGaussianPrior(KernelPrior):
    """Base class: ``kernel = kernel_scale * to_kernel(z)``, ``z ~ N(0, I)``.

    Subclasses set ``kernel_shape`` and ``num_latent`` and implement
    :meth:`to_kernel`.
    """

    kernel_shape: tuple[int, int]
    num_latent: int
    name: str = "custom"
    linear_gaussian: bool = True

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one :meth:`to_kernel` output: ``kernel_shape`` (a field's: a stack)."""
        return tuple(self.kernel_shape)

    def to_kernel(self, latent: jax.Array) -> jax.Array:
        """Map ``(..., num_latent)`` latent vectors to ``(..., *kernel_shape)`` kernels.

        Parameters
        ----------
        latent : (..., num_latent) jax.Array
            Whitened latent vectors; leading batch axes allowed.

        Returns
        -------
        (..., P, Q) jax.Array
            Kernels at unit scale, linear in ``latent``; a field's are
            ``(..., terms, P, Q)`` stacks (:attr:`output_shape`).
        """
        raise NotImplementedError

    def to_latent_transpose(self, kernel: jax.Array) -> jax.Array:
        """Transpose of :meth:`to_kernel`: ``(..., *kernel_shape) -> (..., num_latent)``.

        Parameters
        ----------
        kernel : (..., P, Q) jax.Array
            Kernel-shaped arrays (a field's: ``(..., terms, P, Q)`` stacks);
            leading batch axes allowed.

        Returns
        -------
        (..., num_latent) jax.Array
        """
        batch = kernel.shape[:-2]
        flat = kernel.reshape((-1,) + tuple(self.kernel_shape))
        probe = jax.ShapeDtypeStruct((self.num_latent,), kernel.dtype)
        transpose = jax.linear_transpose(self.to_kernel, probe)
        out = jax.vmap(lambda k: transpose(k)[0])(flat)
        return out.reshape(batch + (self.num_latent,))

    def sample(self, rng_key: jax.Array, kernel_scale: float = 1.0, shape=()) -> jax.Array:
        """Draw kernels from the prior at a given scale.

        Unlike :meth:`KernelPrior.sample`, not a NumPyro site: independent draws
        from ``rng_key``.

        Parameters
        ----------
        rng_key : jax PRNGKey
        kernel_scale : float
            The prior's scale ``s``.
        shape : tuple of int
            Batch shape of the draws; default ``()``, one kernel.

        Returns
        -------
        (..., P, Q) jax.Array
            Of shape ``shape + output_shape``.
        """
        z = jax.random.normal(rng_key, tuple(shape) + (self.num_latent,))
        return kernel_scale * self.to_kernel(z)

    def covariance(self) -> np.ndarray:
        """Dense prior covariance of the flattened kernel at unit scale (small kernels only).

        Returns
        -------
        (P * Q, P * Q) ndarray
            Of the row-major flattened :meth:`to_kernel` output (a field's whole stack).
        """
        eye = jnp.eye(self.num_latent)
        factor = np.asarray(self.to_kernel(eye)).reshape(self.num_latent, -1)
        return factor.T @ factor
