"""Exact posterior of the linear-Gaussian model, hyperparameters collapsed.

Write ``W = M H T`` for the whitened forward map (``T`` the prior's whitening
map, ``H`` the blur, ``M`` the restriction to observed pixels), so that
``B = s W z + e`` with ``z ~ N(0, I_p)`` and ``e ~ N(0, sigma^2 I_n)``.

One symmetric eigendecomposition, of ``W^T W`` (p x p) or ``W W^T`` (n x n),
whichever is smaller, makes everything else cheap:

* the marginal likelihood ``log N(B | 0, sigma^2 I + s^2 W W^T)`` costs O(r)
  per evaluation (``r = min(n, p)``), so NUTS on ``(sigma, s)`` is fast and
  exact;
* kernel draws given ``(sigma, s)`` are exact: in kernel space by rotating
  independent Gaussians, in data space by Matheron's rule
  ``z = z0 + s W^T (sigma^2 I + s^2 W W^T)^{-1} (B - s W z0 - e)``.

No iterative solver, so no tolerance: the draws are exact to rounding.
"""

from __future__ import annotations

import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.optimize
from numpyro.infer import MCMC, NUTS

from bayeskernel.forward import ConvolutionOperator
from bayeskernel.infer.common import constant_draws
from bayeskernel.model import HyperScales, collapsed_model
from bayeskernel.posterior import KernelPosterior
from bayeskernel.priors import LinearGaussianPrior

__all__ = [
    "Spectrum",
    "WhitenedOperator",
    "conditional_draws",
    "decompose",
    "log_marginal_likelihood",
    "run_exact",
]

# Largest dense eigenproblem we attempt: 16,000^2 float64 is 2 GB and about
# four minutes of LAPACK dsyevd on two cores (benchmarks/bench_exact.py).
DENSE_LIMIT = 16_000
# Columns of the Gram matrix built per batched operator call (memory vs speed).
_GRAM_BATCH = 128
# Kernel draws made per batched call.
_DRAW_BATCH = 64


class WhitenedOperator(NamedTuple):
    """``W z = M H T z`` and its transpose, on flat vectors with batch axes."""

    apply: callable
    transpose: callable
    num_latent: int
    num_observed: int


def whitened_operator(
    operator: ConvolutionOperator | tuple,
    prior: LinearGaussianPrior,
    mask: jax.Array | tuple | None,
) -> WhitenedOperator:
    """Compose prior map, blur and observation mask into ``W`` and ``W^T``.

    With several image pairs (tuples of operators and masks), ``W`` stacks
    the pairs' observed pixels one after the other and ``W^T`` sums the pairs'
    transposes: one shared kernel, one noise sd.
    """
    operators = operator if isinstance(operator, tuple) else (operator,)
    masks = mask if isinstance(mask, tuple) else (mask,) * len(operators)
    indices = tuple(
        jnp.arange(int(np.prod(op.output_shape)))
        if m is None
        else jnp.asarray(np.flatnonzero(np.asarray(m)))
        for op, m in zip(operators, masks, strict=True)
    )
    shapes = tuple(op.output_shape for op in operators)
    sizes = [int(i.size) for i in indices]
    splits = tuple(np.cumsum(sizes)[:-1].tolist())

    # Operators and indices are jit arguments, not baked-in constants: a large
    # image's FFT would otherwise be embedded in the compiled program.
    @jax.jit
    def apply(ops, idxs, latent):
        kernel = prior.to_kernel(latent)
        parts = []
        for op, idx in zip(ops, idxs, strict=True):
            blurred = op(kernel)
            parts.append(blurred.reshape(blurred.shape[:-2] + (-1,))[..., idx])
        return jnp.concatenate(parts, axis=-1)

    @jax.jit
    def transpose(ops, idxs, values):
        total = 0.0
        for op, idx, shape, part in zip(
            ops, idxs, shapes, jnp.split(values, splits, axis=-1), strict=True
        ):
            full = jnp.zeros(part.shape[:-1] + (int(np.prod(shape)),), part.dtype)
            full = full.at[..., idx].set(part).reshape(part.shape[:-1] + shape)
            total = total + op.adjoint(full)
        return prior.to_latent_transpose(total)

    return WhitenedOperator(
        partial(apply, operators, indices),
        partial(transpose, operators, indices),
        prior.num_latent,
        sum(sizes),
    )


def observed_vector(observed, mask) -> jax.Array:
    """The observed pixels of one or several ``B`` as one flat vector (``W``'s order)."""
    observed = observed if isinstance(observed, tuple) else (observed,)
    masks = mask if isinstance(mask, tuple) else (mask,) * len(observed)
    parts = [
        b.reshape(-1) if m is None else b.reshape(-1)[jnp.asarray(np.flatnonzero(np.asarray(m)))]
        for b, m in zip(observed, masks, strict=True)
    ]
    return jnp.concatenate(parts)


class Spectrum(NamedTuple):
    """What the eigendecomposition leaves for the marginal likelihood and draws.

    Attributes
    ----------
    eigenvalues : (r,) ndarray
        Eigenvalues ``g`` of ``W^T W`` or ``W W^T`` (clipped at zero).
    data_projection_sq : (r,) ndarray
        Squared coordinates ``d^2`` of ``B`` along the data-space eigenvectors.
    residual_energy : float
        ``||B||^2 - sum(d^2)``: the part of ``B`` no kernel can explain.
    basis : (p, r) or (n, r) ndarray
        Eigenvectors (kernel space ``V`` or data space ``Y``).
    latent_projection : (r,) ndarray or None
        ``V^T W^T B`` (kernel space only).
    space : {'kernel', 'data'}
    num_observed : int
    """

    eigenvalues: np.ndarray
    data_projection_sq: np.ndarray
    residual_energy: float
    basis: np.ndarray
    latent_projection: np.ndarray | None
    space: str
    num_observed: int


def _gram(func, size: int, dtype) -> np.ndarray:
    """Dense matrix of a symmetric linear map given on batches of vectors."""
    out = np.empty((size, size))
    for start in range(0, size, _GRAM_BATCH):
        stop = min(size, start + _GRAM_BATCH)
        unit = (
            jnp.zeros((stop - start, size), dtype)
            .at[jnp.arange(stop - start), jnp.arange(start, stop)]
            .set(1.0)
        )
        out[start:stop] = np.asarray(func(unit))
    # Symmetric to rounding; LAPACK's dsyevd reads only the lower triangle, so no
    # symmetrised copy (two 0.8 GB temporaries on the motivating case).
    return out


def decompose(whitened: WhitenedOperator, observed: jax.Array) -> Spectrum:
    """Eigendecompose ``W^T W`` or ``W W^T`` (the smaller) for the data ``B``.

    Raises
    ------
    MemoryError
        If both sides exceed :data:`DENSE_LIMIT`.
    """
    p, n = whitened.num_latent, whitened.num_observed
    if min(p, n) > DENSE_LIMIT:
        raise MemoryError(
            f"the exact route needs a dense {min(p, n)}x{min(p, n)} eigendecomposition "
            f"(limit {DENSE_LIMIT}); use method='nuts' or 'svi', fewer kernel entries, "
            "or a structured prior"
        )
    flat = observed.reshape(-1) if observed.ndim == 2 else observed
    data = np.asarray(flat, dtype=np.float64)
    dtype = jnp.result_type(float)
    if p <= n:
        gram = _gram(lambda e: whitened.transpose(whitened.apply(e)), p, dtype)
        eigenvalues, basis = scipy.linalg.eigh(gram, driver="evd", overwrite_a=True)
        eigenvalues = np.clip(eigenvalues, 0.0, None)
        latent_projection = basis.T @ np.asarray(whitened.transpose(jnp.asarray(data)))
        # d_j = c_j / sqrt(g_j); directions with g ~ 0 carry no data.
        tiny = eigenvalues <= eigenvalues.max() * 1e-12
        projection_sq = np.where(tiny, 0.0, latent_projection**2 / np.where(tiny, 1, eigenvalues))
        # Residual of the least-squares fit, computed directly (no cancellation).
        coeff = basis @ np.where(tiny, 0.0, latent_projection / np.where(tiny, 1, eigenvalues))
        residual = data - np.asarray(whitened.apply(jnp.asarray(coeff)))
        return Spectrum(
            eigenvalues, projection_sq, float(residual @ residual), basis,
            latent_projection, "kernel", n,
        )  # fmt: skip
    gram = _gram(lambda e: whitened.apply(whitened.transpose(e)), n, dtype)
    eigenvalues, basis = scipy.linalg.eigh(gram, driver="evd", overwrite_a=True)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    projection = basis.T @ data
    return Spectrum(eigenvalues, projection**2, 0.0, basis, None, "data", n)


def log_marginal_likelihood(spectrum: Spectrum, noise_sigma, kernel_scale):
    """``log p(B | sigma, s)`` with the kernel integrated out; O(r), jax-traceable."""
    g = jnp.asarray(spectrum.eigenvalues)
    d2 = jnp.asarray(spectrum.data_projection_sq)
    n, r = spectrum.num_observed, g.shape[0]
    var_noise = noise_sigma**2
    total = var_noise + kernel_scale**2 * g
    log_det = (n - r) * jnp.log(var_noise) + jnp.sum(jnp.log(total))
    quad = spectrum.residual_energy / var_noise + jnp.sum(d2 / total)
    return -0.5 * (n * jnp.log(2 * jnp.pi) + log_det + quad)


def conditional_draws(
    rng_key: jax.Array,
    spectrum: Spectrum,
    whitened: WhitenedOperator,
    observed: jax.Array,
    noise_sigma: jax.Array,
    kernel_scale: jax.Array,
) -> jax.Array:
    """Exact draws of the latent ``z`` given ``(sigma, s)``, one per hyperparameter pair.

    Parameters
    ----------
    noise_sigma, kernel_scale : (b,) arrays

    Returns
    -------
    (b, p) array
    """
    basis = jnp.asarray(spectrum.basis)
    g = jnp.asarray(spectrum.eigenvalues)
    sigma2 = (noise_sigma**2)[:, None]
    scale = kernel_scale[:, None]
    batch = noise_sigma.shape[0]
    if spectrum.space == "kernel":
        # Posterior of u = V^T z: independent, precision 1 + s^2 g / sigma^2.
        c = jnp.asarray(spectrum.latent_projection)
        total = sigma2 + scale**2 * g
        mean = scale * c / total
        sd = jnp.sqrt(sigma2 / total)
        xi = jax.random.normal(rng_key, (batch, g.shape[0]))
        return (mean + sd * xi) @ basis.T
    key_prior, key_noise = jax.random.split(rng_key)
    flat = observed.reshape(-1)
    z0 = jax.random.normal(key_prior, (batch, whitened.num_latent))
    noise = jnp.sqrt(sigma2) * jax.random.normal(key_noise, (batch, whitened.num_observed))
    residual = flat - scale * whitened.apply(z0) - noise
    weights = (residual @ basis) / (sigma2 + scale**2 * g)
    return z0 + scale * whitened.transpose(weights @ basis.T)


def _optimise_hyperparameters(spectrum: Spectrum, scales: HyperScales, fixed: dict) -> dict:
    """Type-II maximum likelihood of the free hyperparameters (log scale, L-BFGS)."""
    names = [k for k in ("noise_sigma", "kernel_scale") if fixed[k] is None]

    def unpack(x):
        values = dict(fixed)
        values.update({k: jnp.exp(x[i]) for i, k in enumerate(names)})
        return values

    def objective(x):
        v = unpack(x)
        return -log_marginal_likelihood(spectrum, v["noise_sigma"], v["kernel_scale"])

    value_and_grad = jax.jit(jax.value_and_grad(objective))
    reference = {"noise_sigma": scales.noise, "kernel_scale": scales.kernel}
    best = None
    # A small grid of starts guards against the (rare) second mode in which the
    # kernel absorbs the noise.
    for factor in (0.1, 1.0, 10.0):
        x0 = np.log([reference[k] * (factor if k == "noise_sigma" else 1 / factor) for k in names])
        result = scipy.optimize.minimize(
            lambda x: tuple(np.asarray(t, dtype=float) for t in value_and_grad(jnp.asarray(x))),
            x0,
            jac=True,
            method="L-BFGS-B",
        )
        if best is None or result.fun < best.fun:
            best = result
    return {k: float(v) for k, v in unpack(best.x).items()}


def run_exact(
    operator: ConvolutionOperator,
    prior: LinearGaussianPrior,
    scales: HyperScales,
    observed: jax.Array,
    rng_key: jax.Array,
    *,
    mask: jax.Array | None = None,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
    noise_sigma: float | None = None,
    kernel_scale: float | None = None,
    optimise: bool = False,
    progress_bar: bool = True,
    draws_dtype=np.float32,
) -> KernelPosterior:
    """Collapsed-hyperparameter posterior with exact kernel draws.

    ``optimise=False``: NUTS on the marginal posterior of ``(sigma, s)`` (the
    NumPyro model :func:`bayeskernel.model.collapsed_model`), then one exact
    kernel draw per hyperparameter draw. ``optimise=True`` (``method='map'``):
    type-II maximum likelihood for ``(sigma, s)``, then ``num_samples`` exact
    draws at those values (intervals that ignore hyperparameter uncertainty).
    """
    timings = {}
    start = time.perf_counter()
    whitened = whitened_operator(operator, prior, mask)
    flat = observed_vector(observed, mask)
    spectrum = decompose(whitened, flat)
    timings["seconds_decomposition"] = time.perf_counter() - start

    start = time.perf_counter()
    fixed = {"noise_sigma": noise_sigma, "kernel_scale": kernel_scale}
    sample_stats = {}
    if optimise or (noise_sigma is not None and kernel_scale is not None):
        values = _optimise_hyperparameters(spectrum, scales, fixed) if optimise else fixed
        num_chains = 1
        sigma = constant_draws(values["noise_sigma"], 1, num_samples)
        scale = constant_draws(values["kernel_scale"], 1, num_samples)
    else:
        model = partial(
            collapsed_model,
            partial(log_marginal_likelihood, spectrum),
            scales,
            noise_sigma=noise_sigma,
            kernel_scale=kernel_scale,
        )
        mcmc = MCMC(
            NUTS(model),
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            chain_method="sequential",
            progress_bar=progress_bar,
        )
        rng_key, mcmc_key = jax.random.split(rng_key)
        mcmc.run(mcmc_key, extra_fields=("diverging",))
        samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
        sample_stats["diverging"] = np.asarray(
            mcmc.get_extra_fields(group_by_chain=True)["diverging"]
        )
        sigma = samples.get(
            "noise_sigma", constant_draws(noise_sigma or 0, num_chains, num_samples)
        )
        scale = samples.get(
            "kernel_scale", constant_draws(kernel_scale or 0, num_chains, num_samples)
        )
    timings["seconds_hyperparameters"] = time.perf_counter() - start

    start = time.perf_counter()
    kernels = _kernel_draws(rng_key, spectrum, whitened, flat, prior, sigma, scale, draws_dtype)
    timings["seconds_kernel_draws"] = time.perf_counter() - start
    timings["seconds"] = sum(timings.values())
    return KernelPosterior(
        kernel_draws=kernels,
        noise_sigma_draws=sigma,
        kernel_scale_draws=scale,
        method="map" if optimise else "exact",
        prior=prior.name,
        mode=(operator[0] if isinstance(operator, tuple) else operator).mode,
        diagnostics={
            **timings,
            "space": spectrum.space,
            "rank": int(np.sum(spectrum.eigenvalues > spectrum.eigenvalues.max() * 1e-12)),
            "dense_size": int(spectrum.eigenvalues.shape[0]),
        },
        sample_stats=sample_stats,
    )


def _kernel_draws(rng_key, spectrum, whitened, flat, prior, sigma, scale, dtype) -> np.ndarray:
    """One exact kernel draw per ``(chain, draw)`` hyperparameter pair, batched."""
    chains, draws = sigma.shape
    sigma_flat, scale_flat = sigma.reshape(-1), scale.reshape(-1)
    out = np.empty((chains * draws,) + tuple(prior.kernel_shape), dtype=dtype)

    # Large arrays travel as jit arguments rather than compiled-in constants.
    arrays = (spectrum.basis, spectrum.eigenvalues, spectrum.latent_projection, flat)

    @jax.jit
    def draw_block(key, sig, sca, arrays):
        basis, eigenvalues, latent_projection, data = arrays
        local = spectrum._replace(
            basis=basis, eigenvalues=eigenvalues, latent_projection=latent_projection
        )
        latent = conditional_draws(key, local, whitened, data, sig, sca)
        return sca[:, None, None] * prior.to_kernel(latent)

    keys = jax.random.split(rng_key, (chains * draws + _DRAW_BATCH - 1) // _DRAW_BATCH)
    for i, start in enumerate(range(0, chains * draws, _DRAW_BATCH)):
        stop = min(chains * draws, start + _DRAW_BATCH)
        block = draw_block(
            keys[i],
            jnp.asarray(sigma_flat[start:stop]),
            jnp.asarray(scale_flat[start:stop]),
            arrays,
        )
        out[start:stop] = np.asarray(block)
    return out.reshape((chains, draws) + tuple(prior.kernel_shape))
