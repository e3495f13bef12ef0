"""Super-resolution: a kernel on a grid ``s`` times finer than the sensor (``fit(oversample=s)``).

The data. Every sensor image ``B`` is 64x64. The true kernel is the telescope
PSF ``bk.make_kernel('telescope', (21, 21), width=w)`` on the fine grid (an
obscured aperture with four spider vanes and 0.08 waves rms of aberration;
``width`` is lambda / D in fine pixels; the kernel sums to 1). ``w = s``: 2.0
at ``s = 2`` and 3.0 at ``s = 3``, so that lambda / D is one sensor pixel in both
(the fine grid samples the PSF at the Nyquist rate at ``s = 2``, 1.5 times
finer at ``s = 3``). A sensor pixel is the sum of its ``s x s`` block of the
fine image, blocks from the first row and column
(``bayeskernel.binning.bin_image``). Cases:

* ``binary``: ``A`` is a Bernoulli(0.5) 0/1 image of ``64 s x 64 s`` fine
  pixels and ``B = bin_image(convolve2d(A, K, 'same'), (s, s)) + noise``,
  Gaussian noise of sd 1% and 3% of the standard deviation of the noise-free
  ``B`` (the PSNR, ``20 log10(peak-to-peak of the noise-free B / sd)``, is
  printed); ``s = 2`` and ``s = 3``.
* ``stars-grid`` and ``stars-random``, ``s = 2``: point sources at known
  positions (sensor pixel coordinates, pixel centres at integers), fluxes from
  the power law ``dN/dF ~ F^-2`` between 100 and 1000. ``stars-grid``: 64 stars
  on an 8x8 grid of spacing 7 px, each moved by a uniform offset in
  ``[-0.5, 0.5)`` px along each axis (uniform sub-pixel phases, neighbours at
  least 6 px apart: a field fit for cutout-based methods). ``stars-random``:
  80 stars at uniform positions (a crowded field: the mean distance to the
  nearest neighbour is about 3 px). All positions are within ``[6, 57]`` px, at
  least 6 px from the edges. Each star is the PSF centred at the star's
  sub-pixel fine position ``s r + (s - 1) / 2`` (``make_kernel(..., shift=...)``,
  sampled exactly, the 21x21 window around its fine pixel, as in
  ``tests/test_superres.py``), times its flux, on the fine grid; the sum is
  binned. Gaussian noise of sd 2% and 10% of the peak of the faintest possible
  star (flux 100 centred on a sensor pixel: a peak of 41.2 counts, so sd 0.82
  and 4.1).

The data depend only on the case, ``s`` and the seed (the noise levels share
one draw of the noise, scaled). Seeds ``0 .. N-1`` (``--seeds``, default 3).

The methods (``seed=seed, progress_bar=False`` in every ``fit``):

* ``bk``: ``bk.fit(A, B, (21, 21), oversample=s, prior='auto')``; ``A`` the
  binary image, or for stars ``bk.render_points(points, (128, 128),
  oversample=2, method='lanczos3')``. ``bk-smooth2`` (binary): the same with
  ``prior='smooth2'``. ``bk-bilinear`` (stars): ``A`` from
  ``render_points(..., method='bilinear')``, ``prior='auto'``. The estimate is
  ``kernel_mean``, the intervals ``interval(0.95)``, the noise ``noise_sigma``.
* ``lsq``: unregularised least squares on the binned operator, the fine
  21x21 kernel from ``numpy.linalg.lstsq(H, B.ravel())`` with ``H`` built
  column by column without bayeskernel (column ``j`` is ``A`` shifted as
  ``scipy.signal.convolve2d(A, e_j, 'same')`` shifts it, then block-summed);
  for stars with the lanczos3 ``A``. Its noise estimate is
  ``sqrt(RSS / (n - p))``. The time includes building ``H``.
* ``bk-sensor`` (binary): ``bk.fit(bin_image(A, (s, s)) / s**2, B, (k, k),
  prior='auto')`` with ``k = 11`` at ``s = 2`` and ``7`` at ``s = 3``: the fit at
  the sensor's resolution, ``A`` averaged over each block. Its kernel maps
  block means to block sums, so it sums to about ``s**2``. It is compared with
  the fine truth after upsampling: each entry replicated into ``s x s`` fine
  pixels and divided by ``s**4`` (the replicated kernel sums to 1 like the
  truth); at even ``s`` the replicated grid is half a fine pixel off the
  truth's, so adjacent entries are averaged along each axis (22x22 to 21x21).
  That error mostly measures what a kernel on the sensor grid cannot show;
  ``pred err`` (below) is its like-for-like comparison.
* ``epsf`` (stars; photutils, optional): ``extract_stars(NDData(B),
  Table(x=col, y=row), size=11)`` at the known positions and
  ``EPSFBuilder(oversampling=2, progress_bar=False)`` (photutils' defaults:
  quartic smoothing, recentering on the centroid, 10 iterations). Its ePSF is
  the PSF already summed over a sensor pixel, sampled every fine pixel:
  node ``k`` of ``epsf.data`` is the value of a sensor pixel whose centre is
  ``(k - origin) / s`` sensor px from the fitted star centre, indices
  ``[row, col]``. Conversion to our fine kernel: the centre, by the median
  offset ``d`` of photutils' fitted star centres from the known positions
  (photutils recentres on the centroid, which the aberrations move); then
  ``K`` is the least-squares solution of ``epsf.data[k] = sum_n K[n] h(k - n)``
  per axis, ``h(m) = sum_{a<s} sinc(m + s d + a - (s - 1) / 2)`` (a sensor
  pixel's sum of the band-limited kernel at the node's offset, the sinc
  truncated at 20 taps); then ``K / K.sum()``. ``--selfcheck`` tests it. The
  sum over a sensor pixel removes the fine grid's highest frequencies (at
  ``s = 2`` the 2x2 sum is zero at the fine Nyquist frequency), so the
  conversion, like any unregularised one, amplifies the ePSF's errors there
  (condition number about 220): epsf's ``pred err``, which needs no
  conversion, is its like-for-like comparison.

Metrics, per method and data set: seconds (wall; each bayeskernel
configuration is fitted once untimed on the first data set first, so the times
are of compiled calls, and the first call's time is printed as a note), ``rel
err`` ``||K_hat - K||_F / ||K||_F`` on the fine grid, ``cov95`` the fraction of
true entries inside the 95% intervals (bayeskernel's fine-grid fits), ``noise
ratio`` the noise sd estimate over the true sd, and ``pred err`` the rms of
the predicted noise-free ``B`` minus the noise-free ``B``, in units of the noise
sd (below 1: better than the data; ``post.predict()`` for bayeskernel,
``H K_hat`` for lsq, for epsf photutils' own model ``sum_i f_i
epsf.evaluate(x, y, 1, x_i + d_x, y_i + d_y)`` at the known positions and true
fluxes). Then per case, ``s`` and noise: the means over seeds, and each
bayeskernel variant's mean errors over the best peer's (the peers are lsq,
bk-sensor and epsf; the peer named), and a line on the target: at most 5%
error at 2x from a 64x64 sensor image.

``--selfcheck`` checks the conventions and prints the errors: the dense
least-squares matrix against ``convolve2d`` + block sums and against
``make_binned_operator``; the star fields against their model with
``render_points`` (how far lanczos3 and bilinear are from exact sub-pixel
shifts of this PSF); the ePSF conversion on an exact noise-free ePSF (the
data's ePSF computed from the truth), with and without a centre offset, and
transposed or flipped for contrast; photutils' own rendering of that exact
ePSF against the noise-free ``B`` (``x`` = column, ``y`` = row); and
``EPSFBuilder`` on noise-free fields (its own error, in the ePSF and in the
kernel).

    .venv/bin/python benchmarks/bench_superres.py [--seeds N] [--quick]
        [--cases binary stars-grid stars-random] [--markdown FILE] [--selfcheck]
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from importlib import metadata

import numpy as np
import scipy.signal
from _common import Report, fmt, start_peer_report

import bayeskernel as bk
from bayeskernel.binning import bin_image, make_binned_operator

SENSOR = 64  # sensor pixels per side
KERNEL_SHAPE = (21, 21)  # fine pixels
WIDTH = {2: 2.0, 3: 3.0}  # lambda / D in fine pixels: one sensor pixel
SENSOR_KERNEL = {2: 11, 3: 7}  # bk-sensor's kernel side, sensor pixels
BINARY_NOISE = (0.01, 0.03)  # sd over the sd of the noise-free B
STAR_NOISE = (0.02, 0.10)  # sd over the peak of the faintest star
FLUX_RANGE = (100.0, 1000.0)  # dN/dF ~ F^-2
STAR_EDGE = (6.0, 57.0)  # star positions, sensor px
GRID_STARS, GRID_SPACING = 8, 7.0  # stars-grid: 8x8 stars, 7 px apart
RANDOM_STARS = 80
CUTOUT = 11  # extract_stars size, sensor px
SINC_TAPS = 20
CASES = ("binary", "stars-grid", "stars-random")
METHODS = {
    "binary": ("bk", "bk-smooth2", "lsq", "bk-sensor"),
    "stars": ("bk", "bk-bilinear", "lsq", "epsf"),
}
PEERS = ("lsq", "bk-sensor", "epsf")
TARGET = 0.05
HEADERS = ["method", "case", "s", "noise", "seed", "seconds", "rel err", "cov95",
           "noise ratio", "pred err", "note"]  # fmt: skip


class NotAvailable(Exception):
    """A method that cannot run here (not installed)."""


# --- data ------------------------------------------------------------------------------
def truth_kernel(s: int, shift=(0.0, 0.0), shape=KERNEL_SHAPE) -> np.ndarray:
    """The true fine kernel (``shift``: its centre moved by a sub-pixel offset, rows, cols)."""
    return bk.make_kernel("telescope", shape, width=WIDTH[s], shift=tuple(float(x) for x in shift))


def faint_peak(s: int) -> float:
    """Peak sensor pixel of the faintest star (``FLUX_RANGE[0]``) centred on a sensor pixel."""
    _, clean = star_image(np.array([[SENSOR / 2, SENSOR / 2, FLUX_RANGE[0]]]), s)
    return float(clean.max())


def star_image(points: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """The fine image and the noise-free sensor image of a table of stars.

    Parameters
    ----------
    points : (n, 3) numpy.ndarray
        ``(row, col, flux)`` in sensor pixels.
    s : int
        Oversampling.

    Returns
    -------
    fine, clean : numpy.ndarray
        ``(64 s, 64 s)`` and ``(64, 64)``: each star the PSF centred at its
        fine position ``s r + (s - 1) / 2``, sampled exactly on the 21x21
        window around its fine pixel, times its flux; ``clean`` the block sums.
    """
    pad, half = KERNEL_SHAPE[0], KERNEL_SHAPE[0] // 2
    fine = np.zeros((SENSOR * s + 2 * pad,) * 2)
    for row, col, flux in points:
        centre = s * np.array([row, col]) + (s - 1) / 2
        base = np.floor(centre).astype(int)
        stamp = truth_kernel(s, centre - base)
        r, c = pad + base - half
        fine[r : r + KERNEL_SHAPE[0], c : c + KERNEL_SHAPE[1]] += flux * stamp
    fine = fine[pad:-pad, pad:-pad]
    return fine, bin_image(fine, (s, s))


def star_points(case: str, rng: np.random.Generator) -> np.ndarray:
    """Star positions and fluxes of a field (module docstring)."""
    if case == "stars-grid":
        nodes = STAR_EDGE[0] + 0.5 + GRID_SPACING * np.arange(GRID_STARS)
        rows, cols = (x.ravel() for x in np.meshgrid(nodes, nodes, indexing="ij"))
        rows = rows + rng.uniform(-0.5, 0.5, rows.size)
        cols = cols + rng.uniform(-0.5, 0.5, cols.size)
    else:
        rows, cols = rng.uniform(*STAR_EDGE, (2, RANDOM_STARS))
    lo, hi = FLUX_RANGE
    flux = 1.0 / (1.0 / lo - rng.uniform(size=rows.size) * (1.0 / lo - 1.0 / hi))
    return np.column_stack([rows, cols, flux])


def make_data(case: str, s: int, seed: int) -> dict:
    """One data set, noise-free, with a unit noise draw to scale.

    Returns
    -------
    dict
        ``kernel`` (truth), ``clean`` (noise-free B), ``unit_noise`` (standard
        normal, B's shape), ``scale`` (what the noise fractions multiply), and
        ``A`` (binary) or ``points`` (stars), ``psnr_base``.
    """
    rng = np.random.default_rng([CASES.index(case), s, seed])
    kernel = truth_kernel(s)
    if case == "binary":
        A = rng.binomial(1, 0.5, (SENSOR * s,) * 2).astype(float)
        clean = bin_image(scipy.signal.convolve2d(A, kernel, mode="same"), (s, s))
        out = dict(A=A, scale=float(clean.std()))
    else:
        points = star_points(case, rng)
        _, clean = star_image(points, s)
        out = dict(points=points, scale=faint_peak(s))
    out.update(kernel=kernel, clean=clean, unit_noise=rng.standard_normal(clean.shape), s=s)
    return out


def with_noise(data: dict, fraction: float) -> dict:
    """The data set with its noise at ``fraction`` of its scale."""
    sd = fraction * data["scale"]
    out = dict(data, sd=sd, B=data["clean"] + sd * data["unit_noise"])
    out["psnr"] = 20 * math.log10(np.ptp(data["clean"]) / sd)
    return out


def noise_label(case: str, fraction: float) -> str:
    return f"{fraction:.0%} " + ("sd(B)" if case == "binary" else "faint peak")


# --- shared helpers --------------------------------------------------------------------
def dense_operator(A: np.ndarray, shape: tuple[int, int], s: int) -> np.ndarray:
    """``H`` with ``H @ K.ravel() == bin_image(convolve2d(A, K, 'same'), (s, s)).ravel()``.

    Column ``(u, v)`` is ``convolve2d(A, e_uv, 'same')``, which is ``A``
    shifted by ``(u - P // 2, v - Q // 2)`` with zeros shifted in, then block-summed.
    """
    P, Q = shape
    height, width = A.shape
    padded = np.pad(A, ((P // 2, P // 2), (Q // 2, Q // 2)))
    columns = np.empty((P * Q, height // s * (width // s)))
    for u in range(P):
        for v in range(Q):
            top, left = 2 * (P // 2) - u, 2 * (Q // 2) - v
            shifted = padded[top : top + height, left : left + width]
            columns[u * Q + v] = bin_image(shifted, (s, s)).ravel()
    return columns.T


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def coverage(lower, upper, truth) -> float:
    return float(np.mean((lower <= truth) & (truth <= upper)))


def sensor_kernel_on_fine_grid(kernel: np.ndarray, s: int, shape=KERNEL_SHAPE) -> np.ndarray:
    """bk-sensor's kernel on the fine grid: replicated, over ``s**4``, re-centred (docstring)."""
    fine = np.kron(kernel, np.ones((s, s))) / s**4
    if s % 2 == 0:  # the replicated grid's nodes sit half a fine pixel off the truth's
        fine = 0.5 * (fine[1:] + fine[:-1])
        fine = 0.5 * (fine[:, 1:] + fine[:, :-1])
    if fine.shape != tuple(shape):
        raise ValueError(f"sensor kernel {kernel.shape} gives {fine.shape}, not {shape}")
    return fine


# --- bayeskernel -----------------------------------------------------------------------
_WARMED: dict[tuple, float] = {}


def timed_fit(key: tuple, *args, **kwargs):
    """``bk.fit`` timed on a compiled call; the first call per ``key`` is made untimed first."""
    if key not in _WARMED:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bk.fit(*args, **kwargs)
        _WARMED[key] = time.perf_counter() - start
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = bk.fit(*args, **kwargs)
    seconds = time.perf_counter() - start
    names = sorted({w.category.__name__ for w in caught})
    return post, seconds, names


def run_bk(data: dict, method: str, seed: int) -> dict:
    """A fine-grid bayeskernel fit (``bk``, ``bk-smooth2``, ``bk-bilinear``)."""
    s = data["s"]
    prior = "smooth2" if method == "bk-smooth2" else "auto"
    if "A" in data:
        A = data["A"]
    else:
        renderer = "bilinear" if method == "bk-bilinear" else "lanczos3"
        A = bk.render_points(data["points"], (SENSOR * s,) * 2, oversample=s, method=renderer)
    key = ("fine", prior, A.shape, KERNEL_SHAPE, s)
    post, seconds, caught = timed_fit(key, A, data["B"], KERNEL_SHAPE, oversample=s,
                                      prior=prior, seed=seed, progress_bar=False)  # fmt: skip
    lower, upper = post.interval(0.95)
    note = f"{post.method}, prior {post.prior}" + (f", {', '.join(caught)}" if caught else "")
    return dict(kernel=post.kernel_mean, lower=lower, upper=upper, noise=post.noise_sigma,
                pred=post.predict(), seconds=seconds, note=note)  # fmt: skip


def run_bk_sensor(data: dict, seed: int) -> dict:
    """bk.fit at the sensor's resolution, its kernel upsampled for the comparison."""
    s = data["s"]
    A = bin_image(data["A"], (s, s)) / s**2
    side = SENSOR_KERNEL[s]
    key = ("sensor", "auto", A.shape, (side, side), 1)
    post, seconds, caught = timed_fit(key, A, data["B"], (side, side), prior="auto",
                                      seed=seed, progress_bar=False)  # fmt: skip
    note = f"{post.method}, prior {post.prior}, {side}x{side} sensor kernel, sum "
    note += f"{post.kernel_mean.sum():.3g}" + (f", {', '.join(caught)}" if caught else "")
    return dict(kernel=sensor_kernel_on_fine_grid(post.kernel_mean, s), noise=post.noise_sigma,
                pred=post.predict(), seconds=seconds, note=note)  # fmt: skip


# --- peers -----------------------------------------------------------------------------
def run_lsq(data: dict) -> dict:
    """Unregularised least squares for the fine kernel through the binned operator."""
    s = data["s"]
    start = time.perf_counter()
    if "A" in data:
        A = data["A"]
    else:
        A = bk.render_points(data["points"], (SENSOR * s,) * 2, oversample=s, method="lanczos3")
    H = dense_operator(A, KERNEL_SHAPE, s)
    y = data["B"].ravel()
    solution, _, rank, _ = np.linalg.lstsq(H, y, rcond=None)
    seconds = time.perf_counter() - start
    pred = H @ solution
    dof = y.size - H.shape[1]
    noise = float(np.sqrt(np.sum((y - pred) ** 2) / dof))
    note = f"H {H.shape[0]}x{H.shape[1]}, rank {rank}, cond {np.linalg.cond(H):.3g}"
    return dict(kernel=solution.reshape(KERNEL_SHAPE), noise=noise,
                pred=pred.reshape(data["B"].shape), seconds=seconds, note=note)  # fmt: skip


def sinc_taps(s: int, shift: float, taps: int = SINC_TAPS) -> np.ndarray:
    """``h(m)``, ``m = -taps..taps``: a sensor pixel's sum of the sinc-interpolated kernel."""
    m = np.arange(-taps, taps + 1)
    a = np.arange(s) - (s - 1) / 2
    return np.sinc(m[:, None] + shift + a[None, :]).sum(axis=1)


def epsf_axis_matrix(nodes: int, origin: float, size: int, s: int, shift: float) -> np.ndarray:
    """``T[k, n] = h((k - origin) - (n - size // 2))`` along one axis."""
    h = sinc_taps(s, shift)
    lag = np.rint((np.arange(nodes)[:, None] - origin) - (np.arange(size)[None, :] - size // 2))
    lag = lag.astype(int)
    out = np.zeros(lag.shape)
    inside = np.abs(lag) <= SINC_TAPS
    out[inside] = h[lag[inside] + SINC_TAPS]
    return out


def epsf_to_fine(data: np.ndarray, origin_xy, s: int, offset_rc, shape=KERNEL_SHAPE) -> np.ndarray:
    """photutils' ePSF array as our fine kernel (module docstring).

    Parameters
    ----------
    data : (ny, nx) numpy.ndarray
        ``ImagePSF.data``, indexed ``[row, col]``.
    origin_xy : (float, float)
        ``ImagePSF.origin``, ``(x, y)`` = ``(col, row)`` node of the ePSF's centre.
    s : int
        Its oversampling.
    offset_rc : (float, float)
        Median fitted centre minus known position, ``(row, col)`` sensor px.
    shape : tuple of int
        The fine kernel's shape.

    Returns
    -------
    numpy.ndarray
        ``K`` summing to 1.
    """
    rows = epsf_axis_matrix(data.shape[0], origin_xy[1], shape[0], s, s * offset_rc[0])
    cols = epsf_axis_matrix(data.shape[1], origin_xy[0], shape[1], s, s * offset_rc[1])
    kernel, *_ = np.linalg.lstsq(np.kron(rows, cols), data.ravel(), rcond=None)
    kernel = kernel.reshape(shape)
    return kernel / kernel.sum()


def photutils_model(epsf, points: np.ndarray, shape, offset_rc=(0.0, 0.0)) -> np.ndarray:
    """``sum_i f_i epsf(x - x_i - d_x, y - y_i - d_y)``: photutils' image of the stars."""
    yy, xx = np.indices(shape, dtype=float)
    image = np.zeros(shape)
    for row, col, flux in points:
        image += flux * epsf.evaluate(x=xx, y=yy, flux=1.0, x_0=col + offset_rc[1],
                                      y_0=row + offset_rc[0])  # fmt: skip
    return image


def build_epsf(B: np.ndarray, points: np.ndarray, s: int):
    """photutils' ePSF from cutouts at the known positions; and the median centre offset."""
    from astropy.nddata import NDData
    from astropy.table import Table
    from photutils.psf import EPSFBuilder, extract_stars

    catalog = Table({"x": points[:, 1], "y": points[:, 0]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # per-star fit notices
        stars = extract_stars(NDData(B), catalog, size=CUTOUT)
        result = EPSFBuilder(oversampling=s, progress_bar=False)(stars)
    if len(stars) != len(points):
        raise RuntimeError(f"extract_stars kept {len(stars)} of {len(points)} stars")
    centres = np.asarray(result.fitted_stars.center_flat)  # (x, y), in catalogue order
    offset = np.median(centres[:, ::-1] - points[:, :2], axis=0)  # (row, col)
    return result, offset


def run_epsf(data: dict) -> dict:
    """photutils' EPSFBuilder, its ePSF converted to our fine kernel."""
    try:
        import photutils
    except ImportError as error:
        raise NotAvailable(f"not installed ({error})") from None
    s = data["s"]
    start = time.perf_counter()
    result, offset = build_epsf(data["B"], data["points"], s)
    kernel = epsf_to_fine(result.epsf.data, result.epsf.origin, s, offset)
    seconds = time.perf_counter() - start
    pred = photutils_model(result.epsf, data["points"], data["B"].shape, offset)
    note = (f"photutils {photutils.__version__}, {result.iterations} iter, "
            f"converged {result.converged}, excluded {result.n_excluded_stars}, "
            f"centre offset ({offset[0]:+.2f}, {offset[1]:+.2f}) px")  # fmt: skip
    return dict(kernel=kernel, pred=pred, seconds=seconds, note=note)


# --- the benchmark ---------------------------------------------------------------------
def run_method(method: str, case: str, data: dict, fraction: float, seed: int) -> list:
    """One table row."""
    label = noise_label(case, fraction)
    head = [method, case, data["s"], label, seed]
    try:
        if method in ("bk", "bk-smooth2", "bk-bilinear"):
            out = run_bk(data, method, seed)
        elif method == "bk-sensor":
            out = run_bk_sensor(data, seed)
        elif method == "lsq":
            out = run_lsq(data)
        else:
            out = run_epsf(data)
    except NotAvailable as reason:
        return [*head, *[None] * 5, str(reason)]
    except Exception as error:  # noqa: BLE001 - a failing method is a row, not a crash
        return [*head, *[None] * 5, f"failed: {type(error).__name__}: {str(error)[:120]}"]
    truth = data["kernel"]
    cover = coverage(out["lower"], out["upper"], truth) if "lower" in out else None
    noise = out["noise"] / data["sd"] if out.get("noise") is not None else None
    pred = float(np.sqrt(np.mean((out["pred"] - data["clean"]) ** 2)) / data["sd"])
    return [*head, out["seconds"], relative_error(out["kernel"], truth), cover, noise, pred,
            out["note"]]  # fmt: skip


SUMMARY_HEADERS = ["case", "s", "noise", "method", "seeds", "mean s", "mean rel err",
                   "rel err / best peer", "mean pred err", "pred err / best peer", "mean cov95",
                   "mean noise ratio"]  # fmt: skip


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summary_rows(rows: list) -> list:
    """Means over seeds per case, ``s``, noise and method; bk's errors over the best peer's."""
    col = {k: HEADERS.index(k) for k in ("seconds", "rel err", "pred err", "cov95",
                                         "noise ratio")}  # fmt: skip
    groups = []
    for row in rows:
        if row[1:4] not in groups:
            groups.append(row[1:4])
    out = []
    for group in groups:
        methods = []
        for row in rows:
            if row[1:4] == group and row[0] not in methods:
                methods.append(row[0])
        means = {}
        for name in methods:
            done = [r for r in rows if r[0] == name and r[1:4] == group and r[6] is not None]
            if done:
                means[name] = {k: _mean([r[i] for r in done]) for k, i in col.items()}
                means[name]["seeds"] = len(done)
        for name in methods:
            if name not in means:
                out.append([*group, name, 0, *[None] * 7])
                continue
            ours, ratios = means[name], []
            for key in ("rel err", "pred err"):
                peers = {k: v[key] for k, v in means.items() if k in PEERS}
                if peers and name not in PEERS:
                    best = min(peers, key=peers.get)
                    ratios.append(f"{ours[key] / peers[best]:.3g} ({best})")
                else:
                    ratios.append(None)
            out.append([*group, name, ours["seeds"], ours["seconds"], ours["rel err"],
                        ratios[0], ours["pred err"], ratios[1], ours["cov95"],
                        ours["noise ratio"]])  # fmt: skip
    return out


def target_lines(summary: list) -> list[str]:
    """bk against the target at s = 2 (mean rel err per case and noise)."""
    lines = []
    for row in summary:
        case, s, noise, method, _, _, error = row[:7]
        if method == "bk" and s == 2 and error is not None:
            verdict = "meets" if error <= TARGET else "misses"
            lines.append(f"- {case}, {noise}: bk mean rel err {fmt(error)} {verdict} "
                         f"the {TARGET:.0%} target")  # fmt: skip
    return lines


def versions() -> str:
    names = ("bayeskernel", "jax", "numpy", "scipy", "photutils", "astropy")
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


# --- selfcheck -------------------------------------------------------------------------
def exact_epsf(s: int, offset_rc=(0.0, 0.0), nodes: int = 2 * CUTOUT + 1) -> np.ndarray:
    """The data's ePSF from the truth, on photutils' node grid, summing to ``s**2``.

    Node ``k`` is a sensor pixel centred ``(k - o) / s + offset`` sensor px from
    the star (``o`` the centre node): the sum of the fine values at fine
    offsets ``(k - o) + s offset + a - (s - 1) / 2``, ``a < s``, from the
    21x21 window of a star at the matching fine phase, as :func:`star_image`
    makes it.
    """
    half, o = KERNEL_SHAPE[0] // 2, nodes // 2
    start = s * np.asarray(offset_rc, float) - (s - 1) / 2  # fine offset of a = 0 at k = o
    phase = np.mod(-start, 1.0)  # the star's fine phase: offsets n - phase, n integer
    stamp = truth_kernel(s, phase)  # stamp[j] is at offset j - half - phase
    base = np.rint(start + phase).astype(int)  # offset (k - o) + start = (j - half) - phase
    pad = nodes + s
    padded = np.pad(stamp, pad)
    out = np.zeros((nodes, nodes))
    for a in range(s):
        for b in range(s):
            r0 = pad + half + base[0] + a - o
            c0 = pad + half + base[1] + b - o
            out += padded[r0 : r0 + nodes, c0 : c0 + nodes]
    return out * s**2 / out.sum()


def sensor_floor(s: int) -> float:
    """Rel err of the truth's ``s x s`` block means, replicated as bk-sensor's kernel is.

    At odd ``s`` the smallest error of any kernel on the sensor grid in this
    comparison; at even ``s`` (blocks starting on either side of the centre,
    the smaller error) only a reference, because of the re-centring average.
    """
    kernel = truth_kernel(s)
    errors = []
    for before in range(s):
        padded = np.pad(kernel, [(before, (-(kernel.shape[0] + before)) % s)] * 2)
        n = padded.shape[0] // s
        means = padded.reshape(n, s, n, s).sum(axis=(1, 3)) * s**2
        if n * s != kernel.shape[0] + (s % 2 == 0):
            continue
        errors.append(relative_error(sensor_kernel_on_fine_grid(means, s), kernel))
    return min(errors)


def render_sinc(points: np.ndarray, shape: tuple[int, int], s: int, taps: int = 16):
    """Point sources spread by a separable sinc over ``2 taps`` nodes per axis (selfcheck)."""
    image = np.zeros(shape)
    for row, col, flux in points:
        centre = s * np.array([row, col]) + (s - 1) / 2
        base = np.floor(centre).astype(int)
        r = base[0] + np.arange(1 - taps, taps + 1)
        c = base[1] + np.arange(1 - taps, taps + 1)
        keep_r, keep_c = (r >= 0) & (r < shape[0]), (c >= 0) & (c < shape[1])
        weights = np.outer(np.sinc(r - centre[0])[keep_r], np.sinc(c - centre[1])[keep_c])
        image[np.ix_(r[keep_r], c[keep_c])] += flux * weights
    return image


def selfcheck(report: Report) -> bool:
    """Conventions of the data, the least-squares operator and the ePSF conversion."""
    rows, passed = [], True

    def check(name, value, limit=None, detail=""):
        nonlocal passed
        ok = None if limit is None else bool(value < limit)
        passed &= ok is not False
        rows.append([name, value, "-" if limit is None else f"< {limit:g}",
                     "info" if ok is None else ok, detail])  # fmt: skip

    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    for s in (2, 3):
        A = rng.binomial(1, 0.5, (SENSOR * s,) * 2).astype(float)
        kernel = truth_kernel(s)
        reference = bin_image(scipy.signal.convolve2d(A, kernel, mode="same"), (s, s))
        dense = (dense_operator(A, KERNEL_SHAPE, s) @ kernel.ravel()).reshape(reference.shape)
        with jax.enable_x64(True):
            op = make_binned_operator(A, KERNEL_SHAPE, "same", (s, s))
            library = np.asarray(op(jnp.asarray(kernel)))
        scale = np.abs(reference).max()
        check(f"lsq matrix vs convolve2d + bin_image, s={s}",
              np.abs(dense - reference).max() / scale, 1e-12, "max abs / max")  # fmt: skip
        check(f"make_binned_operator vs convolve2d + bin_image, s={s}",
              np.abs(library - reference).max() / scale, 1e-10, "max abs / max")  # fmt: skip

    s = 2
    kernel = truth_kernel(s)
    points = star_points("stars-grid", np.random.default_rng(1))
    _, clean = star_image(points, s)
    for method in ("lanczos3", "bilinear"):
        A = bk.render_points(points, (SENSOR * s,) * 2, oversample=s, method=method)
        model = bin_image(scipy.signal.convolve2d(A, kernel, mode="same"), (s, s))
        check(f"stars-grid vs bin(convolve2d(render_points {method}, K))",
              relative_error(model, clean), None,
              "||model - B|| / ||B||, noise-free: the renderer's model error")  # fmt: skip
    peak = faint_peak(s)
    rows.append(["faint star peak (flux 100, on a pixel centre)", peak, "-", "info",
                 f"noise sd {STAR_NOISE[0]:.0%}: {STAR_NOISE[0] * peak:.3g}, "
                 f"{STAR_NOISE[1]:.0%}: {STAR_NOISE[1] * peak:.3g}"])  # fmt: skip

    for s_check in (2, 3):
        check(f"bk-sensor reference, s={s_check}: the truth's block means, replicated",
              sensor_floor(s_check), None,
              "rel err of the sensor-grid kernel a perfect fit would roughly give")  # fmt: skip

    # How close the fits' model of the star fields can come: near noise-free fits.
    data = with_noise(make_data("stars-grid", s, 0), 0.0005)
    renderers = {
        "lanczos3": lambda p: bk.render_points(p, (SENSOR * s,) * 2, oversample=s),
        "bilinear": lambda p: bk.render_points(p, (SENSOR * s,) * 2, oversample=s,
                                               method="bilinear"),
        "32-tap sinc (this script's)": lambda p: render_sinc(p, (SENSOR * s,) * 2, s),
    }  # fmt: skip
    for name, render in renderers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            post = bk.fit(render(data["points"]), data["B"], KERNEL_SHAPE, oversample=s,
                          seed=0, progress_bar=False)  # fmt: skip
        check(f"bk on stars-grid, noise sd 0.05% of the faint peak, A by {name}",
              relative_error(post.kernel_mean, kernel), None,
              f"the model's floor; noise ratio {post.noise_sigma / data['sd']:.3g}, prior "
              f"{post.prior}")  # fmt: skip

    # The conversion on exact ePSFs (photutils' node grid: 2 * CUTOUT + 1 nodes at s = 2).
    for offset in ((0.0, 0.0), (0.1, -0.15)):
        data = exact_epsf(s, offset)
        origin = ((data.shape[1] - 1) / 2, (data.shape[0] - 1) / 2)
        converted = epsf_to_fine(data, origin, s, offset)
        others = {
            "transposed": relative_error(converted.T, kernel),
            "flipped": relative_error(converted[::-1, ::-1], kernel),
        }
        if any(offset):
            wrong = epsf_to_fine(data, origin, s, tuple(-x for x in offset))
            others["offset negated"] = relative_error(wrong, kernel)
        check(f"ePSF conversion, exact ePSF, centre offset {offset}",
              relative_error(converted, kernel), 0.01,
              ", ".join(f"{k} {fmt(v)}" for k, v in others.items()))  # fmt: skip
    try:
        from photutils.psf import ImagePSF
    except ImportError as error:
        rows.append(["photutils checks", None, "-", "skipped", f"not installed ({error})"])
    else:
        offset = (0.1, -0.15)
        variants = (
            ("x=col, y=row", (0.0, 0.0), points, (0.0, 0.0), 0.03),
            ("x=row, y=col (wrong)", (0.0, 0.0), points[:, [1, 0, 2]], (0.0, 0.0), None),
            (f"centre offset {offset}", offset, points, offset, 0.03),
            ("centre offset negated (wrong)", offset, points, (-offset[0], -offset[1]), None),
        )
        for label, made_at, table, used, limit in variants:
            epsf = ImagePSF(data=exact_epsf(s, made_at), oversampling=s)
            model = photutils_model(epsf, table, clean.shape, used)
            check(f"photutils evaluate of the exact ePSF, {label}",
                  relative_error(model, clean), limit,
                  "||model - B|| / ||B||, noise-free (its spline between nodes)")  # fmt: skip
        for case in ("stars-grid", "stars-random"):
            field = star_points(case, np.random.default_rng(2))
            _, noise_free = star_image(field, s)
            start = time.perf_counter()
            result, offset = build_epsf(noise_free, field, s)
            seconds = time.perf_counter() - start
            exact = exact_epsf(s, offset, result.epsf.data.shape[0])
            built = result.epsf.data * s**2 / result.epsf.data.sum()
            converted = epsf_to_fine(result.epsf.data, result.epsf.origin, s, offset)
            model = photutils_model(result.epsf, field, noise_free.shape, offset)
            detail = (f"ePSF-domain err {fmt(relative_error(built, exact))} (vs the exact "
                      f"ePSF at its centre offset ({offset[0]:+.2f}, {offset[1]:+.2f}) px), "
                      f"its model of B: err {fmt(relative_error(model, noise_free))}, "
                      f"{result.iterations} iter, {seconds:.1f} s")  # fmt: skip
            check(f"EPSFBuilder, noise-free {case}: kernel err", relative_error(converted, kernel),
                  None, detail)  # fmt: skip

    report.table("Selfcheck (s = 2 unless named; relative Frobenius errors)",
                 ["check", "value", "pass if", "pass", "detail"], rows)  # fmt: skip
    return bool(passed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="data sets per case, s and noise")
    parser.add_argument("--quick", action="store_true", help="one seed, s = 2 only")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES,
                        help="cases to run (default: all)")  # fmt: skip
    args, report = start_peer_report(
        parser,
        "Super-resolution: fine kernels from 64x64 sensor images",
        versions,
        selfcheck,
        "check the conventions and the ePSF conversion, then stop",
    )

    seeds = 1 if args.quick else args.seeds
    plan = []
    for case in args.cases:
        for s in (2,) if case != "binary" or args.quick else (2, 3):
            plan.append((case, s))
    report.note(f"truth: telescope PSF {KERNEL_SHAPE}, width {WIDTH}; sensor {SENSOR}x{SENSOR}; "
                f"seeds 0..{seeds - 1}")  # fmt: skip
    rows, data_rows = [], []
    for case, s in plan:
        fractions = BINARY_NOISE if case == "binary" else STAR_NOISE
        methods = METHODS["binary" if case == "binary" else "stars"]
        for seed in range(seeds):
            base = make_data(case, s, seed)
            for fraction in fractions:
                data = with_noise(base, fraction)
                data_rows.append([case, s, noise_label(case, fraction), seed, data["sd"],
                                  data["psnr"]])  # fmt: skip
                print(f"\n{case}, s={s}, {noise_label(case, fraction)}, seed {seed} "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
                for method in methods:
                    row = run_method(method, case, data, fraction, seed)
                    rows.append(row)
                    print("  " + "  ".join(fmt(x) for x in row), flush=True)
    report.table("Data: noise sd and PSNR (20 log10 of the noise-free B's peak-to-peak over sd)",
                 ["case", "s", "noise", "seed", "sd", "PSNR dB"], data_rows)  # fmt: skip
    report.note("first (compiling) call per bayeskernel configuration, untimed in the table: "
                + "; ".join(f"{k[0]} {k[1]} A {k[2][0]}x{k[2][1]} kernel {k[3][0]}x{k[3][1]}: "
                            f"{v:.1f} s" for k, v in _WARMED.items()))  # fmt: skip
    for case in args.cases:
        report.table(f"Per data set: {case}", HEADERS, [r for r in rows if r[1] == case])
    summary = summary_rows(rows)
    report.table("Per case, s and noise: means over seeds", SUMMARY_HEADERS, summary)
    report.note("Target, at most 5% error at 2x from a 64x64 sensor image (the published 2-5% "
                "are for a calibration target, the binary case; the star fields for "
                "comparison):\n" + "\n".join(target_lines(summary)))  # fmt: skip
    report.note(f"load average at the end: {os.getloadavg()}")
    report.write(args.markdown)


if __name__ == "__main__":
    main()
