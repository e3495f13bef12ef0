"""Spatially varying kernel: a seeing kernel that changes across a star field.

The case. ``A`` is the noise-free, sky-subtracted reference star field of
``bench_difference_imaging.py`` (``star_field``: about one star per 150 pixels,
fluxes ``dN/dF ~ F^-2`` between 100 and 1e5 counts, pixel-integrated Gaussian
stars of sd 0.9 px), 256x256 pixels. The true kernel at output pixel
``x = (y, x)`` is an elliptical Moffat profile (beta 3, 21x21 grid, sum 1,
``moffat_kernel``) whose shape is a smooth but not polynomial function of the
position normalised to ``[-1, 1]`` per axis (``ny = 2 y / (H - 1) - 1``, ``nx``
likewise):

* FWHM ``3.0 + 1.5 (exp(t) - 1) / (e - 1)`` px with ``t = (ny + nx + 2) / 4``:
  3.0 px at pixel (0, 0), 4.5 px at the opposite corner;
* axis ratio ``0.95 - 0.2 (sqrt(1 + 3 s) - 1)`` with ``s = (ny^2 + nx^2) / 2``:
  0.95 at the centre, 0.75 at the corners;
* angle of the major axis ``30 + 40 sin(0.9 (nx - ny))`` degrees (-10 to 70).

The science image is the exact spatially varying convolution
``B0(x) = sum_u K(u; x) A(x - u)`` (``'same'`` cropping, zero outside ``A``),
computed over the 441 offsets ``u`` with shifted copies of ``A`` times the map
of ``K(u; x)`` over the output pixels, then ``B = poisson(gain * (B0 + sky)) /
gain + normal(0, read)`` with ``gain = 2``, ``read = 3`` counts and the sky a
plane ``3 + 0.25 nx + 0.125 ny`` (3 at the centre, 0.5 across the width, 0.25
down the height). The variance map is ``bk.ccd_variance(B, gain, read)``. The
data depend only on the image size and the seed.

The methods, all given ``A``, ``B`` and the kernel shape:

* ``bk``: ``bk.fit(A, B, (21, 21), background=1, variance=variance,
  spatial_order=2, prior='auto', seed=seed, progress_bar=False)``: a quadratic
  kernel field ``K(u; x) = sum_f phi_f(x) K_f(u)`` and a plane sky, fitted
  jointly. ``bk-auto`` is the same with ``spatial_order='auto'`` (orders 0, 1
  and 2 weighed by evidence; their weights are reported); ``bk-const`` with
  ``spatial_order=0`` (one kernel for the whole field, for contrast);
  ``bk-white`` the ``bk`` fit without the variance map (one learned noise sd
  for every pixel, as SFFT weights them), whose normal matrix comes from
  moments of the image instead of one transposed blur per kernel entry. The
  kernel at a position is ``post.kernel_at(y, x)``: its ``kernel_mean`` and
  ``interval(0.95)``; the sky at the centre is ``background_mean[0]``.
* ``sfft``: SFFT's ``Customized_Packet.CP`` on FITS files in a temporary folder,
  ``ForceConv='REF'``, ``GKerHW=10``, ``KerPolyOrder=2``, ``BGPolyOrder=1``,
  ``ConstPhotRatio=True``, the NumPy backend, no masking. SFFT reads FITS data
  transposed (its axis 0 is the column) and its positions are 1-based FITS
  ``(x, y) = (column + 1, row + 1)``; its varying kernel multiplies the
  reference before the convolution, ``B(x) = sum_u K_s(u; x - u) A(x - u)``:
  its kernel is indexed by the position of the source pixel. The kernel at
  output pixel ``x`` in this benchmark's convention is therefore
  ``K(u; x) = K_s(u; x - u)``: entry ``u`` of
  ``Realize_MatchingKernel(...).FromArray`` at position ``x - u``, transposed.
  The sky is its background polynomial at the centre. SFFT convolves by FFT:
  the field is periodic for it.
* ``ois``: ``ois.optimal_system(B, A, kernelshape=(21, 21), bkgdegree=1,
  method='AdaptiveBramich', poly_degree=2)``: Bramich's delta basis with each
  entry a polynomial in the raw 0-based pixel position (unweighted least
  squares). Its kernel is the ``(21, 21, 6)`` coefficient array, entry ``[p, q,
  d]`` multiplying ``row^j col^i`` in the order ``for i in 0..2: for j in
  0..2-i``, applied at the output pixel like ``convolve2d``; the kernel at
  ``(y, x)`` is ``ois.eval_adpative_kernel(kernel, x, y)``. The sky is its
  background image at the centre. It holds one image per kernel coefficient
  (about 1.4 GB at 256x256, 90 GB at 2048x2048): it is skipped when that would
  not fit in half of the available memory.

``--selfcheck`` verifies the simulation (the varying convolution with a
constant kernel against ``scipy.signal.convolve2d(A, K, 'same')``, with a
linear field against ``sum_f phi_f convolve2d(A, K_f, 'same')``, both to
1e-10) and each peer's conversion on a noise-free toy: a 56x72 reference that
is zero within 12 px of the edges, a linearly varying 7x7 asymmetric kernel
(sum 1 everywhere), the sky plane; the converted kernels at the 9 positions and
the sky at the centre must match the truth, and the other conventions are shown
for contrast. bayeskernel's fit of the same toy (with a little noise,
``spatial_order=1``) is shown too.

Reported per method and data set: seconds (wall); ``rel err``, the kernel's
relative error ``||K_hat(x) - K(x)||_F / ||K(x)||_F`` averaged over 9 positions
(a 3x3 grid at 1/6, 1/2 and 5/6 of the height and width, pixel ``f (H - 1)``),
and ``worst`` of the 9; ``cov95``, the coverage of the true kernel entries by
the 95% intervals at the 9 positions, pooled (bayeskernel only); ``star err``,
the relative error of the kernel convolved with a reference star
(``bench_difference_imaging.star_error``) averaged over the 9 positions; the
noise scale (bayeskernel's ``noise_sigma``, about 1 when the variance map is
right); the fitted sky at the centre (truth 3); ``bk-auto``'s order weights.
Then per image size the means over seeds, and each bayeskernel variant's mean
errors divided by the best peer's (the peer named). ``--large`` adds one
2048x2048 data set (``bk``, ``sfft`` and ``ois`` if its memory allows) for
time (``--large --methods``, no names, runs only that one). ``--quick`` runs
one seed at 256x256, ``bk`` and ``sfft`` only. The machine is shared: times are
indicative (load averages are printed).

    .venv/bin/python benchmarks/bench_spatial.py [--seeds N] [--large] [--quick]
        [--methods NAME ...] [--markdown FILE] [--selfcheck]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
import scipy.signal
from _common import Report, fmt, start_peer_report
from bench_difference_imaging import (
    GAIN,
    READ_NOISE,
    SKY,
    NotAvailable,
    available_memory,
    moffat_kernel,
    star_error,
    star_field,
    versions,
)

import bayeskernel as bk

KERNEL_SHAPE = (21, 21)
BETA = 3.0
SIZE, LARGE_SIZE = 256, 2048
SKY_TILT = (0.125, 0.25)  # sky = SKY + 0.125 ny + 0.25 nx
FRACTIONS = (1 / 6, 1 / 2, 5 / 6)  # the 3x3 grid of evaluation positions
BLOCK_PIXELS = 2**14  # output pixels per block of the varying convolution
SIM_TOLERANCE = 1e-10  # selfcheck: the simulation's convolution, relative to max |B|
PEER_TOLERANCE = 1e-8  # selfcheck: a peer's converted kernels, relative to max |K|
METHODS = ("bk", "bk-auto", "bk-const", "bk-white", "sfft", "ois")
QUICK_METHODS = ("bk", "sfft")
LARGE_METHODS = ("bk", "bk-white", "sfft", "ois")
HEADERS = ["method", "size", "seed", "s", "rel err", "worst", "cov95", "star err",
           "noise scale", "sky", "order weights", "note"]  # fmt: skip


# --- the kernel field ------------------------------------------------------------------
def normalised(index, length: int) -> np.ndarray:
    """Pixel index to ``[-1, 1]``: 0 -> -1, ``length - 1`` -> +1."""
    return 2.0 * np.asarray(index, float) / (length - 1) - 1.0


def field_shape_parameters(ny, nx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FWHM (px), axis ratio and angle (degrees) of the true Moffat at normalised positions."""
    ny, nx = np.broadcast_arrays(np.asarray(ny, float), np.asarray(nx, float))
    t = (ny + nx + 2.0) / 4.0
    fwhm = 3.0 + 1.5 * np.expm1(t) / math.expm1(1.0)
    s = (ny**2 + nx**2) / 2.0
    axis_ratio = 0.95 - 0.2 * (np.sqrt(1.0 + 3.0 * s) - 1.0)
    angle_deg = 30.0 + 40.0 * np.sin(0.9 * (nx - ny))
    return fwhm, axis_ratio, angle_deg


def moffat_stack(shape, fwhm, beta, axis_ratio, angle_deg) -> np.ndarray:
    """``moffat_kernel`` for arrays of parameters: shape ``(P, Q) + parameters' shape``."""
    fwhm, axis_ratio, angle_deg = (np.asarray(v, float) for v in (fwhm, axis_ratio, angle_deg))
    extra = (None,) * fwhm.ndim
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    rows, cols = np.indices(shape, dtype=float)
    y = (rows - (shape[0] - 1) / 2)[(..., *extra)]
    x = (cols - (shape[1] - 1) / 2)[(..., *extra)]
    theta = np.radians(angle_deg)
    u = x * np.cos(theta) + y * np.sin(theta)
    v = (-x * np.sin(theta) + y * np.cos(theta)) / axis_ratio
    kernel = (1.0 + (u**2 + v**2) / alpha**2) ** (-beta)
    return kernel / kernel.sum(axis=(0, 1))


def true_kernel(y: float, x: float, image_shape: tuple[int, int]) -> np.ndarray:
    """The true kernel at output pixel ``(y, x)`` of ``B`` (sub-pixel allowed)."""
    fwhm, axis_ratio, angle_deg = field_shape_parameters(
        normalised(y, image_shape[0]), normalised(x, image_shape[1])
    )
    return moffat_stack(KERNEL_SHAPE, fwhm, BETA, axis_ratio, angle_deg)


def true_kernel_rows(r0: int, r1: int, image_shape: tuple[int, int]) -> np.ndarray:
    """The true kernels of output rows ``r0 .. r1 - 1``: shape ``(P, Q, r1 - r0, W)``."""
    ny = normalised(np.arange(r0, r1), image_shape[0])[:, None]
    nx = normalised(np.arange(image_shape[1]), image_shape[1])[None, :]
    fwhm, axis_ratio, angle_deg = field_shape_parameters(ny, nx)
    return moffat_stack(KERNEL_SHAPE, fwhm, BETA, axis_ratio, angle_deg)


def varying_convolve(
    A: np.ndarray,
    kernel_rows: Callable[[int, int], np.ndarray],
    kernel_shape: tuple[int, int],
) -> np.ndarray:
    """``B(x) = sum_u K(u; x) A(x - u)`` on ``A``'s grid (``'same'``, zero outside ``A``).

    Parameters
    ----------
    A : numpy.ndarray
        The reference, shape ``(H, W)``.
    kernel_rows : callable
        ``kernel_rows(r0, r1)`` gives the kernels of output rows ``r0 .. r1 - 1``,
        shape ``(P, Q, r1 - r0, W)``; entry ``[p, q]`` is the offset
        ``u = (p - (P - 1) / 2, q - (Q - 1) / 2)``.
    kernel_shape : tuple of int
        Odd ``(P, Q)``.

    Returns
    -------
    numpy.ndarray
        ``B``, shape ``(H, W)``; for a constant kernel ``convolve2d(A, K, 'same')``.
    """
    height, width = A.shape
    hp, hq = kernel_shape[0] // 2, kernel_shape[1] // 2
    padded = np.pad(np.asarray(A, float), ((hp, hp), (hq, hq)))
    out = np.zeros((height, width))
    step = max(1, BLOCK_PIXELS // width)
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        kernels = kernel_rows(r0, r1)
        block = out[r0:r1]
        for p in range(kernel_shape[0]):
            for q in range(kernel_shape[1]):
                # A(y - (p - hp), x - (q - hq)) sits at padded[y - p + 2 hp, x - q + 2 hq].
                shifted = padded[r0 - p + 2 * hp : r1 - p + 2 * hp, 2 * hq - q : 2 * hq - q + width]
                block += kernels[p, q] * shifted
    return out


def sky_plane(shape: tuple[int, int]) -> np.ndarray:
    """The true sky on ``B``'s grid."""
    ny = normalised(np.arange(shape[0]), shape[0])[:, None]
    nx = normalised(np.arange(shape[1]), shape[1])[None, :]
    return SKY + SKY_TILT[0] * ny + SKY_TILT[1] * nx


def positions(shape: tuple[int, int]) -> list[tuple[float, float]]:
    """The 9 evaluation positions ``(y, x)``, row-major."""
    return [(fy * (shape[0] - 1), fx * (shape[1] - 1)) for fy in FRACTIONS for fx in FRACTIONS]


def make_spatial_case(size: int, seed: int) -> dict:
    """One data set: reference, science image, variance map and the true kernels.

    Parameters
    ----------
    size : int
        Side of the square images.
    seed : int
        Seed; with ``size`` it fixes the data.

    Returns
    -------
    dict
        ``A``, ``B``, ``variance``, ``positions`` (the 9 ``(y, x)``), ``kernels``
        (the true kernels there, ``(9, P, Q)``) and ``sky`` (at the centre).
    """
    rng = np.random.default_rng([size, seed])
    shape = (size, size)
    A = star_field(shape, rng)
    blurred = varying_convolve(A, lambda r0, r1: true_kernel_rows(r0, r1, shape), KERNEL_SHAPE)
    expected = np.clip(blurred, 0.0, None) + sky_plane(shape)
    B = rng.poisson(GAIN * expected) / GAIN + rng.normal(0.0, READ_NOISE, shape)
    variance = bk.ccd_variance(B, GAIN, READ_NOISE)
    where = positions(shape)
    kernels = np.stack([true_kernel(y, x, shape) for y, x in where])
    return dict(A=A, B=B, variance=variance, positions=where, kernels=kernels, sky=SKY)


# --- bayeskernel -----------------------------------------------------------------------
def run_bayeskernel(case: dict, seed: int, order: int | str, weighted: bool = True) -> dict:
    """One bayeskernel fit with ``spatial_order=order``; the kernels at the 9 positions.

    ``weighted=False`` leaves out the variance map (one noise sd for all pixels).
    """
    variance = case["variance"] if weighted else None
    start = time.perf_counter()
    post = bk.fit(case["A"], case["B"], KERNEL_SHAPE, background=1, variance=variance,
                  spatial_order=order, prior="auto", seed=seed, progress_bar=False)  # fmt: skip
    seconds = time.perf_counter() - start
    kernels, lower, upper = [], [], []
    for y, x in case["positions"]:
        local = post.kernel_at(y, x)
        lo, hi = local.interval(0.95)
        kernels.append(local.kernel_mean)
        lower.append(lo)
        upper.append(hi)
    weights = post.diagnostics.get("spatial_order_weights")
    weights_text = None
    if order == "auto" and weights:
        weights_text = " ".join(f"{k}:{v:.2g}" for k, v in sorted(weights.items()))
    return dict(kernels=np.stack(kernels), lower=np.stack(lower), upper=np.stack(upper),
                sky=float(np.ravel(post.background_mean)[0]), noise=float(post.noise_sigma),
                seconds=seconds, weights=weights_text,
                note=f"prior {post.prior}")  # fmt: skip


# --- peers -----------------------------------------------------------------------------
def at_centre(image: np.ndarray) -> float:
    """The bilinear value at the centre ``((H - 1) / 2, (W - 1) / 2)`` (exact for a plane)."""
    rows = sorted({(image.shape[0] - 1) // 2, image.shape[0] // 2})
    cols = sorted({(image.shape[1] - 1) // 2, image.shape[1] // 2})
    return float(np.mean(image[np.ix_(rows, cols)]))


def ois_field(A: np.ndarray, B: np.ndarray, shape: tuple[int, int], degree: int = 2) -> tuple:
    """Bramich's varying kernel (ois ``AdaptiveBramich``) and plane background.

    Returns
    -------
    coefficients : numpy.ndarray
        ``(P, Q, dof)``: the kernel at ``(y, x)`` is ``ois.eval_adpative_kernel(
        coefficients, x, y)`` in ``convolve2d``'s orientation.
    background : numpy.ndarray
        The fitted background on ``B``'s grid.
    """
    import ois

    _, _, kernel, background = ois.optimal_system(B, A, kernelshape=shape, bkgdegree=1,
                                                  method="AdaptiveBramich",
                                                  poly_degree=degree)  # fmt: skip
    return np.asarray(kernel, float), np.asarray(background, float)


def ois_kernels(coefficients: np.ndarray, where: list) -> np.ndarray:
    """ois's kernels at positions ``(y, x)``, shape ``(len(where), P, Q)``."""
    import ois

    return np.stack([ois.eval_adpative_kernel(coefficients, x, y) for y, x in where])


def run_ois(case: dict, seed: int) -> dict:
    """ois on one data set (the seed is unused: the method is deterministic)."""
    try:
        import ois
        import varconv  # noqa: F401 - AdaptiveBramich's C extension
    except ImportError as error:
        raise NotAvailable(f"not installed ({error})") from None
    dof = 6  # (degree + 1)(degree + 2) / 2 for degree 2
    unknowns = int(np.prod(KERNEL_SHAPE)) * dof + 3
    need = 8.0 * (unknowns * case["A"].size + unknowns**2)
    if need > available_memory() / 2:
        raise NotAvailable(f"skipped: its basis images need {need / 2**30:.1f} GiB")
    start = time.perf_counter()
    coefficients, background = ois_field(case["A"], case["B"], KERNEL_SHAPE)
    seconds = time.perf_counter() - start
    return dict(kernels=ois_kernels(coefficients, case["positions"]), sky=at_centre(background),
                seconds=seconds, note=f"ois {ois.__version__}, AdaptiveBramich, poly_degree=2, "
                "bkgdegree=1")  # fmt: skip


def sfft_field(
    A: np.ndarray, B: np.ndarray, shape: tuple[int, int], kernel_order: int = 2, bg_order: int = 1
) -> dict:
    """SFFT's varying kernel and background (``Customized_Packet.CP``).

    Returns
    -------
    dict
        ``solution`` (SFFT's solution vector) and what reading it needs: ``n0``,
        ``n1`` (SFFT's axes: columns, rows), ``side``, ``kernel_order``,
        ``bg_order``.
    """
    from astropy.io import fits
    from sfft.CustomizedPacket import Customized_Packet

    if shape[0] != shape[1] or shape[0] % 2 == 0:
        raise NotAvailable("SFFT's kernel is square with odd sides")
    with tempfile.TemporaryDirectory(prefix="bench_spatial_sfft_") as folder:
        ref, sci = os.path.join(folder, "ref.fits"), os.path.join(folder, "sci.fits")
        fits.writeto(ref, np.asarray(A, np.float64))
        fits.writeto(sci, np.asarray(B, np.float64))
        with contextlib.redirect_stdout(io.StringIO()):  # it prints checkpoints even when quiet
            solution, _ = Customized_Packet.CP(
                FITS_REF=ref, FITS_SCI=sci, FITS_mREF=ref, FITS_mSCI=sci, ForceConv="REF",
                GKerHW=shape[0] // 2, KerPolyOrder=kernel_order, BGPolyOrder=bg_order,
                ConstPhotRatio=True, BACKEND_4SUBTRACT="Numpy",
                NUM_CPU_THREADS_4SUBTRACT=os.cpu_count() or 1, VERBOSE_LEVEL=0,
            )  # fmt: skip
    return dict(solution=np.asarray(solution, float), n0=A.shape[1], n1=A.shape[0],
                side=shape[0], kernel_order=kernel_order, bg_order=bg_order)  # fmt: skip


def sfft_source_kernels(fit: dict, where: list) -> np.ndarray:
    """SFFT's own kernels at positions ``(y, x)``, transposed to ``(row, column)``.

    These are indexed by the source pixel: ``B(x) = sum_u K_s(u; x - u) A(x - u)``.
    """
    from sfft.utils.SFFTSolutionReader import Realize_MatchingKernel

    # FITS positions: x counts columns from 1, y rows from 1 (SFFT's axis 0 is the column).
    fits_xy = np.array([[x + 1.0, y + 1.0] for y, x in where])
    terms = (fit["bg_order"] + 1) * (fit["bg_order"] + 2) // 2
    stack = Realize_MatchingKernel(fits_xy).FromArray(
        fit["solution"], fit["n0"], fit["n1"], fit["side"], fit["side"], fit["kernel_order"], terms
    )
    return np.transpose(np.asarray(stack, float), (0, 2, 1))


def sfft_kernels(fit: dict, where: list) -> np.ndarray:
    """SFFT's kernels at output positions ``(y, x)``: entry ``u`` of ``K_s`` at ``x - u``."""
    side = fit["side"]
    half = side // 2
    p, q = (index.ravel() for index in np.indices((side, side)))
    out = np.empty((len(where), side, side))
    for k, (y, x) in enumerate(where):
        # One SFFT kernel per offset u = (p - half, q - half), at x - u; keep its entry u.
        shifted = sfft_source_kernels(fit, list(zip(y - (p - half), x - (q - half))))
        out[k] = shifted[np.arange(side * side), p, q].reshape(side, side)
    return out


def sfft_sky(fit: dict, y: float, x: float) -> float:
    """SFFT's background polynomial at pixel ``(y, x)``."""
    order = fit["bg_order"]
    terms = [(p, q) for p in range(order + 1) for q in range(order + 1 - p)]
    coefficients = fit["solution"][-len(terms) :]
    # SFFT's scaled coordinates: (FITS x / N0, FITS y / N1).
    sx, sy = (x + 1.0) / fit["n0"], (y + 1.0) / fit["n1"]
    return float(sum(c * sx**p * sy**q for c, (p, q) in zip(coefficients, terms, strict=True)))


def run_sfft(case: dict, seed: int) -> dict:
    """SFFT on one data set (the seed is unused: the method is deterministic)."""
    try:
        import astropy  # noqa: F401 - SFFT reads its images from FITS files
        import sfft.CustomizedPacket  # noqa: F401 - and needs numba and pyFFTW
    except ImportError as error:
        raise NotAvailable(f"not installed ({error})") from None
    start = time.perf_counter()
    fit = sfft_field(case["A"], case["B"], KERNEL_SHAPE)
    seconds = time.perf_counter() - start
    height, width = case["A"].shape
    return dict(kernels=sfft_kernels(fit, case["positions"]),
                sky=sfft_sky(fit, (height - 1) / 2, (width - 1) / 2), seconds=seconds,
                note="NumPy backend, KerPolyOrder=2, BGPolyOrder=1")  # fmt: skip


RUNNERS: dict[str, Callable[[dict, int], dict]] = {
    "bk": lambda case, seed: run_bayeskernel(case, seed, 2),
    "bk-auto": lambda case, seed: run_bayeskernel(case, seed, "auto"),
    "bk-const": lambda case, seed: run_bayeskernel(case, seed, 0),
    "bk-white": lambda case, seed: run_bayeskernel(case, seed, 2, weighted=False),
    "sfft": run_sfft,
    "ois": run_ois,
}


# --- the benchmark ---------------------------------------------------------------------
def run_method(name: str, case: dict, size: int, seed: int) -> list:
    """One table row: the method's numbers, or its reason for having none."""
    try:
        out = RUNNERS[name](case, seed)
    except NotAvailable as reason:
        return [name, size, seed, *[None] * 8, str(reason)]
    except Exception as error:  # noqa: BLE001 - a failing method is a row, not a crash
        return [name, size, seed, *[None] * 8,
                f"failed: {type(error).__name__}: {str(error)[:120]}"]  # fmt: skip
    truths, estimates = case["kernels"], np.asarray(out["kernels"], float)
    errors = [float(np.linalg.norm(e - t) / np.linalg.norm(t)) for e, t in zip(estimates, truths)]
    stars = [star_error(e, t) for e, t in zip(estimates, truths)]
    cover = None
    if out.get("lower") is not None:
        cover = float(np.mean((out["lower"] <= truths) & (truths <= out["upper"])))
    return [name, size, seed, out["seconds"], float(np.mean(errors)), max(errors), cover,
            float(np.mean(stars)), out.get("noise"), out.get("sky"), out.get("weights"),
            out["note"]]  # fmt: skip


SUMMARY_HEADERS = ["size", "method", "seeds", "mean s", "mean rel err", "rel err / best peer",
                   "mean worst", "mean star err", "star err / best peer", "mean cov95",
                   "mean sky"]  # fmt: skip


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summary_rows(rows: list, methods: list[str]) -> list:
    """Per image size and method: means over seeds, and bk's errors over the best peer's.

    Parameters
    ----------
    rows : list
        Table rows, columns ``HEADERS``.
    methods : list of str
        Methods in table order.

    Returns
    -------
    list
        Rows with columns ``SUMMARY_HEADERS``; the best peer is the one with the
        smallest mean error of that kind, named after the ratio.
    """
    keys = ("s", "rel err", "worst", "star err", "cov95", "sky")
    col = {key: HEADERS.index(key) for key in keys}
    out = []
    for size in sorted({row[1] for row in rows}):
        means: dict[str, dict] = {}
        for name in methods:
            done = [r for r in rows if r[0] == name and r[1] == size and r[4] is not None]
            if done:
                means[name] = {k: _mean([r[i] for r in done]) for k, i in col.items()}
                means[name]["seeds"] = len(done)
        for name in methods:
            if name not in means:
                out.append([size, name, 0, *[None] * 8])
                continue
            ours, ratios = means[name], []
            for key in ("rel err", "star err"):
                peers = {k: v[key] for k, v in means.items() if not k.startswith("bk")}
                if peers and name.startswith("bk"):
                    best = min(peers, key=peers.get)
                    ratios.append(f"{ours[key] / peers[best]:.3g} ({best})")
                else:
                    ratios.append(None)
            out.append([size, name, ours["seeds"], ours["s"], ours["rel err"], ratios[0],
                        ours["worst"], ours["star err"], ratios[1], ours["cov95"],
                        ours["sky"]])  # fmt: skip
    return out


# --- selfcheck -------------------------------------------------------------------------
def _toy_field(rng: np.random.Generator, side: int) -> np.ndarray:
    """Components ``(K_0, K_y, K_x)`` of a linear field, sum 1 and 0: positive inside the image."""
    base = rng.uniform(0.5, 1.5, size=(side, side))
    base /= base.sum()
    slopes = []
    for _ in range(2):
        slope = rng.uniform(-1.0, 1.0, size=(side, side))
        slope -= slope.mean()  # the sum stays 1 everywhere (SFFT's ConstPhotRatio)
        slopes.append(0.3 * slope / side**2)
    return np.stack([base, *slopes])


def _field_at(components: np.ndarray, y, x, shape: tuple[int, int]) -> np.ndarray:
    """``K_0 + ny K_y + nx K_x`` at ``(y, x)``; arrays of positions broadcast after (P, Q)."""
    ny, nx = normalised(y, shape[0]), normalised(x, shape[1])
    extra = (None,) * np.ndim(ny)
    k0, ky, kx = (component[(..., *extra)] for component in components)
    return k0 + ky * ny + kx * nx


def _simulation_checks(rows: list) -> bool:
    """The varying convolution against scipy's for a constant kernel and a linear field."""
    rng = np.random.default_rng(11)
    passed = True
    shape = (40, 52)
    A = rng.exponential(size=shape)
    kernel = rng.uniform(size=KERNEL_SHAPE)
    kernel /= kernel.sum()
    same = scipy.signal.convolve2d(A, kernel, mode="same")
    width = shape[1]

    def constant_rows(r0: int, r1: int) -> np.ndarray:
        return np.broadcast_to(kernel[:, :, None, None], kernel.shape + (r1 - r0, width))

    constant = varying_convolve(A, constant_rows, KERNEL_SHAPE)
    error = float(np.abs(constant - same).max() / np.abs(same).max())
    ok = error < SIM_TOLERANCE
    passed &= ok
    rows.append(["simulation", "constant 21x21 kernel vs convolve2d 'same'", fmt(error), None,
                 "-", ok])  # fmt: skip
    components = _toy_field(rng, KERNEL_SHAPE[0])
    ys = np.arange(shape[0])
    linear = varying_convolve(
        A,
        lambda r0, r1: _field_at(components, ys[r0:r1, None], np.arange(width)[None], shape),
        KERNEL_SHAPE,
    )
    ny, nx = normalised(ys, shape[0])[:, None], normalised(np.arange(width), width)[None]
    blurred = [scipy.signal.convolve2d(A, k, mode="same") for k in components]
    reference = blurred[0] + ny * blurred[1] + nx * blurred[2]
    error = float(np.abs(linear - reference).max() / np.abs(reference).max())
    ok = error < SIM_TOLERANCE
    passed &= ok
    rows.append(["simulation", "linear field vs sum_f phi_f convolve2d(A, K_f)", fmt(error),
                 None, "-", ok])  # fmt: skip
    # The vectorised Moffat is moffat_kernel.
    params = dict(fwhm=3.7, beta=BETA, axis_ratio=0.8, angle_deg=40.0)
    error = float(np.abs(moffat_stack(KERNEL_SHAPE, 3.7, BETA, 0.8, 40.0)
                         - moffat_kernel(KERNEL_SHAPE, **params)).max())  # fmt: skip
    ok = error < 1e-14
    passed &= ok
    rows.append(["simulation", "moffat_stack vs moffat_kernel", fmt(error), None, "-", ok])
    return bool(passed)


def selfcheck(report: Report) -> bool:
    """The simulation to 1e-10, and each peer's conversion on a noise-free linear field.

    Parameters
    ----------
    report : Report
        Where the tables go.

    Returns
    -------
    bool
        True when the simulation and every installed peer pass.
    """
    rows: list = []
    passed = _simulation_checks(rows)

    # The true field across the benchmark's image: the ranges it spans.
    grid = normalised(np.arange(SIZE), SIZE)
    fwhm, ratio, angle = field_shape_parameters(grid[:, None], grid[None, :])
    report.note(f"true field on {SIZE}x{SIZE}: FWHM {fwhm.min():.3f}..{fwhm.max():.3f} px, "
                f"axis ratio {ratio.min():.3f}..{ratio.max():.3f}, angle "
                f"{angle.min():.1f}..{angle.max():.1f} deg; kernel sums "
                f"{true_kernel(0, 0, (SIZE, SIZE)).sum():.12f}")  # fmt: skip
    shapes = [field_shape_parameters(2 * f - 1, 2 * g - 1) for f in FRACTIONS for g in FRACTIONS]
    report.note("at the 9 positions (FWHM px, axis ratio, angle deg): "
                + "; ".join(f"({a:.2f}, {b:.3f}, {c:.0f})" for a, b, c in shapes))  # fmt: skip

    # The noise-free toy: a linear field of 7x7 kernels on a 56x72 reference with a zero border.
    rng = np.random.default_rng(7)
    side, shape, border = 7, (56, 72), 12
    components = _toy_field(rng, side)
    full = rng.exponential(size=shape)
    framed = np.zeros(shape)
    framed[border:-border, border:-border] = full[border:-border, border:-border]
    ys, xs = np.arange(shape[0]), np.arange(shape[1])
    B = varying_convolve(
        framed, lambda r0, r1: _field_at(components, ys[r0:r1, None], xs[None], shape),
        (side, side),
    ) + (SKY + SKY_TILT[0] * normalised(ys, shape[0])[:, None]
         + SKY_TILT[1] * normalised(xs, shape[1])[None])  # fmt: skip
    where = positions(shape)
    truth = np.stack([_field_at(components, y, x, shape) for y, x in where])
    scale = np.abs(truth).max()
    swapped = [(x * (shape[0] - 1) / (shape[1] - 1), y * (shape[1] - 1) / (shape[0] - 1))
               for y, x in where]  # the same fractions, the axes exchanged  # fmt: skip

    def error(estimates) -> float:
        return float(np.abs(np.asarray(estimates) - truth).max() / scale)

    height, width = shape
    try:
        import sfft.CustomizedPacket  # noqa: F401

        fit = sfft_field(framed, B, (side, side))
        converted = sfft_kernels(fit, where)
        sky = sfft_sky(fit, (height - 1) / 2, (width - 1) / 2)
        others = {
            "source-indexed": sfft_source_kernels(fit, where),
            "transposed": np.transpose(converted, (0, 2, 1)),
            "x/y swapped": sfft_kernels(fit, swapped),
        }
        ok = error(converted) < PEER_TOLERANCE and abs(sky - SKY) < PEER_TOLERANCE
        passed &= ok
        rows.append(["sfft", "linear 7x7 field, 9 positions", fmt(error(converted)),
                     abs(sky - SKY), ", ".join(f"{k} {fmt(error(v))}" for k, v in others.items()),
                     ok])  # fmt: skip
    except ImportError as missing:
        rows.append(["sfft", "not installed", "-", None, str(missing), "-"])
    except Exception as failure:  # noqa: BLE001 - a failing peer is a row, not a crash
        passed = False
        rows.append(["sfft", "linear 7x7 field", None, None,
                     f"failed: {type(failure).__name__}: {failure}", False])  # fmt: skip
    try:
        import ois  # noqa: F401
        import varconv  # noqa: F401

        coefficients, background = ois_field(framed, B, (side, side))
        converted = ois_kernels(coefficients, where)
        sky = at_centre(background)
        others = {
            "transposed": np.transpose(converted, (0, 2, 1)),
            "flipped": converted[:, ::-1, ::-1],
            "x/y swapped": ois_kernels(coefficients, swapped),
        }
        ok = error(converted) < PEER_TOLERANCE and abs(sky - SKY) < PEER_TOLERANCE
        passed &= ok
        rows.append(["ois", "linear 7x7 field, 9 positions", fmt(error(converted)),
                     abs(sky - SKY), ", ".join(f"{k} {fmt(error(v))}" for k, v in others.items()),
                     ok])  # fmt: skip
    except ImportError as missing:
        rows.append(["ois", "not installed", "-", None, str(missing), "-"])
    except Exception as failure:  # noqa: BLE001
        passed = False
        rows.append(["ois", "linear 7x7 field", None, None,
                     f"failed: {type(failure).__name__}: {failure}", False])  # fmt: skip

    # bayeskernel on the same toy, with a little noise: its kernel_at convention (shown only).
    noisy = B + np.random.default_rng(8).normal(0.0, 1e-4 * B.std(), shape)
    try:
        post = bk.fit(framed, noisy, (side, side), background=1, spatial_order=1, prior="auto",
                      seed=0, progress_bar=False)  # fmt: skip
        estimate = np.stack([post.kernel_at(y, x).kernel_mean for y, x in where])
        sky = float(np.ravel(post.background_mean)[0])
        others = {
            "transposed": np.transpose(estimate, (0, 2, 1)),
            "x/y swapped": np.stack([post.kernel_at(y, x).kernel_mean for y, x in swapped]),
        }
        rows.append(["bk", "same, noise sd 1e-4 rms(B), spatial_order=1", fmt(error(estimate)),
                     abs(sky - SKY), ", ".join(f"{k} {fmt(error(v))}" for k, v in others.items()),
                     "(shown)"])  # fmt: skip
    except Exception as failure:  # noqa: BLE001
        rows.append(["bk", "linear 7x7 field", None, None,
                     f"failed: {type(failure).__name__}: {failure}", "(shown)"])  # fmt: skip
    report.table(
        "Selfcheck: the simulation's convolution (relative to max |B|, pass < "
        f"{SIM_TOLERANCE:g}), and each peer's converted kernels at the 9 positions of a "
        f"noise-free 56x72 toy with a linear 7x7 field and a sky plane (max abs error "
        f"relative to max |K|, pass < {PEER_TOLERANCE:g}; sky at the centre, truth 3)",
        ["check", "case", "kernel err", "sky err", "other conventions", "pass"],
        rows,
    )
    return bool(passed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="data sets at 256x256")
    parser.add_argument("--large", action="store_true",
                        help="add a 2048x2048 data set, one seed")  # fmt: skip
    parser.add_argument("--large-methods", nargs="*", choices=LARGE_METHODS,
                        default=list(LARGE_METHODS),
                        help="methods for the --large case (default: all of them)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="one seed, bk and sfft only")
    parser.add_argument("--methods", nargs="*", choices=METHODS,
                        help="methods to run at 256x256 (default: all; none given: only the "
                        "--large case)")  # fmt: skip
    args, report = start_peer_report(
        parser,
        "Spatially varying kernel: star field, Moffat field, sky plane",
        versions,
        selfcheck,
        "check the simulation and the peers' conventions, then stop",
    )

    report.note(f"kernel {KERNEL_SHAPE[0]}x{KERNEL_SHAPE[1]} Moffat beta {BETA}, FWHM 3.0..4.5 "
                f"px, axis ratio 0.95..0.75, angle 30 + 40 sin(0.9 (nx - ny)) deg; gain {GAIN}, "
                f"read noise {READ_NOISE}, sky {SKY} + {SKY_TILT[0]} ny + {SKY_TILT[1]} nx; "
                "positions at 1/6, 1/2, 5/6 of H - 1 and W - 1")  # fmt: skip
    methods = list(METHODS if args.methods is None else args.methods)
    plan = [(SIZE, args.seeds, methods)] if methods else []
    if args.quick:
        plan = [(SIZE, 1, [m for m in QUICK_METHODS if m in methods])]
    if args.large:
        plan.append((LARGE_SIZE, 1, list(args.large_methods)))
    rows = []
    for size, seeds, names in plan:
        for seed in range(seeds):
            start = time.perf_counter()
            case = make_spatial_case(size, seed)
            print(f"\n{size}x{size}, seed {seed} (load {os.getloadavg()[0]:.1f}; data in "
                  f"{time.perf_counter() - start:.1f} s)", flush=True)  # fmt: skip
            for name in names:
                row = run_method(name, case, size, seed)
                rows.append(row)
                print("  " + "  ".join(fmt(x) for x in row), flush=True)
    order = [m for m in METHODS if any(r[0] == m for r in rows)]
    report.table("Per data set (kernel errors over the 9 positions; sky at the centre: truth 3)",
                 HEADERS, rows)  # fmt: skip
    report.table("Per image size: means over seeds", SUMMARY_HEADERS, summary_rows(rows, order))
    report.note(f"load average at the end: {os.getloadavg()}")
    report.write(args.markdown)


if __name__ == "__main__":
    main()
