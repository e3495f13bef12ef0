"""``fit``: the one entry point most users need."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from bayeskernel._machine import memory_bytes
from bayeskernel._validation import check_fit_inputs
from bayeskernel.binning import check_oversample, make_binned_operator
from bayeskernel.catalogue import AUTO_PRIORS, HYPER_SAMPLERS, METHODS, SOLVERS
from bayeskernel.diagnostics import prior_dominance_warnings
from bayeskernel.field import (
    check_spatial_order,
    field_terms,
    make_field_operator,
    num_field_terms,
)
from bayeskernel.forward import make_operator
from bayeskernel.infer.common import prng_key
from bayeskernel.model import HyperScales, check_hyper_scales, default_hyper_scales
from bayeskernel.observation import (
    background_terms,
    check_background,
    draw_background,
    model_terms,
    observe,
)
from bayeskernel.observation import noise_weights as observation_weights
from bayeskernel.posterior import KernelPosterior
from bayeskernel.priors import KernelPrior, resolve_prior
from bayeskernel.priors.field import field_candidates

__all__ = ["fit", "DEFAULT_SAMPLES", "METHODS", "PriorDominatedWarning", "NotBinaryWarning"]


class PriorDominatedWarning(UserWarning):
    """The data determine only a small part of the kernel; the prior decides the rest."""


class NotBinaryWarning(UserWarning):
    """``binary=True`` was given but ``A`` has values other than 0 and 1."""


# Default draws per chain (SVI: in all). The exact route's and 'map''s draws are
# independent: 2 chains of 250 give a bulk ESS of about 500, above the 400 at
# which ArviZ's summaries are reliable, at half the cost of 500 (kernel draws
# are most of a large Krylov fit). NUTS draws are correlated: 500 per chain.
DEFAULT_SAMPLES = {"exact": 250, "map": 250, "nuts": 500, "svi": 500}
# Kernel entries per observed pixel beyond which the data cannot constrain the
# kernel: three orders of magnitude (the motivating case has 4, a radial prior's
# knots far fewer); beyond it only the prior speaks, at great cost.
MAX_ENTRIES_PER_PIXEL = 1000
# Random stream of the background draws, apart from the kernel's (ASCII "bg").
BACKGROUND_STREAM = 0x6267


def fit(
    A,
    B,
    kernel_shape: tuple[int, int],
    *,
    mode: Literal["same", "full", "valid"] = "same",
    prior: str | KernelPrior | Sequence[str | KernelPrior] = "auto",
    method: Literal["auto", "exact", "map", "nuts", "svi"] = "auto",
    mask=None,
    background: int | None = None,
    variance=None,
    weights=None,
    kernel_sum: float | None = None,
    spatial_order: int | Literal["auto"] = 0,
    oversample: int | tuple[int, int] | None = None,
    num_warmup: int = 500,
    num_samples: int | None = None,
    num_chains: int = 2,
    thinning: int = 1,
    num_steps: int = 5000,
    noise_sigma: float | None = None,
    kernel_scale: float | None = None,
    hyper_scales: HyperScales | tuple[float, float] | None = None,
    centered: bool | None = None,
    solver: Literal["auto", "dense", "krylov"] = "auto",
    hyper_sampler: Literal["auto", "grid", "nuts"] = "auto",
    noise_per_pair: bool = False,
    binary: bool = False,
    seed: int | jax.Array = 0,
    progress_bar: bool = True,
    draws_dtype=np.float32,
) -> KernelPosterior:
    """Posterior of the kernel ``K`` in ``B = convolve2d(A, K, mode) + noise``.

    Parameters
    ----------
    A : (M, N) array_like
        The known input (binary patterns are typical; any real array works).
    B : array_like
        The observed output, of shape ``convolve2d(A, K, mode).shape``. NaN marks
        unobserved pixels.
    kernel_shape : (int, int)
        Shape of ``K``; may exceed ``A``'s shape.
    mode : {'same', 'full', 'valid'}
        Cropping, exactly as :func:`scipy.signal.convolve2d`.
    prior : str, KernelPrior or sequence of them
        Kernel prior; default ``'auto'``, the model average below, which
        answers most data without a choice (on the motivating case the radial
        profile carries all the weight). Named (see :mod:`bayeskernel.priors`):
        linear-Gaussian ``'smooth'``, ``'smooth2'`` (zero boundary), ``'smooth_reflect'``,
        ``'smooth2_reflect'``, ``'iid'``, ``'radial'``, ``'radial1'``,
        ``'radial+smooth'``, ``'radial+smooth2'`` (the radial profile plus a
        smooth residual); parametric
        ``'gaussian'``, ``'moffat'``, ``'airy'``, ``'power_law'``; ``'lowrank'``,
        ``'lowrank_auto'`` (rank learned);
        or an instance. A sequence of linear-Gaussian priors, or ``'auto'``
        (``'smooth'``, ``'smooth2'``, ``'radial'``, ``'radial1'``,
        ``'radial+smooth'``, ``'radial+smooth2'``; with one kernel of up to
        64 x 64 entries also ``'elliptical'`` and ``'elliptical+smooth2'``, an
        elliptical profile at the axis ratio and angle of largest evidence,
        reported in ``diagnostics['ellipse']``), averages
        over them (Bayesian model averaging, equal prior odds,
        :mod:`bayeskernel.averaging`): each is weighted by its exact marginal
        likelihood ``p(B)``, and the draws come from each in proportion. When
        one candidate holds all the weight (the usual case) the result is its
        own fit; else ``prior`` reads e.g. ``'average(radial 0.806,
        radial1 0.194)'``. ``diagnostics`` has ``prior_evidence``, ``prior_weights`` and
        ``prior_draws``; its ``log_evidence`` is the average's, ``log mean_m
        p(B | m)``. Each candidate is prepared once (its decomposition and
        hyperparameter grid), a Krylov one first from a quarter of its probes
        and completed only if it could carry weight (``prior_screened`` lists
        those left at that stage); draws are made only from candidates with
        weight.
    method : {'auto', 'exact', 'map', 'nuts', 'svi'}
        ``'auto'`` (default): ``'exact'`` for linear-Gaussian priors, ``'nuts'``
        otherwise. ``'exact'``: hyperparameters drawn from their collapsed
        posterior by grid quadrature (independent draws; ``hyper_sampler='nuts'``
        for NUTS), kernel draws from the exact Gaussian conditional. ``'map'``:
        hyperparameters by type-II maximum likelihood, then exact draws.
        ``'nuts'``: NUTS on the full model. ``'svi'``: low-rank Gaussian guide.
    mask : (H, W) bool array_like, optional
        ``True`` where ``B`` is observed.
    background : int, optional
        Fit a background with the kernel: a polynomial of this degree in the
        pixel position (``0``: a constant sky offset, ``1``: a plane, ...), one
        per image pair, with a broad Gaussian prior (sd ten times the pair's
        rms(B)). Default None: no background term. The exact route integrates
        it out exactly (:mod:`bayeskernel.observation`); its coefficients are
        drawn given each kernel draw (``background_draws``, in the order of
        ``background_terms``), and ``log p(B)`` compares degrees.
    variance : (H, W) array_like or list of them, optional
        The noise variance of each pixel of ``B`` (e.g. read noise squared
        plus signal over gain: :func:`bayeskernel.observation.ccd_variance`).
        NaN or inf mark unobserved pixels. The noise sd ``sigma`` is then a
        scale on the map, ``sd[i] = sigma * sqrt(variance[i])``: about 1 when
        the map is right (``noise_sigma=1`` trusts it as given).
    weights : (H, W) array_like or list of them, optional
        Inverse variances instead of ``variance`` (0: unobserved).
    kernel_sum : float, optional
        Fix the kernel's sum exactly (flux conservation: 1 for a normalised
        PSF): the linear-Gaussian posterior conditioned on ``sum(K) =
        kernel_sum``, with exact draws and evidence. Exact route with the dense
        solver (structured priors such as ``'radial'`` keep large kernels
        dense). Without it the sum is learned and reported
        (``summary()['kernel_sum']``). With ``spatial_order``, the kernel at
        every position sums to it (the varying components sum to 0).
    spatial_order : int or 'auto'
        A kernel that varies across the image: ``K(u; x) = sum_f phi_f(x)
        K_f(u)`` with ``phi_f`` the monomials of the pixel position (normalised
        to ``[-1, 1]`` across ``B``) up to this degree (:mod:`bayeskernel.field`).
        ``0`` (default): one kernel. Each component has the chosen prior, one
        of degree ``d`` at ``ratio**d`` of the constant one's scale, the ratio
        learned by evidence over :data:`bayeskernel.priors.field.FIELD_RATIOS`; ``'auto'``
        also weighs the orders 0, 1 and 2 by evidence. Exact route (dense
        kernel-space solver), with any background, variance map, mask and
        mode; several image pairs share the components (each in its own
        ``B``'s normalised coordinates). The result's ``kernel_draws`` is the
        kernel at the centre of ``B``, ``field_draws`` the components and
        ``kernel_at(y, x)`` the posterior at any position.
        ``diagnostics['spatial_order_weights']`` has the orders' posterior
        probabilities.
    oversample : int or (int, int), optional
        A kernel finer than the sensor (super-resolution): ``A`` and ``K``
        are given on a grid ``s`` times finer than ``B`` (per axis, or one
        ``s`` for both), and each pixel of ``B`` sums a block of ``s x s``
        fine pixels of ``convolve2d(A, K, mode)``, blocks from the first fine
        row and column, a last partial block left out
        (:mod:`bayeskernel.binning`; with ``mode='same'``, ``A`` of ``s``
        times ``B``'s shape). Every prior and route, background and variance
        included; ``kernel_shape`` is on the fine grid. Point sources at
        sub-pixel positions: :func:`bayeskernel.sources.render_points` makes
        ``A``.
    num_warmup, num_samples, num_chains : int
        Sampler settings (``num_samples`` per chain; SVI draws ``num_samples``).
        ``num_samples=None`` (default): :data:`DEFAULT_SAMPLES` of the route,
        250 for ``'exact'`` and ``'map'`` (independent draws: a bulk ESS of
        about 500 over 2 chains), 500 for ``'nuts'`` and ``'svi'``.
    thinning : int
        Keep every ``thinning``-th draw of a Markov chain (NUTS, and the exact
        route's hyperparameters when ``hyper_sampler='nuts'``): the sampler runs
        ``num_samples * thinning`` iterations and stores ``num_samples`` draws
        per chain, so memory stays that of ``num_samples``. Ignored where draws
        are independent (``'map'``, ``'svi'``, the grid sampler).
    num_steps : int
        Optimisation steps of SVI.
    noise_sigma, kernel_scale : float, optional
        Hold a hyperparameter fixed instead of learning it.
    hyper_scales : HyperScales or (noise, kernel), optional
        Scales of the hyperpriors, ``sigma ~ HalfNormal(noise)`` and
        ``s ~ HalfCauchy(kernel)``. Default: set from the data's scale
        (:func:`bayeskernel.model.default_hyper_scales`); give them to fix the
        prior independently of the data (simulation-based calibration, or
        comparing evidence across data sets).
    centered : bool, optional
        Parameterisation for NUTS/SVI; default: centred when there are at
        least as many observed pixels as kernel entries.
    solver : {'auto', 'dense', 'krylov'}
        Linear algebra of ``'exact'`` and ``'map'``: ``'dense'`` eigendecomposes
        the smaller of ``W^T W`` and ``W W^T`` (exact to rounding); ``'krylov'``
        is matrix-free (Lanczos quadrature for the marginal likelihood, conjugate
        gradients for the draws, tolerances reported in ``diagnostics``).
        ``'auto'``: dense up to 5,000 unknowns in the smaller space.
    hyper_sampler : {'auto', 'grid', 'nuts'}
        How ``'exact'`` draws ``(sigma, s)`` from their collapsed posterior:
        ``'grid'`` tabulates it (two parameters) and draws independently;
        ``'nuts'`` runs NUTS on the NumPyro model. ``'auto'``: grid when the
        model has at most two free parameters.
    noise_per_pair : bool
        With several image pairs: one noise sd per pair (``noise_sigma_draws``
        of shape ``(chains, draws, pairs)``) instead of one shared. Needs
        ``method='nuts'`` or ``'svi'`` (``'auto'`` picks NUTS): the exact route's
        single eigendecomposition holds for one noise sd only.
    binary : bool
        Say that ``A`` is a 0/1 pattern: a :class:`NotBinaryWarning` is given if
        it is not (an 8-bit image scaled 0..255, interpolation artefacts, a
        pattern read with the wrong threshold). Any real ``A`` is still fitted.
    seed : int, jax key or numpy.random.Generator
        Same seed, same result: an integer in ``[0, 2**64)``, a JAX key (raw
        or typed), or a NumPy generator from which one integer seed is drawn.
    progress_bar : bool
    draws_dtype : floating dtype
        Storage dtype of the kernel draws (float32 halves memory).

    Returns
    -------
    KernelPosterior

    Notes
    -----
    Inference runs inside ``jax.enable_x64(True)``: a scoped switch, so the
    caller's global JAX configuration is left untouched.
    """
    arguments = dict(locals())
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for name, value in (
        ("num_samples", 1 if num_samples is None else num_samples),
        ("num_chains", num_chains),
        ("thinning", thinning),
    ):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    try:
        floating = np.issubdtype(np.dtype(draws_dtype), np.floating)
    except TypeError:
        floating = False
    if not floating:
        raise TypeError(
            f"draws_dtype must be a floating dtype (np.float32 or np.float64), got {draws_dtype!r}"
        )
    spatial_order = check_spatial_order(spatial_order)
    oversample = check_oversample(oversample)
    if oversample is not None and spatial_order:
        raise ValueError(
            "oversample= and spatial_order= together are not available: fit a super-resolved "
            "kernel per region of the image, or a field at the sensor's resolution"
        )
    if spatial_order and method not in ("auto", "exact"):
        raise ValueError(
            f"spatial_order={spatial_order!r} runs in the exact route (its components and "
            f"their ratio are weighed by evidence): use method='exact' or 'auto', not "
            f"method={method!r}"
        )
    candidates = None
    # 'auto' also weighs an elliptical profile found by the evidence (one kernel only).
    elliptical = isinstance(prior, str) and prior == "auto" and not spatial_order
    if isinstance(prior, (list, tuple)) or (isinstance(prior, str) and prior == "auto"):
        candidates = _check_candidates(AUTO_PRIORS if prior == "auto" else prior, arguments)
        method = "exact"
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if hyper_sampler not in HYPER_SAMPLERS:
        raise ValueError(f"hyper_sampler must be one of {HYPER_SAMPLERS}, got {hyper_sampler!r}")
    for name, value in (("noise_sigma", noise_sigma), ("kernel_scale", kernel_scale)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number or None, got {value!r}")
    pairs = _check_pairs(A, B, kernel_shape, mode, mask, oversample)
    kernel_shape = pairs[0][2]
    background = check_background(background)
    if kernel_sum is not None:
        if isinstance(kernel_sum, (bool, np.bool_)) or not (
            isinstance(kernel_sum, (int, float, np.integer, np.floating))
            and np.isfinite(kernel_sum)
        ):
            raise ValueError(f"kernel_sum must be a finite number or None, got {kernel_sum!r}")
        if method in ("nuts", "svi"):
            raise ValueError(
                f"kernel_sum= is exact in the exact route: use method='exact' or 'map' (or "
                f"'auto') with a linear-Gaussian prior, not method={method!r}"
            )
    noise_weights = observation_weights(variance, weights, [b.shape for _, b, _, _ in pairs])
    if noise_weights is not None:
        pairs = [
            (a, b, shape, (w > 0) if m is None else (m & (w > 0)))
            for (a, b, shape, m), w in zip(pairs, noise_weights, strict=True)
        ]
        for index, (*_, m) in enumerate(pairs):
            if not m.any():
                where = "" if len(pairs) == 1 else f" of pair {index}"
                raise ValueError(f"no observed pixel{where}: every weight is 0 or masked")
    orders = () if not spatial_order else (0, 1, 2) if spatial_order == "auto" else (spatial_order,)
    num_components = num_field_terms(max(orders)) if orders else 1
    _check_kernel_size(
        kernel_shape,
        sum(b.size if m is None else int(m.sum()) for _, b, _, m in pairs),
        num_components,
    )
    if noise_per_pair:
        if len(pairs) < 2:
            raise ValueError("noise_per_pair=True needs several image pairs (lists A and B)")
        if noise_sigma is not None:
            raise ValueError(
                "noise_per_pair=True learns each pair's noise sd: leave noise_sigma=None"
            )
        if method in ("exact", "map"):
            raise ValueError(
                f"noise_per_pair=True needs method='nuts' or 'svi', not {method!r}: the exact "
                "route integrates the kernel out for one shared noise sd"
            )
    if binary:
        _warn_not_binary([a for a, *_ in pairs])
    if candidates is not None:
        candidates = [resolve_prior(c, kernel_shape) for c in candidates]
        for candidate in candidates:
            if not candidate.linear_gaussian:
                raise ValueError(
                    f"averaging over priors by evidence needs a linear-Gaussian prior; prior "
                    f"{candidate.name!r} is not (use method='nuts' or 'svi' and compare)"
                )
        prior = candidates[0]
    else:
        prior = resolve_prior(prior, kernel_shape)
    if orders:
        bases = candidates if candidates is not None else [prior]
        for base in bases:
            if not base.linear_gaussian:
                raise ValueError(
                    f"spatial_order= needs a linear-Gaussian prior for its components; prior "
                    f"{base.name!r} is not"
                )
        candidates = field_candidates(bases, orders)
        prior, method = candidates[0], "exact"
    if method == "auto":
        method = "exact" if prior.linear_gaussian and not noise_per_pair else "nuts"
    if kernel_sum is not None and not prior.linear_gaussian:
        raise ValueError(
            f"kernel_sum= needs a linear-Gaussian prior (the Gaussian is conditioned on the "
            f"sum); prior {prior.name!r} is not"
        )
    if method in ("exact", "map") and not prior.linear_gaussian:
        raise ValueError(
            f"method={method!r} needs a linear-Gaussian prior; prior {prior.name!r} is not "
            "(use method='nuts' or 'svi')"
        )
    if num_samples is None:
        num_samples = DEFAULT_SAMPLES[method]
    seen = [b if m is None else b[m] for _, b, _, m in pairs]
    _check_draws_size(kernel_shape, num_chains, num_samples * num_components, draws_dtype)
    if hyper_scales is None:
        scales = default_hyper_scales(
            np.concatenate([a.ravel() for a, *_ in pairs]),
            np.concatenate([v.ravel() for v in seen]),
            kernel_shape,
        )
        if noise_weights is not None:
            # sigma scales the weighted noise: its prior follows the weighted data.
            whitened = np.concatenate([
                (b * np.sqrt(w))[m] for (_, b, _, m), w in zip(pairs, noise_weights, strict=True)
            ])  # fmt: skip
            scales = scales._replace(noise=float(np.sqrt(np.mean(whitened**2))) or 1.0)
        if oversample is not None:
            # Each pixel of B sums s_y s_x fine pixels of the blur.
            scales = scales._replace(kernel=scales.kernel / (oversample[0] * oversample[1]))
    else:
        scales = check_hyper_scales(hyper_scales)
    _check_storage(scales.kernel, draws_dtype)
    observations = None
    if background is not None or noise_weights is not None or orders:
        observations = tuple(
            observe(b, m, None if noise_weights is None else w, background)
            for (_, b, _, m), w in zip(pairs, noise_weights or [None] * len(pairs), strict=True)
        )
    num_observed = sum(v.size for v in seen)
    if centered is None:
        centered = num_observed >= getattr(prior, "num_latent", 0)

    with jax.enable_x64(True):
        rng_key = prng_key(seed)
        if oversample is None:
            operators = tuple(make_operator(a, kernel_shape, mode) for a, *_ in pairs)
        else:
            operators = tuple(
                make_binned_operator(a, kernel_shape, mode, oversample) for a, *_ in pairs
            )
        if orders:
            operators = tuple(make_field_operator(op, max(orders)) for op in operators)
        datas = tuple(jnp.asarray(b) for _, b, _, _ in pairs)
        masks = tuple(None if m is None else jnp.asarray(m) for *_, m in pairs)
        if len(pairs) == 1:  # one pair: plain arrays, site name "observed"
            operator, data, jmask = operators[0], datas[0], masks[0]
        else:
            operator, data = operators, datas
            jmask = None if all(m is None for m in masks) else masks
        nuisance = None
        if observations is not None and method in ("nuts", "svi"):
            nuisance = tuple(
                model_terms(obs, None if noise_weights is None else w, background)
                for obs, w in zip(observations, noise_weights or [None] * len(pairs), strict=True)
            )
        sampled = dict(noise_per_pair=noise_per_pair, nuisance=nuisance)
        common = dict(
            mask=jmask,
            noise_sigma=noise_sigma,
            kernel_scale=kernel_scale,
            progress_bar=progress_bar,
            draws_dtype=draws_dtype,
        )
        if candidates is not None:
            from bayeskernel.averaging import fit_model_average

            posterior = fit_model_average(
                operator, candidates, scales, data, rng_key, mask=jmask, observations=observations,
                kernel_sum=kernel_sum,
                num_samples=num_samples, num_chains=num_chains, noise_sigma=noise_sigma,
                kernel_scale=kernel_scale, solver=solver, progress_bar=progress_bar,
                draws_dtype=draws_dtype, elliptical=elliptical,
            )  # fmt: skip
        elif method == "nuts":
            from bayeskernel.infer.nuts import run_nuts

            posterior = run_nuts(
                operator, prior, scales, data, rng_key,
                num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                centered=centered, thinning=thinning, **sampled, **common,
            )  # fmt: skip
        elif method == "svi":
            from bayeskernel.infer.svi import run_svi

            posterior = run_svi(
                operator, prior, scales, data, rng_key,
                num_steps=num_steps, num_samples=num_samples, centered=centered,
                **sampled, **common,
            )  # fmt: skip
        else:
            from bayeskernel.infer.collapsed import run_exact

            posterior = run_exact(
                operator, prior, scales, data, rng_key,
                num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                optimise=(method == "map"), solver=solver, thinning=thinning,
                hyper_sampler=hyper_sampler, observations=observations, kernel_sum=kernel_sum,
                **common,
            )  # fmt: skip
        if background is not None and method in ("nuts", "svi"):
            posterior.background_terms = background_terms(background)
        elif background is not None:
            draws = draw_background(
                observations, operators, datas, posterior.kernel_draws,
                posterior.noise_sigma_draws, jax.random.fold_in(rng_key, BACKGROUND_STREAM),
            )  # fmt: skip
            posterior.background_draws = draws[:, :, 0] if len(pairs) == 1 else draws
            posterior.background_terms = background_terms(background)
        if orders:
            _split_field(posterior, candidates, max(orders), pairs[0][1].shape)
        posterior.oversample = oversample
        if noise_weights is not None:
            posterior.diagnostics["noise_model"] = "variance map"
            posterior.noise_weights = noise_weights[0] if len(pairs) == 1 else noise_weights
    posterior.diagnostics["hyper_scales"] = {"noise": scales.noise, "kernel": scales.kernel}
    for text in prior_dominance_warnings(posterior):
        warnings.warn(PriorDominatedWarning(text), stacklevel=2)
    restored = [(a, b if m is None else np.where(m, b, np.nan)) for a, b, _, m in pairs]
    if len(restored) == 1:
        posterior.image, posterior.observed = restored[0]
    else:
        posterior.image = [a for a, _ in restored]
        posterior.observed = [b for _, b in restored]
    return posterior


def _split_field(posterior: KernelPosterior, candidates, order: int, shape) -> None:
    """A field fit's component draws apart from its centre kernel, and the orders' weights."""
    posterior.field_draws = posterior.kernel_draws
    posterior.kernel_draws = np.ascontiguousarray(posterior.field_draws[:, :, 0])
    posterior.field_terms = field_terms(order)
    posterior.field_shape = tuple(int(n) for n in shape)
    weights = posterior.diagnostics.get("prior_weights", {})
    by_order: dict[str, float] = {}
    for candidate in candidates:
        key = str(candidate.order)
        by_order[key] = by_order.get(key, 0.0) + float(weights.get(candidate.name, 0.0))
    posterior.diagnostics["spatial_order_weights"] = by_order


def _check_kernel_size(kernel_shape, num_observed: int, components: int = 1) -> None:
    """Refuse, before any prior is built, a kernel the data cannot constrain."""
    entries = kernel_shape[0] * kernel_shape[1] * components
    if entries > MAX_ENTRIES_PER_PIXEL * num_observed:
        side = int(np.sqrt(MAX_ENTRIES_PER_PIXEL * num_observed))
        raise ValueError(
            f"kernel_shape {tuple(kernel_shape)} has {entries:,} entries for {num_observed:,} "
            f"observed pixels ({entries / num_observed:,.0f} per pixel); the data cannot "
            f"constrain it: at most {MAX_ENTRIES_PER_PIXEL} entries per pixel (e.g. "
            f"kernel_shape ({side}, {side}))"
        )


def _check_draws_size(kernel_shape, num_chains, num_samples, draws_dtype) -> None:
    """Refuse, before any work, draws that cannot fit in memory."""
    entries = kernel_shape[0] * kernel_shape[1]
    draws = num_chains * num_samples
    size = draws * entries * np.dtype(draws_dtype).itemsize
    limit = memory_bytes() // 2
    if size > limit:
        fits = max(1, limit // (entries * np.dtype(draws_dtype).itemsize * num_chains))
        raise ValueError(
            f"num_samples={num_samples} x num_chains={num_chains} draws of a "
            f"{kernel_shape[0]}x{kernel_shape[1]} kernel need {size / 2**30:,.1f} GiB "
            f"({np.dtype(draws_dtype).name}); half this machine's memory is "
            f"{limit / 2**30:,.1f} GiB: at most num_samples={fits} per chain"
        )


def _check_storage(kernel_scale: float, draws_dtype) -> None:
    """Refuse a storage dtype whose range the kernel's entries would leave."""
    info = np.finfo(np.dtype(draws_dtype))
    # The entries spread orders of magnitude around their typical size: keep
    # six on either side inside the dtype's normal range.
    if not info.tiny * 1e6 < kernel_scale < info.max / 1e6:
        raise ValueError(
            f"the kernel's entries are of order {kernel_scale:.3g} (B / A), outside what "
            f"draws_dtype={info.dtype.name} stores ({info.tiny:.3g} .. {info.max:.3g}): use "
            "draws_dtype=np.float64, or rescale B"
        )


def _check_candidates(candidates, arguments: dict) -> list:
    """Check that the evidence of each candidate prior can be computed."""
    if len(candidates) == 0:
        raise ValueError("prior is an empty sequence: give at least one prior")
    if arguments["method"] not in ("auto", "exact"):
        raise ValueError(
            f"averaging over priors by evidence (prior='auto', the default, or a sequence) "
            f"needs method='exact' or 'auto', got {arguments['method']!r}: name a prior for "
            f"it, e.g. prior='smooth'"
        )
    if arguments["noise_per_pair"]:
        raise ValueError(
            "averaging over priors by evidence needs one shared noise sd: "
            "noise_per_pair=True needs a named prior and method='nuts' or 'svi'"
        )
    if arguments["hyper_sampler"] == "nuts" or (
        arguments["noise_sigma"] is not None and arguments["kernel_scale"] is not None
    ):
        raise ValueError(
            "averaging over priors by evidence needs the grid sampler over learned "
            "hyperparameters (hyper_sampler='auto' or 'grid', noise_sigma and "
            "kernel_scale not both fixed)"
        )
    for candidate in candidates:
        if isinstance(candidate, (list, tuple)) or (
            isinstance(candidate, str) and candidate == "auto"
        ):
            raise ValueError(f"prior candidates must be names or priors, got {candidate!r}")
    return list(candidates)


def _warn_not_binary(images: list[np.ndarray]) -> None:
    for index, a in enumerate(images):
        other = (a != 0) & (a != 1)
        if other.any():
            name = "A" if len(images) == 1 else f"A[{index}]"
            values = np.unique(a[other])
            warnings.warn(
                NotBinaryWarning(
                    f"{name} was declared binary (binary=True) but {int(other.sum())} of its "
                    f"{a.size} values are neither 0 nor 1 (e.g. {values[:3].tolist()}, range "
                    f"{float(a.min()):g}..{float(a.max()):g}); fitting it as given. Rescale "
                    "or threshold it if it should be a 0/1 pattern."
                ),
                stacklevel=3,
            )


def _check_pairs(A, B, kernel_shape, mode, mask, oversample=None):
    """Validate one pair or lists of pairs; names in errors say which (``A[1]``)."""
    if not isinstance(A, (list, tuple)):
        return [check_fit_inputs(A, B, kernel_shape, mode, mask, oversample)]
    if not isinstance(B, (list, tuple)) or len(A) != len(B):
        raise ValueError(
            "A is a list of images, so B must be a list of the same length "
            f"(got {type(B).__name__} of length {len(B) if hasattr(B, '__len__') else '?'})"
        )
    if len(A) == 0:
        raise ValueError("A is an empty list: give at least one image")
    masks = mask if isinstance(mask, (list, tuple)) else [mask] * len(A)
    if len(masks) != len(A):
        raise ValueError(f"mask is a list of length {len(masks)}, expected {len(A)}")
    pairs = []
    for index, (a, b, m) in enumerate(zip(A, B, masks, strict=True)):
        try:
            pairs.append(check_fit_inputs(a, b, kernel_shape, mode, m, oversample))
        except (ValueError, TypeError) as error:
            message = str(error).replace("A ", f"A[{index}] ", 1).replace("B ", f"B[{index}] ", 1)
            raise type(error)(f"pair {index}: {message}") from None
    return pairs
