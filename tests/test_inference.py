"""NUTS, SVI and the exact route against each other and the closed form."""

import numpy as np
import pytest
from mc import Z, assert_moments_match, effective_sizes
from reference import convolution_matrix, gaussian_posterior, smooth_prior_covariance

import bayeskernel as bk

SMALL = dict(image_shape=(48, 48), kernel="gaussian", kernel_shape=(9, 9), noise_sigma=0.05)


@pytest.fixture(scope="module")
def small_case():
    return bk.simulate(**SMALL, seed=11)


@pytest.fixture(scope="module")
def nuts_learned(small_case):
    return bk.fit(
        small_case.A,
        small_case.B,
        (9, 9),
        prior="smooth",
        method="nuts",
        num_warmup=300,
        num_samples=400,
        num_chains=2,
        seed=5,
        progress_bar=False,
    )


@pytest.fixture(scope="module")
def exact_learned(small_case):
    return bk.fit(
        small_case.A,
        small_case.B,
        (9, 9),
        prior="smooth",
        method="exact",
        num_warmup=300,
        num_samples=1000,
        num_chains=2,
        seed=6,
        progress_bar=False,
    )


def test_nuts_fixed_hyperparameters_match_closed_form(small_case):
    sigma, scale = 0.05, 0.02
    post = bk.fit(
        small_case.A,
        small_case.B,
        (9, 9),
        prior="smooth",
        method="nuts",
        noise_sigma=sigma,
        kernel_scale=scale,
        num_warmup=300,
        num_samples=500,
        num_chains=2,
        seed=1,
        progress_bar=False,
        draws_dtype=np.float64,
    )
    H = convolution_matrix(small_case.A, (9, 9), "same")
    mean, cov = gaussian_posterior(
        H, small_case.B.ravel(), scale**2 * smooth_prior_covariance((9, 9), 1), sigma
    )
    assert effective_sizes(post.kernel_draws).min() > 100
    assert_moments_match(post.kernel_draws, mean, np.sqrt(np.diag(cov)))


@pytest.mark.parametrize("which", ["nuts", "exact"])
def test_learned_hyperparameters_recover_noise_and_cover_truth(
    small_case, nuts_learned, exact_learned, which
):
    post = {"nuts": nuts_learned, "exact": exact_learned}[which]
    assert abs(post.noise_sigma - 0.05) < 0.1 * 0.05
    lower, upper = post.interval(0.95)
    assert 0.85 <= bk.coverage(lower, upper, small_case.kernel) <= 1.0
    convergence = post.convergence()["noise_sigma"]
    assert convergence["r_hat"] < 1.05 and convergence["ess"] > 100


def test_collapsed_hyperparameters_match_full_nuts(nuts_learned, exact_learned):
    # Same posterior of (sigma, s): compare means within their Monte Carlo errors.
    for name in ("noise_sigma_draws", "kernel_scale_draws"):
        a, b = getattr(nuts_learned, name), getattr(exact_learned, name)
        mcse = np.hypot(
            a.std() / np.sqrt(effective_sizes(a[..., None])[0]),
            b.std() / np.sqrt(effective_sizes(b[..., None])[0]),
        )
        assert abs(a.mean() - b.mean()) < Z * mcse, name
    # And the kernel: means agree within the posterior's own Monte Carlo error.
    # NUTS is often antithetic here (ESS above the number of draws); such ESS
    # estimates are noisy and would understate the Monte Carlo error, so cap them.
    draws = nuts_learned.kernel_draws.shape[0] * nuts_learned.kernel_draws.shape[1]
    ess = np.minimum(effective_sizes(nuts_learned.kernel_draws), draws)
    z = np.abs(nuts_learned.kernel_mean - exact_learned.kernel_mean).ravel() / (
        exact_learned.kernel_sd.ravel() * np.sqrt(1 / ess + 1 / 2000)
    )
    assert z.max() < Z


def test_svi_runs_and_is_roughly_right(small_case):
    post = bk.fit(
        small_case.A,
        small_case.B,
        (9, 9),
        prior="smooth",
        method="svi",
        num_steps=4000,
        num_samples=300,
        seed=2,
        progress_bar=False,
    )
    assert post.kernel_draws.shape == (1, 300, 9, 9)
    assert abs(post.noise_sigma - 0.05) < 0.2 * 0.05
    assert bk.relative_error(post.kernel_mean, small_case.kernel) < 0.5


@pytest.mark.parametrize("method", ["exact", "map", "svi"])
def test_same_seed_same_result(small_case, method):
    kwargs = dict(
        prior="smooth",
        method=method,
        num_warmup=50,
        num_samples=20,
        num_steps=200,
        progress_bar=False,
    )
    first = bk.fit(small_case.A, small_case.B, (9, 9), seed=4, **kwargs)
    second = bk.fit(small_case.A, small_case.B, (9, 9), seed=4, **kwargs)
    third = bk.fit(small_case.A, small_case.B, (9, 9), seed=5, **kwargs)
    np.testing.assert_array_equal(first.kernel_draws, second.kernel_draws)
    np.testing.assert_array_equal(first.noise_sigma_draws, second.noise_sigma_draws)
    assert not np.array_equal(first.kernel_draws, third.kernel_draws)


def test_nuts_same_seed_same_result(small_case):
    kwargs = dict(
        prior="smooth",
        method="nuts",
        num_warmup=20,
        num_samples=10,
        num_chains=1,
        progress_bar=False,
    )
    first = bk.fit(small_case.A, small_case.B, (9, 9), seed=4, **kwargs)
    second = bk.fit(small_case.A, small_case.B, (9, 9), seed=4, **kwargs)
    np.testing.assert_array_equal(first.kernel_draws, second.kernel_draws)
