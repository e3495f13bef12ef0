"""Simulation-based calibration (SBC) of every inference route.

Design (kept small so that the whole study runs in minutes per method):
16x16 Bernoulli(0.2) image, 5x5 kernel, ``mode='same'``, prior ``'smooth'``.
Replication ``r`` draws, with seeds that depend on ``r`` only (so every scheme
and method sees the same data sets),

    s ~ HalfCauchy(s0),  sigma ~ HalfNormal(sigma0),  K = s T z (z ~ N(0, I)),
    A ~ Bernoulli(0.2),  B = convolve2d(A, K, 'same') + N(0, sigma^2),

fits, and records the rank of the truth among 99 posterior draws (thinned
evenly from all draws) and whether each central 50/90/95% equal-tailed interval
(from all draws) holds the truth, for the noise sd, the kernel scale and the
centre, edge and corner kernel entries.

``(s0, sigma0)`` are fixed reference scales: what
:func:`bayeskernel.model.default_hyper_scales` gives on a pilot data set of the
same design (``bk.simulate((16, 16), 'gaussian', (5, 5), density=0.2,
noise_sigma=0.05, seed=0)``). ``fit`` itself sets the scales from each data set,
which makes its prior data-dependent, unless ``hyper_scales=`` fixes them; the
schemes are:

* ``kernel-only``: ``fit(..., noise_sigma=sigma, kernel_scale=s)`` at the drawn
  values: checks the kernel posterior given the hyperparameters ('map' is then
  identical to 'exact' and is left out);
* 'map' gives point estimates of the hyperparameters (constant draws), so only
  its kernel entries are checked;
* ``fixed-prior``: hyperparameters learned, with ``fit``'s hyperprior scales
  replaced by ``(s0, sigma0)`` (through ``fit(..., hyper_scales=)``). This is
  the model the data were drawn
  from: a proper SBC of the learned-hyperparameter posterior;
* ``fit-default``: hyperparameters learned with ``fit`` exactly as users call it
  (scales from the data). Not a strict SBC: it shows what the data-dependent
  prior costs in calibration.
* ``model-average``: the kernel prior itself is drawn, uniformly from
  ``prior='auto'``'s candidates (``'smooth'``, ``'smooth2'``, ``'radial'``,
  ``'radial1'``), then ``s``, ``sigma``, ``K`` and ``B`` from it; the fit is
  ``fit(..., prior='auto', hyper_scales=(s0, sigma0))``, the model average with
  equal prior odds. This is the model the data were drawn from, so the mixture
  posterior must be calibrated too. The block also reports the mean weight the
  average gives the prior that made the data.

Coverage error bars are binomial: ``1.96 sqrt(p (1 - p) / N)`` about the
nominal ``p``; ``*`` marks a coverage outside them. The rank-uniformity p-value
is a chi-square test on 10 bins.

'exact' and 'map' fits reuse their compiled programs from one fit to the next.
'nuts' and 'svi' fits build fresh jitted closures: for them
the script calls ``jax.clear_caches()`` every 10 fits (otherwise the compiled
programs pile up until the process runs out of memory maps), and it switches on
JAX's persistent compilation cache (a temporary folder).

Usage::

    python benchmarks/bench_calibration.py [--quick] [--markdown FILE]
        [--figure PNG] [--coverage-figure PNG] [--results JSON]
        [--only SCHEME:METHOD ...]
        [--replot JSON]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np
from _common import Report, machine_info
from scipy import stats
from scipy.signal import convolve2d

import bayeskernel as bk
import bayeskernel.api
from bayeskernel.model import HyperScales, default_hyper_scales
from bayeskernel.priors import SmoothPrior, resolve_prior

IMAGE, KERNEL, DENSITY, MODE = (16, 16), (5, 5), 0.2, "same"
ENTRIES = {"centre": (2, 2), "edge": (0, 2), "corner": (0, 0)}
QUANTITIES = ("noise_sd", "kernel_scale", *ENTRIES)
LEVELS = (0.5, 0.9, 0.95)
NUM_RANK_DRAWS = 99  # ranks take values 0..99
SEED = 20261125

# (scheme, method): replications in the full run and in --quick.
PLAN = {
    ("fixed-prior", "exact"): (80, 12),
    ("kernel-only", "exact"): (150, 20),
    ("fixed-prior", "map"): (150, 20),
    ("fixed-prior", "svi"): (80, 20),
    ("fixed-prior", "nuts"): (25, 6),
    ("kernel-only", "nuts"): (25, 6),
    ("kernel-only", "svi"): (40, 10),
    ("fit-default", "exact"): (40, 12),
    ("fit-default", "map"): (100, 20),
    ("model-average", "exact"): (200, 20),
}

SETTINGS = {
    "exact": dict(num_warmup=500, num_samples=500, num_chains=2),
    "map": dict(num_samples=1000),
    "nuts": dict(num_warmup=500, num_samples=500, num_chains=2),
    "svi": dict(num_steps=5000, num_samples=1000),
}


def reference_scales() -> HyperScales:
    """``default_hyper_scales`` of a pilot data set of the same design."""
    pilot = bk.simulate(IMAGE, "gaussian", KERNEL, density=DENSITY, noise_sigma=0.05, seed=0)
    scales = default_hyper_scales(pilot.A, pilot.B, KERNEL)
    return HyperScales(float(scales.noise), float(scales.kernel))


def draw_case(rep: int, scales: HyperScales, prior: SmoothPrior):
    """Replication ``rep``'s truth and data, drawn from the model's prior."""
    rng = np.random.default_rng([SEED, rep])
    scale = abs(scales.kernel * rng.standard_cauchy())
    sigma = abs(scales.noise * rng.standard_normal())
    with jax.enable_x64(True):
        kernel = np.asarray(prior.sample(jax.random.PRNGKey(rep), scale), dtype=float)
    image = rng.binomial(1, DENSITY, IMAGE).astype(float)
    observed = convolve2d(image, kernel, MODE) + sigma * rng.standard_normal(IMAGE)
    return image, observed, kernel, sigma, scale


def fit_one(scheme, method, image, observed, sigma, scale, scales, seed):
    kwargs = dict(SETTINGS[method], method=method, seed=seed, progress_bar=False,
                  draws_dtype=np.float64)  # fmt: skip
    if scheme == "kernel-only":
        return bk.fit(image, observed, KERNEL, prior="smooth", noise_sigma=sigma,
                      kernel_scale=scale, **kwargs)  # fmt: skip
    if scheme == "fixed-prior":
        return bk.fit(image, observed, KERNEL, prior="smooth", hyper_scales=scales, **kwargs)
    if scheme == "model-average":
        return bk.fit(image, observed, KERNEL, prior="auto", hyper_scales=scales, **kwargs)
    return bk.fit(image, observed, KERNEL, prior="smooth", **kwargs)


def rank_and_hits(draws: np.ndarray, truth: float) -> tuple[int, list[bool]]:
    """Rank of the truth among evenly thinned draws, and interval hits per level."""
    draws = np.asarray(draws, dtype=float).ravel()
    thin = draws[np.linspace(0, draws.size - 1, NUM_RANK_DRAWS).round().astype(int)]
    rank = int(np.sum(thin < truth))
    hits = []
    for prob in LEVELS:
        lower, upper = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2])
        hits.append(bool(lower <= truth <= upper))
    return rank, hits


def block_prior(scheme: str, rep: int):
    """The prior that makes replication ``rep``'s data (drawn for 'model-average')."""
    if scheme != "model-average":
        return SmoothPrior(KERNEL)
    names = bayeskernel.api.AUTO_PRIORS
    choice = np.random.default_rng([SEED, rep, 1]).integers(len(names))
    return resolve_prior(names[choice], KERNEL)


def run_block(scheme: str, method: str, reps: int, scales: HyperScales) -> dict:
    # Hyperparameters held fixed (kernel-only) or point estimates (map) have no
    # posterior spread: only the kernel entries are checked.
    learned = scheme != "kernel-only" and method != "map"
    quantities = list(QUANTITIES) if learned else list(ENTRIES)
    ranks = {q: [] for q in quantities}
    hits = {q: [] for q in quantities}
    seconds, divergences, failures, true_weights = [], [], [], []
    start_block = time.perf_counter()
    for rep in range(reps):
        prior = block_prior(scheme, rep)
        image, observed, kernel, sigma, scale = draw_case(rep, scales, prior)
        start = time.perf_counter()
        try:
            post = fit_one(scheme, method, image, observed, sigma, scale, scales, seed=rep)
        except Exception as error:  # noqa: BLE001 - recorded and reported
            failures.append(f"rep {rep}: {type(error).__name__}: {error}")
            continue
        finally:
            # NUTS and SVI fits compile fresh programs that JAX keeps; without
            # clearing, the process hits vm.max_map_count (65,530) and LLVM
            # aborts. 'exact' and 'map' reuse theirs: clearing would only recompile.
            if rep % 10 == 9 and method in ("nuts", "svi"):
                jax.clear_caches()
        seconds.append(time.perf_counter() - start)
        divergences.append(int(np.sum(post.sample_stats.get("diverging", 0))))
        if "prior_weights" in post.diagnostics:
            true_weights.append(post.diagnostics["prior_weights"][prior.name])
        draws = {
            "noise_sd": post.noise_sigma_draws,
            "kernel_scale": post.kernel_scale_draws,
            **{q: post.kernel_draws[..., i, j] for q, (i, j) in ENTRIES.items()},
        }
        truths = {"noise_sd": sigma, "kernel_scale": scale,
                  **{q: kernel[i, j] for q, (i, j) in ENTRIES.items()}}  # fmt: skip
        for q in quantities:
            rank, hit = rank_and_hits(draws[q], truths[q])
            ranks[q].append(rank)
            hits[q].append(hit)
        if (rep + 1) % 10 == 0:
            print(f"  {scheme}/{method}: {rep + 1}/{reps} fits, "
                  f"{time.perf_counter() - start_block:.0f} s, load {os.getloadavg()[0]:.1f}",
                  flush=True)  # fmt: skip
    return {
        "scheme": scheme,
        "method": method,
        "replications": len(seconds),
        "ranks": ranks,
        "hits": hits,
        "seconds": seconds,
        "divergences": divergences,
        "failures": failures,
        "true_prior_weight": true_weights,
        "loadavg_end": list(os.getloadavg()),
        "block_seconds": time.perf_counter() - start_block,
    }


def coverage_cell(hits: list[list[bool]], level_index: int) -> tuple[str, bool]:
    n = len(hits)
    prob = LEVELS[level_index]
    observed = float(np.mean([h[level_index] for h in hits]))
    half_width = 1.96 * np.sqrt(prob * (1 - prob) / n)
    ok = abs(observed - prob) <= half_width
    return f"{observed:.3f} ± {half_width:.3f}{'' if ok else ' *'}", ok


def uniformity_pvalue(ranks: list[int]) -> float:
    counts = np.histogram(ranks, bins=10, range=(0, NUM_RANK_DRAWS + 1))[0]
    return float(stats.chisquare(counts).pvalue)


def report_blocks(report: Report, blocks: list[dict]) -> None:
    headers = ["scheme", "method", "N", "quantity", *[f"{p:.0%} coverage" for p in LEVELS],
               "rank unif. p", "median s/fit", "divergences"]  # fmt: skip
    rows = []
    for block in blocks:
        total_div = int(np.sum(block["divergences"])) if block["divergences"] else 0
        median_s = float(np.median(block["seconds"])) if block["seconds"] else float("nan")
        for q, hits in block["hits"].items():
            if not hits:
                continue
            cells = [coverage_cell(hits, i)[0] for i in range(len(LEVELS))]
            rows.append([block["scheme"], block["method"], block["replications"], q, *cells,
                         uniformity_pvalue(block["ranks"][q]), median_s, total_div])  # fmt: skip
    report.table(
        "Coverage of central equal-tailed intervals (± 1.96 binomial sd about nominal; "
        "* = outside) and chi-square p-value of rank uniformity (10 bins)",
        headers,
        rows,
    )
    for block in blocks:
        if block["failures"]:
            report.note(f"{block['scheme']}/{block['method']}: {len(block['failures'])} "
                        f"failed fits: {block['failures'][:3]}")  # fmt: skip


def plot_ranks(blocks: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(blocks), len(QUANTITIES), figsize=(2.4 * len(QUANTITIES),
                             1.6 * len(blocks)), squeeze=False, sharex=True)  # fmt: skip
    bins = 10
    for row, block in enumerate(blocks):
        n = block["replications"]
        low, high = stats.binom.ppf([0.005, 0.995], n, 1 / bins)
        for col, q in enumerate(QUANTITIES):
            ax = axes[row, col]
            ax.set_yticks([])
            if row == 0:
                ax.set_title(q.replace("_", " "), fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{block['scheme']}\n{block['method']} (N={n})", fontsize=8)
            ranks = block["ranks"].get(q)
            if not ranks:
                label = "point estimate" if block["method"] == "map" else "held fixed"
                ax.text(0.5, 0.5, label, ha="center", va="center", fontsize=8,
                        transform=ax.transAxes, color="0.5")  # fmt: skip
                continue
            ax.axhspan(low, high, color="0.85", zorder=0)
            ax.axhline(n / bins, color="0.5", lw=0.8)
            ax.hist(ranks, bins=bins, range=(0, NUM_RANK_DRAWS + 1), color="C0", zorder=1)
    for ax in axes[-1]:
        ax.set_xlabel("rank of truth (0-99)", fontsize=8)
    priors = sorted({"prior drawn from prior='auto''s candidates" if b["scheme"] ==
                     "model-average" else "'smooth' prior" for b in blocks})  # fmt: skip
    fig.suptitle(f"SBC rank histograms, 16x16 image, 5x5 kernel, {'; '.join(priors)} "
                 "(grey: 99% band for uniform ranks)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def plot_coverage(blocks: list[dict], path: str) -> None:
    """Coverage per block and quantity with the binomial band about nominal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LEVELS), figsize=(4.2 * len(LEVELS), 4.2), sharey=False)
    x = np.arange(len(blocks))
    for ax, (index, prob) in zip(axes, enumerate(LEVELS)):
        n = np.array([b["replications"] for b in blocks], float)
        half = 1.96 * np.sqrt(prob * (1 - prob) / n)
        ax.bar(x, 2 * half, bottom=prob - half, width=0.8, color="0.85", label="nominal ± 1.96 sd")
        ax.axhline(prob, color="0.4", lw=0.8)
        for offset, q in zip(np.linspace(-0.3, 0.3, len(QUANTITIES)), QUANTITIES):
            values = [np.mean([h[index] for h in b["hits"][q]]) if b["hits"].get(q) else np.nan
                      for b in blocks]  # fmt: skip
            ax.plot(x + offset, values, "o", ms=4, label=q.replace("_", " "))
        ax.set_xticks(x, [f"{b['scheme']}\n{b['method']}" for b in blocks], rotation=90,
                      fontsize=7)  # fmt: skip
        ax.set_title(f"{prob:.0%} intervals", fontsize=10)
        ax.set_ylim(max(0.0, prob - 0.35), min(1.02, prob + 0.2))
    axes[0].set_ylabel("coverage")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few replications (debugging)")
    parser.add_argument("--markdown", help="write the report as Markdown to this file")
    parser.add_argument("--figure", default="docs/figures/sbc_ranks.png")
    parser.add_argument("--coverage-figure", default="docs/figures/sbc_coverage.png")
    parser.add_argument("--results", help="save raw ranks and hits as JSON")
    parser.add_argument("--only", nargs="*", help="SCHEME:METHOD blocks to run")
    parser.add_argument("--replot", help="make tables and figure from a --results JSON")
    parser.add_argument("--reps", type=int, help="replications per block (default: PLAN)")
    args = parser.parse_args()

    report = Report("Simulation-based calibration", "python " + " ".join(sys.argv), machine_info())
    report.header()
    scales = reference_scales()
    if args.replot:
        with open(args.replot) as fh:
            saved = json.load(fh)
        blocks = saved["blocks"]
        report.note(saved["notes"])
    else:
        cache = tempfile.mkdtemp(prefix="bench-calibration-jax-cache-")
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        wanted = [tuple(x.split(":")) for x in args.only] if args.only else list(PLAN)
        notes = (
            f"Reference hyperprior scales (default_hyper_scales of the pilot): "
            f"noise sigma0 = {scales.noise:.4g}, kernel s0 = {scales.kernel:.4g}. "
            f"Settings: {SETTINGS}. Ranks among {NUM_RANK_DRAWS} evenly thinned draws."
        )
        report.note(notes)
        blocks = []
        for key in wanted:
            reps = args.reps or PLAN[key][1 if args.quick else 0]
            print(f"{key[0]}/{key[1]}: {reps} replications", flush=True)
            blocks.append(run_block(*key, reps, scales))
            if args.results:
                with open(args.results, "w") as fh:
                    json.dump({"notes": notes, "blocks": blocks}, fh)
    report.table(
        "Time per block",
        ["scheme", "method", "N", "failed", "block s", "median s/fit", "loadavg at end"],
        [[b["scheme"], b["method"], b["replications"], len(b["failures"]), b["block_seconds"],
          float(np.median(b["seconds"])) if b["seconds"] else float("nan"),
          " ".join(f"{x:.1f}" for x in b["loadavg_end"])] for b in blocks],
    )  # fmt: skip
    report_blocks(report, blocks)
    for b in blocks:
        if b.get("true_prior_weight"):
            weights = np.asarray(b["true_prior_weight"])
            report.note(f"{b['scheme']}/{b['method']}: mean weight on the prior that made the "
                        f"data {weights.mean():.3f}; above 0.5 in {np.mean(weights > 0.5):.0%} "
                        "of replications.")  # fmt: skip
    if args.figure:
        plot_ranks(blocks, args.figure)
    if args.coverage_figure:
        plot_coverage(blocks, args.coverage_figure)
    report.note(f"loadavg at end: {tuple(round(x, 2) for x in os.getloadavg())}")
    report.write(args.markdown)


if __name__ == "__main__":
    main()
