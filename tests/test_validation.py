import warnings

import numpy as np
import pytest

import bayeskernel as bk


@pytest.fixture
def data(rng):
    A = rng.binomial(1, 0.3, (10, 10)).astype(float)
    return A, rng.standard_normal((10, 10))


@pytest.mark.parametrize(
    "change,error,message",
    [
        (dict(A=np.ones(5)), ValueError, "A must be a 2D array"),
        (dict(A=np.zeros((10, 0))), ValueError, "A is empty"),
        (dict(A=np.array([["a"] * 10] * 10)), TypeError, "A must be a 2D numeric array"),
        (dict(A=np.zeros((10, 10))), ValueError, "A is all zeros"),
        (dict(A=np.full((10, 10), np.nan)), ValueError, "A contains NaN or inf"),
        (dict(B=np.full((10, 10), np.inf)), ValueError, "B contains inf"),
        (dict(B=np.full((10, 10), np.nan)), ValueError, "no pixel of B is observed"),
        (dict(B=np.zeros((9, 10))), ValueError, r"B has shape \(9, 10\), but convolve2d"),
        (dict(kernel_shape=(3,)), ValueError, "kernel_shape must be a pair"),
        (dict(kernel_shape=(3, 0)), ValueError, "kernel_shape must be a pair"),
        (dict(kernel_shape=(4, 20), mode="valid"), ValueError, "impossible for mode='valid'"),
        (dict(mode="wrap"), ValueError, "mode must be one of"),
        (dict(method="gibbs"), ValueError, "method must be one of"),
        (dict(noise_sigma=-1.0), ValueError, "noise_sigma must be a positive"),
        (dict(num_samples=0), ValueError, "num_samples must be a positive integer"),
        (dict(mask=np.ones((10, 10))), TypeError, "mask must be a boolean array"),
        (dict(seed=-1), ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
        (dict(seed=2**70), ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
        (dict(seed=1.5), TypeError, "seed must be an integer, a JAX key"),
        (dict(seed=True), TypeError, "seed must be an integer or a JAX key"),
        (dict(draws_dtype=int), TypeError, "draws_dtype must be a floating dtype"),
        (dict(num_samples=10**12), ValueError, r"need [\d,.]+ GiB .*at most num_samples="),
        (dict(kernel_shape=(400, 400)), ValueError, r"160,000 entries for 100 observed pixels"),
        (dict(draws_dtype="cheese"), TypeError, "draws_dtype must be a floating dtype"),
    ],
)
def test_bad_input_gets_a_clear_error(data, change, error, message):
    A, B = data
    kwargs = dict(
        A=A, B=B, kernel_shape=(3, 3), mode="same", prior="smooth", method="map", progress_bar=False
    )
    kwargs.update(change)
    with pytest.raises(error, match=message):
        bk.fit(kwargs.pop("A"), kwargs.pop("B"), kwargs.pop("kernel_shape"), **kwargs)


def test_integer_and_bool_inputs_are_promoted(data):
    A, B = data
    post = bk.fit(
        A.astype(bool),
        B.astype(np.float32),
        (3, 3),
        prior="smooth",
        method="map",
        num_samples=10,
        progress_bar=False,
    )
    assert post.kernel_mean.dtype == np.float64
    post_int = bk.fit(
        A.astype(np.int64), B, (3, 3), prior="smooth", method="map", num_samples=10,
        progress_bar=False,
    )  # fmt: skip
    np.testing.assert_allclose(post_int.noise_sigma, post.noise_sigma, rtol=1e-4)


def test_constant_B_warns(data):
    A, _ = data
    with pytest.warns(UserWarning, match="B is constant"):
        bk.fit(
            A, np.ones((10, 10)), (3, 3), prior="smooth", method="map", num_samples=5,
            progress_bar=False,
        )  # fmt: skip


def test_binary_flag_warns_for_a_non_binary_image():
    case = bk.simulate((16, 16), "gaussian", (3, 3), noise_sigma=0.05, seed=0)
    scaled = case.A * 255.0
    with pytest.warns(bk.NotBinaryWarning, match=r"A was declared binary .* neither 0 nor 1"):
        bk.fit(scaled, case.B * 255.0, (3, 3), prior="smooth", method="map", num_samples=5,
               binary=True, progress_bar=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bk.fit(case.A, case.B, (3, 3), prior="smooth", method="map", num_samples=5, binary=True,
               progress_bar=False)  # fmt: skip


def test_prior_dominated_problem_warns_in_words():
    # 64 noisy pixels for a 21x21 kernel: the data pin down a few of 441 directions.
    case = bk.simulate((8, 8), "gaussian", (21, 21), noise_sigma=0.5, seed=0)
    with pytest.warns(bk.PriorDominatedWarning, match="degrees of freedom") as record:
        post = bk.fit(case.A, case.B, (21, 21), prior="smooth", method="map", num_samples=5,
                      progress_bar=False)  # fmt: skip
    effective = post.diagnostics["effective_parameters"]
    assert 0 < effective < 0.1 * 441
    assert f"about {effective:.0f} of the kernel's 441" in str(record[0].message)
    assert any("degrees of freedom" in w for w in post.summary()["warnings"])


def test_thinning_keeps_num_samples_draws():
    case = bk.simulate((16, 16), "gaussian", (3, 3), noise_sigma=0.05, seed=0)
    with pytest.raises(ValueError, match="thinning must be a positive integer"):
        bk.fit(case.A, case.B, (3, 3), prior="smooth", thinning=0)
    for method in ("nuts", "exact"):
        post = bk.fit(case.A, case.B, (3, 3), prior="smooth", method=method, num_warmup=30,
                      num_samples=20, num_chains=1, thinning=3, progress_bar=False)  # fmt: skip
        assert post.kernel_draws.shape == (1, 20, 3, 3)
        assert post.noise_sigma_draws.shape == (1, 20)


def test_hyper_scales_fix_the_hyperpriors():
    case = bk.simulate((16, 16), "gaussian", (3, 3), noise_sigma=0.05, seed=0)
    post = bk.fit(case.A, case.B, (3, 3), prior="smooth", method="map", num_samples=5,
                  hyper_scales=(0.2, 0.1), progress_bar=False)  # fmt: skip
    assert post.diagnostics["hyper_scales"] == {"noise": 0.2, "kernel": 0.1}
    for bad in ((0.2, -1.0), (0.2,), "big"):
        with pytest.raises(ValueError, match="hyper_scales must be"):
            bk.fit(case.A, case.B, (3, 3), prior="smooth", hyper_scales=bad)


def test_values_that_would_leave_the_float_range_are_refused(data):
    A, B = data
    options = dict(prior="smooth", method="map", num_samples=5, progress_bar=False)
    for factor in (1e200, 1e-200):
        with pytest.raises(ValueError, match=r"^A's values reach 1e[+-]200 in size: rescale A"):
            bk.fit(A * factor, B, (3, 3), **options)
        with pytest.raises(ValueError, match=r"^B's values reach"):
            bk.fit(A, B * factor, (3, 3), **options)
    # Kernels of order 1e50 fit in float64, not in the default float32 draws.
    with pytest.raises(ValueError, match="outside what draws_dtype=float32 stores"):
        bk.fit(A, B * 1e50, (3, 3), **options)
    post = bk.fit(A, B * 1e50, (3, 3), draws_dtype=np.float64, **options)
    assert np.isfinite(post.kernel_draws).all() and np.abs(post.kernel_mean).max() > 1e40


def test_seeds_of_every_kind_give_the_same_result_as_the_key_they_stand_for(data):
    import jax

    A, B = data
    options = dict(prior="smooth", method="map", num_samples=5, progress_bar=False)
    by_int = bk.fit(A, B, (3, 3), seed=7, **options)
    for seed in (np.int64(7), jax.random.PRNGKey(7), jax.random.key(7)):
        again = bk.fit(A, B, (3, 3), seed=seed, **options)
        np.testing.assert_array_equal(again.kernel_draws, by_int.kernel_draws)
    # A NumPy generator: one integer seed is drawn from it (same generator state,
    # same result).
    first = bk.fit(A, B, (3, 3), seed=np.random.default_rng(1), **options)
    second = bk.fit(A, B, (3, 3), seed=np.random.default_rng(1), **options)
    np.testing.assert_array_equal(first.kernel_draws, second.kernel_draws)


def test_interval_probabilities_and_compare_inputs_are_checked(data):
    A, B = data
    post = bk.fit(A, B, (3, 3), prior="smooth", num_samples=5, progress_bar=False)
    for prob in (-0.1, 0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="prob must lie strictly between 0 and 1"):
            post.noise_sigma_interval(prob)
        with pytest.raises(ValueError, match="prob must lie strictly between 0 and 1"):
            post.interval(prob)
    with pytest.raises(TypeError, match="posteriors must be a mapping of name -> KernelPosterior"):
        bk.compare([post, post])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(kernel="disk", kernel_shape=(2, 9)), "has no nonzero entry"),
        (dict(kernel="gaussian", kernel_shape=(5, 5), width=0), "width must be a positive"),
        (dict(kernel="disk", kernel_shape=(5, 5), radius=-1), "radius must be a positive"),
        (dict(kernel="motion", kernel_shape=(5, 5), angle=np.nan), "angle must be a finite"),
        (dict(kernel="gaussian", kernel_shape=(5, 5), noise_sigma=np.nan), "noise_sigma must be"),
        (dict(kernel=np.zeros((0, 3))), "kernel must be a non-empty 2D array"),
        (dict(kernel=np.full((3, 3), np.nan)), "kernel must be a non-empty 2D array"),
    ],
)
def test_simulate_refuses_what_would_make_nan_data(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bk.simulate((16, 16), **kwargs)


def test_every_public_name_loads_and_is_listed():
    import bayeskernel

    assert set(bayeskernel.__all__) == {*bayeskernel._EXPORTS, "__version__"}
    for name in bayeskernel.__all__:
        assert getattr(bayeskernel, name) is not None
    # The functions keep their names although modules of similar names exist.
    assert callable(bayeskernel.simulate) and callable(bayeskernel.compare)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        bayeskernel.nonexistent  # noqa: B018
