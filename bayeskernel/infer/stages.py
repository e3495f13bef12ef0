"""The exact route in three stages, each a function with a typed result.

1. :func:`prepare` (:class:`Prepared`): the whitened operator of one prior and
   what the data say through it: a dense spectrum, or a Krylov summary
   (Lanczos nodes, Ritz pairs). Everything later reads only this.
2. :func:`hyperparameter_posterior` (:class:`HyperPosterior`): the collapsed
   posterior of ``(sigma, s)`` tabulated on a grid (with ``log p(B)``), or a
   type-II maximum, or fixed values; NUTS when the grid cannot serve.
   :func:`draw_hyperparameters` then draws from it.
3. :func:`draw_kernels`: one exact Gaussian kernel draw per hyperparameter draw.

:func:`bayeskernel.infer.collapsed.run_exact` chains the three;
:mod:`bayeskernel.averaging` prepares each candidate prior once, scores it from
stage 2, and draws only from candidates with weight. A Krylov candidate can be
prepared *partially* (:func:`prepare` with ``screening=True``: a quarter of the
log-determinant probes, a third of the Lanczos steps) and completed by
:func:`complete` to exactly the full preparation, so a candidate far behind in
evidence costs a fraction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from numpyro.infer import MCMC, NUTS

from bayeskernel.catalogue import SOLVERS
from bayeskernel.field import FieldOperator
from bayeskernel.forward import ConvolutionOperator
from bayeskernel.infer.common import constant_draws
from bayeskernel.infer.exact import (
    DENSE_LIMIT,
    Spectrum,
    WhitenedOperator,
    conditional_draws,
    constrain_sum,
    decompose,
    kernel_gram,
    kernel_grid_transpose,
    likelihood_terms,
    log_marginal_likelihood,
    observed_normal_matrix,
    observed_vector,
    whitened_operator,
)
from bayeskernel.infer.grid import GridTable, grid_table
from bayeskernel.infer.krylov import (
    CG_RTOL,
    KrylovSummary,
    add_probes,
    krylov_draws,
    krylov_log_marginal_likelihood,
    krylov_summary,
    log_det_error,
    single_precision,
)
from bayeskernel.model import HyperScales, collapsed_model
from bayeskernel.normal import normal_matrix
from bayeskernel.observation import log_likelihood_offset, observe
from bayeskernel.priors import LinearGaussianPrior
from bayeskernel.priors.field import FieldPrior

__all__ = [
    "HyperPosterior",
    "Prepared",
    "cached_normal_terms",
    "choose_solver",
    "complete",
    "draw_hyperparameters",
    "draw_kernels",
    "draw_layout",
    "exact_diagnostics",
    "hyperparameter_posterior",
    "prepare",
    "stage_keys",
]

# 'auto' goes matrix-free above this many unknowns in the smaller space. The
# dense route costs r matrix-vector products plus an O(r^3) eigendecomposition;
# the Krylov route about 2,000 products plus ~30 per kernel draw. The limit is a
# judgement, not a measured crossover: bench_scaling.py has dense at 10 s for
# r = 3,969 and Krylov at 16 s for r = 9,801 (100x100 image, 'map').
DENSE_AUTO_LIMIT = 5_000
# Build W^T W from the kernel-grid normal matrix H^T H only when the kernel grid
# has at most this many times as many entries as the latent space.
NORMAL_MATRIX_RATIO = 4
# A screening preparation runs this many of the log-determinant's probes (one
# batch of eight; complete() adds the rest) and this many Lanczos steps from the
# data: the quadratic form converges in ~100 (to 0.01 nats on the motivating
# case), while the full run's 300 feed the draws' deflation and cost 5x as much
# (full reorthogonalisation is quadratic in the steps).
SCREENING_PROBES = 8
SCREENING_STEPS = 100
# Kernel draws made per batched call. Krylov draws run conjugate gradients on
# the batch, whose per-draw cost grows with its width (memory traffic of the
# FFTs): 50 ms per draw in batches of 8 against 74 ms in batches of 64 on the
# motivating case. Dense draws are one matrix product, best wide.
DRAW_BATCH = {"dense": 64, "krylov": 8}
# NUTS on the two hyperparameters keeps every third draw: hyperparameter draws
# cost microseconds, kernel draws (one per kept pair) do not, so thinning buys
# nearly independent pairs (ESS ~ draws) for almost nothing.
HYPER_THINNING = 3
# Eigenvalues below this fraction of the largest count as zero in the rank.
RANK_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Prepared:
    """Stage 1: one prior's whitened operator and the data's summary through it.

    Attributes
    ----------
    prior : LinearGaussianPrior
    whitened : WhitenedOperator
        ``W = H L``: the blur after the prior's whitening map.
    observed : (n,) jax.Array
        The observed pixels, flattened (masked pixels left out).
    solver : {'dense', 'krylov'}
    summary : Spectrum or KrylovSummary
        The eigendecomposition (dense) or the Lanczos quadratures and Ritz
        pairs (Krylov), for the kernel draws.
    terms : Spectrum or KrylovSummary
        The part of ``summary`` the marginal likelihood reads, on the device.
    probe_key : jax PRNGKey
        The Krylov probes' key (to complete a screening preparation).
    mode : str
        The convolution's cropping.
    screening : bool
        A Krylov summary with fewer probes and Lanczos steps than the full
        one: good for the evidence (with a larger standard error), not for
        draws until completed (:func:`complete`).
    facts : dict
        ``seconds_decomposition`` and, for the dense solver, ``gram_build``.
    log_offset : float
        Added to ``log p(B)``: the noise weights' Jacobian and the background
        block's integral (:func:`bayeskernel.observation.log_likelihood_offset`).
    """

    prior: LinearGaussianPrior
    whitened: WhitenedOperator
    observed: jax.Array
    solver: str
    summary: Spectrum | KrylovSummary
    terms: Spectrum | KrylovSummary
    probe_key: jax.Array
    mode: str
    screening: bool = False
    facts: dict = field(default_factory=dict)
    log_offset: float = 0.0

    @property
    def log_likelihood(self):
        """``log p(B | sigma, s)`` of ``terms``: a jax-traceable function."""
        if self.solver == "dense":
            return log_marginal_likelihood
        return krylov_log_marginal_likelihood


@dataclass(frozen=True)
class HyperPosterior:
    """Stage 2: the posterior of ``(sigma, s)`` given the prepared data.

    Exactly one of ``table`` (grid quadrature: independent draws, and the log
    evidence), ``values`` (fixed or type-II maximum likelihood values: constant
    draws) and ``model`` (NUTS on the collapsed model, run when drawn) is set.

    Attributes
    ----------
    table : GridTable or None
    values : dict or None
        ``noise_sigma`` and ``kernel_scale``.
    model : tuple or None
        ``(model, model_args)`` for NUTS.
    fixed : dict
        Hyperparameters held fixed (``None`` where learned).
    draw_key : jax PRNGKey
        Default key of :func:`draw_hyperparameters`.
    seconds : float
    """

    table: GridTable | None
    values: dict | None
    model: tuple | None
    fixed: dict
    draw_key: jax.Array
    seconds: float

    @property
    def log_evidence(self) -> float | None:
        """``log p(B)`` with the kernel and hyperparameters integrated out (grid only)."""
        return None if self.table is None else self.table.log_evidence


def choose_solver(solver: str, num_latent: int, num_observed: int) -> str:
    """Resolve ``solver='auto'`` from the problem size.

    Parameters
    ----------
    solver : {'auto', 'dense', 'krylov'}
        As asked for.
    num_latent, num_observed : int
        Unknowns of the whitened operator and observed pixels; the smaller
        sets the size of the dense eigendecomposition.

    Returns
    -------
    {'dense', 'krylov'}
        ``'auto'``: ``'dense'`` up to ``DENSE_AUTO_LIMIT`` unknowns in the
        smaller space, ``'krylov'`` beyond; otherwise ``solver`` itself.

    Raises
    ------
    ValueError
        For an unknown ``solver``.
    MemoryError
        For ``solver='dense'`` beyond the dense solver's limit.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    size = min(num_latent, num_observed)
    if solver == "dense" and size > DENSE_LIMIT:
        raise MemoryError(
            f"solver='dense' needs a dense {size}x{size} eigendecomposition "
            f"(limit {DENSE_LIMIT}); use solver='krylov' (or 'auto')"
        )
    if solver == "auto":
        return "dense" if size <= DENSE_AUTO_LIMIT else "krylov"
    return solver


def stage_keys(rng_key: jax.Array, samples_hyperparameters: bool):
    """The keys of the three stages: ``(probe, hyperparameters, kernel draws)``.

    The split order is the exact route's contract: the same seed gives the
    same draws whether the stages run through ``fit``, the model average or
    the batched tiles. ``samples_hyperparameters=False`` (fixed or optimised
    values) spends no key on them (the returned hyperparameter key is unused).

    Parameters
    ----------
    rng_key : jax PRNGKey
        The fit's key.
    samples_hyperparameters : bool
        Whether stage 2 draws the hyperparameters (grid or NUTS).

    Returns
    -------
    probe_key, hyper_key, draw_key : jax PRNGKey
        For :func:`prepare`, :func:`hyperparameter_posterior` and
        :func:`draw_kernels`.
    """
    rng_key, probe_key = jax.random.split(rng_key)
    if not samples_hyperparameters:
        return probe_key, rng_key, rng_key
    draw_key, hyper_key = jax.random.split(rng_key)
    return probe_key, hyper_key, draw_key


def prepare(
    operator,
    prior: LinearGaussianPrior,
    observed,
    probe_key: jax.Array,
    *,
    mask=None,
    observations: tuple | None = None,
    solver: str = "auto",
    screening: bool = False,
    progress=None,
    normal_cache: dict | None = None,
    kernel_sum: float | None = None,
) -> Prepared:
    """Stage 1: whiten the operator by the prior and summarise the data.

    Parameters
    ----------
    operator : ConvolutionOperator or tuple of them
        One per image pair.
    prior : LinearGaussianPrior
    observed : (H, W) array or tuple of them
    probe_key : jax PRNGKey
        Seeds the Krylov solver's probes (unused by the dense solver).
    mask : (H, W) bool array, tuple of them, or None
    observations : tuple of PairObservation, optional
        Noise weights and background blocks, one per pair
        (:func:`bayeskernel.observation.observe`); they replace ``mask``.
    solver : {'auto', 'dense', 'krylov'}
    screening : bool
        Krylov only: run :data:`SCREENING_PROBES` of the log-determinant's
        probes; :func:`complete` adds the rest.
    progress : callable, optional
        Called with a count of finished pieces: Lanczos runs (Krylov), batches
        of the dense matrix and its eigendecomposition (dense).
    normal_cache : dict, optional
        Keeps the kernel-grid normal matrix of weighted or projected data
        between calls on the same data (the model average's candidates).
    kernel_sum : float, optional
        Condition on ``sum(K) = kernel_sum`` exactly (dense solver only).

    Returns
    -------
    Prepared
        ``observed`` of shape ``(n,)``, the ``n`` observed pixels of all pairs.

    Raises
    ------
    ValueError
        An unknown ``solver``, or ``kernel_sum`` with a problem the dense
        solver does not take.
    MemoryError
        ``solver='dense'`` beyond the dense solver's limit.
    """
    start = time.perf_counter()
    whitened = whitened_operator(operator, prior, mask, observations)
    if normal_cache is not None and "observed" in normal_cache:
        flat = normal_cache["observed"]  # the same data for every candidate
    else:
        flat = observed_vector(observed, mask, observations)
        if normal_cache is not None:
            normal_cache["observed"] = flat
            normal_cache["num_effective"] = whitened.num_effective
    solver = choose_solver(solver, whitened.num_latent, whitened.num_observed)
    if kernel_sum is not None and solver != "dense":
        raise ValueError(
            f"kernel_sum= is exact with the dense solver; prior {prior.name!r} on this problem "
            f"has {min(whitened.num_latent, whitened.num_observed):,} unknowns in the smaller "
            f"space (the dense solver's automatic limit is {DENSE_AUTO_LIMIT:,}): use "
            "solver='dense', a structured prior (e.g. 'radial') or no kernel_sum"
        )
    facts = {}
    if solver == "dense":
        gram = None
        masks = mask if isinstance(mask, tuple) else (mask,)
        kernel_size = int(np.prod(prior.output_shape))
        # The normal matrix is kernel-grid sized (kernel_size^2): worth it when the
        # latent space is about as large (iid, smooth), not for a radial profile
        # of 140 knots on a 199x199 grid (a 12 GB matrix for 140 columns).
        operators = operator if isinstance(operator, tuple) else (operator,)
        cache = {} if normal_cache is None else normal_cache
        if whitened.num_latent <= whitened.num_observed and (
            kernel_size <= min(DENSE_LIMIT, NORMAL_MATRIX_RATIO * whitened.num_latent)
            or "normal" in cache  # already paid for by another candidate
        ):
            # A field or a binned blur: their normal matrix is not the plain one.
            special = not isinstance(operators[0], ConvolutionOperator)
            if special or (observations is not None and any(_weighted_or_projected(observations))):
                gram = _latent_gram(
                    cache, operators, prior, _normal(cache, operators, observations, masks)
                )
            elif all(m is None for m in masks):
                if "plain_normal" not in cache:
                    cache["plain_normal"] = sum(
                        normal_matrix(np.asarray(op.image), op.kernel_shape, op.mode)
                        for op in operators
                    )
                gram = kernel_gram(operators, prior, cache["plain_normal"])
        grid_data = None
        if gram is not None and normal_cache is not None:
            grid_data = _grid_data(cache, whitened, flat, operators)
        summary = decompose(whitened, flat, gram, progress, grid_data)
        if kernel_sum is not None:
            summary = constrain_sum(summary, whitened, flat, kernel_sum)
        facts["gram_build"] = "normal matrix" if gram is not None else "operator columns"
        # The marginal likelihood needs the spectrum, not the eigenvectors.
        terms = likelihood_terms(summary)
    else:
        if screening:
            summary = krylov_summary(
                whitened, flat, probe_key, num_steps=SCREENING_STEPS,
                probes_run=SCREENING_PROBES, progress=progress,
            )  # fmt: skip
        else:
            summary = krylov_summary(whitened, flat, probe_key, progress=progress)
        terms = replace(summary, ritz_vectors=None)
    # Device arrays once, not a host-to-device copy per call.
    terms = jax.tree_util.tree_map(jnp.asarray, terms)
    mode = (operator[0] if isinstance(operator, tuple) else operator).mode
    facts["seconds_decomposition"] = time.perf_counter() - start
    screening = screening and solver == "krylov"
    offset = 0.0 if observations is None else log_likelihood_offset(observations)
    return Prepared(
        prior, whitened, flat, solver, summary, terms, probe_key, mode, screening, facts, offset
    )


def _normal(cache: dict, operators: tuple, observations, masks) -> np.ndarray:
    """The kernel-grid normal matrix, from ``cache`` when another candidate built it.

    A field's normal matrix of order ``d`` holds those of every lower order
    as its leading block (the monomials are ordered by degree), so one of a
    higher order serves them all.
    """
    if observations is None:  # a field with unit weights
        masks = masks * len(operators) if len(masks) == 1 else masks
        observations = tuple(
            observe(np.zeros(op.output_shape), None if m is None else np.asarray(m), None, None)
            for op, m in zip(operators, masks, strict=True)
        )
    count, normal = _by_order(
        cache, "normal", operators, lambda: observed_normal_matrix(operators, observations)
    )
    return normal[:count, :count]


def _by_order(cache: dict, key: str, operators: tuple, build) -> tuple[int, np.ndarray]:
    """``cache[key]``'s entry for the smallest field order at least ``operators``'s.

    A field's kernel-grid arrays of one order hold every lower order's as their
    leading part, so a higher order's serves. Built by ``build()`` when none is
    there. Returns the length of this order's part and the array.
    """
    size = int(np.prod(operators[0].kernel_shape))
    count = operators[0].num_terms if isinstance(operators[0], FieldOperator) else 1
    larger = [c for c in cache.get(key, {}) if c >= count]
    if not larger:
        cache.setdefault(key, {})[count] = build()
        larger = [count]
    return count * size, cache[key][min(larger)]


def cached_normal_terms(cache: dict):
    """What the candidates' preparations left of the data on the kernel grid.

    Parameters
    ----------
    cache : dict
        The ``normal_cache`` that :func:`prepare` filled for one-kernel candidates.

    Returns
    -------
    tuple or None
        ``(normal, grid_data, energy, num_observed)``: ``H^T S P S H``,
        ``H^T S P S B``, ``||P S B||^2`` and the data's degrees of freedom;
        None when no candidate went through the kernel-grid normal matrix.
    """
    normal = cache.get("plain_normal")
    if normal is None:
        normal = cache.get("normal", {}).get(1)
    grid_data = cache.get("grid_data", {}).get(1)
    if normal is None or grid_data is None or "observed" not in cache:
        return None
    flat = np.asarray(cache["observed"], np.float64)
    return normal, grid_data, float(flat @ flat), int(cache["num_effective"])


def _latent_gram(cache: dict, operators: tuple, prior, normal: np.ndarray) -> np.ndarray:
    """:func:`kernel_gram`; fields that differ only in ratio share one (scaled copies)."""
    if not isinstance(prior, FieldPrior) or prior.num_terms == 1:
        return kernel_gram(operators, prior, normal)
    key = (prior.base.name, prior.num_terms, prior.total_terms)
    grams = cache.setdefault("latent_gram", {})
    if key not in grams:
        unit = FieldPrior(prior.base, prior.num_terms, 1.0, total_terms=prior.total_terms)
        grams[key] = kernel_gram(operators, unit, normal)
    scales = prior.latent_scales()
    # A new array: the eigendecomposition overwrites its input.
    return grams[key] * np.outer(scales, scales)


def _grid_data(cache: dict, whitened, flat, operators: tuple) -> np.ndarray:
    """``kernel_grid_transpose`` of the data, from ``cache`` when another candidate built it.

    As for :func:`_normal`, a field's vector of a higher order holds the lower
    orders' as its leading part.
    """
    count, data = _by_order(
        cache, "grid_data", operators, lambda: kernel_grid_transpose(whitened, flat)
    )
    return data[:count]


def _weighted_or_projected(observations):
    """Per pair: whether it has noise weights, a background or unobserved pixels."""
    for obs in observations:
        yield (
            obs.scales is not None
            or obs.basis is not None
            or obs.indices.size < obs.shape[0] * obs.shape[1]
        )


def complete(prepared: Prepared, progress=None) -> Prepared:
    """A screening preparation completed to the full one (a no-op otherwise).

    Parameters
    ----------
    prepared : Prepared
        From :func:`prepare`, with ``screening=True`` or not.
    progress : callable, optional
        Called with a count of finished Lanczos runs.

    Returns
    -------
    Prepared
        ``prepared`` itself when it is not a screening one; else equal to a
        full :func:`prepare` of the same data and probe key, with the
        screening's probes kept.
    """
    if not prepared.screening:
        return prepared
    start = time.perf_counter()
    # The data's Lanczos run at full length (the draws' deflation basis); the
    # screening's probes kept, the rest added.
    main = krylov_summary(
        prepared.whitened, prepared.observed, prepared.probe_key, probes_run=0, progress=progress
    )
    screened = prepared.summary
    summary = add_probes(
        replace(main, logdet_nodes=screened.logdet_nodes, logdet_weights=screened.logdet_weights),
        prepared.whitened, prepared.probe_key, progress=progress,
    )  # fmt: skip
    terms = jax.tree_util.tree_map(jnp.asarray, replace(summary, ritz_vectors=None))
    seconds = prepared.facts["seconds_decomposition"] + time.perf_counter() - start
    facts = {**prepared.facts, "seconds_decomposition": seconds}
    return replace(prepared, summary=summary, terms=terms, screening=False, facts=facts)


def hyperparameter_posterior(
    prepared: Prepared,
    scales: HyperScales,
    hyper_key: jax.Array,
    *,
    noise_sigma: float | None = None,
    kernel_scale: float | None = None,
    optimise: bool = False,
    hyper_sampler: str = "auto",
    grid_points: dict | None = None,
) -> HyperPosterior:
    """Stage 2: the posterior of ``(sigma, s)``, ready to draw from.

    ``optimise=True``: type-II maximum likelihood (``method='map'``). Both
    hyperparameters fixed: those values. Otherwise the collapsed model
    :func:`bayeskernel.model.collapsed_model` tabulated on a grid
    (``hyper_sampler`` ``'auto'`` or ``'grid'``), or left to NUTS.

    Parameters
    ----------
    prepared : Prepared
        Stage 1's result.
    scales : HyperScales
        Scales of the hyperpriors (:func:`bayeskernel.model.default_hyper_scales`).
    hyper_key : jax PRNGKey
        Seeds the grid's search and the draws (:func:`stage_keys`).
    noise_sigma, kernel_scale : float, optional
        Hold that hyperparameter fixed at this value.
    optimise : bool
        Type-II maximum likelihood of the free hyperparameters.
    hyper_sampler : {'auto', 'grid', 'nuts'}
        ``'auto'``: the grid, NUTS where the grid cannot serve.
    grid_points : dict, optional
        The grid's points per axis by dimension (:func:`~bayeskernel.infer.grid.grid_table`).

    Returns
    -------
    HyperPosterior
        Its ``log_evidence`` includes ``prepared.log_offset`` (grid only).

    Raises
    ------
    ValueError
        ``hyper_sampler='grid'`` on a model the grid cannot serve.
    """
    start = time.perf_counter()
    fixed = {"noise_sigma": noise_sigma, "kernel_scale": kernel_scale}
    table = values = model = None
    init_key, draw_key = jax.random.split(hyper_key)
    if optimise or (noise_sigma is not None and kernel_scale is not None):
        values = (
            _optimise_hyperparameters(prepared.log_likelihood, prepared.terms, scales, fixed)
            if optimise
            else fixed
        )
    else:
        # The model and its keywords are compile-time constants, the data
        # summary and scales arguments: the compiled potential is reused.
        model_args = (prepared.terms, HyperScales(float(scales.noise), float(scales.kernel)))
        model_kwargs = {
            "log_likelihood": prepared.log_likelihood,
            "noise_sigma": noise_sigma,
            "kernel_scale": kernel_scale,
        }
        if hyper_sampler in ("auto", "grid"):
            table = grid_table(collapsed_model, model_args, model_kwargs, init_key, grid_points)
            if table is None and hyper_sampler == "grid":
                raise ValueError(
                    "hyper_sampler='grid' needs a model with at most two free "
                    "hyperparameters and a well-defined mode; use 'nuts'"
                )
        if table is not None and prepared.log_offset:
            evidence = table.log_evidence + prepared.log_offset
            table = replace(table, facts={**table.facts, "log_evidence": evidence})
        if table is None:
            model = (partial(collapsed_model, **model_kwargs), model_args)
            draw_key = hyper_key
    return HyperPosterior(table, values, model, fixed, draw_key, time.perf_counter() - start)


def draw_hyperparameters(
    hyper: HyperPosterior,
    num_chains: int,
    num_samples: int,
    *,
    draw_key: jax.Array | None = None,
    num_warmup: int = 500,
    thinning: int = 1,
    progress_bar: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Draws of ``(sigma, s)``, each ``(chains, draws)``; fixed values repeated.

    Parameters
    ----------
    hyper : HyperPosterior
        Stage 2's result.
    num_chains, num_samples : int
        ``C`` and ``D``.
    draw_key : jax PRNGKey, optional
        Default ``hyper.draw_key``.
    num_warmup : int
        NUTS only: warm-up steps per chain.
    thinning : int
        NUTS only: keep every ``thinning``-th draw (on top of
        ``HYPER_THINNING``).
    progress_bar : bool
        NUTS only: show NumPyro's progress bar.

    Returns
    -------
    noise_sigma, kernel_scale : (C, D) ndarray
        ``C = 1`` for fixed or optimised values.
    diagnostics : dict
        ``hyper_sampler`` and the grid's settings and ``log_evidence``.
    sample_stats : dict
        ``diverging`` flags of NUTS.
    """
    key = hyper.draw_key if draw_key is None else draw_key
    if hyper.values is not None:
        sigma = constant_draws(hyper.values["noise_sigma"], 1, num_samples)
        scale = constant_draws(hyper.values["kernel_scale"], 1, num_samples)
        return sigma, scale, {}, {}
    if hyper.table is not None:
        samples = hyper.table.sample(key, num_chains, num_samples)
        diagnostics = {"hyper_sampler": "grid", **hyper.table.facts}
        sample_stats = {}
    else:
        model, model_args = hyper.model
        samples, diverging = _nuts_hyperparameters(
            model, model_args, key, num_warmup, num_samples, num_chains, thinning, progress_bar
        )
        diagnostics, sample_stats = {"hyper_sampler": "nuts"}, {"diverging": diverging}
    fixed = hyper.fixed
    sigma = samples.get(
        "noise_sigma", constant_draws(fixed["noise_sigma"] or 0, num_chains, num_samples)
    )
    scale = samples.get(
        "kernel_scale", constant_draws(fixed["kernel_scale"] or 0, num_chains, num_samples)
    )
    return sigma, scale, diagnostics, sample_stats


def draw_kernels(
    prepared: Prepared,
    noise_sigma: np.ndarray,
    kernel_scale: np.ndarray,
    draw_key: jax.Array,
    *,
    dtype=np.float32,
    progress=None,
) -> tuple[np.ndarray, dict]:
    """Stage 3: one exact kernel draw per ``(chain, draw)`` hyperparameter pair.

    Parameters
    ----------
    prepared : Prepared
        Completed (not screening).
    noise_sigma, kernel_scale : (C, D) ndarray
    draw_key : jax PRNGKey
    dtype : numpy dtype
        Storage dtype of the draws.
    progress : callable, optional
        Called with the number of draws made after each batch.

    Returns
    -------
    kernels : (C, D, P, Q) ndarray
    stats : dict
        Per-draw solver statistics (Krylov: ``iterations``, ``residual``).
    """
    if prepared.screening:
        raise ValueError("draw_kernels needs a completed preparation (stages.complete)")
    chains, draws = noise_sigma.shape
    total = chains * draws
    shape = tuple(prepared.prior.output_shape)
    num_batches, batch = draw_layout(total, prepared.solver)
    padded = num_batches * batch
    sigma_flat = np.pad(noise_sigma.reshape(-1), (0, padded - total), mode="edge")
    scale_flat = np.pad(kernel_scale.reshape(-1), (0, padded - total), mode="edge")
    out = np.empty((padded,) + shape, dtype=dtype)
    # Device arrays once: the dense basis can be hundreds of MB.
    summary = jax.tree_util.tree_map(jnp.asarray, prepared.summary)
    products = single_precision(prepared.whitened) if prepared.solver == "krylov" else None
    stats = []
    keys = jax.random.split(draw_key, num_batches)
    for i in range(num_batches):
        block = slice(i * batch, (i + 1) * batch)
        kernels, block_stats = _draw_block(
            prepared.solver, keys[i], jnp.asarray(sigma_flat[block]),
            jnp.asarray(scale_flat[block]), summary, prepared.whitened, prepared.observed,
            products,
        )  # fmt: skip
        out[block] = np.asarray(kernels)
        stats.append({k: np.asarray(v) for k, v in block_stats.items()})
        if progress is not None:
            progress(min(batch, total - i * batch))
    merged = {k: np.concatenate([s[k] for s in stats])[:total] for k in stats[0]}
    return out[:total].reshape((chains, draws) + shape), merged


def exact_diagnostics(
    prepared: Prepared, noise_sigma: np.ndarray, kernel_scale: np.ndarray, stats: dict
) -> dict:
    """Solver facts of a fit: space, rank or Krylov errors, effective parameters.

    Parameters
    ----------
    prepared : Prepared
        Stage 1's result (completed).
    noise_sigma, kernel_scale : (C, D) ndarray
        The hyperparameter draws; their median ratio sets the effective number
        of parameters.
    stats : dict
        :func:`draw_kernels`' per-draw solver statistics.

    Returns
    -------
    dict
        ``solver``, ``space``, ``num_latent``, ``effective_parameters``; dense:
        ``gram_build``, ``rank``, ``dense_size``; Krylov: ``lanczos_steps``,
        ``slq_probes``, ``slq_steps``, ``deflation_rank``, the
        log-determinant's error estimates and ``log_evidence_stderr``, and
        the conjugate gradients' statistics.
    """
    summary = prepared.summary
    diagnostics = {"solver": prepared.solver, "space": summary.space}
    if prepared.solver == "dense":
        diagnostics["gram_build"] = prepared.facts["gram_build"]
        largest = summary.eigenvalues.max()
        diagnostics["rank"] = int(np.sum(summary.eigenvalues > largest * RANK_TOLERANCE))
        diagnostics["dense_size"] = int(summary.eigenvalues.shape[0])
        # Effective number of parameters at the median t = s^2 / sigma^2: the
        # trace of the hat matrix, sum_j t g_j / (1 + t g_j).
        ratio = float(np.median(kernel_scale.reshape(-1) ** 2 / noise_sigma.reshape(-1) ** 2))
        shrink = ratio * summary.eigenvalues / (1.0 + ratio * summary.eigenvalues)
        diagnostics["effective_parameters"] = float(np.sum(shrink))
    else:
        # Includes effective_parameters, from the same probes.
        diagnostics.update(_krylov_diagnostics(summary, stats, noise_sigma, kernel_scale))
    diagnostics["num_latent"] = int(prepared.whitened.num_latent)
    return diagnostics


def _nuts_hyperparameters(
    model, model_args, rng_key, num_warmup, num_samples, num_chains, thinning, progress
):
    """NUTS on the collapsed model; returns the draws and the divergence flags."""
    mcmc = MCMC(
        NUTS(model),
        num_warmup=num_warmup,
        num_samples=num_samples * HYPER_THINNING * thinning,
        thinning=HYPER_THINNING * thinning,
        num_chains=num_chains,
        chain_method="sequential",
        progress_bar=progress,
    )
    mcmc.run(rng_key, *model_args, extra_fields=("diverging",))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    diverging = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
    return samples, diverging


def _optimise_hyperparameters(log_likelihood, terms, scales: HyperScales, fixed: dict) -> dict:
    """Type-II maximum likelihood of the free hyperparameters (log scale, L-BFGS).

    ``log_likelihood(terms, noise_sigma, kernel_scale)`` is the collapsed
    marginal likelihood of the solver's summary ``terms``.
    """
    names = tuple(k for k in ("noise_sigma", "kernel_scale") if fixed[k] is None)
    static = (log_likelihood, names, tuple(sorted(fixed.items())))
    reference = {"noise_sigma": scales.noise, "kernel_scale": scales.kernel}

    def value_and_grad(x):
        value, grad = _type2_value_and_grad(static, terms, jnp.asarray(x))
        return float(value), np.asarray(grad, dtype=float)

    best = None
    # A small grid of starts guards against the (rare) second mode in which the
    # kernel absorbs the noise.
    for factor in (0.1, 1.0, 10.0):
        x0 = np.log([reference[k] * (factor if k == "noise_sigma" else 1 / factor) for k in names])
        result = scipy.optimize.minimize(value_and_grad, x0, jac=True, method="L-BFGS-B")
        if best is None or result.fun < best.fun:
            best = result
    return {**fixed, **{k: float(np.exp(best.x[i])) for i, k in enumerate(names)}}


@partial(jax.jit, static_argnums=0)
def _type2_value_and_grad(static, terms, x):
    log_likelihood, names, fixed = static

    def objective(x):
        values = dict(fixed)
        values.update({k: jnp.exp(x[i]) for i, k in enumerate(names)})
        return -log_likelihood(terms, values["noise_sigma"], values["kernel_scale"])

    return jax.value_and_grad(objective)(x)


def draw_layout(total: int, solver: str = "dense") -> tuple[int, int]:
    """Number and size of the equal batches in which ``total`` kernel draws are made.

    Equal batches (the last padded by repeating a pair): one compiled shape per
    fit, and at most ``num_batches - 1`` wasted draws. ``fit_tiles``' batched
    route uses the same layout, so its random keys match a separate fit's.

    Parameters
    ----------
    total : int
        Number of draws (``>= 1``).
    solver : {'dense', 'krylov'}
        Sets the largest batch, ``DRAW_BATCH[solver]``.

    Returns
    -------
    num_batches, batch : int
        ``num_batches * batch >= total``, with less than one batch to spare.
    """
    if total < 1 or solver not in DRAW_BATCH:
        raise ValueError(
            f"draw_layout needs total >= 1 and a solver in {sorted(DRAW_BATCH)}, got "
            f"{total!r} and {solver!r}"
        )
    num_batches = -(-total // DRAW_BATCH[solver])
    return num_batches, -(-total // num_batches)


# Module level, with the data as arguments: compiled once per prior, solver and
# shape, then reused by later fits.
@partial(jax.jit, static_argnums=0)
def _draw_block(solver, key, sigma, scale, summary, whitened, observed, products=None):
    if solver == "dense":
        latent = conditional_draws(key, summary, whitened, observed, sigma, scale)
        stats = {}
    else:
        latent, count, residual = krylov_draws(
            key, summary, whitened, observed, sigma, scale, products=products
        )
        stats = {"iterations": count, "residual": residual}
    kernels = whitened.prior.to_kernel(latent)
    return scale.reshape((-1,) + (1,) * (kernels.ndim - 1)) * kernels, stats


def _krylov_diagnostics(summary, stats, sigma, scale) -> dict:
    """Solver statistics of the Krylov route, in the result's diagnostics."""
    log_ratio = np.log(scale.reshape(-1) ** 2 / sigma.reshape(-1) ** 2)
    errors = log_det_error(summary, float(np.exp(np.median(log_ratio))))
    spread = float(np.std(log_ratio))
    return {
        "lanczos_steps": int(summary.quad_nodes.shape[0]),
        "slq_probes": int(summary.logdet_nodes.shape[0]),
        "slq_steps": int(summary.logdet_nodes.shape[1]),
        "deflation_rank": int(summary.ritz_values.shape[0]),
        **errors,
        # log p(B) carries half the log-determinant's Monte Carlo error.
        "log_evidence_stderr": 0.5 * errors["logdet_stderr"],
        # The log-determinant's probe error tilts log p by about half its slope
        # error per unit log t; that moves the posterior of log t by this many
        # of its own standard deviations (0 when the hyperparameters are fixed).
        "logdet_shift_in_sd": 0.5 * errors["logdet_slope_stderr"] * spread,
        "cg_rtol": CG_RTOL,
        "cg_iterations_mean": float(np.mean(stats["iterations"])),
        "cg_iterations_max": int(np.max(stats["iterations"])),
        "cg_max_residual": float(np.max(stats["residual"])),
    }
