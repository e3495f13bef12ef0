"""Property-based: every kind of result comes back from disk as it went in.

Posteriors of every kind (one pair, several pairs, per-pair noise, parametric,
model average) go through :func:`bayeskernel.io.save` and
:func:`bayeskernel.load`; tiles go through the tile store. Arrays must come back
bit for bit with their dtype, and names, settings and diagnostics unchanged.
The default run's examples are fixed (``derandomize``); the slow run draws new
ones.
"""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bayeskernel as bk
from bayeskernel.forward import MODES
from bayeskernel.io import load, save
from bayeskernel.tiles.run import TileTask, tile_dataset
from bayeskernel.tiles.store import TileStore

KINDS = ("single", "pairs", "per_pair_noise", "parametric", "average")
FAST = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
LONG = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _image(rng, shape, holes: float):
    array = rng.normal(size=shape)
    array[rng.random(shape) < holes] = np.nan  # unobserved pixels must survive
    return array


@st.composite
def posteriors(draw, kinds=KINDS):
    kind = draw(st.sampled_from(kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    chains, draws = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    kernel_shape = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    holes = draw(st.sampled_from([0.0, 0.2]))
    pairs = draw(st.integers(2, 3)) if kind in ("pairs", "per_pair_noise") else 1
    shapes = [(draw(st.integers(2, 9)), draw(st.integers(2, 9))) for _ in range(pairs)]
    image = [rng.integers(0, 2, s).astype(float) for s in shapes]
    observed = [_image(rng, s, holes) for s in shapes]
    noise_shape = (chains, draws, pairs) if kind == "per_pair_noise" else (chains, draws)
    keep_data = draw(st.booleans())
    stats = {}
    if draw(st.booleans()):
        stats = {
            "diverging": rng.random((chains, draws)) < 0.2,
            "energy": rng.normal(size=(chains, draws)),
        }
    diagnostics = {"rank": int(rng.integers(1, 50)), "noise_floor": float(rng.random())}
    prior = draw(st.sampled_from(["smooth", "radial", "iid"]))
    parameters = {}
    if kind == "parametric":
        prior = "gaussian"
        names = draw(st.sets(st.sampled_from(["width", "angle", "beta"]), min_size=1))
        parameters = {name: rng.uniform(0.5, 2, (chains, draws)) for name in sorted(names)}
    if kind == "average":
        names = ["radial", "smooth"]
        weights = rng.dirichlet(np.ones(2))
        prior = "average(radial, smooth)"
        diagnostics.update(
            prior_evidence={n: float(v) for n, v in zip(names, rng.normal(size=2) * 100)},
            prior_weights={n: float(w) for n, w in zip(names, weights)},
            prior_draws={n: int(k) for n, k in zip(names, rng.integers(0, draws + 1, 2))},
        )
    return bk.KernelPosterior(
        kernel_draws=rng.normal(size=(chains, draws, *kernel_shape)).astype(dtype),
        noise_sigma_draws=rng.uniform(0.5, 2, noise_shape),
        kernel_scale_draws=rng.uniform(0.5, 2, (chains, draws)),
        method=draw(st.sampled_from(["exact", "map", "nuts", "svi"])),
        prior=prior,
        mode=draw(st.sampled_from(MODES)),
        diagnostics=diagnostics,
        sample_stats=stats,
        parameter_draws=parameters,
        image=(image if pairs > 1 else image[0]) if keep_data else None,
        observed=(observed if pairs > 1 else observed[0]) if keep_data else None,
    )


def _same_array(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # NaN where NaN


def _same_data(got, want):
    if want is None:
        assert got is None
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            _same_array(g, w)
    else:
        _same_array(got, want)


def _check_posterior_round_trip(posterior, folder):
    loaded = load(save(posterior, folder / "posterior.nc"))
    for name in ("kernel_draws", "noise_sigma_draws", "kernel_scale_draws"):
        _same_array(getattr(loaded, name), getattr(posterior, name))
    assert (loaded.method, loaded.prior, loaded.mode) == (
        posterior.method, posterior.prior, posterior.mode,
    )  # fmt: skip
    assert loaded.noise_per_pair == posterior.noise_per_pair
    assert sorted(loaded.parameter_draws) == sorted(posterior.parameter_draws)
    for name, values in posterior.parameter_draws.items():
        _same_array(loaded.parameter_draws[name], values)
    assert sorted(loaded.sample_stats) == sorted(posterior.sample_stats)
    for name, values in posterior.sample_stats.items():
        _same_array(np.asarray(loaded.sample_stats[name]), np.asarray(values))
    assert json.dumps(loaded.diagnostics, sort_keys=True) == json.dumps(
        posterior.diagnostics, sort_keys=True
    )
    _same_data(loaded.image, posterior.image)
    _same_data(loaded.observed, posterior.observed)


@FAST
@given(posteriors())
def test_every_kind_of_posterior_comes_back_as_saved(tmp_path_factory, posterior):
    _check_posterior_round_trip(posterior, tmp_path_factory.mktemp("rt"))


@pytest.mark.slow
@LONG
@given(posteriors())
def test_every_kind_of_posterior_comes_back_as_saved_long(tmp_path_factory, posterior):
    _check_posterior_round_trip(posterior, tmp_path_factory.mktemp("rt"))


def _check_tile_round_trip(posterior, folder, row, col):
    task = TileTask(
        tile_row=row, tile_col=col, rows=(0, 8), cols=(0, 8), A=[], B=[], mask=[None],
        kernel_shape=posterior.kernel_shape, seed=row * 100 + col, options={},
    )  # fmt: skip
    dataset = tile_dataset(task, posterior, seconds=0.25, route="batched")
    store = TileStore(folder / "store", {"kernel_shape": list(posterior.kernel_shape)})
    store.write(row, col, dataset)
    assert store.finished() == {(row, col)}
    reread = TileStore(folder / "store", store.settings, writer=False).read(row, col)
    assert reread.identical(dataset), (reread, dataset)
    for name in dataset.data_vars:
        assert reread[name].dtype == dataset[name].dtype


@FAST
@given(posteriors(kinds=("single", "parametric")), st.integers(0, 99), st.integers(0, 99))
def test_a_tile_comes_back_from_the_store_as_written(tmp_path_factory, posterior, row, col):
    _check_tile_round_trip(posterior, tmp_path_factory.mktemp("tile"), row, col)
