"""Input checks with messages that name the argument and what was expected."""

from __future__ import annotations

import warnings

import numpy as np

from bayeskernel.catalogue import MODES
from bayeskernel.shapes import output_window

__all__ = ["check_fit_inputs", "check_kernel_shape"]


def _as_float_2d(name: str, value) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as error:  # pragma: no cover - exotic objects
        raise TypeError(f"{name} must be a 2D numeric array: {error}") from None
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise TypeError(f"{name} must be a 2D numeric array, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real-valued, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2D array, got {array.ndim} dimension(s) {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    return array.astype(np.float64)


# The fit squares A and B (normal matrices, quadratic forms) and multiplies
# them by the kernel: values beyond this magnitude overflow or underflow float64
# (about 1e+-308) on the way. Calibration data are rarely beyond 1e+-10.
MAX_MAGNITUDE = 1e100


def _check_range(name: str, values: np.ndarray) -> None:
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    if largest > MAX_MAGNITUDE or 0 < largest < 1 / MAX_MAGNITUDE:
        raise ValueError(
            f"{name}'s values reach {largest:.3g} in size: rescale {name} to values of order "
            f"one (the fit squares them, and float64 ends near 1e308); the kernel scales "
            "with B / A"
        )


def check_kernel_shape(kernel_shape) -> tuple[int, int]:
    """Validate ``kernel_shape`` as two positive integers."""
    try:
        shape = tuple(kernel_shape)
    except TypeError:
        raise TypeError(
            f"kernel_shape must be a pair of positive integers, got {kernel_shape!r}"
        ) from None
    if len(shape) != 2 or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ValueError(f"kernel_shape must be a pair of positive integers, got {kernel_shape!r}")
    return int(shape[0]), int(shape[1])


def check_fit_inputs(image, observed, kernel_shape, mode: str, mask=None, oversample=None):
    """Check and convert the data of a fit.

    A masked ``B`` (:mod:`numpy.ma`) leaves its masked pixels out, as NaN and
    ``mask`` do; a masked ``A`` with masked values is refused (the input must
    be known everywhere).

    ``oversample`` ``(s_y, s_x)``: ``A`` and the kernel are on a grid that
    much finer than ``B`` (:mod:`bayeskernel.binning`).

    Returns
    -------
    image, observed : float64 ndarray
        ``observed`` with unobserved pixels set to 0.
    kernel_shape : (int, int)
    mask : bool ndarray or None
        ``True`` where ``B`` is observed; ``None`` when every pixel is.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if np.ma.isMaskedArray(image) and np.ma.getmaskarray(image).any():
        raise ValueError(
            f"A is a masked array with {int(np.ma.count_masked(image))} masked value(s): the "
            "input image must be fully known; fill them (A.filled(value)) if they are known"
        )
    image = _as_float_2d("A", np.ma.getdata(image))
    if np.ma.isMaskedArray(observed):
        # Masked pixels are unobserved, exactly as NaN or mask= mark them.
        hidden = np.ma.getmaskarray(observed)
        observed = _as_float_2d("B", np.ma.getdata(observed))
        observed = np.where(hidden, np.nan, observed)
    else:
        observed = _as_float_2d("B", observed)
    kernel_shape = check_kernel_shape(kernel_shape)
    if not np.all(np.isfinite(image)):
        raise ValueError("A contains NaN or inf; the input image must be fully known")
    if np.any(np.isinf(observed)):
        raise ValueError("B contains inf; mark unobserved pixels with NaN or a mask instead")
    _, expected = output_window(image.shape, kernel_shape, mode)
    if oversample is not None:
        fine = tuple(expected)
        expected = tuple(n // s for n, s in zip(fine, oversample))
        if observed.shape != expected:
            raise ValueError(
                f"B has shape {observed.shape}, but convolve2d(A, K, mode={mode!r}) with A of "
                f"shape {image.shape} and kernel_shape {kernel_shape} on the fine grid has "
                f"shape {fine}, which oversample={tuple(oversample)} bins to {expected} (give A "
                f"on the fine grid: e.g. {tuple(n * s for n, s in zip(observed.shape, oversample))}"
                " for mode='same')"
            )
    elif observed.shape != tuple(expected):
        raise ValueError(
            f"B has shape {observed.shape}, but convolve2d(A, K, mode={mode!r}) with A of "
            f"shape {image.shape} and kernel_shape {kernel_shape} has shape {tuple(expected)}"
        )
    if not np.any(image):
        raise ValueError("A is all zeros: the data carry no information about the kernel")
    for name, values in (("A", image), ("B", observed[np.isfinite(observed)])):
        _check_range(name, values)
    observed_mask = np.isfinite(observed)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != observed.shape:
            raise ValueError(f"mask has shape {mask.shape}, expected B's shape {observed.shape}")
        if mask.dtype != np.bool_:
            raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
        observed_mask &= mask
    if not observed_mask.any():
        raise ValueError("no pixel of B is observed (all NaN or masked out)")
    if np.ptp(observed[observed_mask]) == 0:
        warnings.warn(
            "B is constant over the observed pixels; the fit can only say the kernel is "
            "small or constant-summing",
            stacklevel=3,
        )
    observed = np.where(observed_mask, observed, 0.0)
    return image, observed, kernel_shape, (None if observed_mask.all() else observed_mask)
