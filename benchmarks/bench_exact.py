"""The exact route on the motivating case.

The case: ``bayeskernel.datasets.motivating_example()`` (100x100 Bernoulli(0.2)
image, 199x199 ``1/r`` kernel with centre 0, noise sd 1.0, mode 'same'). It is
fitted with ``method='map'`` and with ``method='exact'`` (200 warmup + 200
draws, 1 and 2 chains), each configuration in its own subprocess so that the
peak resident memory (``ru_maxrss``) of each is separate.

Reported per configuration: wall time of ``fit`` and the library's breakdown
(``seconds_decomposition``, ``seconds_hyperparameters``,
``seconds_kernel_draws``), peak memory, noise sd estimate and its bulk ESS,
relative error of the posterior mean (whole kernel, central 99x99), coverage
of the 95% equal-tailed intervals (whole, central, and near the cusp: entries
with radius < 6 from the centre), and kernel-entry ESS.

It also times the dense eigendecomposition that dominates
(``scipy.linalg.eigh(M, driver='evd')`` on a random SPD matrix, n = 4000) with
``OPENBLAS_NUM_THREADS`` = 1 and 2, each in a subprocess with the variable set
before NumPy is imported.

Targets: full posterior of the motivating case in under 60 s (aim 10 s);
noise sd within 10% of 1.0 with ESS >= 100 per 200 draws.

Usage: ``python benchmarks/bench_exact.py [--quick] [--markdown FILE]``
(``--quick`` uses ``bayeskernel.motivating_case(40)``: 40x40 image, 79x79
kernel, and n = 1500 for the eigh timing). A full run takes about 35-40
minutes on a shared two-core machine: three fits of 6-8 minutes each, two
decomposition breakdowns and the eigh timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CUSP_RADIUS = 6


def child_fit(config: dict) -> dict:
    """One configuration, in this (fresh) process."""
    import resource
    import time

    import numpy as np
    from _common import iid_min_ess, kernel_ess_summary, noise_ess

    import bayeskernel as bk

    if config["quick"]:
        case = bk.motivating_case(40)
    else:
        from bayeskernel.datasets import motivating_example

        case = motivating_example()
    kshape = case.kernel.shape
    central = (kshape[0] + 1) // 2 - (1 if ((kshape[0] + 1) // 2) % 2 == 0 else 0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kwargs = dict(
        prior="smooth", num_samples=200, seed=0, progress_bar=False, solver=config["solver"]
    )
    if config["method"] == "exact":
        kwargs.update(num_warmup=200, num_chains=config["num_chains"])
        if config["solver"] == "krylov":
            # 2 x 100 draws: each Krylov draw is a CG solve (~30 products), so
            # draws, not warmup, set the cost; 200 draws give ESS ~200.
            kwargs.update(num_samples=100)
    start = time.perf_counter()
    post = bk.fit(case.A, case.B, kshape, method=config["method"], **kwargs)
    seconds = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux

    truth = case.kernel
    region = bk.central_window(kshape, (central, central))
    rows, cols = np.indices(kshape)
    radius = np.hypot(rows - (kshape[0] - 1) / 2, cols - (kshape[1] - 1) / 2)
    lower, upper = post.interval(0.95)
    inside = (lower <= truth) & (truth <= upper)
    ess_noise = noise_ess(post.noise_sigma_draws) if config["method"] == "exact" else None
    ess_min, ess_median = kernel_ess_summary(post.kernel_draws)
    noise_lo, noise_hi = post.noise_sigma_interval(0.95)
    diag = post.diagnostics
    return dict(
        config,
        kernel=f"{kshape[0]}x{kshape[1]}",
        image=f"{case.A.shape[0]}x{case.A.shape[1]}",
        central=f"{central}x{central}",
        seconds=seconds,
        seconds_decomposition=diag.get("seconds_decomposition"),
        seconds_hyperparameters=diag.get("seconds_hyperparameters"),
        seconds_kernel_draws=diag.get("seconds_kernel_draws"),
        space=diag.get("space"),
        solver=diag.get("solver"),
        dense_size=diag.get("dense_size"),
        cg_iterations_mean=diag.get("cg_iterations_mean"),
        cg_max_residual=diag.get("cg_max_residual"),
        logdet_shift_in_sd=diag.get("logdet_shift_in_sd"),
        base_rss_mb=base_rss / 1024,
        peak_rss_mb=peak_rss / 1024,
        noise=post.noise_sigma,
        noise_lo=noise_lo,
        noise_hi=noise_hi,
        noise_true=case.noise_sigma,
        ess_noise=ess_noise,
        draws=post.num_chains * post.num_draws,
        divergences=int(np.sum(post.sample_stats.get("diverging", 0))),
        err=bk.relative_error(post.kernel_mean, truth),
        err_central=bk.relative_error(post.kernel_mean, truth, region),
        cov=float(inside.mean()),
        cov_central=float(inside[region].mean()),
        cov_cusp=float(inside[radius < CUSP_RADIUS].mean()),
        n_cusp=int((radius < CUSP_RADIUS).sum()),
        centre_covered=bool(inside[(kshape[0] - 1) // 2, (kshape[1] - 1) // 2]),
        ess_min=ess_min,
        ess_median=ess_median,
        ess_min_iid=iid_min_ess(post.kernel_draws.shape),
        loadavg_end=os.getloadavg()[0],
    )


def child_breakdown(quick: bool) -> dict:
    """Split ``decompose`` into its Gram build and its ``eigh`` (library internals).

    Uses ``bayeskernel.infer.exact.whitened_operator`` and the private ``_gram``
    as they are at the time of the run; returns an ``error`` entry if they changed.
    """
    import time

    import jax
    import numpy as np
    import scipy.linalg

    import bayeskernel as bk
    from bayeskernel.forward import make_operator
    from bayeskernel.infer import exact
    from bayeskernel.priors import resolve_prior

    if quick:
        case = bk.motivating_case(40)
    else:
        from bayeskernel.datasets import motivating_example

        case = motivating_example()
    kshape = case.kernel.shape
    with jax.enable_x64(True):
        whitened = exact.whitened_operator(
            make_operator(case.A, kshape, "same"), resolve_prior("smooth", kshape), None
        )
        p, n = whitened.num_latent, whitened.num_observed
        size = min(p, n)
        if p <= n:
            func = lambda e: whitened.transpose(whitened.apply(e))  # noqa: E731
        else:
            func = lambda e: whitened.apply(whitened.transpose(e))  # noqa: E731
        start = time.perf_counter()
        gram = exact._gram(func, size, np.float64)
        seconds_gram = time.perf_counter() - start
        start = time.perf_counter()
        scipy.linalg.eigh(gram, driver="evd", overwrite_a=True)
        seconds_eigh = time.perf_counter() - start
    return dict(
        size=size,
        space="kernel" if p <= n else "data",
        seconds_gram=seconds_gram,
        seconds_eigh=seconds_eigh,
        threads=os.environ.get("OPENBLAS_NUM_THREADS", "(unset)"),
        loadavg_end=os.getloadavg()[0],
    )


def child_cg(quick: bool) -> dict:
    """CG iterations per Krylov draw with and without the deflation preconditioner.

    At the type-II ML hyperparameters of the smooth prior (``method='map'``,
    ``solver='krylov'``), 8 draws each way, relative tolerance ``CG_RTOL``.
    """
    import time

    import jax
    import jax.numpy as jnp

    import bayeskernel as bk
    from bayeskernel.forward import make_operator
    from bayeskernel.infer import krylov
    from bayeskernel.infer.exact import whitened_operator
    from bayeskernel.priors import resolve_prior

    if quick:
        case = bk.motivating_case(40)
    else:
        from bayeskernel.datasets import motivating_example

        case = motivating_example()
    kshape = case.kernel.shape
    fitted = bk.fit(
        case.A, case.B, kshape, prior="smooth", method="map", solver="krylov", num_samples=8
    )
    sigma, scale = fitted.noise_sigma, float(fitted.kernel_scale_draws[0, 0])
    rows = []
    with jax.enable_x64(True):
        whitened = whitened_operator(
            make_operator(case.A, kshape, "same"), resolve_prior("smooth", kshape), None
        )
        data = jnp.asarray(case.B.ravel())
        start = time.perf_counter()
        summary = krylov.krylov_summary(whitened, data, jax.random.PRNGKey(0))
        seconds_summary = time.perf_counter() - start
        for deflate in (True, False):
            for _ in range(2):  # the second call is timed (the first compiles)
                start = time.perf_counter()
                _, count, residual = krylov.krylov_draws(
                    jax.random.PRNGKey(1), summary, whitened, data,
                    jnp.full(8, sigma), jnp.full(8, scale), deflate=deflate,
                )  # fmt: skip
                count.block_until_ready()
            rows.append(
                dict(
                    preconditioner=f"deflation ({summary.ritz_values.size} Ritz pairs)"
                    if deflate
                    else "none",
                    iterations_mean=float(count.mean()),
                    iterations_max=int(count.max()),
                    max_residual=float(residual.max()),
                    seconds_per_draw=(time.perf_counter() - start) / 8,
                )
            )
    return dict(
        rows=rows,
        sigma=sigma,
        scale=scale,
        seconds_summary=seconds_summary,
        rtol=krylov.CG_RTOL,
        loadavg_end=os.getloadavg()[0],
    )


def child_eigh(n: int, repeats: int) -> dict:
    """Time ``eigh(driver='evd')`` on a random SPD matrix (threads set by the parent)."""
    import time

    import numpy as np
    import scipy.linalg

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, n))
    m = x @ x.T / n + np.eye(n)
    times = []
    for _ in range(repeats):
        a = m.copy()
        start = time.perf_counter()
        scipy.linalg.eigh(a, driver="evd", overwrite_a=True)
        times.append(time.perf_counter() - start)
    return dict(
        n=n,
        threads=os.environ.get("OPENBLAS_NUM_THREADS", "(unset)"),
        times=times,
        loadavg_end=os.getloadavg()[0],
    )


def spawn(args: list[str], env: dict | None = None) -> dict:
    """Run this script as a child and return the JSON it prints last."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"child {args} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="motivating_case(40), n=1500")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables as Markdown")
    parser.add_argument("--skip-eigh", action="store_true", help="skip the OpenBLAS threads part")
    parser.add_argument("--skip-fits", action="store_true", help="only the OpenBLAS threads part")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--eigh", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--breakdown", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cg", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--skip-cg", action="store_true", help="skip the CG iteration comparison")
    parser.add_argument(
        "--skip-breakdown", action="store_true", help="skip the Gram/eigh split of decompose"
    )
    parser.add_argument("--repeats", type=int, default=2, help="eigh repeats per setting")
    parser.add_argument(
        "--configs",
        default="kmap,kexact2",
        help="comma-separated fits: map, exact1, exact2 (dense solver; 1 or 2 chains), "
        "kmap, kexact2 (Krylov solver)",
    )
    parser.add_argument(
        "--threads",
        help="OPENBLAS_NUM_THREADS for the fit subprocesses (default: inherited)",
    )
    parser.add_argument(
        "--breakdown-threads",
        default="inherit,1",
        help="OPENBLAS_NUM_THREADS settings for the breakdown ('inherit' = as this process)",
    )
    args = parser.parse_args(argv)

    if args.child:
        print("RESULT " + json.dumps(child_fit(json.loads(args.child))), flush=True)
        return
    if args.breakdown:
        try:
            result = child_breakdown(args.quick)
        except Exception as error:  # library internals may have changed
            result = dict(error=f"{type(error).__name__}: {error}")
        print("RESULT " + json.dumps(result), flush=True)
        return
    if args.eigh:
        print("RESULT " + json.dumps(child_eigh(args.eigh, args.repeats)), flush=True)
        return
    if args.cg:
        print("RESULT " + json.dumps(child_cg(args.quick)), flush=True)
        return

    import numpy  # noqa: F401  (versions for machine_info)
    import scipy  # noqa: F401
    from _common import Report, command_line, machine_info

    info = machine_info()
    command = command_line("benchmarks/bench_exact.py", argv)
    title = "bench_exact: exact and MAP routes on the motivating case"
    report = Report(title, command, info)
    report.header()

    if not args.skip_fits:
        known = {
            "map": dict(method="map", num_chains=1, solver="dense"),
            "exact1": dict(method="exact", num_chains=1, solver="dense"),
            "exact2": dict(method="exact", num_chains=2, solver="dense"),
            "kmap": dict(method="map", num_chains=1, solver="krylov"),
            "kexact2": dict(method="exact", num_chains=2, solver="krylov"),
        }
        configs = [known[name] for name in args.configs.split(",")]
        fit_env = dict(os.environ)
        if args.threads:
            fit_env["OPENBLAS_NUM_THREADS"] = args.threads
        threads_label = fit_env.get("OPENBLAS_NUM_THREADS", "(unset)")
        results = []
        for config in configs:
            config = dict(config, quick=args.quick)
            print(f"  running {config} ...", file=sys.stderr, flush=True)
            results.append(spawn(["--child", json.dumps(config)], env=fit_env))
            r = results[-1]
            print(f"  {r['seconds']:.1f} s, {r['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
        r0 = results[0]
        report.note(
            f"Case: {r0['image']} image, {r0['kernel']} kernel, noise sd {r0['noise_true']}, "
            f"mode 'same', prior 'smooth'; solved in {r0['space']} space. "
            "Dense solver: 200 draws per chain; Krylov solver: 100 draws per chain; "
            "exact: 200 warmup. "
            f"OPENBLAS_NUM_THREADS in the fit subprocesses: {threads_label}."
        )
        label = [
            f"{r['method']} {r['solver']}"
            + (f" x{r['num_chains']} chain(s)" if r["method"] == "exact" else "")
            for r in results
        ]
        report.table(
            "Time and memory (seconds: wall time of fit; breakdown from posterior.diagnostics)",
            [
                "config",
                "seconds",
                "decomposition",
                "hyperparameters",
                "kernel draws",
                "peak RSS (MB)",
                "RSS before fit (MB)",
                "CG its/draw",
                "CG max residual",
                "logdet shift (sd)",
                "load at end",
            ],
            [
                [
                    lab,
                    r["seconds"],
                    r["seconds_decomposition"],
                    r["seconds_hyperparameters"],
                    r["seconds_kernel_draws"],
                    r["peak_rss_mb"],
                    r["base_rss_mb"],
                    r["cg_iterations_mean"],
                    r["cg_max_residual"],
                    r["logdet_shift_in_sd"],
                    r["loadavg_end"],
                ]
                for lab, r in zip(label, results)
            ],
        )
        report.table(
            "Noise sd (true 1.0) and kernel accuracy (95% equal-tailed intervals)",
            [
                "config",
                "noise sd",
                "95% CI",
                "ESS noise sd",
                "draws",
                "rel err",
                f"rel err central {r0['central']}",
                "coverage",
                "coverage central",
                f"coverage r<{CUSP_RADIUS} ({r0['n_cusp']} entries)",
                "centre (K=0) covered",
                "ESS kernel min",
                "(iid ref. min)",
                "ESS kernel median",
                "ESS/s kernel median",
            ],
            [
                [
                    lab,
                    r["noise"],
                    f"{r['noise_lo']:.4f} .. {r['noise_hi']:.4f}",
                    r["ess_noise"],
                    r["draws"],
                    r["err"],
                    r["err_central"],
                    r["cov"],
                    r["cov_central"],
                    r["cov_cusp"],
                    r["centre_covered"],
                    r["ess_min"],
                    r["ess_min_iid"],
                    r["ess_median"],
                    r["ess_median"] / r["seconds"],
                ]
                for lab, r in zip(label, results)
            ],
        )

    if not args.skip_cg:
        print("  CG iterations with and without the preconditioner ...", file=sys.stderr)
        r = spawn(["--cg"] + (["--quick"] if args.quick else []))
        report.table(
            f"Krylov draws: CG iterations per draw at the type-II ML hyperparameters "
            f"(sigma {r['sigma']:.4f}, s {r['scale']:.4g}), 8 draws, relative tolerance "
            f"{r['rtol']:g}; Lanczos summary {r['seconds_summary']:.1f} s",
            ["preconditioner", "iterations mean", "iterations max", "max residual", "s/draw"],
            [
                [
                    x["preconditioner"],
                    x["iterations_mean"],
                    x["iterations_max"],
                    x["max_residual"],
                    x["seconds_per_draw"],
                ]
                for x in r["rows"]
            ],
        )

    if not args.skip_breakdown:
        rows = []
        for threads in args.breakdown_threads.split(","):
            env = dict(os.environ)
            if threads != "inherit":
                env["OPENBLAS_NUM_THREADS"] = threads
            print(f"  decomposition breakdown, threads {threads} ...", file=sys.stderr, flush=True)
            r = spawn(["--breakdown"] + (["--quick"] if args.quick else []), env=env)
            if "error" in r:
                report.note(f"Decomposition breakdown failed (internals changed?): {r['error']}")
                break
            rows.append(
                [
                    r["space"],
                    r["size"],
                    r["threads"],
                    r["seconds_gram"],
                    r["seconds_eigh"],
                    r["loadavg_end"],
                ]
            )
        if rows:
            report.table(
                "Where the decomposition goes: Gram matrix build (batched W W^T or W^T W "
                "products, JAX) vs dense eigh (SciPy/LAPACK dsyevd); one subprocess per row",
                ["space", "size", "OPENBLAS_NUM_THREADS", "Gram build s", "eigh s", "load at end"],
                rows,
            )

    if not args.skip_eigh:
        n = 1500 if args.quick else 4000
        rows = []
        for threads in ("1", "2"):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=threads)
            print(f"  eigh n={n}, OPENBLAS_NUM_THREADS={threads} ...", file=sys.stderr, flush=True)
            r = spawn(["--eigh", str(n), "--repeats", str(args.repeats)], env=env)
            rows.append([r["threads"], n, min(r["times"]), max(r["times"]), r["loadavg_end"]])
        rows.append(["speed-up 1 -> 2", n, rows[0][2] / rows[1][2], None, None])
        report.table(
            "scipy.linalg.eigh(M, driver='evd'), random SPD M (seconds; subprocess per setting, "
            f"{args.repeats} repeats)",
            ["OPENBLAS_NUM_THREADS", "n", "best s", "worst s", "load at end"],
            rows,
        )
    report.write(args.markdown)


if __name__ == "__main__":
    main()
