"""Many equal-shape tiles in one vmapped JAX program (``fit_tiles(batch_size=...)``).

A separate :func:`bayeskernel.fit` per small tile spends most of its time in
Python around tiny arrays: three L-BFGS runs for the type-II maximum likelihood
alone take ~50 ms of a ~75 ms warm ``'map'`` fit of a 24x24 tile
(docs/tiles.md). The arithmetic is a 25x25 eigendecomposition. Here a group of
tiles of identical shapes and options is fitted at once, every step vmapped
over the tiles:

* ``W^T W`` per tile from the library's whitened operator, then a batched
  ``jnp.linalg.eigh`` (float64, inside ``jax.enable_x64(True)`` as ``fit``);
* ``(sigma, s)`` by a fixed number of damped Newton steps in log space from the
  same three starts as ``fit``'s L-BFGS, the best start kept. A tile whose best
  start did not converge (gradient, Newton step, positive curvature) is fitted
  separately instead;
* ``method='exact'``: the grid quadrature of :mod:`bayeskernel.infer.grid`
  (Laplace-aligned grid of the NumPyro potential, independent draws), the grid
  evaluated for all tiles in one program;
* kernel draws by :func:`bayeskernel.infer.exact.conditional_draws`, with the
  random keys ``fit`` would use for the tile's seed and the same blocks of
  draws, so a tile's draws equal those of its separate fit up to the
  difference of the two optimisers' answers (``'map'``; ``'exact'`` also draws
  grid cells from a grid placed at that optimum).

Tiles that do not qualify (masks, several exposures, other methods or solvers,
priors that are not linear-Gaussian, more kernel entries than pixels, fixed
hyperparameters, ...) are fitted separately by
:func:`bayeskernel.tiles.task.fit_tile`; each tile's file says which route
made it (attribute ``fit_route``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.util import constrain_fn, potential_energy

from bayeskernel._validation import check_fit_inputs
from bayeskernel.api import DEFAULT_SAMPLES
from bayeskernel.forward import make_operator
from bayeskernel.infer._static import Static
from bayeskernel.infer.collapsed import DENSE_AUTO_LIMIT, draw_layout
from bayeskernel.infer.exact import (
    DENSE_LIMIT,
    conditional_draws,
    kernel_space_spectrum,
    log_marginal_likelihood,
    whitened_operator,
)
from bayeskernel.infer.grid import HALF_WIDTH, grid_mesh, grid_sample, grid_weights
from bayeskernel.model import (
    HyperScales,
    check_hyper_scales,
    collapsed_model,
    default_hyper_scales,
)
from bayeskernel.posterior import KernelPosterior
from bayeskernel.priors import LinearGaussianPrior, resolve_prior
from bayeskernel.tiles.task import fit_tile, tile_dataset

__all__ = ["NEWTON_STEPS", "batch_reason", "fit_tile_batch"]

# Damped Newton in log space converges quadratically; from fit's starts (noise
# sd x0.1 .. x10) it takes under ten steps on the tiles measured. Fixed count:
# one compiled loop for every tile.
NEWTON_STEPS = 30
# Step lengths tried per Newton step: 1, 1/2, ..., 1/128 (all at once, vmapped).
LINE_SEARCH = 8
# Largest Newton step in log units (a factor e^3 = 20 in sigma or s).
MAX_STEP = 3.0
# Converged: |gradient| (nats per e-fold) and the last Newton step (relative
# change of sigma and s) below these, curvature positive definite.
GRAD_TOL = 1e-6
STEP_TOL = 1e-6
# fit's three L-BFGS starts: the noise sd from the data's scale times these
# (and the kernel scale divided by them).
START_FACTORS = (0.1, 1.0, 10.0)
# Sites of the collapsed model, sorted as NumPyro (and the grid sampler) order them.
_SITES = ("kernel_scale", "noise_sigma")
_MODEL_KWARGS = {
    "log_likelihood": log_marginal_likelihood,
    "noise_sigma": None,
    "kernel_scale": None,
}


# --- which tiles qualify --------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Everything that fixes a group's compiled program (hashable: a jit static)."""

    prior: Static
    kernel_shape: tuple[int, int]
    method: str  # 'map' or 'exact'
    num_chains: int
    num_samples: int


def _positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _plan(task) -> tuple[_Plan | None, str]:
    """The group plan of a tile, or None and why it must be fitted separately."""
    options = task.options
    if len(task.A) != 1:
        return None, "several exposures"
    if any(m is not None for m in task.mask):
        return None, "unobserved pixels in the tile"
    method = options.get("method", "auto")
    if method not in ("auto", "map", "exact"):
        return None, f"method={method!r}"
    for name in ("noise_sigma", "kernel_scale"):
        if options.get(name) is not None:
            return None, f"{name} held fixed"
    if options.get("noise_per_pair") or options.get("binary"):
        return None, "noise_per_pair or binary"
    for name in ("background", "kernel_sum"):  # data blocks the vmapped route has not
        if options.get(name) is not None:
            return None, f"{name}= given"
    if task.weights is not None:
        return None, "noise weights"
    if options.get("solver", "auto") not in ("auto", "dense"):
        return None, f"solver={options.get('solver')!r}"
    num_samples = options.get("num_samples")
    if num_samples is None:  # fit's default for the route
        num_samples = DEFAULT_SAMPLES["map" if method == "map" else "exact"]
    if not (_positive_int(num_samples) and _positive_int(options.get("num_chains"))):
        return None, "num_samples or num_chains not a positive integer"
    try:
        prior = resolve_prior(options.get("prior", "smooth"), task.kernel_shape)
    except (ValueError, TypeError):
        return None, "prior not resolved"
    if not isinstance(prior, LinearGaussianPrior):
        return None, f"prior {prior.name!r} is not linear-Gaussian"
    if method == "auto":
        method = "exact"
    if method == "exact" and options.get("hyper_sampler", "auto") not in ("auto", "grid"):
        return None, f"hyper_sampler={options.get('hyper_sampler')!r}"
    pixels = int(np.prod(task.B[0].shape))
    latent = int(prior.num_latent)
    if latent > pixels:
        return None, "more kernel entries than pixels (data-space solver)"
    if latent > (DENSE_LIMIT if options.get("solver") == "dense" else DENSE_AUTO_LIMIT):
        return None, "kernel too large for the dense solver"
    if options.get("hyper_scales") is not None:
        try:
            check_hyper_scales(options["hyper_scales"])
        except ValueError:
            return None, "hyper_scales invalid"
    chains = 1 if method == "map" else int(options["num_chains"])
    plan = _Plan(Static(prior), tuple(task.kernel_shape), method, chains, int(num_samples))
    return plan, ""


def batch_reason(task) -> str:
    """Why ``task`` cannot join a vmapped group ('' when it can).

    Parameters
    ----------
    task : TileTask

    Returns
    -------
    str
    """
    return _plan(task)[1]


# --- the vmapped programs -----------------------------------------------------


def _spectrum(prior: LinearGaussianPrior, kernel_shape, window, observed):
    """Kernel-space :class:`Spectrum` of one tile, as ``decompose`` makes it (traceable)."""
    whitened = whitened_operator(make_operator(window, kernel_shape, "valid"), prior, None)
    data = observed.reshape(-1)
    # Rows W e_i: W^T as a (p, n) matrix. Only W is applied (the transpose's
    # convolution is slow once vmapped over images), and W^T W, W^T B follow.
    columns = whitened.apply(jnp.eye(whitened.num_latent, dtype=data.dtype))
    eigenvalues, basis = jnp.linalg.eigh(columns @ columns.T)
    projection = basis.T @ (columns @ data)
    spectrum = kernel_space_spectrum(
        eigenvalues, basis, projection, data, lambda coeff: coeff @ columns
    )
    return whitened, spectrum


def _rounding(value: jax.Array) -> jax.Array:
    """Rounding error of an objective of size ``value`` (a sum of many float64 terms)."""
    return 64 * jnp.finfo(jnp.float64).eps * (1.0 + jnp.abs(value))


def _newton(objective, x0: jax.Array):
    """Damped (saddle-free) Newton from ``x0``.

    Returns x, the objective, its gradient, the next Newton step and the least
    curvature there.
    """
    grad, hess = jax.grad(objective), jax.hessian(objective)
    alphas = 0.5 ** jnp.arange(LINE_SEARCH, dtype=x0.dtype)

    def direction(x):
        g, h = grad(x), hess(x)
        curvature, vectors = jnp.linalg.eigh(0.5 * (h + h.T))
        # |eigenvalues|: a descent direction where the curvature is not positive.
        floor = jnp.maximum(jnp.abs(curvature), 1e-10 * (1.0 + jnp.max(jnp.abs(curvature))))
        delta = -vectors @ ((vectors.T @ g) / floor)
        return g, delta, curvature.min()

    def step(x, _):
        _, delta, _ = direction(x)
        delta = delta * jnp.minimum(1.0, MAX_STEP / (jnp.max(jnp.abs(delta)) + 1e-300))
        candidates = x + alphas[:, None] * delta
        values = jax.vmap(objective)(candidates)
        # Uphill by no more than rounding: near the optimum the decrease of a
        # Newton step is below the objective's rounding error, and refusing it
        # would stall the last digits.
        current = objective(x)
        accept = jnp.isfinite(values) & (values <= current + _rounding(current))
        first = jnp.argmax(accept)  # the longest step that does not go uphill
        return jnp.where(accept[first], candidates[first], x), None

    x, _ = jax.lax.scan(step, x0, None, length=NEWTON_STEPS)
    g, delta, curvature = direction(x)
    return x, objective(x), g, delta, curvature


def _best_start(objective, starts: jax.Array):
    """Newton from every start; the lowest objective wins (as fit's L-BFGS starts)."""
    x, f, g, delta, curvature = jax.vmap(partial(_newton, objective))(starts)
    f = jnp.where(jnp.isfinite(f), f, jnp.inf)
    # Starts that reached the same optimum tie within rounding: keep the one
    # with the smallest gradient among them.
    tied = f <= jnp.min(f) + _rounding(jnp.min(f))
    best = jnp.argmin(jnp.where(tied, jnp.max(jnp.abs(g), axis=1), jnp.inf))
    converged = (
        jnp.isfinite(f[best])
        & (jnp.max(jnp.abs(g[best])) <= GRAD_TOL)
        & (jnp.max(jnp.abs(delta[best])) <= STEP_TOL)
        & (curvature[best] > 0)
    )
    return x[best], converged, jnp.max(jnp.abs(g[best]))


def _draw_kernels(plan: _Plan, whitened, spectrum, observed, keys, sigma, scale):
    """Kernel draws in fit's blocks (one key per block); sigma, scale: (blocks, batch)."""
    prior = plan.prior.value

    def block(key, sigma_block, scale_block):
        latent = conditional_draws(key, spectrum, whitened, observed, sigma_block, scale_block)
        return scale_block[:, None, None] * prior.to_kernel(latent)

    kernels = jax.vmap(block)(keys, sigma, scale)
    return kernels.reshape((-1,) + tuple(plan.kernel_shape))


def _blocks(values: jax.Array, num_batches: int, batch: int) -> jax.Array:
    """(total,) per-draw values padded by repeating the last, as (blocks, batch)."""
    padded = jnp.concatenate([values, jnp.repeat(values[-1:], num_batches * batch - values.size)])
    return padded.reshape(num_batches, batch)


@partial(jax.jit, static_argnums=0)
def _map_group(plan: _Plan, windows, observed, starts, seeds):
    """'map' for a group: spectra, type-II ML by Newton, exact draws, all vmapped."""
    prior = plan.prior.value
    num_batches, batch = draw_layout(plan.num_samples)

    def one(window, data, tile_starts, seed):
        whitened, spectrum = _spectrum(prior, plan.kernel_shape, window, data)

        def objective(x):  # x = log(sigma, s), as fit's optimiser
            return -log_marginal_likelihood(spectrum, jnp.exp(x[0]), jnp.exp(x[1]))

        x, converged, grad_norm = _best_start(objective, tile_starts)
        sigma, scale = jnp.exp(x[0]), jnp.exp(x[1])
        # fit: key -> (draw key, probe key); the draw key split into one per block.
        rng_key, _ = jax.random.split(jax.random.PRNGKey(seed))
        keys = jax.random.split(rng_key, num_batches)
        kernels = _draw_kernels(
            plan, whitened, spectrum, data, keys,
            jnp.full((num_batches, batch), sigma), jnp.full((num_batches, batch), scale),
        )  # fmt: skip
        return kernels[: plan.num_samples], sigma, scale, spectrum.eigenvalues, converged, grad_norm

    return jax.vmap(one)(windows, observed, starts, seeds)


def _potential(spectrum, scales, x):
    """The collapsed model's potential at unconstrained ``x`` (sites in ``_SITES`` order)."""
    params = {name: x[i] for i, name in enumerate(_SITES)}
    return potential_energy(collapsed_model, (spectrum, scales), _MODEL_KWARGS, params)


@partial(jax.jit, static_argnums=0)
def _exact_modes(plan: _Plan, windows, observed, scales, starts, seeds):
    """'exact', stage 1: spectra, posterior mode of the potential by Newton, its Hessian."""
    prior = plan.prior.value

    def one(window, data, tile_scales, tile_starts, seed):
        _, spectrum = _spectrum(prior, plan.kernel_shape, window, data)
        scales_tuple = HyperScales(tile_scales[0], tile_scales[1])
        objective = partial(_potential, spectrum, scales_tuple)
        x, converged, grad_norm = _best_start(objective, tile_starts)
        # fit: key -> (rng, probe); rng -> (rng, hyper); hyper -> (init, draw).
        rng_key, _ = jax.random.split(jax.random.PRNGKey(seed))
        rng_key, hyper_key = jax.random.split(rng_key)
        _, draw_key = jax.random.split(hyper_key)
        return spectrum, x, jax.hessian(objective)(x), converged, grad_norm, rng_key, draw_key

    return jax.vmap(one)(windows, observed, scales, starts, seeds)


@jax.jit
def _exact_grid(spectra, scales, points):
    """'exact', stage 2: log density at every tile's grid points (G, cells)."""

    def one(spectrum, tile_scales, tile_points):
        objective = partial(_potential, spectrum, HyperScales(tile_scales[0], tile_scales[1]))
        return -jax.vmap(objective)(tile_points)

    return jax.vmap(one)(spectra, scales, points)


@partial(jax.jit, static_argnums=0)
def _exact_draws(plan: _Plan, windows, observed, spectra, scales, unconstrained, rng_keys):
    """'exact', stage 3: constrain the grid draws, exact kernel draws at each pair."""
    prior = plan.prior.value
    total = plan.num_chains * plan.num_samples
    num_batches, batch = draw_layout(total)

    def one(window, data, spectrum, tile_scales, tile_unconstrained, rng_key):
        whitened = whitened_operator(make_operator(window, plan.kernel_shape, "valid"), prior, None)
        args = (spectrum, HyperScales(tile_scales[0], tile_scales[1]))

        def constrain(x):
            params = {name: x[i] for i, name in enumerate(_SITES)}
            return constrain_fn(collapsed_model, args, _MODEL_KWARGS, params)

        values = jax.vmap(constrain)(tile_unconstrained)
        sigma, scale = values["noise_sigma"], values["kernel_scale"]
        keys = jax.random.split(rng_key, num_batches)
        kernels = _draw_kernels(
            plan, whitened, spectrum, data, keys,
            _blocks(sigma, num_batches, batch), _blocks(scale, num_batches, batch),
        )  # fmt: skip
        return kernels[:total], sigma, scale

    return jax.vmap(one)(windows, observed, spectra, scales, unconstrained, rng_keys)


# --- host side ------------------------------------------------------------------


# Group sizes compiled in this process, per plan and shapes.
_COMPILED_SIZES: dict[Any, set[int]] = {}


def _padded_size(key, count: int) -> int:
    """Size a group is padded to (by repeating its last tile).

    The smallest size compiled already that holds ``count`` tiles, if any is at
    most 4x larger (a batch's last, short group reuses the program of the full
    ones: padding costs microseconds per tile, a compilation seconds); else
    the next power of two, so a few sizes cover every count.
    """
    sizes = _COMPILED_SIZES.setdefault(key, set())
    fitting = [size for size in sizes if count <= size <= 4 * count]
    size = min(fitting) if fitting else 1 << max(0, count - 1).bit_length()
    sizes.add(size)
    return size


def _fit_group(plan: _Plan, tasks: list, scales: list[HyperScales]) -> list[dict | None]:
    """Fit one group; per tile a dict of draws and facts, or None (fit it separately)."""
    count = len(tasks)
    size = _padded_size((plan, tasks[0].A[0].shape, tasks[0].B[0].shape), count)
    index = list(range(count)) + [count - 1] * (size - count)  # pad: repeat the last tile
    windows = jnp.asarray(np.stack([tasks[i].A[0] for i in index]))
    observed = jnp.asarray(np.stack([tasks[i].B[0] for i in index]))
    seeds = jnp.asarray([tasks[i].seed for i in index], dtype=jnp.int64)
    factors = np.asarray(START_FACTORS)
    out: list[dict | None] = []
    if plan.method == "map":
        # fit's starts: log(noise * f, kernel / f).
        starts = np.stack(
            [
                np.log(np.stack([scales[i].noise * factors, scales[i].kernel / factors], 1))
                for i in index
            ]
        )
        kernels, sigma, scale, eigenvalues, converged, grad_norm = jax.device_get(
            _map_group(plan, windows, observed, jnp.asarray(starts), seeds)
        )
        for t in range(count):
            if not converged[t]:
                out.append(None)
                continue
            out.append(
                dict(
                    kernels=kernels[t][None],
                    sigma=np.full((1, plan.num_samples), float(sigma[t])),
                    scale=np.full((1, plan.num_samples), float(scale[t])),
                    eigenvalues=eigenvalues[t],
                    grad_norm=float(grad_norm[t]),
                )
            )
        return out

    # 'exact': sites (kernel_scale, noise_sigma); the same three starts.
    starts = np.stack(
        [
            np.log(np.stack([scales[i].kernel / factors, scales[i].noise * factors], 1))
            for i in index
        ]
    )
    scale_array = jnp.asarray([[scales[i].noise, scales[i].kernel] for i in index])
    spectra, modes, hessians, converged, grad_norm, rng_keys, draw_keys = _exact_modes(
        plan, windows, observed, scale_array, jnp.asarray(starts), seeds
    )
    modes, hessians, converged = np.asarray(modes), np.asarray(hessians), np.asarray(converged)
    draw_keys = np.asarray(draw_keys)
    mesh, width = grid_mesh(2, HALF_WIDTH)
    axes = np.zeros((size, 2, 2))
    usable = converged.copy()
    for t in range(size):
        # NumPy's eigh per tile, as the grid sampler: the same axes, signs included.
        curvature, vectors = np.linalg.eigh(0.5 * (hessians[t] + hessians[t].T))
        if np.all(np.isfinite(curvature)) and curvature.min() > 0:
            axes[t] = vectors / np.sqrt(curvature)
        else:
            usable[t], axes[t] = False, np.eye(2)
    points = modes[:, None, :] + mesh @ np.transpose(axes, (0, 2, 1))
    log_density = np.asarray(_exact_grid(spectra, scale_array, jnp.asarray(points)))
    total = plan.num_chains * plan.num_samples
    unconstrained = np.zeros((size, total, 2))
    for t in range(count):
        if usable[t]:
            # As the grid sampler; a tile whose grid edge holds mass is left to
            # the separate fit, which widens its grid.
            weights = grid_weights(log_density[t], mesh, HALF_WIDTH, width)
            if weights is None:
                usable[t] = False
            else:
                unconstrained[t] = grid_sample(
                    weights, mesh, width, modes[t], axes[t], draw_keys[t], total
                )
    kernels, sigma, scale = jax.device_get(
        _exact_draws(
            plan, windows, observed, spectra, scale_array, jnp.asarray(unconstrained), rng_keys
        )
    )
    eigenvalues = np.asarray(spectra.eigenvalues)
    shape = (plan.num_chains, plan.num_samples)
    for t in range(count):
        if not usable[t]:
            out.append(None)
            continue
        out.append(
            dict(
                kernels=kernels[t].reshape(shape + tuple(plan.kernel_shape)),
                sigma=sigma[t].reshape(shape),
                scale=scale[t].reshape(shape),
                eigenvalues=eigenvalues[t],
                grad_norm=float(grad_norm[t]),
            )
        )
    return out


def _posterior(plan: _Plan, fitted: dict, dtype) -> KernelPosterior:
    """The tile's result as fit would return it (for the tile file and the warnings)."""
    prior = plan.prior.value
    ratio = float(np.median(fitted["scale"].reshape(-1) ** 2 / fitted["sigma"].reshape(-1) ** 2))
    g = fitted["eigenvalues"]
    diagnostics = {
        "solver": "dense",
        "space": "kernel",
        # As run_exact: the trace of the hat matrix at the median s^2 / sigma^2.
        "effective_parameters": float(np.sum(ratio * g / (1.0 + ratio * g))),
        "num_latent": int(prior.num_latent),
    }
    return KernelPosterior(
        kernel_draws=np.asarray(fitted["kernels"], dtype=dtype),
        noise_sigma_draws=fitted["sigma"],
        kernel_scale_draws=fitted["scale"],
        method=plan.method,
        prior=prior.name,
        mode="valid",
        diagnostics=diagnostics,
    )


def _group_tasks(tasks: Sequence) -> tuple[list[tuple[_Plan, list[int]]], dict[int, str]]:
    """Qualifying tiles grouped by plan and shapes; the others with their reason."""
    groups: dict[Any, tuple[_Plan, list[int]]] = {}
    separate: dict[int, str] = {}
    for position, task in enumerate(tasks):
        plan, reason = _plan(task)
        if plan is None:
            separate[position] = reason
            continue
        key = (plan, task.A[0].shape, task.B[0].shape, np.dtype(task.options["draws_dtype"]).str)
        groups.setdefault(key, (plan, []))[1].append(position)
    return list(groups.values()), separate


def fit_tile_batch(tasks: Sequence) -> list:
    """Fit several tiles (one Dask task): equal-shape groups vmapped, the rest separately.

    Parameters
    ----------
    tasks : sequence of TileTask

    Returns
    -------
    list of xarray.Dataset
        One per task, in order, exactly as :func:`~bayeskernel.tiles.task.fit_tile`
        makes them, with the attribute ``fit_route`` (``'batched'`` or
        ``'separate'``); separate tiles in batched mode also say why
        (``batch_fallback``). ``fit_seconds`` of a batched tile is its group's
        time divided by the group's tiles.

    Raises
    ------
    Exception
        A tile whose separate fit fails raises as in ``fit_tile``, naming the tile.
    """
    from bayeskernel.api import PriorDominatedWarning
    from bayeskernel.diagnostics import prior_dominance_warnings

    results: list = [None] * len(tasks)
    groups, separate = _group_tasks(tasks)
    for plan, positions in groups:
        start = time.perf_counter()
        members, scales = [], []
        for position in positions:
            task = tasks[position]
            try:  # as fit validates; a failing tile is left to fit, which raises
                a, b, _, _ = check_fit_inputs(task.A[0], task.B[0], task.kernel_shape, "valid")
            except (ValueError, TypeError):
                separate[position] = "inputs rejected by fit"
                continue
            given = task.options.get("hyper_scales")
            scales.append(
                check_hyper_scales(given)
                if given is not None
                else default_hyper_scales(a, b, plan.kernel_shape)
            )
            members.append(position)
        if not members:
            continue
        group = [tasks[p] for p in members]
        try:
            with jax.enable_x64(True):
                fitted = _fit_group(plan, group, scales)
        except Exception as error:  # noqa: BLE001 - the separate fits still run (and raise)
            fitted = [None] * len(group)
            failure = f"batched route failed: {type(error).__name__}: {error}"[:200]
        else:
            failure = "hyperparameters did not converge"
        seconds = (time.perf_counter() - start) / len(members)
        for position, task, tile in zip(members, group, fitted, strict=True):
            if tile is None:
                separate[position] = failure
                continue
            posterior = _posterior(plan, tile, task.options["draws_dtype"])
            for text in prior_dominance_warnings(posterior):
                warnings.warn(PriorDominatedWarning(text), stacklevel=2)
            results[position] = tile_dataset(
                task, posterior, seconds,
                fit_route="batched", batch_tiles=len(members), newton_grad_norm=tile["grad_norm"],
            )  # fmt: skip
    for position in sorted(separate):
        dataset = fit_tile(tasks[position])
        dataset.attrs.update(fit_route="separate", batch_fallback=separate[position])
        results[position] = dataset
    return results
