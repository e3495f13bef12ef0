"""Warnings: convergence, divergences and residuals that are not white noise."""

import numpy as np
import pytest
import scipy.ndimage

import bayeskernel as bk
from bayeskernel.diagnostics import diagnose, lag1_autocorrelation, residuals


def _posterior(rng, *, sigma, scale, kernels=None, method="exact", **kwargs):
    chains, draws = sigma.shape
    if kernels is None:
        kernels = rng.normal(size=(chains, draws, 3, 3))
    return bk.KernelPosterior(
        kernel_draws=kernels, noise_sigma_draws=sigma, kernel_scale_draws=scale,
        method=method, prior="smooth", **kwargs,
    )  # fmt: skip


def test_well_mixed_independent_draws_give_no_warning(rng):
    posterior = _posterior(
        rng, sigma=rng.uniform(1, 2, (2, 500)), scale=rng.uniform(1, 2, (2, 500))
    )
    assert diagnose(posterior) == []
    assert posterior.summary()["warnings"] == []
    assert "warning" not in str(posterior)


def test_chains_that_disagree_are_reported_with_what_to_try(rng):
    sigma = rng.uniform(1, 2, (2, 500))
    sigma[1] += 1.0  # the second chain sits elsewhere
    posterior = _posterior(rng, sigma=sigma, scale=rng.uniform(1, 2, (2, 500)))
    (warning,) = [w for w in diagnose(posterior) if "r_hat" in w]
    assert "noise sd" in warning and "run longer" in warning


def test_r_hat_is_not_judged_for_independent_draws(rng):
    # The grid sampler's chains are a split of one independent sample: a large
    # r_hat there is chance, and the model average is built on the same draws.
    sigma = rng.uniform(1, 2, (2, 500))
    sigma[1] += 1.0
    scale = rng.uniform(1, 2, (2, 500))
    for facts in ({"hyper_sampler": "grid"}, {"prior_weights": {"radial": 1.0}}):
        posterior = _posterior(rng, sigma=sigma, scale=scale, diagnostics=facts)
        assert [w for w in diagnose(posterior) if "r_hat" in w] == []
    posterior = _posterior(rng, sigma=sigma, scale=scale, diagnostics={"hyper_sampler": "nuts"})
    assert [w for w in diagnose(posterior) if "r_hat" in w] != []


def test_low_ess_is_reported(rng):
    # A random walk: strongly autocorrelated, a handful of effective draws.
    walk = np.cumsum(rng.normal(size=(2, 200)), axis=1)
    posterior = _posterior(rng, sigma=rng.uniform(1, 2, (2, 200)), scale=np.exp(walk / 10))
    warnings = diagnose(posterior)
    assert any("effective sample size of the kernel scale" in w for w in warnings)
    assert not any("effective sample size of the noise sd" in w for w in warnings)


def test_divergences_are_counted(rng):
    diverging = np.zeros((2, 500), dtype=bool)
    diverging[0, :7] = True
    posterior = _posterior(
        rng, sigma=rng.uniform(1, 2, (2, 500)), scale=rng.uniform(1, 2, (2, 500)),
        sample_stats={"diverging": diverging},
    )  # fmt: skip
    (warning,) = diagnose(posterior)
    assert warning.startswith("7 divergent transition(s) (0.7% of draws)")
    assert "num_warmup" in warning
    assert posterior.summary()["warnings"] == [warning]
    assert str(posterior).endswith(f"warning: {warning}")


def test_map_and_fixed_hyperparameters_raise_no_convergence_warning(rng):
    constant = np.full((1, 50), 1.5)
    few = rng.uniform(1, 2, (1, 50))  # ESS < 100 but the route is 'map'
    assert diagnose(_posterior(rng, sigma=constant, scale=few, method="map")) == []
    # Held fixed under 'exact': r_hat/ESS are NaN, nothing to say.
    fixed = _posterior(rng, sigma=np.full((2, 300), 1.5), scale=rng.uniform(1, 2, (2, 300)))
    assert diagnose(fixed) == []


def test_nuts_checks_kernel_entries(rng):
    kernels = rng.normal(size=(2, 300, 3, 3))
    kernels[1] += 3.0  # chains disagree on every entry
    posterior = _posterior(
        rng, sigma=rng.uniform(1, 2, (2, 300)), scale=rng.uniform(1, 2, (2, 300)),
        kernels=kernels, method="nuts",
    )  # fmt: skip
    warnings = diagnose(posterior)
    assert any(w.startswith("9 of 9 checked kernel entries have r_hat") for w in warnings)


def test_lag1_autocorrelation_of_white_noise_and_of_a_smooth_map(rng):
    noise = rng.normal(size=(60, 60))
    rho, pairs = lag1_autocorrelation(noise)
    assert pairs == 2 * 60 * 59
    assert abs(rho) < 4 / np.sqrt(pairs)
    # A 3x3 box average of white noise: lag-1 correlation 2/3 along each axis.
    smooth = scipy.ndimage.uniform_filter(noise, size=3)
    assert lag1_autocorrelation(smooth)[0] == pytest.approx(2 / 3, abs=0.05)
    holes = noise.copy()
    holes[10:20, 10:20] = np.nan
    rho_holes, pairs_holes = lag1_autocorrelation(holes)
    assert pairs_holes < pairs and np.isfinite(rho_holes)


# --- residual checks on real fits ---------------------------------------------------


@pytest.fixture(scope="module")
def case():
    return bk.simulate((24, 24), "gaussian", (9, 9), noise_sigma=0.05, seed=5)


def _fit(case, kernel_shape, **kwargs):
    return bk.fit(
        case.A, case.B, kernel_shape, prior="smooth", method="map", num_samples=20,
        progress_bar=False, **kwargs,
    )  # fmt: skip


def test_a_correct_fit_has_white_residuals(case):
    posterior = _fit(case, (9, 9))
    residual = residuals(posterior)
    assert residual.shape == case.B.shape
    assert np.std(residual) == pytest.approx(posterior.noise_sigma, rel=0.15)
    assert diagnose(posterior) == []


def test_a_kernel_too_small_leaves_correlated_residuals(case):
    warnings = diagnose(_fit(case, (3, 3)))
    (warning,) = [w for w in warnings if "spatially correlated" in w]
    assert "try a larger kernel_shape" in warning


def test_noise_held_too_small_shows_in_the_residual_sd(case):
    warnings = diagnose(_fit(case, (9, 9), noise_sigma=0.01))
    (warning,) = [w for w in warnings if w.startswith("residual sd")]
    assert "times the noise sd estimate 0.01" in warning


def test_an_interpolating_fit_is_flagged():
    # More kernel entries than pixels and an iid prior: the noise sd collapses.
    case = bk.motivating_case(16, seed=0)
    posterior = bk.fit(
        case.A, case.B, (31, 31), prior="iid", method="map", num_samples=20, progress_bar=False
    )
    (warning,) = [w for w in diagnose(posterior) if w.startswith("residual sd")]
    assert "fits the noise itself" in warning


@pytest.mark.parametrize("chains,draws", [(2, 250), (4, 100), (1, 500)])
@pytest.mark.parametrize("correlated", [False, True])
def test_summary_r_hat_and_ess_equal_arviz(rng, chains, draws, correlated):
    # ArviZ's rank-normalised r_hat and bulk ESS are the reference. NumPyro's
    # ESS ends its sum of autocorrelations by another rule: a few per cent apart.
    import arviz as az

    from bayeskernel.posterior import _rhat_ess

    x = rng.standard_normal((chains, draws)) + 0.3 * np.arange(chains)[:, None]
    if correlated:  # an AR(1) chain, about 5 draws per independent one
        for t in range(1, draws):
            x[:, t] = 0.7 * x[:, t - 1] + x[:, t]
    given = x if chains > 1 else x[:, : 2 * (draws // 2)].reshape(2, -1)
    r_hat, ess = _rhat_ess(x)
    np.testing.assert_allclose(r_hat, float(az.rhat(given)), rtol=1e-10)
    np.testing.assert_allclose(ess, float(az.ess(given)), rtol=0.1)
