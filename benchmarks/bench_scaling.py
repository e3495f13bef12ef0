"""Time and peak memory of the exact route against image size and kernel size.

Two sweeps, each fit in its own subprocess so that ``ru_maxrss`` is that fit's
peak resident memory:

* **image size**: N x N Bernoulli(0.2) images, N = 64 .. 2048, with a 15x15
  Gaussian kernel (kernel space: the exact normal matrix ``H^T H`` is built by
  FFT autocorrelation plus border corrections, so the image enters only
  through a few FFTs);
* **kernel size**: a 100x100 image with P x P ``1/r`` kernels, P = 15 .. 399
  (data space beyond 100x100 = 10,000 entries; the matrix-free Krylov solver
  above 5,000 unknowns).

Each row is ``method='map'`` with 100 draws (type-II ML hyperparameters, then
exact draws), prior ``'smooth'``, noise sd 0.05 (image sweep) or 1.0 (kernel
sweep); the log-log slope between consecutive rows shows how the cost grows.
Then two large cases with the full exact sampler
(``method='exact'``, 2 chains x 100 draws): a 2048x2048 image with a 63x63
kernel and a 100x100 image with a 399x399 kernel.

Usage: ``python benchmarks/bench_scaling.py [--quick] [--markdown FILE]``
(``--quick``: the smaller half of each sweep, no large cases). A full run takes
about 10-15 minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

IMAGE_SIZES = (64, 128, 256, 512, 1024, 2048)
KERNEL_SIZES = (15, 31, 63, 99, 127, 199, 399)


def child(config: dict) -> dict:
    """One fit, in this (fresh) process."""
    import resource
    import time

    import bayeskernel as bk

    n, p = config["image"], config["kernel"]
    case = bk.simulate((n, n), config["family"], (p, p), noise_sigma=config["noise"], seed=0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    post = bk.fit(
        case.A, case.B, (p, p), prior="smooth", method=config["method"], num_samples=100,
        num_warmup=200, num_chains=2 if config["method"] == "exact" else 1, seed=0,
        progress_bar=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    diag = post.diagnostics
    lower, upper = post.interval(0.95)
    return dict(
        config,
        seconds=seconds,
        peak_mb=peak / 1024,
        base_mb=base / 1024,
        solver=diag.get("solver"),
        space=diag.get("space"),
        unknowns=min(n * n, p * p),
        decomposition=diag.get("seconds_decomposition"),
        hyper=diag.get("seconds_hyperparameters"),
        draws=diag.get("seconds_kernel_draws"),
        noise=post.noise_sigma,
        err=bk.relative_error(post.kernel_mean, case.kernel),
        cov=bk.coverage(lower, upper, case.kernel),
        load=os.getloadavg()[0],
    )


def spawn(config: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"child {config} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")


def _rows(results, key):
    rows = []
    for i, r in enumerate(results):
        slope_t = slope_m = None
        if i:
            prev = results[i - 1]
            dx = math.log(r[key] / prev[key])
            slope_t = math.log(r["seconds"] / prev["seconds"]) / dx
            slope_m = math.log(r["peak_mb"] / prev["peak_mb"]) / dx
        rows.append(
            [
                f"{r['image']}x{r['image']}", f"{r['kernel']}x{r['kernel']}", r["method"],
                r["solver"], r["space"], r["unknowns"], r["seconds"], r["decomposition"],
                r["hyper"], r["draws"], r["peak_mb"], slope_t, slope_m, r["noise"], r["err"],
                r["cov"], r["load"],
            ]
        )  # fmt: skip
    return rows


HEADERS = [
    "image", "kernel", "method", "solver", "space", "unknowns r", "seconds", "decomp s",
    "hyper s", "draws s", "peak RSS MB", "time slope", "memory slope", "noise sd", "rel err",
    "coverage 95%", "load",
]  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", metavar="FILE")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--skip-large", action="store_true", help="skip the two exact cases")
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return

    from _common import Report, command_line, machine_info

    report = Report(
        "bench_scaling: time and memory against image and kernel size",
        command_line("benchmarks/bench_scaling.py", argv),
        machine_info(),
    )
    report.header()
    images = IMAGE_SIZES[:3] if args.quick else IMAGE_SIZES
    kernels = KERNEL_SIZES[:4] if args.quick else KERNEL_SIZES
    sweeps = {
        "image": [
            dict(image=n, kernel=15, family="gaussian", noise=0.05, method="map") for n in images
        ],
        "kernel": [
            dict(image=100, kernel=p, family="inverse_distance", noise=1.0, method="map")
            for p in kernels
        ],
    }
    for name, configs in sweeps.items():
        results = []
        for config in configs:
            print(f"  {config} ...", file=sys.stderr, flush=True)
            results.append(spawn(config))
            print(f"  {results[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
        key = "image" if name == "image" else "kernel"
        report.table(
            f"Sweep over {name} size (slopes: log-log, against the side length)",
            HEADERS,
            _rows(results, key),
        )
    if not (args.quick or args.skip_large):
        large = [
            dict(image=2048, kernel=63, family="gaussian", noise=0.05, method="exact"),
            dict(image=100, kernel=399, family="inverse_distance", noise=1.0, method="exact"),
        ]
        results = []
        for config in large:
            print(f"  {config} ...", file=sys.stderr, flush=True)
            results.append(spawn(config))
        rows = _rows(results, "image")
        for row in rows:  # two unrelated cases: no slope between them
            row[11] = row[12] = None
        report.table("Two large cases, full exact sampler (2 chains x 100 draws)", HEADERS, rows)
    report.note(
        "Peak RSS includes the Python/JAX process itself (~230 MB before the fit). "
        f"Load average at the end: {tuple(round(x, 2) for x in os.getloadavg())}."
    )
    report.write(args.markdown)


if __name__ == "__main__":
    main()
