"""Coverage of the radial priors' 95% intervals over many data sets.

A radial kernel has few degrees of freedom (one value per pixel distance), and
every entry at the same distance shares its knot, so one data set's coverage
(the fraction of the ``P Q`` entries inside their intervals) moves in steps of
several entries at once: a calibrated posterior can show 0.74 on one data set.
Calibration is a statement about the average over data sets. For each case,
``--seeds`` data sets (``bk.simulate`` seeds 1..N) are fitted with the exact
route and the table reports the mean coverage, its standard error over the
data sets, the smallest coverage, how many data sets fell below 0.9, the mean
relative error of the posterior mean, and the mean time per fit.

    .venv/bin/python benchmarks/bench_radial_coverage.py [--seeds 20] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import machine_info, print_and_save

import bayeskernel as bk

# name, image shape, family, kernel shape, density of A, noise sd
CASES = [
    ("gaussian 9x9, 48x48, 20% ones, noise 0.05", (48, 48), "gaussian", (9, 9), 0.2, 0.05),
    ("gaussian 9x9, 48x48, 50% ones, noise 0.1", (48, 48), "gaussian", (9, 9), 0.5, 0.1),
    ("gaussian 21x21, 96x96, 50% ones, noise 0.01", (96, 96), "gaussian", (21, 21), 0.5, 0.01),
    ("gaussian 21x21, 96x96, 5% ones, noise 0.1", (96, 96), "gaussian", (21, 21), 0.05, 0.1),
    ("disk 9x9, 48x48, 50% ones, noise 0.1", (48, 48), "disk", (9, 9), 0.5, 0.1),
    ("disk 21x21, 96x96, 50% ones, noise 0.01", (96, 96), "disk", (21, 21), 0.5, 0.01),
]
PRIORS = ("radial", "radial1")
HEADERS = ["case", "prior", "data sets", "mean coverage", "s.e.", "min", "below 0.9",
           "mean rel. error", "s per fit"]  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="data sets per case")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    info = machine_info()
    rows = []
    for name, image_shape, family, shape, density, noise in CASES:
        data = [
            bk.simulate(image_shape, family, shape, density=density, noise_sigma=noise, seed=s)
            for s in range(1, args.seeds + 1)
        ]
        for prior in PRIORS:
            covers, errors, seconds = [], [], []
            for seed, case in enumerate(data, start=1):
                start = time.perf_counter()
                post = bk.fit(case.A, case.B, shape, prior=prior, seed=seed, progress_bar=False)
                seconds.append(time.perf_counter() - start)
                covers.append(bk.coverage(*post.interval(0.95), case.kernel))
                errors.append(bk.relative_error(post.kernel_mean, case.kernel))
            covers = np.asarray(covers)
            rows.append([
                name, prior, len(covers), covers.mean(),
                covers.std(ddof=1) / np.sqrt(len(covers)), covers.min(),
                int(np.sum(covers < 0.9)), float(np.mean(errors)),
                float(np.mean(seconds[1:] or seconds)),  # the first fit compiles
            ])  # fmt: skip
            print(" | ".join(str(x) for x in rows[-1]), flush=True)
    print_and_save(info, HEADERS, rows, args.markdown)


if __name__ == "__main__":
    main()
