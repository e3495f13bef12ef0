"""The ``bayeskernel`` command: fit a kernel from files, simulate data, run the demo.

A thin layer over the public API: :func:`bayeskernel.fit`,
:func:`bayeskernel.simulate`, :mod:`bayeskernel.io` and :mod:`bayeskernel.plots`.
User errors (bad files, impossible arguments) print one line
``bayeskernel: error: <message>`` to stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bayeskernel._permissions import result_mode
from bayeskernel.catalogue import METHODS, MODES, SOLVERS, prior_help
from bayeskernel.compilation_cache import ENV_VAR, default_cache_dir

__all__ = ["main", "build_parser"]

PROG = "bayeskernel"
_MODE_CHOICES = ("same", *(m for m in MODES if m != "same"))  # the default first
EXIT_USAGE = 2  # as argparse uses for bad arguments
EXIT_INTERRUPTED = 130  # shell convention: 128 + SIGINT
FIELD_GRID = 5  # positions per side of a kernel field's files

_DESCRIPTION = """\
Estimate a 2D convolution kernel K, with uncertainty, from a known input image A
and its blurred, noisy output B:

    B = convolve2d(A, K, mode) + white Gaussian noise of unknown sd

A is the array you put in (e.g. a binary pattern); B is what you measured. K is
what you want: you get its posterior mean, a credible interval for every entry,
the noise sd, diagnostics and plots.

commands:
  fit       fit K from two files A and B; writes results to a folder
  simulate  write a synthetic A, B and true kernel to try 'fit' on
  demo      run the motivating example (100x100 image, 199x199 1/r kernel)

Run 'bayeskernel COMMAND --help' for a command's options.
"""

_EPILOG = """\
examples:
  bayeskernel simulate --out data --kernel gaussian --kernel-shape 9 9
  bayeskernel fit data/A.npy data/B.npy --kernel-shape 9 9 --out results
  bayeskernel fit pattern.png blurred.tif --kernel-shape 15 15 --prior smooth --method map \
      --out results
  bayeskernel fit case.npz case.npz --kernel-shape 9 9 --out results   # arrays A and B
"""

_FIT_DESCRIPTION = """\
Fit the kernel K in B = convolve2d(A, K, mode) + noise.

A_FILE is the known input image A; B_FILE is the observed output B, of the shape
that convolve2d(A, K, mode) has (NaN entries in B mark unobserved pixels).
Both are 2D arrays in any of these formats:
  .npy                  NumPy array
  .npz                  NumPy archive: --key names the array; by default the only
                        one, or the one named 'A' (for A_FILE) / 'B' (for B_FILE)
  .csv .txt .dat .tsv   numbers separated by commas or whitespace, one row per line
  .tif .tiff            single-page TIFF, any numeric type
  .png                  greyscale PNG (values as stored, e.g. 0..255)
  .fits .fit .fits.gz   FITS image (--hdu picks the HDU; B's VARIANCE, WEIGHT and
                        MASK extensions are used when present)

modes (how B is cropped, exactly as scipy.signal.convolve2d):
  same   B has A's shape (default)
  full   B is the whole convolution, shape (M+P-1, N+Q-1)
  valid  B is where A and K overlap fully, shape (|M-P|+1, |N-Q|+1)

methods:
  auto   'exact' for the Gaussian priors and --prior auto, 'nuts' for the others
         (default)
  exact  noise sd and kernel scale drawn by grid quadrature with the kernel
         integrated out, then exact kernel draws (dense solver up to 5,000
         unknowns, matrix-free above)
  map    best noise sd and kernel scale, then exact draws: quickest, intervals
         ignore the hyperparameters' uncertainty; needs a named --prior
  nuts   NUTS on every kernel entry: a check of 'exact', slower
  svi    variational approximation: for very large problems, approximate intervals

writes to --out: posterior.nc (ArviZ NetCDF; reload with bayeskernel.load),
kernel_mean.npy, kernel_sd.npy, kernel_lower.npy, kernel_upper.npy (credible
interval), kernel.fits (the same as MEAN, SD, LOWER, UPPER extensions; needs
astropy), summary.json and plots/ (PNG figures, or report.pdf with --plots pdf).
With --spatial-order: the kernel_* files are the kernel at the centre of B, and
kernel_field.npz / kernel_field.fits hold it on a 5x5 grid of positions (rows,
cols, mean, sd, lower, upper, components, terms).
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-wrapped descriptions; shows defaults that say something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet_default = action.default is None or action.default is False
        if not quiet_default and action.default != argparse.SUPPRESS and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _degree(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 5:
        raise argparse.ArgumentTypeError(f"expected a degree 0..5, got {text!r}")
    return value


def _spatial_order(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 3:
        raise argparse.ArgumentTypeError(f"expected an order 0..3 or 'auto', got {text!r}")
    return value


def _oversample(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 8:
        raise argparse.ArgumentTypeError(f"expected an integer 1..8, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace an --out folder that holds earlier results (whole: nothing old is left)",
    )  # fmt: skip


def _folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name, got ''")
    return Path(text)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet", action="store_true", help="no progress messages or bars (results still print)"
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def _add_fit_options(parser: argparse.ArgumentParser, *, defaults: dict[str, Any]) -> None:
    parser.add_argument("--prior", default=defaults["prior"], help=prior_help())
    parser.add_argument(
        "--method", default=defaults["method"], choices=METHODS,
        help="inference route; 'map' is quickest, with a named --prior (see 'bayeskernel fit "
        "--help')",
    )  # fmt: skip
    parser.add_argument(
        "--solver", default="auto", choices=SOLVERS,
        help="linear algebra of methods exact/map: dense eigendecomposition, or matrix-free "
        "Krylov (Lanczos + conjugate gradients); 'auto' picks by size",
    )  # fmt: skip
    parser.add_argument(
        "--samples", type=_positive_int, default=defaults["samples"],
        help="posterior draws per chain (default: 250 for the exact route and 'map', whose "
        "draws are independent; 500 for NUTS and SVI)" if defaults["samples"] is None
        else "posterior draws per chain",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=_positive_int, default=defaults["samples"] or 500,
        help="NUTS warm-up steps per chain (method nuts)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same result")
    parser.add_argument(
        "--prob", type=_probability, default=0.95, help="probability of the credible intervals"
    )
    parser.add_argument(
        "--no-compilation-cache", action="store_true",
        help="compile afresh and keep nothing; by default compiled programs are kept in "
        f"{_cache_folder_text()}, or in ${ENV_VAR} ('0': nowhere), so that the next call "
        "of the same shapes compiles nothing (a JAX_COMPILATION_CACHE_DIR of your own "
        "applies either way)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bayeskernel`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=_DESCRIPTION, epilog=_EPILOG, formatter_class=_Formatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fit = commands.add_parser(
        "fit", help="fit K from files A and B", description=_FIT_DESCRIPTION,
        formatter_class=_Formatter,
    )  # fmt: skip
    fit.add_argument("a_file", metavar="A_FILE", help="the known input image A")
    fit.add_argument("b_file", metavar="B_FILE", help="the observed, blurred and noisy output B")
    fit.add_argument(
        "--kernel-shape", nargs=2, type=_positive_int, required=True, metavar=("H", "W"),
        help="rows and columns of the kernel K (it may be larger than A)",
    )  # fmt: skip
    fit.add_argument(
        "--mode", default="same", choices=_MODE_CHOICES,
        help="how B is cropped (see 'modes' above)",
    )  # fmt: skip
    _add_fit_options(fit, defaults={"method": "auto", "samples": None, "prior": "auto"})
    fit.add_argument(
        "--background", type=_degree, metavar="DEG",
        help="fit a background with the kernel: a polynomial of this degree in the pixel "
        "position (0: a constant sky or bias offset, 1: a plane); default none",
    )  # fmt: skip
    fit.add_argument(
        "--spatial-order", type=_spatial_order, default=0, metavar="ORDER",
        help="a kernel that varies across the image: polynomials of the pixel position up "
        "to this order (0: one kernel; 'auto': orders 0-2 weighed by evidence); writes the "
        "kernels on a 5x5 grid of positions to kernel_field.npz (and .fits)",
    )  # fmt: skip
    fit.add_argument(
        "--oversample", type=_oversample, default=None, metavar="S",
        help="a kernel S times finer than B's pixels (super-resolution): A and --kernel-shape "
        "are on the fine grid, each pixel of B sums S x S fine pixels. A_FILE may be a CSV "
        "table of point sources whose header names the columns row, col, flux (positions in "
        "B's pixels), with or without --oversample",
    )  # fmt: skip
    noise = fit.add_mutually_exclusive_group()
    noise.add_argument(
        "--variance", type=Path, metavar="FILE",
        help="noise variance of each pixel of B (same shape; NaN or inf: unobserved); the "
        "fitted noise sd is then a scale on it, about 1 when the map is right",
    )  # fmt: skip
    noise.add_argument(
        "--weights", type=Path, metavar="FILE",
        help="inverse noise variance of each pixel of B instead of --variance (0: unobserved)",
    )  # fmt: skip
    fit.add_argument(
        "--chains",
        type=_positive_int,
        default=2,
        help="chains (method nuts; the exact route's draws are split into as many)",
    )
    fit.add_argument("--key", help="array name inside .npz files (both A_FILE and B_FILE)")
    fit.add_argument(
        "--hdu", help="FITS files: the image's HDU by name or index (default: the first 2D "
        "image); a VARIANCE, WEIGHT or MASK extension beside B's image is used too",
    )  # fmt: skip
    fit.add_argument(
        "--true-kernel", metavar="FILE", help="a known kernel to draw beside the estimate"
    )
    fit.add_argument(
        "--plots", default="png", choices=("png", "pdf", "none"),
        help="figures as PNG files in OUT/plots/, one OUT/report.pdf, or none",
    )  # fmt: skip
    fit.add_argument(
        "--out", required=True, type=_folder, metavar="DIR",
        help="folder for results (written whole, or not at all)",
    )  # fmt: skip
    _add_overwrite(fit)
    fit.add_argument("--binary", action="store_true", help="A is a 0/1 pattern: warn if it is not")
    _add_common(fit)

    simulate = commands.add_parser(
        "simulate", formatter_class=_Formatter,
        help="write a synthetic pair A, B (and the true kernel)",
        description="Simulate a Bernoulli image A, blur it with a known kernel K and add\n"
        "white noise: B = convolve2d(A, K, mode) + N(0, sd^2). Writes A.npy, B.npy,\n"
        "kernel.npy and case.json to --out, ready for 'bayeskernel fit'.",
    )  # fmt: skip
    simulate.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    simulate.add_argument(
        "--image-shape", nargs=2, type=_positive_int, default=(64, 64), metavar=("M", "N"),
        help="shape of A",
    )  # fmt: skip
    simulate.add_argument(
        "--kernel", default="gaussian",
        choices=(
            "gaussian", "anisotropic_gaussian", "disk", "motion", "telescope", "inverse_distance",
        ),
        help="kernel family (all but inverse_distance sum to one)",
    )  # fmt: skip
    simulate.add_argument(
        "--kernel-shape", nargs=2, type=_positive_int, default=(9, 9), metavar=("H", "W"),
        help="shape of the kernel",
    )  # fmt: skip
    simulate.add_argument("--density", type=_probability, default=0.2, help="fraction of ones in A")
    simulate.add_argument("--noise-sigma", type=_non_negative_float, default=0.05, help="noise sd")
    simulate.add_argument(
        "--mode", default="same", choices=_MODE_CHOICES,
        help="how B is cropped, as scipy.signal.convolve2d",
    )  # fmt: skip
    simulate.add_argument("--seed", type=int, default=0, help="same seed, same data")
    _add_common(simulate)

    demo = commands.add_parser(
        "demo", formatter_class=_Formatter, help="run the motivating example (seconds)",
        description="The motivating example: a 100x100 binary image A (20% ones) blurred by\n"
        "the 199x199 kernel 1/r (centre 0) with noise sd 1, then the kernel estimated\n"
        "back from A and B. Prints the errors against the truth and writes the results\n"
        "and figures to --out. The full size takes minutes; --size 20 takes seconds.",
    )  # fmt: skip
    demo.add_argument("--size", type=_positive_int, default=100, help="image side N (kernel 2N-1)")
    _add_fit_options(demo, defaults={"method": "auto", "samples": None, "prior": "auto"})
    demo.add_argument(
        "--out", type=_folder, default=Path("bayeskernel-demo"), metavar="DIR",
        help="folder for results and figures",
    )  # fmt: skip
    _add_overwrite(demo)
    _add_common(demo)
    return parser


# --- helpers -------------------------------------------------------------------------


class _Reporter:
    """Progress messages on stderr, silenced by --quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)


def _cache_folder_text() -> str:
    """Where the CLI keeps compiled programs, for the help text."""
    folder = default_cache_dir()
    try:
        return "~/" + folder.relative_to(Path.home()).as_posix()
    except (ValueError, RuntimeError):  # outside the home folder, or no home
        return str(folder)


def _use_compilation_cache(args: argparse.Namespace) -> None:
    """JAX's persistent compilation cache, unless --no-compilation-cache.

    A cache that cannot be made costs the next call its compile time, not this
    call its result: a warning, and on.
    """
    if args.no_compilation_cache:
        return
    from bayeskernel.compilation_cache import use_compilation_cache

    try:
        use_compilation_cache()
    except OSError as error:
        reason = f"{error.filename}: {error.strerror}" if error.filename else str(error)
        warnings.warn(f"compiled programs are not kept for the next call: {reason}", stacklevel=2)


def _plain(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, NumPy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# The files that mark a folder as bayeskernel results (--overwrite replaces only such).
_RESULT_FILES = ("summary.json", "posterior.nc")


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that would lose or mix results, before a long fit."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder for the results")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(
                f"--out {out} is not empty; give --overwrite to replace earlier results, "
                "or another folder"
            )
        if not all((out / name).is_file() for name in _RESULT_FILES):
            raise ValueError(
                f"--out {out} is not empty and holds no bayeskernel results "
                f"({', '.join(_RESULT_FILES)}); --overwrite replaces only those: choose "
                "another folder"
            )
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out {out}: cannot write in {parent}")


def _write_results(
    posterior, out: Path, *, prob: float, plots: str, true_kernel, extra: dict, say: _Reporter
) -> dict:
    """Posterior NetCDF, kernel arrays, summary.json and figures, all or nothing.

    Everything is written into a hidden folder beside ``out`` and renamed into
    place once complete, so a reader never sees half a result; an interrupted
    run leaves ``out`` as it was.
    """
    import shutil
    import tempfile

    parent = out.absolute().parent
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    try:
        summary = _write_files(
            posterior, staging, prob=prob, plots=plots, true_kernel=true_kernel, extra=extra,
            say=say,
        )  # fmt: skip
        staging.chmod(result_mode(folder=True))  # mkdtemp makes it user-only
        old = None
        if out.exists():  # checked by _check_out: empty, or earlier results
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            old.rmdir()
            out.rename(old)
        staging.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _write_files(
    posterior, out: Path, *, prob: float, plots: str, true_kernel, extra: dict, say: _Reporter
) -> dict:
    from bayeskernel.io import save

    save(posterior, out / "posterior.nc")
    lower, upper = posterior.interval(prob)
    for name, array in (
        ("kernel_mean", posterior.kernel_mean),
        ("kernel_sd", posterior.kernel_sd),
        ("kernel_lower", lower),
        ("kernel_upper", upper),
    ):
        np.save(out / f"{name}.npy", array)
    if posterior.field_draws is not None:
        np.savez(out / "kernel_field.npz", **posterior.field_grid(FIELD_GRID, prob))
    try:
        from astropy.io import fits  # noqa: F401 - the FITS copy needs it
    except ImportError:
        say("kernel.fits not written: it needs astropy (pip install 'bayeskernel[fits]')")
    else:
        from bayeskernel.fits import write_kernel, write_kernel_field

        write_kernel(posterior, out / "kernel.fits", prob=prob)
        if posterior.field_draws is not None:
            write_kernel_field(posterior, out / "kernel_field.fits", FIELD_GRID, prob)
    summary = {**extra, **posterior.summary(prob)}
    with open(out / "summary.json", "w", encoding="utf-8") as fh:
        json.dump(_plain(summary), fh, indent=2, allow_nan=False)
        fh.write("\n")
    if plots != "none":
        from bayeskernel.plots import plot_report  # only when drawing

        say("writing figures ...")
        target = out / "report.pdf" if plots == "pdf" else out / "plots"
        plot_report(posterior, target, true_kernel=true_kernel, prob=prob)
    return summary


def _check_shapes(a_file, image, b_file, observed, kernel_shape, mode, oversample=None) -> None:
    """Messages that name the files, before fit's generic ones."""
    from bayeskernel.forward import output_shape

    try:
        expected = tuple(output_shape(image.shape, kernel_shape, mode))
        if oversample is not None:
            expected = tuple(n // oversample for n in expected)
    except ValueError:
        raise ValueError(
            f"--kernel-shape {kernel_shape[0]} {kernel_shape[1]} is impossible with --mode "
            f"{mode} for A of shape {image.shape} ({a_file}): in mode 'valid' the kernel must "
            "be no larger than A in both dimensions, or at least as large in both"
        ) from None
    if observed.shape != expected:
        raise ValueError(
            f"{b_file}: B has shape {observed.shape}, but A {image.shape} ({a_file}) with "
            f"--kernel-shape {kernel_shape[0]} {kernel_shape[1]} and --mode {mode} gives "
            f"{expected}"
            + ("" if oversample is None else f" at --oversample {oversample}")
            + "; check the files, --mode and --kernel-shape"
        )


# --- commands ---------------------------------------------------------------------------


def _is_point_table(path: Path) -> bool:
    """A CSV file whose header names the columns ``row``, ``col`` and ``flux``."""
    if not str(path).lower().endswith(".csv") or not Path(path).is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = {name.strip().lower() for name in fh.readline().split(",")}
    return {"row", "col", "flux"} <= header


def _cmd_fit(args: argparse.Namespace, say: _Reporter) -> int:
    from bayeskernel.api import fit
    from bayeskernel.fits import is_fits, read_image
    from bayeskernel.io import read_array

    kernel_shape = tuple(args.kernel_shape)
    hdu = {"hdu": args.hdu} if args.hdu is not None else {}
    observed = read_array(
        args.b_file, key=args.key, role="B", allow_nan=True, **(hdu if is_fits(args.b_file) else {})
    )
    if _is_point_table(args.a_file):  # point sources: row, col, flux
        from bayeskernel.sources import read_points, render_points

        if args.mode != "same":
            raise ValueError(f"{args.a_file}: a point table needs --mode same (A's grid is B's)")
        factor = args.oversample or 1
        fine = tuple(n * factor for n in observed.shape)
        image = render_points(read_points(args.a_file), fine, oversample=factor)
        say(f"{args.a_file}: rendered onto a {fine[0]}x{fine[1]} grid (oversample {factor})")
    else:
        image = read_array(
            args.a_file, key=args.key, role="A", **(hdu if is_fits(args.a_file) else {})
        )
    planes = {}
    if is_fits(args.b_file):  # B's own variance, weight and mask planes
        found = read_image(args.b_file, args.hdu)
        planes = {name: getattr(found, name) for name in ("variance", "weights", "mask")}
        if planes["mask"] is not None:
            observed = np.where(planes["mask"], observed, np.nan)
            say(f"{args.b_file}: its MASK plane leaves {int((~planes['mask']).sum())} pixels out")
    if image.shape == observed.shape and np.array_equal(image, observed):
        raise ValueError(
            f"A ({args.a_file}) and B ({args.b_file}) hold the same array: B must be the "
            "blurred, noisy output of A; check the file names (or --key)"
        )
    _check_shapes(
        args.a_file, image, args.b_file, observed, kernel_shape, args.mode, args.oversample
    )
    true_kernel = None
    if args.true_kernel is not None:
        true_kernel = read_array(args.true_kernel, role="true kernel")
        if true_kernel.shape != kernel_shape:
            raise ValueError(
                f"{args.true_kernel}: true kernel has shape {true_kernel.shape}, expected "
                f"--kernel-shape {kernel_shape}"
            )
    noise_map = {}
    for name in ("variance", "weights"):
        path = getattr(args, name)
        if path is not None:
            values = read_array(path, key=args.key, role=name, allow_nan=name == "variance")
            if values.shape != observed.shape:
                raise ValueError(
                    f"{path}: --{name} has shape {values.shape}, but B ({args.b_file}) has "
                    f"{observed.shape}"
                )
            noise_map[name] = values
    if not noise_map:
        for name in ("variance", "weights"):
            if planes.get(name) is not None:
                noise_map = {name: planes[name]}
                say(f"{args.b_file}: using its {name.upper()} plane as --{name}")
                break
    _check_out(args.out, args.overwrite)  # a bad --out fails before a long fit
    _use_compilation_cache(args)
    say(
        f"fitting a {kernel_shape[0]}x{kernel_shape[1]} kernel: A {image.shape}, "
        f"B {observed.shape}, mode={args.mode}, prior={args.prior}, method={args.method}"
    )
    start = time.perf_counter()
    posterior = fit(
        image, observed, kernel_shape, mode=args.mode, prior=args.prior, method=args.method,
        num_samples=args.samples, num_warmup=args.warmup, num_chains=args.chains,
        solver=args.solver, binary=args.binary, seed=args.seed, progress_bar=not args.quiet,
        background=args.background, spatial_order=args.spatial_order,
        oversample=args.oversample, **noise_map,
    )  # fmt: skip
    say(f"fitted in {time.perf_counter() - start:.1f} s; writing results to {args.out}/")
    extra = {
        "inputs": {
            "A": str(args.a_file), "B": str(args.b_file), "key": args.key,
            **{name: str(getattr(args, name)) for name in noise_map},
            "A_shape": list(image.shape), "B_shape": list(observed.shape),
        },
    }  # fmt: skip
    _write_results(
        posterior, args.out, prob=args.prob, plots=args.plots, true_kernel=true_kernel,
        extra=extra, say=say,
    )  # fmt: skip
    print(posterior)
    print(f"results written to {args.out}/")
    return 0


def _cmd_simulate(args: argparse.Namespace, say: _Reporter) -> int:
    from bayeskernel.simulation import simulate

    case = simulate(
        tuple(args.image_shape), args.kernel, tuple(args.kernel_shape),
        density=args.density, noise_sigma=args.noise_sigma, mode=args.mode, seed=args.seed,
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    for name, array in (("A", case.A), ("B", case.B), ("kernel", case.kernel)):
        np.save(args.out / f"{name}.npy", array)
    description = {
        "model": "B = convolve2d(A, kernel, mode) + N(0, noise_sigma^2)",
        "image_shape": list(case.A.shape),
        "B_shape": list(case.B.shape),
        "kernel": args.kernel,
        "kernel_shape": list(case.kernel.shape),
        "density": args.density,
        "noise_sigma": case.noise_sigma,
        "mode": case.mode,
        "seed": args.seed,
    }
    with open(args.out / "case.json", "w", encoding="utf-8") as fh:
        json.dump(description, fh, indent=2)
        fh.write("\n")
    height, width = case.kernel.shape
    print(f"wrote A.npy {case.A.shape}, B.npy {case.B.shape}, kernel.npy, case.json to {args.out}/")
    print(
        f"next: {PROG} fit {args.out / 'A.npy'} {args.out / 'B.npy'} --kernel-shape "
        f"{height} {width} --mode {case.mode} --true-kernel {args.out / 'kernel.npy'} "
        "--out results"
    )
    return 0


def _cmd_demo(args: argparse.Namespace, say: _Reporter) -> int:
    from bayeskernel.api import fit
    from bayeskernel.datasets import motivating_example
    from bayeskernel.metrics import central_window, coverage, relative_error
    from bayeskernel.simulation import motivating_case

    _check_out(args.out, args.overwrite)
    _use_compilation_cache(args)
    case = motivating_example() if args.size == 100 else motivating_case(args.size, seed=args.seed)
    kernel_shape = case.kernel.shape
    say(
        f"motivating example: A {case.A.shape} (20% ones), true kernel 1/r {kernel_shape}, "
        f"noise sd {case.noise_sigma}; method={args.method}"
    )
    start = time.perf_counter()
    posterior = fit(
        case.A, case.B, kernel_shape, prior=args.prior, method=args.method,
        num_samples=args.samples, num_warmup=args.warmup, solver=args.solver, seed=args.seed,
        progress_bar=not args.quiet,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    # The central window: kernel entries within reach of every image pixel.
    central = central_window(kernel_shape, (args.size - 1, args.size - 1))
    lower, upper = posterior.interval(args.prob)
    errors = {
        "seconds": round(seconds, 1),
        "true_noise_sigma": case.noise_sigma,
        "relative_error_whole": relative_error(posterior.kernel_mean, case.kernel),
        "relative_error_central": relative_error(posterior.kernel_mean, case.kernel, central),
        "coverage_whole": coverage(lower, upper, case.kernel),
        "coverage_central": coverage(lower, upper, case.kernel, central),
    }
    say(f"fitted in {seconds:.1f} s; writing results to {args.out}/")
    _write_results(
        posterior, args.out, prob=args.prob, plots="png", true_kernel=case.kernel,
        extra={"demo": _plain(errors)}, say=say,
    )  # fmt: skip
    print(posterior)
    print(json.dumps(_plain(errors), indent=2))
    print(f"results and figures written to {args.out}/")
    return 0


_COMMANDS = {"fit": _cmd_fit, "simulate": _cmd_simulate, "demo": _cmd_demo}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 user error).

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    args = build_parser().parse_args(argv)
    say = _Reporter(args.quiet)
    with warnings.catch_warnings():
        # ArviZ 0.x announces its 1.0 refactor on import: not the user's concern.
        warnings.filterwarnings(
            "ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning
        )
        warnings.showwarning = _show_warning  # one line, no source location
        previous = _interrupt_on_signals()
        try:
            return _COMMANDS[args.command](args, say)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (ValueError, TypeError, OSError) as error:
            # bayeskernel raises these for bad data and arguments, with messages
            # that name the culprit; a bug elsewhere would still show its traceback
            # with --debug.
            if args.debug:
                raise
            if isinstance(error, OSError) and error.filename and error.strerror:
                message = f"{error.filename}: {error.strerror}"
            else:
                message = " ".join(str(error).split()) or type(error).__name__
            print(f"{PROG}: error: {message}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            for number, handler in (previous or {}).items():
                signal.signal(number, handler)


def _interrupt_on_signals():
    """Ctrl-C and SIGTERM raise ``KeyboardInterrupt``, which is never lost.

    Python's own handler raises wherever the main thread is, and an exception
    raised inside a garbage-collector callback (JAX registers one) is printed
    and dropped: the command would go on as if never interrupted. Ours
    delivers the signal again just after such a callback (or a finaliser, or
    an import). SIGTERM is treated as Ctrl-C, so results being written are
    removed, not left half-done.

    Returns the previous handlers (None off the main thread, where Python
    cannot set them).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return {number: signal.signal(number, _interrupt) for number in _SIGNALS}


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REDELIVER_SECONDS = 0.05  # a garbage-collector callback takes microseconds


def _interrupt(signum, frame):
    if _must_wait(frame):
        threading.Timer(REDELIVER_SECONDS, os.kill, (os.getpid(), signum)).start()
        return
    raise KeyboardInterrupt


def _must_wait(frame) -> bool:
    """Whether ``frame`` runs in a garbage-collector callback, a finaliser or an import.

    An exception raised in the first two is printed and dropped; one raised
    while a compiled extension (jaxlib) initialises can leave it half-built
    and crash the process on its way out.
    """
    import gc

    codes = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if (
            code in codes
            or code.co_name == "__del__"
            or code.co_filename.startswith("<frozen importlib")
            or (code.co_name == "__call__" and code.co_filename.endswith("weakref.py"))
        ):
            return True
        frame = frame.f_back
    return False


def run() -> None:
    """The ``bayeskernel`` command: :func:`main`, then exit at once.

    Everything is written and closed by then; what remains is the
    interpreter's teardown, which frees JAX's compiled programs and buffers
    one by one (about 0.5 s, a sixth of a small fit's call).
    """
    try:
        code = main()
    except KeyboardInterrupt:  # before main's own guard, e.g. while parsing arguments
        print(f"{PROG}: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
