"""Sums of linear-Gaussian priors: the dense covariance, the exact evidence, and the
evidence choosing a radial profile with a residual for a slightly elliptical kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import convolution_matrix, log_marginal
from scipy.signal import convolve2d

import bayeskernel as bk
from bayeskernel.catalogue import AUTO_PRIORS
from bayeskernel.forward import make_operator
from bayeskernel.infer.exact import decompose, log_marginal_likelihood, whitened_operator
from bayeskernel.priors import (
    ParametricPrior,
    RadialPrior,
    SmoothPrior,
    SumPrior,
    radial_residual,
    resolve_prior,
)


@pytest.mark.parametrize("shape", [(5, 5), (4, 7)])
def test_covariance_is_the_scaled_sum_and_the_transpose_is_adjoint(shape, rng):
    with jax.enable_x64(True):
        radial, smooth = RadialPrior(shape), SmoothPrior(shape, order=2)
        prior = SumPrior((radial, smooth), (1.0, 0.3))
        expected = radial.covariance() + 0.3**2 * smooth.covariance()
        np.testing.assert_allclose(prior.covariance(), expected, rtol=1e-12, atol=1e-14)
        z = jnp.asarray(rng.normal(size=prior.num_latent))
        k = jnp.asarray(rng.normal(size=shape))
        left = float(jnp.sum(prior.to_kernel(z) * k))
        right = float(z @ prior.to_latent_transpose(k))
        assert abs(left - right) < 1e-12 * (abs(left) + 1)
    assert (
        prior.name == "radial+smooth2"
        and prior.num_latent == radial.num_latent + shape[0] * shape[1]
    )


@pytest.mark.parametrize("image_shape,kernel_shape", [((20, 20), (5, 5)), ((8, 8), (11, 11))])
def test_exact_evidence_matches_dense(image_shape, kernel_shape):
    # Kernel space (p <= n) and data space (p > n).
    case = bk.simulate(image_shape, "gaussian", kernel_shape, noise_sigma=0.05, seed=0)
    H = convolution_matrix(case.A, kernel_shape, "same")
    with jax.enable_x64(True):
        prior = radial_residual(kernel_shape, order=1, ratio=0.1)
        cov = prior.covariance()
        whitened = whitened_operator(make_operator(case.A, kernel_shape, "same"), prior, None)
        spectrum = decompose(whitened, jnp.asarray(case.B.ravel()))
        for sigma, scale in [(0.05, 0.02), (0.3, 0.1)]:
            ours = float(log_marginal_likelihood(spectrum, sigma, scale))
            dense = log_marginal(H, case.B.ravel(), scale**2 * cov, sigma)
            assert abs(ours - dense) < 1e-8 * abs(dense) + 1e-8


def test_the_evidence_prefers_a_residual_for_an_elliptical_kernel():
    rng = np.random.default_rng(7)
    y, x = np.mgrid[-4:5, -4:5]
    kernel = np.exp(-0.5 * ((y / 1.2) ** 2 + (x / 1.7) ** 2))  # axis ratio 0.7
    kernel /= kernel.sum()
    A = (rng.random((48, 48)) < 0.5).astype(float)
    B = convolve2d(A, kernel, "same") + 0.005 * rng.normal(size=A.shape)
    post = bk.fit(A, B, (9, 9), prior=list(AUTO_PRIORS), num_samples=100, progress_bar=False)
    evidence = post.diagnostics["prior_evidence"]
    assert set(evidence) == set(AUTO_PRIORS)
    best = max(evidence, key=evidence.get)
    assert best.startswith("radial+") and evidence[best] > evidence["radial"] + 10
    radial = bk.fit(A, B, (9, 9), prior="radial", num_samples=100, progress_bar=False)
    error = bk.relative_error(post.kernel_mean, kernel)
    assert error < 0.5 * bk.relative_error(radial.kernel_mean, kernel)


def test_bad_parts_are_named():
    with pytest.raises(ValueError, match="two or more"):
        SumPrior((RadialPrior((5, 5)),), (1.0,))
    with pytest.raises(ValueError, match="one kernel_shape"):
        SumPrior((RadialPrior((5, 5)), SmoothPrior((5, 7))), (1.0, 0.1))
    with pytest.raises(ValueError, match="linear-Gaussian"):
        SumPrior((RadialPrior((5, 5)), ParametricPrior((5, 5), family="gaussian")), (1.0, 0.1))
    with pytest.raises(ValueError, match="positive"):
        SumPrior((RadialPrior((5, 5)), SmoothPrior((5, 5))), (1.0, 0.0))
    assert resolve_prior("radial+smooth2", (5, 5)).scales == (1.0, 0.1)
