"""fit_tiles(batch_size=...): vmapped groups of tiles against separate fits of each tile."""

import numpy as np
import pytest
from scipy.signal import convolve2d

import bayeskernel as bk
from bayeskernel.tiles import load_tiles

KERNEL_SHAPE = (5, 5)
NOISE_SIGMA = 0.02
# 48x48 field, 24x24 tiles overlapping by 8: a 3x3 grid of 9 tiles.
TILING = dict(tile_shape=24, overlap=8)
# Equal draw counts and group sizes across tests: the programs compile once.
MAP_OPTIONS = dict(method="map", num_samples=200, seed=7)
# Two-sided z per comparison, as tests/mc.py: ~1e-4 each.
Z = 4.0


@pytest.fixture(scope="module")
def field():
    rng = np.random.default_rng(20261201)
    A = rng.binomial(1, 0.4, (48, 48)).astype(float)
    kernel = bk.make_kernel("gaussian", KERNEL_SHAPE, width=1.0)
    B = convolve2d(A, kernel, "same") + rng.normal(0, NOISE_SIGMA, (48, 48))
    return A, B


def _fit(A, B, **options):
    options = {**TILING, **options}
    return bk.fit_tiles(A, B, KERNEL_SHAPE, client="sync", compilation_cache=False, **options)


@pytest.fixture(scope="module")
def map_pair(field):
    """The same field, 'map', separately (batch_size=None) and in vmapped groups of 4, 4, 1."""
    A, B = field
    return _fit(A, B, **MAP_OPTIONS), _fit(A, B, batch_size=4, **MAP_OPTIONS)


def test_batched_map_hyperparameters_equal_separate_fits(map_pair):
    separate, batched = map_pair
    assert batched.attrs["tiles_batched"] == 9 and separate.attrs["tiles_batched"] == 0
    for name in ("noise_sigma", "kernel_scale"):
        values = batched[name].values
        # MAP: one value per tile, repeated over the draws.
        assert np.all(values == values[..., :1])
        np.testing.assert_allclose(values, separate[name].values, rtol=1e-5)


def test_batched_map_draws_are_the_separate_fits_draws(map_pair, field):
    """Same keys and blocks as fit: the draws differ only through the hyperparameters
    (1e-5 relative at most, above) and float32 storage."""
    separate, batched = map_pair
    kernels, reference = batched.kernel.values, separate.kernel.values
    assert kernels.dtype == reference.dtype == np.float32
    scale = np.abs(reference).max()
    np.testing.assert_allclose(kernels, reference, rtol=0, atol=1e-4 * scale)
    # And a direct fit of one tile's window, to close the loop with bk.fit.
    A, B = field
    rows = slice(int(batched.row_start[1]), int(batched.row_stop[1]))
    cols = slice(int(batched.col_start[2]), int(batched.col_stop[2]))
    window = bk.tiles.image_window(
        A, (rows.start, rows.stop), (cols.start, cols.stop), KERNEL_SHAPE, "same"
    )
    direct = bk.fit(
        window, B[rows, cols], KERNEL_SHAPE, mode="valid", prior="smooth", method="map",
        num_samples=200, seed=bk.tiles.tile_seed(7, 1, 2), progress_bar=False,
    )  # fmt: skip
    np.testing.assert_allclose(kernels[1, 2], direct.kernel_draws, rtol=0, atol=1e-4 * scale)


def test_batched_exact_matches_separate_within_monte_carlo_error(field):
    A, B = field
    # Four tiles (no overlap): separate exact fits cost ~0.3 s each.
    options = dict(method="exact", num_samples=100, num_chains=2, seed=3, tile_shape=24)
    separate = _fit(A, B, **options, overlap=0)
    batched = _fit(A, B, batch_size=4, **options, overlap=0)
    assert batched.attrs["tiles_batched"] == 4
    draws = ("chain", "draw")
    n = separate.sizes["chain"] * separate.sizes["draw"]
    # Grid draws are independent (ESS = n): two independent estimates differ by
    # sd sqrt(2/n) in the mean and about sd sqrt(1/n) in the sd (normal draws).
    for name in ("kernel", "noise_sigma", "kernel_scale"):
        ref, new = separate[name].astype(float), batched[name].astype(float)
        sd = ref.std(draws)
        mean_z = np.abs(new.mean(draws) - ref.mean(draws)) / (sd * np.sqrt(2 / n))
        sd_z = np.abs(new.std(draws) - sd) / (sd * np.sqrt(1 / n))
        assert float(mean_z.max()) < Z, f"{name}: mean off by {float(mean_z.max()):.2f} MCSE"
        assert float(sd_z.max()) < Z, f"{name}: sd off by {float(sd_z.max()):.2f} MCSE"
    # Same random keys and grid: most draws are the separate fit's own draws (a draw
    # may land in a neighbouring grid cell where the two optimisers' modes differ).
    same = np.isclose(batched.noise_sigma.values, separate.noise_sigma.values, rtol=1e-4)
    assert same.mean() > 0.9


def test_mixed_field_completes_in_the_same_format(field, tmp_path):
    """A tile with unobserved pixels is fitted separately inside its batch; the
    result and the store look exactly as without batching, and a run resumed
    without batching loads the batched tiles."""
    A, B = field
    B = B.copy()
    B[2:6, 3:9] = np.nan  # inside tile (0, 0) only
    options = dict(MAP_OPTIONS, seed=11)
    separate = _fit(A, B, **options)
    store = tmp_path / "store"
    batched = _fit(A, B, batch_size=4, store=store, **options)
    assert batched.attrs["tiles_fitted"] == 9 and batched.attrs["tiles_batched"] == 8
    assert set(batched.data_vars) == set(separate.data_vars)
    for name, variable in separate.data_vars.items():
        assert batched[name].dims == variable.dims and batched[name].dtype == variable.dtype
    assert dict(batched.coords.dtypes) == dict(separate.coords.dtypes)
    # The masked tile ran through fit, so it is exactly the separate run's tile.
    np.testing.assert_array_equal(batched.kernel.values[0, 0], separate.kernel.values[0, 0])
    np.testing.assert_allclose(batched.kernel.values, separate.kernel.values, rtol=0,
                               atol=1e-4 * np.abs(separate.kernel.values).max())  # fmt: skip
    tile_store = bk.tiles.TileStore(store, json_settings(store))
    assert tile_store.read(0, 0).attrs["fit_route"] == "separate"
    assert "unobserved" in tile_store.read(0, 0).attrs["batch_fallback"]
    assert tile_store.read(1, 1).attrs["fit_route"] == "batched"
    stored = load_tiles(store)
    np.testing.assert_array_equal(stored.kernel.values, batched.kernel.values)

    # Resume without batching: batch_size is not part of the store's settings.
    tile_store.tile_path(2, 2).unlink()
    resumed = _fit(A, B, store=store, **options)
    assert resumed.attrs["tiles_loaded"] == 8 and resumed.attrs["tiles_fitted"] == 1
    np.testing.assert_array_equal(resumed.kernel.values[2, 2], separate.kernel.values[2, 2])


def json_settings(store):
    import json

    return json.loads((store / "settings.json").read_text())


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "4"])
def test_bad_batch_size_is_named(field, bad):
    A, B = field
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None"):
        _fit(A, B, batch_size=bad, method="map")
