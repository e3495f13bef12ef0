"""Accuracy and calibration measures used by tests, benchmarks and the demo."""

from __future__ import annotations

import numpy as np

__all__ = ["central_window", "coverage", "relative_error"]


def central_window(kernel_shape: tuple[int, int], size: tuple[int, int]) -> tuple[slice, slice]:
    """Slices of the ``size`` window centred in a kernel of ``kernel_shape``."""
    return tuple(slice((k - s) // 2, (k - s) // 2 + s) for k, s in zip(kernel_shape, size))


def relative_error(estimate: np.ndarray, truth: np.ndarray, region=None) -> float:
    """``||estimate - truth|| / ||truth||`` (Frobenius), optionally on a region."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    if region is not None:
        estimate, truth = estimate[region], truth[region]
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def coverage(lower: np.ndarray, upper: np.ndarray, truth: np.ndarray, region=None) -> float:
    """Fraction of true entries inside their intervals."""
    inside = (np.asarray(lower) <= truth) & (truth <= np.asarray(upper))
    if region is not None:
        inside = inside[region]
    return float(np.mean(inside))
