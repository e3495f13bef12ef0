import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mc import Z, assert_moments_match
from reference import (
    convolution_matrix,
    gaussian_posterior,
    log_marginal,
    smooth_prior_covariance,
)

import bayeskernel as bk
from bayeskernel.forward import make_operator
from bayeskernel.infer.exact import decompose, log_marginal_likelihood, whitened_operator
from bayeskernel.priors import (
    IIDPrior,
    LinearGaussianPrior,
    RadialPrior,
    SmoothPrior,
    resolve_prior,
)


@pytest.mark.parametrize("shape", [(5, 5), (4, 7), (1, 6)])
@pytest.mark.parametrize("order", [1, 2])
def test_smooth_prior_covariance_matches_finite_differences(shape, order):
    with jax.enable_x64(True):
        covariance = SmoothPrior(shape, order=order, boundary="reflect").covariance()
    reference = smooth_prior_covariance(shape, order, boundary="reflect")
    np.testing.assert_allclose(covariance, reference, atol=1e-10)
    assert np.isclose(np.mean(np.diag(covariance)), 1.0)


@pytest.mark.parametrize("boundary", ["zero", "reflect"])
def test_transpose_is_adjoint(rng, boundary):
    prior = SmoothPrior((6, 5), order=2, boundary=boundary)
    with jax.enable_x64(True):
        z = jnp.asarray(rng.standard_normal((3, prior.num_latent)))
        k = jnp.asarray(rng.standard_normal((3, 6, 5)))
        lhs = jnp.sum(prior.to_kernel(z) * k)
        rhs = jnp.sum(z * prior.to_latent_transpose(k))
    assert abs(float(lhs - rhs)) < 1e-10


def test_prior_draws_have_stated_variance_and_smoothness():
    shape = (16, 16)
    with jax.enable_x64(True):
        iid = np.asarray(IIDPrior(shape).sample(jax.random.PRNGKey(0), 2.0, (400,)))
        smooth = np.asarray(SmoothPrior(shape).sample(jax.random.PRNGKey(1), 2.0, (400,)))
    # Average marginal variance is scale^2 = 4 for both (sampling error ~ 1%).
    assert abs(iid.var() - 4.0) < 0.15
    assert abs(smooth.var() - 4.0) < 0.4

    # Neighbouring entries: independent under iid, strongly correlated under smooth.
    def neighbour_corr(x):
        return np.corrcoef(x[:, :, :-1].ravel(), x[:, :, 1:].ravel())[0, 1]

    assert abs(neighbour_corr(iid)) < 0.05
    assert neighbour_corr(smooth) > 0.5


def test_resolve_prior_errors():
    assert isinstance(resolve_prior("smooth2", (3, 3)), SmoothPrior)
    with pytest.raises(ValueError, match="prior must be one of"):
        resolve_prior("lasso", (3, 3))
    with pytest.raises(ValueError, match="differs from kernel_shape"):
        resolve_prior(IIDPrior((3, 4)), (3, 3))
    with pytest.raises(TypeError, match="KernelPrior instance"):
        resolve_prior(42, (3, 3))


def test_user_defined_prior_plugs_in():
    class SeparablePrior(LinearGaussianPrior):
        """Kernel = outer product with a fixed row profile, free column profile."""

        name = "separable"

        def __init__(self, kernel_shape):
            self.kernel_shape = kernel_shape
            self.num_latent = kernel_shape[0]

        def to_kernel(self, latent):
            profile = jnp.hanning(self.kernel_shape[1] + 2)[1:-1]
            return latent[..., :, None] * profile

    prior = SeparablePrior((5, 7))
    with jax.enable_x64(True):
        cov = prior.covariance()
    assert cov.shape == (35, 35)
    assert np.linalg.matrix_rank(cov) == 5


def test_radial_prior_draws_are_radially_symmetric():
    prior = RadialPrior((15, 15))
    with jax.enable_x64(True):
        draws = np.asarray(prior.sample(jax.random.PRNGKey(0), 1.0, (5,)))
    # Symmetric under flips and transposition about the centre.
    np.testing.assert_allclose(draws, draws[:, ::-1, :], atol=1e-12)
    np.testing.assert_allclose(draws, np.swapaxes(draws, 1, 2), atol=1e-12)
    assert np.isclose(np.mean(np.diag(prior.covariance())), 1.0)
    # Every distinct pixel distance below exact_radius is a knot: the profile is exact there.
    rows, cols = np.meshgrid(np.arange(15) - 7, np.arange(15) - 7, indexing="ij")
    radii = np.unique(np.round(np.hypot(rows, cols), 9))
    assert np.all(np.isin(radii[radii < prior.exact_radius], np.round(prior.knots, 9)))


def test_radial_prior_represents_a_cusp_exactly():
    # 1/r with a zero centre, inside exact_radius: a least-squares fit of the
    # knot values through the interpolation reproduces it to rounding.
    prior = RadialPrior((11, 11), exact_radius=10.0)
    rows, cols = np.meshgrid(np.arange(11) - 5, np.arange(11) - 5, indexing="ij")
    r = np.hypot(rows, cols)
    target = np.where(r > 0, 1 / np.where(r > 0, r, 1), 0.0)
    with jax.enable_x64(True):
        basis = np.asarray(prior.to_kernel(jnp.eye(prior.num_latent))).reshape(prior.num_latent, -1)
    coef, *_ = np.linalg.lstsq(basis.T, target.ravel(), rcond=None)
    np.testing.assert_allclose(basis.T @ coef, target.ravel(), atol=1e-10)


def test_radial_prior_bad_arguments():
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        RadialPrior((5, 5), order=3)
    with pytest.raises(ValueError, match="growth must be positive"):
        RadialPrior((5, 5), growth=0.0)


# --- SmoothPrior(boundary='zero'): Dirichlet Laplacian ------------------------
@pytest.mark.parametrize("shape", [(5, 5), (4, 7), (1, 6), (6, 3)])
@pytest.mark.parametrize("order", [1, 2])
def test_zero_boundary_covariance_matches_dirichlet_differences(shape, order):
    prior = SmoothPrior(shape, order=order, boundary="zero")
    with jax.enable_x64(True):
        covariance = prior.covariance()
    dirichlet = smooth_prior_covariance(shape, order, boundary="zero")
    np.testing.assert_allclose(covariance, dirichlet, atol=1e-10)
    variances = np.diag(covariance).reshape(shape)
    assert np.isclose(variances.mean(), 1.0)
    # The point of the zero boundary: the corners vary less than the centre.
    assert variances[0, 0] < variances[shape[0] // 2, shape[1] // 2]
    # And it differs from the reflecting prior (not the same matrix by accident).
    reflect = smooth_prior_covariance(shape, order, boundary="reflect")
    assert not np.allclose(covariance, reflect, atol=1e-3)


@pytest.mark.parametrize("order", [1, 2])
def test_zero_boundary_transpose_is_dense_transpose(rng, order):
    shape = (6, 5)
    prior = SmoothPrior(shape, order=order, boundary="zero")
    with jax.enable_x64(True):
        p = prior.num_latent
        forward = np.asarray(prior.to_kernel(jnp.eye(p))).reshape(p, p).T  # kernel <- latent
        backward = np.asarray(prior.to_latent_transpose(jnp.eye(p).reshape((p,) + shape)))
        z = jnp.asarray(rng.standard_normal((3, p)))
        batched = np.asarray(prior.to_kernel(z)).reshape(3, p)
    np.testing.assert_allclose(backward.T, forward.T, atol=1e-12)
    np.testing.assert_allclose(batched, np.asarray(z) @ forward.T, atol=1e-12)


def test_smooth_names_validation_and_hashing():
    # The zero boundary is the default; names say order and boundary.
    assert SmoothPrior((5, 5)).boundary == "zero"
    assert SmoothPrior((5, 5)).name == "smooth"
    assert SmoothPrior((5, 5), order=2).name == "smooth2"
    assert SmoothPrior((5, 5), boundary="reflect").name == "smooth_reflect"
    assert SmoothPrior((5, 5), order=2, boundary="reflect").name == "smooth2_reflect"
    assert SmoothPrior((5, 5), boundary="zero", name="mine").name == "mine"
    for name in ("smooth", "smooth2", "smooth_reflect", "smooth2_reflect"):
        assert resolve_prior(name, (5, 5)).name == name
    # Value equality and hashing (compiled programs are shared between equal priors).
    assert SmoothPrior((5, 5), boundary="zero") == SmoothPrior((5, 5), boundary="zero")
    assert hash(SmoothPrior((5, 5), boundary="zero")) == hash(SmoothPrior((5, 5), boundary="zero"))
    assert SmoothPrior((5, 5), boundary="zero") != SmoothPrior((5, 5), boundary="reflect")
    with pytest.raises(ValueError, match="boundary must be one of"):
        SmoothPrior((5, 5), boundary="periodic")


@pytest.mark.parametrize(
    "image_shape,kernel_shape", [((16, 16), (5, 5)), ((7, 7), (9, 8))]
)  # kernel-space and data-space solves
def test_zero_boundary_exact_posterior_matches_closed_form(image_shape, kernel_shape):
    case = bk.simulate(image_shape, "gaussian", kernel_shape, noise_sigma=0.05, seed=4)
    prior = SmoothPrior(kernel_shape, boundary="zero")
    cov = smooth_prior_covariance(kernel_shape, 1, boundary="zero")
    H = convolution_matrix(case.A, kernel_shape, "same")
    y = case.B.ravel()
    # The exact route's log marginal likelihood at fixed hyperparameters.
    with jax.enable_x64(True):
        op = make_operator(case.A, kernel_shape, "same")
        spectrum = decompose(whitened_operator(op, prior, None), jnp.asarray(y))
        for sigma, scale in [(0.05, 0.02), (0.3, 0.1)]:
            ours = float(log_marginal_likelihood(spectrum, sigma, scale))
            dense = log_marginal(H, y, scale**2 * cov, sigma)
            assert abs(ours - dense) < 1e-8 * abs(dense) + 1e-8
    # Its draws at fixed hyperparameters against the closed-form posterior.
    sigma, scale = 0.05, 0.03
    mean, post_cov = gaussian_posterior(H, y, scale**2 * cov, sigma)
    num = 2000
    post = bk.fit(case.A, case.B, kernel_shape, prior=prior, method="exact", noise_sigma=sigma,
                  kernel_scale=scale, num_samples=num, seed=5, progress_bar=False,
                  draws_dtype=np.float64)  # fmt: skip
    assert_moments_match(post.kernel_draws, mean, np.sqrt(np.diag(post_cov)), ess=num)
    d = mean.size
    centred = post.kernel_draws.reshape(num, d) - mean
    mahalanobis = np.einsum("ij,ij->i", centred, np.linalg.solve(post_cov, centred.T).T)
    assert abs(mahalanobis.mean() - d) < Z * np.sqrt(2 * d / num)
