"""The motivating case with ``fit``'s defaults: accuracy over seeds, first and second calls.

Each measurement runs in a fresh process (``--worker``), with JAX's persistent
compilation cache in a folder of its own: empty for a *first call* (every
program compiled), filled by the first call for a *second call* (a new
process that compiles nothing). Rows:

* ``default``: ``bk.fit(A, B, (199, 199))`` with every default (``prior='auto'``);
  seed 0 first and second call, then seeds 1.. in one process (second call);
* ``radial``: ``prior='radial'``, first and second call;
* ``smooth``: ``prior='smooth'`` (Krylov solver, default draws), second call;
* ``cli``: ``bayeskernel fit`` on a 64x64 image with a 9x9 kernel
  (``--plots none``), wall time of the whole command, first and second call.

Columns: relative error of the posterior mean over the whole kernel and the
central 99x99 window, 95% coverage (whole kernel and within 6 px of the cusp),
the noise sd (truth 1), the prior that carried the weight, the seconds inside
``fit`` and the wall seconds of the process.

    .venv/bin/python benchmarks/bench_default.py [--seeds 5] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import machine_info, plain_table, print_and_save

HEADERS = ["variant", "seed", "call", "prior_used", "fit_seconds", "wall_seconds",
           "rel_err_whole", "rel_err_central", "coverage_95", "coverage_r<6",
           "noise_sd"]  # fmt: skip
PRIORS = {"default": None, "radial": "radial", "smooth": "smooth"}


def worker(variant: str, seeds: list[int], cache: str) -> list[dict]:
    """Fit the motivating case for each seed in this process; one dict per fit."""
    import bayeskernel as bk

    bk.use_compilation_cache(cache)
    rows = []
    for seed in seeds:
        case = bk.motivating_case(100, seed=seed)
        shape = case.kernel.shape
        options = {} if PRIORS[variant] is None else {"prior": PRIORS[variant]}
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the prior-dominance warning of 'smooth'
            post = bk.fit(case.A, case.B, shape, seed=seed, progress_bar=False, **options)
        seconds = time.perf_counter() - start
        lower, upper = post.interval(0.95)
        rows_, cols_ = np.indices(shape)
        radius = np.hypot(rows_ - (shape[0] - 1) / 2, cols_ - (shape[1] - 1) / 2)
        central = bk.central_window(shape, (99, 99))
        rows.append({
            "seed": seed, "prior_used": post.prior, "fit_seconds": seconds,
            "rel_err_whole": bk.relative_error(post.kernel_mean, case.kernel),
            "rel_err_central": bk.relative_error(post.kernel_mean, case.kernel, central),
            "coverage_95": bk.coverage(lower, upper, case.kernel),
            "coverage_r<6": bk.coverage(lower, upper, case.kernel, radius < 6),
            "noise_sd": post.noise_sigma,
        })  # fmt: skip
    return rows


def _run_worker(variant: str, seeds: list[int], cache: Path) -> list[dict]:
    start = time.perf_counter()
    command = [sys.executable, __file__, "--worker", variant, "--worker-seeds",
               ",".join(map(str, seeds)), "--cache", str(cache)]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    rows = json.loads(out.strip().splitlines()[-1])
    for row in rows:
        row["wall_seconds"] = wall if len(rows) == 1 else None
    return rows


def _cli_case(folder: Path) -> tuple[Path, Path]:
    import bayeskernel as bk

    case = bk.simulate((64, 64), "gaussian", (9, 9), noise_sigma=0.05, seed=0)
    np.save(folder / "A.npy", case.A)
    np.save(folder / "B.npy", case.B)
    return folder / "A.npy", folder / "B.npy"


def _run_cli(a_file: Path, b_file: Path, out: Path, cache: Path) -> float:
    bayeskernel = Path(sys.executable).with_name("bayeskernel")
    env = {**os.environ, "BAYESKERNEL_COMPILATION_CACHE": str(cache)}
    command = [str(bayeskernel), "fit", str(a_file), str(b_file), "--kernel-shape", "9", "9",
               "--out", str(out), "--plots", "none", "--quiet"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the default's accuracy")
    parser.add_argument("--variants", default="default,radial,smooth,cli")
    parser.add_argument("--markdown")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-seeds", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        seeds = [int(s) for s in args.worker_seeds.split(",")]
        print(json.dumps(worker(args.worker, seeds, args.cache)))
        return

    info = machine_info()
    variants = args.variants.split(",")
    rows = []

    def add(variant, call, results):
        for r in results:
            columns = ("seed", "prior_used", "fit_seconds", "wall_seconds", "rel_err_whole",
                       "rel_err_central", "coverage_95", "coverage_r<6", "noise_sd")  # fmt: skip
            values = [r.get(name) for name in columns]
            rows.append([variant, values[0], call, *values[1:]])
            print(plain_table(HEADERS, [rows[-1]]).splitlines()[-1], flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for variant in ("default", "radial", "smooth"):
            if variant not in variants:
                continue
            cache = tmp / f"cache-{variant}"
            if variant != "smooth":
                add(variant, "first", _run_worker(variant, [0], cache))
            add(variant, "second", _run_worker(variant, [0], cache))
            if variant == "default" and args.seeds > 1:
                add(variant, "second", _run_worker(variant, list(range(1, args.seeds)), cache))
        if "cli" in variants:
            a_file, b_file = _cli_case(tmp)
            cache = tmp / "cache-cli"
            for call in ("first", "second"):
                wall = _run_cli(a_file, b_file, tmp / f"out-{call}", cache)
                add("cli", call, [{"wall_seconds": wall}])
    print_and_save(info, HEADERS, rows, args.markdown)


if __name__ == "__main__":
    main()
