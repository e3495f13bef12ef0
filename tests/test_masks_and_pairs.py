"""Masks and several image pairs against the dense closed-form posterior."""

import numpy as np
import pytest
from mc import assert_moments_match
from reference import convolution_matrix, gaussian_posterior, smooth_prior_covariance

import bayeskernel as bk

SIGMA, SCALE, NUM = 0.05, 0.03, 3000


def _fixed_fit(A, B, kernel_shape, **kwargs):
    return bk.fit(
        A,
        B,
        kernel_shape,
        prior="smooth",
        method="exact",
        noise_sigma=SIGMA,
        kernel_scale=SCALE,
        num_samples=NUM,
        seed=2,
        progress_bar=False,
        draws_dtype=np.float64,
        **kwargs,
    )


@pytest.mark.parametrize("kernel_shape", [(5, 5), (15, 15)])  # kernel-space and data-space
def test_masked_pixels_leave_the_likelihood(kernel_shape, rng):
    case = bk.simulate((12, 12), "gaussian", kernel_shape, noise_sigma=SIGMA, seed=3)
    mask = rng.random(case.B.shape) > 0.3
    H = convolution_matrix(case.A, kernel_shape, "same")[mask.ravel()]
    cov_prior = SCALE**2 * smooth_prior_covariance(kernel_shape, 1)
    mean, cov = gaussian_posterior(H, case.B[mask], cov_prior, SIGMA)
    post = _fixed_fit(case.A, case.B, kernel_shape, mask=mask)
    assert_moments_match(post.kernel_draws, mean, np.sqrt(np.diag(cov)), ess=NUM)
    # NaN in B means the same as a False in the mask: identical draws.
    with_nan = _fixed_fit(case.A, np.where(mask, case.B, np.nan), kernel_shape)
    np.testing.assert_allclose(with_nan.kernel_draws, post.kernel_draws, rtol=1e-9, atol=1e-12)
    assert np.isnan(with_nan.observed[~mask]).all()


def test_several_pairs_equal_the_joint_posterior():
    kernel = bk.make_kernel("gaussian", (7, 7))
    cases = [
        bk.simulate(shape, kernel, noise_sigma=SIGMA, seed=s)
        for s, shape in enumerate([(14, 14), (10, 18)])
    ]
    H = np.vstack([convolution_matrix(c.A, (7, 7), "same") for c in cases])
    y = np.concatenate([c.B.ravel() for c in cases])
    mean, cov = gaussian_posterior(H, y, SCALE**2 * smooth_prior_covariance((7, 7), 1), SIGMA)
    post = _fixed_fit([c.A for c in cases], [c.B for c in cases], (7, 7))
    assert_moments_match(post.kernel_draws, mean, np.sqrt(np.diag(cov)), ess=NUM)
    assert len(post.observed) == 2


def test_several_pairs_with_learned_noise_and_nuts():
    kernel = bk.make_kernel("gaussian", (5, 5))
    cases = [bk.simulate((16, 16), kernel, noise_sigma=SIGMA, seed=s) for s in (4, 5)]
    exact = bk.fit(
        [c.A for c in cases],
        [c.B for c in cases],
        (5, 5),
        prior="smooth",
        num_warmup=200,
        num_samples=300,
        progress_bar=False,
    )
    nuts = bk.fit(
        [c.A for c in cases],
        [c.B for c in cases],
        (5, 5),
        prior="smooth",
        method="nuts",
        num_warmup=200,
        num_samples=200,
        num_chains=1,
        progress_bar=False,
    )
    for post in (exact, nuts):
        assert abs(post.noise_sigma - SIGMA) < 0.15 * SIGMA
        assert bk.relative_error(post.kernel_mean, kernel) < 0.2


def test_pair_errors_name_the_pair(rng):
    A = rng.binomial(1, 0.3, (8, 8)).astype(float)
    with pytest.raises(ValueError, match=r"pair 1: B\[1\] has shape"):
        bk.fit(
            [A, A],
            [rng.normal(size=(8, 8)), np.zeros((7, 8))],
            (3, 3),
            prior="smooth",
            method="map",
        )
    with pytest.raises(ValueError, match="B must be a list of the same length"):
        bk.fit([A, A], np.zeros((8, 8)), (3, 3), prior="smooth")


def test_several_pairs_report_compare_and_export(tmp_path):
    kernel = bk.make_kernel("gaussian", (5, 5))
    cases = [
        bk.simulate(shape, kernel, noise_sigma=SIGMA, seed=s)
        for s, shape in enumerate([(14, 14), (10, 18)])
    ]
    A, B = [c.A for c in cases], [c.B for c in cases]
    fits = {
        p: bk.fit(A, B, (5, 5), prior=p, method="map", num_samples=50, progress_bar=False)
        for p in ("smooth", "iid")
    }
    table = bk.compare(fits)
    assert set(table.index) == {"smooth", "iid"}
    idata = fits["smooth"].to_inference_data()
    assert idata.observed_data["B_1"].shape == (10, 18)
    fits["smooth"].plot_report(tmp_path)
    assert any(tmp_path.iterdir())


def test_one_noise_sd_per_pair(tmp_path):
    kernel = bk.make_kernel("gaussian", (5, 5))
    noises = (0.02, 0.1)
    cases = [bk.simulate((20, 20), kernel, noise_sigma=s, seed=i) for i, s in enumerate(noises)]
    A, B = [c.A for c in cases], [c.B for c in cases]
    post = bk.fit(
        A, B, (5, 5), prior="smooth", noise_per_pair=True, num_warmup=200, num_samples=200,
        num_chains=1, progress_bar=False,
    )  # fmt: skip
    assert post.method == "nuts" and post.noise_per_pair
    assert post.noise_sigma_draws.shape == (1, 200, 2)
    # 99%: two intervals from 200 draws of one data set; a 95% one misses 5% of
    # the time by design (here the 0.1 pair's lower end came out at 0.10025).
    lower, upper = post.noise_sigma_interval(0.99)
    for i, true in enumerate(noises):
        assert abs(post.noise_sigma[i] / true - 1) < 0.2
        assert lower[i] < true < upper[i]
    assert "noise sd [1]" in str(post)
    assert post.to_inference_data().posterior["noise_sigma"].dims[-1] == "pair"
    # One shared noise sd is the wrong model here: PSIS-LOO ranks it second.
    shared = bk.fit(A, B, (5, 5), prior="smooth", method="map", num_samples=200, progress_bar=False)
    assert list(bk.compare({"shared": shared, "per pair": post}).index) == ["per pair", "shared"]
    for wrong, message in [
        (dict(method="exact"), "needs method='nuts' or 'svi'"),
        (dict(noise_sigma=0.1), "leave noise_sigma=None"),
    ]:
        with pytest.raises(ValueError, match=message):
            bk.fit(A, B, (5, 5), prior="smooth", noise_per_pair=True, **wrong)
    with pytest.raises(ValueError, match="needs several image pairs"):
        bk.fit(A[0], B[0], (5, 5), prior="smooth", noise_per_pair=True)


def test_a_masked_array_b_leaves_its_masked_pixels_out(tmp_path):
    # numpy.ma: the masked pixels hold wild values; they must not reach the fit.
    case = bk.simulate((20, 20), "gaussian", (5, 5), noise_sigma=0.05, seed=4)
    hidden = np.zeros(case.B.shape, bool)
    hidden[3:7, 5:12] = True
    wild = np.ma.masked_array(np.where(hidden, 1e6, case.B), mask=hidden)
    options = dict(prior="smooth", num_samples=20, seed=1, progress_bar=False)
    masked = bk.fit(case.A, wild, (5, 5), **options)
    explicit = bk.fit(case.A, case.B, (5, 5), mask=~hidden, **options)
    np.testing.assert_array_equal(masked.kernel_draws, explicit.kernel_draws)
    assert np.abs(masked.kernel_mean).max() < 1.0  # the 1e6 would give ~1e5
    tiles = bk.fit_tiles(case.A, wild, (5, 5), tile_shape=20, client="sync",
                         compilation_cache=False, method="map", num_samples=5,
                         seed=1)  # fmt: skip
    reference = bk.fit_tiles(case.A, case.B, (5, 5), mask=~hidden, tile_shape=20,
                             client="sync", compilation_cache=False, method="map",
                             num_samples=5, seed=1)  # fmt: skip
    np.testing.assert_array_equal(tiles.kernel.values, reference.kernel.values)


def test_a_masked_array_a_with_masked_values_is_refused():
    case = bk.simulate((16, 16), "gaussian", (3, 3), noise_sigma=0.05, seed=4)
    A = np.ma.masked_array(case.A, mask=np.eye(16, dtype=bool))
    with pytest.raises(ValueError, match=r"^A is a masked array with 16 masked value\(s\)"):
        bk.fit(A, case.B, (3, 3), prior="smooth", progress_bar=False)
    # A masked array with nothing masked is just an array.
    unmasked = np.ma.masked_array(case.A, mask=False)
    post = bk.fit(unmasked, case.B, (3, 3), prior="smooth", num_samples=5, progress_bar=False)
    assert post.kernel_draws.shape == (2, 5, 3, 3)
