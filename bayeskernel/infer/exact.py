"""Exact posterior of the linear-Gaussian model, hyperparameters collapsed.

Write ``W = M H T`` for the whitened forward map (``T`` the prior's whitening
map, ``H`` the blur, ``M`` the restriction to observed pixels), so that
``B = s W z + e`` with ``z ~ N(0, I_p)`` and ``e ~ N(0, sigma^2 I_n)``.

One symmetric eigendecomposition, of ``W^T W`` (p x p) or ``W W^T`` (n x n),
whichever is smaller, makes everything else cheap:

* the marginal likelihood ``log N(B | 0, sigma^2 I + s^2 W W^T)`` costs O(r)
  per evaluation (``r = min(n, p)``), so NUTS on ``(sigma, s)`` is fast and
  exact;
* kernel draws given ``(sigma, s)`` are exact: in kernel space by rotating
  independent Gaussians, in data space by Matheron's rule
  ``z = z0 + s W^T (sigma^2 I + s^2 W W^T)^{-1} (B - s W z0 - e)``.

No iterative solver, so no tolerance: the draws are exact to rounding. The
matrix-free twin for larger problems is :mod:`bayeskernel.infer.krylov`; both
are driven by :func:`bayeskernel.infer.collapsed.run_exact`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from bayeskernel.forward import ConvolutionOperator
from bayeskernel.infer._static import Static
from bayeskernel.normal import normal_matrix
from bayeskernel.priors import LinearGaussianPrior

__all__ = [
    "Spectrum",
    "WhitenedOperator",
    "conditional_draws",
    "decompose",
    "log_marginal_likelihood",
]

# Largest dense eigenproblem we attempt: 16,000^2 float64 is 2 GB and about
# four minutes of LAPACK dsyevd on two cores (benchmarks/bench_exact.py).
DENSE_LIMIT = 16_000
# Columns of the Gram matrix built per batched operator call (memory vs speed).
_GRAM_BATCH = 128


@jax.tree_util.register_pytree_node_class
class WhitenedOperator:
    """``W z = M H T z`` and its transpose, on flat vectors with batch axes.

    A pytree: the convolution operators and observed-pixel indices are leaves,
    the prior is static. Jitted code that takes it as an argument therefore
    compiles once per prior and shape, not once per fit.

    Attributes
    ----------
    prior : LinearGaussianPrior
    operators : tuple of ConvolutionOperator
    indices : tuple of (n_i,) int arrays
        Flat indices of each pair's observed pixels.
    """

    def __init__(self, prior: LinearGaussianPrior, operators: tuple, indices: tuple):
        self.prior = prior
        self.operators = operators
        self.indices = indices

    def tree_flatten(self):
        return (self.operators, self.indices), Static(self.prior)

    @classmethod
    def tree_unflatten(cls, static: Static, children):
        return cls(static.value, *children)

    @property
    def num_latent(self) -> int:
        return int(self.prior.num_latent)

    @property
    def num_observed(self) -> int:
        return sum(int(np.shape(i)[0]) for i in self.indices)

    def apply(self, latent: jax.Array) -> jax.Array:
        """``W z`` for ``(..., p)`` latents; returns ``(..., n)``."""
        return _apply(self, latent)

    def transpose(self, values: jax.Array) -> jax.Array:
        """``W^T y`` for ``(..., n)`` data vectors; returns ``(..., p)``."""
        return _transpose(self, values)


# Operators and indices are jit arguments, not baked-in constants: a large
# image's FFT would otherwise be embedded in the compiled program.
@jax.jit
def _apply(whitened: WhitenedOperator, latent: jax.Array) -> jax.Array:
    kernel = whitened.prior.to_kernel(latent)
    parts = []
    for op, idx in zip(whitened.operators, whitened.indices, strict=True):
        blurred = op(kernel)
        parts.append(blurred.reshape(blurred.shape[:-2] + (-1,))[..., idx])
    return jnp.concatenate(parts, axis=-1)


@jax.jit
def _transpose(whitened: WhitenedOperator, values: jax.Array) -> jax.Array:
    splits = np.cumsum([np.shape(i)[0] for i in whitened.indices])[:-1].tolist()
    total = 0.0
    for op, idx, part in zip(
        whitened.operators, whitened.indices, jnp.split(values, splits, axis=-1), strict=True
    ):
        shape = tuple(op.output_shape)
        full = jnp.zeros(part.shape[:-1] + (int(np.prod(shape)),), part.dtype)
        full = full.at[..., idx].set(part).reshape(part.shape[:-1] + shape)
        total = total + op.adjoint(full)
    return whitened.prior.to_latent_transpose(total)


def whitened_operator(
    operator: ConvolutionOperator | tuple,
    prior: LinearGaussianPrior,
    mask: jax.Array | tuple | None,
) -> WhitenedOperator:
    """Compose prior map, blur and observation mask into ``W`` and ``W^T``.

    With several image pairs (tuples of operators and masks), ``W`` stacks
    the pairs' observed pixels one after the other and ``W^T`` sums the pairs'
    transposes: one shared kernel, one noise sd.
    """
    operators = operator if isinstance(operator, tuple) else (operator,)
    masks = mask if isinstance(mask, tuple) else (mask,) * len(operators)
    indices = tuple(
        jnp.arange(int(np.prod(op.output_shape)))
        if m is None
        else jnp.asarray(np.flatnonzero(np.asarray(m)))
        for op, m in zip(operators, masks, strict=True)
    )
    return WhitenedOperator(prior, operators, indices)


def observed_vector(observed, mask) -> jax.Array:
    """The observed pixels of one or several ``B`` as one flat vector (``W``'s order)."""
    observed = observed if isinstance(observed, tuple) else (observed,)
    masks = mask if isinstance(mask, tuple) else (mask,) * len(observed)
    parts = [
        b.reshape(-1) if m is None else b.reshape(-1)[jnp.asarray(np.flatnonzero(np.asarray(m)))]
        for b, m in zip(observed, masks, strict=True)
    ]
    return jnp.concatenate(parts)


@partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "eigenvalues", "data_projection_sq", "residual_energy", "basis", "latent_projection"
    ],
    meta_fields=["space", "num_observed"],
)  # fmt: skip
@dataclass(frozen=True)
class Spectrum:
    """What the eigendecomposition leaves for the marginal likelihood and draws.

    A pytree (``space`` and ``num_observed`` static), so jitted functions take it
    as an argument.

    Attributes
    ----------
    eigenvalues : (r,) ndarray
        Eigenvalues ``g`` of ``W^T W`` or ``W W^T`` (clipped at zero).
    data_projection_sq : (r,) ndarray
        Squared coordinates ``d^2`` of ``B`` along the data-space eigenvectors.
    residual_energy : float
        ``||B||^2 - sum(d^2)``: the part of ``B`` no kernel can explain.
    basis : (p, r) or (n, r) ndarray
        Eigenvectors (kernel space ``V`` or data space ``Y``).
    latent_projection : (r,) ndarray or None
        ``V^T W^T B`` (kernel space only).
    space : {'kernel', 'data'}
    num_observed : int
    """

    eigenvalues: np.ndarray
    data_projection_sq: np.ndarray
    residual_energy: float
    basis: np.ndarray
    latent_projection: np.ndarray | None
    space: str
    num_observed: int


def _gram(func, size: int, dtype, progress=None) -> np.ndarray:
    """Dense matrix of a symmetric linear map given on batches of vectors.

    ``progress``, if given, is called with ``1`` after each batch.
    """
    out = np.empty((size, size))
    # Equal batches (the last padded with zero vectors): one compiled shape.
    num_batches = -(-size // _GRAM_BATCH)
    batch = -(-size // num_batches)
    for start in range(0, size, batch):
        stop = min(size, start + batch)
        # Built in NumPy: a scatter on the device compiles a dozen small programs.
        unit = np.zeros((batch, size), dtype)
        unit[np.arange(stop - start), np.arange(start, stop)] = 1.0
        out[start:stop] = np.asarray(func(jnp.asarray(unit)))[: stop - start]
        if progress is not None:
            progress(1)
    # Symmetric to rounding; LAPACK's dsyevd reads only the lower triangle, so no
    # symmetrised copy (two 0.8 GB temporaries on the motivating case).
    return out


def kernel_gram(operators: tuple, prior: LinearGaussianPrior) -> np.ndarray:
    """``W^T W = T^T (sum_i H_i^T H_i) T`` from the exact normal matrices.

    For unmasked pairs in kernel space: :func:`bayeskernel.normal.normal_matrix`
    costs a few FFTs of the image instead of one blur per latent column, which is
    what makes a 2048 x 2048 image with a 63 x 63 kernel take seconds.
    """
    normal = sum(normal_matrix(np.asarray(op.image), op.kernel_shape, op.mode) for op in operators)
    shape = tuple(prior.kernel_shape)
    transpose = partial(_latent_transpose, Static(prior))

    def rows_to_latent(rows: np.ndarray) -> np.ndarray:
        # T^T applied to each row (read as a kernel), in batches.
        return np.concatenate(
            [
                np.asarray(transpose(jnp.asarray(rows[i : i + _GRAM_BATCH].reshape((-1,) + shape))))
                for i in range(0, rows.shape[0], _GRAM_BATCH)
            ]
        )

    # M T (rows of the symmetric M as kernels), then T^T (M T).
    normal_t = rows_to_latent(normal)
    del normal
    return rows_to_latent(np.ascontiguousarray(normal_t.T))


@partial(jax.jit, static_argnums=0)
def _latent_transpose(prior: Static, kernels: jax.Array) -> jax.Array:
    return prior.value.to_latent_transpose(kernels)


def decompose(
    whitened: WhitenedOperator,
    observed: jax.Array,
    gram: np.ndarray | None = None,
    progress=None,
) -> Spectrum:
    """Eigendecompose ``W^T W`` or ``W W^T`` (the smaller) for the data ``B``.

    ``gram``: ``W^T W`` when already known (:func:`kernel_gram`); otherwise it is
    built by applying ``W^T W`` to unit vectors. ``progress``, if given, is
    called with ``1`` after each batch of those and after the eigendecomposition.

    Raises
    ------
    MemoryError
        If both sides exceed :data:`DENSE_LIMIT`.
    """
    p, n = whitened.num_latent, whitened.num_observed
    if min(p, n) > DENSE_LIMIT:
        raise MemoryError(
            f"the exact route needs a dense {min(p, n)}x{min(p, n)} eigendecomposition "
            f"(limit {DENSE_LIMIT}); use method='nuts' or 'svi', fewer kernel entries, "
            "or a structured prior"
        )
    flat = observed.reshape(-1) if observed.ndim == 2 else observed
    data = np.asarray(flat, dtype=np.float64)
    dtype = jnp.result_type(float)
    if p <= n:
        if gram is None:
            gram = _gram(lambda e: whitened.transpose(whitened.apply(e)), p, dtype, progress)
        eigenvalues, basis = scipy.linalg.eigh(gram, driver="evd", overwrite_a=True)
        if progress is not None:
            progress(1)
        latent_projection = basis.T @ np.asarray(whitened.transpose(jnp.asarray(data)))
        return kernel_space_spectrum(
            eigenvalues, basis, latent_projection, data,
            lambda coeff: np.asarray(whitened.apply(jnp.asarray(coeff))), np,
        )  # fmt: skip
    gram = _gram(lambda e: whitened.apply(whitened.transpose(e)), n, dtype, progress)
    eigenvalues, basis = scipy.linalg.eigh(gram, driver="evd", overwrite_a=True)
    if progress is not None:
        progress(1)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    projection = basis.T @ data
    return Spectrum(eigenvalues, projection**2, 0.0, basis, None, "data", n)


def kernel_space_spectrum(eigenvalues, basis, latent_projection, data, apply, xp=jnp) -> Spectrum:
    """The kernel-space :class:`Spectrum` from the eigendecomposition of ``W^T W``.

    Shared by :func:`decompose` (NumPy, ``xp=np``) and the vmapped tile route
    (traceable, ``xp=jax.numpy``).

    Parameters
    ----------
    eigenvalues, basis : arrays
        ``W^T W = basis diag(eigenvalues) basis^T``.
    latent_projection : (p,) array
        ``basis^T W^T B``.
    data : (n,) array
        ``B``, flattened.
    apply : callable
        ``coeff -> W coeff``.
    xp : module
        ``numpy`` or ``jax.numpy``.
    """
    eigenvalues = xp.clip(eigenvalues, 0.0, None)
    # d_j = c_j / sqrt(g_j); directions with g ~ 0 carry no data.
    tiny = eigenvalues <= eigenvalues.max() * 1e-12
    safe = xp.where(tiny, 1.0, eigenvalues)
    projection_sq = xp.where(tiny, 0.0, latent_projection**2 / safe)
    # Residual of the least-squares fit, computed directly (no cancellation).
    residual = data - apply(basis @ xp.where(tiny, 0.0, latent_projection / safe))
    energy = residual @ residual
    return Spectrum(
        eigenvalues, projection_sq, float(energy) if xp is np else energy, basis,
        latent_projection, "kernel", int(data.size),
    )  # fmt: skip


def log_marginal_likelihood(spectrum: Spectrum, noise_sigma, kernel_scale):
    """``log p(B | sigma, s)`` with the kernel integrated out; O(r), jax-traceable."""
    g = jnp.asarray(spectrum.eigenvalues)
    d2 = jnp.asarray(spectrum.data_projection_sq)
    n, r = spectrum.num_observed, g.shape[0]
    var_noise = noise_sigma**2
    total = var_noise + kernel_scale**2 * g
    log_det = (n - r) * jnp.log(var_noise) + jnp.sum(jnp.log(total))
    quad = spectrum.residual_energy / var_noise + jnp.sum(d2 / total)
    return -0.5 * (n * jnp.log(2 * jnp.pi) + log_det + quad)


def conditional_draws(
    rng_key: jax.Array,
    spectrum: Spectrum,
    whitened: WhitenedOperator,
    observed: jax.Array,
    noise_sigma: jax.Array,
    kernel_scale: jax.Array,
) -> jax.Array:
    """Exact draws of the latent ``z`` given ``(sigma, s)``, one per hyperparameter pair.

    Parameters
    ----------
    noise_sigma, kernel_scale : (b,) arrays

    Returns
    -------
    (b, p) array
    """
    basis = jnp.asarray(spectrum.basis)
    g = jnp.asarray(spectrum.eigenvalues)
    sigma2 = (noise_sigma**2)[:, None]
    scale = kernel_scale[:, None]
    batch = noise_sigma.shape[0]
    if spectrum.space == "kernel":
        # Posterior of u = V^T z: independent, precision 1 + s^2 g / sigma^2.
        c = jnp.asarray(spectrum.latent_projection)
        total = sigma2 + scale**2 * g
        mean = scale * c / total
        sd = jnp.sqrt(sigma2 / total)
        xi = jax.random.normal(rng_key, (batch, g.shape[0]))
        return (mean + sd * xi) @ basis.T
    key_prior, key_noise = jax.random.split(rng_key)
    flat = observed.reshape(-1)
    z0 = jax.random.normal(key_prior, (batch, whitened.num_latent))
    noise = jnp.sqrt(sigma2) * jax.random.normal(key_noise, (batch, whitened.num_observed))
    residual = flat - scale * whitened.apply(z0) - noise
    weights = (residual @ basis) / (sigma2 + scale**2 * g)
    return z0 + scale * whitened.transpose(weights @ basis.T)
