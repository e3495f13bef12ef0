"""Each prior on the motivating case and on Gaussian, disk, motion-line and
anisotropic kernels: relative error (whole, central), coverage, time, and the
ranking by ``bayeskernel.compare`` (PSIS-LOO) on each case.

    .venv/bin/python benchmarks/bench_priors.py [--quick] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import machine_info, plain_table, print_and_save

import bayeskernel as bk
from bayeskernel.datasets import motivating_example
from bayeskernel.priors import LowRankPrior, ParametricPrior

# (case name, data, priors to try): the "structured" prior that matches each
# kernel is listed with the generic ones.
NUTS = dict(num_warmup=300, num_samples=300, num_chains=1)


def cases(quick: bool):
    size = 40 if quick else 100
    motivating = motivating_example() if not quick else bk.motivating_case(size, seed=0)
    shape = (15, 15)
    image = (48, 48) if quick else (64, 64)
    out = [("motivating 1/r", motivating, ["smooth", "radial", "power_law"])]
    for family, priors in [
        ("gaussian", ["smooth", "radial", "gaussian", "lowrank"]),
        ("anisotropic_gaussian", ["smooth", "radial", "gaussian", "lowrank"]),
        ("disk", ["smooth", "radial", "gaussian"]),
        ("motion", ["smooth", "radial", "lowrank"]),
    ]:
        out.append((family, bk.simulate(image, family, shape, noise_sigma=0.01, seed=3), priors))
    return out


def fit_prior(case, name):
    shape = case.kernel.shape
    if name in ("smooth", "radial"):
        # The smooth prior on 199x199 needs a 10,000^2 eigendecomposition: use
        # type-II ML there (3 minutes) rather than the full hyperparameter posterior.
        method = "map" if name == "smooth" and shape[0] > 100 else "exact"
        return bk.fit(case.A, case.B, shape, prior=name, method=method, num_samples=300,
                      num_warmup=300, progress_bar=False)  # fmt: skip
    if name == "lowrank":
        prior = LowRankPrior(shape, rank=2)
    else:
        prior = ParametricPrior(shape, family=name)
    return bk.fit(case.A, case.B, shape, prior=prior, progress_bar=False, **NUTS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    info = machine_info()
    rows = []
    for case_name, case, priors in cases(args.quick):
        shape = case.kernel.shape
        central = bk.central_window(shape, tuple(max(1, s // 2) for s in shape))
        fits = {}
        for name in priors:
            start = time.perf_counter()
            post = fit_prior(case, name)
            seconds = time.perf_counter() - start
            fits[name] = post
            lower, upper = post.interval(0.95)
            rows.append([
                case_name, name, post.method, seconds,
                bk.relative_error(post.kernel_mean, case.kernel),
                bk.relative_error(post.kernel_mean, case.kernel, central),
                bk.coverage(lower, upper, case.kernel), post.noise_sigma, case.noise_sigma,
            ])  # fmt: skip
            print(plain_table(HEADERS[:-1], [rows[-1]]).splitlines()[-1], flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = bk.compare(fits)
        ranks = {name: int(rank) for name, rank in zip(table.index, table["rank"])}
        for row in rows[-len(priors) :]:
            row.append(ranks[row[1]] + 1)
    print_and_save(info, HEADERS, rows, args.markdown)


HEADERS = ["case", "prior", "method", "seconds", "rel_err_whole", "rel_err_central",
           "coverage_95", "noise_sd", "true_noise_sd", "loo_rank"]  # fmt: skip

if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
