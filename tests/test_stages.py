"""The exact route's stages, and the model average built on them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayeskernel as bk
import bayeskernel.averaging as averaging
from bayeskernel.api import DEFAULT_SAMPLES
from bayeskernel.catalogue import AUTO_PRIORS
from bayeskernel.forward import make_operator
from bayeskernel.infer import krylov, progress, stages
from bayeskernel.infer.common import prng_key
from bayeskernel.infer.exact import observed_vector, whitened_operator
from bayeskernel.model import HyperScales
from bayeskernel.priors import resolve_prior


def _count_calls(monkeypatch, module, name):
    """Wrap ``module.name`` so that its calls are recorded; returns the record."""
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_stages_compose_to_fit():
    # Also fit's default number of draws for the exact route.
    case = bk.simulate((24, 24), "gaussian", (5, 5), noise_sigma=0.05, seed=1)
    direct = bk.fit(case.A, case.B, (5, 5), prior="smooth", seed=4, progress_bar=False)
    with jax.enable_x64(True):
        operator = make_operator(case.A, (5, 5), "same")
        prior = resolve_prior("smooth", (5, 5))
        scales = HyperScales(*direct.diagnostics["hyper_scales"].values())
        probe_key, hyper_key, draw_key = stages.stage_keys(prng_key(4), True)
        prepared = stages.prepare(operator, prior, jnp.asarray(case.B), probe_key)
        hyper = stages.hyperparameter_posterior(prepared, scales, hyper_key)
        sigma, scale, facts, _ = stages.draw_hyperparameters(hyper, 2, DEFAULT_SAMPLES["exact"])
        kernels, _ = stages.draw_kernels(prepared, sigma, scale, draw_key)
    assert hyper.log_evidence == direct.diagnostics["log_evidence"] == facts["log_evidence"]
    np.testing.assert_array_equal(sigma, direct.noise_sigma_draws)
    np.testing.assert_array_equal(kernels, direct.kernel_draws)


@pytest.mark.parametrize("fixed", [{}, {"noise_sigma": 0.05}])
def test_the_scoring_grid_gives_the_full_grids_evidence(fixed):
    # The model average scores on a coarse grid and draws after the full one.
    from bayeskernel.infer.grid import GRID_POINTS, SCORING_POINTS

    case = bk.simulate((24, 24), "disk", (5, 5), noise_sigma=0.05, seed=2)
    with jax.enable_x64(True):
        operator = make_operator(case.A, (5, 5), "same")
        scales = HyperScales(1.0, 1.0)
        probe_key, hyper_key, _ = stages.stage_keys(prng_key(0), True)
        for name in ("smooth", "radial"):
            prepared = stages.prepare(
                operator, resolve_prior(name, (5, 5)), jnp.asarray(case.B), probe_key
            )
            full, coarse = (
                stages.hyperparameter_posterior(
                    prepared, scales, hyper_key, grid_points=points, **fixed
                )
                for points in (None, SCORING_POINTS)
            )  # fmt: skip
            # A millionth of a nat: weights change by a factor 1 +- 1e-6 at most.
            assert coarse.log_evidence == pytest.approx(full.log_evidence, rel=0, abs=1e-6)
            dim = 1 if fixed else 2
            assert full.table.facts["grid_points"] == GRID_POINTS[dim] ** dim
            assert coarse.table.facts["grid_points"] == SCORING_POINTS[dim] ** dim
    post = bk.fit(case.A, case.B, (5, 5), prior=["smooth", "radial1"], num_samples=20,
                  progress_bar=False)  # fmt: skip
    assert post.diagnostics["grid_points"] == GRID_POINTS[2] ** 2


def test_model_average_prepares_each_candidate_once_and_draws_only_the_winner(monkeypatch):
    case = bk.simulate((32, 32), "gaussian", (7, 7), noise_sigma=0.05, seed=3)
    prepared = _count_calls(monkeypatch, averaging, "prepare")
    drawn = _count_calls(monkeypatch, averaging, "posterior_from_stages")
    post = bk.fit(case.A, case.B, (7, 7), num_samples=50, progress_bar=False)  # prior='auto'
    assert [args[1].name for args, _ in prepared] == list(AUTO_PRIORS)
    # Only candidates given draws are drawn from, each once; smooth (20 nats behind) is not.
    given = {name for name, n in post.diagnostics["prior_draws"].items() if n > 0}
    assert sorted(args[0].prior.name for args, _ in drawn) == sorted(given)
    assert "smooth" not in given and "radial" in given
    # One candidate far ahead: its draws are the fit's, exactly.
    prepared.clear(), drawn.clear()
    post = bk.fit(case.A, case.B, (7, 7), prior=["smooth", "radial"], num_samples=50,
                  progress_bar=False)  # fmt: skip
    assert len(prepared) == 2 and len(drawn) == 1 and post.prior == "radial"
    direct = bk.fit(case.A, case.B, (7, 7), prior="radial", num_samples=50, progress_bar=False)
    np.testing.assert_array_equal(post.kernel_draws, direct.kernel_draws)


def _krylov_problem(kernel_shape=(7, 7)):
    case = bk.simulate((32, 32), "gaussian", kernel_shape, noise_sigma=0.05, seed=3)
    with jax.enable_x64(True):
        operator = make_operator(case.A, kernel_shape, "same")
        whitened = whitened_operator(operator, resolve_prior("smooth", kernel_shape), None)
        flat = observed_vector(jnp.asarray(case.B), None)
    return case, operator, whitened, flat


def test_a_screening_summary_completed_equals_the_full_summary():
    # 13x13 = 169 unknowns: more than the screening's Lanczos steps, so the
    # completion must rerun the data's Lanczos at full length.
    _, operator, whitened, flat = _krylov_problem((13, 13))
    key = jax.random.PRNGKey(7)
    with jax.enable_x64(True):
        full = krylov.krylov_summary(whitened, flat, key)
        part = krylov.krylov_summary(whitened, flat, key, probes_run=8)
        assert part.logdet_nodes.shape[0] == 8
        np.testing.assert_array_equal(part.logdet_nodes, full.logdet_nodes[:8])
        done = krylov.add_probes(part, whitened, key)
        np.testing.assert_array_equal(done.logdet_nodes, full.logdet_nodes)
        np.testing.assert_array_equal(done.logdet_weights, full.logdet_weights)
        prior = resolve_prior("smooth", (13, 13))
        screened = stages.prepare(operator, prior, flat, key, solver="krylov", screening=True)
        assert screened.screening
        assert screened.summary.quad_nodes.shape[0] == stages.SCREENING_STEPS < 169
        with pytest.raises(ValueError, match="completed preparation"):
            stages.draw_kernels(screened, np.ones((1, 2)), np.ones((1, 2)), key)
        completed = stages.complete(screened)
    assert not completed.screening
    for field in ("logdet_nodes", "logdet_weights", "quad_nodes", "quad_weights", "ritz_vectors"):
        np.testing.assert_array_equal(getattr(completed.summary, field), getattr(full, field))


def test_a_krylov_candidate_far_behind_is_left_at_screening(monkeypatch):
    # A motion streak: the radial profile is hundreds of nats behind the smooth
    # priors, so its screening estimate suffices; close candidates are completed.
    motion = bk.simulate((32, 32), "motion", (7, 7), noise_sigma=0.05, seed=3)
    completed = _count_calls(monkeypatch, averaging, "complete")
    post = bk.fit(motion.A, motion.B, (7, 7), prior=["smooth", "radial"],
                  solver="krylov", num_samples=20, progress_bar=False)  # fmt: skip
    facts = post.diagnostics
    evidence, stderr = facts["prior_evidence"], facts["prior_evidence_stderr"]
    best = max(evidence.values())
    for name in facts["prior_screened"]:
        bound = evidence[name] + averaging.SCREEN_SIGMAS * stderr[name] + averaging.SCREEN_MARGIN
        assert bound < best and facts["prior_draws"][name] == 0
    assert "radial" in facts["prior_screened"]
    assert len(completed) == 2 - len(facts["prior_screened"])
    # The winner was completed: its evidence and draws are those of a direct fit.
    direct = bk.fit(motion.A, motion.B, (7, 7), prior=post.prior, solver="krylov",
                    num_samples=20, progress_bar=False)  # fmt: skip
    assert evidence[post.prior] == direct.diagnostics["log_evidence"]
    np.testing.assert_array_equal(post.kernel_draws, direct.kernel_draws)


def test_progress_bars_name_the_stages_and_are_silent_when_off(monkeypatch, capsys):
    case = bk.simulate((16, 16), "gaussian", (5, 5), noise_sigma=0.05, seed=1)
    bk.fit(case.A, case.B, (5, 5), prior="smooth", num_samples=10, progress_bar=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress, "DELAY", 0.0)
    bk.fit(case.A, case.B, (5, 5), prior="smooth", num_samples=10, progress_bar=True)
    err = capsys.readouterr().err
    assert "exact smooth: decomposition" in err and "exact smooth: kernel draws" in err


def test_single_precision_products_move_krylov_draws_far_less_than_their_mc_error():
    # Kernel draws by conjugate gradients use float32 FFT products and stop at
    # CG_RTOL; the draws must match float64 products solved to 1e-10 (same keys)
    # to a small fraction of a posterior sd, against a Monte Carlo error of
    # sd / sqrt(N) of the mean.
    _, _, whitened, flat = _krylov_problem()
    key = jax.random.PRNGKey(3)
    with jax.enable_x64(True):
        summary = krylov.krylov_summary(whitened, flat, key)
        sigma, scale = jnp.full((64,), 0.05), jnp.full((64,), 0.02)
        exact, _, _ = krylov.krylov_draws(key, summary, whitened, flat, sigma, scale, rtol=1e-10)
        single = krylov.single_precision(whitened)
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(single)} <= {
            jnp.dtype("float32"),
            jnp.dtype("complex64"),
            jnp.dtype("int64"),
            jnp.dtype("int32"),
        }
        mixed, _, residual = krylov.krylov_draws(
            key, summary, whitened, flat, sigma, scale, products=single
        )
    exact, mixed = np.asarray(exact), np.asarray(mixed)
    sd = exact.std(axis=0)
    assert not np.array_equal(mixed, exact)  # the float32 products were used
    assert np.max(np.abs(mixed - exact) / sd) < 5e-3  # MC error of a 500-draw mean: 0.045 sd
    assert np.max(np.asarray(residual)) <= krylov.CG_RTOL
