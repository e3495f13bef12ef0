"""Bayesian model averaging over kernel priors (``fit(prior='auto')`` or a list).

Each candidate prior is scored by its exact log marginal likelihood
``log p(B | prior)`` (kernel and hyperparameters integrated out, from the exact
route's hyperparameter grid, :mod:`bayeskernel.infer.stages`). With equal prior
odds the posterior probability of candidate ``m`` is
``w_m = p(B | m) / sum_k p(B | k)``, and the model-averaged posterior is the
mixture ``sum_m w_m p(K | B, m)``. Its draws are drawn as a mixture is: the
number of draws from each candidate is multinomial with probabilities ``w``,
and each candidate with draws gives exactly that many.

Each candidate is prepared once (stage 1: its spectrum or Krylov summary) and
scored on a coarse hyperparameter grid (stage 2 with
:data:`~bayeskernel.infer.grid.SCORING_POINTS`, enough for the evidence);
draws (stage 3) are made only for candidates that get some, after the full
grid a direct fit would tabulate, so their draws are a direct fit's. A
Krylov candidate is first prepared with a quarter of its log-determinant
probes; it is completed only if it could matter, that is unless its estimate
plus :data:`SCREEN_SIGMAS` of its standard errors falls :data:`SCREEN_MARGIN`
nats below the best candidate's. A candidate left at that stage has weight
below ``exp(-SCREEN_MARGIN)``, and is listed in ``diagnostics['prior_screened']``.

When all the draws fall on one candidate (its weight near one: every draw
comes from it with probability ``w ** N``) the result is that candidate's own
fit, identical to fitting it directly, except ``diagnostics['log_evidence']``,
which is always the average's. Where candidates are close (a disk kernel at
high noise: the radial profiles of order 1 and 2 within a few nats),
selecting one would keep its intervals and drop the other's; the mixture keeps
both (measured in ``docs/validation.md``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import numpy as np
from scipy.special import logsumexp

from bayeskernel.catalogue import ELLIPTICAL_CANDIDATES
from bayeskernel.infer.collapsed import posterior_from_stages
from bayeskernel.infer.common import numpy_generator
from bayeskernel.infer.ellipse import ELLIPSE_KERNEL_LIMIT, search_ellipse
from bayeskernel.infer.grid import SCORING_POINTS
from bayeskernel.infer.krylov import log_det_error
from bayeskernel.infer.progress import Progress
from bayeskernel.infer.stages import (
    HyperPosterior,
    cached_normal_terms,
    complete,
    hyperparameter_posterior,
    prepare,
    stage_keys,
)
from bayeskernel.model import HyperScales
from bayeskernel.posterior import KernelPosterior
from bayeskernel.priors import LinearGaussianPrior
from bayeskernel.priors.sum import radial_residual

__all__ = ["SCREEN_MARGIN", "SCREEN_SIGMAS", "fit_model_average", "mixture_label"]

# A screened candidate is completed unless estimate + SCREEN_SIGMAS * stderr is
# more than SCREEN_MARGIN nats below the best: its weight is then under
# exp(-30) ~ 1e-13, and the chance that any of 10^6 draws comes from it 1e-7.
SCREEN_MARGIN = 30.0
SCREEN_SIGMAS = 6.0
# The mixture's own random stream, apart from the candidates' (which use the
# fit's key itself): fold_in of these bytes ("mix").
_MIX_STREAM = 0x6D6978
# Hyperparameter draws used to place the Krylov error estimate at a typical t.
_ERROR_DRAWS = 64


def _elliptical_candidates(priors, cache: dict, progress):
    """The ellipse search's fit and its two candidates, or None where it does not apply."""
    shape = tuple(priors[0].output_shape)
    names = {prior.name for prior in priors}
    if len(shape) != 2 or int(np.prod(shape)) > ELLIPSE_KERNEL_LIMIT:
        return None
    if names & set(ELLIPTICAL_CANDIDATES):
        return None
    terms = cached_normal_terms(cache)
    if terms is None:
        return None
    progress.stage("searching an elliptical profile")
    found = search_ellipse(*terms, shape)
    if found.axis_ratio >= 1.0:  # the circle: the radial candidates have it
        return found, []
    profile = found.prior(shape, name=ELLIPTICAL_CANDIDATES[0])
    summed = radial_residual(shape, order=2, ratio=0.1, profile=profile)
    return found, [profile, summed]


def mixture_label(weights: dict[str, float]) -> str:
    """Name of a mixture posterior, e.g. ``'average(radial1 0.616, radial 0.384)'``.

    Parameters
    ----------
    weights : dict of str to float
        Each prior's name and its weight in the average.

    Returns
    -------
    str
        The priors by falling weight (ties in the dict's order), each weight to
        three significant digits.
    """
    parts = sorted(weights.items(), key=lambda item: -item[1])
    return "average(" + ", ".join(f"{name} {weight:.3g}" for name, weight in parts) + ")"


class _Candidate:
    """One prior's stages 1 and 2, and its evidence with its standard error."""

    def __init__(self, prepared, hyper, hyper_key):
        if hyper.table is None:
            raise ValueError(
                f"prior {prepared.prior.name!r} gave no log evidence (its hyperparameter "
                "posterior cannot be tabulated on a grid)"
            )
        self.prepared, self.hyper = prepared, hyper
        self.evidence = hyper.log_evidence
        self.stderr = 0.0
        if prepared.solver == "krylov":
            sample = hyper.table.sample(jax.random.fold_in(hyper_key, 1), 1, _ERROR_DRAWS)
            ratio = np.median(sample["kernel_scale"] ** 2 / sample["noise_sigma"] ** 2)
            # log p(B) carries half the log-determinant's Monte Carlo error.
            self.stderr = 0.5 * log_det_error(prepared.summary, float(ratio))["logdet_stderr"]

    @property
    def name(self) -> str:
        return self.prepared.prior.name


def fit_model_average(
    operator,
    priors: Sequence[LinearGaussianPrior],
    scales: HyperScales,
    observed,
    rng_key: jax.Array,
    *,
    mask=None,
    observations: tuple | None = None,
    kernel_sum: float | None = None,
    num_samples: int = 500,
    num_chains: int = 2,
    noise_sigma: float | None = None,
    kernel_scale: float | None = None,
    solver: str = "auto",
    progress_bar: bool = True,
    draws_dtype=np.float32,
    elliptical: bool = False,
) -> KernelPosterior:
    """The model-averaged posterior over candidate priors (see the module docstring).

    Parameters
    ----------
    operator, observed, mask, observations, kernel_sum
        As :func:`bayeskernel.infer.collapsed.run_exact` takes them.
    priors : sequence of LinearGaussianPrior
        The candidates, with distinct names.
    scales : HyperScales
    rng_key : jax PRNGKey
        The fit's key: each candidate's stages use it as a direct fit would.
    elliptical : bool
        Also weigh an elliptical profile, alone and with a smooth residual
        (``'elliptical'``, ``'elliptical+smooth2'``), at the axis ratio and
        angle of largest evidence (:mod:`bayeskernel.infer.ellipse`). Only for
        one kernel of at most 64 x 64 entries
        (``bayeskernel.infer.ellipse.ELLIPSE_KERNEL_LIMIT``) whose candidates
        went through the kernel-grid normal matrix;
        otherwise nothing is added.

    Returns
    -------
    KernelPosterior
        ``diagnostics`` has ``prior_evidence`` (``log p(B | m)`` per
        candidate), ``prior_evidence_stderr`` (the Krylov estimates' standard
        errors), ``prior_weights`` (posterior probabilities), ``prior_draws``
        (draws from each), ``prior_screened`` (candidates scored from a
        screening preparation only), ``seconds_scoring`` and ``log_evidence``:
        that of the average, ``log mean_m p(B | m)``, whichever candidates the
        draws came from (with ``log_evidence_stderr`` where the Krylov solver
        estimated the candidates' evidence). When all draws come from one
        candidate the rest of ``diagnostics`` is that fit's; a mixture keeps
        each component fit's diagnostics under ``components`` instead, and its
        ``prior`` is its :func:`mixture_label`.
    """
    names = [prior.name for prior in priors]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two prior candidates are both named {name!r}")
    start = time.perf_counter()
    probe_key, hyper_key, draw_key = stage_keys(rng_key, True)

    def score(prepared, points=SCORING_POINTS) -> _Candidate:
        hyper = hyperparameter_posterior(
            prepared, scales, hyper_key, noise_sigma=noise_sigma, kernel_scale=kernel_scale,
            grid_points=points,
        )  # fmt: skip
        return _Candidate(prepared, hyper, hyper_key)

    def tabulated(candidate: _Candidate) -> HyperPosterior:
        # Drawn from: the full grid, as a direct fit tabulates it.
        return score(candidate.prepared, None).hyper

    candidates = []
    normal_cache = {}  # the data's weighted normal matrix, shared by the candidates
    with Progress(progress_bar, "prior='auto'") as progress:

        def add(prior) -> None:
            progress.stage(f"scoring {prior.name}")
            prepared = prepare(
                operator, prior, observed, probe_key, mask=mask, observations=observations,
                solver=solver, screening=True, progress=progress.advance,
                normal_cache=normal_cache, kernel_sum=kernel_sum,
            )  # fmt: skip
            candidates.append(score(prepared))

        for prior in priors:
            add(prior)
        # The elliptical pair reads what the named candidates left in the cache.
        ellipse = _elliptical_candidates(priors, normal_cache, progress) if elliptical else None
        for prior in [] if ellipse is None else ellipse[1]:
            add(prior)
        # Complete the screened candidates that could carry weight, best first.
        while True:
            best = max(c.evidence - SCREEN_SIGMAS * c.stderr for c in candidates)
            open_ = [
                c for c in candidates
                if c.prepared.screening
                and c.evidence + SCREEN_SIGMAS * c.stderr + SCREEN_MARGIN >= best
            ]  # fmt: skip
            if not open_:
                break
            chosen = max(open_, key=lambda c: c.evidence)
            progress.stage(f"completing {chosen.name}")
            completed = complete(chosen.prepared, progress=progress.advance)
            candidates[candidates.index(chosen)] = score(completed)
        seconds_scoring = time.perf_counter() - start

        values = np.array([c.evidence for c in candidates])
        weights = np.exp(values - values.max())
        weights /= weights.sum()
        rng = numpy_generator(jax.random.fold_in(rng_key, _MIX_STREAM))
        counts = rng.multinomial(num_chains * num_samples, weights)
        drawn = [i for i in np.argsort(-weights, kind="stable") if counts[i] > 0]
        facts = {
            "prior_evidence": {c.name: c.evidence for c in candidates},
            "prior_evidence_stderr": {c.name: c.stderr for c in candidates},
            "prior_weights": {c.name: float(w) for c, w in zip(candidates, weights, strict=True)},
            "prior_draws": {c.name: int(n) for c, n in zip(candidates, counts, strict=True)},
            "prior_screened": [c.name for c in candidates if c.prepared.screening],
            "seconds_scoring": seconds_scoring,
            # The average's evidence, whichever candidates the draws came from, so
            # that it does not depend on the random counts (d log-mean-exp / d
            # value_m = w_m).
            "log_evidence": float(logsumexp(values) - np.log(len(values))),
        }
        if ellipse is not None:
            facts["ellipse"] = ellipse[0].as_dict()
        errors = np.array([c.stderr for c in candidates])
        if errors.any():
            facts["log_evidence_stderr"] = float(np.sqrt(np.sum((weights * errors) ** 2)))

        if len(drawn) == 1:  # the candidate's own fit, as if fitted directly
            chosen = candidates[drawn[0]]
            posterior = posterior_from_stages(
                chosen.prepared, tabulated(chosen), num_chains, num_samples, draw_key,
                progress=progress, draws_dtype=draws_dtype,
            )  # fmt: skip
            posterior.diagnostics.pop("log_evidence_stderr", None)
            posterior.diagnostics.update(facts)
            return posterior

        parts = []
        for index in drawn:
            chosen = candidates[index]
            parts.append(
                posterior_from_stages(
                    chosen.prepared,
                    tabulated(chosen),
                    1,
                    int(counts[index]),
                    jax.random.fold_in(draw_key, int(index)),
                    hyper_key=jax.random.fold_in(chosen.hyper.draw_key, int(index)),
                    progress=progress,
                    draws_dtype=draws_dtype,
                )  # fmt: skip
            )
    order = rng.permutation(num_chains * num_samples)

    def pooled(attribute: str) -> np.ndarray:
        values = np.concatenate([
            getattr(p, attribute).reshape((-1,) + getattr(p, attribute).shape[2:]) for p in parts
        ])  # fmt: skip
        return values[order].reshape((num_chains, num_samples) + values.shape[1:])

    first = parts[0]
    diagnostics = {
        **facts,
        "seconds": float(sum(p.diagnostics.get("seconds", 0.0) for p in parts)),
        # Solver facts differ per candidate (one may be Krylov, another dense);
        # the candidate of largest weight comes first.
        "components": {p.prior: p.diagnostics for p in parts},
    }
    return KernelPosterior(
        kernel_draws=pooled("kernel_draws"),
        noise_sigma_draws=pooled("noise_sigma_draws"),
        kernel_scale_draws=pooled("kernel_scale_draws"),
        method="exact",
        prior=mixture_label({candidates[i].name: float(weights[i]) for i in drawn}),
        mode=first.mode,
        diagnostics=diagnostics,
    )
