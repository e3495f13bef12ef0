import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import convolve2d

from bayeskernel.forward import convolve, make_operator, output_shape

shapes = st.tuples(st.integers(1, 13), st.integers(1, 13))
kernel_shapes = st.tuples(st.integers(1, 29), st.integers(1, 29))


def _valid_possible(a_shape, k_shape):
    return all(a >= k for a, k in zip(a_shape, k_shape)) or all(
        k >= a for a, k in zip(a_shape, k_shape)
    )


# Each example compiles for its shapes; the circular-length test below covers
# many more shapes of the FFT route without compiling.
@settings(max_examples=30, deadline=None)
@given(
    a_shape=shapes,
    k_shape=kernel_shapes,
    mode=st.sampled_from(["full", "same", "valid"]),
    route=st.sampled_from(["fft", "direct"]),
    seed=st.integers(0, 2**31),
)
def test_operator_equals_scipy_and_adjoint_holds(a_shape, k_shape, mode, route, seed):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal(a_shape)
    kernel = rng.standard_normal(k_shape)
    if mode == "valid" and not _valid_possible(a_shape, k_shape):
        with pytest.raises(ValueError, match="impossible for mode='valid'"):
            make_operator(image, k_shape, mode)
        return
    reference = convolve2d(image, kernel, mode)
    with jax.enable_x64(True):
        op = make_operator(image, k_shape, mode, route=route)
        out = np.asarray(op(jnp.asarray(kernel)))
        assert out.shape == reference.shape == op.output_shape
        np.testing.assert_allclose(out, reference, rtol=1e-10, atol=1e-10 * np.abs(reference).max())
        residual = rng.standard_normal(reference.shape)
        lhs = float(np.sum(out * residual))
        rhs = float(np.sum(kernel * np.asarray(op.adjoint(jnp.asarray(residual)))))
        assert abs(lhs - rhs) <= 1e-10 * (abs(lhs) + np.abs(out).sum())


@pytest.mark.parametrize("mode", ["same", "full", "valid"])
def test_motivating_size_kernel_larger_than_image(mode):
    rng = np.random.default_rng(1)
    image = rng.binomial(1, 0.2, (100, 100)).astype(float)
    kernel = rng.standard_normal((199, 199))
    reference = convolve2d(image, kernel, mode)
    with jax.enable_x64(True):
        op = make_operator(image, kernel.shape, mode)
        assert op.route == "fft"
        # The circular length covers only what the output window needs: the full
        # 298 (a slow 2 x 149) for 'full', padded to 300 = 2^2 3 5^2; 199 (the
        # kernel's side) for 'same' and 'valid', padded to 200.
        assert op.fft_shape == ((300, 300) if mode == "full" else (200, 200))
        out = np.asarray(op(kernel))
        residual = rng.standard_normal(reference.shape)
        lhs = np.sum(out * residual)
        rhs = np.sum(kernel * np.asarray(op.adjoint(residual)))
    np.testing.assert_allclose(out, reference, rtol=1e-10, atol=1e-10 * np.abs(reference).max())
    assert abs(lhs - rhs) <= 1e-10 * np.abs(out).sum()


def test_batched_kernels_and_jit_grad():
    rng = np.random.default_rng(2)
    image = rng.standard_normal((12, 10))
    kernels = rng.standard_normal((3, 5, 4))
    with jax.enable_x64(True):
        op = make_operator(image, (5, 4), "same")
        batched = np.asarray(jax.jit(lambda o, k: o(k))(op, kernels))
        for b in range(3):
            np.testing.assert_allclose(
                batched[b], convolve2d(image, kernels[b], "same"), atol=1e-12
            )
        # Gradient of 0.5||Hk - y||^2 is H^T(Hk - y).
        target = rng.standard_normal((12, 10))
        grad = jax.grad(lambda k: 0.5 * jnp.sum((op(k) - target) ** 2))(kernels[0])
        np.testing.assert_allclose(grad, op.adjoint(op(kernels[0]) - target), atol=1e-10)


def test_convolve_function_and_output_shape():
    rng = np.random.default_rng(3)
    image, kernel = rng.standard_normal((7, 9)), rng.standard_normal((4, 6))
    with jax.enable_x64(True):
        for mode in ("full", "same", "valid"):
            np.testing.assert_allclose(
                convolve(image, kernel, mode), convolve2d(image, kernel, mode), atol=1e-12
            )
            assert (
                output_shape(image.shape, kernel.shape, mode)
                == convolve2d(image, kernel, mode).shape
            )


def test_bad_mode_and_route():
    with pytest.raises(ValueError, match="mode must be one of"):
        make_operator(np.ones((4, 4)), (3, 3), "circular")
    with pytest.raises(ValueError, match="route must be"):
        make_operator(np.ones((4, 4)), (3, 3), "same", route="magic")


@pytest.mark.parametrize("mode", ["same", "full", "valid"])
def test_convolve_keeps_float64_and_refuses_complex(mode):
    rng = np.random.default_rng(4)
    image, kernel = rng.normal(size=(20, 17)), rng.normal(size=(5, 8))
    result = convolve(image, kernel, mode)
    assert result.dtype == np.float64  # NumPy's float64 in, float64 out
    np.testing.assert_allclose(np.asarray(result), convolve2d(image, kernel, mode), atol=1e-10)
    with pytest.raises(TypeError, match="image must be real-valued"):
        convolve(image + 1j, kernel, mode)
    with pytest.raises(TypeError, match="kernel must be real-valued"):
        convolve(image, kernel.astype(complex), mode)


@pytest.mark.parametrize("mode", ["same", "full", "valid"])
@pytest.mark.parametrize("image_shape,kernel_shape", [((13, 11), (5, 4)), ((6, 7), (9, 9))])
def test_the_numpy_fft_convolution_is_scipys(mode, image_shape, kernel_shape):
    from bayeskernel.shapes import fft_convolve

    rng = np.random.default_rng(3)
    A, K = rng.normal(size=image_shape), rng.normal(size=kernel_shape)
    np.testing.assert_allclose(fft_convolve(A, K, mode), convolve2d(A, K, mode), atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(
    a_shape=shapes,
    k_shape=kernel_shapes,
    mode=st.sampled_from(["full", "same", "valid"]),
    seed=st.integers(0, 2**31),
)
def test_circular_length_is_exact_and_shortest(a_shape, k_shape, mode, seed):
    # The operator's transform length, before fast padding: exact on the output
    # window, and one shorter wraps an index into it (unless a factor would not fit).
    from bayeskernel.forward import _circular_length
    from bayeskernel.shapes import output_window

    if mode == "valid" and not _valid_possible(a_shape, k_shape):
        return
    rng = np.random.default_rng(seed)
    image, kernel = rng.standard_normal(a_shape), rng.standard_normal(k_shape)
    reference = convolve2d(image, kernel, mode)
    (r0, c0), (h, w) = output_window(a_shape, k_shape, mode)
    lengths = (
        _circular_length(a_shape[0], k_shape[0], r0, h),
        _circular_length(a_shape[1], k_shape[1], c0, w),
    )

    def circular(shape):
        full = np.fft.irfft2(np.fft.rfft2(image, shape) * np.fft.rfft2(kernel, shape), shape)
        return full[r0 : r0 + h, c0 : c0 + w]

    scale = np.abs(reference).max()
    np.testing.assert_allclose(circular(lengths), reference, atol=1e-10 * scale)
    for axis in (0, 1):
        shorter = list(lengths)
        shorter[axis] -= 1
        if shorter[axis] >= max(a_shape[axis], k_shape[axis]):
            out = circular(tuple(shorter))  # cut short when the window outgrows it
            assert out.shape != reference.shape or np.abs(out - reference).max() > 1e-8 * scale
