"""Bayesian model averaging over kernel priors (``fit(prior='auto')`` or a list).

Each candidate prior is scored by its exact log marginal likelihood
``log p(B | prior)`` (kernel and hyperparameters integrated out, from the exact
route's hyperparameter grid; it does not depend on the kernel draws, so a
one-draw fit scores a candidate). With equal prior odds the posterior
probability of candidate ``m`` is ``w_m = p(B | m) / sum_k p(B | k)``, and the
model-averaged posterior is the mixture ``sum_m w_m p(K | B, m)``. Its draws are
drawn as a mixture is: the number of draws from each candidate is multinomial
with probabilities ``w``, each candidate with draws is fitted for exactly that
many, and the draws are shuffled together.

When all the draws fall on one candidate (its weight near one: every draw
comes from it with probability ``w ** N``) the result is that candidate's own
fit, identical to fitting it directly, except ``diagnostics['log_evidence']``,
which is always the average's. Where candidates are close (a disk kernel at
high noise: the radial profiles of order 1 and 2 within a few nats),
selecting one would keep its intervals and drop the other's; the mixture keeps
both (measured in ``docs/validation.md``, session 4).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import jax
import numpy as np
from scipy.special import logsumexp

from bayeskernel.infer.common import numpy_generator, prng_key
from bayeskernel.posterior import KernelPosterior

__all__ = ["fit_model_average", "mixture_label"]


def mixture_label(weights: dict[str, float]) -> str:
    """Name of a mixture posterior, e.g. ``'average(radial1 0.616, radial 0.384)'``."""
    parts = sorted(weights.items(), key=lambda item: -item[1])
    return "average(" + ", ".join(f"{name} {weight:.3g}" for name, weight in parts) + ")"


def fit_model_average(
    fit: Callable[..., KernelPosterior], candidates: Sequence, arguments: dict
) -> KernelPosterior:
    """The model-averaged posterior over candidate priors (see the module docstring).

    Parameters
    ----------
    fit : callable
        :func:`bayeskernel.fit` (passed in: this module is imported by it).
    candidates : sequence of str or LinearGaussianPrior
    arguments : dict
        ``fit``'s keyword arguments, ``prior`` aside; ``method`` is ``'exact'``.

    Returns
    -------
    KernelPosterior
        ``diagnostics`` has ``prior_evidence`` (``log p(B | m)`` per
        candidate), ``prior_weights`` (posterior probabilities), ``prior_draws``
        (draws from each), ``seconds_scoring`` and ``log_evidence``: that of
        the average, ``log mean_m p(B | m)``, whichever candidates the draws
        came from (with ``log_evidence_stderr`` where the Krylov solver
        estimated the candidates' evidence). When all draws come from one
        candidate the rest of ``diagnostics`` is that fit's; a mixture keeps
        each component fit's diagnostics under ``components`` instead, and its
        ``prior`` is its :func:`mixture_label`.
    """
    start = time.perf_counter()
    evidence, stderr, by_name = {}, {}, {}
    for candidate in candidates:
        # The draws come later; a one-draw fit's warnings would be noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scored = fit(**{**arguments, "prior": candidate, "num_samples": 1, "num_chains": 1})
        value = scored.diagnostics.get("log_evidence")
        if value is None:
            raise ValueError(f"prior {scored.prior!r} gave no log evidence")
        if scored.prior in evidence:
            raise ValueError(f"two prior candidates are both named {scored.prior!r}")
        evidence[scored.prior], by_name[scored.prior] = float(value), candidate
        stderr[scored.prior] = float(scored.diagnostics.get("log_evidence_stderr", 0.0))
    seconds_scoring = time.perf_counter() - start

    names = list(evidence)
    values = np.array([evidence[name] for name in names])
    weights = np.exp(values - values.max())
    weights /= weights.sum()
    key = prng_key(arguments["seed"])
    # A stream apart from the fits' own (they use the key itself).
    mix_key = jax.random.fold_in(key, 0x6D6978)
    rng = numpy_generator(mix_key)
    chains, samples = arguments["num_chains"], arguments["num_samples"]
    counts = rng.multinomial(chains * samples, weights)
    drawn = [i for i in np.argsort(-weights, kind="stable") if counts[i] > 0]
    facts = {
        "prior_evidence": evidence,
        "prior_weights": {name: float(w) for name, w in zip(names, weights, strict=True)},
        "prior_draws": {name: int(c) for name, c in zip(names, counts, strict=True)},
        "seconds_scoring": seconds_scoring,
        # The average's evidence, whichever candidates the draws came from, so that
        # it does not depend on the random counts (d log-mean-exp / d value_m = w_m).
        "log_evidence": float(logsumexp(values) - np.log(len(values))),
    }
    if any(stderr.values()):
        errors = np.array([stderr[name] for name in names])
        facts["log_evidence_stderr"] = float(np.sqrt(np.sum((weights * errors) ** 2)))
    if len(drawn) == 1:  # the candidate's own fit, as if fitted directly
        posterior = fit(**{**arguments, "prior": by_name[names[drawn[0]]]})
        posterior.diagnostics.pop("log_evidence_stderr", None)
        posterior.diagnostics.update(facts)
        return posterior

    parts, caught_first = [], []
    for rank, index in enumerate(drawn):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            part = fit(**{
                **arguments, "prior": by_name[names[index]], "num_chains": 1,
                "num_samples": int(counts[index]), "seed": jax.random.fold_in(key, int(index)),
            })  # fmt: skip
        if rank == 0:  # the candidate of largest weight among those drawn
            caught_first = caught
        parts.append(part)
    order = rng.permutation(chains * samples)

    def pooled(attribute: str) -> np.ndarray:
        values = np.concatenate([
            getattr(p, attribute).reshape((-1,) + getattr(p, attribute).shape[2:]) for p in parts
        ])  # fmt: skip
        return values[order].reshape((chains, samples) + values.shape[1:])

    for record in caught_first:
        warnings.warn(record.message, stacklevel=4)
    first = parts[0]
    diagnostics = {
        **facts,
        "hyper_scales": first.diagnostics.get("hyper_scales"),
        "seconds": float(sum(p.diagnostics.get("seconds", 0.0) for p in parts)),
        # Solver facts differ per candidate (one may be Krylov, another dense).
        "components": {p.prior: p.diagnostics for p in parts},
    }
    return KernelPosterior(
        kernel_draws=pooled("kernel_draws"),
        noise_sigma_draws=pooled("noise_sigma_draws"),
        kernel_scale_draws=pooled("kernel_scale_draws"),
        method="exact",
        prior=mixture_label({names[i]: float(weights[i]) for i in drawn}),
        mode=first.mode,
        diagnostics=diagnostics,
        image=first.image,
        observed=first.observed,
    )
