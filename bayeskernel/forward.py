"""The forward operator ``k -> convolve2d(A, k, mode)`` and its adjoint, in JAX.

The image ``A`` is known and fixed, so the blur is a *linear* map of the kernel.
:class:`ConvolutionOperator` holds what is computed once per image (its FFT on a
fast length) and applies the map and its transpose to kernels of a given shape.
Both agree with :func:`scipy.signal.convolve2d` for ``mode`` ``'full'``,
``'same'`` and ``'valid'``, for odd and even sizes and for kernels larger than
the image. No NumPyro in this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft

from bayeskernel.catalogue import MODES
from bayeskernel.shapes import output_shape, output_window

__all__ = [
    "MODES",
    "ConvolutionOperator",
    "convolve",
    "make_operator",
    "output_shape",
    "output_window",
]

Mode = Literal["full", "same", "valid"]

# Below this many multiply-adds (image pixels x kernel entries) the direct
# (lax.conv) route beats the FFT on CPU: benchmarks/bench_forward.py puts the
# crossover between 102,400 and 186,624 (docs/benchmarks.md).
_DIRECT_COST_LIMIT = 120_000


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class ConvolutionOperator:
    """Linear map ``kernel -> convolve2d(image, kernel, mode)`` and its transpose.

    Build it with :func:`make_operator`. It is a JAX pytree, so it can be passed
    through ``jit``/``vmap``; the image and its transform are leaves, shapes and
    the route are static.

    Attributes
    ----------
    image : (M, N) jax.Array
        The known input ``A``.
    image_fft : jax.Array or None
        ``rfft2(A)`` on ``fft_shape`` (FFT route only).
    kernel_shape : tuple of int
    mode : str
    route : {'fft', 'direct'}
    fft_shape : tuple of int
        Circular transform size, FFT route only: fast lengths at which the
        circular convolution equals the linear one on the output window.
    """

    image: jax.Array
    image_fft: jax.Array | None
    kernel_shape: tuple[int, int]
    mode: str = "same"
    route: str = "fft"
    fft_shape: tuple[int, int] = (0, 0)

    # --- pytree protocol -------------------------------------------------
    def tree_flatten(self):
        """Leaves (arrays) and static data, for JAX's pytree protocol."""
        return (self.image, self.image_fft), (
            self.kernel_shape,
            self.mode,
            self.route,
            self.fft_shape,
        )

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], children[1], *aux)

    # --- shapes ----------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.image.shape)

    @property
    def window(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return output_window(self.image_shape, self.kernel_shape, self.mode)

    @property
    def output_shape(self) -> tuple[int, int]:
        return self.window[1]

    # --- the map and its transpose ----------------------------------------
    def __call__(self, kernel: jax.Array) -> jax.Array:
        """Blur: ``convolve2d(image, kernel, mode)``; leading batch axes allowed."""
        (r0, c0), (h, w) = self.window
        if self.route == "fft":
            spectrum = self.image_fft * jnp.fft.rfft2(kernel, s=self.fft_shape)
            full = jnp.fft.irfft2(spectrum, s=self.fft_shape)
        else:
            full = _direct_full(self.image, kernel)
        return full[..., r0 : r0 + h, c0 : c0 + w]

    def adjoint(self, residual: jax.Array) -> jax.Array:
        """Transpose map: correlate an output-shaped array with the image.

        Parameters
        ----------
        residual : (..., H, W) jax.Array
            An array of :attr:`output_shape`; leading batch axes allowed.

        Returns
        -------
        (..., kh, kw) jax.Array
            Kernel-shaped ``g = H^T r``, with ``<H k, r> = <k, H^T r>``.
        """
        if self.route == "direct":
            return jax.linear_transpose(self.__call__, _zeros_like_kernel(self, residual))(
                residual
            )[0]
        (r0, c0), (h, w) = self.window
        padded = jnp.zeros(residual.shape[:-2] + self.fft_shape, residual.dtype)
        padded = padded.at[..., r0 : r0 + h, c0 : c0 + w].set(residual)
        spectrum = jnp.conj(self.image_fft) * jnp.fft.rfft2(padded)
        full = jnp.fft.irfft2(spectrum, s=self.fft_shape)
        kh, kw = self.kernel_shape
        return full[..., :kh, :kw]


def _zeros_like_kernel(op: ConvolutionOperator, residual: jax.Array) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(residual.shape[:-2] + tuple(op.kernel_shape), residual.dtype)


def _direct_full(image: jax.Array, kernel: jax.Array) -> jax.Array:
    """Full 2D convolution by lax.conv (which correlates: flip the kernel)."""
    kh, kw = kernel.shape[-2:]
    batch = kernel.shape[:-2]
    rhs = jnp.flip(kernel.reshape((-1, 1, kh, kw)), axis=(-2, -1))
    out = jax.lax.conv_general_dilated(
        image[None, None],
        rhs,
        window_strides=(1, 1),
        padding=[(kh - 1, kh - 1), (kw - 1, kw - 1)],
        precision=jax.lax.Precision.HIGHEST,
    )  # (1, batch, H, W)
    return out[0].reshape(batch + out.shape[-2:])


def make_operator(
    image: np.ndarray | jax.Array,
    kernel_shape: tuple[int, int],
    mode: Mode = "same",
    *,
    route: Literal["auto", "fft", "direct"] = "auto",
    dtype=None,
) -> ConvolutionOperator:
    """Build the blur operator for a known image.

    Parameters
    ----------
    image : (M, N) array_like
        The known input ``A``.
    kernel_shape : (int, int)
        Shape of the unknown kernel; may exceed ``image``'s shape.
    mode : {'same', 'full', 'valid'}
        Cropping of the output, exactly as :func:`scipy.signal.convolve2d`.
    route : {'auto', 'fft', 'direct'}
        ``'auto'`` uses the direct convolution for small problems and an FFT on
        fast (5-smooth) padded lengths otherwise.
    dtype : dtype, optional
        Floating dtype of the operator; defaults to JAX's default float
        (float64 inside :func:`jax.enable_x64`).

    Returns
    -------
    ConvolutionOperator
    """
    kernel_shape = tuple(int(s) for s in kernel_shape)
    image = jnp.asarray(image, dtype=dtype if dtype is not None else jnp.result_type(float))
    (r0, c0), (h, w) = output_window(image.shape, kernel_shape, mode)  # validates them
    full = tuple(a + k - 1 for a, k in zip(image.shape, kernel_shape))
    if route == "auto":
        cost = int(np.prod(image.shape)) * int(np.prod(kernel_shape))
        route = "direct" if cost <= _DIRECT_COST_LIMIT else "fft"
    if route == "direct":
        return ConvolutionOperator(image, None, kernel_shape, mode, "direct", full)
    if route != "fft":
        raise ValueError(f"route must be 'auto', 'fft' or 'direct', got {route!r}")
    # A circular convolution of length N equals the linear one on the output
    # window when no wrapped-around index lands in it, which needs far less than
    # the full length for 'same' and 'valid' (200 against 298 on the motivating
    # case: 2.2x fewer points). Then 5-smooth, as literal lengths make slow FFTs.
    fft_shape = (
        scipy.fft.next_fast_len(_circular_length(image.shape[0], kernel_shape[0], r0, h)),
        scipy.fft.next_fast_len(_circular_length(image.shape[1], kernel_shape[1], c0, w), True),
    )
    image_fft = jnp.fft.rfft2(image, s=fft_shape)
    return ConvolutionOperator(image, image_fft, kernel_shape, mode, "fft", fft_shape)


def _circular_length(image: int, kernel: int, start: int, size: int) -> int:
    """Shortest circular length whose convolution is exact on ``[start, start + size)``.

    Index ``j`` of the linear convolution (length ``L = image + kernel - 1``)
    wraps onto ``j mod N``: the window is untouched when ``N >= L - start`` and
    ``N >= start + size``; both factors must also fit (``N >= image, kernel``).
    The transpose (the adjoint) is exact on the kernel grid for the same ``N``.
    """
    full = image + kernel - 1
    return max(image, kernel, full - start, start + size)


def convolve(
    image: np.ndarray | jax.Array, kernel: np.ndarray | jax.Array, mode: Mode = "same"
) -> jax.Array:
    """``scipy.signal.convolve2d(image, kernel, mode)`` in JAX (jit/grad friendly).

    Parameters
    ----------
    image : (M, N) array_like
    kernel : (P, Q) array_like
    mode : {'same', 'full', 'valid'}

    Returns
    -------
    jax.Array
        Shape given by :func:`output_shape`; float64 when either input is
        float64 (computed inside ``jax.enable_x64``), else JAX's default float.

    Raises
    ------
    TypeError
        Complex input (the operator is real: its FFTs are real-to-complex).
    ValueError
        An input that is not a non-empty 2D array.
    """
    dtypes = [np.dtype(getattr(x, "dtype", np.float64)) for x in (image, kernel)]
    for name, value, dtype in zip(("image", "kernel"), (image, kernel), dtypes, strict=True):
        if np.issubdtype(dtype, np.complexfloating):
            raise TypeError(f"{name} must be real-valued, got dtype {dtype}")
        shape = np.shape(value)
        if len(shape) != 2 or 0 in shape:
            raise ValueError(f"{name} must be a non-empty 2D array, got shape {shape}")
    if np.dtype(np.float64) in dtypes and not jax.config.jax_enable_x64:
        # NumPy's float64 would otherwise be cut to float32 on the way in.
        with jax.enable_x64(True):
            return convolve(image, kernel, mode)
    kernel = jnp.asarray(kernel)
    kernel = kernel.astype(jnp.result_type(kernel.dtype, float))
    return make_operator(image, kernel.shape[-2:], mode, dtype=kernel.dtype)(kernel)
