"""Data shipped with the package."""

from __future__ import annotations

from importlib import resources

import numpy as np

from bayeskernel.simulation import SimulatedCase, make_kernel

__all__ = ["motivating_example"]


def motivating_example() -> SimulatedCase:
    """The motivating case, as shipped: identical on every machine.

    A 100x100 Bernoulli(0.2) image, the 199x199 ``1/r`` kernel (centre 0),
    ``oaconvolve(A, K, 'same')`` plus N(0, 1) noise. Made once by
    ``bayeskernel.motivating_case(100, seed=0)`` and stored, so that results do
    not depend on NumPy's random streams.
    """
    with resources.files("bayeskernel.data").joinpath("motivating_case.npz").open("rb") as fh:
        data = np.load(fh)
        image, observed, sigma = data["A"].astype(float), data["B"], float(data["noise_sigma"])
    kernel = make_kernel("inverse_distance", (199, 199))
    return SimulatedCase(image, observed, kernel, sigma, "same")
