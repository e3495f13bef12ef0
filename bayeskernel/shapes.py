"""Shapes of ``scipy.signal.convolve2d``'s outputs, and a NumPy convolution by FFT.

Pure NumPy and SciPy's FFT: results and checks read them without loading JAX
(or ``scipy.signal``, which costs more to import than the convolution it does).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from bayeskernel.catalogue import MODES

__all__ = ["fft_convolve", "output_shape", "output_window"]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def output_window(
    image_shape: tuple[int, int], kernel_shape: tuple[int, int], mode: str
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Start and shape of the output window inside the ``'full'`` convolution.

    Parameters
    ----------
    image_shape, kernel_shape : tuple of int
        Shapes of ``A`` and ``K``.
    mode : {'full', 'same', 'valid'}
        As in :func:`scipy.signal.convolve2d`.

    Returns
    -------
    start, shape : tuple of int
        The output is ``full[start[0]:start[0]+shape[0], start[1]:start[1]+shape[1]]``.

    Raises
    ------
    ValueError
        For ``'valid'`` when neither array is at least as large as the other in
        every dimension (SciPy refuses that case too).
    """
    _check_mode(mode)
    if mode == "full":
        return (0, 0), tuple(a + k - 1 for a, k in zip(image_shape, kernel_shape))
    if mode == "same":
        # scipy centres 'same' on the full output: offset (k - 1) // 2 per axis.
        return tuple((k - 1) // 2 for k in kernel_shape), tuple(image_shape)
    image_bigger = all(a >= k for a, k in zip(image_shape, kernel_shape))
    kernel_bigger = all(k >= a for a, k in zip(image_shape, kernel_shape))
    if not (image_bigger or kernel_bigger):
        raise ValueError(
            f"kernel_shape {tuple(kernel_shape)} is impossible for mode='valid' with an "
            f"image of shape {tuple(image_shape)}: one must be at least as large as the "
            "other in every dimension"
        )
    start = tuple(min(a, k) - 1 for a, k in zip(image_shape, kernel_shape))
    shape = tuple(abs(a - k) + 1 for a, k in zip(image_shape, kernel_shape))
    return start, shape


def output_shape(
    image_shape: tuple[int, int], kernel_shape: tuple[int, int], mode: str
) -> tuple[int, int]:
    """Shape of ``convolve2d(A, K, mode)`` for the given shapes.

    Parameters
    ----------
    image_shape, kernel_shape : (int, int)
        Shapes of ``A`` and ``K``.
    mode : {'full', 'same', 'valid'}
        As in :func:`scipy.signal.convolve2d`.

    Returns
    -------
    (int, int)

    Raises
    ------
    ValueError
        For an unknown ``mode``, or for ``'valid'`` when neither shape is at least
        as large as the other in every dimension.
    """
    return output_window(image_shape, kernel_shape, mode)[1]


def fft_convolve(image: np.ndarray, kernel: np.ndarray, mode: str = "same") -> np.ndarray:
    """``scipy.signal.convolve2d(image, kernel, mode)`` by FFT, in float64 NumPy.

    Parameters
    ----------
    image : (M, N) array_like
    kernel : (P, Q) array_like
    mode : {'same', 'full', 'valid'}

    Returns
    -------
    ndarray
        Of shape :func:`output_shape`; equal to SciPy's to rounding (about
        1e-15 of the largest output).
    """
    image = np.asarray(image, np.float64)
    kernel = np.asarray(kernel, np.float64)
    (r0, c0), (h, w) = output_window(image.shape, kernel.shape, mode)
    full = tuple(a + k - 1 for a, k in zip(image.shape, kernel.shape))
    size = tuple(scipy.fft.next_fast_len(n, real=True) for n in full)
    spectrum = scipy.fft.rfft2(image, size) * scipy.fft.rfft2(kernel, size)
    return scipy.fft.irfft2(spectrum, size)[r0 : r0 + h, c0 : c0 + w]
