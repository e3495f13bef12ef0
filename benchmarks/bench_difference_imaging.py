"""Difference imaging: the seeing kernel between a reference star field and a science image.

The case. ``A`` is a sky-subtracted, noise-free reference image of a star field:
about one star per 150 pixels at uniform sub-pixel positions, fluxes from the
power law ``dN/dF ~ F^-2`` between 100 and 1e5 counts, each star a
pixel-integrated 2D Gaussian of sd 0.9 px. The true kernel ``K`` is a slightly
elliptical Moffat profile (beta 3, FWHM 3.5 px, axis ratio 0.85, position angle
30 degrees) on a 21x21 grid, summing to 1. The science image is
``B = poisson(gain * (convolve2d(A, K, 'same') + sky)) / gain + normal(0, read)``
with ``gain = 2``, ``read = 3`` counts and a sky offset ``sky = 3`` counts (the
mean pixel of the convolved field is about 4.6 counts, its median about 1: a
fit without a background term has to put the offset somewhere). Each method is
given the variance map a user would compute from the data,
``variance = read**2 + clip(B, 0, None) / gain``, if it takes one (a map made
from ``B`` itself weights the pixels that fluctuate low more: a sky fitted with
it is low by about ``Var(B) / (gain * variance)``, some 0.5 counts here, where a
map from the noise-free image gives the sky within noise). Cases:
128x128 and 512x512 images, several seeds each (the data depend only on the
size and the seed), and a 2048x2048 image for timing (``--large``).

The methods, all given ``A``, ``B`` and the kernel shape:

* ``bk``: ``bk.fit(A, B, (21, 21), mode='same', background=0, variance=variance,
  prior='auto', seed=seed, progress_bar=False)``: a constant background fitted
  jointly with the kernel, the noise sd a scale on ``sqrt(variance)``.
  ``bk-radial`` is the same with ``prior='radial'`` (the kernel is not quite
  radial). ``bk-nobg`` is ``bk.fit(A, B, (21, 21), prior='auto', seed=seed,
  progress_bar=False)``: no background, one noise sd for every pixel.
  ``bk-2pass`` fits as ``bk``, then again with the variance map made from that
  fit's prediction, ``bk.ccd_variance(post.predict(), gain, read)`` (what a user
  does to avoid the bias of a map from the noisy ``B``); its time is both fits. Variants
  whose keywords ``fit`` lacks are reported as not available. The point
  estimate is ``kernel_mean``, the intervals ``interval(0.95)``, the sky
  ``background_mean``. On images of 512x512 and more, the first seed's fit is
  repeated on the same data in the same process: the column ``s 2nd`` is the
  time of that second call (nothing left to compile).
* ``ois``: Bramich (2008)'s delta-function basis with a joint polynomial
  background, ``ois.optimal_system(B, A, kernelshape=(21, 21), bkgdegree=0,
  method='Bramich')`` (unweighted least squares). It convolves its second
  argument with ``scipy.signal.convolve2d(A, kernel, mode='same')``, so its
  kernel is ``K`` as it is; the sky is the mean of its background image. It
  builds one image per kernel entry: it is skipped when that would not fit in
  half of the available memory.
* ``sfft``: SFFT's ``Customized_Packet.CP`` on FITS files in a temporary folder,
  ``ForceConv='REF'``, ``GKerHW=10``, ``KerPolyOrder=0`` (one kernel for the whole
  field), ``BGPolyOrder=0`` (a constant background), ``ConstPhotRatio=True``,
  the NumPy backend, no masking (the masked images are the images). Its
  kernel, from ``Realize_MatchingKernel(...).FromArray`` at the image centre, is
  ``K`` transposed (SFFT reads FITS data transposed, axis 0 being x); the sky is
  the last entry of its solution vector. SFFT convolves by FFT: the field is
  periodic for it, and stars near one edge leak into the other.

``--selfcheck`` verifies these conventions on a noise-free toy case (an
asymmetric 7x7 kernel, a 64x64 reference that is zero within 10 px of the
edges, a sky offset of 3): the converted kernel and sky of each peer must match
the truth to 1e-8, and the other orientations are shown for contrast. It then
repeats the fits with a reference that fills the whole image, to show each
peer's handling of the image edges.

Reported per method and data set: seconds (wall), the relative error of the
kernel ``||K_hat - K||_F / ||K||_F`` (``rel err``), the coverage of the true
entries by the 95% intervals (bayeskernel only), the noise scale (bayeskernel's
``noise_sigma``: about 1 when the variance map is right; for ``bk-nobg`` the
noise sd in counts; peers give none), ``star err``: the relative error of the
kernel convolved with a reference star (the error in the predicted image of a
point source, where the kernel's highest spatial frequencies, which stars of sd
0.9 px barely constrain and which dominate the least-squares peers' ``rel
err``, count little), ``diff chi``: the rms of the difference image
``B - convolve2d(A, K_hat, 'same') - sky_hat`` over ``sqrt(variance)`` (about 1
for a good subtraction), the kernel's sum (truth 1), and the fitted sky (truth
3). Then per image size: the means over seeds per method, and each bayeskernel
variant's mean errors divided by the best peer's (the peer named). The machine
is shared: times are indicative (load averages are printed).

    .venv/bin/python benchmarks/bench_difference_imaging.py [--seeds N] [--sizes 128 512]
        [--large] [--quick] [--methods NAME ...] [--markdown FILE] [--selfcheck]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import math
import os
import tempfile
import time
from collections.abc import Callable
from importlib import metadata

import numpy as np
import scipy.signal
import scipy.special
from _common import Report, fmt, start_peer_report

import bayeskernel as bk

KERNEL_SHAPE = (21, 21)
MOFFAT = dict(fwhm=3.5, beta=3.0, axis_ratio=0.85, angle_deg=30.0)
STAR_DENSITY = 1 / 150  # stars per pixel
FLUX_RANGE = (100.0, 1e5)  # counts; dN/dF ~ F^-2
STAR_SIGMA = 0.9  # px, the reference's own PSF
GAIN, READ_NOISE, SKY = 2.0, 3.0, 3.0
TOLERANCE = 1e-8  # selfcheck: noise-free recovery, up to rounding
METHODS = ("bk", "bk-2pass", "bk-nobg", "bk-radial", "ois", "sfft")
HEADERS = ["method", "size", "seed", "s", "s 2nd", "rel err", "cov95", "noise scale",
           "star err", "diff chi", "kernel sum", "sky", "note"]  # fmt: skip


class NotAvailable(Exception):
    """A method that cannot run here (not installed, keyword missing, too big)."""


# --- data ------------------------------------------------------------------------------
def moffat_kernel(
    shape: tuple[int, int],
    fwhm: float,
    beta: float,
    axis_ratio: float = 1.0,
    angle_deg: float = 0.0,
) -> np.ndarray:
    """A Moffat profile centred on the grid, normalised to sum 1.

    Parameters
    ----------
    shape : tuple of int
        Odd grid shape ``(P, Q)``; the centre is ``((P - 1) / 2, (Q - 1) / 2)``.
    fwhm : float
        Full width at half maximum along the major axis, in pixels.
    beta : float
        Moffat power index.
    axis_ratio : float
        Minor over major axis (1: round).
    angle_deg : float
        Angle of the major axis from the column axis towards the row axis.

    Returns
    -------
    numpy.ndarray
        The kernel, shape ``shape``.
    """
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    rows, cols = np.indices(shape, dtype=float)
    y, x = rows - (shape[0] - 1) / 2, cols - (shape[1] - 1) / 2
    theta = math.radians(angle_deg)
    u = x * math.cos(theta) + y * math.sin(theta)
    v = (-x * math.sin(theta) + y * math.cos(theta)) / axis_ratio
    kernel = (1.0 + (u**2 + v**2) / alpha**2) ** (-beta)
    return kernel / kernel.sum()


def star_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Pixel-integrated Gaussian stars at uniform sub-pixel positions.

    Parameters
    ----------
    shape : tuple of int
        Image shape.
    rng : numpy.random.Generator
        Source of positions and fluxes.

    Returns
    -------
    numpy.ndarray
        The reference image (no sky, no noise).
    """
    m, n = shape
    count = rng.poisson(STAR_DENSITY * m * n)
    centres = rng.uniform(-0.5, [m - 0.5, n - 0.5], size=(count, 2))
    lo, hi = FLUX_RANGE
    flux = 1.0 / (1.0 / lo - rng.uniform(size=count) * (1.0 / lo - 1.0 / hi))  # inverse CDF
    half = math.ceil(5 * STAR_SIGMA)
    offsets = np.arange(-half, half + 1)
    base = np.round(centres).astype(int)

    def profile(centre: np.ndarray, base_index: np.ndarray) -> np.ndarray:
        # The Gaussian integrated over each pixel, so that sub-pixel shifts keep the flux.
        edges = (base_index[:, None] + offsets[None, :] - centre[:, None])[..., None] + [-0.5, 0.5]
        cdf = scipy.special.ndtr(edges / STAR_SIGMA)
        return cdf[..., 1] - cdf[..., 0]

    along_rows, along_cols = profile(centres[:, 0], base[:, 0]), profile(centres[:, 1], base[:, 1])
    stamps = flux[:, None, None] * along_rows[:, :, None] * along_cols[:, None, :]
    r = base[:, 0, None, None] + offsets[None, :, None]
    c = base[:, 1, None, None] + offsets[None, None, :]
    r, c = np.broadcast_to(r, stamps.shape), np.broadcast_to(c, stamps.shape)
    inside = (r >= 0) & (r < m) & (c >= 0) & (c < n)
    image = np.zeros(shape)
    np.add.at(image, (r[inside], c[inside]), stamps[inside])
    return image


def make_case(size: int, seed: int) -> dict:
    """One data set: reference, science image, variance map and the truth.

    Parameters
    ----------
    size : int
        Side of the square images.
    seed : int
        Seed; with ``size`` it fixes the data.

    Returns
    -------
    dict
        ``A``, ``B``, ``variance``, ``kernel`` (the true K) and ``sky``.
    """
    rng = np.random.default_rng([size, seed])
    kernel = moffat_kernel(KERNEL_SHAPE, **MOFFAT)
    A = star_field((size, size), rng)
    # fftconvolve's 'same' is convolve2d's 'same' for odd kernels; it is faster at 2048.
    blurred = np.clip(scipy.signal.fftconvolve(A, kernel, mode="same"), 0.0, None)
    B = rng.poisson(GAIN * (blurred + SKY)) / GAIN + rng.normal(0.0, READ_NOISE, A.shape)
    variance = READ_NOISE**2 + np.clip(B, 0.0, None) / GAIN
    return dict(A=A, B=B, variance=variance, kernel=kernel, sky=SKY)


def star_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Relative error of the kernel as a reference star sees it.

    Both kernels are convolved (``'full'``) with a centred star of the reference
    (the pixel-integrated Gaussian of sd ``STAR_SIGMA``): the error in the
    predicted image of a point source, where the kernel's highest spatial
    frequencies, which the reference barely constrains, count little.

    Parameters
    ----------
    estimate, truth : numpy.ndarray
        Kernels of the same shape.

    Returns
    -------
    float
        ``||g * (estimate - truth)|| / ||g * truth||``.
    """
    half = math.ceil(5 * STAR_SIGMA)
    edges = np.arange(-half, half + 1)[:, None] + [-0.5, 0.5]
    cdf = scipy.special.ndtr(edges / STAR_SIGMA)
    line = cdf[:, 1] - cdf[:, 0]
    star = np.outer(line, line)
    error = scipy.signal.convolve2d(estimate - truth, star, mode="full")
    return float(np.linalg.norm(error) / np.linalg.norm(scipy.signal.convolve2d(truth, star)))


# --- bayeskernel -----------------------------------------------------------------------
def fit_keywords() -> set[str]:
    """The keyword names that ``bk.fit`` takes in this version."""
    return set(inspect.signature(bk.fit).parameters)


def run_bayeskernel(case: dict, seed: int, variant: str, repeat: bool) -> dict:
    """One bayeskernel variant; ``repeat`` times a second, identical call too.

    Parameters
    ----------
    case : dict
        From :func:`make_case`.
    seed : int
        Passed to ``fit``.
    variant : str
        ``'bk'``, ``'bk-2pass'``, ``'bk-radial'`` or ``'bk-nobg'``.
    repeat : bool
        Fit twice on the same data and report the second call's seconds too.

    Returns
    -------
    dict
        ``kernel``, ``lower``, ``upper``, ``noise``, ``sky``, ``seconds``,
        ``seconds_2nd``, ``note``.
    """
    options: dict = dict(prior="radial" if variant == "bk-radial" else "auto")
    if variant != "bk-nobg":
        missing = {"background", "variance"} - fit_keywords()
        if missing:
            raise NotAvailable(f"not available (fit has no {', '.join(sorted(missing))})")
        options.update(mode="same", background=0, variance=case["variance"])
    shape = case["kernel"].shape
    times = []
    for _ in range(2 if repeat else 1):
        start = time.perf_counter()
        post = bk.fit(case["A"], case["B"], shape, seed=seed, progress_bar=False, **options)
        if variant == "bk-2pass":  # the map from the fit, not from the noisy B
            options["variance"] = bk.ccd_variance(post.predict(), GAIN, READ_NOISE)
            post = bk.fit(case["A"], case["B"], shape, seed=seed, progress_bar=False, **options)
            options["variance"] = case["variance"]
        times.append(time.perf_counter() - start)
    lower, upper = post.interval(0.95)
    background = getattr(post, "background_mean", None)
    # Degree 0: one number, the constant; a coefficient array starts with it.
    sky = None if background is None else float(np.ravel(background)[0])
    note = f"method={post.method}, prior {getattr(post, 'prior', '?')}"
    return dict(kernel=post.kernel_mean, lower=lower, upper=upper, noise=post.noise_sigma,
                sky=sky, seconds=times[0], seconds_2nd=times[1] if repeat else None,
                note=note)  # fmt: skip


# --- peers -----------------------------------------------------------------------------
def available_memory() -> float:
    """Bytes the kernel reports as available (inf when unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return math.inf


def ois_kernel(A: np.ndarray, B: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Bramich's kernel and constant background from ois, in scipy's convention.

    Parameters
    ----------
    A, B : numpy.ndarray
        Reference (convolved by ois) and science image.
    shape : tuple of int
        Odd kernel shape.

    Returns
    -------
    kernel : numpy.ndarray
        ``K`` such that ``B ~ convolve2d(A, K, 'same') + sky``.
    sky : float
        The fitted constant background.
    """
    import ois

    _, _, kernel, background = ois.optimal_system(B, A, kernelshape=shape, bkgdegree=0,
                                                  method="Bramich")  # fmt: skip
    return np.asarray(kernel, float), float(np.mean(background))


def run_ois(case: dict, seed: int) -> dict:
    """ois on one data set (the seed is unused: the method is deterministic)."""
    try:
        import ois
    except ImportError as error:
        raise NotAvailable(f"not installed ({error})") from None
    entries = int(np.prod(case["kernel"].shape)) + 1
    need = 8.0 * entries * case["A"].size
    if need > available_memory() / 2:
        raise NotAvailable(f"skipped: its basis images need {need / 2**30:.1f} GiB")
    start = time.perf_counter()
    kernel, sky = ois_kernel(case["A"], case["B"], case["kernel"].shape)
    seconds = time.perf_counter() - start
    return dict(kernel=kernel, sky=sky, seconds=seconds,
                note=f"ois {ois.__version__}, Bramich, bkgdegree=0")  # fmt: skip


def sfft_kernel(A: np.ndarray, B: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """SFFT's constant kernel and constant background, in scipy's convention.

    Parameters
    ----------
    A, B : numpy.ndarray
        Reference (convolved, ``ForceConv='REF'``) and science image.
    shape : tuple of int
        Square odd kernel shape.

    Returns
    -------
    kernel : numpy.ndarray
        ``K`` such that ``B ~ convolve2d(A, K, 'same') + sky``.
    sky : float
        The fitted constant background.
    """
    from astropy.io import fits
    from sfft.CustomizedPacket import Customized_Packet
    from sfft.utils.SFFTSolutionReader import Realize_MatchingKernel

    if shape[0] != shape[1] or shape[0] % 2 == 0:
        raise NotAvailable("SFFT's kernel is square with odd sides")
    half = shape[0] // 2
    with tempfile.TemporaryDirectory(prefix="bench_di_sfft_") as folder:
        ref, sci = os.path.join(folder, "ref.fits"), os.path.join(folder, "sci.fits")
        fits.writeto(ref, np.asarray(A, np.float64))
        fits.writeto(sci, np.asarray(B, np.float64))
        with contextlib.redirect_stdout(io.StringIO()):  # it prints checkpoints even when quiet
            solution, _ = Customized_Packet.CP(
                FITS_REF=ref, FITS_SCI=sci, FITS_mREF=ref, FITS_mSCI=sci, ForceConv="REF",
                GKerHW=half, KerPolyOrder=0, BGPolyOrder=0, ConstPhotRatio=True,
                BACKEND_4SUBTRACT="Numpy", NUM_CPU_THREADS_4SUBTRACT=os.cpu_count() or 1,
                VERBOSE_LEVEL=0,
            )  # fmt: skip
    # SFFT's arrays are the FITS data transposed: N0 counts columns, N1 rows.
    n0, n1 = A.shape[1], A.shape[0]
    centre = np.array([[n0 / 2 + 0.5, n1 / 2 + 0.5]])  # any point: the kernel is constant
    # DK=0: KerPolyOrder; Fpq=1: the one background term of BGPolyOrder=0, last in ``solution``.
    stack = Realize_MatchingKernel(centre).FromArray(solution, n0, n1, shape[0], shape[1], 0, 1)
    return np.asarray(stack[0], float).T, float(solution[-1])


def run_sfft(case: dict, seed: int) -> dict:
    """SFFT on one data set (the seed is unused: the method is deterministic)."""
    try:
        import astropy  # noqa: F401 - SFFT reads its images from FITS files
        import sfft.CustomizedPacket  # noqa: F401 - and needs numba and pyFFTW
    except ImportError as error:
        raise NotAvailable(f"not installed ({error})") from None
    start = time.perf_counter()
    kernel, sky = sfft_kernel(case["A"], case["B"], case["kernel"].shape)
    seconds = time.perf_counter() - start
    return dict(kernel=kernel, sky=sky, seconds=seconds,
                note="NumPy backend, KerPolyOrder=0, BGPolyOrder=0")  # fmt: skip


RUNNERS: dict[str, Callable[[dict, int, bool], dict]] = {
    "bk": lambda case, seed, repeat: run_bayeskernel(case, seed, "bk", repeat),
    "bk-2pass": lambda case, seed, repeat: run_bayeskernel(case, seed, "bk-2pass", repeat),
    "bk-nobg": lambda case, seed, repeat: run_bayeskernel(case, seed, "bk-nobg", repeat),
    "bk-radial": lambda case, seed, repeat: run_bayeskernel(case, seed, "bk-radial", repeat),
    "ois": lambda case, seed, repeat: run_ois(case, seed),
    "sfft": lambda case, seed, repeat: run_sfft(case, seed),
}


# --- the benchmark ---------------------------------------------------------------------
def run_method(name: str, case: dict, size: int, seed: int, repeat: bool) -> list:
    """One table row: the method's numbers, or its reason for having none."""
    try:
        out = RUNNERS[name](case, seed, repeat)
    except NotAvailable as reason:
        return [name, size, seed, *[None] * 9, str(reason)]
    except Exception as error:  # noqa: BLE001 - a failing method is a row, not a crash
        return [name, size, seed, *[None] * 9,
                f"failed: {type(error).__name__}: {str(error)[:120]}"]  # fmt: skip
    truth = case["kernel"]
    estimate = np.asarray(out["kernel"], float)
    error = float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))
    cover = None
    if out.get("lower") is not None:
        cover = float(np.mean((out["lower"] <= truth) & (truth <= out["upper"])))
    # The difference image in units of the given noise: about 1 for a good subtraction.
    model = scipy.signal.fftconvolve(case["A"], estimate, mode="same") + (out.get("sky") or 0.0)
    chi = float(np.sqrt(np.mean((case["B"] - model) ** 2 / case["variance"])))
    return [name, size, seed, out["seconds"], out.get("seconds_2nd"), error, cover,
            out.get("noise"), star_error(estimate, truth), chi, float(estimate.sum()),
            out.get("sky"), out["note"]]  # fmt: skip


SUMMARY_HEADERS = ["size", "method", "seeds", "mean s", "mean rel err", "rel err / best peer",
                   "mean star err", "star err / best peer", "mean cov95"]  # fmt: skip


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
        Rows with columns ``SUMMARY_HEADERS``; the best peer is the one with
        the smallest mean error of that kind, named after the ratio.
    """
    col = {name: HEADERS.index(name) for name in ("s", "rel err", "star err", "cov95")}
    out = []
    for size in sorted({row[1] for row in rows}):
        means: dict[str, dict] = {}
        for name in methods:
            done = [
                r for r in rows if r[0] == name and r[1] == size and r[col["rel err"]] is not None
            ]
            if done:
                means[name] = {k: _mean([r[i] for r in done]) for k, i in col.items()}
                means[name]["seeds"] = len(done)
        out += [_summary_row(size, name, means) for name in methods]
    return out


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _summary_row(size: int, name: str, means: dict) -> list:
    if name not in means:
        return [size, name, 0, *[None] * 6]
    ours, ratios = means[name], []
    for key in ("rel err", "star err"):
        peers = {k: v[key] for k, v in means.items() if not k.startswith("bk")}
        if peers and name.startswith("bk"):
            best = min(peers, key=peers.get)
            ratios.append(f"{ours[key] / peers[best]:.3g} ({best})")
        else:
            ratios.append(None)
    return [size, name, ours["seeds"], ours["s"], ours["rel err"], ratios[0], ours["star err"],
            ratios[1], ours["cov95"]]  # fmt: skip


def versions() -> str:
    """Versions of the libraries compared (and of what they run on)."""
    names = ("bayeskernel", "jax", "numpyro", "numpy", "scipy", "ois", "sfft", "astropy",
             "numba", "pyfftw")  # fmt: skip
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


# --- selfcheck -------------------------------------------------------------------------
def selfcheck(report: Report) -> bool:
    """Noise-free toy fits: each peer's kernel convention and sky, to 1e-8.

    Parameters
    ----------
    report : Report
        Where the table goes.

    Returns
    -------
    bool
        True when every installed peer passes (and the simulation's convolution
        is ``convolve2d``'s).
    """
    rng = np.random.default_rng(7)
    shape, size, border = (7, 7), 64, 10
    kernel = rng.uniform(size=shape)
    kernel /= kernel.sum()  # asymmetric: a flip or a transpose shows
    full = rng.exponential(size=(size, size))
    framed = np.zeros_like(full)
    framed[border:-border, border:-border] = full[border:-border, border:-border]
    orientations = {
        "as is": lambda k: k,
        "flipped": lambda k: k[::-1, ::-1],
        "transposed": lambda k: k.T,
    }
    solvers = {"ois": ("ois", ois_kernel), "sfft": ("sfft", sfft_kernel)}
    rows, passed = [], True
    same = scipy.signal.convolve2d(full, kernel, mode="same")
    fft_error = float(np.abs(scipy.signal.fftconvolve(full, kernel, mode="same") - same).max())
    ok = fft_error < TOLERANCE * np.abs(same).max()
    passed &= ok
    rows.append(["simulation", "fftconvolve vs convolve2d", fft_error, None, "-", ok])
    for name, (module, solve) in solvers.items():
        try:
            __import__(module)
        except ImportError as error:
            rows.append([name, "not installed", "-", None, None, str(error)])
            continue
        for label, A in (("zero border", framed), ("full field", full)):
            B = scipy.signal.convolve2d(A, kernel, mode="same") + SKY
            try:
                estimate, sky = solve(A, B, shape)
            except Exception as error:  # noqa: BLE001 - a failing peer is a row, not a crash
                passed &= label != "zero border"
                rows.append([name, label, None, None, f"failed: {type(error).__name__}", False])
                continue
            # ``estimate`` is already converted: 'as is' must be the truth on the framed case.
            errors = {k: float(np.abs(f(estimate) - kernel).max()) for k, f in orientations.items()}
            ok = errors["as is"] < TOLERANCE and abs(sky - SKY) < TOLERANCE
            if label == "zero border":
                passed &= ok
            others = ", ".join(f"{k} {fmt(v)}" for k, v in errors.items() if k != "as is")
            rows.append([name, label, fmt(errors["as is"]), abs(sky - SKY), others,
                         ok if label == "zero border" else "(edges)"])  # fmt: skip
    report.table(
        "Selfcheck: noise-free 64x64 toy, 7x7 asymmetric kernel, sky 3 "
        f"(max abs errors; pass: < {TOLERANCE:g} on the zero-border reference)",
        ["peer", "reference", "kernel err", "sky err", "other orientations", "pass"],
        rows,
    )
    return bool(passed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="data sets per image size")
    parser.add_argument("--sizes", type=int, nargs="*", default=[128, 512],
                        help="image sides (default: %(default)s)")  # fmt: skip
    parser.add_argument("--large", action="store_true", help="add a 2048x2048 image, one seed")
    parser.add_argument("--quick", action="store_true", help="one seed, 128x128 only")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS,
                        help="methods to run (default: all)")  # fmt: skip
    args, report = start_peer_report(
        parser,
        "Difference imaging: star fields, Moffat kernel, sky offset",
        versions,
        selfcheck,
        "check the peers' kernel conventions on a noise-free toy, then stop",
    )

    keywords = fit_keywords()
    report.note("bk.fit takes background= and variance=: "
                + ("yes" if {"background", "variance"} <= keywords else "no"))  # fmt: skip
    report.note(f"kernel {KERNEL_SHAPE[0]}x{KERNEL_SHAPE[1]} Moffat {MOFFAT}; "
                f"stars {STAR_DENSITY:.4g}/px, fluxes {FLUX_RANGE}, sd {STAR_SIGMA} px; "
                f"gain {GAIN}, read noise {READ_NOISE}, sky {SKY}")  # fmt: skip
    plan = [(size, args.seeds) for size in args.sizes]
    if args.quick:
        plan = [(128, 1)]
    if args.large:
        plan.append((2048, 1))
    rows = []
    for size, seeds in plan:
        for seed in range(seeds):
            case = make_case(size, seed)
            print(f"\n{size}x{size}, seed {seed} (load {os.getloadavg()[0]:.1f})", flush=True)
            for name in args.methods:
                repeat = size >= 512 and seed == 0
                row = run_method(name, case, size, seed, repeat)
                rows.append(row)
                print("  " + "  ".join(fmt(x) for x in row), flush=True)
    report.table("Per data set (sky: truth 3; kernel sum: truth 1)", HEADERS, rows)
    report.table("Per image size: means over seeds", SUMMARY_HEADERS,
                 summary_rows(rows, args.methods))  # fmt: skip
    report.note(f"load average at the end: {os.getloadavg()}")
    report.write(args.markdown)


if __name__ == "__main__":
    main()
