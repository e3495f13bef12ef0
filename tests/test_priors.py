import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import smooth_prior_covariance

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
        covariance = SmoothPrior(shape, order=order).covariance()
    np.testing.assert_allclose(covariance, smooth_prior_covariance(shape, order), atol=1e-10)
    assert np.isclose(np.mean(np.diag(covariance)), 1.0)


def test_transpose_is_adjoint(rng):
    prior = SmoothPrior((6, 5), order=2)
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
