"""All four inference routes on a small and a medium synthetic case.

Cases (mode 'same', Bernoulli(0.2) image, Gaussian kernel, prior 'smooth'):

* small: 48x48 image, 9x9 kernel, noise sd 0.05 (seed 1);
* medium: 96x96 image, 21x21 kernel, noise sd 0.05 (seed 2).

For every (case, method) the script reports wall time of ``bayeskernel.fit``
(JIT compilation included: every fit compiles its own functions), the relative
error of the posterior mean (whole kernel and central region), coverage of the
95% equal-tailed intervals, the noise sd estimate, and bulk ESS (ArviZ) of the
noise sd and of the kernel entries (min and median over entries), also per
second of wall time, so that exact and NUTS effective samples per second can be
compared (target: exact >= 100x NUTS).

Usage: ``python benchmarks/bench_methods.py [--quick] [--markdown FILE]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from _common import (
    Report,
    command_line,
    iid_min_ess,
    kernel_ess_summary,
    machine_info,
    noise_ess,
    per_second,
)

import bayeskernel as bk

CASES = {
    # name: (image shape, kernel shape, noise sd, seed, central window)
    "small 48x48, 9x9": ((48, 48), (9, 9), 0.05, 1, (5, 5)),
    "medium 96x96, 21x21": ((96, 96), (21, 21), 0.05, 2, (11, 11)),
}


def settings(method: str, case: str, quick: bool, exact_draws: int | None = None) -> dict:
    """Sampler settings per method (the medium NUTS run is shortened, see docs).

    ``exact_draws`` overrides the exact route's draws per chain (its fixed cost
    dominates, so its ESS per second grows with the number of draws).
    """
    method = method.removesuffix("-krylov")
    if exact_draws and method == "exact":
        return dict(num_warmup=500, num_samples=exact_draws, num_chains=2)
    medium = case.startswith("medium")
    if quick:
        return {
            "exact": dict(num_warmup=200, num_samples=200, num_chains=2),
            "map": dict(num_samples=400),
            "nuts": dict(num_warmup=100, num_samples=100, num_chains=2),
            "svi": dict(num_steps=1000, num_samples=400),
        }[method]
    return {
        "exact": dict(num_warmup=500, num_samples=500, num_chains=2),
        "map": dict(num_samples=1000),
        "nuts": dict(
            num_warmup=300 if medium else 500, num_samples=300 if medium else 500, num_chains=2
        ),
        "svi": dict(num_steps=5000, num_samples=1000),
    }[method]


def describe(method: str, kw: dict) -> str:
    method = method.removesuffix("-krylov")
    if method == "svi":
        return f"{kw['num_steps']} steps, {kw['num_samples']} draws"
    if method == "map":
        return f"{kw['num_samples']} draws"
    return f"{kw['num_warmup']}+{kw['num_samples']} x{kw['num_chains']}"


def run_one(case_name: str, method: str, quick: bool, exact_draws: int | None = None) -> dict:
    image_shape, kernel_shape, sigma, seed, central = CASES[case_name]
    case = bk.simulate(image_shape, "gaussian", kernel_shape, noise_sigma=sigma, seed=seed)
    kw = settings(method, case_name, quick, exact_draws)
    start = time.perf_counter()
    # 'exact-krylov' / 'map-krylov': the matrix-free solver of the exact route.
    if method.endswith("-krylov"):
        kw = dict(kw, method=method.removesuffix("-krylov"), solver="krylov")
    else:
        kw = dict(kw, method=method)
    post = bk.fit(case.A, case.B, kernel_shape, prior="smooth", seed=0, progress_bar=False, **kw)
    seconds = time.perf_counter() - start
    region = bk.central_window(kernel_shape, central)
    lower, upper = post.interval(0.95)
    ess_min, ess_median = kernel_ess_summary(post.kernel_draws)
    ess_noise = noise_ess(post.noise_sigma_draws) if "map" not in method else float("nan")
    return dict(
        case=case_name,
        method=method,
        settings=describe(method, kw),
        seconds=seconds,
        diag_seconds=post.diagnostics.get("seconds", float("nan")),
        central=f"{central[0]}x{central[1]}",
        err=bk.relative_error(post.kernel_mean, case.kernel),
        err_central=bk.relative_error(post.kernel_mean, case.kernel, region),
        cov=bk.coverage(lower, upper, case.kernel),
        cov_central=bk.coverage(lower, upper, case.kernel, region),
        noise=post.noise_sigma,
        noise_true=sigma,
        ess_noise=ess_noise,
        ess_noise_s=per_second(ess_noise, seconds),
        ess_min=ess_min,
        ess_median=ess_median,
        ess_min_iid=iid_min_ess(post.kernel_draws.shape),
        ess_min_s=per_second(ess_min, seconds),
        ess_median_s=per_second(ess_median, seconds),
        draws=post.num_chains * post.num_draws,
        divergences=int(np.sum(post.sample_stats.get("diverging", 0))),
        steps=post.diagnostics.get("mean_steps_per_draw", float("nan")),
        breakdown="/".join(
            f"{post.diagnostics[k]:.1f}"
            for k in ("seconds_decomposition", "seconds_hyperparameters", "seconds_kernel_draws")
            if k in post.diagnostics
        )
        or None,
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, for debugging")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables as Markdown")
    parser.add_argument(
        "--methods",
        default="exact,exact-krylov,map,nuts,svi",
        help="comma-separated subset of methods",
    )
    parser.add_argument("--cases", default="small,medium", help="comma-separated: small,medium")
    parser.add_argument(
        "--exact-draws", type=int, help="draws per chain for the exact route (default 500)"
    )
    args = parser.parse_args(argv)

    info = machine_info()
    command = command_line("benchmarks/bench_methods.py", argv)
    report = Report("bench_methods: exact, map, NUTS and SVI", command, info)
    report.header()
    wanted = [c for c in CASES if c.split()[0] in args.cases.split(",")]
    results = []
    for case_name in wanted:
        for method in args.methods.split(","):
            print(f"  running {method} on {case_name} ...", file=sys.stderr, flush=True)
            results.append(run_one(case_name, method, args.quick, args.exact_draws))
            r = results[-1]
            print(
                f"  {method}: {r['seconds']:.1f} s, err {r['err']:.3f}, "
                f"load {os.getloadavg()[0]:.2f}",
                file=sys.stderr,
                flush=True,
            )

    report.table(
        "Accuracy (95% equal-tailed intervals; relative error = ||mean - K|| / ||K||)",
        [
            "case",
            "method",
            "settings",
            "seconds",
            "rel err",
            "central",
            "rel err central",
            "coverage",
            "coverage central",
            "noise sd (true 0.05)",
            "divergences",
        ],
        [
            [
                r["case"],
                r["method"],
                r["settings"],
                r["seconds"],
                r["err"],
                r["central"],
                r["err_central"],
                r["cov"],
                r["cov_central"],
                r["noise"],
                r["divergences"] if r["method"] in ("nuts", "exact") else None,
            ]
            for r in results
        ],
    )
    report.table(
        "Efficiency (bulk ESS; per second = ESS / wall seconds of the fit)",
        [
            "case",
            "method",
            "seconds",
            "diag seconds",
            "draws",
            "ESS noise sd",
            "ESS/s noise sd",
            "ESS kernel min",
            "(iid ref. min)",
            "ESS kernel median",
            "ESS/s kernel min",
            "ESS/s kernel median",
            "NUTS steps/draw",
            "decomp/hyper/draws s",
        ],
        [
            [
                r["case"],
                r["method"],
                r["seconds"],
                r["diag_seconds"],
                r["draws"],
                r["ess_noise"],
                r["ess_noise_s"],
                r["ess_min"],
                r["ess_min_iid"],
                r["ess_median"],
                r["ess_min_s"],
                r["ess_median_s"],
                r["steps"],
                r["breakdown"],
            ]
            for r in results
        ],
    )
    by_key = {(r["case"], r["method"]): r for r in results}
    ratio_rows = []
    for case_name in wanted:
        for exact_name in ("exact", "exact-krylov"):
            exact, nuts = by_key.get((case_name, exact_name)), by_key.get((case_name, "nuts"))
            if exact and nuts:
                ratio_rows.append(
                    [f"{case_name}, {exact_name}"]
                    + [
                        exact[key] / nuts[key]
                        for key in ("ess_noise_s", "ess_min_s", "ess_median_s", "seconds")
                    ]
                )
    if ratio_rows:
        report.table(
            "Exact / NUTS ratio of effective samples per second (target: >= 100)",
            ["case", "noise sd", "kernel min", "kernel median", "NUTS s / exact s"],
            [r[:4] + [1 / r[4]] for r in ratio_rows],
        )
    report.note(
        "Wall seconds include JIT compilation (each fit compiles its own functions). "
        "'diag seconds' is posterior.diagnostics['seconds'] as reported by the library. "
        "MAP holds the noise sd fixed, so it has no noise-sd ESS; MAP and SVI kernel draws "
        "are independent by construction, so their ESS mostly reflects the number of draws. "
        "'(iid ref. min)': the min bulk ESS over entries of independent normal draws of the "
        "same shape, i.e. what the minimum would be for perfect sampling. "
        f"Load average at the end: {tuple(round(x, 2) for x in os.getloadavg())}."
    )
    report.write(args.markdown)


if __name__ == "__main__":
    main()
