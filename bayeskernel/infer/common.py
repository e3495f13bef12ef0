"""Pieces shared by the inference routes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayeskernel.priors import LinearGaussianPrior

__all__ = [
    "assemble_draws",
    "constant_draws",
    "kernels_from_sites",
    "latent_to_kernels",
    "numpy_generator",
    "prng_key",
]


def prng_key(seed) -> jax.Array:
    """``fit``'s random key from its ``seed``.

    An integer in ``[0, 2**64)`` (built with 64-bit integers, so seeds of 2**32
    and more stay distinct); a JAX key, raw (``jax.random.PRNGKey``) or typed
    (``jax.random.key``); or a :class:`numpy.random.Generator`, from which one
    integer seed is drawn (as scikit-image takes ``rng``).

    Raises
    ------
    ValueError, TypeError
        Anything else, with a one-line message naming ``seed``.
    """
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(2**63))
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"seed must be an integer or a JAX key, got {seed!r}")
    if isinstance(seed, (int, np.integer)):
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        with jax.enable_x64(True):
            return jax.random.PRNGKey(np.uint64(seed))
    if isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
        seed = jax.random.key_data(seed)
    array = np.asarray(seed) if isinstance(seed, (jax.Array, np.ndarray)) else None
    if array is None or array.dtype != np.uint32 or array.shape != (2,):
        raise TypeError(
            "seed must be an integer, a JAX key (jax.random.PRNGKey or jax.random.key) or "
            f"a numpy.random.Generator, got {type(seed).__name__}"
        )
    return jnp.asarray(array)


def numpy_generator(key: jax.Array) -> np.random.Generator:
    """NumPy's generator seeded from a JAX key: same seed, same draws."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


# Kernels are made from latent draws in batches of this many to bound memory.
_BATCH = 64


def latent_to_kernels(
    prior: LinearGaussianPrior,
    latent: np.ndarray,
    scale: np.ndarray | None,
    dtype=np.float32,
) -> np.ndarray:
    """Map ``(chains, draws, num_latent)`` latents to ``(chains, draws, P, Q)`` kernels.

    ``scale`` multiplies each draw (non-centred parameterisation); ``None``
    leaves it out (centred).
    """
    chains, draws = latent.shape[:2]
    flat = latent.reshape(chains * draws, -1)
    flat_scale = None if scale is None else np.broadcast_to(scale, (chains, draws)).reshape(-1)
    out = np.empty((chains * draws,) + tuple(prior.kernel_shape), dtype=dtype)
    to_kernel = jax.jit(prior.to_kernel)
    for start in range(0, flat.shape[0], _BATCH):
        block = to_kernel(jnp.asarray(flat[start : start + _BATCH]))
        block = np.asarray(block)
        if flat_scale is not None:
            block = block * flat_scale[start : start + _BATCH, None, None]
        out[start : start + _BATCH] = block
    return out.reshape((chains, draws) + tuple(prior.kernel_shape))


def constant_draws(value, chains: int, draws: int) -> np.ndarray:
    """A hyperparameter held fixed, as a ``(chains, draws)`` array."""
    return np.full((chains, draws), float(value))


def kernels_from_sites(prior, scales, samples: dict, dtype=np.float32) -> np.ndarray:
    """Replay a general prior's ``sample`` on ``(chains, draws)`` site values.

    Keeps memory bounded: kernels are rebuilt in batches rather than recorded
    as a deterministic site during sampling.
    """
    from numpyro import handlers

    names = [k for k in samples if k not in ("noise_sigma",)]
    chains, draws = samples[names[0]].shape[:2]
    flat = {
        k: np.asarray(samples[k]).reshape((chains * draws,) + samples[k].shape[2:]) for k in names
    }

    def one(values):
        with handlers.seed(rng_seed=0), handlers.substitute(data=values):
            return prior.sample(scales)

    replay = jax.jit(jax.vmap(one))
    out = np.empty((chains * draws,) + tuple(prior.kernel_shape), dtype=dtype)
    for start in range(0, chains * draws, _BATCH):
        block = {k: jnp.asarray(v[start : start + _BATCH]) for k, v in flat.items()}
        out[start : start + _BATCH] = np.asarray(replay(block))
    return out.reshape((chains, draws) + tuple(prior.kernel_shape))


def assemble_draws(prior, scales, samples, noise_sigma, kernel_scale, centered, dtype):
    """Kernel draws, scale, noise sd and named parameters from raw site draws.

    Shared by NUTS and SVI. For general priors the "kernel scale" reported is
    the prior's own ``kernel_scale`` site when it has one, else the
    root-mean-square entry of each draw (the meaning it has for Gaussian
    priors); the prior's other sites are kept as named parameters.
    """
    first = next(iter(samples.values()))
    chains, draws = first.shape[:2]
    sigma = samples.get("noise_sigma", constant_draws(noise_sigma or 0.0, chains, draws))
    if isinstance(prior, LinearGaussianPrior):
        scale = samples.get("kernel_scale", constant_draws(kernel_scale or 0.0, chains, draws))
        kernels = latent_to_kernels(
            prior, samples["kernel_latent"], None if centered else scale, dtype=dtype
        )
        return kernels, scale, sigma, {}
    kernels = kernels_from_sites(prior, scales, samples, dtype=dtype)
    scale = samples.get("kernel_scale")
    if scale is None:
        scale = np.sqrt(np.mean(kernels.astype(np.float64) ** 2, axis=(2, 3)))
    # Scalar sites are named parameters; vector sites (e.g. centre_offset) keep
    # their last axis. Latent vectors of whitened profiles are left out.
    parameters = {
        k: v for k, v in samples.items()
        if k not in ("noise_sigma", "kernel_scale")
        and not k.endswith("latent")
        and not k.startswith("background")
        and v.ndim <= 3
    }  # fmt: skip
    return kernels, scale, sigma, parameters
