"""A kernel that varies across the field: one more block of the linear model.

The kernel at output pixel ``x`` is

    K(u; x) = sum_p phi_p(x) K_p(u),

with ``phi_p`` the monomials ``y^a x^b`` (``a + b <= order``) of the pixel
position normalised to ``[-1, 1]`` across ``B``, in the order of
:func:`bayeskernel.observation.background_terms` (``1, y, x, y^2, y x,
x^2, ...``). Every non-constant monomial vanishes at the centre of ``B``, so
``K_0`` is the kernel there. The blurred image

    B(x) = sum_p phi_p(x) (A * K_p)(x)

is linear in the components ``K_p``: :class:`FieldOperator` maps a stack of
components ``(P, kh, kw)`` to ``B``'s grid and back, with the same interface as
:class:`~bayeskernel.forward.ConvolutionOperator`, so the exact route's
solvers take it as they take one kernel (Alard 2000 for the construction;
the components' priors are in :mod:`bayeskernel.priors.field`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from bayeskernel.forward import ConvolutionOperator
from bayeskernel.observation import background_design, background_terms

__all__ = [
    "MAX_SPATIAL_ORDER",
    "FieldOperator",
    "check_spatial_order",
    "evaluate_field",
    "field_basis",
    "field_order",
    "field_terms",
    "make_field_operator",
    "num_field_terms",
    "position_basis",
]

# Beyond cubic the components outnumber what a field of a few hundred stars
# constrains, and the peers (HOTPANTS, SFFT, the Rubin pipelines) stop at 2-3.
MAX_SPATIAL_ORDER = 3


def check_spatial_order(order) -> int | str:
    """``'auto'`` or a polynomial order ``0 .. MAX_SPATIAL_ORDER``.

    Parameters
    ----------
    order : int or 'auto'
        ``fit``'s ``spatial_order``.

    Returns
    -------
    int or 'auto'
        The order as a Python int, or ``'auto'`` as given.

    Raises
    ------
    ValueError
        For another string, a bool, a non-integer, or an order outside
        ``0 .. MAX_SPATIAL_ORDER``.
    """
    if isinstance(order, str) and order == "auto":
        return order
    if (
        isinstance(order, (bool, np.bool_))
        or not isinstance(order, (int, np.integer))
        or not 0 <= order <= MAX_SPATIAL_ORDER
    ):
        raise ValueError(
            f"spatial_order must be 'auto' or a polynomial order 0..{MAX_SPATIAL_ORDER} "
            f"(0: one kernel for the whole image), got {order!r}"
        )
    return int(order)


def num_field_terms(order: int) -> int:
    """Number of components ``P = (order + 1) (order + 2) / 2``.

    Parameters
    ----------
    order : int
        Polynomial order of the field (``>= 0``).

    Returns
    -------
    int
    """
    return (order + 1) * (order + 2) // 2


def field_order(num_terms: int) -> int:
    """The polynomial order of a field of ``num_terms`` components.

    Parameters
    ----------
    num_terms : int
        ``P``, one of 1, 3, 6, 10.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        A count that no order up to :data:`MAX_SPATIAL_ORDER` has.
    """
    for order in range(MAX_SPATIAL_ORDER + 1):
        if num_field_terms(order) == num_terms:
            return order
    counts = [num_field_terms(d) for d in range(MAX_SPATIAL_ORDER + 1)]
    raise ValueError(f"num_terms must be one of {counts}, got {num_terms!r}")


def field_terms(order: int) -> tuple[str, ...]:
    """The components' monomials: ``('1', 'y', 'x', 'y^2', 'y x', 'x^2')`` for order 2.

    Parameters
    ----------
    order : int
        Polynomial order of the field (``>= 0``).

    Returns
    -------
    tuple of str
        :func:`num_field_terms` names, in the order of the components.
    """
    return background_terms(order)


def field_basis(shape: tuple[int, int], order: int) -> np.ndarray:
    """The monomials on ``B``'s grid.

    Parameters
    ----------
    shape : (int, int)
        ``B``'s shape ``(H, W)``.
    order : int
        Polynomial order of the field (``>= 0``).

    Returns
    -------
    (P, H, W) ndarray
        Monomial ``p`` (of :func:`field_terms`) of the pixel position
        normalised to ``[-1, 1]`` per axis.
    """
    design = background_design(tuple(shape), order)
    return np.ascontiguousarray(design.T.reshape((-1,) + tuple(shape)))


def position_basis(y, x, shape: tuple[int, int], order: int) -> np.ndarray:
    """The monomials at pixel positions ``(y, x)`` of ``B`` (sub-pixel allowed).

    Parameters
    ----------
    y, x : float or array_like
        Row and column in ``B``'s pixel coordinates (0 .. H-1, 0 .. W-1).
    shape : (int, int)
        ``B``'s shape.
    order : int

    Returns
    -------
    (..., P) ndarray
    """
    y, x = np.broadcast_arrays(np.asarray(y, np.float64), np.asarray(x, np.float64))
    ny = 2.0 * y / (shape[0] - 1) - 1.0 if shape[0] > 1 else np.zeros_like(y)
    nx = 2.0 * x / (shape[1] - 1) - 1.0 if shape[1] > 1 else np.zeros_like(x)
    columns = []
    for total in range(order + 1):
        for a in range(total, -1, -1):
            columns.append(ny**a * nx ** (total - a))
    return np.stack(columns, axis=-1)


def evaluate_field(components, y, x, shape: tuple[int, int]) -> np.ndarray:
    """The kernel at positions ``(y, x)`` from field components.

    Parameters
    ----------
    components : (..., P, kh, kw) array_like
    y, x : float
        A pixel position of ``B``.
    shape : (int, int)
        ``B``'s shape.

    Returns
    -------
    (..., kh, kw) ndarray
    """
    components = np.asarray(components)
    order = field_order(components.shape[-3])
    weights = position_basis(y, x, shape, order).astype(components.dtype)
    return np.tensordot(components, weights, axes=([-3], [0])).transpose(
        tuple(range(components.ndim - 3)) + (-2, -1)
    )


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class FieldOperator:
    """``(K_0 .. K_{P-1}) -> sum_p phi_p * convolve2d(A, K_p, mode)`` and its transpose.

    Build it with :func:`make_field_operator`. A pytree like the operator it
    wraps (the basis a leaf), so jitted code compiles once per shape.

    Attributes
    ----------
    base : ConvolutionOperator
        The blur of one kernel.
    basis : (P, H, W) jax.Array
        The monomials on the output grid.
    """

    base: ConvolutionOperator
    basis: jax.Array

    def tree_flatten(self):
        """Leaves (arrays) and static data, for JAX's pytree protocol."""
        return (self.base, self.basis), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)

    # The wrapped operator's shapes and data, so code written for one kernel reads them.
    @property
    def image(self) -> jax.Array:
        return self.base.image

    @property
    def kernel_shape(self) -> tuple[int, int]:
        return self.base.kernel_shape

    @property
    def mode(self) -> str:
        return self.base.mode

    @property
    def window(self):
        return self.base.window

    @property
    def output_shape(self) -> tuple[int, int]:
        return self.base.output_shape

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.base.image_shape

    @property
    def num_terms(self) -> int:
        return int(self.basis.shape[0])

    def __call__(self, components: jax.Array) -> jax.Array:
        """``(..., P, kh, kw)`` components to the ``(..., H, W)`` blurred image."""
        return jnp.sum(self.basis * self.base(components), axis=-3)

    def adjoint(self, residual: jax.Array) -> jax.Array:
        """``(..., H, W)`` to ``(..., P, kh, kw)``: ``H^T (phi_p r)`` for each ``p``.

        Parameters
        ----------
        residual : (..., H, W) jax.Array
            An array of :attr:`output_shape`; leading batch axes allowed.

        Returns
        -------
        (..., P, kh, kw) jax.Array
        """
        return self.base.adjoint(residual[..., None, :, :] * self.basis)


def make_field_operator(operator: ConvolutionOperator, order: int) -> FieldOperator:
    """The field operator of ``order`` around a one-kernel blur.

    Parameters
    ----------
    operator : ConvolutionOperator
        The blur of one kernel (:func:`~bayeskernel.forward.make_operator`).
    order : int
        Polynomial order of the field (``>= 0``).

    Returns
    -------
    FieldOperator
        Its ``basis`` is :func:`field_basis` on ``operator.output_shape``, of
        shape ``(P, H, W)`` in the image's dtype.
    """
    basis = field_basis(operator.output_shape, order)
    return FieldOperator(operator, jnp.asarray(basis, operator.image.dtype))
