"""A spatially varying kernel (``fit(spatial_order=d)``) against independent references.

The dense reference writes the field's forward map as a matrix, column by
column from ``scipy.signal.convolve2d`` times each monomial, and the
components' prior as a block-diagonal covariance; the closed-form Gaussian
posterior and evidence follow. Broad-prior backgrounds use the determinant
lemma as in ``test_observation.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
import scipy.stats
from reference import smooth_prior_covariance

import bayeskernel as bk
import bayeskernel.observation as observation
from bayeskernel.field import (
    evaluate_field,
    field_basis,
    field_terms,
    make_field_operator,
    position_basis,
)
from bayeskernel.forward import make_operator
from bayeskernel.infer.exact import log_marginal_likelihood
from bayeskernel.infer.stages import prepare
from bayeskernel.observation import background_design, observe
from bayeskernel.priors import SmoothPrior
from bayeskernel.priors.field import FieldPrior

pytestmark = pytest.mark.filterwarnings("ignore::bayeskernel.api.PriorDominatedWarning")

CASES = [((11, 13), (3, 4), "same"), ((9, 8), (4, 3), "full"), ((12, 10), (3, 5), "valid")]
BROAD = 1e6


def _blur(image, components, mode):
    shape = scipy.signal.convolve2d(image, components[0], mode).shape
    order = {1: 0, 3: 1, 6: 2, 10: 3}[len(components)]
    basis = field_basis(shape, order)
    return sum(basis[p] * scipy.signal.convolve2d(image, c, mode) for p, c in enumerate(components))


@pytest.mark.parametrize("image_shape,kernel_shape,mode", CASES)
@pytest.mark.parametrize("order", [1, 2])
def test_the_field_operator_is_scipy_per_component_and_its_adjoint(
    image_shape, kernel_shape, mode, order
):
    rng = np.random.default_rng(order)
    A = rng.normal(size=image_shape)
    with jax.enable_x64(True):
        op = make_field_operator(make_operator(A, kernel_shape, mode), order)
        components = rng.normal(size=(op.num_terms,) + kernel_shape)
        out = np.asarray(op(jnp.asarray(components)))
        np.testing.assert_allclose(out, _blur(A, components, mode), atol=1e-12)
        residual = rng.normal(size=out.shape)
        back = np.asarray(op.adjoint(jnp.asarray(residual)))
    assert back.shape == components.shape
    np.testing.assert_allclose(np.sum(out * residual), np.sum(components * back), rtol=1e-12)


def test_terms_and_positions():
    assert field_terms(1) == ("1", "y", "x")
    basis = field_basis((5, 7), 2)
    # The monomials at a pixel are the basis there; the centre has only K_0.
    np.testing.assert_allclose(position_basis(1, 5, (5, 7), 2), basis[:, 1, 5])
    np.testing.assert_allclose(position_basis(2, 3, (5, 7), 2), [1, 0, 0, 0, 0, 0])
    components = np.random.default_rng(0).normal(size=(2, 4, 6, 3, 3))
    value = evaluate_field(components[..., :3, :, :], 0.5, 6, (5, 7))
    weights = position_basis(0.5, 6, (5, 7), 1)
    np.testing.assert_allclose(
        value, np.einsum("abpij,p->abij", components[..., :3, :, :], weights)
    )


def _dense(A, B, mask, weights, kernel_shape, mode, order, ratio, degree, sigma, scale):
    """Kernel-field posterior (mean, covariance) and log p(B), densely."""
    P = (order + 1) * (order + 2) // 2
    size = int(np.prod(kernel_shape))
    columns = []
    for p in range(P):
        for j in range(size):
            unit = np.zeros((P, size))
            unit[p, j] = 1.0
            columns.append(_blur(A, unit.reshape((P,) + kernel_shape), mode).ravel())
    seen = mask.ravel()
    H = np.stack(columns, axis=1)[seen]
    y, w = B.ravel()[seen], weights.ravel()[seen]
    single = smooth_prior_covariance(kernel_shape, 1)
    C = np.zeros((P * size, P * size))
    for p in range(P):
        factor = 1.0 if p == 0 else ratio**2
        C[p * size : (p + 1) * size, p * size : (p + 1) * size] = scale**2 * factor * single
    M = sigma**2 * np.diag(1 / w) + H @ C @ H.T
    if degree is None:
        evidence = scipy.stats.multivariate_normal(np.zeros(y.size), M).logpdf(y)
        gain = C @ H.T @ np.linalg.inv(M)
        return gain @ y, C - gain @ H @ C, evidence
    X = background_design(B.shape, degree)[seen]
    tau = BROAD * np.sqrt(np.mean(y**2))
    sign, logdet = np.linalg.slogdet(M)
    m_y, m_x = np.linalg.solve(M, y), np.linalg.solve(M, X)
    inner = np.eye(X.shape[1]) / tau**2 + X.T @ m_x
    logdet += np.linalg.slogdet(inner)[1] + 2 * X.shape[1] * np.log(tau)
    quad = y @ m_y - (X.T @ m_y) @ np.linalg.solve(inner, X.T @ m_y)
    return None, None, -0.5 * (y.size * np.log(2 * np.pi) + logdet + quad)


@pytest.mark.parametrize("image_shape,kernel_shape,mode", CASES)
@pytest.mark.parametrize("degree", [None, 1])
@pytest.mark.parametrize("noise_map", [True, False])
def test_evidence_and_posterior_match_the_dense_closed_form(
    monkeypatch, image_shape, kernel_shape, mode, degree, noise_map
):
    monkeypatch.setattr(observation, "BACKGROUND_PRIOR_SCALE", BROAD)
    rng = np.random.default_rng(3)
    order, ratio = 1, 0.4
    A = rng.binomial(1, 0.4, image_shape).astype(float)
    components = rng.normal(size=(3,) + kernel_shape) * [[[1.0]], [[0.3]], [[0.3]]]
    clean = _blur(A, components, mode)
    weights = rng.uniform(0.5, 2.0, clean.shape)
    mask = rng.random(clean.shape) > 0.15
    B = clean + 2.0 + 0.1 * rng.normal(size=clean.shape) / np.sqrt(weights)
    if not noise_map:  # unit weights everywhere: the normal matrix by moments
        weights, mask = np.ones(clean.shape), np.ones(clean.shape, bool)
    prior = FieldPrior(SmoothPrior(kernel_shape), 3, ratio)
    with jax.enable_x64(True):
        op = make_field_operator(make_operator(A, kernel_shape, mode), order)
        prepared = prepare(
            op, prior, jnp.asarray(B), jax.random.PRNGKey(0),
            observations=(
                observe(B, mask, weights, degree) if noise_map else observe(B, None, None, degree),
            ),
            solver="dense",
        )  # fmt: skip
        spectrum = prepared.summary
        p = prior.num_latent
        T = np.asarray(prior.to_kernel(jnp.eye(p))).reshape(p, -1).T
    for sigma, scale in [(0.1, 0.5), (0.3, 2.0)]:
        mean, cov, reference = _dense(
            A, B, mask, weights, kernel_shape, mode, order, ratio, degree, sigma, scale
        )
        with jax.enable_x64(True):
            ours = float(log_marginal_likelihood(prepared.terms, sigma, scale))
        ours += prepared.log_offset
        assert abs(ours - reference) < 1e-8 * abs(reference), (ours, reference)
        if degree is None and spectrum.space == "kernel":
            total = sigma**2 + scale**2 * spectrum.eigenvalues
            V = spectrum.basis
            mean_z = V @ (scale * spectrum.latent_projection / total)
            cov_z = V @ np.diag(sigma**2 / total) @ V.T
            np.testing.assert_allclose(scale * T @ mean_z, mean, rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(scale**2 * T @ cov_z @ T.T, cov, rtol=1e-7, atol=1e-11)


def _case(order_of_truth: int, seed: int = 0, size: int = 48, noise: float = 0.02):
    """A binary target blurred by a Gaussian whose width varies with the column."""
    rng = np.random.default_rng(seed)
    A = (rng.random((size, size)) < 0.3).astype(float)
    yy, xx = np.mgrid[:5, :5] - 2

    def gaussian(width):
        kernel = np.exp(-(yy**2 + xx**2) / (2 * width**2))
        return kernel / kernel.sum()

    count = (order_of_truth + 1) * (order_of_truth + 2) // 2
    components = np.zeros((count, 5, 5))
    components[0] = gaussian(1.0)
    if order_of_truth:
        components[2] = (gaussian(1.3) - gaussian(0.75)) / 2
    B = _blur(A, components, "same") + noise * rng.normal(size=(size, size))
    return A, B, components


def test_spatial_order_zero_is_the_one_kernel_fit():
    A, B, _ = _case(0)
    plain = bk.fit(A, B, (5, 5), prior="smooth", seed=3, progress_bar=False)
    zero = bk.fit(A, B, (5, 5), prior="smooth", spatial_order=0, seed=3, progress_bar=False)
    np.testing.assert_array_equal(plain.kernel_draws, zero.kernel_draws)
    np.testing.assert_array_equal(plain.noise_sigma_draws, zero.noise_sigma_draws)
    assert zero.field_draws is None and zero.kernel_at(10, 10) is zero


def test_the_evidence_finds_the_order_of_the_field():
    A, B, components = _case(1)
    post = bk.fit(A, B, (5, 5), prior="smooth", spatial_order="auto", progress_bar=False)
    weights = post.diagnostics["spatial_order_weights"]
    assert weights["1"] > 0.99, weights
    assert post.field_draws.shape[2] == 6  # the highest order's stack, its extra terms 0
    np.testing.assert_array_equal(post.field_draws[:, :, 3:], 0.0)
    # The kernel at the left and right edges, within its intervals.
    for x in (0, 47):
        at = post.kernel_at(24, x)
        truth = evaluate_field(components, 24, x, B.shape)
        lower, upper = at.interval(0.95)
        assert np.mean((truth >= lower) & (truth <= upper)) >= 0.9
        assert np.linalg.norm(at.kernel_mean - truth) < 0.1 * np.linalg.norm(truth)


def test_a_constant_field_stays_at_order_zero():
    A, B, _ = _case(0, seed=1)
    post = bk.fit(A, B, (5, 5), prior="smooth", spatial_order="auto", progress_bar=False)
    weights = post.diagnostics["spatial_order_weights"]
    assert weights["0"] > 0.9, weights


def test_a_smoothly_varying_field_is_covered_at_nine_positions():
    # Width and ellipticity vary with position, not as a polynomial; photon-like
    # noise, a sky offset and a variance map: the difference-imaging setting.
    rng = np.random.default_rng(5)
    size, half = 72, 3
    A = rng.gamma(0.5, 1.0, (size, size)) * (rng.random((size, size)) < 0.3)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]

    def truth_at(y, x):
        v, u = 2 * y / (size - 1) - 1, 2 * x / (size - 1) - 1
        width = 0.9 + 0.35 * np.exp(0.5 * (u + v)) / np.exp(1.0)
        q = 1.0 - 0.25 * (1 + np.tanh(u - v)) / 2
        kernel = np.exp(-(yy**2 / q + xx**2 * q) / (2 * width**2))
        return kernel / kernel.sum()

    clean = np.zeros((size, size))
    padded = np.pad(A, half)
    for y in range(size):
        for x in range(size):
            # B(x) = sum_u K(u; x) A(x - u): the local kernel flipped over the patch.
            patch = padded[y : y + 2 * half + 1, x : x + 2 * half + 1]
            clean[y, x] = np.sum(patch * truth_at(y, x)[::-1, ::-1])
    variance = 0.0004 + 0.002 * clean
    B = clean + 0.5 + np.sqrt(variance) * rng.normal(size=clean.shape)
    post = bk.fit(A, B, (7, 7), prior="smooth", spatial_order=2, background=0,
                  variance=variance, seed=1, progress_bar=False)  # fmt: skip
    hits = total = 0
    for y in (12, 36, 60):
        for x in (12, 36, 60):
            lower, upper = post.kernel_at(y, x).interval(0.95)
            truth = truth_at(y, x)
            hits += np.sum((truth >= lower) & (truth <= upper))
            total += truth.size
    assert hits / total >= 0.9, hits / total


def test_a_field_survives_save_and_load(tmp_path):
    A, B, _ = _case(1, size=24)
    post = bk.fit(A, B + 1.0, (5, 5), prior="smooth", spatial_order=1, background=0,
                  progress_bar=False)  # fmt: skip
    path = bk.io.save(post, tmp_path / "field.nc")
    back = bk.load(path)
    np.testing.assert_array_equal(back.field_draws, post.field_draws)
    assert back.field_terms == ("1", "y", "x") and back.field_shape == (24, 24)
    np.testing.assert_array_equal(
        back.kernel_at(3, 20).kernel_draws, post.kernel_at(3, 20).kernel_draws
    )
    np.testing.assert_allclose(back.predict(), post.predict())


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"spatial_order": -1}, "spatial_order must be"),
        ({"spatial_order": 4}, "spatial_order must be"),
        ({"spatial_order": 1.0}, "spatial_order must be"),
        ({"spatial_order": True}, "spatial_order must be"),
        ({"spatial_order": "cubic"}, "spatial_order must be"),
        ({"spatial_order": 1, "method": "nuts"}, "runs in the exact route"),
        ({"spatial_order": 1, "prior": "gaussian"}, "linear-Gaussian prior"),
    ],
)
def test_bad_spatial_order_arguments(kwargs, message):
    A, B, _ = _case(0, size=16)
    with pytest.raises(ValueError, match=message):
        bk.fit(A, B, (5, 5), progress_bar=False, **kwargs)


def test_kernel_at_refuses_positions_off_the_image():
    A, B, _ = _case(1, size=16)
    post = bk.fit(A, B, (5, 5), prior="smooth", spatial_order=1, progress_bar=False)
    for y, x in [(-1, 3), (3, 16), (np.nan, 2)]:
        with pytest.raises(ValueError, match="must be a pixel position"):
            post.kernel_at(y, x)


def test_the_field_on_a_grid_and_its_files(tmp_path, capsys):
    from bayeskernel import cli

    A, B, _ = _case(1, size=24)
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B + 1.0)
    out = tmp_path / "results"
    files = [str(tmp_path / "A.npy"), str(tmp_path / "B.npy"), "--kernel-shape", "5", "5"]
    code = cli.main(["fit", *files, "--prior", "smooth", "--spatial-order", "1",
                     "--background", "0", "--samples", "40", "--plots", "none", "--quiet",
                     "--out", str(out)])  # fmt: skip
    assert code == 0
    table = np.load(out / "kernel_field.npz")
    back = bk.load(out / "posterior.nc")
    grid = back.field_grid(5, 0.95)
    for name in ("mean", "sd", "lower", "upper", "components", "rows", "cols"):
        np.testing.assert_allclose(table[name], grid[name])
    at = back.kernel_at(grid["rows"][1], grid["cols"][3])
    np.testing.assert_allclose(table["mean"][1, 3], at.kernel_mean)
    assert list(table["terms"]) == ["1", "y", "x"]
    # The centre kernel is the kernel_* files' kernel.
    np.testing.assert_allclose(np.load(out / "kernel_mean.npy"), back.kernel_mean)
    fits = pytest.importorskip("astropy.io.fits")
    with fits.open(out / "kernel_field.fits") as hdus:
        np.testing.assert_allclose(hdus["MEAN"].data, grid["mean"])
        np.testing.assert_allclose(hdus["COMPONENTS"].data, grid["components"])
        assert hdus[0].header["FTERM_2"] == "x" and hdus[0].header["GRID"] == 5
    with pytest.raises(SystemExit) as refused:
        cli.main(["fit", *files, "--spatial-order", "9", "--out", str(tmp_path / "x")])
    assert refused.value.code == 2
    assert "--spatial-order: expected an order 0..3 or 'auto'" in capsys.readouterr().err


def test_plot_kernel_field_and_a_predictive_check_with_the_field_and_background():
    from bayeskernel.plots import _replicate_mean, plot_kernel_field, plot_predictive_check

    A, B, _ = _case(1, size=32)
    post = bk.fit(A, B + 5.0, (5, 5), prior="smooth", spatial_order=1, background=0,
                  num_samples=30, progress_bar=False)  # fmt: skip
    fig = plot_kernel_field(post, grid=2)
    assert len(fig.axes) >= 6
    plot_predictive_check(post, num_draws=5)
    # A replicate's mean is the data's: blur of the field plus the sky of 5.
    assert abs(np.mean(_replicate_mean(post, 0)) - np.mean(B + 5.0)) < 0.01
    plain = bk.fit(A, B, (5, 5), prior="smooth", num_samples=30, progress_bar=False)
    with pytest.raises(ValueError, match="needs a field"):
        plot_kernel_field(plain)
    with pytest.raises(ValueError, match="needs a field"):
        plain.field_grid()


@pytest.mark.parametrize("image_shape,kernel_shape", [((14, 12), (3, 3)), ((6, 6), (5, 5))])
def test_a_fixed_kernel_sum_holds_at_every_position_exactly(image_shape, kernel_shape):
    # Kernel-space and data-space spectra. The reference conditions the dense
    # Gaussian of [B; the components' sums] on the sums.
    from bayeskernel.infer.exact import conditional_draws

    rng = np.random.default_rng(11)
    A = rng.binomial(1, 0.4, image_shape).astype(float)
    components = rng.normal(size=(3,) + kernel_shape) * [[[1.0]], [[0.3]], [[0.3]]]
    B = _blur(A, components, "same") + 0.1 * rng.normal(size=image_shape)
    ratio, total, sigma, scale, count = 0.4, 1.5, 0.2, 0.7, 4000
    prior = FieldPrior(SmoothPrior(kernel_shape), 3, ratio)
    with jax.enable_x64(True):
        op = make_field_operator(make_operator(A, kernel_shape, "same"), 1)
        prepared = prepare(op, prior, jnp.asarray(B), jax.random.PRNGKey(0), solver="dense",
                           kernel_sum=total)  # fmt: skip
        ours = float(log_marginal_likelihood(prepared.terms, sigma, scale))
        latent = conditional_draws(
            jax.random.PRNGKey(1), prepared.summary, prepared.whitened, prepared.observed,
            jnp.full(count, sigma), jnp.full(count, scale),
        )  # fmt: skip
        kernels = np.asarray(scale * prior.to_kernel(latent)).reshape(count, -1)
    size = int(np.prod(kernel_shape))
    columns = []
    for j in range(3 * size):
        unit = np.zeros(3 * size)
        unit[j] = 1.0
        columns.append(_blur(A, unit.reshape((3,) + kernel_shape), "same").ravel())
    H = np.stack(columns, axis=1)
    C = scale**2 * np.kron(np.diag([1.0, ratio**2, ratio**2]), smooth_prior_covariance(
        kernel_shape, 1))  # fmt: skip
    D = np.kron(np.eye(3), np.ones((1, size)))  # the components' sums
    target = np.array([total, 0.0, 0.0])
    # Condition the prior on D k = target, then the usual Gaussian evidence and posterior.
    gain = C @ D.T @ np.linalg.inv(D @ C @ D.T)
    prior_mean, prior_cov = gain @ target, C - gain @ D @ C
    M = sigma**2 * np.eye(B.size) + H @ prior_cov @ H.T
    reference = scipy.stats.multivariate_normal(H @ prior_mean, M).logpdf(B.ravel())
    assert abs(ours - reference) < 1e-8 * abs(reference), (ours, reference)
    K = prior_cov @ H.T @ np.linalg.inv(M)
    mean = prior_mean + K @ (B.ravel() - H @ prior_mean)
    sd = np.sqrt(np.clip(np.diag(prior_cov - K @ H @ prior_cov), 0.0, None))
    np.testing.assert_allclose(kernels @ D.T, np.tile(target, (count, 1)), atol=1e-8)
    error = np.abs(kernels.mean(0) - mean)
    assert np.all(error <= 5 * sd / np.sqrt(count) + 1e-9), np.max(error / (sd + 1e-12))
    if B.size < 3 * size:
        return  # the fit's own check below needs data that constrain the field
    fitted = bk.fit(A, B, kernel_shape, prior="smooth", spatial_order=1, kernel_sum=total,
                    num_samples=20, progress_bar=False)  # fmt: skip
    for y, x in [(0, 0), (3, 5)]:
        sums = fitted.kernel_at(y, x).kernel_draws.sum(axis=(-2, -1), dtype=np.float64)
        np.testing.assert_allclose(sums, total, atol=1e-4)  # float32 draws


def test_the_matrix_free_solver_takes_a_field():
    A, B, _ = _case(1, size=40)
    fits = {
        solver: bk.fit(
            A,
            B + 1.0,
            (5, 5),
            prior="smooth",
            spatial_order=1,
            background=0,
            solver=solver,
            progress_bar=False,
        )  # fmt: skip
        for solver in ("dense", "krylov")
    }
    assert fits["krylov"].diagnostics["solver"] == "krylov"
    assert fits["krylov"].prior == fits["dense"].prior
    for y, x in [(20, 39), (0, 0)]:
        dense, krylov = fits["dense"].kernel_at(y, x), fits["krylov"].kernel_at(y, x)
        error = np.abs(krylov.kernel_mean - dense.kernel_mean) / dense.kernel_sd
        # Two means of 500 draws differ by about 0.06 sd by chance; CG adds its tolerance.
        assert np.max(error) < 0.5, np.max(error)
        np.testing.assert_allclose(krylov.kernel_sd, dense.kernel_sd, rtol=0.25)
