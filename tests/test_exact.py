"""The exact route against dense closed-form Gaussian posteriors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mc import Z, assert_moments_match, effective_sizes
from reference import convolution_matrix, gaussian_posterior, log_marginal, smooth_prior_covariance

import bayeskernel as bk
from bayeskernel.forward import make_operator
from bayeskernel.infer.exact import (
    decompose,
    likelihood_terms,
    log_marginal_likelihood,
    whitened_operator,
)
from bayeskernel.model import default_hyper_scales
from bayeskernel.priors import SmoothPrior

# prior='auto''s candidates other than the radial profile with a residual.
SEPARATE = ("smooth", "smooth2", "radial", "radial1")

# (image, kernel, mode): kernel-space (p <= n) and data-space (p > n) cases.
CASES = [
    ((20, 20), (5, 5), "same"),
    ((8, 8), (11, 11), "same"),
    ((9, 7), (4, 6), "full"),
    ((12, 12), (5, 3), "valid"),
]


def _case(image_shape, kernel_shape, mode, seed=0):
    case = bk.simulate(
        image_shape, "gaussian", kernel_shape, noise_sigma=0.05, mode=mode, seed=seed
    )
    return case


@pytest.mark.parametrize("image_shape,kernel_shape,mode", CASES)
def test_log_marginal_likelihood_matches_dense(image_shape, kernel_shape, mode):
    case = _case(image_shape, kernel_shape, mode)
    H = convolution_matrix(case.A, kernel_shape, mode)
    cov = smooth_prior_covariance(kernel_shape, 1)
    with jax.enable_x64(True):
        op = make_operator(case.A, kernel_shape, mode)
        whitened = whitened_operator(op, SmoothPrior(kernel_shape), None)
        spectrum = decompose(whitened, jnp.asarray(case.B.ravel()))
        assert spectrum.space == ("kernel" if np.prod(kernel_shape) <= case.B.size else "data")
        for sigma, scale in [(0.05, 0.02), (0.3, 0.1), (0.01, 1.0)]:
            ours = float(log_marginal_likelihood(spectrum, sigma, scale))
            dense = log_marginal(H, case.B.ravel(), scale**2 * cov, sigma)
            assert abs(ours - dense) < 1e-8 * abs(dense) + 1e-8
            # What the hyperparameter stage reads: zero eigenvalues padded on.
            terms = likelihood_terms(spectrum)
            assert terms.eigenvalues.shape[0] >= 128 and terms.basis is None
            padded = float(log_marginal_likelihood(terms, sigma, scale))
            assert abs(padded - dense) < 1e-8 * abs(dense) + 1e-8


@pytest.mark.parametrize("image_shape,kernel_shape,mode", CASES)
def test_exact_draws_at_fixed_hyperparameters_match_closed_form(image_shape, kernel_shape, mode):
    case = _case(image_shape, kernel_shape, mode, seed=1)
    sigma, scale = 0.05, 0.03
    H = convolution_matrix(case.A, kernel_shape, mode)
    mean, cov = gaussian_posterior(
        H, case.B.ravel(), scale**2 * smooth_prior_covariance(kernel_shape, 1), sigma
    )
    num = 4000
    post = bk.fit(
        case.A,
        case.B,
        kernel_shape,
        mode=mode,
        prior="smooth",
        method="exact",
        noise_sigma=sigma,
        kernel_scale=scale,
        num_samples=num,
        seed=3,
        progress_bar=False,
        draws_dtype=np.float64,
    )
    assert post.kernel_draws.shape == (1, num) + kernel_shape
    # Independent draws: the effective sample size is the number of draws.
    assert_moments_match(post.kernel_draws, mean, np.sqrt(np.diag(cov)), ess=num)
    # Whole covariance: the squared Mahalanobis distance averages d (sd sqrt(2d)).
    d = mean.size
    centred = post.kernel_draws.reshape(num, d) - mean
    mahalanobis = np.einsum("ij,ij->i", centred, np.linalg.solve(cov, centred.T).T)
    assert abs(mahalanobis.mean() - d) < Z * np.sqrt(2 * d / num)


def test_map_finds_the_marginal_likelihood_maximum():
    case = _case((24, 24), (7, 7), "same", seed=2)
    post = bk.fit(
        case.A, case.B, (7, 7), prior="smooth", method="map", num_samples=50, progress_bar=False
    )
    H = convolution_matrix(case.A, (7, 7), "same")
    cov = smooth_prior_covariance((7, 7), 1)
    sigma, scale = post.noise_sigma, float(post.kernel_scale_draws[0, 0])
    best = log_marginal(H, case.B.ravel(), scale**2 * cov, sigma)
    for ds in (0.97, 1.03):
        assert log_marginal(H, case.B.ravel(), scale**2 * cov, sigma * ds) < best
        assert log_marginal(H, case.B.ravel(), (ds * scale) ** 2 * cov, sigma) < best
    assert abs(post.noise_sigma - 0.05) < 0.1 * 0.05


def test_grid_and_nuts_hyperparameter_draws_agree():
    case = _case((32, 32), (7, 7), "same", seed=6)
    fits = {
        sampler: bk.fit(
            case.A,
            case.B,
            (7, 7),
            prior="smooth",
            hyper_sampler=sampler,
            num_samples=500,
            seed=1,
            progress_bar=False,
        )  # fmt: skip
        for sampler in ("grid", "nuts")
    }
    assert fits["grid"].diagnostics["hyper_sampler"] == "grid"
    assert fits["nuts"].diagnostics["hyper_sampler"] == "nuts"
    for name in ("noise_sigma_draws", "kernel_scale_draws"):
        a, b = (np.asarray(getattr(fits[s], name)) for s in ("grid", "nuts"))
        # Monte Carlo standard errors from ArviZ's ESS (grid draws are independent).
        ess_a, ess_b = effective_sizes(a)[0], effective_sizes(b)[0]
        se = np.hypot(a.std() / np.sqrt(ess_a), b.std() / np.sqrt(ess_b))
        assert abs(a.mean() - b.mean()) < Z * se, name
        assert abs(a.std() / b.std() - 1) < 0.15, name
    with pytest.raises(ValueError, match="hyper_sampler must be one of"):
        bk.fit(case.A, case.B, (7, 7), prior="smooth", hyper_sampler="laplace")


def test_log_evidence_matches_brute_force_integration():
    case = _case((12, 12), (5, 5), "same", seed=7)
    post = bk.fit(case.A, case.B, (5, 5), prior="smooth", num_samples=50, progress_bar=False)
    ours = post.diagnostics["log_evidence"]
    # Independent reference: dense N(B | 0, sigma^2 I + s^2 H C H^T) times the
    # hyperpriors, integrated by brute force over (log sigma, log s).
    H = convolution_matrix(case.A, (5, 5), "same")
    g, U = np.linalg.eigh(H @ smooth_prior_covariance((5, 5), 1) @ H.T)
    d2 = (U.T @ case.B.ravel()) ** 2
    scales = default_hyper_scales(case.A, case.B, (5, 5))
    log_sigma = np.linspace(np.log(0.01), np.log(0.2), 500)[:, None, None]
    log_s = np.linspace(np.log(1e-3), np.log(1.0), 500)[None, :, None]
    sigma2, s2 = np.exp(2 * log_sigma), np.exp(2 * log_s)
    total = sigma2 + s2 * np.clip(g, 0, None)
    log_lik = -0.5 * (g.size * np.log(2 * np.pi) + np.log(total).sum(-1) + (d2 / total).sum(-1))
    sigma, s = np.exp(log_sigma[..., 0]), np.exp(log_s[..., 0])
    log_prior = (
        np.log(2 / (np.pi * scales.kernel * (1 + (s / scales.kernel) ** 2)))
        + np.log(np.sqrt(2 / np.pi) / scales.noise) - sigma**2 / (2 * scales.noise**2)
        + np.log(sigma) + np.log(s)  # densities in log coordinates
    )  # fmt: skip
    joint = log_lik + log_prior
    peak = joint.max()
    cell = np.diff(log_sigma[:, 0, 0])[0] * np.diff(log_s[0, :, 0])[0]
    reference = peak + np.log(np.trapezoid(np.trapezoid(np.exp(joint - peak)))) + np.log(cell)
    assert abs(ours - reference) < 1e-3


def test_compare_by_evidence_prefers_the_smooth_prior_for_a_smooth_kernel():
    case = _case((24, 24), (7, 7), "same", seed=8)
    fits = {
        p: bk.fit(case.A, case.B, (7, 7), prior=p, num_samples=50, progress_bar=False)
        for p in ("smooth2", "iid")
    }
    table = bk.compare(fits, method="evidence")
    assert list(table.index) == ["smooth2", "iid"]
    assert table["d_log_evidence"].iloc[1] > 3 and abs(table["weight"].sum() - 1) < 1e-12
    fits["map"] = bk.fit(
        case.A, case.B, (7, 7), prior="smooth", method="map", num_samples=5, progress_bar=False
    )
    with pytest.raises(ValueError, match="'map' has no log evidence"):
        bk.compare(fits, method="evidence")


def test_prior_auto_picks_the_highest_evidence_and_equals_that_fit():
    radial_case = bk.simulate((32, 32), "gaussian", (7, 7), noise_sigma=0.05, seed=3)
    # Candidates without a nested one (a radial profile with a small residual
    # scores within a nat of the profile alone on a radial kernel).
    post = bk.fit(radial_case.A, radial_case.B, (7, 7), prior=list(SEPARATE), num_samples=100,
                  progress_bar=False)  # fmt: skip
    evidence = post.diagnostics["prior_evidence"]
    assert set(evidence) == set(SEPARATE)
    assert post.prior == max(evidence, key=evidence.get) == "radial"
    # The fit's evidence is the average's, log mean_m p(B | m), whichever
    # candidates the draws came from (here all from 'radial').
    assert post.diagnostics["prior_draws"]["radial"] == 200
    values = np.array(list(evidence.values()))
    average = values.max() + np.log(np.mean(np.exp(values - values.max())))
    assert post.diagnostics["log_evidence"] == pytest.approx(average, abs=1e-9)
    direct = bk.fit(radial_case.A, radial_case.B, (7, 7), prior="radial", num_samples=100,
                    progress_bar=False)  # fmt: skip
    np.testing.assert_array_equal(post.kernel_draws, direct.kernel_draws)
    # A motion streak is not radially symmetric: the evidence says so.
    motion = bk.simulate((32, 32), "motion", (7, 7), noise_sigma=0.05, seed=3)
    chosen = bk.fit(motion.A, motion.B, (7, 7), prior=["radial", "smooth"], num_samples=50,
                    progress_bar=False)  # fmt: skip
    assert chosen.prior == "smooth"
    assert chosen.diagnostics["prior_weights"]["smooth"] > 1 - 1e-12
    # The Krylov solver's evidence is stochastic (probes): the seed fixes it,
    # so a completed candidate's score equals the evidence of a direct fit (to
    # a millionth of a nat: the score's grid is the coarser scoring grid).
    krylov = bk.fit(motion.A, motion.B, (7, 7), prior=["smooth", "smooth2"], solver="krylov",
                    num_samples=20, progress_bar=False)  # fmt: skip
    direct = bk.fit(motion.A, motion.B, (7, 7), prior="smooth2", solver="krylov",
                    num_samples=20, progress_bar=False)  # fmt: skip
    assert direct.diagnostics["solver"] == "krylov"
    score = krylov.diagnostics["prior_evidence"]["smooth2"]
    assert score == pytest.approx(direct.diagnostics["log_evidence"], rel=0, abs=1e-6)
    assert krylov.kernel_draws.shape[:2] == (2, 20)


def test_prior_auto_averages_close_candidates_as_a_mixture():
    # A 5x5 disk at noise 0.1: the radial profiles of order 1 and 2 are 0.46
    # nats apart, so neither should be dropped. The mixture's moments must be
    # the weighted mixture of the two posteriors (reference: direct fits).
    disk = bk.simulate((24, 24), "disk", (5, 5), noise_sigma=0.1, seed=0)
    post = bk.fit(disk.A, disk.B, (5, 5), prior=list(SEPARATE), num_samples=400,
                  progress_bar=False)  # fmt: skip
    weights, draws = post.diagnostics["prior_weights"], post.diagnostics["prior_draws"]
    assert post.prior.startswith("average(radial1 0.6") and "radial 0.3" in post.prior
    assert abs(sum(weights.values()) - 1) < 1e-12 and sum(draws.values()) == 800
    assert post.kernel_draws.shape == (2, 400, 5, 5) and post.noise_sigma_draws.shape == (2, 400)
    evidence = np.array(list(post.diagnostics["prior_evidence"].values()))
    expected = np.log(np.mean(np.exp(evidence - evidence.max()))) + evidence.max()
    assert post.diagnostics["log_evidence"] == pytest.approx(expected, abs=1e-9)
    means, second = 0.0, 0.0
    for name in ("radial", "radial1"):
        ref = bk.fit(disk.A, disk.B, (5, 5), prior=name, num_samples=2000, progress_bar=False)
        k = ref.kernel_draws.reshape(-1, 25).astype(float)
        means = means + weights[name] * k.mean(0)
        second = second + weights[name] * (k**2).mean(0)
    sd = np.sqrt(second - means**2)
    # The reference has 4,000 draws per component: its own error is small.
    assert_moments_match(post.kernel_draws, means, sd, ess=800, z=4.5)
    # Solver facts stay with each component; same seed, same mixture.
    assert "solver" not in post.diagnostics
    assert "prior weights    radial1 0.6" in str(post)
    assert set(post.diagnostics["components"]) == {"radial", "radial1"}
    again = bk.fit(disk.A, disk.B, (5, 5), prior=list(SEPARATE), num_samples=400,
                   progress_bar=False)  # fmt: skip
    np.testing.assert_array_equal(again.kernel_draws, post.kernel_draws)
    other = bk.fit(disk.A, disk.B, (5, 5), prior=list(SEPARATE), num_samples=400, seed=2**32,
                   progress_bar=False)  # fmt: skip
    assert not np.array_equal(other.kernel_draws, post.kernel_draws)  # 64-bit seeds


def test_prior_auto_picks_the_order_one_radial_walk_for_a_disk():
    # A disk's rim is a step between two neighbouring pixel distances: the
    # first-order walk (radial1) fits it, the evidence says so.
    disk = bk.simulate((48, 48), "disk", (11, 11), noise_sigma=0.01, seed=5)
    post = bk.fit(disk.A, disk.B, (11, 11), prior="auto", num_samples=100, progress_bar=False)
    evidence = post.diagnostics["prior_evidence"]
    assert post.prior == "radial1" and evidence["radial1"] > evidence["radial"] + 3
    error = bk.relative_error(post.kernel_mean, disk.kernel)
    for other in ("smooth", "radial"):
        fitted = bk.fit(disk.A, disk.B, (11, 11), prior=other, num_samples=100,
                        progress_bar=False)  # fmt: skip
        assert error < bk.relative_error(fitted.kernel_mean, disk.kernel)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(prior="auto", method="map"), "needs method='exact' or 'auto'"),
        (dict(prior=[]), "empty sequence"),
        (dict(prior=["smooth", "gaussian"]), "needs a linear-Gaussian prior"),
        (dict(prior="auto", hyper_sampler="nuts"), "needs the grid sampler"),
        (dict(prior=["smooth", "smooth"]), "both named 'smooth'"),
        (dict(prior="auto", num_samples=0), "num_samples must be a positive integer"),
    ],
)
def test_prior_by_evidence_bad_arguments(kwargs, message):
    case = bk.simulate((16, 16), "gaussian", (5, 5), noise_sigma=0.05, seed=3)
    with pytest.raises(ValueError, match=message):
        bk.fit(case.A, case.B, (5, 5), **{"num_samples": 20, "progress_bar": False, **kwargs})
