"""The elliptical profile prior and the search for its axis ratio and angle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import convolution_matrix, log_marginal
from scipy.signal import convolve2d

import bayeskernel as bk
from bayeskernel.catalogue import AUTO_PRIORS, ELLIPTICAL_CANDIDATES
from bayeskernel.infer.ellipse import (
    elliptical_prior,
    log_evidence,
    max_log_evidence,
    search_ellipse,
)
from bayeskernel.priors import RadialPrior


def _elliptical_distance(shape, ratio, angle):
    rows, cols = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    u = np.cos(angle) * rows + np.sin(angle) * cols
    v = -np.sin(angle) * rows + np.cos(angle) * cols
    return np.hypot(u / np.sqrt(ratio), v * np.sqrt(ratio))


def _case(ratio=0.6, angle=np.deg2rad(40), seed=0, noise=0.005):
    rng = np.random.default_rng(seed)
    kernel = np.exp(-0.5 * (_elliptical_distance((11, 11), ratio, angle) / 1.6) ** 2)
    kernel /= kernel.sum()
    A = (rng.random((48, 48)) < 0.5).astype(float)
    B = convolve2d(A, kernel, "same") + noise * rng.normal(size=A.shape)
    return A, B, kernel


def test_a_round_axis_ratio_is_the_radial_prior_and_the_matrix_is_the_map(rng):
    round_ = RadialPrior((9, 7), axis_ratio=1.0, angle=0.7)
    plain = RadialPrior((9, 7))
    np.testing.assert_array_equal(round_.knots, plain.knots)
    prior = elliptical_prior((9, 7), 0.7, 0.4)
    z = rng.normal(size=(3, prior.num_latent))
    with jax.enable_x64(True):
        kernels = np.asarray(prior.to_kernel(jnp.asarray(z)))
    np.testing.assert_allclose(kernels.reshape(3, -1), z @ prior.kernel_matrix().T, atol=1e-12)
    # Constant on the ellipses: equal elliptical distance, equal value.
    rho = _elliptical_distance((9, 7), 0.7, 0.4).ravel()
    for value in np.unique(np.round(rho, 9)):
        same = np.flatnonzero(np.abs(rho - value) < 1e-9)
        flat = kernels.reshape(3, -1)[:, same]
        np.testing.assert_allclose(flat, flat[:, :1].repeat(same.size, 1), atol=1e-12)
    with pytest.raises(ValueError, match="axis_ratio"):
        RadialPrior((5, 5), axis_ratio=1.5)


def test_the_evidence_is_the_dense_closed_form_and_its_maximum():
    A, B, _ = _case()
    H = convolution_matrix(A, (11, 11), "same")
    y = B.ravel()
    T = elliptical_prior((11, 11), 0.6, 0.7).kernel_matrix()
    W = H @ T
    gram, projection = W.T @ W, W.T @ y
    for sigma, scale in [(0.005, 0.01), (0.05, 0.003)]:
        dense = log_marginal(H, y, scale**2 * T @ T.T, sigma)
        ours = log_evidence(gram, projection, y @ y, y.size, sigma, scale)
        assert abs(ours - dense) < 1e-8 * abs(dense)
    top, sigma, scale = max_log_evidence(gram, projection, y @ y, y.size)
    assert abs(top - log_evidence(gram, projection, y @ y, y.size, sigma, scale)) < 1e-6
    for fs, fk in [(1.03, 1), (0.97, 1), (1, 1.1), (1, 0.9)]:
        assert log_evidence(gram, projection, y @ y, y.size, sigma * fs, scale * fk) < top


def test_the_search_finds_the_axis_ratio_and_angle():
    ratio, angle = 0.6, np.deg2rad(40)
    A, B, _ = _case(ratio, angle)
    H = convolution_matrix(A, (11, 11), "same")
    y = B.ravel()
    found = search_ellipse(H.T @ H, H.T @ y, y @ y, y.size, (11, 11))
    assert abs(found.axis_ratio - ratio) < 0.05
    turn = abs(found.angle - angle) % np.pi
    assert min(turn, np.pi - turn) < np.deg2rad(5)


def test_auto_weighs_the_elliptical_profile_found():
    A, B, kernel = _case()
    post = bk.fit(A, B, (11, 11), num_samples=100, progress_bar=False)
    evidence = post.diagnostics["prior_evidence"]
    assert set(evidence) == set(AUTO_PRIORS) | set(ELLIPTICAL_CANDIDATES)
    assert max(evidence, key=evidence.get).startswith("elliptical")
    assert abs(post.diagnostics["ellipse"]["axis_ratio"] - 0.6) < 0.05
    radial = bk.fit(A, B, (11, 11), prior="radial", num_samples=100, progress_bar=False)
    error = bk.relative_error(post.kernel_mean, kernel)
    assert error < 0.5 * bk.relative_error(radial.kernel_mean, kernel)
    # Named candidates are weighed as given: no search.
    listed = bk.fit(A, B, (11, 11), prior=["radial", "smooth"], num_samples=50,
                    progress_bar=False)  # fmt: skip
    assert "ellipse" not in listed.diagnostics
    assert set(listed.diagnostics["prior_evidence"]) == {"radial", "smooth"}


def test_a_round_kernel_adds_no_elliptical_candidate_that_wins():
    A, B, kernel = _case(ratio=1.0, angle=0.0, seed=1)
    post = bk.fit(A, B, (11, 11), num_samples=50, progress_bar=False)
    found = post.diagnostics["ellipse"]
    assert found["axis_ratio"] > 0.9
