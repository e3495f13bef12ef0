"""Reproducible synthetic cases: a known image, a kernel family, noise."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
from scipy.signal import oaconvolve

from bayeskernel._validation import check_kernel_shape
from bayeskernel.forward import MODES, output_shape

__all__ = ["KERNELS", "SimulatedCase", "make_kernel", "motivating_case", "simulate"]


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets from the kernel's centre pixel ((n - 1) / 2)."""
    rows = np.arange(shape[0]) - (shape[0] - 1) / 2
    cols = np.arange(shape[1]) - (shape[1] - 1) / 2
    return np.meshgrid(rows, cols, indexing="ij")


def _inverse_distance(shape, **_):
    y, x = _grid(shape)
    r = np.hypot(y, x)
    with np.errstate(divide="ignore"):
        kernel = np.where(r > 0, 1.0 / np.where(r > 0, r, 1.0), 0.0)
    return kernel


def _gaussian(shape, width=None, width_col=None, angle=0.0, **_):
    width = width if width is not None else max(shape) / 6
    width_col = width_col if width_col is not None else width
    y, x = _grid(shape)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * y + s * x, -s * y + c * x
    kernel = np.exp(-0.5 * ((u / width) ** 2 + (v / width_col) ** 2))
    return kernel / kernel.sum()


def _anisotropic_gaussian(shape, width=None, **kwargs):
    width = width if width is not None else max(shape) / 5
    return _gaussian(shape, width=width, width_col=width / 2.5, angle=np.pi / 6)


def _disk(shape, radius=None, **_):
    radius = radius if radius is not None else (min(shape) - 1) / 2 * 0.8
    y, x = _grid(shape)
    kernel = (np.hypot(y, x) <= radius).astype(float)
    return kernel / kernel.sum()


def _motion(shape, length=None, angle=np.pi / 5, **_):
    length = length if length is not None else 0.8 * min(shape)
    y, x = _grid(shape)
    along = np.cos(angle) * x + np.sin(angle) * y
    across = -np.sin(angle) * x + np.cos(angle) * y
    kernel = np.clip(1.0 - np.abs(across), 0, None) * (np.abs(along) <= length / 2)
    return kernel / kernel.sum()


def _telescope(
    shape, width=2.0, obscuration=0.3, spiders=4, aberration=0.08, shift=(0.0, 0.0), **_
):
    """A telescope's PSF: annular aperture, spider vanes, low-order aberrations.

    ``width`` is lambda / D in pixels (2.0: the first dark ring at about 2.4
    pixels), ``aberration`` the rms wavefront error in waves (defocus,
    astigmatism and coma in fixed proportions), ``shift`` a sub-pixel offset
    of the centre (rows, columns; a phase ramp over the pupil, so the PSF is
    sampled exactly at shifted positions).
    """
    size = 256
    diameter = size / width
    u = (np.arange(size) - size / 2) / (diameter / 2)
    yy, xx = np.meshgrid(u, u, indexing="ij")
    rho, theta = np.hypot(yy, xx), np.arctan2(yy, xx)
    pupil = ((rho <= 1.0) & (rho >= obscuration)).astype(float)
    for k in range(spiders):
        angle = np.pi / 4 + k * np.pi / spiders
        across = np.abs(-np.sin(angle) * xx + np.cos(angle) * yy)
        pupil[across < 0.02] = 0.0
    modes = (
        np.sqrt(3) * (2 * rho**2 - 1),  # defocus
        np.sqrt(6) * rho**2 * np.cos(2 * theta),  # astigmatism
        np.sqrt(8) * (3 * rho**3 - 2 * rho) * np.cos(theta),  # coma
    )
    weights = np.array([0.5, 0.7, 0.5]) / np.sqrt(0.5**2 + 0.7**2 + 0.5**2)
    phase = 2 * np.pi * aberration * sum(w * m for w, m in zip(weights, modes))
    index = np.arange(size) - size / 2
    # F(x - d) = sum_u p(u) exp(2 pi i u d / N) exp(-2 pi i u x / N)
    phase = phase + 2 * np.pi * (index[:, None] * shift[0] + index[None, :] * shift[1]) / size
    field = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(pupil * np.exp(1j * phase))))
    psf = np.abs(field) ** 2
    rows = size // 2 - (shape[0] - 1) // 2
    cols = size // 2 - (shape[1] - 1) // 2
    kernel = psf[rows : rows + shape[0], cols : cols + shape[1]]
    return kernel / kernel.sum()


KERNELS = {
    "telescope": _telescope,
    "inverse_distance": _inverse_distance,
    "gaussian": _gaussian,
    "anisotropic_gaussian": _anisotropic_gaussian,
    "disk": _disk,
    "motion": _motion,
}


def make_kernel(family: str, shape: tuple[int, int], **params) -> np.ndarray:
    """A kernel of a named family, centred at pixel ``((P - 1) / 2, (Q - 1) / 2)``.

    Parameters
    ----------
    family : {'inverse_distance', 'gaussian', 'anisotropic_gaussian', 'disk', 'motion', \
'telescope'}
        ``inverse_distance`` is ``1/r`` with the centre set to 0 (the motivating
        case); the others sum to one. ``telescope``: the PSF of an obscured
        aperture with four spider vanes and low-order aberrations (``width``
        is lambda / D in pixels, default 2; ``aberration`` the rms wavefront
        error in waves, default 0.08).
    shape : (int, int)
    **params
        Family parameters (``width``, ``radius``, ``length``, ``angle``).

    Returns
    -------
    (P, Q) ndarray
        The kernel, float64, of ``shape``.

    Raises
    ------
    ValueError
        For an unknown ``family``, a ``width``, ``width_col``, ``radius`` or
        ``length`` that is not a positive finite number, a non-finite ``angle``,
        or parameters that leave no nonzero entry in ``shape``.
    TypeError
        When ``shape`` is not a sequence.
    """
    if family not in KERNELS:
        raise ValueError(f"family must be one of {sorted(KERNELS)}, got {family!r}")
    accepted = [
        name for name, p in inspect.signature(KERNELS[family]).parameters.items()
        if p.kind is p.POSITIONAL_OR_KEYWORD and name != "shape"
    ]  # fmt: skip
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"a {family!r} kernel takes {', '.join(accepted) or 'no parameters'}; got "
            f"{', '.join(unknown)}"
        )
    for name in ("width", "width_col", "radius", "length"):
        value = params.get(name)
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if "angle" in params and not np.isfinite(params["angle"]):
        raise ValueError(f"angle must be a finite number, got {params['angle']!r}")
    shape = check_kernel_shape(shape)
    with np.errstate(divide="ignore", invalid="ignore"):  # checked just below
        kernel = KERNELS[family](shape, **params)
    if not (np.all(np.isfinite(kernel)) and np.any(kernel)):
        # e.g. a disk whose radius reaches no pixel centre: the normalisation is 0/0.
        raise ValueError(
            f"a {family!r} kernel of shape {shape} with {params or 'the default parameters'} "
            "has no nonzero entry; give a larger kernel_shape or other parameters"
        )
    return kernel


@dataclass(frozen=True)
class SimulatedCase:
    """A synthetic data set: ``B = convolve2d(A, kernel, mode) + N(0, noise_sigma^2)``."""

    A: np.ndarray
    B: np.ndarray
    kernel: np.ndarray
    noise_sigma: float
    mode: str


def simulate(
    image_shape: tuple[int, int] = (100, 100),
    kernel: str | np.ndarray = "gaussian",
    kernel_shape: tuple[int, int] | None = None,
    *,
    density: float = 0.2,
    noise_sigma: float = 1.0,
    mode: str = "same",
    seed: int | np.random.Generator | None = 0,
    **kernel_params,
) -> SimulatedCase:
    """Simulate a binary pattern, blur it with a kernel and add white noise.

    Parameters
    ----------
    image_shape : (int, int)
    kernel : str or (P, Q) ndarray
        A family name for :func:`make_kernel` or an explicit kernel.
    kernel_shape : (int, int), optional
        Needed with a family name.
    density : float
        Probability of a one in the Bernoulli image ``A``.
    noise_sigma : float
    mode : {'same', 'full', 'valid'}
    seed : int or numpy Generator
        Same seed, same case.
    **kernel_params
        Passed to :func:`make_kernel` with a family name.

    Returns
    -------
    SimulatedCase
        ``A`` of ``image_shape`` (zeros and ones), ``B`` of
        ``output_shape(image_shape, kernel.shape, mode)``, the ``(P, Q)`` kernel.

    Raises
    ------
    ValueError
        For an unknown ``mode``, ``density`` outside ``(0, 1]``, a negative or
        non-finite ``noise_sigma``, a family name without ``kernel_shape``, a
        kernel that is not a non-empty finite 2D array, or shapes that
        ``mode='valid'`` cannot take.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0 < density <= 1:
        raise ValueError(f"density must lie in (0, 1], got {density!r}")
    if not (np.isfinite(noise_sigma) and noise_sigma >= 0):
        raise ValueError(f"noise_sigma must be a non-negative finite number, got {noise_sigma!r}")
    noise_sigma = abs(float(noise_sigma))  # -0.0 is 0, which NumPy's normal() refuses
    rng = np.random.default_rng(seed)
    if isinstance(kernel, str):
        if kernel_shape is None:
            raise ValueError("kernel_shape is required when kernel is a family name")
        kernel = make_kernel(kernel, kernel_shape, **kernel_params)
    kernel = np.asarray(kernel, dtype=float)
    if kernel.ndim != 2 or kernel.size == 0 or not np.all(np.isfinite(kernel)):
        raise ValueError(
            f"kernel must be a non-empty 2D array of finite numbers, got shape {kernel.shape}"
        )
    image = rng.binomial(1, density, size=tuple(image_shape)).astype(float)
    output_shape(image.shape, kernel.shape, mode)  # validates shapes for the mode
    blurred = oaconvolve(image, kernel, mode=mode)
    observed = blurred + rng.normal(0.0, noise_sigma, blurred.shape)
    return SimulatedCase(image, observed, kernel, float(noise_sigma), mode)


def motivating_case(size: int = 100, *, seed: int = 0) -> SimulatedCase:
    """The question's case: ``size`` x ``size`` image, 20% ones, ``(2 size - 1)^2``
    kernel ``1/r`` (centre 0), noise sd 1, ``oaconvolve(..., mode='same')``.

    Parameters
    ----------
    size : int
        Side of the image ``A``; the kernel is ``(2 size - 1, 2 size - 1)``.
    seed : int
        Same seed, same case.

    Returns
    -------
    SimulatedCase
        ``A`` and ``B`` of shape ``(size, size)``, ``kernel`` of shape
        ``(2 size - 1, 2 size - 1)``.
    """
    shape = (2 * size - 1, 2 * size - 1)
    return simulate(
        (size, size), "inverse_distance", shape, density=0.2, noise_sigma=1.0, seed=seed
    )
