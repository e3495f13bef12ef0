"""Background blocks and noise weights against the dense closed form.

The reference is the textbook Gaussian over kernel and background
coefficients as one vector, ``y = [H X] [k; beta] + N(0, sigma^2 diag(1/w))``
with ``k ~ N(0, s^2 C)`` and ``beta ~ N(0, tau^2 I)``, on the observed pixels;
the library integrates ``beta`` out by projection (the broad-prior limit), so
``tau`` is made very broad here for the comparison to hold to rounding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mc import Z, assert_moments_match
from reference import convolution_matrix, smooth_prior_covariance

import bayeskernel as bk
import bayeskernel.observation as observation
from bayeskernel.forward import make_operator
from bayeskernel.infer.exact import log_marginal_likelihood
from bayeskernel.infer.krylov import krylov_log_marginal_likelihood, log_det_error
from bayeskernel.infer.stages import prepare
from bayeskernel.observation import background_design, background_terms, observe
from bayeskernel.priors import SmoothPrior

# (image, kernel, mode): kernel-space (p <= n) and data-space (p > n) cases.
CASES = [
    ((16, 16), (5, 5), "same"),
    ((7, 7), (9, 9), "same"),
    ((9, 7), (4, 6), "full"),
    ((12, 12), (5, 3), "valid"),
]
BROAD = 1e6  # tau / rms(B) for the closed-form comparisons


def _data(image_shape, kernel_shape, mode, degree, seed=0):
    """A case with a background of ``degree``, a noise-weight map and a few holes."""
    case = bk.simulate(image_shape, "gaussian", kernel_shape, noise_sigma=0.0, mode=mode, seed=seed)
    rng = np.random.default_rng(seed)
    shape = case.B.shape
    weights = rng.uniform(0.5, 2.0, shape)
    mask = rng.random(shape) > 0.1
    coefficients = rng.normal(size=len(background_terms(degree)))
    noise = 0.05 * rng.normal(size=shape) / np.sqrt(weights)
    B = case.B + (background_design(shape, degree) @ coefficients).reshape(shape) + noise
    return case.A, B, weights, mask, coefficients


def _dense(A, B, weights, mask, kernel_shape, mode, degree, sigma, scale):
    """Joint posterior of [k; beta] and log p(B), densely, on the observed pixels."""
    seen = mask.ravel()
    H = convolution_matrix(A, kernel_shape, mode)[seen]
    X = background_design(B.shape, degree)[seen]
    y, w = B.ravel()[seen], weights.ravel()[seen]
    tau = BROAD * np.sqrt(np.mean(y**2))
    C = scale**2 * smooth_prior_covariance(kernel_shape, 1)
    p, k = H.shape[1], X.shape[1]
    design = np.hstack([H, X])
    prior_precision = np.zeros((p + k, p + k))
    prior_precision[:p, :p] = np.linalg.inv(C)
    prior_precision[p:, p:] = np.eye(k) / tau**2
    precision = design.T @ (design * (w / sigma**2)[:, None]) + prior_precision
    covariance = np.linalg.inv(precision)
    covariance = 0.5 * (covariance + covariance.T)
    mean = covariance @ design.T @ (w * y) / sigma**2
    # log N(y | 0, M + tau^2 X X^T) by the determinant lemma and Woodbury: the
    # broad prior would make the matrix itself too ill-conditioned to factor.
    M = sigma**2 * np.diag(1 / w) + H @ C @ H.T
    sign, logdet = np.linalg.slogdet(M)
    assert sign > 0
    m_y, m_x = np.linalg.solve(M, y), np.linalg.solve(M, X)
    inner = np.eye(k) / tau**2 + X.T @ m_x
    logdet += np.linalg.slogdet(inner)[1] + 2 * k * np.log(tau)
    quad = y @ m_y - (X.T @ m_y) @ np.linalg.solve(inner, X.T @ m_y)
    evidence = -0.5 * (y.size * np.log(2 * np.pi) + logdet + quad)
    return mean, covariance, evidence


@pytest.fixture
def broad(monkeypatch):
    monkeypatch.setattr(observation, "BACKGROUND_PRIOR_SCALE", BROAD)


def test_background_terms_and_design():
    assert background_terms(0) == ("1",)
    assert background_terms(2) == ("1", "y", "x", "y^2", "y x", "x^2")
    design = background_design((3, 5), 2)
    assert design.shape == (15, 6)
    y, x = np.meshgrid(np.linspace(-1, 1, 3), np.linspace(-1, 1, 5), indexing="ij")
    np.testing.assert_allclose(design[:, 4], (y * x).ravel())
    image = observation.background_image([1.0, 2.0, 3.0], (3, 5))
    np.testing.assert_allclose(image, 1 + 2 * y + 3 * x)


@pytest.mark.parametrize("image_shape,kernel_shape,mode", CASES)
@pytest.mark.parametrize("degree", [0, 2])
def test_evidence_with_background_and_weights_matches_dense(
    broad, image_shape, kernel_shape, mode, degree
):
    A, B, weights, mask, _ = _data(image_shape, kernel_shape, mode, degree)
    prior = SmoothPrior(kernel_shape)
    obs = (observe(B, mask, weights, degree),)
    with jax.enable_x64(True):
        op = make_operator(A, kernel_shape, mode)
        key = jax.random.PRNGKey(0)
        dense = prepare(op, prior, jnp.asarray(B), key, observations=obs, solver="dense")
        krylov = prepare(op, prior, jnp.asarray(B), key, observations=obs, solver="krylov")
        for sigma, scale in [(0.05, 0.02), (0.3, 0.1), (0.02, 1.0)]:
            *_, reference = _dense(A, B, weights, mask, kernel_shape, mode, degree, sigma, scale)
            ours = float(log_marginal_likelihood(dense.terms, sigma, scale)) + dense.log_offset
            assert abs(ours - reference) < 1e-8 * abs(reference) + 1e-7, (ours, reference)
            # Krylov: stochastic log-determinant, within its own standard error.
            estimate = krylov_log_marginal_likelihood(krylov.terms, sigma, scale)
            stderr = log_det_error(krylov.summary, scale**2 / sigma**2)["logdet_stderr"]
            gap = abs(float(estimate) + krylov.log_offset - reference)
            assert gap < Z * 0.5 * stderr + 1e-6, (gap, stderr)


@pytest.mark.parametrize("image_shape,kernel_shape,mode", [CASES[0], CASES[2], CASES[3]])
def test_kernel_posterior_with_background_and_weights_matches_dense(
    broad, image_shape, kernel_shape, mode
):
    # Kernel-space spectra: the conditional mean and covariance in closed form.
    degree, sigma, scale = 1, 0.05, 0.03
    A, B, weights, mask, _ = _data(image_shape, kernel_shape, mode, degree, seed=2)
    prior = SmoothPrior(kernel_shape)
    with jax.enable_x64(True):
        prepared = prepare(
            make_operator(A, kernel_shape, mode), prior, jnp.asarray(B), jax.random.PRNGKey(0),
            observations=(observe(B, mask, weights, degree),), solver="dense",
        )  # fmt: skip
        spectrum = prepared.summary
        assert spectrum.space == "kernel"
        p = prior.num_latent
        T = np.asarray(prior.to_kernel(jnp.eye(p))).reshape(p, -1).T  # kernel = T z
    total = sigma**2 + scale**2 * spectrum.eigenvalues
    V = spectrum.basis
    mean_z = V @ (scale * spectrum.latent_projection / total)
    cov_z = V @ np.diag(sigma**2 / total) @ V.T
    mean, cov, _ = _dense(A, B, weights, mask, kernel_shape, mode, degree, sigma, scale)
    entries = int(np.prod(kernel_shape))
    np.testing.assert_allclose(scale * T @ mean_z, mean[:entries], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        scale**2 * T @ cov_z @ T.T, cov[:entries, :entries], rtol=1e-7, atol=1e-12
    )


@pytest.mark.parametrize("image_shape,kernel_shape,mode", [CASES[0], CASES[1]])
@pytest.mark.parametrize("solver", ["dense", "krylov"])
def test_kernel_and_background_draws_match_dense(broad, image_shape, kernel_shape, mode, solver):
    degree, sigma, scale, num = 1, 0.05, 0.03, 3000
    A, B, weights, mask, _ = _data(image_shape, kernel_shape, mode, degree, seed=3)
    mean, cov, _ = _dense(A, B, weights, mask, kernel_shape, mode, degree, sigma, scale)
    post = bk.fit(
        A, np.where(mask, B, np.nan), kernel_shape, mode=mode, prior="smooth", method="exact",
        background=degree, weights=weights, noise_sigma=sigma, kernel_scale=scale,
        num_samples=num, solver=solver, seed=4, progress_bar=False, draws_dtype=np.float64,
    )  # fmt: skip
    entries = int(np.prod(kernel_shape))
    sd = np.sqrt(np.diag(cov))
    assert_moments_match(post.kernel_draws, mean[:entries], sd[:entries], ess=num)
    assert post.background_draws.shape == (1, num, 3)
    assert post.background_terms == ("1", "y", "x")
    assert_moments_match(post.background_draws, mean[entries:], sd[entries:], ess=num)
    # Kernel and background jointly: the squared Mahalanobis distance averages d.
    joint = np.concatenate(
        [post.kernel_draws.reshape(num, -1), post.background_draws.reshape(num, -1)], axis=1
    )
    centred = joint - mean
    distance = np.einsum("ij,ij->i", centred, np.linalg.solve(cov, centred.T).T)
    assert abs(distance.mean() - mean.size) < Z * np.sqrt(2 * mean.size / num)


@pytest.mark.parametrize("method", ["nuts", "svi"])
def test_sampled_routes_agree_with_the_exact_route(method):
    # The NumPyro model has the background as a site and the noise map in its
    # likelihood; its posterior must be the exact route's.
    degree = 1
    A, B, weights, mask, _ = _data((14, 14), (3, 3), "same", degree, seed=5)
    options = dict(prior="smooth", background=degree, weights=weights, progress_bar=False)
    B = np.where(mask, B, np.nan)
    exact = bk.fit(A, B, (3, 3), method="exact", num_samples=1000, seed=1, **options)
    other = bk.fit(A, B, (3, 3), method=method, num_samples=1000, seed=1, **options)
    assert other.background_draws.shape[-1] == 3 and other.background_terms == ("1", "y", "x")
    sd = exact.kernel_draws.reshape(-1, 9).std(axis=0)
    gap = np.abs(other.kernel_mean - exact.kernel_mean).ravel() / sd
    # NUTS: within Monte Carlo error (1000 x 2 draws: a few hundredths of an sd
    # each); SVI's Gaussian guide is an approximation (about 1 sd here).
    assert gap.max() < (0.5 if method == "nuts" else 2.0), gap
    background_sd = exact.background_draws.reshape(-1, 3).std(axis=0)
    background_gap = np.abs(other.background_mean - exact.background_mean) / background_sd
    assert background_gap.max() < (0.5 if method == "nuts" else 2.0), background_gap
    assert abs(other.noise_sigma / exact.noise_sigma - 1) < 0.1


def test_a_sky_offset_is_recovered_and_named_when_missing():
    case = bk.simulate((40, 40), "gaussian", (7, 7), noise_sigma=0.05, seed=1)
    B = case.B + 3.0
    plain = bk.fit(case.A, B, (7, 7), prior="smooth", progress_bar=False)
    assert any("background=0" in text for text in plain.summary()["warnings"])
    fitted = bk.fit(case.A, B, (7, 7), prior="smooth", background=0, progress_bar=False)
    lower, upper = fitted.background_interval(0.95)
    assert lower[0] <= 3.0 <= upper[0]
    assert not any("background" in text for text in fitted.summary()["warnings"])
    error = np.linalg.norm(fitted.kernel_mean - case.kernel) / np.linalg.norm(case.kernel)
    assert (
        error < 0.2 < np.linalg.norm(plain.kernel_mean - case.kernel) / np.linalg.norm(case.kernel)
    )
    np.testing.assert_allclose(fitted.background_image(), fitted.background_mean[0], rtol=0)


def test_photon_noise_without_a_variance_map_is_named():
    rng = np.random.default_rng(0)
    A = np.zeros((64, 64))
    A[rng.integers(0, 64, 60), rng.integers(0, 64, 60)] = rng.uniform(100, 5000, 60)
    kernel = bk.make_kernel("gaussian", (7, 7), width=1.2)
    signal = bk.convolve(A, kernel)
    B = rng.poisson(np.clip(signal, 0, None) + 5.0) - 5.0
    plain = bk.fit(A, B, (7, 7), prior="smooth", progress_bar=False)
    assert any("variance=" in text for text in plain.summary()["warnings"])
    variance = bk.ccd_variance(B + 5.0, gain=1.0, read_noise=0.0)
    weighted = bk.fit(A, B, (7, 7), prior="smooth", variance=variance, progress_bar=False)
    assert not any("variance=" in text for text in weighted.summary()["warnings"])
    assert 0.8 < weighted.noise_sigma < 1.25  # the map is right: sigma is about 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"background": -1}, "background must be None or a polynomial degree"),
        ({"background": 1.5}, "background must be None or a polynomial degree"),
        ({"background": True}, "background must be None or a polynomial degree"),
        ({"variance": np.zeros((12, 12))}, "variance must be positive where finite"),
        ({"variance": np.ones((5, 5))}, r"variance must have B's shape \(12, 12\)"),
        ({"weights": np.zeros((12, 12))}, "weights leaves no observed pixel"),
        ({"weights": -np.ones((12, 12))}, "weights must be finite and >= 0"),
        ({"weights": np.ones((12, 12)), "variance": np.ones((12, 12))}, "not both"),
    ],
)
def test_bad_background_and_noise_arguments(kwargs, message):
    case = bk.simulate((12, 12), "gaussian", (3, 3), noise_sigma=0.1, seed=0)
    with pytest.raises(ValueError, match=message):
        bk.fit(case.A, case.B, (3, 3), progress_bar=False, **{"prior": "smooth", **kwargs})


def test_background_and_weights_survive_save_and_load(tmp_path):
    case = bk.simulate((16, 16), "gaussian", (5, 5), noise_sigma=0.05, seed=2)
    variance = np.full(case.B.shape, 0.05**2)
    variance[0, 0] = np.nan  # unobserved
    post = bk.fit(case.A, case.B + 1.0, (5, 5), prior="smooth", background=1, variance=variance,
                  num_samples=20, progress_bar=False)  # fmt: skip
    loaded = bk.load(bk.io.save(post, tmp_path / "p.nc"))
    np.testing.assert_array_equal(loaded.background_draws, post.background_draws)
    assert loaded.background_terms == ("1", "y", "x")
    np.testing.assert_array_equal(loaded.noise_weights, post.noise_weights)
    assert loaded.noise_weights[0, 0] == 0
    assert str(loaded) == str(post)


def _conditioned_on_sum(mean, cov, total):
    """The Gaussian N(mean, cov) conditioned on sum(k) = total."""
    ones = np.ones(mean.size)
    spread = cov @ ones
    return (
        mean + spread * (total - ones @ mean) / (ones @ spread),
        cov - np.outer(spread, spread) / (ones @ spread),
    )


@pytest.mark.parametrize("image_shape,kernel_shape,mode", [CASES[0], CASES[1], CASES[2]])
def test_a_fixed_kernel_sum_is_exact_in_draws_and_evidence(image_shape, kernel_shape, mode):
    from reference import gaussian_posterior, log_marginal

    sigma, scale, total, num = 0.05, 0.03, 1.0, 3000
    case = bk.simulate(image_shape, "gaussian", kernel_shape, noise_sigma=sigma, mode=mode, seed=6)
    H = convolution_matrix(case.A, kernel_shape, mode)
    prior_cov = scale**2 * smooth_prior_covariance(kernel_shape, 1)
    mean, cov = gaussian_posterior(H, case.B.ravel(), prior_cov, sigma)
    mean, cov = _conditioned_on_sum(mean, cov, total)
    post = bk.fit(
        case.A, case.B, kernel_shape, mode=mode, prior="smooth", method="exact",
        noise_sigma=sigma, kernel_scale=scale, kernel_sum=total, num_samples=num, seed=2,
        progress_bar=False, draws_dtype=np.float64,
    )  # fmt: skip
    sums = post.kernel_draws.sum(axis=(2, 3))
    np.testing.assert_allclose(sums, total, atol=1e-8)
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    assert_moments_match(post.kernel_draws, mean, sd, ess=num)
    # The evidence: p(B | sum = c) = p(B) N(c; 1^T m, 1^T S 1) / N(c; 0, 1^T C 1).
    with jax.enable_x64(True):
        prepared = prepare(
            make_operator(case.A, kernel_shape, mode), SmoothPrior(kernel_shape),
            jnp.asarray(case.B), jax.random.PRNGKey(0), solver="dense", kernel_sum=total,
        )  # fmt: skip
        ours = float(log_marginal_likelihood(prepared.terms, sigma, scale))
    free_mean, free_cov = gaussian_posterior(H, case.B.ravel(), prior_cov, sigma)
    ones = np.ones(free_mean.size)

    def log_normal(x, m, v):
        return -0.5 * (np.log(2 * np.pi * v) + (x - m) ** 2 / v)

    reference = (
        log_marginal(H, case.B.ravel(), prior_cov, sigma)
        + log_normal(total, ones @ free_mean, ones @ free_cov @ ones)
        - log_normal(total, 0.0, ones @ prior_cov @ ones)
    )
    assert abs(ours - reference) < 1e-8 * abs(reference) + 1e-7, (ours, reference)


def test_a_fixed_kernel_sum_with_learned_hyperparameters_and_a_background():
    case = bk.simulate((32, 32), "gaussian", (7, 7), noise_sigma=0.05, seed=7)
    post = bk.fit(case.A, case.B + 2.0, (7, 7), background=0, kernel_sum=1.0, progress_bar=False,
                  draws_dtype=np.float64)  # fmt: skip
    np.testing.assert_allclose(post.kernel_draws.sum(axis=(2, 3)), 1.0, atol=1e-8)
    assert post.summary()["kernel_sum"]["sd"] < 1e-8
    lower, upper = post.background_interval(0.99)
    assert lower[0] < 2.0 < upper[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kernel_sum": float("nan")}, "kernel_sum must be a finite number"),
        ({"kernel_sum": 1.0, "method": "nuts"}, "kernel_sum= is exact in the exact route"),
        ({"kernel_sum": 1.0, "prior": "gaussian"}, "kernel_sum= needs a linear-Gaussian prior"),
        ({"kernel_sum": 1.0, "solver": "krylov"}, "kernel_sum= is exact with the dense solver"),
    ],
)
def test_bad_kernel_sum_arguments(kwargs, message):
    case = bk.simulate((12, 12), "gaussian", (3, 3), noise_sigma=0.1, seed=0)
    with pytest.raises(ValueError, match=message):
        bk.fit(case.A, case.B, (3, 3), progress_bar=False, **{"prior": "smooth", **kwargs})


def test_predict_is_the_blurred_mean_kernel_plus_the_background():
    from scipy.signal import convolve2d

    case = bk.simulate((20, 20), "gaussian", (5, 5), noise_sigma=0.05, mode="valid", seed=8)
    post = bk.fit(case.A, case.B + 1.5, (5, 5), mode="valid", prior="smooth", background=1,
                  num_samples=20, progress_bar=False)  # fmt: skip
    expected = convolve2d(case.A, post.kernel_mean, "valid") + post.background_image()
    np.testing.assert_allclose(post.predict(), expected, rtol=1e-10, atol=1e-12)
    assert post.predict().shape == case.B.shape
    plain = bk.fit(case.A, case.B, (5, 5), mode="valid", prior="smooth", num_samples=20,
                   progress_bar=False)  # fmt: skip
    np.testing.assert_allclose(
        plain.predict(), convolve2d(case.A, plain.kernel_mean, "valid"), rtol=1e-10, atol=1e-12
    )


# NUTS with a background site is checked against the exact route above; here
# with two pairs it is a slow check (about 17 s).
@pytest.mark.parametrize("method", ["exact", pytest.param("nuts", marks=pytest.mark.slow)])
def test_several_pairs_have_a_background_each(method):
    first = bk.simulate((20, 20), "gaussian", (5, 5), noise_sigma=0.05, seed=9)
    second = bk.simulate((16, 18), "gaussian", (5, 5), noise_sigma=0.05, seed=10)
    skies = (2.0, -1.0)
    post = bk.fit(
        [first.A, second.A], [first.B + skies[0], second.B + skies[1]], (5, 5),
        prior="smooth", method=method, background=0, num_samples=200, num_warmup=200,
        progress_bar=False,
    )  # fmt: skip
    assert post.background_draws.shape == (2, 200, 2, 1)
    lower, upper = post.background_interval(0.99)
    assert np.all(lower[:, 0] < np.array(skies)) and np.all(np.array(skies) < upper[:, 0])
    np.testing.assert_allclose(post.background_image(1), post.background_mean[1, 0])
    assert post.predict(1).shape == second.B.shape


def test_the_missing_block_checks_stay_quiet_on_white_noise():
    # 60 small data sets of white noise (64 pixels: 12 per fifth, where a variance
    # ratio of 3 happens by chance): neither a background nor a variance map is asked for.
    asked = 0
    for seed in range(60):
        case = bk.simulate((8, 8), "gaussian", (3, 3), noise_sigma=0.1, seed=seed)
        post = bk.fit(case.A, case.B, (3, 3), prior="smooth", method="map", num_samples=5,
                      seed=seed, progress_bar=False)  # fmt: skip
        warnings_ = post.summary()["warnings"]
        asked += any("background=" in w or "variance=" in w for w in warnings_)
    assert asked <= 1, asked


def test_ccd_variance():
    signal = np.array([[0.0, -5.0, 10.0], [np.nan, 4.0, 2.0]])
    np.testing.assert_allclose(
        bk.ccd_variance(signal, gain=2.0, read_noise=3.0),
        [[9.0, 9.0, 14.0], [np.nan, 11.0, 10.0]],
    )
    no_read = bk.ccd_variance(signal, gain=2.0, read_noise=0.0)
    np.testing.assert_allclose(no_read, [[1.0, 1.0, 5.0], [np.nan, 2.0, 1.0]])
    with pytest.raises(ValueError, match="gain must be a positive number"):
        bk.ccd_variance(signal, gain=0.0, read_noise=1.0)
    with pytest.raises(ValueError, match="read_noise must be a number >= 0"):
        bk.ccd_variance(signal, gain=1.0, read_noise=-1.0)
