"""``H^T H`` without ``H`` against the dense convolution matrix."""

import numpy as np
import pytest
from reference import convolution_matrix

from bayeskernel.field import field_basis
from bayeskernel.normal import field_normal_matrix, normal_matrix, weighted_normal_matrix
from bayeskernel.shapes import output_window

SHAPES = [
    ((12, 10), (5, 3)),
    ((7, 9), (11, 13)),  # kernel larger than the image
    ((10, 10), (4, 4)),  # even kernel
    ((6, 15), (3, 8)),
    ((9, 9), (9, 9)),
    ((5, 5), (1, 1)),
    ((13, 8), (6, 8)),
]


def _image_and_matrix(image_shape, kernel_shape, mode, rng):
    """A test image and its dense convolution matrix (skips shapes 'valid' refuses)."""
    a = (rng.random(image_shape) < 0.3) + 0.1 * rng.standard_normal(image_shape)
    try:
        return a, convolution_matrix(a, kernel_shape, mode)
    except ValueError:
        pytest.skip("shape impossible for 'valid'")


@pytest.mark.parametrize("mode", ["same", "full", "valid"])
@pytest.mark.parametrize("image_shape,kernel_shape", SHAPES)
def test_normal_matrix_equals_dense(image_shape, kernel_shape, mode, rng):
    a, H = _image_and_matrix(image_shape, kernel_shape, mode, rng)
    dense = H.T @ H
    ours = normal_matrix(a, kernel_shape, mode)
    assert ours.shape == dense.shape
    np.testing.assert_allclose(ours, dense, rtol=0, atol=1e-12 * np.abs(dense).max())


@pytest.mark.filterwarnings("ignore::bayeskernel.api.PriorDominatedWarning")
def test_exact_route_uses_the_normal_matrix_only_where_it_pays():
    import bayeskernel as bk

    case = bk.simulate((24, 24), "gaussian", (9, 9), noise_sigma=0.05, seed=0)
    iid = bk.fit(case.A, case.B, (9, 9), prior="iid", method="map", num_samples=5,
                 progress_bar=False)  # fmt: skip
    assert iid.diagnostics["gram_build"] == "normal matrix"
    # A radial profile has a few dozen knots on a 41x41 grid: the kernel-grid
    # normal matrix would be far larger than the latent Gram matrix.
    wide = bk.simulate((48, 48), "gaussian", (41, 41), noise_sigma=0.05, seed=0)
    radial = bk.fit(wide.A, wide.B, (41, 41), prior="radial", method="map", num_samples=5,
                    progress_bar=False)  # fmt: skip
    assert radial.diagnostics["space"] == "kernel"
    assert radial.diagnostics["gram_build"] == "operator columns"


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("mode", ["same", "full", "valid"])
@pytest.mark.parametrize("image_shape,kernel_shape", SHAPES + [((1, 9), (1, 3))])
def test_field_normal_matrix_equals_dense(image_shape, kernel_shape, mode, order, rng):
    a, H = _image_and_matrix(image_shape, kernel_shape, mode, rng)
    _, out_shape = output_window(image_shape, kernel_shape, mode)
    basis = field_basis(out_shape, order).reshape(-1, H.shape[0])
    field = np.concatenate([phi[:, None] * H for phi in basis], axis=1)
    dense = field.T @ field
    ours = field_normal_matrix(a, kernel_shape, mode, order)
    assert ours.shape == dense.shape
    np.testing.assert_allclose(ours, dense, rtol=0, atol=1e-11 * np.abs(dense).max())


@pytest.mark.parametrize("mode", ["same", "full", "valid"])
@pytest.mark.parametrize("image_shape,kernel_shape", SHAPES)
def test_weighted_normal_matrix_equals_dense(image_shape, kernel_shape, mode, rng):
    a, H = _image_and_matrix(image_shape, kernel_shape, mode, rng)
    _, out_shape = output_window(image_shape, kernel_shape, mode)
    weights = rng.uniform(0.0, 2.0, (3,) + tuple(out_shape)) * (rng.random(out_shape) > 0.2)
    ours = weighted_normal_matrix(a, weights, kernel_shape, mode)
    for w, got in zip(weights, ours, strict=True):
        dense = H.T @ (w.reshape(-1, 1) * H)
        np.testing.assert_allclose(got, dense, rtol=0, atol=1e-12 * np.abs(dense).max())
    single = weighted_normal_matrix(a, weights[0], kernel_shape, mode)
    np.testing.assert_allclose(single, ours[0], rtol=0, atol=1e-13 * np.abs(ours[0]).max())
