"""Accuracy against peer methods on a fixed set of cases.

Every method gets the same ``A`` and ``B`` (``mode='same'``) and the kernel
shape; none is told the noise sd. Methods:

* ``lsqr``: plain least squares, :func:`scipy.sparse.linalg.lsqr` on a
  :class:`~scipy.sparse.linalg.LinearOperator` (FFT convolution and its exact
  adjoint), run to ``atol = btol = 1e-10`` or the iteration cap. With more
  kernel entries than pixels it converges towards the minimum-norm solution.
* ``tikhonov-gcv``: ``argmin ||H k - b||^2 + lam ||k||^2`` with ``lam`` chosen by
  generalised cross-validation, through an eigendecomposition of ``H^T H`` or
  ``H H^T`` (the smaller); noise sd ``||r||^2 / trace(I - influence)``.
* ``wiener``: :func:`skimage.restoration.unsupervised_wiener` with the roles of
  image and PSF swapped (``B`` is the "image", ``A`` the "PSF", the estimate is
  the kernel). It assumes circular convolution and returns an estimate the
  size of ``B``: a kernel larger than ``B`` is filled with zeros outside that
  window. Its Gibbs sampler's kernel samples (collected by the callback after
  its burn-in) give 95% intervals.
* ``cuqipy-gibbs``: CUQIpy's ``HybridGibbs`` on the same linear model, with
  the prior of CUQIpy's own deconvolution examples: a first-order GMRF with zero
  boundary whose precision ``d ~ Gamma(1, 1e-4)``, noise precision
  ``s ~ Gamma(1, 1e-4)``; ``LinearRTO`` (CGLS, ``maxit=50``) for the kernel and
  conjugate updates for ``d`` and ``s``. Skipped if CUQIpy is missing, and on
  the motivating case (39,601 unknowns).
* bayeskernel: ``bk-smooth`` (``prior='smooth'``, zero boundary;
  ``method='exact'``, or ``'map'`` on the 199x199 case), ``bk-smooth-reflect``
  (``prior='smooth_reflect'``, the reflecting boundary), optionally
  ``bk-smooth2``; ``bk-auto`` (``prior='auto'``: ``smooth``, ``smooth2``,
  ``radial`` and ``radial1`` averaged with weights by the exact marginal likelihood,
  ``method='exact'`` everywhere), ``bk-radial`` and optionally ``bk-radial1``
  (``prior='radial'``, ``'radial1'``, ``method='exact'``) on radially symmetric
  kernels; ``--bk`` picks which. Each run's log evidence (``log p(B)``, from the
  hyperparameter grid of the exact route; missing where
  a fit gives none) is reported.

Reported: relative error of the point estimate (posterior mean where there is
one) on the whole kernel and on a central window, relative error of the noise
sd, coverage of the 95% intervals (whole kernel) where the method gives them,
wall time, and bayeskernel's log evidence. The machine is shared: times are
indicative (load averages are printed).

Replicates: with ``--seeds N`` every case is run on N data sets, replicate ``r``
(0-based) simulated with seed ``case seed + 1000 r`` (replicate 0 is the case's
usual data set); the motivating case has one shipped data set, so its
replicates ``r >= 1`` are ``bk.simulate((100, 100), 'inverse_distance',
(199, 199), density=0.2, noise_sigma=1.0, seed=10_000 + r)``. Each method gets
the replicate's seed (0 for the shipped data). A further table then gives, per
case and bayeskernel variant, the mean over replicates of the ratio of its
error to the best peer's error on the same data set, its standard error, how
often the ratio is <= 1, and which peer was best how often; and, per variant,
how many cases have a mean ratio <= 1, within 2 standard errors above 1, or
worse. ``--cuqi-seeds K`` runs CUQIpy on the first K replicates only; the
best peer of the other replicates is then the best of the peers that ran.

Usage: ``python benchmarks/bench_peers.py [--quick] [--markdown FILE]
[--results JSON] [--cases SUBSTRING ...] [--cuqi-max-entries N] [--bk NAME ...]
[--seeds N] [--cuqi-seeds K]``; and ``--combine JSON ...`` to make one report from
several saved ``--results`` (e.g. one per group of cases).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
from collections import Counter

import numpy as np
import scipy.fft
import scipy.linalg
import scipy.optimize
import scipy.sparse.linalg
from _common import Report, machine_info

import bayeskernel as bk
from bayeskernel.datasets import motivating_example

SMALL = ((48, 48), (9, 9))
MEDIUM = ((96, 96), (21, 21))
DENSE, SPARSE = 0.5, 0.05
LOW, HIGH = 0.01, 0.1
RADIAL_FAMILIES = ("gaussian", "disk", "inverse_distance")


def case_list(quick: bool) -> list[dict]:
    """The fixed case set: name, shapes, family, density, noise, seed."""
    cases = []
    seed = 100
    for family in ("gaussian", "disk", "motion"):
        settings = [(SMALL, "small", d, s) for d in (DENSE, SPARSE) for s in (LOW, HIGH)]
        settings += [(MEDIUM, "medium", DENSE, LOW), (MEDIUM, "medium", SPARSE, HIGH)]
        for (image_shape, kernel_shape), size, density, noise in settings:
            seed += 1
            cases.append(dict(
                name=f"{family} {size} {kernel_shape[0]}x{kernel_shape[1]}, "
                     f"{'dense' if density == DENSE else 'sparse'} A, "
                     f"{'low' if noise == LOW else 'high'} noise",
                family=family, image_shape=image_shape, kernel_shape=kernel_shape,
                density=density, noise=noise, seed=seed,
            ))  # fmt: skip
    if quick:
        return [c for c in cases if c["seed"] in (101, 116)]
    cases.append(dict(name="motivating 100x100, 199x199 1/r", family="inverse_distance",
                      image_shape=(100, 100), kernel_shape=(199, 199), density=0.2,
                      noise=1.0, seed=None))  # fmt: skip
    return cases


def replicate_seed(case: dict, r: int) -> int | None:
    """Simulation seed of replicate ``r``; None: the shipped motivating data."""
    if case["seed"] is None:
        return None if r == 0 else 10_000 + r
    return case["seed"] + 1000 * r


def make_data(case: dict, seed: int | None):
    if seed is None:
        data = motivating_example()
    else:
        data = bk.simulate(case["image_shape"], case["family"], case["kernel_shape"],
                           density=case["density"], noise_sigma=case["noise"],
                           seed=seed)  # fmt: skip
    return data.A, data.B, data.kernel, data.noise_sigma


def central_size(kernel_shape):
    if max(kernel_shape) >= 100:  # the motivating case: the window the data see
        return (99, 99)
    return tuple(((k + 1) // 2) | 1 for k in kernel_shape)


# --- the blur as a plain NumPy/SciPy linear operator --------------------------
class Blur:
    """``K -> convolve2d(A, K, 'same')`` by FFT, its adjoint, batched over leading axes."""

    def __init__(self, image: np.ndarray, kernel_shape: tuple[int, int]):
        self.image = np.asarray(image, float)
        self.kernel_shape = tuple(kernel_shape)
        (m, n), (p, q) = self.image.shape, self.kernel_shape
        self.fft_shape = (scipy.fft.next_fast_len(m + p - 1),
                          scipy.fft.next_fast_len(n + q - 1, real=True))  # fmt: skip
        self.image_fft = scipy.fft.rfft2(self.image, s=self.fft_shape)
        self.offset = ((p - 1) // 2, (q - 1) // 2)
        self.output_shape = (m, n)

    def forward(self, kernel):
        full = scipy.fft.irfft2(self.image_fft * scipy.fft.rfft2(kernel, s=self.fft_shape),
                                s=self.fft_shape)  # fmt: skip
        (r0, c0), (h, w) = self.offset, self.output_shape
        return full[..., r0 : r0 + h, c0 : c0 + w]

    def adjoint(self, residual):
        (r0, c0), (h, w) = self.offset, self.output_shape
        padded = np.zeros(residual.shape[:-2] + self.fft_shape)
        padded[..., r0 : r0 + h, c0 : c0 + w] = residual
        full = scipy.fft.irfft2(np.conj(self.image_fft) * scipy.fft.rfft2(padded),
                                s=self.fft_shape)  # fmt: skip
        p, q = self.kernel_shape
        return full[..., :p, :q]

    @property
    def sizes(self) -> tuple[int, int]:
        return int(np.prod(self.output_shape)), int(np.prod(self.kernel_shape))

    def linear_operator(self) -> scipy.sparse.linalg.LinearOperator:
        n, p = self.sizes
        return scipy.sparse.linalg.LinearOperator(
            (n, p),
            matvec=lambda k: self.forward(k.reshape(self.kernel_shape)).ravel(),
            rmatvec=lambda r: self.adjoint(r.reshape(self.output_shape)).ravel(),
            dtype=float,
        )

    def dense(self) -> np.ndarray:
        """``H`` as an (n, p) matrix (small kernels only)."""
        n, p = self.sizes
        eye = np.eye(p).reshape((p,) + self.kernel_shape)
        return self.forward(eye).reshape(p, n).T

    def data_gram(self, batch: int = 100) -> np.ndarray:
        """``H H^T`` (n x n), built from batches of unit vectors."""
        n, _ = self.sizes
        out = np.empty((n, n))
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            unit = np.zeros((stop - start, n))
            unit[np.arange(stop - start), np.arange(start, stop)] = 1.0
            unit = unit.reshape((-1,) + self.output_shape)
            out[start:stop] = self.forward(self.adjoint(unit)).reshape(stop - start, n)
        return 0.5 * (out + out.T)


# --- peers ---------------------------------------------------------------------
def run_lsqr(A, B, kernel_shape, seed):
    blur = Blur(A, kernel_shape)
    n, p = blur.sizes
    result = scipy.sparse.linalg.lsqr(blur.linear_operator(), B.ravel(), atol=1e-10,
                                      btol=1e-10, iter_lim=min(4 * p, 5000))  # fmt: skip
    estimate = result[0].reshape(kernel_shape)
    residual = B - blur.forward(estimate)
    sigma = float(np.linalg.norm(residual) / np.sqrt(n - p)) if n > p else float("nan")
    return dict(estimate=estimate, sigma=sigma, note=f"{result[2]} iterations, istop {result[1]}")


def run_tikhonov_gcv(A, B, kernel_shape, seed):
    blur = Blur(A, kernel_shape)
    n, p = blur.sizes
    b = B.ravel()
    if p <= n:
        H = blur.dense()
        g, V = scipy.linalg.eigh(H.T @ H, driver="evd")
        g = np.clip(g, 0.0, None)
        c = V.T @ (H.T @ b)
        good = g > g.max() * 1e-13
        d2 = np.where(good, c**2 / np.where(good, g, 1.0), 0.0)
        k_ls = V @ np.where(good, c / np.where(good, g, 1.0), 0.0)
        outside = float(np.sum((b - H @ k_ls) ** 2))  # part of b no kernel explains

        def solve(lam):
            return (V @ (c / (g + lam))).reshape(kernel_shape)
    else:
        g, U = scipy.linalg.eigh(blur.data_gram(), driver="evd")
        g = np.clip(g, 0.0, None)
        d = U.T @ b
        d2, outside = d**2, 0.0

        def solve(lam):
            return blur.adjoint((U @ (d / (g + lam))).reshape(blur.output_shape))

    def parts(lam):
        residual = outside + float(np.sum(d2 * (lam / (g + lam)) ** 2))
        trace = n - float(np.sum(g / (g + lam)))
        return residual, trace

    def gcv(log_lam):
        residual, trace = parts(np.exp(log_lam))
        return n * residual / trace**2

    grid = np.linspace(np.log(g.max() * 1e-14), np.log(g.max() * 10), 400)
    values = [gcv(x) for x in grid]
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    best = scipy.optimize.minimize_scalar(gcv, bounds=(lo, hi), method="bounded")
    lam = float(np.exp(best.x))
    residual, trace = parts(lam)
    edge = " (GCV minimum at the edge of the grid)" if i in (0, grid.size - 1) else ""
    return dict(
        estimate=solve(lam),
        sigma=float(np.sqrt(residual / trace)),
        note=f"lam = {lam:.3g} ({lam / g.max():.2g} of the largest eigenvalue){edge}",
    )


def run_wiener(A, B, kernel_shape, seed):
    from skimage.restoration import uft, unsupervised_wiener

    samples = []
    burnin = 15  # unsupervised_wiener's default

    def keep(x_sample):
        samples.append(uft.uirfft2(x_sample, shape=B.shape))

    x, chains = unsupervised_wiener(B, A, clip=False, rng=seed,
                                    user_params={"callback": keep})  # fmt: skip
    draws = np.asarray(samples[burnin + 1 :])
    # The PSF's centre (index M // 2) is the kernel's centre ((P - 1) // 2).
    estimate = np.zeros(kernel_shape)
    lower = np.full(kernel_shape, np.nan)
    upper = np.full(kernel_shape, np.nan)
    quantiles = np.quantile(draws, [0.025, 0.975], axis=0)
    rows = _window(B.shape[0], kernel_shape[0])
    cols = _window(B.shape[1], kernel_shape[1])
    (k_rows, x_rows), (k_cols, x_cols) = rows, cols
    estimate[k_rows, k_cols] = x[x_rows, x_cols]
    lower[k_rows, k_cols] = quantiles[0][x_rows, x_cols]
    upper[k_rows, k_cols] = quantiles[1][x_rows, x_cols]
    noise = np.asarray(chains["noise"][burnin + 1 :], float)
    return dict(estimate=estimate, sigma=float(np.mean(1 / np.sqrt(noise))), lower=lower,
                upper=upper, note=f"{len(chains['noise']) - 1} Gibbs iterations")  # fmt: skip


def _window(size: int, kernel_size: int) -> tuple[slice, slice]:
    """Kernel indices and estimate indices that overlap, along one axis."""
    shift = size // 2 - (kernel_size - 1) // 2  # estimate index of kernel index 0
    k_start, k_stop = max(0, -shift), min(kernel_size, size - shift)
    return slice(k_start, k_stop), slice(k_start + shift, k_stop + shift)


CUQI_STEPS = {"full": (200, 600), "quick": (100, 200)}


def run_cuqipy(A, B, kernel_shape, seed, steps=CUQI_STEPS["full"]):
    import cuqi

    blur = Blur(A, kernel_shape)
    n, p = blur.sizes
    H = blur.dense()
    cuqi.config.PROGRESS_BAR_DYNAMIC_UPDATE = False
    model = cuqi.model.LinearModel(
        lambda k: H @ np.ravel(k),
        adjoint=lambda r: H.T @ np.ravel(r),
        range_geometry=cuqi.geometry.Continuous1D(n),
        domain_geometry=cuqi.geometry.Image2D(kernel_shape),
    )
    d = cuqi.distribution.Gamma(1, 1e-4)
    s = cuqi.distribution.Gamma(1, 1e-4)
    x = cuqi.distribution.GMRF(np.zeros(p), lambda d: d, geometry=model.domain_geometry)
    y = cuqi.distribution.Gaussian(model(x), lambda s: 1 / s)
    posterior = cuqi.distribution.JointDistribution(d, s, x, y)(y=B.ravel())
    np.random.seed(seed)  # noqa: NPY002 - LinearRTO draws from NumPy's global generator
    sampler = cuqi.sampler.HybridGibbs(posterior, {
        "x": cuqi.sampler.LinearRTO(maxit=50, tol=1e-8),
        "d": cuqi.sampler.Conjugate(),
        "s": cuqi.sampler.Conjugate(),
    })  # fmt: skip
    warmup, num = steps
    with contextlib.redirect_stderr(io.StringIO()):
        sampler.warmup(warmup)
        sampler.sample(num)
    samples = sampler.get_samples().burnthin(warmup)
    draws = np.asarray(samples["x"].samples).T.reshape((-1,) + tuple(kernel_shape))
    lower, upper = np.quantile(draws, [0.025, 0.975], axis=0)
    sigma = float(np.mean(1 / np.sqrt(np.asarray(samples["s"].samples))))
    return dict(estimate=draws.mean(0), sigma=sigma, lower=lower, upper=upper,
                note=f"{warmup} warm-up + {num} Gibbs steps")  # fmt: skip


def run_bayeskernel(A, B, kernel_shape, seed, prior="smooth", method="exact"):
    post = bk.fit(A, B, kernel_shape, prior=prior, method=method, seed=seed,
                  progress_bar=False)  # fmt: skip
    lower, upper = post.interval(0.95)
    divergences = int(np.sum(post.sample_stats.get("diverging", 0)))
    log_evidence = post.diagnostics.get("log_evidence")
    log_evidence = float("nan") if log_evidence is None else float(log_evidence)
    return dict(estimate=post.kernel_mean, sigma=post.noise_sigma, lower=lower, upper=upper,
                log_evidence=log_evidence,
                note=f"method={post.method}, {divergences} divergences, "
                     f"log evidence {log_evidence:.6g}")  # fmt: skip


# bayeskernel variants: name -> (prior for a kernel shape, whether a case gets it).
BK_VARIANTS = {
    "smooth": (lambda shape: "smooth", lambda case: True),  # zero boundary
    "smooth-reflect": (lambda shape: "smooth_reflect", lambda case: True),
    "smooth2": (lambda shape: "smooth2", lambda case: True),
    "auto": (lambda shape: "auto", lambda case: True),  # api.AUTO_PRIORS averaged by p(B)
    "radial": (lambda shape: "radial", lambda case: case["family"] in RADIAL_FAMILIES),
    "radial1": (lambda shape: "radial1", lambda case: case["family"] in RADIAL_FAMILIES),
}
BK_DEFAULT = ("smooth", "smooth-reflect", "auto", "radial")
# Columns of the summary table: the bayeskernel methods, in this order.
# (Fixed: saved --results rows have these columns; bk-radial1 shows in the row table.)
BK_SUMMARY = ("bk-smooth", "bk-smooth-reflect", "bk-smooth2", "bk-auto", "bk-radial")


def methods_for(case: dict, quick: bool, has_cuqi: bool, cuqi_max: int, bk_names=BK_DEFAULT):
    big = max(case["kernel_shape"]) >= 100
    out = [("lsqr", run_lsqr), ("tikhonov-gcv", run_tikhonov_gcv), ("wiener", run_wiener)]
    if has_cuqi and not big and int(np.prod(case["kernel_shape"])) <= cuqi_max:
        steps = CUQI_STEPS["quick" if quick else "full"]
        out.append(("cuqipy-gibbs",
                    lambda A, B, k, s: run_cuqipy(A, B, k, s, steps=steps)))  # fmt: skip
    for name in bk_names:
        make_prior, applies = BK_VARIANTS[name]
        if not applies(case):
            continue
        # The smooth priors use 'map' on the 199x199 case (the full posterior takes
        # ~40 s there, see bench_exact); 'auto' needs the exact route's evidence.
        method = "map" if big and name.startswith("smooth") else "exact"
        out.append((f"bk-{name}", lambda A, B, k, s, p=make_prior, m=method: run_bayeskernel(
            A, B, k, s, p(tuple(k)), m)))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small cases, short runs")
    parser.add_argument("--markdown", help="write the report as Markdown to this file")
    parser.add_argument("--results", help="save the table rows as JSON")
    parser.add_argument("--cases", nargs="*", help="only cases whose name contains one of these")
    parser.add_argument(
        "--cuqi-max-entries",
        type=int,
        default=441,
        help="run CUQIpy only on kernels with at most this many entries",
    )
    parser.add_argument(
        "--bk",
        nargs="*",
        default=list(BK_DEFAULT),
        choices=list(BK_VARIANTS),
        help="bayeskernel variants to run (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="data sets (replicates) per case; replicate r uses seed case seed + 1000 r",
    )
    parser.add_argument(
        "--cuqi-seeds",
        type=int,
        default=None,
        help="run CUQIpy on the first K replicates only (default: all)",
    )
    parser.add_argument(
        "--combine",
        nargs="*",
        help="print and write the tables of saved --results files; run nothing (files must "
        "not hold the same data set twice: a later row replaces an earlier one)",
    )
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    report = Report("Accuracy against peers", "python " + " ".join(sys.argv), machine_info())
    report.header()
    if args.combine:
        rows, summary, notes, replicates = [], [], [], []
        for path in args.combine:
            with open(path) as fh:
                saved = json.load(fh)
            saved_rows, saved_summary = _upgrade(saved["rows"], saved["summary"])
            rows += saved_rows
            summary += saved_summary
            notes += saved["notes"]
            replicates += saved.get("replicates", [])  # absent before --seeds
        finish(report, rows, summary, notes, args.markdown, replicates)
        return
    try:
        import cuqi

        has_cuqi = True
        report.note(f"CUQIpy {cuqi.__version__} found.")
    except Exception as error:  # noqa: BLE001 - any import failure means: skip it
        has_cuqi = False
        report.note(f"CUQIpy not available ({type(error).__name__}: {error}); skipped.")
    import skimage

    report.note(f"scikit-image {skimage.__version__}.")
    cases = case_list(args.quick)
    if args.cases:
        cases = [c for c in cases if any(s in c["name"] for s in args.cases)]
    if args.seeds > 1:
        report.note(f"{args.seeds} replicates per case (seeds: case seed + 1000 r; "
                    "motivating case: shipped data, then 10,000 + r).")  # fmt: skip
    rows, summary, notes, replicates = [], [], [], []
    for case in cases:
        for r in range(args.seeds):
            seed = replicate_seed(case, r)
            label = case["name"]
            if args.seeds > 1:  # seeds 1: the names of earlier reports
                label += " (shipped data)" if seed is None else f" (seed {seed})"
            cuqi = has_cuqi and (args.cuqi_seeds is None or r < args.cuqi_seeds)
            run_case(case, seed, label, cuqi, args, rows, summary, notes)
            replicates.append(dict(label=label, case=case["name"], replicate=r, seed=seed))
            if args.results:
                with open(args.results, "w") as fh:
                    json.dump({"rows": rows, "summary": summary, "notes": notes,
                               "replicates": replicates}, fh)  # fmt: skip
    finish(report, rows, summary, notes, args.markdown, replicates)


def run_case(case, seed, label, has_cuqi, args, rows, summary, notes) -> None:
    """Every method on one data set; appends to ``rows``, ``summary`` and ``notes``."""
    A, B, kernel, sigma = make_data(case, seed)
    kernel_shape = kernel.shape
    central = bk.central_window(kernel_shape, central_size(kernel_shape))
    print(f"\n{label} (load {os.getloadavg()[0]:.1f})", flush=True)
    errors = {}
    methods = methods_for(case, args.quick, has_cuqi, args.cuqi_max_entries, args.bk)
    evidence = {}
    for name, method in methods:
        start = time.perf_counter()
        try:
            out = method(A, B, kernel_shape, seed or 0)
        except Exception as error:  # noqa: BLE001 - reported in the table
            notes.append(f"{label} / {name}: failed, {type(error).__name__}: {error}")
            print(notes[-1], flush=True)
            continue
        seconds = time.perf_counter() - start
        estimate = np.asarray(out["estimate"], float)
        whole = bk.relative_error(estimate, kernel)
        centre = bk.relative_error(estimate, kernel, central)
        cover = float("nan")
        if "lower" in out and np.all(np.isfinite(out["lower"])):
            cover = bk.coverage(out["lower"], out["upper"], kernel)
        elif "lower" in out:  # wiener on a kernel larger than B: covered window only
            inside = np.isfinite(out["lower"])
            cover = bk.coverage(out["lower"][inside], out["upper"][inside], kernel[inside])
        noise_error = abs(out["sigma"] - sigma) / sigma
        errors[name] = whole
        if "log_evidence" in out:
            evidence[name] = out["log_evidence"]
        row = [label, name, whole, centre, noise_error, cover, seconds,
               " ".join(f"{x:.1f}" for x in os.getloadavg()),
               out.get("log_evidence")]  # fmt: skip
        rows.append(row)
        print(
            f"  {name:<13} whole {whole:.4f}  central {centre:.4f}  noise {noise_error:.3f}"
            f"  cov95 {cover:.3f}  {seconds:.1f} s   ({out['note']})",
            flush=True,
        )
        notes.append(f"{label} / {name}: {out['note']}")
    summary.append(summary_row(label, errors, evidence))


def summary_row(case_name: str, errors: dict, evidence: dict) -> list:
    """One case's summary: best peer, every bayeskernel error, ratios to the best peer."""
    nan = float("nan")
    peers = {k: v for k, v in errors.items() if not k.startswith("bk-")}
    best = min(peers, key=peers.get) if peers else None
    best_error = peers.get(best, nan)
    ours = {k: v for k, v in errors.items() if k.startswith("bk-")}
    return [
        case_name, best, best_error, *(ours.get(k, nan) for k in BK_SUMMARY),
        ours.get("bk-smooth", nan) / best_error, ours.get("bk-auto", nan) / best_error,
        min(ours.values(), default=nan) / best_error,
    ]  # fmt: skip


def _upgrade(rows: list, summary: list) -> tuple[list, list]:
    """Results files of the short layout (no log evidence, two bk columns): pad them.

    Their ``bk-smooth`` rows hold the reflecting boundary: they become ``bk-smooth-reflect``.
    """
    nan = float("nan")
    rows = [
        (row[:1] + ["bk-smooth-reflect"] + row[2:] if row[1] == "bk-smooth" else row) + [None]
        if len(row) == 8
        else row
        for row in rows
    ]
    # short layout: case, best, its error, smooth, radial, smooth ratio, best bk ratio
    summary = [
        row[:3] + [nan, row[3], nan, nan, row[4], nan, nan, row[6]] if len(row) == 7 else row
        for row in summary
    ]
    return rows, summary


def replicate_summary(rows: list, summary: list, replicates: list):
    """Per case and bayeskernel variant, ratios to the best peer over the replicates.

    Returns the table rows, one line per variant counting the cases (mean ratio
    <= 1, within 2 standard errors above 1, worse) and notes on replicates that
    lacked CUQIpy; None when no case has two replicates.
    """
    where = {r["label"]: r for r in replicates}
    first_seed = {c["name"]: c["seed"] for c in case_list(quick=False)}
    cases: dict[str, dict] = {}
    for row in summary:
        # Saved before --seeds: the label is the case name, the data set replicate 0.
        seed = first_seed.get(row[0], row[0])
        info = where.get(row[0], dict(label=row[0], case=row[0], replicate=0, seed=seed))
        cases.setdefault(info["case"], {})[info["seed"]] = (info, row)  # a data set once
    if all(len(sets) < 2 for sets in cases.values()):
        return None
    ran_cuqi = {row[0] for row in rows if row[1] == "cuqipy-gibbs"}
    table, counts, notes = [], {k: [0, 0, 0] for k in BK_SUMMARY}, []
    single = 0
    for case, sets in cases.items():
        sets = sorted(sets.values(), key=lambda pair: pair[0]["replicate"])
        single += len(sets) < 2
        best = Counter(row[1] for _, row in sets if row[1] is not None)
        best_text = ", ".join(f"{name} {times}/{len(sets)}" for name, times in best.most_common())
        lacking = [info for info, _ in sets if info["label"] not in ran_cuqi]
        if 0 < len(lacking) < len(sets):  # CUQIpy ran on some replicates only
            notes.append(f"{case}: no CUQIpy on seeds "
                         + ", ".join(str(i["seed"]) for i in lacking))  # fmt: skip
        for i, variant in enumerate(BK_SUMMARY):
            ratios = np.array([row[3 + i] / row[2] for _, row in sets])
            ratios = ratios[np.isfinite(ratios)]
            if ratios.size == 0:
                continue
            n = int(ratios.size)
            mean = float(ratios.mean())
            se = float(ratios.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
            table.append([case, variant, f"{mean:.3f}", None if n < 2 else f"{se:.3f}",
                          int(np.sum(ratios <= 1)), n, best_text])  # fmt: skip
            if n > 1:
                counts[variant][0 if mean <= 1 else 1 if mean <= 1 + 2 * se else 2] += 1
    lines = [
        f"{variant}: <= 1 in {c[0]}, within 2 s.e. above 1 in {c[1]}, worse in {c[2]} "
        f"of {sum(c)} cases"
        for variant, c in counts.items()
        if sum(c)
    ]
    if single:
        lines.append(f"({single} cases with one replicate left out of these counts)")
    return table, lines, notes


def finish(report: Report, rows, summary, notes, markdown, replicates=()) -> None:
    rows, summary = _upgrade(rows, summary)
    by_replicate = replicate_summary(rows, summary, list(replicates))
    ratios = (8, 9, 10)  # summary columns shown with three decimals
    summary = [
        [f"{x:.3f}" if i in ratios and x is not None else x for i, x in enumerate(row)]
        for row in summary
    ]
    report.table(
        "Relative error of the point estimate (whole kernel, central window), relative error of "
        "the noise sd, coverage of 95% intervals (whole kernel), wall time (s), load averages, "
        "log evidence (bayeskernel)",
        ["case", "method", "rel. error", "central rel. error", "noise sd rel. error",
         "95% coverage", "seconds", "load 1/5/15 min", "log evidence"],
        [row[:8] + [None if row[8] is None else f"{row[8]:.2f}"] for row in rows],
    )  # fmt: skip
    report.table(
        "Best peer (smallest whole-kernel error) against bayeskernel's posterior mean "
        "(ratio > 1: bayeskernel less accurate)",
        ["case", "best peer", "its error", *BK_SUMMARY, "bk-smooth / best peer",
         "bk-auto / best peer", "best bk / best peer"],
        summary,
    )  # fmt: skip
    if by_replicate is not None:
        table, lines, cuqi_notes = by_replicate
        report.table(
            "Over replicate data sets: mean of (bayeskernel error / best peer's error on the "
            "same data set), its standard error (sd / sqrt(n)), replicates with ratio <= 1, "
            "replicates n, and which peer was best how often",
            ["case", "bk variant", "mean ratio", "s.e.", "ratio <= 1", "n",
             "best peer (times best)"],
            table,
        )  # fmt: skip
        report.note("Cases by mean ratio: " + "; ".join(lines))
        if cuqi_notes:
            report.note("Best peer without CUQIpy (best of the peers that ran): "
                        + "; ".join(cuqi_notes))  # fmt: skip
    kept = [n for n in notes if any(k in n for k in ("lsqr", "tikhonov", "failed"))]
    report.note("Notes (LSQR iterations, Tikhonov's GCV weight, failures): " + "; ".join(kept))
    report.note(f"loadavg at end: {tuple(round(x, 2) for x in os.getloadavg())}")
    report.write(markdown)


if __name__ == "__main__":
    main()
