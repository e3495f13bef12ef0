"""``H^T H`` without ``H`` against the dense convolution matrix."""

import numpy as np
import pytest
from reference import convolution_matrix

from bayeskernel.normal import normal_matrix

SHAPES = [
    ((12, 10), (5, 3)),
    ((7, 9), (11, 13)),  # kernel larger than the image
    ((10, 10), (4, 4)),  # even kernel
    ((6, 15), (3, 8)),
    ((9, 9), (9, 9)),
    ((5, 5), (1, 1)),
    ((13, 8), (6, 8)),
]


@pytest.mark.parametrize("mode", ["same", "full", "valid"])
@pytest.mark.parametrize("image_shape,kernel_shape", SHAPES)
def test_normal_matrix_equals_dense(image_shape, kernel_shape, mode, rng):
    a = (rng.random(image_shape) < 0.3) + 0.1 * rng.standard_normal(image_shape)
    try:
        H = convolution_matrix(a, kernel_shape, mode)
    except ValueError:
        pytest.skip("shape impossible for 'valid'")
    dense = H.T @ H
    ours = normal_matrix(a, kernel_shape, mode)
    assert ours.shape == dense.shape
    np.testing.assert_allclose(ours, dense, rtol=0, atol=1e-12 * np.abs(dense).max())
