"""A kernel finer than the sensor: blur on a fine grid, then sum into sensor pixels.

With ``oversample = (s_y, s_x)`` the known input ``A`` and the kernel ``K`` live
on a grid ``s`` times finer than ``B``'s, and each sensor pixel collects a
block of ``s_y x s_x`` fine pixels of the fine convolution:

    B[i, j] = sum_{a < s_y, b < s_x} F[s_y i + a, s_x j + b],
    F = convolve2d(A_fine, K_fine, mode),

for ``0 <= i < F.shape[0] // s_y`` and ``0 <= j < F.shape[1] // s_x``: the
blocks start at ``F``'s first row and column, and a last partial block
(when ``F``'s side is not a multiple of ``s``) is not observed. With
``mode='same'``, ``F`` has ``A_fine``'s shape, so an ``A_fine`` of
``s`` times ``B``'s shape gives every pixel of ``B``. The map is linear in
``K_fine``: :class:`BinnedOperator` has the interface of
:class:`~bayeskernel.forward.ConvolutionOperator`, and every route of the
exact pipeline takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from bayeskernel.forward import ConvolutionOperator, make_operator, output_shape

__all__ = [
    "BinnedOperator",
    "bin_image",
    "binned_shape",
    "check_oversample",
    "make_binned_operator",
]

MAX_OVERSAMPLE = 8


def check_oversample(oversample) -> tuple[int, int] | None:
    """``None`` (no oversampling), an integer ``s >= 1`` or a pair of them, as ``(s_y, s_x)``.

    Parameters
    ----------
    oversample : int, (int, int) or None
        ``fit``'s ``oversample``: one factor for both axes, or rows and columns.

    Returns
    -------
    (int, int) or None
        ``(s_y, s_x)``; None for None and for ``(1, 1)`` (no oversampling).

    Raises
    ------
    ValueError
        For anything but integers ``1 .. MAX_OVERSAMPLE`` (bools refused), one
        or two of them.
    """
    if oversample is None:
        return None
    values = oversample if isinstance(oversample, (tuple, list)) else (oversample, oversample)
    if len(values) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
        and 1 <= v <= MAX_OVERSAMPLE
        for v in values
    ):  # fmt: skip
        raise ValueError(
            f"oversample must be an integer 1..{MAX_OVERSAMPLE} or a pair of them (rows, "
            f"columns), got {oversample!r}"
        )
    factor = (int(values[0]), int(values[1]))
    return None if factor == (1, 1) else factor


def binned_shape(fine_shape: tuple[int, int], factor: tuple[int, int]) -> tuple[int, int]:
    """Sensor pixels of a fine grid: whole blocks only.

    Parameters
    ----------
    fine_shape : (int, int)
        Shape on the fine grid.
    factor : (int, int)
        Fine pixels per sensor pixel, ``(s_y, s_x)``.

    Returns
    -------
    (int, int)
        ``(H_f // s_y, W_f // s_x)``.
    """
    return tuple(int(n) // int(s) for n, s in zip(fine_shape, factor))


def bin_image(fine, factor: tuple[int, int]):
    """Sum ``(..., H_f, W_f)`` into ``s_y x s_x`` blocks from the first row and column.

    Parameters
    ----------
    fine : (..., H_f, W_f) ndarray or jax.Array
        Images on the fine grid; a last partial block is left out.
    factor : (int, int)
        ``(s_y, s_x)``.

    Returns
    -------
    (..., H_f // s_y, W_f // s_x) ndarray or jax.Array
        NumPy in, NumPy out, JAX in, JAX out.
    """
    xp = jnp if isinstance(fine, jax.Array) else np
    height, width = binned_shape(fine.shape[-2:], factor)
    sy, sx = factor
    cropped = fine[..., : height * sy, : width * sx]
    blocks = cropped.reshape(cropped.shape[:-2] + (height, sy, width, sx))
    return xp.sum(blocks, axis=(-3, -1))


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class BinnedOperator:
    """``K_fine -> bin(convolve2d(A_fine, K_fine, mode))`` and its transpose.

    Attributes
    ----------
    base : ConvolutionOperator
        The blur on the fine grid.
    factor : (int, int)
        Fine pixels per sensor pixel, rows and columns.
    """

    base: ConvolutionOperator
    factor: tuple[int, int]

    def tree_flatten(self):
        """Leaves (arrays) and static data, for JAX's pytree protocol."""
        return (self.base,), self.factor

    @classmethod
    def tree_unflatten(cls, factor, children):
        return cls(children[0], factor)

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
    def image_shape(self) -> tuple[int, int]:
        return self.base.image_shape

    @property
    def fine_shape(self) -> tuple[int, int]:
        return self.base.output_shape

    @property
    def output_shape(self) -> tuple[int, int]:
        return binned_shape(self.base.output_shape, self.factor)

    def __call__(self, kernel: jax.Array) -> jax.Array:
        """``(..., kh, kw)`` fine kernels to ``(..., H, W)`` sensor images."""
        return bin_image(self.base(kernel), self.factor)

    def adjoint(self, residual: jax.Array) -> jax.Array:
        """``(..., H, W)`` to ``(..., kh, kw)``: each sensor value spread over its block.

        Parameters
        ----------
        residual : (..., H, W) jax.Array
            An array of :attr:`output_shape` (sensor pixels); leading batch axes
            allowed.

        Returns
        -------
        (..., kh, kw) jax.Array
            On the fine grid of the kernel.
        """
        sy, sx = self.factor
        spread = jnp.repeat(jnp.repeat(residual, sy, axis=-2), sx, axis=-1)
        fine_h, fine_w = self.fine_shape
        pad = [(0, 0)] * (residual.ndim - 2)
        pad += [(0, fine_h - spread.shape[-2]), (0, fine_w - spread.shape[-1])]
        return self.base.adjoint(jnp.pad(spread, pad))


def make_binned_operator(
    fine_image, kernel_shape: tuple[int, int], mode: str, factor: tuple[int, int], **kwargs
) -> BinnedOperator:
    """The binned blur of a fine-grid image (``kwargs`` as :func:`make_operator` takes them).

    Parameters
    ----------
    fine_image : (M, N) array_like
        The known input ``A`` on the fine grid.
    kernel_shape : (int, int)
        Shape of the kernel on the fine grid.
    mode : {'same', 'full', 'valid'}
        Cropping of the fine convolution, as :func:`scipy.signal.convolve2d`.
    factor : (int, int)
        Fine pixels per sensor pixel, ``(s_y, s_x)`` (:func:`check_oversample`).
    **kwargs
        ``route`` and ``dtype`` of :func:`~bayeskernel.forward.make_operator`.

    Returns
    -------
    BinnedOperator
        Its ``output_shape`` is :func:`binned_shape` of the fine output's shape.

    Raises
    ------
    ValueError
        A fine output smaller than one sensor pixel, or shapes that ``mode``
        cannot take.
    """
    fine = output_shape(np.shape(fine_image), kernel_shape, mode)
    if min(binned_shape(fine, factor)) < 1:
        raise ValueError(
            f"convolve2d of A {np.shape(fine_image)} with kernel_shape {tuple(kernel_shape)} "
            f"(mode={mode!r}) has shape {tuple(fine)}: smaller than one sensor pixel of "
            f"oversample {factor}"
        )
    return BinnedOperator(make_operator(fine_image, kernel_shape, mode, **kwargs), tuple(factor))
