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

from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from bayeskernel.field import FieldOperator, field_order
from bayeskernel.forward import ConvolutionOperator
from bayeskernel.infer._static import Static
from bayeskernel.normal import (
    PATCH_LIMIT,
    field_normal_matrix,
    normal_matrix,
    weighted_normal_matrix,
)
from bayeskernel.observation import background_design, background_transpose
from bayeskernel.priors import LinearGaussianPrior

__all__ = [
    "Spectrum",
    "WhitenedOperator",
    "conditional_draws",
    "decompose",
    "log_marginal_likelihood",
    "likelihood_terms",
]

# Largest dense eigenproblem we attempt: 16,000^2 float64 is 2 GB and about
# four minutes of LAPACK dsyevd on two cores (benchmarks/bench_exact.py).
DENSE_LIMIT = 16_000
# Columns of the Gram matrix built per batched operator call (memory vs speed).
_GRAM_BATCH = 128
# Rows of a weighted normal matrix per call: each is an image-sized array.
# On 512x512 with a 21x21 kernel, 1.9 s at 8 against 2.2 s at 32 (three runs
# each); at 128x128 and 1024x1024 the two are within 0.02 s and 5%.
_NORMAL_BATCH = 8
# The marginal likelihood's spectrum is padded to a power of two, at least this
# long: candidates and fits whose ranks differ then share compiled programs.
_TERMS_LENGTH = 128
# Image-sized arrays per call of a field's normal matrix: 3.2 s at 16 against
# 9.1 s at 32 for a 256 x 256 image, 21 x 21 kernel and order 2 (memory traffic).
_FIELD_MAPS = 16


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
    scales : tuple of ((n_i,) array or None)
        Square roots of the pixels' noise weights (None: all 1): ``W`` maps
        into whitened data ``sqrt(w) B``.
    bases : tuple of ((n_i, k_i) array or None)
        Orthonormal bases of each pair's background columns (whitened); ``W``
        maps into their orthogonal complement (:mod:`bayeskernel.observation`).
    """

    def __init__(
        self,
        prior: LinearGaussianPrior,
        operators: tuple,
        indices: tuple,
        scales: tuple | None = None,
        bases: tuple | None = None,
    ):
        self.prior = prior
        self.operators = operators
        self.indices = indices
        self.scales = scales if scales is not None else (None,) * len(operators)
        self.bases = bases if bases is not None else (None,) * len(operators)

    def tree_flatten(self):
        return (self.operators, self.indices, self.scales, self.bases), Static(self.prior)

    @classmethod
    def tree_unflatten(cls, static: Static, children):
        return cls(static.value, *children)

    @property
    def num_latent(self) -> int:
        return int(self.prior.num_latent)

    @property
    def num_observed(self) -> int:
        return sum(int(np.shape(i)[0]) for i in self.indices)

    @property
    def num_effective(self) -> int:
        """Observed pixels less background terms: the data's degrees of freedom."""
        return self.num_observed - sum(int(np.shape(q)[1]) for q in self.bases if q is not None)

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
    for op, idx, scale, basis in zip(
        whitened.operators, whitened.indices, whitened.scales, whitened.bases, strict=True
    ):
        blurred = op(kernel)
        part = blurred.reshape(blurred.shape[:-2] + (-1,))[..., idx]
        parts.append(_project(part if scale is None else part * scale, basis))
    return jnp.concatenate(parts, axis=-1)


def _project(values: jax.Array, basis) -> jax.Array:
    """``values`` less their part in the span of ``basis`` (orthonormal columns)."""
    return values if basis is None else values - (values @ basis) @ basis.T


@jax.jit
def _transpose(whitened: WhitenedOperator, values: jax.Array) -> jax.Array:
    return whitened.prior.to_latent_transpose(_grid_adjoint(whitened, values))


def _grid_adjoint(whitened: WhitenedOperator, values: jax.Array) -> jax.Array:
    """``sum_i H_i^T S_i P_i y_i`` on the kernel grid (``W^T`` before ``T^T``)."""
    splits = np.cumsum([np.shape(i)[0] for i in whitened.indices])[:-1].tolist()
    total = 0.0
    for op, idx, scale, basis, part in zip(
        whitened.operators, whitened.indices, whitened.scales, whitened.bases,
        jnp.split(values, splits, axis=-1), strict=True,
    ):  # fmt: skip
        part = _project(part, basis)
        part = part if scale is None else part * scale
        shape = tuple(op.output_shape)
        full = jnp.zeros(part.shape[:-1] + (int(np.prod(shape)),), part.dtype)
        full = full.at[..., idx].set(part).reshape(part.shape[:-1] + shape)
        total = total + op.adjoint(full)
    return total


def whitened_operator(
    operator: ConvolutionOperator | tuple,
    prior: LinearGaussianPrior,
    mask: jax.Array | tuple | None,
    observations: tuple | None = None,
) -> WhitenedOperator:
    """Compose prior map, blur and observation mask into ``W`` and ``W^T``.

    With several image pairs (tuples of operators and masks), ``W`` stacks
    the pairs' observed pixels one after the other and ``W^T`` sums the pairs'
    transposes: one shared kernel, one noise sd. ``observations`` (one
    :class:`~bayeskernel.observation.PairObservation` per pair) add noise
    weights and background blocks; their pixels replace ``mask``'s.
    """
    if observations is not None:
        operators = operator if isinstance(operator, tuple) else (operator,)
        return WhitenedOperator(
            prior,
            operators,
            tuple(jnp.asarray(obs.indices) for obs in observations),
            tuple(None if obs.scales is None else jnp.asarray(obs.scales) for obs in observations),
            tuple(None if obs.basis is None else jnp.asarray(obs.basis) for obs in observations),
        )
    operators = operator if isinstance(operator, tuple) else (operator,)
    masks = mask if isinstance(mask, tuple) else (mask,) * len(operators)
    indices = tuple(
        jnp.arange(int(np.prod(op.output_shape)))
        if m is None
        else jnp.asarray(np.flatnonzero(np.asarray(m)))
        for op, m in zip(operators, masks, strict=True)
    )
    return WhitenedOperator(prior, operators, indices)


def observed_vector(observed, mask, observations: tuple | None = None) -> jax.Array:
    """The observed pixels of one or several ``B`` as one flat vector (``W``'s order).

    With ``observations``: whitened (times ``sqrt(w)``) and projected off the
    background, as ``W`` maps.
    """
    observed = observed if isinstance(observed, tuple) else (observed,)
    if observations is not None:
        parts = []
        for b, obs in zip(observed, observations, strict=True):
            part = np.asarray(b, np.float64).reshape(-1)[obs.indices]
            part = part if obs.scales is None else part * obs.scales
            if obs.basis is not None:
                part = part - obs.basis @ (obs.basis.T @ part)
            parts.append(part)
        return jnp.asarray(np.concatenate(parts))
    masks = mask if isinstance(mask, tuple) else (mask,) * len(observed)
    parts = [
        b.reshape(-1) if m is None else b.reshape(-1)[jnp.asarray(np.flatnonzero(np.asarray(m)))]
        for b, m in zip(observed, masks, strict=True)
    ]
    return jnp.concatenate(parts)


@partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "eigenvalues", "data_projection_sq", "residual_energy", "basis", "latent_projection",
        "sum_direction", "sum_along", "sum_data", "sum_gram", "sum_value",
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
    sum_direction, sum_along, sum_data, sum_gram, sum_value : arrays or None
        Fixed kernel sums (:func:`constrain_sum`), ``m`` linear constraints
        ``D z = t / s``: ``D`` ``(m, p)``; its rows' coordinates along the
        kernel-space eigenvectors (``D V``), or ``(W D^T)``'s along the
        data-space ones (``Y^T W D^T``, transposed), ``(m, r)``; the data's
        coordinates along the same eigenvectors ``(r,)``; ``D D^T``; and the
        sums ``t`` ``(m,)``.
    """

    eigenvalues: np.ndarray
    data_projection_sq: np.ndarray
    residual_energy: float
    basis: np.ndarray
    latent_projection: np.ndarray | None
    space: str
    num_observed: int
    sum_direction: np.ndarray | None = None
    sum_along: np.ndarray | None = None
    sum_data: np.ndarray | None = None
    sum_gram: np.ndarray | None = None
    sum_value: np.ndarray | None = None


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


def observed_normal_matrix(operators: tuple, observations: tuple) -> np.ndarray:
    """``sum_i H_i^T S_i P_i S_i H_i`` on the kernel grid, for noise weights and backgrounds.

    ``S_i`` multiplies by the square-root weights on the observed pixels and
    ``P_i`` projects off the background block (:mod:`bayeskernel.observation`).
    Prior-independent: computed once, it serves every candidate prior of a
    model average. A pair observed everywhere with unit weights starts from
    :func:`bayeskernel.normal.normal_matrix` (a field:
    :func:`bayeskernel.normal.field_normal_matrix`); others from one blur and
    one transpose per kernel entry. The background then subtracts ``C^T C``
    with ``C = Q^T S H`` (one transpose per background term).
    """
    total = 0.0
    for op, obs in zip(operators, observations, strict=True):
        size = int(np.prod(op.kernel_shape))
        pixels = int(np.prod(obs.shape))
        scales = np.ones(obs.indices.size) if obs.scales is None else obs.scales
        unweighted = obs.scales is None and obs.indices.size == pixels
        if isinstance(op, FieldOperator) and unweighted:
            normal = field_normal_matrix(
                np.asarray(op.image), op.kernel_shape, op.mode, field_order(op.num_terms)
            )
        elif isinstance(op, FieldOperator):
            normal = _field_normal_matrix(op, obs, scales)
        elif not isinstance(op, ConvolutionOperator):  # e.g. a binned blur
            normal = _columns_normal_matrix(op, obs, scales)
        elif unweighted:
            normal = normal_matrix(np.asarray(op.image), op.kernel_shape, op.mode)
        elif size <= PATCH_LIMIT:
            normal = weighted_normal_matrix(
                np.asarray(op.image), _weight_map(obs, scales), op.kernel_shape, op.mode
            )
        else:
            weights = jnp.asarray(_weight_map(obs, scales))
            (p0, p1), ((r0, c0), (h, w)) = op.kernel_shape, op.window
            # A padded so that every kernel offset's shifted copy is one slice.
            padded = jnp.pad(jnp.asarray(op.image), ((p0, h + p0), (p1, w + p1)))
            offsets = np.stack(np.unravel_index(np.arange(size), (p0, p1)), axis=1)
            batch = -(-size // -(-size // _NORMAL_BATCH))  # equal batches: one program
            normal = np.empty((size, size))
            for start in range(0, size, batch):
                chunk = offsets[start : start + batch]
                chunk = np.pad(chunk, ((0, batch - chunk.shape[0]), (0, 0)))
                rows = _weighted_normal_rows(
                    op, padded, weights, jnp.asarray(chunk), (r0 + p0, c0 + p1), (h, w)
                )
                normal[start : start + batch] = np.asarray(rows)[: size - start]
        if obs.basis is not None:
            c = background_transpose(op, obs)
            normal = normal - c.T @ c
        total = total + normal
    return total


def _weight_map(obs, scales: np.ndarray) -> np.ndarray:
    """The noise weights ``scales**2`` on ``B``'s grid, zero where unobserved."""
    weights = np.zeros(int(np.prod(obs.shape)))
    weights[obs.indices] = scales**2
    return weights.reshape(obs.shape)


def _columns_normal_matrix(op, obs, scales: np.ndarray) -> np.ndarray:
    """``H^T S^2 H`` of any linear blur, one column ``H e_k`` per kernel entry."""
    size = int(np.prod(op.kernel_shape))
    weights = jnp.asarray(_weight_map(obs, scales))
    batch = -(-size // -(-size // _NORMAL_BATCH))  # equal batches: one program
    normal = np.empty((size, size))
    for start in range(0, size, batch):
        units = np.zeros((batch, size))
        count = min(batch, size - start)
        units[np.arange(count), np.arange(start, start + count)] = 1.0
        rows = _operator_normal_rows(
            op, weights, jnp.asarray(units.reshape((batch,) + tuple(op.kernel_shape)))
        )
        normal[start : start + count] = np.asarray(rows)[:count]
    return normal


@jax.jit
def _operator_normal_rows(op, weights, units):
    return op.adjoint(weights * op(units)).reshape(units.shape[0], -1)


def _field_normal_matrix(op: FieldOperator, obs, scales: np.ndarray) -> np.ndarray:
    """``H_f^T S^2 H_f`` of a field: blocks ``H^T diag(w phi_p phi_q) H``.

    ``phi_p phi_q`` is a monomial of degree up to twice the field's order, and
    many pairs share one (order 2: 15 monomials for 21 pairs): one transposed
    blur per kernel entry and distinct monomial. Returned on the
    component-major grid ``(P * kh * kw)`` that the field's prior maps to.
    """
    base, basis = op.base, np.asarray(op.basis, np.float64)
    count = basis.shape[0]
    size = int(np.prod(base.kernel_shape))
    weights = _weight_map(obs, scales)
    degree = field_order(count)
    exponents = [(a, total - a) for total in range(degree + 1) for a in range(total, -1, -1)]
    monomials = sorted({(ep[0] + eq[0], ep[1] + eq[1]) for ep in exponents for eq in exponents})
    _, y, x = background_design(obs.shape, 1).T.reshape((3,) + tuple(obs.shape))
    products = np.stack([weights * y**a * x**b for a, b in monomials])
    if size <= PATCH_LIMIT:
        grams = weighted_normal_matrix(
            np.asarray(base.image), products, base.kernel_shape, base.mode
        )
        return _field_blocks(grams, exponents, monomials, count, size)
    products = jnp.asarray(products)
    (p0, p1), ((r0, c0), (h, w)) = base.kernel_shape, base.window
    padded = jnp.pad(jnp.asarray(base.image), ((p0, h + p0), (p1, w + p1)))
    offsets = np.stack(np.unravel_index(np.arange(size), (p0, p1)), axis=1)
    # Each offset costs one image-sized array per monomial: batches sized so
    # that a call holds about _FIELD_MAPS of them.
    width = max(1, _FIELD_MAPS // len(monomials))
    batch = -(-size // -(-size // width))
    rows = np.empty((size, len(monomials), size))
    for start in range(0, size, batch):
        chunk = offsets[start : start + batch]
        chunk = np.pad(chunk, ((0, batch - chunk.shape[0]), (0, 0)))
        block = _weighted_normal_rows(
            base, padded, products, jnp.asarray(chunk), (r0 + p0, c0 + p1), (h, w)
        )
        rows[start : start + batch] = np.asarray(block).reshape(batch, len(monomials), size)[
            : size - start
        ]
    return _field_blocks(rows.transpose(1, 0, 2), exponents, monomials, count, size)


def _field_blocks(grams, exponents, monomials, count: int, size: int) -> np.ndarray:
    """The field's normal matrix from ``H^T diag(w m) H`` per monomial ``m`` ``(M, size, size)``."""
    normal = np.empty((count * size, count * size))
    for p, (ap, bp) in enumerate(exponents):
        for q, (aq, bq) in enumerate(exponents):
            # (u, v): entry u of K_p against entry v of K_q
            block = grams[monomials.index((ap + aq, bp + bq))]
            normal[p * size : (p + 1) * size, q * size : (q + 1) * size] = block
    return normal


@partial(jax.jit, static_argnums=(4, 5))
def _weighted_normal_rows(op, padded, weights, offsets, corner, shape):
    """Rows ``H^T diag(w) H e_k`` for kernel offsets ``k``: ``H e_k`` is ``A`` shifted.

    ``weights`` of shape ``(H, W)``, or ``(Q, H, W)`` for ``Q`` weight maps at
    once (rows ``(batch, Q * kh * kw)``).
    """

    def shifted(offset):
        start = (corner[0] - offset[0], corner[1] - offset[1])
        return jax.lax.dynamic_slice(padded, start, shape) * weights

    columns = jax.vmap(shifted)(offsets)
    return op.adjoint(columns).reshape(offsets.shape[0], -1)


def kernel_gram(
    operators: tuple, prior: LinearGaussianPrior, normal: np.ndarray | None = None
) -> np.ndarray:
    """``W^T W = T^T (sum_i H_i^T H_i) T`` from the exact normal matrices.

    For unmasked pairs in kernel space: :func:`bayeskernel.normal.normal_matrix`
    costs a few FFTs of the image instead of one blur per latent column, which is
    what makes a 2048 x 2048 image with a 63 x 63 kernel take seconds.
    ``normal``: the kernel-grid normal matrix when already known (noise
    weights, backgrounds: :func:`observed_normal_matrix`).
    """
    if normal is None:
        normal = sum(
            normal_matrix(np.asarray(op.image), op.kernel_shape, op.mode) for op in operators
        )
    shape = tuple(prior.output_shape)
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


def kernel_grid_transpose(whitened: WhitenedOperator, observed: jax.Array) -> np.ndarray:
    """``sum_i H_i^T S_i P_i y_i``: ``W^T y`` before the prior's ``T^T``, flattened.

    Prior-independent, so a model average computes it once for the image-sized
    transposed blur and each candidate maps it to its latent space.

    Parameters
    ----------
    whitened : WhitenedOperator
    observed : (n,) array
        Whitened observed data (:func:`observed_vector`).

    Returns
    -------
    (size,) ndarray
        On the flattened kernel grid (component-major for a field), float64.
    """
    return np.asarray(_grid_transpose(whitened, jnp.asarray(observed)), np.float64).reshape(-1)


_grid_transpose = jax.jit(_grid_adjoint)


def decompose(
    whitened: WhitenedOperator,
    observed: jax.Array,
    gram: np.ndarray | None = None,
    progress=None,
    grid_data: np.ndarray | None = None,
) -> Spectrum:
    """Eigendecompose ``W^T W`` or ``W W^T`` (the smaller) for the data ``B``.

    ``gram``: ``W^T W`` when already known (:func:`kernel_gram`); otherwise it is
    built by applying ``W^T W`` to unit vectors. ``progress``, if given, is
    called with ``1`` after each batch of those and after the eigendecomposition.
    ``grid_data``: :func:`kernel_grid_transpose` of ``observed`` when already
    known; then no image-sized blur is needed (kernel space only).

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
        if grid_data is None:
            transposed = np.asarray(whitened.transpose(jnp.asarray(data)))
        else:
            shape = (-1,) + tuple(whitened.prior.output_shape)
            transposed = np.asarray(
                _latent_transpose(Static(whitened.prior), jnp.asarray(grid_data.reshape(shape)))
            )[0]
        latent_projection = basis.T @ transposed
        return kernel_space_spectrum(
            eigenvalues, basis, latent_projection, data,
            lambda coeff: np.asarray(whitened.apply(jnp.asarray(coeff))), np,
            num_observed=whitened.num_effective,
            data_energy=None if grid_data is None else float(data @ data),
        )  # fmt: skip
    gram = _gram(lambda e: whitened.apply(whitened.transpose(e)), n, dtype, progress)
    eigenvalues, basis = scipy.linalg.eigh(gram, driver="evd", overwrite_a=True)
    if progress is not None:
        progress(1)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    projection = basis.T @ data
    return Spectrum(eigenvalues, projection**2, 0.0, basis, None, "data", whitened.num_effective)


def kernel_space_spectrum(
    eigenvalues,
    basis,
    latent_projection,
    data,
    apply,
    xp=jnp,
    num_observed: int | None = None,
    data_energy: float | None = None,
) -> Spectrum:
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
    num_observed : int, optional
        The data's degrees of freedom; default ``data.size`` (fewer with a
        background block projected out).
    data_energy : float, optional
        ``data @ data`` (NumPy only): the residual energy is then
        ``data_energy - sum(d^2)`` without a blur of the image, unless that
        difference cancels more than eight digits.
    """
    eigenvalues = xp.clip(eigenvalues, 0.0, None)
    # d_j = c_j / sqrt(g_j); directions with g ~ 0 carry no data.
    tiny = eigenvalues <= eigenvalues.max() * 1e-12
    safe = xp.where(tiny, 1.0, eigenvalues)
    projection_sq = xp.where(tiny, 0.0, latent_projection**2 / safe)
    energy = None
    if data_energy is not None:
        energy = data_energy - float(np.sum(projection_sq))
        energy = energy if energy > 1e-8 * data_energy else None
    if energy is None:
        # Residual of the least-squares fit, computed directly (no cancellation).
        residual = data - apply(basis @ xp.where(tiny, 0.0, latent_projection / safe))
        energy = residual @ residual
    return Spectrum(
        eigenvalues, projection_sq, float(energy) if xp is np else energy, basis,
        latent_projection, "kernel", int(data.size) if num_observed is None else num_observed,
    )  # fmt: skip


def likelihood_terms(spectrum: Spectrum) -> Spectrum:
    """What :func:`log_marginal_likelihood` reads, padded to a bucketed length.

    The eigenvectors are dropped, and the eigenvalues, the data's projections
    and the kernel sums' coordinates are padded with zeros to the next power of
    two (at least 128). The likelihood is unchanged: a zero eigenvalue adds
    ``log sigma^2`` to the log-determinant's sum, and the ``(n - r) log
    sigma^2`` term takes it off again; its projections are zero. Programs
    compiled for the hyperparameters (the grid's potential and gradient, the
    type-II objective) then serve every candidate prior and fit whose rank falls
    in the same bucket, instead of one each.

    Parameters
    ----------
    spectrum : Spectrum
        From :func:`decompose` (and :func:`constrain_sum`).

    Returns
    -------
    Spectrum
        Without ``basis`` and ``latent_projection``.
    """
    rank = int(np.shape(spectrum.eigenvalues)[0])
    length = max(_TERMS_LENGTH, 1 << max(rank - 1, 0).bit_length())

    def pad(values):
        if values is None:
            return None
        values = np.asarray(values)
        widths = [(0, 0)] * (values.ndim - 1) + [(0, length - rank)]
        return np.pad(values, widths)

    return replace(
        spectrum, basis=None, latent_projection=None,
        eigenvalues=pad(spectrum.eigenvalues),
        data_projection_sq=pad(spectrum.data_projection_sq),
        sum_along=pad(spectrum.sum_along), sum_data=pad(spectrum.sum_data),
    )  # fmt: skip


def log_marginal_likelihood(spectrum: Spectrum, noise_sigma, kernel_scale):
    """``log p(B | sigma, s)`` with the kernel integrated out; O(r), jax-traceable.

    With a fixed kernel sum (:func:`constrain_sum`): ``log p(B | sum(K) = c)``.
    """
    g = jnp.asarray(spectrum.eigenvalues)
    d2 = jnp.asarray(spectrum.data_projection_sq)
    n, r = spectrum.num_observed, g.shape[0]
    var_noise = noise_sigma**2
    total = var_noise + kernel_scale**2 * g
    log_det = (n - r) * jnp.log(var_noise) + jnp.sum(jnp.log(total))
    quad = spectrum.residual_energy / var_noise + jnp.sum(d2 / total)
    value = -0.5 * (n * jnp.log(2 * jnp.pi) + log_det + quad)
    if spectrum.sum_value is None:
        return value
    # p(B | D z = t) = p(B) N(t; D mu, D Sigma D^T) / N(t; 0, D D^T), t = sums / s.
    mean, covariance = _sum_moments(spectrum, var_noise, kernel_scale, total)
    target = jnp.asarray(spectrum.sum_value) / kernel_scale
    return (
        value
        + _log_normal(target - mean, covariance)
        - _log_normal(target, jnp.asarray(spectrum.sum_gram))
    )


def _log_normal(residual, covariance):
    """``log N(residual; 0, covariance)`` for a small dense covariance."""
    factor = jnp.linalg.cholesky(covariance)
    solved = jax.scipy.linalg.solve_triangular(factor, residual, lower=True)
    return -0.5 * (
        residual.shape[0] * jnp.log(2 * jnp.pi)
        + 2 * jnp.sum(jnp.log(jnp.diag(factor)))
        + solved @ solved
    )


def _sum_moments(spectrum: Spectrum, var_noise, kernel_scale, total):
    """Posterior mean ``(m,)`` and covariance ``(m, m)`` of ``D z`` given ``B``."""
    along, data = jnp.asarray(spectrum.sum_along), jnp.asarray(spectrum.sum_data)
    mean = kernel_scale * along @ (data / total)
    spread = (along / total) @ along.T
    if spectrum.space == "kernel":
        return mean, var_noise * spread
    return mean, jnp.asarray(spectrum.sum_gram) - kernel_scale**2 * spread


def sum_constraints(prior: LinearGaussianPrior) -> np.ndarray:
    """``D`` ``(m, p)``: the rows with ``D z = sum(K) / s`` for each summed kernel.

    One row for a kernel (``a = T^T 1``); for a field, one per component,
    ``sum(K_f) / s``, so that every position's kernel has the same sum.
    """
    shape = tuple(prior.output_shape)
    if len(shape) == 2:
        units = np.ones((1,) + shape)
    else:  # a field: components that can be non-zero
        count = getattr(prior, "num_terms", shape[0])
        units = np.zeros((count,) + shape)
        for index in range(count):
            units[index, index] = 1.0
    return np.asarray(prior.to_latent_transpose(jnp.asarray(units)), np.float64)


def constrain_sum(
    spectrum: Spectrum, whitened: WhitenedOperator, observed: jax.Array, kernel_sum: float
) -> Spectrum:
    """The spectrum of the model conditioned on ``sum(K) = kernel_sum`` exactly.

    ``K = s T z``, so the constraint is ``a^T z = kernel_sum / s`` with
    ``a = T^T 1``: a Gaussian conditioned on linear combinations. For a
    field, every position's kernel sums to ``kernel_sum``: ``sum(K_0) = c``
    and ``sum(K_f) = 0`` for the varying components. The marginal likelihood
    and draws stay closed-form (:func:`log_marginal_likelihood`,
    :func:`conditional_draws`). ``observed`` is the flat data vector the
    spectrum was made from.
    """
    directions = sum_constraints(whitened.prior)
    basis = np.asarray(spectrum.basis)
    if spectrum.space == "kernel":
        along = directions @ basis
        data = np.asarray(spectrum.latent_projection)
    else:
        mapped = np.asarray(whitened.apply(jnp.asarray(directions)))  # (m, n)
        along = mapped @ basis
        data = basis.T @ np.asarray(observed, np.float64)
    target = np.zeros(directions.shape[0])
    target[0] = float(kernel_sum)
    return replace(
        spectrum, sum_direction=directions, sum_along=along, sum_data=data,
        sum_gram=directions @ directions.T, sum_value=target,
    )  # fmt: skip


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
    total = sigma2 + scale**2 * g
    if spectrum.space == "kernel":
        # Posterior of u = V^T z: independent, precision 1 + s^2 g / sigma^2.
        c = jnp.asarray(spectrum.latent_projection)
        mean = scale * c / total
        sd = jnp.sqrt(sigma2 / total)
        xi = jax.random.normal(rng_key, (batch, g.shape[0]))
        latent = (mean + sd * xi) @ basis.T
    else:
        key_prior, key_noise = jax.random.split(rng_key)
        flat = observed.reshape(-1)
        z0 = jax.random.normal(key_prior, (batch, whitened.num_latent))
        noise = jnp.sqrt(sigma2) * jax.random.normal(key_noise, (batch, whitened.num_observed))
        residual = flat - scale * whitened.apply(z0) - noise
        weights = (residual @ basis) / total
        latent = z0 + scale * whitened.transpose(weights @ basis.T)
    if spectrum.sum_value is None:
        return latent
    # Conditioning by kriging: z + Sigma D^T (D Sigma D^T)^{-1} (t - D z) is an exact
    # draw given D z = t, Sigma the posterior covariance at these (sigma, s).
    directions = jnp.asarray(spectrum.sum_direction)  # (m, p)
    along = jnp.asarray(spectrum.sum_along)  # (m, r)
    if spectrum.space == "kernel":
        # (b, m, p): Sigma D^T per draw, transposed
        spread = (along[None] * (sigma2 / total)[:, None, :]) @ basis.T
    else:
        back = whitened.transpose((along[None] / total[:, None, :]) @ basis.T)  # (b, m, p)
        spread = directions[None] - (scale**2)[:, :, None] * back
    target = jnp.asarray(spectrum.sum_value)[None] / kernel_scale[:, None]  # (b, m)
    inner = spread @ directions.T  # (b, m, m): D Sigma D^T
    gap = jnp.linalg.solve(inner, (target - latent @ directions.T)[..., None])[..., 0]
    return latent + jnp.einsum("bm,bmp->bp", gap, spread)
