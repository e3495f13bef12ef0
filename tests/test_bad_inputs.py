"""Property-based campaign: random inputs get a clear error naming the argument, or an answer.

"Clear" means one line that names what was wrong (``A``, ``B``, ``mask``,
``kernel_shape``, ...); an answer means finite draws of the right shape. Shapes
come from a small set so that compiled programs are reused and the default run
stays quick. The default run's examples are fixed (``derandomize``: same examples,
same result, in CI too); the slow run draws new ones each time.
"""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bayeskernel as bk
from bayeskernel.simulation import KERNELS

IMAGE_SHAPES = [(8, 8), (9, 7)]
KERNEL_SHAPES = [(3, 3), (2, 4)]
DTYPES = [np.float64, np.float32, np.int16, np.uint8, np.bool_]
# Words an error must contain one of: the argument it is about.
NAMES = ("A", "B", "mask", "kernel_shape", "mode", "seed", "noise_sigma", "num_samples")


@st.composite
def fit_inputs(draw):
    image_shape = draw(st.sampled_from(IMAGE_SHAPES))
    kernel_shape = draw(st.sampled_from(KERNEL_SHAPES))
    mode = draw(st.sampled_from(["same", "full", "valid"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = (rng.random(image_shape) < draw(st.floats(0, 1))).astype(draw(st.sampled_from(DTYPES)))
    try:
        out_shape = bk.output_shape(image_shape, kernel_shape, mode)
    except ValueError:
        out_shape = image_shape
    if draw(st.booleans()):  # a wrong shape now and then
        out_shape = (out_shape[0] + draw(st.integers(-1, 1)), out_shape[1])
    B = rng.normal(size=out_shape) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    holes = rng.random(out_shape) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    B[holes] = np.nan
    mask = None
    if draw(st.booleans()):
        mask = rng.random(out_shape) < draw(st.floats(0, 1))
    return A, B, kernel_shape, mode, mask


def _check(call):
    """Run ``call``: an error must be one line naming an argument."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except (ValueError, TypeError) as error:
        message = str(error)
        assert "\n" not in message, message
        assert any(name in message for name in NAMES), message
        return None


def _fit_property(inputs):
    A, B, kernel_shape, mode, mask = inputs
    post = _check(
        lambda: bk.fit(
            A,
            B,
            kernel_shape,
            mode=mode,
            mask=mask,
            prior="smooth",
            method="map",
            num_samples=2,
            progress_bar=False,
        )  # fmt: skip
    )
    if post is not None:
        assert post.kernel_draws.shape[2:] == kernel_shape
        assert np.isfinite(post.kernel_draws).all() and np.isfinite(post.noise_sigma)


@settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(fit_inputs())
def test_fit_gives_a_named_error_or_a_finite_answer(inputs):
    _fit_property(inputs)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fit_inputs())
def test_fit_gives_a_named_error_or_a_finite_answer_long(inputs):
    _fit_property(inputs)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    family=st.sampled_from(sorted(KERNELS)),
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    parameter=st.sampled_from(["width", "radius", "length", None]),
    value=st.floats(allow_nan=True, allow_infinity=True, width=32),
    noise=st.one_of(st.floats(-1, 2), st.just(float("nan"))),
)
def test_simulate_gives_a_named_error_or_finite_data(family, shape, parameter, value, noise):
    params = {} if parameter is None else {parameter: value}
    try:
        case = bk.simulate((12, 12), family, shape, noise_sigma=noise, seed=0, **params)
    except ValueError as error:
        message = str(error)
        assert "\n" not in message
        assert any(word in message for word in ("kernel", "width", "radius", "length",
                                                "noise_sigma", "mode"))  # fmt: skip
        return
    assert np.isfinite(case.B).all() and np.isfinite(case.kernel).all() and case.kernel.any()


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    suffix=st.sampled_from(
        [".npy", ".npz", ".csv", ".txt", ".tif", ".png", ".dat", ".fits", ".fits.gz", ".xyz"]
    ),
    content=st.binary(max_size=300),
)
def test_readers_give_a_named_error_or_a_2d_float_array(tmp_path_factory, suffix, content):
    from bayeskernel.io import InputError, read_array

    path = tmp_path_factory.mktemp("files") / f"input{suffix}"
    path.write_bytes(content)
    try:
        array = read_array(path, role="B", allow_nan=True)
    except InputError as error:
        message = str(error)
        assert message.startswith(str(path)) and "\n" not in message, message
        return
    assert array.ndim == 2 and array.dtype == np.float64 and not np.isinf(array).any()


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    image_shape=st.tuples(st.integers(0, 9), st.integers(1, 9)),
    kernel_shape=st.tuples(st.integers(1, 12), st.integers(0, 6)),
    mode=st.sampled_from(["same", "full", "valid", "circular"]),
    dtype=st.sampled_from([np.float64, np.float32, np.int32, np.bool_, np.complex128]),
    seed=st.integers(0, 2**16),
)
def test_convolve_gives_a_named_error_or_scipy(image_shape, kernel_shape, mode, dtype, seed):
    from scipy.signal import convolve2d

    rng = np.random.default_rng(seed)
    image = (rng.normal(size=image_shape) * 3).astype(dtype)
    kernel = rng.normal(size=kernel_shape)
    try:
        expected = convolve2d(image, kernel, mode)
    except ValueError:
        expected = None  # scipy refuses it too (empty input, impossible 'valid', bad mode)
    try:
        got = np.asarray(bk.convolve(image, kernel, mode))
    except (ValueError, TypeError) as error:
        message = str(error)
        assert "\n" not in message, message
        assert any(word in message for word in ("image", "kernel", "mode")), message
        return
    assert expected is not None, f"scipy refuses what convolve answered: {got.shape}"
    assert got.shape == expected.shape and got.dtype == np.float64
    np.testing.assert_allclose(
        got, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max(initial=1)
    )


def test_helpers_name_what_they_refuse(tmp_path):
    from bayeskernel.infer.stages import draw_layout
    from bayeskernel.observation import background_image
    from bayeskernel.priors import FieldPrior, SmoothPrior
    from bayeskernel.tiles.store import TileStore

    cases = [
        (lambda: FieldPrior(SmoothPrior((3, 3)), 2), "num_terms must be"),
        (lambda: background_image([1.0, 2.0], (4, 4)), "term count"),
        (lambda: bk.central_window((5, 5), (7, 7)), "size must be"),
        (lambda: bk.relative_error(np.ones((3, 3)), np.zeros((3, 3))), "truth is all zero"),
        (lambda: bk.make_kernel("gaussian", (5, 5), widht=1.0), "takes width"),
        (lambda: bk.make_kernel("anisotropic_gaussian", (5, 5), angle=0.3), "got angle"),
        (lambda: draw_layout(0), "total >= 1"),
        (lambda: TileStore(tmp_path / "store", {}).read(0, 0), "not fitted"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
