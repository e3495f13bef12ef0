"""The matrix-free (Krylov) exact route against dense closed forms and the dense route."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mc import Z, assert_moments_match
from reference import convolution_matrix, gaussian_posterior, smooth_prior_covariance

import bayeskernel as bk
from bayeskernel.forward import make_operator
from bayeskernel.infer.collapsed import choose_solver
from bayeskernel.infer.exact import whitened_operator
from bayeskernel.infer.krylov import (
    CG_RTOL,
    krylov_draws,
    krylov_log_marginal_likelihood,
    krylov_summary,
    log_det_error,
)
from bayeskernel.priors import SmoothPrior

# Data space (more kernel entries than pixels) and kernel space.
CASES = [((8, 8), (11, 11), "same"), ((9, 7), (4, 6), "full")]


@pytest.mark.parametrize("image_shape,kernel_shape,mode", CASES)
def test_krylov_draws_at_fixed_hyperparameters_match_closed_form(image_shape, kernel_shape, mode):
    case = bk.simulate(image_shape, "gaussian", kernel_shape, noise_sigma=0.05, mode=mode, seed=1)
    sigma, scale = 0.05, 0.03
    H = convolution_matrix(case.A, kernel_shape, mode)
    mean, cov = gaussian_posterior(
        H, case.B.ravel(), scale**2 * smooth_prior_covariance(kernel_shape, 1), sigma
    )
    num = 2000
    post = bk.fit(
        case.A, case.B, kernel_shape, mode=mode, prior="smooth", method="exact", solver="krylov",
        noise_sigma=sigma, kernel_scale=scale, num_samples=num, seed=3, progress_bar=False,
        draws_dtype=np.float64,
    )  # fmt: skip
    diag = post.diagnostics
    assert diag["solver"] == "krylov"
    assert diag["space"] == ("kernel" if np.prod(kernel_shape) <= case.B.size else "data")
    assert diag["cg_max_residual"] <= diag["cg_rtol"]
    assert_moments_match(post.kernel_draws, mean, np.sqrt(np.diag(cov)), ess=num)
    d = mean.size
    centred = post.kernel_draws.reshape(num, d) - mean
    mahalanobis = np.einsum("ij,ij->i", centred, np.linalg.solve(cov, centred.T).T)
    assert abs(mahalanobis.mean() - d) < Z * np.sqrt(2 * d / num)


@pytest.mark.parametrize("image_shape,kernel_shape,mode", CASES)
def test_lanczos_marginal_likelihood_within_its_reported_error(image_shape, kernel_shape, mode):
    case = bk.simulate(image_shape, "gaussian", kernel_shape, noise_sigma=0.05, mode=mode, seed=4)
    H = convolution_matrix(case.A, kernel_shape, mode)
    cov = smooth_prior_covariance(kernel_shape, 1)
    y = case.B.ravel()
    with jax.enable_x64(True):
        op = make_operator(case.A, kernel_shape, mode)
        whitened = whitened_operator(op, SmoothPrior(kernel_shape), None)
        summary = krylov_summary(whitened, jnp.asarray(y), jax.random.PRNGKey(0), num_probes=64)
        for sigma, scale in [(0.05, 0.02), (0.3, 0.1), (0.02, 0.5)]:
            marginal = sigma**2 * np.eye(y.size) + scale**2 * H @ cov @ H.T
            logdet = np.linalg.slogdet(marginal)[1]
            quad = y @ np.linalg.solve(marginal, y)
            dense = -0.5 * (y.size * np.log(2 * np.pi) + logdet + quad)
            ours = float(krylov_log_marginal_likelihood(summary, sigma, scale))
            # The quadratic form is exact (the Krylov space is exhausted); the
            # log-determinant is a Monte Carlo estimate with a reported error.
            error = log_det_error(summary, scale**2 / sigma**2)["logdet_stderr"]
            assert 0 < error < 0.05 * abs(logdet - y.size * np.log(sigma**2)) + 1
            assert abs(ours - dense) < Z * 0.5 * error + 1e-6 * abs(dense)


def test_deflation_cuts_conjugate_gradient_iterations():
    case = bk.simulate((24, 24), "disk", (41, 41), noise_sigma=0.05, seed=5)
    with jax.enable_x64(True):
        op = make_operator(case.A, (41, 41), "same")
        whitened = whitened_operator(op, SmoothPrior((41, 41)), None)
        y = jnp.asarray(case.B.ravel())
        summary = krylov_summary(whitened, y, jax.random.PRNGKey(0), num_steps=200, num_probes=8)
        sigma, scale = jnp.full(4, 0.05), jnp.full(4, 0.05)
        counts = {}
        for deflate in (False, True):
            latent, count, residual = krylov_draws(
                jax.random.PRNGKey(1), summary, whitened, y, sigma, scale, deflate=deflate
            )
            assert float(residual.max()) <= CG_RTOL
            counts[deflate] = float(count.mean())
    # Fewer than a third of plain CG's iterations (bench_exact.py times the motivating case).
    assert counts[True] < counts[False] / 3, counts


def test_krylov_and_dense_agree_on_the_hyperparameters():
    case = bk.simulate((12, 12), "gaussian", (15, 15), noise_sigma=0.05, seed=2)
    fits = {
        solver: bk.fit(
            case.A,
            case.B,
            (15, 15),
            prior="smooth",
            method="map",
            solver=solver,
            num_samples=20,
            progress_bar=False,
        )  # fmt: skip
        for solver in ("dense", "krylov")
    }
    dense, krylov = fits["dense"], fits["krylov"]
    assert krylov.diagnostics["solver"] == "krylov" and dense.diagnostics["solver"] == "dense"
    assert abs(krylov.noise_sigma / dense.noise_sigma - 1) < 0.02
    ratio = krylov.kernel_scale_draws[0, 0] / dense.kernel_scale_draws[0, 0]
    assert abs(ratio - 1) < 0.1


def test_solver_choice_and_errors():
    assert choose_solver("auto", 100, 50_000) == "dense"
    assert choose_solver("auto", 40_000, 10_000) == "krylov"
    with pytest.raises(MemoryError, match="solver='krylov'"):
        choose_solver("dense", 40_000, 20_000)
    case = bk.simulate((12, 12), "gaussian", (3, 3), seed=0)
    with pytest.raises(ValueError, match="solver must be one of"):
        bk.fit(case.A, case.B, (3, 3), prior="smooth", solver="cholesky")
