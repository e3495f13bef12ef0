"""Low-rank prior with a learned rank (multiplicative shrinkage process) and effective_rank."""

import jax
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from numpyro import handlers
from numpyro.diagnostics import split_gelman_rubin

import bayeskernel as bk
from bayeskernel.model import HyperScales
from bayeskernel.priors.lowrank import LowRankPrior, effective_rank, rank_probabilities

# Two-sided z of the Monte Carlo checks (as in tests/mc.py).
Z = 4.0
SCALES = HyperScales(noise=1.0, kernel=1.0)


def prior_draws(prior, num, seed=0, kernel_scale=None):
    """``num`` kernels and site values from ``prior.sample`` (seed/trace, vmapped)."""

    def one(key):
        fn = handlers.seed(prior.sample, key)
        if kernel_scale is not None:
            fn = handlers.substitute(fn, data={"kernel_scale": kernel_scale})
        trace = handlers.trace(fn).get_trace(SCALES)
        sites = {k: v["value"] for k, v in trace.items() if v["type"] == "sample"}
        return fn(SCALES), sites

    keys = jax.random.split(jax.random.PRNGKey(seed), num)
    with jax.enable_x64(True):
        kernels, sites = jax.jit(jax.vmap(one))(keys)
    return np.asarray(kernels), {k: np.asarray(v) for k, v in sites.items()}


def profile(n, width, power=0):
    """A Gaussian profile times ``(x / 3)^power``: even for 0, odd for 1."""
    x = np.arange(n) - (n - 1) / 2
    return (x / 3) ** power * np.exp(-0.5 * x**2 / width**2)


def rank_two_kernel(n):
    # A round blob plus a four-leaf clover: even and odd separable profiles,
    # orthogonal, the second holding about 10% of the squared norm.
    return np.outer(profile(n, 2.5), profile(n, 2.5)) + np.outer(
        profile(n, 2.5, 1), profile(n, 2.5, 1)
    )


def kernel_rhat(post):
    return np.asarray(split_gelman_rubin(post.kernel_draws.astype(float)))


# --- effective_rank on matrices of known rank ---------------------------------


def test_effective_rank_of_matrices_of_known_rank(rng):
    q_rows, _ = np.linalg.qr(rng.normal(size=(9, 9)))
    q_cols, _ = np.linalg.qr(rng.normal(size=(7, 7)))

    def with_singular_values(values):
        values = np.r_[values, np.zeros(7 - len(values))]
        return q_rows[:, :7] @ np.diag(values) @ q_cols.T

    stack = np.stack(
        [
            np.zeros((9, 7)),
            with_singular_values([3.0]),
            with_singular_values([3.0, 2.0]),
            with_singular_values([3.0, 2.0, 1.0]),
            with_singular_values([1.0] * 7),
            # Second component holds 0.05^2 / 1.0025 < 1e-2 of the energy...
            with_singular_values([1.0, 0.05]),
        ]
    )
    assert_array_equal(effective_rank(stack), [0, 1, 2, 3, 7, 1])
    # ...but more than 1e-3 of it.
    assert effective_rank(stack[5], tol=1e-3) == 2
    # Tail energy 1 / 14 of [3, 2, 1]: just above and just below tol.
    assert effective_rank(stack[3], tol=0.99 / 14) == 3
    assert effective_rank(stack[3], tol=1.01 / 14) == 2
    # Leading axes are kept; a (chains, draws, P, Q) array gives (chains, draws).
    assert_array_equal(effective_rank(stack.reshape(2, 3, 9, 7)), [[0, 1, 2], [3, 7, 1]])
    # Rank is invariant to scale and transposition.
    assert_array_equal(effective_rank(1e-8 * stack.transpose(0, 2, 1)), [0, 1, 2, 3, 7, 1])


def test_rank_probabilities_count_draws():
    outer = np.outer(np.arange(1.0, 6.0), np.ones(4))
    draws = np.stack([outer, outer, np.eye(5, 4) * [4.0, 3.0, 2.0, 1.0], 0 * outer])
    probs = rank_probabilities(draws)
    assert probs.shape == (5,)  # ranks 0..min(5, 4)
    assert_array_equal(probs, [0.25, 0.5, 0.0, 0.0, 0.25])
    assert_array_equal(rank_probabilities(draws[:2], max_rank=2), [0.0, 1.0, 0.0])

    class Posterior:  # anything with kernel_draws, like KernelPosterior
        kernel_draws = draws[None]

    assert_array_equal(rank_probabilities(Posterior()), probs)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda d: effective_rank(d, tol=1.0), "tol"),
        (lambda d: effective_rank(d, tol=-0.1), "tol"),
        (lambda d: effective_rank(d, tol=np.nan), "tol"),
        (lambda d: effective_rank(d[0, 0]), "at least 2 dimensions"),
        (lambda d: effective_rank(np.full((3, 3), np.inf)), "finite"),
        (lambda d: rank_probabilities(d, max_rank=9), "max_rank"),
        (lambda d: rank_probabilities(d, max_rank=0), "max_rank"),
    ],
)
def test_effective_rank_rejects_bad_arguments(call, match):
    draws = np.ones((2, 3, 3))
    with pytest.raises(ValueError, match=match):
        call(draws)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(rank=0), "rank"),
        (dict(rank=1.5), "rank"),
        (dict(rank=True), "rank"),
        (dict(rank=8), "rank must be at most min"),
        (dict(rank=2, shrinkage="yes"), "shrinkage"),
        (dict(rank=2, shrinkage=True, alpha=0.0), "alpha"),
    ],
)
def test_low_rank_prior_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LowRankPrior((9, 7), **kwargs)


# --- prior draws ----------------------------------------------------------------


@pytest.mark.parametrize("shrinkage", [False, True])
def test_prior_draws_have_at_most_the_maximum_rank(shrinkage):
    prior = LowRankPrior((9, 7), rank=3, shrinkage=shrinkage)
    kernels, _ = prior_draws(prior, 500)
    singular = np.linalg.svd(kernels, compute_uv=False)
    assert np.all(singular[:, 3:] < 1e-10 * singular[:, :1])
    assert np.mean(singular[:, 2] > 1e-6 * singular[:, 0]) > 0.99  # and use all three


def test_shrinkage_component_scales_decrease():
    prior = LowRankPrior((9, 7), rank=4, shrinkage=True)
    _, sites = prior_draws(prior, 20_000, seed=1)
    factors = sites["component_shrinkage"]
    tau2 = np.cumprod(np.c_[np.ones(len(factors)), factors], axis=1) ** 2  # tau_h^2
    expected = prior.component_variances()
    assert np.all(np.diff(expected) < 0)
    # E[tau_h^2] as documented, within Monte Carlo error (tau_h <= 1: finite variance).
    standard_error = tau2.std(axis=0) / np.sqrt(len(tau2))
    assert np.all(tau2[:, 0] == 1.0)  # the first component is never shrunk
    assert np.all(np.abs(tau2.mean(axis=0) - expected)[1:] < Z * standard_error[1:])
    # Ordered: no component is larger than the one before.
    assert np.all(np.diff(tau2, axis=1) <= 0)


@pytest.mark.parametrize("shrinkage", [False, True])
def test_entry_variance_is_kernel_scale_squared(shrinkage):
    prior = LowRankPrior((9, 7), rank=3, shrinkage=shrinkage)
    kernels, _ = prior_draws(prior, 20_000, seed=2, kernel_scale=2.0)
    # Mean square entry of each draw; their average estimates E[K_ij^2] = s^2 averaged
    # over entries, with a standard error from the draws themselves.
    mean_square = np.mean(kernels**2, axis=(1, 2))
    standard_error = mean_square.std() / np.sqrt(len(mean_square))
    assert abs(mean_square.mean() - 4.0) < Z * standard_error
    assert abs(kernels.mean()) < Z * kernels.mean(axis=(1, 2)).std() / np.sqrt(len(kernels))


def test_prior_draws_repeat_with_the_same_seed():
    prior = LowRankPrior((9, 7), rank=3, shrinkage=True)
    first, _ = prior_draws(prior, 50, seed=3)
    second, _ = prior_draws(prior, 50, seed=3)
    other, _ = prior_draws(prior, 50, seed=4)
    assert_array_equal(first, second)
    assert not np.allclose(first, other)


# --- fits -------------------------------------------------------------------------


def fit(case, prior, **kwargs):
    settings = dict(num_warmup=150, num_samples=100, num_chains=2, progress_bar=False)
    return bk.fit(
        case.A, case.B, prior.kernel_shape, prior=prior, method="nuts", **settings | kwargs
    )


@pytest.mark.slow  # about 17 s of compiling; NUTS's seeding is checked in test_inference
def test_same_seed_gives_identical_fits():
    case = bk.simulate((24, 24), np.outer(profile(7, 1.5), profile(7, 2.0)), noise_sigma=0.5)
    prior = LowRankPrior((7, 7), rank=2, shrinkage=True)
    # Different seeds giving different draws is checked on prior draws above.
    runs = [fit(case, prior, num_warmup=10, num_samples=5, num_chains=1, seed=5) for _ in "ab"]
    assert_array_equal(runs[0].kernel_draws, runs[1].kernel_draws)
    assert runs[0].kernel_draws.std(axis=1).min() > 0  # the chain moved


def test_rank_one_truth_gives_rank_one():
    kernel = np.outer(profile(7, 1.5), profile(7, 2.5))
    case = bk.simulate((24, 24), kernel, density=0.4, noise_sigma=0.5, seed=11)
    post = fit(case, LowRankPrior((7, 7), rank=3, shrinkage=True), num_warmup=100, num_samples=80)
    probs = rank_probabilities(post)
    assert np.argmax(probs) == 1 and probs[1] > 0.9
    assert bk.relative_error(post.kernel_mean, kernel) < 0.1
    assert np.nanmax(kernel_rhat(post)) < 1.2


@pytest.mark.slow  # two fits of about two minutes each on a quiet 2-core machine
def test_rank_two_truth_learned_from_maximum_rank_five():
    kernel = rank_two_kernel(11)
    case = bk.simulate((40, 40), kernel, density=0.4, noise_sigma=0.3, seed=0)
    settings = dict(num_warmup=300, num_samples=200, seed=0)
    learned = fit(case, LowRankPrior((11, 11), rank=5, shrinkage=True), **settings)
    fixed = fit(case, LowRankPrior((11, 11), rank=2), **settings)
    probs = rank_probabilities(learned)
    assert np.argmax(probs) == 2 and probs[2] > 0.8
    error = bk.relative_error(learned.kernel_mean, kernel)
    assert error < 1.5 * bk.relative_error(fixed.kernel_mean, kernel)
    assert bk.coverage(*learned.interval(0.95), kernel) >= 0.85
    assert np.nanmax(kernel_rhat(learned)) < 1.2


def test_lowrank_auto_name_learns_the_rank_up_to_five():
    from bayeskernel.priors import resolve_prior

    prior = resolve_prior("lowrank_auto", (11, 11))
    assert isinstance(prior, LowRankPrior) and prior.shrinkage and prior.rank == 5
    assert resolve_prior("lowrank_auto", (3, 9)).rank == 3
