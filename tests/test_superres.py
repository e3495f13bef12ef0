"""A kernel finer than the sensor (``fit(oversample=s)``) against independent references.

The reference blur is ``scipy.signal.convolve2d`` on the fine grid followed by
block sums in NumPy; the dense reference posterior is built from that blur
column by column.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
import scipy.stats
from reference import smooth_prior_covariance

import bayeskernel as bk
from bayeskernel.binning import bin_image, binned_shape, check_oversample, make_binned_operator
from bayeskernel.infer.exact import log_marginal_likelihood
from bayeskernel.infer.stages import prepare
from bayeskernel.observation import observe
from bayeskernel.priors import SmoothPrior
from bayeskernel.sources import read_points, render_points

pytestmark = pytest.mark.filterwarnings("ignore::bayeskernel.api.PriorDominatedWarning")


def _reference(fine_image, kernel, mode, factor):
    fine = scipy.signal.convolve2d(fine_image, kernel, mode)
    height, width = fine.shape[0] // factor[0], fine.shape[1] // factor[1]
    out = np.zeros((height, width))
    for a in range(factor[0]):
        for b in range(factor[1]):
            out += fine[a : height * factor[0] : factor[0], b : width * factor[1] : factor[1]]
    return out


@pytest.mark.parametrize("mode", ["same", "full", "valid"])
@pytest.mark.parametrize("factor", [(2, 2), (3, 3), (2, 3)])
@pytest.mark.parametrize("image_shape,kernel_shape", [((13, 14), (5, 4)), ((6, 7), (9, 9))])
def test_the_binned_blur_is_scipy_then_block_sums(mode, factor, image_shape, kernel_shape):
    rng = np.random.default_rng(0)
    A = rng.normal(size=image_shape)
    kernel = rng.normal(size=kernel_shape)
    fine = scipy.signal.convolve2d(A, kernel, mode).shape
    if min(binned_shape(fine, factor)) < 1 or (
        mode == "valid" and not (np.all(np.greater_equal(image_shape, kernel_shape))
                                 or np.all(np.less_equal(image_shape, kernel_shape)))
    ):  # fmt: skip
        pytest.skip("no whole sensor pixel")
    with jax.enable_x64(True):
        op = make_binned_operator(A, kernel_shape, mode, factor)
        out = np.asarray(op(jnp.asarray(kernel)))
        np.testing.assert_allclose(out, _reference(A, kernel, mode, factor), atol=1e-10)
        residual = rng.normal(size=out.shape)
        back = np.asarray(op.adjoint(jnp.asarray(residual)))
    assert np.isclose(np.sum(out * residual), np.sum(kernel * back), rtol=1e-10)
    np.testing.assert_allclose(bin_image(scipy.signal.convolve2d(A, kernel, mode), factor), out,
                               atol=1e-10)  # fmt: skip


@pytest.mark.parametrize("mode", ["same", "full"])
def test_evidence_and_posterior_match_the_dense_closed_form(mode):
    rng = np.random.default_rng(1)
    factor, kernel_shape = (2, 2), (5, 5)
    A = rng.binomial(1, 0.5, (16, 16)).astype(float)
    kernel = bk.make_kernel("gaussian", kernel_shape, width=1.2)
    clean = _reference(A, kernel, mode, factor)
    weights = rng.uniform(0.5, 2.0, clean.shape)
    mask = rng.random(clean.shape) > 0.1
    B = clean + 0.05 * rng.normal(size=clean.shape) / np.sqrt(weights)
    prior = SmoothPrior(kernel_shape)
    with jax.enable_x64(True):
        op = make_binned_operator(A, kernel_shape, mode, factor)
        observations = (observe(B, mask, weights, None),)
        prepared = prepare(op, prior, jnp.asarray(B), jax.random.PRNGKey(0),
                           observations=observations, solver="dense")  # fmt: skip
        spectrum = prepared.summary
        p = prior.num_latent
        T = np.asarray(prior.to_kernel(jnp.eye(p))).reshape(p, -1).T
        values = {}
        for sigma, scale in [(0.05, 0.1), (0.2, 0.5)]:
            values[sigma, scale] = float(log_marginal_likelihood(prepared.terms, sigma, scale))
    size = int(np.prod(kernel_shape))
    columns = [_reference(A, np.eye(size)[j].reshape(kernel_shape), mode, factor).ravel()
               for j in range(size)]  # fmt: skip
    seen = mask.ravel()
    H = np.stack(columns, axis=1)[seen]
    y, w = B.ravel()[seen], weights.ravel()[seen]
    for (sigma, scale), ours in values.items():
        C = scale**2 * smooth_prior_covariance(kernel_shape, 1)
        M = sigma**2 * np.diag(1 / w) + H @ C @ H.T
        reference = scipy.stats.multivariate_normal(np.zeros(y.size), M).logpdf(y)
        assert abs(ours + prepared.log_offset - reference) < 1e-8 * abs(reference)
        gain = C @ H.T @ np.linalg.inv(M)
        total = sigma**2 + scale**2 * spectrum.eigenvalues
        V = spectrum.basis
        mean = scale * T @ (V @ (scale * spectrum.latent_projection / total))
        cov = scale**2 * T @ (V @ np.diag(sigma**2 / total) @ V.T) @ T.T
        np.testing.assert_allclose(mean, gain @ y, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(cov, C - gain @ H @ C, rtol=1e-7, atol=1e-12)


def _coverage(post, truth):
    lower, upper = post.interval(0.95)
    return float(np.mean((truth >= lower) & (truth <= upper)))


@pytest.mark.parametrize("factor", [2, 3])
def test_a_super_resolved_telescope_psf_from_a_binary_target(factor):
    rng = np.random.default_rng(factor)
    sensor, shape = 32 if factor == 2 else 24, (15, 15)
    kernel = bk.make_kernel("telescope", shape, width=2.0)
    A = rng.binomial(1, 0.5, (sensor * factor,) * 2).astype(float)
    clean = bin_image(scipy.signal.convolve2d(A, kernel, "same"), (factor, factor))
    B = clean + 0.01 * clean.std() * rng.normal(size=clean.shape)
    post = bk.fit(A, B, shape, oversample=factor, prior="smooth2", progress_bar=False)
    error = np.linalg.norm(post.kernel_mean - kernel) / np.linalg.norm(kernel)
    assert post.oversample == (factor, factor) and post.kernel_shape == shape
    assert error < 0.1, error
    assert _coverage(post, kernel) >= 0.9
    # The same data at the sensor's resolution cannot hold the fine kernel.
    np.testing.assert_allclose(post.predict(), clean, atol=0.05 * clean.std())


def _star_field(factor, count, rng, sensor=40, shape=(15, 15)):
    """Point sources at uniform sub-pixel positions, each the PSF sampled at its position."""
    points = np.column_stack([
        rng.uniform(3, sensor - 4, count), rng.uniform(3, sensor - 4, count),
        rng.uniform(50, 200, count),
    ])  # fmt: skip
    fine = np.zeros((sensor * factor + 40,) * 2)
    half = shape[0] // 2
    for row, col, flux in points:
        centre = factor * np.array([row, col]) + (factor - 1) / 2
        base = np.floor(centre).astype(int)
        stamp = bk.make_kernel("telescope", shape, width=2.0, shift=tuple(centre - base))
        fine[
            20 + base[0] - half : 21 + base[0] + half, 20 + base[1] - half : 21 + base[1] + half
        ] += flux * stamp
    clean = bin_image(fine[20:-20, 20:-20], (factor, factor))
    return points, clean


@pytest.mark.parametrize("factor", [2, 3])
def test_a_super_resolved_psf_from_point_sources(factor):
    rng = np.random.default_rng(10 + factor)
    shape = (15, 15)
    kernel = bk.make_kernel("telescope", shape, width=2.0)
    points, clean = _star_field(factor, 80, rng)
    B = clean + 0.02 * rng.normal(size=clean.shape)
    A = render_points(points, (40 * factor,) * 2, oversample=factor)
    post = bk.fit(A, B, shape, oversample=factor, prior="smooth2", progress_bar=False)
    error = np.linalg.norm(post.kernel_mean - kernel) / np.linalg.norm(kernel)
    assert error < 0.1, error
    assert _coverage(post, kernel) >= 0.9


def test_render_points_places_flux_at_the_fine_position(tmp_path):
    # Sensor pixel 2 covers fine pixels 4 and 5: its centre, fine 4.5, is between nodes.
    bilinear = render_points([[2.0, 3.0, 4.0]], (12, 12), oversample=2, method="bilinear")
    np.testing.assert_allclose(bilinear[4:6, 6:8], 1.0)
    assert bilinear.sum() == pytest.approx(4.0)
    # A source on a fine node lands on that node alone, with either renderer.
    for method in ("sinc", "lanczos3", "bilinear"):
        on_node = render_points([[1.75, 1.25, 2.0]], (12, 12), oversample=2, method=method)
        assert on_node[4, 3] == pytest.approx(2.0) and on_node.sum() == pytest.approx(2.0)
    # Bilinear splitting keeps the first moment; Lanczos keeps it to a few hundredths.
    rows, cols = np.mgrid[:48, :48]
    for method, tolerance in (("bilinear", 1e-9), ("lanczos3", 0.05), ("sinc", 0.05)):
        image = render_points([[11.3, 11.6, 1.0]], (48, 48), oversample=2, method=method)
        assert image.sum() == pytest.approx(1.0)
        assert np.sum(image * rows) == pytest.approx(2 * 11.3 + 0.5, abs=tolerance)
        assert np.sum(image * cols) == pytest.approx(2 * 11.6 + 0.5, abs=tolerance)
    path = tmp_path / "points.csv"
    path.write_text("row,col,flux\n1.5,2.25,3\n4,5,6\n")
    np.testing.assert_allclose(read_points(path), [[1.5, 2.25, 3], [4, 5, 6]])
    (tmp_path / "bad.csv").write_text("x,y,flux\n1,2,3\n")
    with pytest.raises(ValueError, match="needs the columns row, col, flux"):
        read_points(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="finite"):
        render_points([[1.0, np.nan, 1.0]], (8, 8))


def test_bad_oversample_arguments():
    A = np.ones((8, 8))
    with pytest.raises(ValueError, match="oversample must be"):
        check_oversample(0)
    with pytest.raises(ValueError, match="oversample must be"):
        check_oversample(1.5)
    with pytest.raises(ValueError, match="oversample must be"):
        check_oversample((2, 2, 2))
    assert check_oversample(1) is None and check_oversample((2, 3)) == (2, 3)
    with pytest.raises(ValueError, match="bins to"):
        bk.fit(A, np.ones((8, 8)), (3, 3), oversample=2, progress_bar=False)
    with pytest.raises(ValueError, match="oversample= and spatial_order="):
        bk.fit(A, np.ones((4, 4)), (3, 3), oversample=2, spatial_order=1, progress_bar=False)


def _super_resolved_case():
    rng = np.random.default_rng(4)
    A = rng.binomial(1, 0.5, (24, 24)).astype(float)
    kernel = bk.make_kernel("gaussian", (7, 7), width=1.5)
    B = bin_image(scipy.signal.convolve2d(A, kernel, "same"), (2, 2))
    return A, B + 0.01 * rng.normal(size=B.shape), kernel


def _super_resolved_fit(method):
    A, B, _ = _super_resolved_case()
    return bk.fit(A, B, (7, 7), oversample=2, prior="smooth", method=method, num_samples=150,
                  num_warmup=150, num_chains=1, progress_bar=False)  # fmt: skip


def test_a_super_resolved_fit_survives_save_and_load(tmp_path):
    post = _super_resolved_fit("exact")
    kernel = _super_resolved_case()[2]
    assert np.linalg.norm(post.kernel_mean - kernel) < 0.15 * np.linalg.norm(kernel)
    back = bk.load(bk.io.save(post, tmp_path / "fine.nc"))
    assert back.oversample == (2, 2)
    np.testing.assert_allclose(back.predict(), post.predict())


@pytest.mark.slow  # NUTS on the full binned model: about 25 s
def test_nuts_on_the_binned_model_samples_the_exact_posterior():
    # The binned blur as a NumPyro site: the same posterior as the exact route's.
    exact, nuts = _super_resolved_fit("exact"), _super_resolved_fit("nuts")
    assert np.max(np.abs(nuts.kernel_mean - exact.kernel_mean) / exact.kernel_sd) < 0.6


def test_the_command_line_fits_a_point_table_at_oversample(tmp_path):
    from bayeskernel import cli

    rng = np.random.default_rng(7)
    points, clean = _star_field(2, 40, rng, sensor=24, shape=(9, 9))
    np.save(tmp_path / "B.npy", clean + 0.02 * rng.normal(size=clean.shape))
    with open(tmp_path / "stars.csv", "w") as fh:
        fh.write("row,col,flux\n" + "".join(f"{r},{c},{f}\n" for r, c, f in points))
    out = tmp_path / "results"
    files = [str(tmp_path / "stars.csv"), str(tmp_path / "B.npy")]
    code = cli.main(["fit", *files, "--kernel-shape", "9", "9", "--oversample", "2",
                     "--prior", "smooth2", "--samples", "40", "--plots", "none", "--quiet",
                     "--out", str(out)])  # fmt: skip
    assert code == 0
    post = bk.load(out / "posterior.nc")
    assert post.oversample == (2, 2) and post.kernel_shape == (9, 9)
    truth = bk.make_kernel("telescope", (9, 9), width=2.0)
    assert np.linalg.norm(post.kernel_mean - truth) < 0.15 * np.linalg.norm(truth)
