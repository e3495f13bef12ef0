"""Accuracy and calibration measures used by tests, benchmarks and the demo."""

from __future__ import annotations

import numpy as np

__all__ = ["central_window", "coverage", "kernel_moments", "relative_error"]


def central_window(kernel_shape: tuple[int, int], size: tuple[int, int]) -> tuple[slice, slice]:
    """Slices of the ``size`` window centred in a kernel of ``kernel_shape``.

    Parameters
    ----------
    kernel_shape : (int, int)
        Shape of the kernel.
    size : (int, int)
        Shape of the window, at most ``kernel_shape``; when ``kernel_shape - size``
        is odd the window sits one pixel nearer the start.

    Returns
    -------
    (slice, slice)
        Row and column slices: ``kernel[central_window(kernel.shape, size)]`` has
        shape ``size``.
    """
    if any(s > k or s < 1 for k, s in zip(kernel_shape, size)):
        raise ValueError(
            f"size must be 1..kernel_shape per axis, got {tuple(size)} for {tuple(kernel_shape)}"
        )
    return tuple(slice((k - s) // 2, (k - s) // 2 + s) for k, s in zip(kernel_shape, size))


def relative_error(estimate: np.ndarray, truth: np.ndarray, region=None) -> float:
    """``||estimate - truth|| / ||truth||`` (Frobenius), optionally on a region.

    Parameters
    ----------
    estimate, truth : (..., P, Q) array_like
        Arrays of one shape (``truth`` not all zero).
    region : index, optional
        Applied to both before the norms, e.g. :func:`central_window`'s slices
        or a boolean mask. Default None: all entries.

    Returns
    -------
    float
    """
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    if region is not None:
        estimate, truth = estimate[region], truth[region]
    norm = np.linalg.norm(truth)
    if norm == 0:
        raise ValueError("truth is all zero: a relative error needs a nonzero reference")
    return float(np.linalg.norm(estimate - truth) / norm)


def coverage(lower: np.ndarray, upper: np.ndarray, truth: np.ndarray, region=None) -> float:
    """Fraction of true entries inside their intervals.

    Parameters
    ----------
    lower, upper : (..., P, Q) array_like
        Interval bounds of each entry (inclusive).
    truth : (..., P, Q) array_like
        The true values; broadcast against the bounds.
    region : index, optional
        Applied to the inside-or-not array before the mean, e.g.
        :func:`central_window`'s slices or a boolean mask. Default None: all entries.

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    inside = (np.asarray(lower) <= truth) & (truth <= np.asarray(upper))
    if region is not None:
        inside = inside[region]
    return float(np.mean(inside))


def kernel_moments(kernel: np.ndarray) -> tuple[float, float, float]:
    """Width, ellipticity and position angle of a kernel from its second moments.

    Negative entries (noise of an estimate) count as 0.

    Parameters
    ----------
    kernel : (..., P, Q) array_like

    Returns
    -------
    fwhm, ellipticity, angle : (...) ndarrays
        ``fwhm``: the full width at half maximum of a round Gaussian of the
        same mean second moment, ``2.3548 sqrt((I_yy + I_xx) / 2)``, in
        pixels; ``ellipticity``: ``sqrt((I_xx - I_yy)^2 + 4 I_xy^2) / (I_xx +
        I_yy)`` (0 for a round kernel); ``angle``: of the major axis from the
        column axis towards the row axis, in degrees.
    """
    weights = np.clip(np.asarray(kernel, np.float64), 0.0, None)
    rows, cols = np.mgrid[: weights.shape[-2], : weights.shape[-1]]
    total = np.maximum(weights.sum(axis=(-2, -1)), 1e-300)

    def mean(values):
        return np.sum(weights * values, axis=(-2, -1)) / total

    cy, cx = mean(rows), mean(cols)
    dy = rows - cy[..., None, None]
    dx = cols - cx[..., None, None]
    iyy, ixx, ixy = mean(dy**2), mean(dx**2), mean(dx * dy)
    trace = np.maximum(ixx + iyy, 1e-300)
    fwhm = 2.3548 * np.sqrt(trace / 2)
    ellipticity = np.sqrt((ixx - iyy) ** 2 + 4 * ixy**2) / trace
    angle = 0.5 * np.degrees(np.arctan2(2 * ixy, ixx - iyy))
    return fwhm, ellipticity, angle
