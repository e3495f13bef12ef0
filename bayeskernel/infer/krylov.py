"""Matrix-free exact route for problems too large for a dense eigendecomposition.

Same model and notation as :mod:`bayeskernel.infer.exact`: ``B = s W z + e``,
``z ~ N(0, I_p)``, ``e ~ N(0, sigma^2 I_n)``, ``t = s^2 / sigma^2``. Let ``G``
be ``W W^T`` (data space) or ``W^T W`` (kernel space), whichever is smaller
(``r = min(n, p)``), applied matrix-free through the FFT blur. Everything the
dense route gets from one eigendecomposition comes here from Lanczos:

* **Quadratic form** ``B^T (sigma^2 I + s^2 W W^T)^{-1} B``: Gauss quadrature
  from one Lanczos run started at ``B`` (data space) or ``W^T B`` (kernel
  space). It is a deterministic function of ``t``, and the nodes serve every
  ``t`` at once; converged to rounding in 100 steps on the motivating case.
* **Log-determinant** ``log det(I + t G)``: stochastic Lanczos quadrature
  (Ubaru, Chen & Saad 2017) with Rademacher probes, again all ``t`` at once.
  The probes are fixed, so the collapsed posterior of ``(sigma, s)`` is a
  smooth deterministic target for NUTS; the probe-to-probe spread gives a
  reported standard error of the log-determinant and of its slope in ``log t``
  (what moves the hyperparameter posterior).
* **Kernel draws** by perturbation-optimisation: each draw solves one
  perturbed system ``(I + t G) x = rhs`` by conjugate gradients, batched, with
  a *deflation* preconditioner built from the top Ritz pairs of the Lanczos run
  (exact on that subspace, identity elsewhere). Data space uses Matheron's
  rule, kernel space the perturbed normal equations. The solver tolerance and
  the iteration counts are reported.

Why deflation, not the periodic (circulant) approximation of ``G``: with a
kernel larger than the image and a smoothness prior, ``G`` carries huge
low-rank non-stationary terms (the prior's boundary behaviour) that no
circulant matches; measured on the motivating case, a Strang circulant
preconditioner stalled at 3,000 iterations, while deflating 150 Ritz pairs
cut plain CG from 471 to 27 iterations per draw (benchmarks/bench_exact.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from bayeskernel.infer.exact import WhitenedOperator

__all__ = [
    "KrylovSummary",
    "add_probes",
    "krylov_summary",
    "krylov_log_marginal_likelihood",
    "krylov_draws",
    "lanczos",
    "pcg",
    "single_precision",
]

# Defaults, from prototype runs on the motivating case against its dense spectrum
# (docs/model.md quotes them; benchmarks/bench_exact.py times the result).
LANCZOS_STEPS = 300  # quadratic form converges in ~100; the rest feeds deflation
SLQ_PROBES = 32
SLQ_STEPS = 60  # the log-determinant estimate is the same at 50 and 100 steps
# A draw's own error, against a solve to 1e-10: at most 0.001 posterior sd per
# entry (3e-4 sd on average over 64 draws) on a 32x32 / 7x7 case at 5% noise
# (tests/test_stages.py); the Monte Carlo error of a 500-draw mean is 0.045 sd.
# 1e-5 would save one or two more iterations in twenty, at 8x the error.
CG_RTOL = 1e-6
CG_MAXITER = 2000
_PROBE_BATCH = 8


@partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "logdet_nodes", "logdet_weights", "quad_nodes", "quad_weights", "data_energy",
        "ritz_values", "ritz_vectors",
    ],
    meta_fields=["space", "num_observed"],
)  # fmt: skip
@dataclass(frozen=True)
class KrylovSummary:
    """What the Lanczos runs leave for the marginal likelihood and the draws.

    A pytree (``space`` and ``num_observed`` static), so jitted functions take it
    as an argument.

    Attributes
    ----------
    logdet_nodes, logdet_weights : (P, m) ndarray
        Per-probe quadrature: ``log det(I + tG) ~ mean_k sum_j w_kj log(1 + t th_kj)``.
    quad_nodes, quad_weights : (m,) ndarray
        Gauss quadrature of ``v^T (I + tG)^{-1} v`` for the start vector ``v``.
    data_energy : float
        ``||B||^2``.
    ritz_values : (k,) ndarray
    ritz_vectors : (k, r) ndarray
        Top Ritz pairs of ``G`` (orthonormal rows), for the preconditioner.
    space : {'data', 'kernel'}
    num_observed : int
    """

    logdet_nodes: np.ndarray
    logdet_weights: np.ndarray
    quad_nodes: np.ndarray
    quad_weights: np.ndarray
    data_energy: float
    ritz_values: np.ndarray
    ritz_vectors: np.ndarray
    space: str
    num_observed: int


def lanczos(matvec, start: jax.Array, num_steps: int, keep_basis: bool = False):
    """Batched Lanczos with full reorthogonalisation.

    Parameters
    ----------
    matvec : callable
        Symmetric positive semi-definite map on ``(b, r)`` arrays.
    start : (b, r) array
        Start vectors (normalised here).
    num_steps : int

    Returns
    -------
    alpha : (b, m) array
    beta : (b, m - 1) array
        The tridiagonal matrices (``m <= num_steps``; fewer when the Krylov space
        is exhausted, ``m = r`` at most).
    basis : (m, b, r) array, only with ``keep_basis``
    """
    batch, size = start.shape
    steps = min(num_steps, size)
    q0 = start / jnp.linalg.norm(start, axis=1, keepdims=True)
    # Stored (b, m, r): each start vector's basis contiguous, so that the
    # reorthogonalisation is a batched matrix-vector product (1.6x faster than
    # (m, b, r) for 8 probes on the motivating case, the same values).
    basis = jnp.zeros((batch, steps + 1, size), start.dtype).at[:, 0].set(q0)

    def body(j, state):
        basis, alpha, beta = state
        current = basis[:, j]
        w = matvec(current)
        a = jnp.sum(w * current, axis=1)
        # Twice is enough (Kahan): keeps the Ritz values free of ghost copies.
        keep = (jnp.arange(steps + 1) <= j)[None, :]
        for _ in range(2):
            coef = jnp.einsum("bmr,br->bm", basis, w) * keep
            w = w - jnp.einsum("bm,bmr->br", coef, basis)
        b = jnp.linalg.norm(w, axis=1)
        # An exhausted Krylov space leaves w ~ 0: stop the recurrence there.
        safe = jnp.where(b > 0, b, 1.0)
        basis = basis.at[:, j + 1].set(w / safe[:, None])
        return basis, alpha.at[:, j].set(a), beta.at[:, j].set(b)

    zeros = jnp.zeros((batch, steps), start.dtype)
    basis, alpha, beta = jax.lax.fori_loop(0, steps, body, (basis, zeros, zeros))
    if keep_basis:
        return alpha, beta[:, :-1], jnp.swapaxes(basis[:, :steps], 0, 1)
    return alpha, beta[:, :-1]


def _gauss_nodes(alpha: np.ndarray, beta: np.ndarray):
    """Nodes and weights (squared first components) of one Lanczos tridiagonal."""
    # Truncate at the first (numerically) zero beta: the Krylov space ended.
    scale = max(float(np.max(np.abs(alpha))), 1e-300)
    small = np.flatnonzero(beta <= 1e-12 * scale)
    m = int(small[0]) + 1 if small.size else alpha.size
    nodes, vectors = scipy.linalg.eigh_tridiagonal(alpha[:m], beta[: m - 1])
    nodes = np.clip(nodes, 0.0, None)
    out_nodes, out_weights = np.zeros(alpha.size), np.zeros(alpha.size)
    out_nodes[:m], out_weights[:m] = nodes, vectors[0] ** 2
    return out_nodes, out_weights, vectors, m


def krylov_summary(
    whitened: WhitenedOperator,
    observed: jax.Array,
    rng_key: jax.Array,
    *,
    num_steps: int = LANCZOS_STEPS,
    num_probes: int = SLQ_PROBES,
    probe_steps: int = SLQ_STEPS,
    probes_run: int | None = None,
    progress=None,
) -> KrylovSummary:
    """Lanczos runs for the collapsed marginal likelihood and the preconditioner.

    Parameters
    ----------
    whitened : WhitenedOperator
    observed : (n,) array
    rng_key : jax PRNGKey
        Seeds the Rademacher probes of the log-determinant.
    num_steps : int
        Lanczos steps from the data (quadratic form, deflation basis).
    num_probes, probe_steps : int
        Probes of the stochastic Lanczos quadrature, and steps per probe.
    probes_run : int, optional
        Run only the first ``probes_run`` of the ``num_probes`` probes (a
        multiple of the probe batch, 8; 0 for none): a cheaper, noisier
        summary, which :func:`add_probes` completes to exactly the full one.
    progress : callable, optional
        Called with ``1`` after each Lanczos run (the data's, then each probe batch).
    """
    p, n = whitened.num_latent, whitened.num_observed
    space = "data" if n <= p else "kernel"
    start = observed if space == "data" else whitened.transpose(observed)
    data_energy = float(observed @ observed)

    # Quadratic form and deflation basis: one run from the data.
    alpha, beta, basis = _lanczos_run(whitened, space, start[None], num_steps, True)
    nodes, weights, vectors, m = _gauss_nodes(np.asarray(alpha[0]), np.asarray(beta[0]))
    start_energy = float(start @ start)
    # Top half of the Ritz pairs: converged to well under the preconditioner's needs.
    order = np.argsort(nodes[:m])[::-1][: max(1, m // 2)]
    ritz_vectors = np.asarray(jnp.asarray(vectors[:, order].T) @ basis[:m, 0])
    if progress is not None:
        progress(1)

    # Log-determinant: stochastic Lanczos quadrature, fixed Rademacher probes.
    logdet_nodes, logdet_weights = _slq_nodes(
        whitened,
        space,
        rng_key,
        num_probes,
        probe_steps,
        0,
        num_probes if probes_run is None else probes_run,
        progress,
    )
    return KrylovSummary(
        logdet_nodes,
        logdet_weights,
        nodes,
        start_energy * weights,
        data_energy,
        nodes[order],
        ritz_vectors,
        space,
        whitened.num_effective,
    )


def add_probes(
    summary: KrylovSummary,
    whitened: WhitenedOperator,
    rng_key: jax.Array,
    *,
    num_probes: int = SLQ_PROBES,
    probe_steps: int = SLQ_STEPS,
    progress=None,
) -> KrylovSummary:
    """Complete a summary made with ``probes_run`` to all ``num_probes`` probes.

    Same key, same probes: the result equals :func:`krylov_summary` run with
    all probes at once, bit for bit.
    """
    done = summary.logdet_nodes.shape[0]
    if done >= num_probes:
        return summary
    nodes, weights = _slq_nodes(
        whitened, summary.space, rng_key, num_probes, probe_steps, done, num_probes, progress
    )
    return replace(
        summary,
        logdet_nodes=np.concatenate([summary.logdet_nodes, nodes]),
        logdet_weights=np.concatenate([summary.logdet_weights, weights]),
    )


def _slq_nodes(whitened, space, rng_key, num_probes, probe_steps, first, stop, progress=None):
    """Quadrature nodes and weights of probes ``first:stop`` of ``num_probes``."""
    size = whitened.num_observed if space == "data" else whitened.num_latent
    dtype = jnp.result_type(float)
    # All probes drawn at once, whichever are run: a part, then the rest, equal the whole.
    probes = jax.random.rademacher(rng_key, (num_probes, size), dtype=dtype)
    steps = min(probe_steps, size)
    nodes = np.zeros((stop - first, steps))
    weights = np.zeros_like(nodes)
    for start in range(first, stop, _PROBE_BATCH):
        block = probes[start : min(start + _PROBE_BATCH, stop)]
        a, b = _lanczos_run(whitened, space, block, probe_steps, False)
        for i, (ai, bi) in enumerate(zip(np.asarray(a), np.asarray(b))):
            th, w, _, _ = _gauss_nodes(ai, bi)
            # ||probe||^2 = r for Rademacher probes.
            nodes[start - first + i], weights[start - first + i] = th, size * w
        if progress is not None:
            progress(1)
    return nodes, weights


# Module level, whitened operator as an argument: compiled once per prior and shape.
@partial(jax.jit, static_argnums=(1, 3, 4))
def _lanczos_run(whitened: WhitenedOperator, space: str, start, num_steps: int, keep_basis: bool):
    return lanczos(_systems(whitened, space), start, num_steps, keep_basis)


def _log_det_per_probe(summary: KrylovSummary, ratio):
    """Per-probe estimates of ``log det(I + t G)``; ``ratio`` is ``t``."""
    nodes = jnp.asarray(summary.logdet_nodes)
    weights = jnp.asarray(summary.logdet_weights)
    return jnp.sum(weights * jnp.log1p(ratio * nodes), axis=-1)


def krylov_log_marginal_likelihood(summary: KrylovSummary, noise_sigma, kernel_scale):
    """``log p(B | sigma, s)`` from the Lanczos quadratures; jax-traceable."""
    n = summary.num_observed
    var_noise = noise_sigma**2
    ratio = kernel_scale**2 / var_noise
    log_det = n * jnp.log(var_noise) + jnp.mean(_log_det_per_probe(summary, ratio))
    nodes, weights = jnp.asarray(summary.quad_nodes), jnp.asarray(summary.quad_weights)
    if summary.space == "data":
        quad = jnp.sum(weights / (1.0 + ratio * nodes))
    else:
        # B^T (I + t W W^T)^{-1} B = ||B||^2 - t c^T (I + t W^T W)^{-1} c, c = W^T B.
        quad = summary.data_energy - jnp.sum(weights * ratio / (1.0 + ratio * nodes))
    return -0.5 * (n * jnp.log(2 * jnp.pi) + log_det + quad / var_noise)


def log_det_error(summary: KrylovSummary, ratio: float) -> dict:
    """Monte Carlo standard errors of the log-determinant at ``t = ratio``.

    Returns the standard error of ``log det(I + tG)`` and of its derivative in
    ``log t``; the latter, divided by the curvature of the log posterior in
    ``log t``, bounds how far the probes can move the hyperparameters. Also the
    derivative's mean, the effective number of parameters.
    """
    per_probe = np.asarray(_log_det_per_probe(summary, ratio))
    nodes, weights = summary.logdet_nodes, summary.logdet_weights
    slopes = np.sum(weights * ratio * nodes / (1.0 + ratio * nodes), axis=-1)
    k = per_probe.size
    return {
        "logdet_stderr": float(per_probe.std(ddof=1) / np.sqrt(k)),
        "logdet_slope_stderr": float(slopes.std(ddof=1) / np.sqrt(k)),
        # The slope is also the trace of t G (I + t G)^{-1}: the effective
        # number of parameters.
        "effective_parameters": float(slopes.mean()),
    }


def pcg(matvec, precondition, rhs: jax.Array, rtol: float, maxiter: int):
    """Batched preconditioned conjugate gradients, one system per row.

    Each row stops when its residual norm falls below ``rtol * ||rhs||``.

    Returns
    -------
    x : (b, r) array
    iterations : (b,) int array
    residual : (b,) array
        Final relative residual norms.
    """
    norm_rhs = jnp.linalg.norm(rhs, axis=1)

    def active(r):
        return jnp.linalg.norm(r, axis=1) > rtol * norm_rhs

    z = precondition(rhs)
    state = (jnp.zeros_like(rhs), rhs, z, jnp.sum(rhs * z, axis=1), 0, jnp.zeros(rhs.shape[0], int))

    def cond(state):
        _, r, _, _, k, _ = state
        return (k < maxiter) & jnp.any(active(r))

    def body(state):
        x, r, d, rz, k, count = state
        on = active(r)
        q = matvec(d)
        step = jnp.where(on, rz / jnp.sum(d * q, axis=1), 0.0)
        x = x + step[:, None] * d
        r = r - step[:, None] * q
        z = precondition(r)
        rz_new = jnp.sum(r * z, axis=1)
        d = z + jnp.where(on, rz_new / rz, 0.0)[:, None] * d
        return x, r, d, rz_new, k + 1, count + on

    x, r, _, _, _, count = jax.lax.while_loop(cond, body, state)
    return x, count, jnp.linalg.norm(r, axis=1) / norm_rhs


def _systems(whitened: WhitenedOperator, space: str):
    """``G`` for the chosen space, batched."""
    if space == "data":
        return lambda x: whitened.apply(whitened.transpose(x))
    return lambda x: whitened.transpose(whitened.apply(x))


def single_precision(whitened: WhitenedOperator) -> WhitenedOperator:
    """``whitened`` with float32 (complex64) arrays: FFT products 1.7x faster.

    Each product then carries a relative error of about 2e-7 (the motivating
    case), against the float64 product; :func:`krylov_draws` uses it for the
    conjugate-gradient products of the kernel draws, whose Monte Carlo error
    is five orders of magnitude larger (docs/benchmarks.md).
    """

    def cast(leaf):
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            return leaf.astype(jnp.complex64)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(jnp.float32)
        return leaf

    return jax.tree_util.tree_map(cast, whitened)


def krylov_draws(
    rng_key: jax.Array,
    summary: KrylovSummary,
    whitened: WhitenedOperator,
    observed: jax.Array,
    noise_sigma: jax.Array,
    kernel_scale: jax.Array,
    *,
    rtol: float = CG_RTOL,
    maxiter: int = CG_MAXITER,
    deflate: bool = True,
    products: WhitenedOperator | None = None,
):
    """Exact latent draws given ``(sigma, s)`` by perturbation-optimisation.

    Parameters
    ----------
    noise_sigma, kernel_scale : (b,) arrays
    deflate : bool
        Use the Ritz-pair deflation preconditioner (``False``: plain CG, for the
        benchmark's comparison).
    products : WhitenedOperator, optional
        The same operator in float32 (:func:`single_precision`), for
        the conjugate-gradient products only; vectors, residuals and the
        preconditioner stay in ``whitened``'s precision. Default: ``whitened``.

    Returns
    -------
    latent : (b, p) array
    iterations : (b,) int array
    residual : (b,) array
    """
    if products is None:
        gram = _systems(whitened, summary.space)
    else:
        low = _systems(products, summary.space)

        def gram(x):
            return low(x.astype(jnp.float32)).astype(x.dtype)

    sigma2 = noise_sigma**2
    ratio = kernel_scale**2 / sigma2
    batch = noise_sigma.shape[0]

    def matvec(x):
        return x + ratio[:, None] * gram(x)

    if deflate:
        vectors = jnp.asarray(summary.ritz_vectors)
        shrink = 1.0 - 1.0 / (1.0 + ratio[:, None] * jnp.asarray(summary.ritz_values)[None])

        def precondition(r):
            # (I + t U diag(th) U^T)^{-1} for orthonormal U: exact on span(U).
            return r - ((r @ vectors.T) * shrink) @ vectors
    else:

        def precondition(r):
            return r

    key_a, key_b = jax.random.split(rng_key)
    if summary.space == "data":
        # Matheron: z = z0 + (s / sigma^2) W^T (I + t W W^T)^{-1} (B - s W z0 - e).
        z0 = jax.random.normal(key_a, (batch, whitened.num_latent), observed.dtype)
        noise = jax.random.normal(key_b, (batch, whitened.num_observed), observed.dtype)
        rhs = observed - kernel_scale[:, None] * whitened.apply(z0) - noise_sigma[:, None] * noise
        x, count, residual = pcg(matvec, precondition, rhs, rtol, maxiter)
        latent = z0 + (kernel_scale / sigma2)[:, None] * whitened.transpose(x)
    else:
        # (I + t W^T W) z = (s / sigma^2) W^T (B + sigma e1) + e2: a posterior draw.
        e1 = jax.random.normal(key_a, (batch, whitened.num_observed), observed.dtype)
        e2 = jax.random.normal(key_b, (batch, whitened.num_latent), observed.dtype)
        perturbed = observed + noise_sigma[:, None] * e1
        rhs = (kernel_scale / sigma2)[:, None] * whitened.transpose(perturbed) + e2
        latent, count, residual = pcg(matvec, precondition, rhs, rtol, maxiter)
    return latent, count, residual
