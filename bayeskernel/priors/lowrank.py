"""Low-rank (separable when rank 1) kernels: ``K = s * sum_i u_i v_i^T / sqrt(rank)``.

With ``shrinkage=True`` the rank is learned: ``rank`` is a maximum and each
component has its own scale, which switches unneeded components off.
:func:`effective_rank` and :func:`rank_probabilities` read the rank off the
posterior kernel draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayeskernel.priors.base import KernelPrior

__all__ = ["LowRankPrior", "effective_rank", "rank_probabilities"]

# Default energy fraction left out by effective_rank: in measured shrinkage
# fits the unneeded components held < 1e-3 of a draw's energy, a genuine second
# component (one tenth of the squared norm) 0.1 (see effective_rank's notes).
DEFAULT_RANK_TOL = 1e-2


@dataclass(frozen=True, eq=False)
class LowRankPrior(KernelPrior):
    """Sum of ``rank`` outer products of Gaussian row and column profiles.

    A ``P x Q`` kernel then has ``rank (P + Q)`` unknowns instead of ``P Q``: the
    question's own suggestion for supports larger than the data allow. With
    ``u, v ~ N(0, 1)`` and the ``1/sqrt(rank)`` factor, entries have prior
    variance ``s^2``, as for the other priors. The factors are not identifiable
    (signs, rotations), the kernel is; judge convergence on the kernel.

    With ``shrinkage=True``, ``rank`` is the *maximum* rank and the rank is
    learned (automatic relevance determination)::

        K = s * sqrt(P Q) * sum_h tau_h u_h v_h^T / c,    u_h, v_h unit vectors,
        tau_1 = 1,  tau_h = prod_{2 <= l <= h} b_l,  b_l ~ Beta(alpha, 1),

    a multiplicative shrinkage process in the spirit of Bhattacharya & Dunson
    (2011): ``-log b_l ~ Exponential(alpha)``, i.e. the precisions
    ``tau_h^-2`` grow by gamma-distributed log increments. The component scales
    are ordered (``tau_h`` never increases with ``h``) and ``E[tau_h^2] = (alpha
    / (alpha + 2))^(h - 1)``, so a component is used only when the data ask for
    it. The profiles ``u_h, v_h`` have uniformly random directions (normalised
    ``N(0, I)`` vectors, sites ``row_factors`` and ``col_factors``) and ``c^2 =
    sum_h E[tau_h^2]``; hence, given ``s``, every entry has prior mean 0 and
    prior variance, averaged over the ``P Q`` entries and over ``b``, ``u`` and
    ``v``, exactly ``s^2`` (given ``b`` too it is ``s^2 sum_h tau_h^2 / c^2``).
    Sites: ``kernel_scale`` (``s``), ``component_shrinkage`` (``b_2..b_rank``,
    shape ``(rank - 1,)``, in ``parameter_draws``), ``row_factors``,
    ``col_factors``. Read the rank with :func:`effective_rank` /
    :func:`rank_probabilities`.

    Parameters
    ----------
    kernel_shape : (int, int)
        Shape ``(P, Q)`` of the kernel.
    rank : int
        Number of components (the maximum rank with ``shrinkage=True``); at
        most ``min(P, Q)``.
    shrinkage : bool
        Learn the rank with the multiplicative shrinkage process above.
    alpha : float
        Shape of the ``Beta(alpha, 1)`` shrinkage factors (with ``shrinkage``):
        smaller switches components off more readily.
    """

    kernel_shape: tuple[int, int]
    rank: int = 1
    shrinkage: bool = False
    name: str = "lowrank"

    # Why this process: measured with NUTS (2 chains, rank 5, rank-2 truth), a
    # multiplicative *gamma* process (delta_h ~ Gamma(a, 1)) cannot switch a
    # component off (its light-tailed precisions bound tau_h / tau_{h-1} from
    # below), and independent half-normal scales let components swap labels
    # between chains (kernel r_hat 2.8, 175 divergences). Beta(alpha, 1)
    # factors cost only alpha per e-fold of shrinkage and keep the order.
    alpha: float = 1.0

    def __post_init__(self):
        if isinstance(self.rank, bool) or not (
            isinstance(self.rank, (int, np.integer)) and self.rank >= 1
        ):
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")
        if len(self.kernel_shape) == 2 and self.rank > min(self.kernel_shape):
            raise ValueError(
                f"rank must be at most min(kernel_shape) = {min(self.kernel_shape)}, "
                f"got {self.rank!r}"
            )
        if not isinstance(self.shrinkage, (bool, np.bool_)):
            raise ValueError(f"shrinkage must be True or False, got {self.shrinkage!r}")
        if not (np.isscalar(self.alpha) and np.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be a positive number, got {self.alpha!r}")

    def component_variances(self) -> np.ndarray:
        """Prior mean of each component's squared scale, ``E[tau_h^2]`` (ones without shrinkage).

        Returns
        -------
        (rank,) ndarray
            Decreasing with ``shrinkage=True``; their sum is the ``c^2`` that
            normalises the kernel.
        """
        if not self.shrinkage:
            return np.ones(self.rank)
        # E[b^2] = alpha / (alpha + 2) for b ~ Beta(alpha, 1); the factors are independent.
        ratio = self.alpha / (self.alpha + 2)
        return ratio ** np.arange(self.rank, dtype=float)

    def sample(self, scales) -> jax.Array:
        """Sample the scale, (component precisions) and factors; return the kernel.

        Parameters
        ----------
        scales : bayeskernel.model.HyperScales
            ``scales.kernel`` is the half-Cauchy scale of ``kernel_scale``.

        Returns
        -------
        (P, Q) jax.Array
        """
        scale = numpyro.sample("kernel_scale", dist.HalfCauchy(scales.kernel))
        h, w = self.kernel_shape
        rows = numpyro.sample(
            "row_factors", dist.Normal(0.0, 1.0).expand([self.rank, h]).to_event(2)
        )
        cols = numpyro.sample(
            "col_factors", dist.Normal(0.0, 1.0).expand([self.rank, w]).to_event(2)
        )
        if not self.shrinkage:
            return scale * jnp.einsum("ri,rj->ij", rows, cols) / jnp.sqrt(self.rank)
        # Unit profiles: each component's size is then s * tau_h alone, a ridge
        # that is linear in log space, instead of s * tau_h * |u_h| * |v_h|,
        # whose curved ridge makes NUTS hit its maximum tree depth at high
        # signal-to-noise. The profiles' norms do not enter the likelihood.
        rows = rows / jnp.linalg.norm(rows, axis=1, keepdims=True)
        cols = cols / jnp.linalg.norm(cols, axis=1, keepdims=True)
        # E[u_i^2] = 1 / P for a unit vector of uniform direction, so sqrt(P Q)
        # restores unit entry variance per unit of tau_h^2.
        weights = self._component_scales() * np.sqrt(h * w / self.component_variances().sum())
        return scale * jnp.einsum("r,ri,rj->ij", weights, rows, cols)

    def _component_scales(self) -> jax.Array:
        """``tau_h``: cumulative products of ``Beta(alpha, 1)`` factors, ``tau_1 = 1``."""
        if self.rank == 1:
            return jnp.ones(1)
        factors = numpyro.sample(
            "component_shrinkage", dist.Beta(self.alpha, 1.0).expand([self.rank - 1]).to_event(1)
        )
        return jnp.concatenate([jnp.ones(1), jnp.cumprod(factors)])


def _draws_array(kernel_draws) -> np.ndarray:
    draws = getattr(kernel_draws, "kernel_draws", kernel_draws)
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim < 2:
        raise ValueError(
            f"kernel_draws must have at least 2 dimensions (..., P, Q), got shape {draws.shape}"
        )
    if not np.all(np.isfinite(draws)):
        raise ValueError("kernel_draws must be finite")
    return draws


def _check_tol(tol: float) -> float:
    if not (np.isscalar(tol) and np.isfinite(tol) and 0 <= tol < 1):
        raise ValueError(f"tol must be a number in [0, 1), got {tol!r}")
    return float(tol)


def effective_rank(kernel_draws, tol: float = DEFAULT_RANK_TOL) -> np.ndarray:
    """Rank of each kernel draw, from its singular values.

    The rank of a draw is the smallest ``r`` whose ``r`` leading singular
    values hold all but a fraction ``tol`` of the draw's squared Frobenius
    norm::

        rank = min { r : sum_{k > r} sigma_k^2 <= tol * sum_k sigma_k^2 }.

    The kernel, unlike its factors, is identifiable, so its rank is a proper
    posterior quantity. An all-zero draw has rank 0.

    Parameters
    ----------
    kernel_draws : (..., P, Q) array_like or KernelPosterior
        Kernel draws, e.g. ``posterior.kernel_draws`` of shape
        ``(chains, draws, P, Q)``; a posterior is read through its
        ``kernel_draws``.
    tol : float
        Fraction of the squared norm that the left-out components may hold, in
        ``[0, 1)``. ``0`` gives the numerical rank only for exactly low-rank
        draws computed in exact arithmetic; use a small positive value.

    Returns
    -------
    (...) ndarray of int
        One rank per draw (the leading axes of ``kernel_draws``).

    Notes
    -----
    The default ``tol = 1e-2`` (components below about 10% of the norm are
    not counted) was set from measurements with NUTS: in shrinkage fits with
    ``rank=5`` of an 11 x 11 rank-2 kernel (40 x 40 image, noise sd 0.3) the
    unneeded components held at most ``6e-4`` of any draw's squared norm and
    the genuine second component ``0.10``; at lower signal-to-noise (noise sd
    0.5, 32 x 32 image) spurious components reached ``2e-3``, which a
    ``tol = 1e-3`` miscounted as a third rank in half the draws. Lower ``tol``
    for faint components at high signal-to-noise.

    Examples
    --------
    >>> import numpy as np
    >>> int(effective_rank(np.outer([1.0, 2.0], [3.0, 4.0])))
    1
    """
    tol = _check_tol(tol)
    draws = _draws_array(kernel_draws)
    energy = np.linalg.svd(draws, compute_uv=False) ** 2
    total = energy.sum(axis=-1, keepdims=True)
    # tail[..., r] is the energy left out by keeping r components, r = 0..min(P, Q).
    tail = total - np.concatenate([np.zeros_like(total), np.cumsum(energy, axis=-1)], axis=-1)
    # Rounding can leave a tiny negative tail; the comparison tolerates it.
    return np.argmax(tail <= tol * total, axis=-1)


def rank_probabilities(
    kernel_draws, tol: float = DEFAULT_RANK_TOL, max_rank: int | None = None
) -> np.ndarray:
    """Posterior probability of each rank: the share of draws of that effective rank.

    Parameters
    ----------
    kernel_draws : (..., P, Q) array_like or KernelPosterior
        Posterior kernel draws, all leading axes pooled.
    tol : float
        As in :func:`effective_rank`.
    max_rank : int, optional
        Length of the answer minus one; default ``min(P, Q)``.

    Returns
    -------
    (max_rank + 1,) ndarray
        Entry ``r`` is the posterior probability that the kernel has rank
        ``r`` (entry 0: the all-zero kernel). Sums to one.
    """
    draws = _draws_array(kernel_draws)
    ranks = np.ravel(effective_rank(draws, tol))
    limit = min(draws.shape[-2:])
    if max_rank is None:
        max_rank = limit
    if isinstance(max_rank, bool) or not (
        isinstance(max_rank, (int, np.integer)) and 0 <= max_rank <= limit
    ):
        raise ValueError(f"max_rank must be an integer in [0, {limit}], got {max_rank!r}")
    if ranks.size and ranks.max() > max_rank:
        raise ValueError(f"max_rank={max_rank} is below a draw's rank ({ranks.max()})")
    return np.bincount(ranks, minlength=max_rank + 1) / max(ranks.size, 1)
