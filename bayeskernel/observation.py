"""The data side of the linear model: observed pixels, their noise weights, a background.

One image pair is observed as

    B[i] = convolve2d(A, K, mode)[i] + sum_j X[i, j] beta[j] + e[i],
    e[i] ~ N(0, sigma^2 / w[i]),

over its observed pixels ``i``. ``w`` are relative noise weights (inverse
variance; 1 everywhere by default) and ``X`` a *background block*: the
monomials ``y^a x^b`` (``a + b <= degree``) of the pixel position normalised
to ``[-1, 1]`` across ``B``, with coefficients ``beta`` of their own for each
pair.

The exact route whitens the noise (rows times ``sqrt(w)``) and integrates the
background out under a broad Gaussian prior ``beta ~ N(0, tau^2 I)`` in the
limit of large ``tau``: the data are projected onto the complement of the
background's columns, ``P = I - Q Q^T`` with ``X_w = Q R`` (thin QR of the
weighted columns), and the kernel block sees ``P sqrt(w) B`` through
``P sqrt(w) H`` with ``n - k`` degrees of freedom. This is exact (REML's
identity), costs two thin products per operator call, and leaves the kernel
block's solvers (dense and Krylov) as they are. Given a kernel draw the
background coefficients are Gaussian,
``beta | K, sigma ~ N(R^{-1} Q^T r, sigma^2 (R^T R)^{-1})`` with ``r`` the
weighted residual, and :func:`draw_background` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BACKGROUND_PRIOR_SCALE",
    "PairObservation",
    "PairTerms",
    "background_design",
    "background_image",
    "background_samples",
    "background_terms",
    "background_transpose",
    "ccd_variance",
    "check_background",
    "draw_background",
    "log_likelihood_offset",
    "model_terms",
    "noise_weights",
    "observe",
]

# The background coefficients' prior sd, in units of the pair's rms(B): broad
# enough that the data decide (a sky level is at most of order B itself), and
# proper, so that log p(B) compares background degrees (with an Occam factor
# of about log(BACKGROUND_PRIOR_SCALE * rms(B) / posterior sd) per term).
BACKGROUND_PRIOR_SCALE = 10.0
MAX_BACKGROUND_DEGREE = 5


def ccd_variance(signal, gain: float, read_noise: float) -> np.ndarray:
    """The noise variance of a CCD or CMOS image: ``read_noise**2 + signal / gain``.

    Parameters
    ----------
    signal : (H, W) array_like
        Expected counts above bias, in ADU: ``B`` itself (its noise makes the
        map a little noisy, usually harmlessly), or a smoother model of it
        such as a first fit's prediction. Negative values count as 0.
    gain : float
        Electrons per ADU (> 0).
    read_noise : float
        Read noise in ADU (>= 0).

    Returns
    -------
    (H, W) ndarray
        For ``fit(..., variance=)``; NaN stays NaN (unobserved). With
        ``read_noise=0``, pixels of no signal get the smallest positive
        variance of the map instead of 0 (an infinite weight).
    """
    if not (np.isfinite(gain) and gain > 0):
        raise ValueError(f"gain must be a positive number (electrons per ADU), got {gain!r}")
    if not (np.isfinite(read_noise) and read_noise >= 0):
        raise ValueError(f"read_noise must be a number >= 0 (ADU), got {read_noise!r}")
    signal = np.asarray(signal, dtype=np.float64)
    variance = read_noise**2 + np.clip(signal, 0.0, None) / gain
    if read_noise == 0:
        # Pixels of no signal would get variance 0 (infinite weight).
        floor = np.nanmin(variance[variance > 0]) if (variance > 0).any() else 1.0
        variance = np.where(variance > 0, variance, floor)
    return np.where(np.isnan(signal), np.nan, variance)


def noise_weights(variance, weights, shapes) -> list[np.ndarray] | None:
    """Per image pair: inverse noise variances (0 where unobserved), or None if neither is given.

    Parameters
    ----------
    variance, weights : array_like, list of them, or None
        ``fit``'s arguments (at most one of them).
    shapes : list of (int, int)
        ``B``'s shape per pair.

    Returns
    -------
    list of (H, W) ndarray, or None
        One float64 map per pair, of its ``B``'s shape: ``1 / variance`` (0
        where the variance is NaN or inf), or ``weights`` as given. None when
        neither is given.

    Raises
    ------
    ValueError
        Both given, a wrong shape or count, a non-positive variance, a
        negative or non-finite weight, or a map that leaves no pixel observed.
    """
    if variance is not None and weights is not None:
        raise ValueError("give variance= or weights=, not both (weights are 1 / variance)")
    name, given = ("variance", variance) if variance is not None else ("weights", weights)
    if given is None:
        return None
    several = len(shapes) > 1
    if several != isinstance(given, (list, tuple)) or (several and len(given) != len(shapes)):
        expected = f"a list of {len(shapes)} arrays" if several else "one array"
        raise ValueError(f"{name} must be {expected}, as B is")
    out = []
    for index, (value, shape) in enumerate(zip(given if several else [given], shapes)):
        label = f"{name}[{index}]" if several else name
        array = np.ma.filled(np.ma.asarray(value, dtype=np.float64), np.nan)
        if array.shape != tuple(shape):
            raise ValueError(f"{label} must have B's shape {tuple(shape)}, got {array.shape}")
        finite = np.isfinite(array)
        if name == "variance":
            if (array[finite] <= 0).any():
                raise ValueError(
                    f"{label} must be positive where finite (NaN or inf: unobserved), "
                    f"got a minimum of {array[finite].min():.3g}"
                )
            w = np.where(finite, 1.0 / np.where(finite, array, 1.0), 0.0)
        else:
            if not finite.all() or (array < 0).any():
                raise ValueError(f"{label} must be finite and >= 0 (0: unobserved)")
            w = array
        if not (w > 0).any():
            raise ValueError(f"{label} leaves no observed pixel (every weight is 0)")
        out.append(w)
    return out


def check_background(background) -> int | None:
    """``None`` or a polynomial degree ``0 .. MAX_BACKGROUND_DEGREE``.

    Parameters
    ----------
    background : int or None
        ``fit``'s ``background``.

    Returns
    -------
    int or None
        The degree as a Python int; None for no background.

    Raises
    ------
    ValueError
        For a bool, a non-integer, or a degree outside ``0 .. MAX_BACKGROUND_DEGREE``.
    """
    if background is None:
        return None
    if (
        isinstance(background, (bool, np.bool_))
        or not isinstance(background, (int, np.integer))
        or not 0 <= background <= MAX_BACKGROUND_DEGREE
    ):
        raise ValueError(
            f"background must be None or a polynomial degree 0..{MAX_BACKGROUND_DEGREE} "
            f"(0: a constant), got {background!r}"
        )
    return int(background)


def background_terms(degree: int) -> tuple[str, ...]:
    """Names of the monomials of degree ``<= degree``: ``'1', 'y', 'x', 'y^2', 'y x', ...``.

    Parameters
    ----------
    degree : int
        Largest total degree (``>= 0``).

    Returns
    -------
    tuple of str
        ``(degree + 1) (degree + 2) / 2`` names, by total degree, then by
        falling power of ``y``: the order of :func:`background_design`'s columns.
    """

    def power(name: str, exponent: int) -> str:
        return "" if exponent == 0 else name if exponent == 1 else f"{name}^{exponent}"

    terms = []
    for total in range(degree + 1):
        for a in range(total, -1, -1):
            factors = [f for f in (power("y", a), power("x", total - a)) if f]
            terms.append(" ".join(factors) or "1")
    return tuple(terms)


def _axis(size: int) -> np.ndarray:
    # Pixel centres mapped onto [-1, 1] (a single pixel sits at 0).
    return np.linspace(-1.0, 1.0, size) if size > 1 else np.zeros(1)


def background_design(shape: tuple[int, int], degree: int) -> np.ndarray:
    """The background block's columns on ``B``'s grid.

    Parameters
    ----------
    shape : (int, int)
        ``B``'s shape ``(H, W)``.
    degree : int
        Largest total degree of the monomials (``>= 0``).

    Returns
    -------
    (H * W, k) ndarray
        Column ``j`` is monomial ``background_terms(degree)[j]`` at each pixel
        (row-major), of the position normalised to ``[-1, 1]`` per axis.
    """
    y, x = np.meshgrid(_axis(shape[0]), _axis(shape[1]), indexing="ij")
    columns = []
    for total in range(degree + 1):
        for a in range(total, -1, -1):
            columns.append((y**a * x ** (total - a)).ravel())
    return np.stack(columns, axis=1)


def background_image(coefficients, shape: tuple[int, int]) -> np.ndarray:
    """The background ``X beta`` on ``B``'s grid.

    Parameters
    ----------
    coefficients : (..., k) array_like
        In the order of :func:`background_terms`; ``k`` fixes the degree.
    shape : (int, int)

    Returns
    -------
    (..., H, W) ndarray
    """
    coefficients = np.asarray(coefficients, dtype=np.float64)
    k = coefficients.shape[-1]
    counts = {len(background_terms(d)): d for d in range(MAX_BACKGROUND_DEGREE + 1)}
    if k not in counts:
        raise ValueError(
            f"coefficients must have a background's term count, one of {sorted(counts)}, got {k}"
        )
    degree = counts[k]
    design = background_design(shape, degree)
    return (coefficients @ design.T).reshape(coefficients.shape[:-1] + tuple(shape))


@dataclass(frozen=True)
class PairObservation:
    """How one pair's ``B`` is observed: pixels, noise weights, background block.

    Attributes
    ----------
    shape : (int, int)
        ``B``'s shape.
    indices : (n,) int ndarray
        Flat indices of the observed pixels.
    scales : (n,) ndarray or None
        ``sqrt(w)`` at the observed pixels; None where every weight is 1.
    basis, triangle : (n, k) and (k, k) ndarray, or None
        Thin QR of the weighted background columns, ``X_w = basis @ triangle``;
        None without a background.
    prior_scale : float
        The background coefficients' prior sd (``tau``).
    """

    shape: tuple[int, int]
    indices: np.ndarray
    scales: np.ndarray | None
    basis: np.ndarray | None
    triangle: np.ndarray | None
    prior_scale: float

    @property
    def num_background(self) -> int:
        return 0 if self.basis is None else int(self.basis.shape[1])


def observe(observed, mask, weights, degree: int | None) -> PairObservation:
    """The :class:`PairObservation` of one pair.

    Parameters
    ----------
    observed : (H, W) array
        ``B`` (values at unobserved pixels are not read).
    mask : (H, W) bool array or None
        ``True`` where observed; None: everywhere.
    weights : (H, W) array or None
        Relative inverse noise variance, positive where observed.
    degree : int or None
        Background degree; None for no background.

    Returns
    -------
    PairObservation
        ``indices`` and ``scales`` (None without weights) of shape ``(n,)``
        for the ``n`` observed pixels; with a background, ``basis`` ``(n, k)`` and ``triangle``
        ``(k, k)``.

    Raises
    ------
    ValueError
        A background with as many terms as observed pixels, or whose columns
        are degenerate on the observed pixels (e.g. a 1-pixel-wide ``B``).
    """
    observed = np.asarray(observed, dtype=np.float64)
    shape = observed.shape
    indices = np.arange(observed.size) if mask is None else np.flatnonzero(np.asarray(mask))
    scales = None if weights is None else np.sqrt(np.asarray(weights, np.float64).ravel()[indices])
    seen = observed.ravel()[indices]
    prior_scale = BACKGROUND_PRIOR_SCALE * (float(np.sqrt(np.mean(seen**2))) or 1.0)
    if degree is None:
        return PairObservation(shape, indices, scales, None, None, prior_scale)
    design = background_design(shape, degree)[indices]
    if scales is not None:
        design = design * scales[:, None]
    if design.shape[1] >= design.shape[0]:
        raise ValueError(
            f"background={degree} has {design.shape[1]} terms for {design.shape[0]} observed "
            "pixels: use a lower degree"
        )
    basis, triangle = np.linalg.qr(design)
    diagonal = np.abs(np.diag(triangle))
    if diagonal.min() <= 1e-10 * diagonal.max():
        raise ValueError(
            f"background={degree}: its terms are not independent on the observed pixels "
            f"of B (shape {shape}); use a lower degree"
        )
    return PairObservation(shape, indices, scales, basis, triangle, prior_scale)


class PairTerms(NamedTuple):
    """One pair's background block and noise map for the NumPyro model (NUTS, SVI).

    Attributes
    ----------
    design : (H, W, k) jax.Array or None
        The background's columns on ``B``'s grid.
    noise_sd : (H, W) jax.Array or None
        Each pixel's noise sd relative to ``sigma``, ``1 / sqrt(w)`` (1 where
        unobserved: those pixels are masked).
    prior_scale : float
        The background coefficients' prior sd.
    """

    design: jax.Array | None
    noise_sd: jax.Array | None
    prior_scale: float


def model_terms(obs: PairObservation, weights, degree: int | None) -> PairTerms:
    """The :class:`PairTerms` of one pair (weights on ``B``'s grid, or None).

    Parameters
    ----------
    obs : PairObservation
        The pair's observation (its shape and background prior sd are read).
    weights : (H, W) array_like or None
        Relative inverse noise variances on ``B``'s grid; None: all 1.
    degree : int or None
        Background degree; None for no background.

    Returns
    -------
    PairTerms
        ``design`` ``(H, W, k)`` (None without a background), ``noise_sd``
        ``(H, W)`` (None without weights; 1 where a weight is 0).
    """
    design = None
    if degree is not None:
        design = jnp.asarray(background_design(obs.shape, degree).reshape(*obs.shape, -1))
    noise_sd = None
    if weights is not None:
        weights = np.asarray(weights, np.float64)
        noise_sd = jnp.asarray(
            np.where(weights > 0, 1.0 / np.sqrt(np.where(weights > 0, weights, 1.0)), 1.0)
        )
    return PairTerms(design, noise_sd, obs.prior_scale)


def background_samples(samples: dict, num_pairs: int) -> np.ndarray | None:
    """The background sites of a NumPyro run as ``(C, D, k)`` or ``(C, D, pairs, k)``.

    Parameters
    ----------
    samples : dict
        The run's samples by site, grouped by chain: ``'background'`` of shape
        ``(C, D, k)`` for one pair, ``'background_0'``, ``'background_1'``, ...
        for several.
    num_pairs : int
        Number of image pairs.

    Returns
    -------
    (C, D, k) or (C, D, pairs, k) ndarray, or None
        ``(C, D, k)`` for one pair, ``(C, D, pairs, k)`` for several; None
        when the run has no background sites.
    """
    if num_pairs == 1:
        return samples.get("background")
    if "background_0" not in samples:
        return None
    return np.stack([samples[f"background_{i}"] for i in range(num_pairs)], axis=2)


def background_transpose(op, obs: PairObservation) -> np.ndarray:
    """``C = Q^T S H``: the background basis seen on the kernel grid.

    Parameters
    ----------
    op : ConvolutionOperator
        The pair's blur ``H``.
    obs : PairObservation
        With a background.

    Returns
    -------
    (k, P * Q) ndarray
        One transposed blur per background term.
    """
    scales = np.ones(obs.indices.size) if obs.scales is None else obs.scales
    full = np.zeros((obs.num_background, int(np.prod(obs.shape))))
    full[:, obs.indices] = (obs.basis * scales[:, None]).T
    c = np.asarray(op.adjoint(jnp.asarray(full.reshape((-1,) + tuple(obs.shape)))))
    return c.reshape(obs.num_background, -1)


def log_likelihood_offset(observations) -> float:
    """What whitening and the background's integral add to ``log p(B)``.

    The whitened likelihood is of ``sqrt(w) B``: its Jacobian is
    ``sum log sqrt(w)``. Integrating ``beta ~ N(0, tau^2 I)`` out in the broad
    limit gives ``-log|det R| - (k / 2) log(2 pi tau^2)`` beside the projected
    likelihood. Constant in the hyperparameters and the kernel prior.

    Parameters
    ----------
    observations : sequence of PairObservation
        One per image pair.

    Returns
    -------
    float
        The sum over pairs (0 without weights or a background).
    """
    total = 0.0
    for obs in observations:
        if obs.scales is not None:
            total += float(np.sum(np.log(obs.scales)))
        if obs.basis is not None:
            k = obs.num_background
            total -= float(np.sum(np.log(np.abs(np.diag(obs.triangle)))))
            total -= 0.5 * k * np.log(2 * np.pi * obs.prior_scale**2)
    return total


def draw_background(
    observations,
    operators,
    observed,
    kernels: np.ndarray,
    noise_sigma: np.ndarray,
    rng_key: jax.Array,
) -> np.ndarray:
    """Background coefficients given each kernel draw, exactly.

    Parameters
    ----------
    observations : sequence of PairObservation
        With a background (``basis`` set).
    operators : sequence of ConvolutionOperator
    observed : sequence of (H, W) arrays
    kernels : (C, D, P, Q) ndarray
    noise_sigma : (C, D) ndarray
    rng_key : jax PRNGKey

    Returns
    -------
    (C, D, pairs, k) ndarray
    """
    chains, draws = noise_sigma.shape
    flat_kernels = np.asarray(kernels, np.float64).reshape((chains * draws,) + kernels.shape[2:])
    sigma = np.asarray(noise_sigma, np.float64).reshape(-1)
    out = []
    keys = jax.random.split(rng_key, len(observations))
    for obs, op, b, key in zip(observations, operators, observed, keys, strict=True):
        data = np.asarray(b, np.float64).ravel()[obs.indices]
        scales = np.ones_like(data) if obs.scales is None else obs.scales
        # Q^T S (b - H K) = Q^T S b - C vec(K): one small product per draw
        # instead of one blur per draw.
        c = background_transpose(op, obs)
        projected = (obs.basis.T @ (scales * data))[None] - flat_kernels.reshape(
            sigma.size, -1
        ) @ c.T
        noise = np.asarray(jax.random.normal(key, (sigma.size, obs.num_background)))
        rhs = projected + sigma[:, None] * noise
        # beta = R^{-1} (Q^T r + sigma xi): solve with the small triangle.
        out.append(np.linalg.solve(obs.triangle, rhs.T).T)
    return np.stack(out, axis=1).reshape(chains, draws, len(observations), -1)
