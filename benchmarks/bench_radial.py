"""The radial prior on the motivating case over several seeds.

For each seed, ``bayeskernel.motivating_case(100, seed)`` (100x100 Bernoulli(0.2)
image, 199x199 ``1/r`` kernel, noise sd 1) is fitted with ``prior='radial'``
(exact route, default settings) and reported: relative error of the posterior
mean (whole kernel, central 99x99), 95% coverage (whole kernel, and within 6
and 16 pixels of the centre, at the cusp), the noise sd, the time, and the
**posterior's own expected error** in the central window,
``sqrt(trace of the posterior covariance there) / ||K_central||``: the error a
calibrated posterior mean is expected to have on that data. When the measured
error is at that level, it is set by the noise, not by the prior or the solver.

    .venv/bin/python benchmarks/bench_radial.py [--seeds 5] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import machine_info, plain_table, print_and_save

import bayeskernel as bk

HEADERS = ["seed", "seconds", "rel_err_whole", "rel_err_central", "expected_central",
           "coverage_95", "coverage_r<6", "coverage_r<16", "noise_sd"]  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    info = machine_info()
    rows = []
    for seed in range(args.seeds):
        case = bk.motivating_case(100, seed=seed)
        shape = case.kernel.shape
        central = bk.central_window(shape, (99, 99))
        start = time.perf_counter()
        post = bk.fit(case.A, case.B, shape, prior="radial", seed=seed, progress_bar=False)
        seconds = time.perf_counter() - start
        draws = post.kernel_draws.reshape((-1,) + shape)[(slice(None),) + central]
        expected = np.sqrt(draws.astype(float).var(axis=0).sum()) / np.linalg.norm(
            case.kernel[central]
        )
        lower, upper = post.interval(0.95)
        # Near the cusp, where calibration matters most (distance to the centre).
        rows_, cols_ = np.indices(shape)
        radius = np.hypot(rows_ - (shape[0] - 1) / 2, cols_ - (shape[1] - 1) / 2)
        near = [bk.coverage(lower, upper, case.kernel, radius < r) for r in (6, 16)]
        rows.append([
            seed, seconds,
            bk.relative_error(post.kernel_mean, case.kernel),
            bk.relative_error(post.kernel_mean, case.kernel, central),
            expected, bk.coverage(lower, upper, case.kernel), *near, post.noise_sigma,
        ])  # fmt: skip
        print(plain_table(HEADERS, [rows[-1]]).splitlines()[-1], flush=True)
    rows.append(["mean", *np.mean(np.asarray([r[1:] for r in rows], float), axis=0)])
    print_and_save(info, HEADERS, rows, args.markdown)


if __name__ == "__main__":
    main()
