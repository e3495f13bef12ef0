"""Radial, parametric and low-rank priors recover kernels that have their structure."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayeskernel as bk
from bayeskernel.comparison import compare
from bayeskernel.priors import KernelPrior, LowRankPrior, ParametricPrior
from bayeskernel.priors.parametric import family_kernel


def test_radial_prior_on_a_small_motivating_case():
    case = bk.motivating_case(30, seed=1)
    post = bk.fit(
        case.A,
        case.B,
        case.kernel.shape,
        prior="radial",
        method="exact",
        num_warmup=200,
        num_samples=300,
        progress_bar=False,
    )
    central = bk.central_window(case.kernel.shape, (29, 29))
    lower, upper = post.interval(0.95)
    assert abs(post.noise_sigma - 1.0) < 0.1
    assert bk.relative_error(post.kernel_mean, case.kernel, central) < 0.15
    assert bk.coverage(lower, upper, case.kernel) >= 0.85


def test_power_law_recovers_the_exponent():
    case = bk.motivating_case(30, seed=2)
    post = bk.fit(
        case.A,
        case.B,
        case.kernel.shape,
        prior="power_law",
        num_warmup=200,
        num_samples=200,
        num_chains=1,
        progress_bar=False,
    )
    exponent = post.parameter_draws["exponent"]
    assert abs(exponent.mean() - 1.0) < 4 * exponent.std() + 0.01
    assert abs(exponent.mean() - 1.0) < 0.05
    assert abs(post.noise_sigma - 1.0) < 0.1
    assert "exponent" in post.to_inference_data().posterior


@pytest.mark.parametrize("family", ["gaussian", "moffat", "airy"])
def test_parametric_family_kernels(family):
    prior = ParametricPrior((9, 9), family=family)
    params = {"amplitude": 2.0, "width": 2.0, "width_2": 1.0, "angle": 0.3, "beta": 2.5}
    with jax.enable_x64(True):
        kernel = np.asarray(family_kernel(family, params, (9, 9), prior.grid_centre))
    assert kernel.shape == (9, 9)
    assert np.isclose(kernel[4, 4], 2.0)  # every family peaks at the amplitude
    assert np.all(kernel <= 2.0 + 1e-12)
    if family == "airy":
        assert kernel[4, 6] < 1e-12  # first dark ring at r = width = 2


def test_isotropic_gaussian_family_recovers_width():
    kernel = bk.make_kernel("gaussian", (11, 11), width=1.8)
    case = bk.simulate((32, 32), kernel, noise_sigma=0.02, seed=4)
    prior = ParametricPrior((11, 11), family="gaussian", isotropic=True)
    post = bk.fit(
        case.A,
        case.B,
        (11, 11),
        prior=prior,
        num_warmup=200,
        num_samples=200,
        num_chains=1,
        progress_bar=False,
    )
    width = post.parameter_draws["width"]
    assert abs(width.mean() - 1.8) < 0.05
    assert bk.relative_error(post.kernel_mean, case.kernel) < 0.05


def test_low_rank_prior_recovers_separable_kernel():
    rows = np.exp(-0.5 * (np.arange(9) - 4) ** 2 / 2.0**2)
    cols = np.exp(-0.5 * (np.arange(7) - 3) ** 2 / 1.0**2)
    kernel = np.outer(rows, cols)
    case = bk.simulate((32, 32), kernel, noise_sigma=0.05, seed=5)
    post = bk.fit(
        case.A,
        case.B,
        (9, 7),
        prior=LowRankPrior((9, 7), rank=1),
        num_warmup=300,
        num_samples=200,
        num_chains=1,
        progress_bar=False,
    )
    assert bk.relative_error(post.kernel_mean, kernel) < 0.05
    # Each draw is rank one.
    singular = np.linalg.svd(post.kernel_draws[0, :5].astype(float), compute_uv=False)
    assert np.all(singular[:, 1] < 1e-5 * singular[:, 0])


def test_exact_methods_refuse_nonlinear_priors():
    case = bk.simulate((16, 16), "gaussian", (5, 5), seed=0)
    with pytest.raises(ValueError, match="needs a linear-Gaussian prior"):
        bk.fit(case.A, case.B, (5, 5), prior="moffat", method="exact")


def test_user_defined_nonlinear_prior_plugs_in():
    class ScaledTemplate(KernelPrior):
        """A known shape with an unknown positive gain."""

        name = "template"

        def __init__(self, template):
            self.template = jnp.asarray(template)
            self.kernel_shape = template.shape

        def sample(self, scales):
            gain = numpyro.sample("gain", dist.LogNormal(0.0, 2.0))
            return gain * self.template

    template = bk.make_kernel("disk", (7, 7))
    case = bk.simulate((24, 24), 3.0 * template, noise_sigma=0.05, seed=6)
    post = bk.fit(
        case.A,
        case.B,
        (7, 7),
        prior=ScaledTemplate(template),
        num_warmup=200,
        num_samples=200,
        num_chains=1,
        progress_bar=False,
    )
    gain = post.parameter_draws["gain"]
    assert abs(gain.mean() - 3.0) < 4 * gain.std() + 1e-3


def test_compare_ranks_the_true_family_first():
    kernel = bk.make_kernel("gaussian", (9, 9), width=1.5)
    case = bk.simulate((32, 32), kernel, noise_sigma=0.02, seed=7)
    fits = {
        "gaussian": bk.fit(
            case.A,
            case.B,
            (9, 9),
            prior=ParametricPrior((9, 9), "gaussian", isotropic=True),
            num_warmup=200,
            num_samples=200,
            num_chains=1,
            progress_bar=False,
        ),
        "iid": bk.fit(
            case.A,
            case.B,
            (9, 9),
            prior="iid",
            method="exact",
            num_warmup=200,
            num_samples=200,
            num_chains=1,
            progress_bar=False,
        ),
    }
    table = compare(fits)
    assert table.index[0] == "gaussian"


def test_compare_refuses_different_data():
    a = bk.simulate((16, 16), "gaussian", (5, 5), seed=0)
    b = bk.simulate((16, 16), "gaussian", (5, 5), seed=1)
    fits = {
        name: bk.fit(
            c.A, c.B, (5, 5), prior="smooth", method="map", num_samples=20, progress_bar=False
        )
        for name, c in (("a", a), ("b", b))
    }
    with pytest.raises(ValueError, match="different data"):
        compare(fits)


@pytest.mark.parametrize(
    "positive,unit_sum",
    [
        (True, True),
        pytest.param(False, True, marks=pytest.mark.slow),
        pytest.param(True, False, marks=pytest.mark.slow),
    ],
)
def test_constrained_prior_draws_honour_constraints(positive, unit_sum):
    kernel = bk.make_kernel("gaussian", (7, 7), width=1.5)
    case = bk.simulate((24, 24), kernel, noise_sigma=0.02, seed=8)
    prior = bk.ConstrainedPrior(bk.SmoothPrior((7, 7)), positive=positive, unit_sum=unit_sum)
    post = bk.fit(
        case.A,
        case.B,
        (7, 7),
        prior=prior,
        num_warmup=200,
        num_samples=100,
        num_chains=1,
        progress_bar=False,
    )
    draws = post.kernel_draws.astype(float)
    if positive:
        assert draws.min() > 0
    if unit_sum:
        np.testing.assert_allclose(draws.sum(axis=(2, 3)), 1.0, atol=1e-5)
    assert bk.relative_error(post.kernel_mean, kernel) < 0.15


def test_elliptical_radial_prior_draws_are_shifted_ellipses():
    from numpyro import handlers

    from bayeskernel.model import HyperScales

    prior = bk.EllipticalRadialPrior((15, 15))
    fixed = {"centre_offset": np.array([0.0, 0.0]), "log_axis_ratio": np.log(4.0), "angle": 0.0}
    with jax.enable_x64(True), handlers.seed(rng_seed=1), handlers.substitute(data=fixed):
        kernel = np.asarray(prior.sample(HyperScales(noise=1.0, kernel=1.0)))
    # Axis ratio 4: rows shrink by 2 and columns stretch by 2, so distance 4
    # along the rows and distance 1 along the columns both map to rho = 2.
    np.testing.assert_allclose(kernel[7 + 4, 7], kernel[7, 7 + 1], rtol=1e-9)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], rtol=1e-9, atol=1e-12)


@pytest.mark.slow  # NUTS over ~80 unknowns: about a minute on a quiet 2-core machine
def test_elliptical_radial_prior_finds_centre_and_axis_ratio():
    # An anisotropic Gaussian, off-centre by (0.4, -0.3) pixels: axis ratio 2.
    rows, cols = np.meshgrid(np.arange(11) - 5.4, np.arange(11) - 4.7, indexing="ij")
    kernel = np.exp(-0.5 * (rows**2 / 2.0**2 + cols**2 / 1.0**2))
    case = bk.simulate((32, 32), kernel, noise_sigma=0.02, seed=9)
    post = bk.fit(
        case.A,
        case.B,
        (11, 11),
        prior=bk.EllipticalRadialPrior((11, 11)),
        num_warmup=300,
        num_samples=200,
        num_chains=1,
        progress_bar=False,
    )
    offset = post.parameter_draws["centre_offset"].reshape(-1, 2).mean(axis=0)
    np.testing.assert_allclose(offset, [0.4, -0.3], atol=0.1)
    ratio = np.exp(post.parameter_draws["log_axis_ratio"]).mean()
    assert abs(max(ratio, 1 / ratio) - 2.0) < 0.2
    assert bk.relative_error(post.kernel_mean, kernel) < 0.1


def test_residual_prior_is_the_family_plus_a_smooth_field():
    from numpyro import handlers

    from bayeskernel.model import HyperScales

    prior = bk.priors.resolve_prior("gaussian+residual", (9, 9))
    assert prior.residual and prior.name == "gaussian+residual"
    fixed = {"amplitude": 2.0, "width": 2.0, "width_2": 1.5, "angle": 0.3}
    with jax.enable_x64(True):
        family = np.asarray(family_kernel("gaussian", fixed, (9, 9), prior.grid_centre))
        for scale in (0.0, 0.5):
            with (
                handlers.seed(rng_seed=0),
                handlers.substitute(data={**fixed, "residual_scale": scale}),
            ):
                kernel = np.asarray(prior.sample(HyperScales(noise=1.0, kernel=1.0)))
            gap = np.abs(kernel - family).max()
            assert (gap < 1e-12) if scale == 0.0 else (gap > 0.05)
    with pytest.raises(ValueError, match="<family>\\+residual"):
        bk.priors.resolve_prior("disk+residual", (9, 9))


@pytest.mark.slow
def test_residual_prior_recovers_a_kernel_that_is_nearly_gaussian():
    shape = (9, 9)
    kernel = bk.make_kernel("gaussian", shape)
    streak = np.eye(9)[::-1] * (np.abs(np.arange(9)[:, None] - 4) < 3)
    kernel = kernel + 0.04 * streak  # a faint anti-diagonal streak
    case = bk.simulate((40, 40), kernel, noise_sigma=0.01, seed=3)
    fits = {
        p: bk.fit(
            case.A,
            case.B,
            shape,
            prior=p,
            num_warmup=300,
            num_samples=300,
            num_chains=1,
            progress_bar=False,
            seed=1,
        )  # fmt: skip
        for p in ("gaussian", "gaussian+residual")
    }
    plain, residual = fits["gaussian"], fits["gaussian+residual"]
    # Measured: 0.286 -> 0.026 relative error, coverage 0.00 -> 0.96, sigma 0.029 -> 0.0103.
    assert bk.relative_error(residual.kernel_mean, kernel) < 0.05
    assert bk.relative_error(plain.kernel_mean, kernel) > 0.15
    assert bk.coverage(*residual.interval(0.95), kernel) > 0.85
    assert abs(residual.noise_sigma / 0.01 - 1) < 0.1
    assert list(compare(fits).index)[0] == "gaussian+residual"
