"""fit_tiles: exact tile borders, equality with separate fits, resuming a killed run,
a spatially varying field recovered within its intervals, and clear errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.signal import convolve2d  # noqa: E402

import bayeskernel as bk  # noqa: E402
from bayeskernel.forward import output_shape  # noqa: E402
from bayeskernel.tiles import (  # noqa: E402
    StoreMismatchError,
    image_window,
    load_tiles,
    make_grid,
    persistent_compilation_cache,
    plot_tiles,
    tile_seed,
    tile_summary,
)

KERNEL_SHAPE = (5, 5)
# Small and quick: type-II ML hyperparameters, exact draws at them.
FIT_OPTIONS = dict(method="map", num_samples=200)


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """One persistent compilation cache for the module: equal shapes compile once."""
    return tmp_path_factory.mktemp("jax_cache")


def _widths():
    return np.array([[0.6, 0.9], [1.2, 1.5]])


@pytest.fixture(scope="module")
def field():
    """48x48 field in four 24x24 regions, each blurred exactly by its own Gaussian."""
    rng = np.random.default_rng(20261125)
    A = rng.binomial(1, 0.4, (48, 48)).astype(float)
    kernels = np.array(
        [[bk.make_kernel("gaussian", KERNEL_SHAPE, width=w) for w in row] for row in _widths()]
    )
    B = np.empty((48, 48))
    for i in range(2):
        for j in range(2):
            region = np.s_[24 * i : 24 * (i + 1), 24 * j : 24 * (j + 1)]
            B[region] = convolve2d(A, kernels[i, j], "same")[region]
    noise_sigma = 0.02
    B += rng.normal(0, noise_sigma, B.shape)
    return A, B, kernels, noise_sigma


@pytest.fixture(scope="module")
def field_fit(field, jax_cache, tmp_path_factory):
    """The field fitted on a threads LocalCluster through a given Client."""
    from dask.distributed import Client, LocalCluster

    A, B, *_ = field
    store = tmp_path_factory.mktemp("field") / "store"
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
        as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        result = bk.fit_tiles(
            A, B, KERNEL_SHAPE, tile_shape=24, overlap=0, store=store, client=client,
            seed=7, compilation_cache=jax_cache, **FIT_OPTIONS,
        )  # fmt: skip
    return result, store


# --- geometry -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["same", "full", "valid"])
@pytest.mark.parametrize(
    "image_shape, kernel_shape",
    [((20, 17), (5, 4)), ((12, 12), (3, 3)), ((9, 11), (13, 15)), ((7, 9), (8, 10))],
)
def test_tile_windows_reproduce_the_convolution(mode, image_shape, kernel_shape, rng):
    try:
        shape = output_shape(image_shape, kernel_shape, mode)
    except ValueError:
        pytest.skip("shapes impossible for this mode")
    A = rng.normal(size=image_shape)
    K = rng.normal(size=kernel_shape)
    B = convolve2d(A, K, mode)
    for tile, overlap in [((3, 4), (1, 2)), (shape, 0), (1, 0)]:
        if np.any(np.asarray(tile) > np.asarray(shape)):
            continue
        grid = make_grid(shape, tile, overlap)
        covered = np.zeros(shape, dtype=int)
        for i, j in grid:
            (r0, r1), (c0, c1) = grid.rows(i), grid.cols(j)
            covered[r0:r1, c0:c1] += 1
            window = image_window(A, (r0, r1), (c0, c1), kernel_shape, mode)
            got = convolve2d(window, K, "valid")
            if all(k <= a for k, a in zip(kernel_shape, image_shape)):
                np.testing.assert_array_equal(got, B[r0:r1, c0:c1])
            else:  # SciPy swaps the arrays when the kernel is larger: other rounding
                np.testing.assert_allclose(got, B[r0:r1, c0:c1], rtol=0, atol=1e-12)
        assert covered.min() >= 1


def test_grid_spreads_equal_tiles_with_at_least_the_overlap():
    grid = make_grid((100, 48), (30, 24), (5, 0))
    assert grid.shape == (4, 2)
    assert grid.row_starts[0] == 0 and grid.row_starts[-1] == 70
    assert np.all(30 - np.diff(grid.row_starts) >= 5)
    assert grid.col_starts == (0, 24)
    assert make_grid((10, 10), 10, 3).shape == (1, 1)


def test_tile_seeds_depend_only_on_the_base_seed_and_index():
    assert tile_seed(7, 1, 2) == tile_seed(7, 1, 2)
    seeds = {tile_seed(7, i, j) for i in range(5) for j in range(5)} | {tile_seed(8, 0, 0)}
    assert len(seeds) == 26


# --- fitting --------------------------------------------------------------------


def test_tiles_equal_separate_fits_of_the_same_windows(field, field_fit, jax_cache):
    A, B, *_ = field
    result, _ = field_fit
    assert result.kernel.dims == (
        "tile_row", "tile_col", "chain", "draw", "kernel_row", "kernel_col",
    )  # fmt: skip
    assert result.kernel.shape == (2, 2, 1, 200, 5, 5)
    assert list(result.row_start.values) == [0, 24] and list(result.col_stop.values) == [24, 48]
    with persistent_compilation_cache(jax_cache):
        for i, j in [(0, 0), (0, 1), (1, 0), (1, 1)]:
            rows, cols = (24 * i, 24 * i + 24), (24 * j, 24 * j + 24)
            separate = bk.fit(
                image_window(A, rows, cols, KERNEL_SHAPE, "same"),
                B[rows[0] : rows[1], cols[0] : cols[1]],
                KERNEL_SHAPE, mode="valid", seed=tile_seed(7, i, j), progress_bar=False,
                prior="smooth", **FIT_OPTIONS,
            )  # fmt: skip
            np.testing.assert_array_equal(result.kernel.values[i, j], separate.kernel_draws)
            np.testing.assert_array_equal(
                result.noise_sigma.values[i, j], separate.noise_sigma_draws
            )


def test_spatially_varying_field_is_recovered_within_its_intervals(field, field_fit):
    _, _, kernels, noise_sigma = field
    result, _ = field_fit
    summary = tile_summary(result, 0.95)
    lower = summary.kernel_lower.values
    upper = summary.kernel_upper.values
    coverage = np.mean((lower <= kernels) & (kernels <= upper))
    # 100 entries; type-II ML intervals run a little short of 95% (README).
    assert 0.8 <= coverage <= 1.0, coverage
    offsets = np.arange(5) - 2.0
    r2 = offsets[:, None] ** 2 + offsets[None, :] ** 2

    def width(k):
        return np.sqrt(np.sum(k * r2, axis=(-2, -1)) / np.sum(k, axis=(-2, -1)))

    order = np.argsort(width(summary.kernel_mean.values).ravel())
    np.testing.assert_array_equal(order, np.argsort(width(kernels).ravel()))
    np.testing.assert_allclose(summary.noise_sigma_mean.values, noise_sigma, rtol=0.2)


def test_store_reloads_and_plot_shows_the_field(field_fit, tmp_path):
    result, store = field_fit
    loaded = load_tiles(store)
    np.testing.assert_array_equal(loaded.kernel.values, result.kernel.values)
    figure = plot_tiles(result, tmp_path / "field.png")
    assert (tmp_path / "field.png").stat().st_size > 0
    assert [ax.get_title() for ax in figure.axes[:3]] == [
        "posterior mean", "posterior sd", "95% interval width",
    ]  # fmt: skip


_KILLED_RUN = """
import os, sys
os.environ["JAX_PLATFORMS"] = "cpu"
import bayeskernel as bk
print("dask imported by import bayeskernel:", "dask" in sys.modules, flush=True)
case = bk.simulate((40, 40), "gaussian", (5, 5), noise_sigma=0.05, seed=4)
bk.fit_tiles(case.A, case.B, (5, 5), tile_shape=24, overlap=8, store=sys.argv[1],
             client="sync", compilation_cache=sys.argv[2], method="map", num_samples=50)
"""


def test_killed_run_resumes_without_refitting_finished_tiles(tmp_path, jax_cache):
    store = tmp_path / "store"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(_KILLED_RUN))
    # JAX writes cache entries in place: the killed run may leave one truncated, which
    # JAX reports with a warning (an error here). The resumed run gets its own copy.
    resumed_cache = tmp_path / "jax_cache"
    shutil.copytree(jax_cache, resumed_cache)
    process = subprocess.Popen(
        [sys.executable, str(script), str(store), str(jax_cache)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(store.glob("tiles/tile_*.nc")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no tile finished within 60 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    out, _ = process.communicate()
    assert "dask imported by import bayeskernel: False" in out  # import stays light

    finished = {path.name: path.stat().st_mtime_ns for path in store.glob("tiles/tile_*.nc")}
    assert 1 <= len(finished) < 4, finished  # really interrupted
    case = bk.simulate((40, 40), "gaussian", (5, 5), noise_sigma=0.05, seed=4)
    result = bk.fit_tiles(
        case.A, case.B, (5, 5), tile_shape=24, overlap=8, store=store, client="sync",
        compilation_cache=resumed_cache, method="map", num_samples=50,
    )  # fmt: skip
    assert result.attrs["tiles_loaded"] == len(finished)
    assert result.attrs["tiles_fitted"] == 4 - len(finished)
    for name, mtime in finished.items():  # the finished tiles were not written again
        assert (store / "tiles" / name).stat().st_mtime_ns == mtime, name
    assert len(list(store.glob("tiles/tile_*.nc"))) == 4
    assert not list(store.glob("tiles/.*"))  # no temporary file left behind
    assert np.isfinite(result.kernel.values).all()
    # Overlapping tiles: the last one equals its own separate fit too.
    rows, cols = (16, 40), (16, 40)
    with persistent_compilation_cache(resumed_cache):
        separate = bk.fit(
            image_window(case.A, rows, cols, (5, 5), "same"), case.B[16:, 16:], (5, 5),
            mode="valid", seed=tile_seed(0, 1, 1), progress_bar=False, prior="smooth",
            method="map", num_samples=50,
        )  # fmt: skip
    np.testing.assert_array_equal(result.kernel.values[1, 1], separate.kernel_draws)


def test_several_exposures_and_masks_per_tile(jax_cache):
    cases = [bk.simulate((24, 40), "gaussian", (3, 3), noise_sigma=0.05, seed=s) for s in (1, 2)]
    A = [c.A for c in cases]
    B = [c.B.copy() for c in cases]
    B[1][3:6, 30:34] = np.nan  # unobserved pixels in tile (0, 1) of the second exposure
    result = bk.fit_tiles(
        A, B, (3, 3), tile_shape=(24, 20), client="sync", compilation_cache=jax_cache,
        method="map", num_samples=20,
    )  # fmt: skip
    assert result.kernel.shape[:2] == (1, 2)
    with persistent_compilation_cache(jax_cache):
        separate = bk.fit(
            [image_window(a, (0, 24), (20, 40), (3, 3), "same") for a in A],
            [b[:, 20:40] for b in B], (3, 3), mode="valid", seed=tile_seed(0, 0, 1),
            progress_bar=False, prior="smooth", method="map", num_samples=20,
        )  # fmt: skip
    np.testing.assert_array_equal(result.kernel.values[0, 1], separate.kernel_draws)


def test_each_tile_fits_its_own_background_and_batches_step_aside(jax_cache):
    case = bk.simulate((24, 40), "gaussian", (3, 3), noise_sigma=0.05, seed=3)
    B = case.B.copy()
    B[:, 20:] += 2.0  # a different sky in the second tile
    result = bk.fit_tiles(
        case.A, B, (3, 3), tile_shape=(24, 20), client="sync", compilation_cache=jax_cache,
        method="map", num_samples=20, background=0, batch_size=2,
    )  # fmt: skip
    assert result.attrs["tiles_batched"] == 0  # the vmapped route has no background block
    assert result.background.dims[-1] == "background_term"
    np.testing.assert_allclose(result.background.values[0, :, ..., 0].mean(axis=(1, 2)),
                               [0.0, 2.0], atol=0.05)  # fmt: skip
    with persistent_compilation_cache(jax_cache):
        separate = bk.fit(
            image_window(case.A, (0, 24), (20, 40), (3, 3), "same"), B[:, 20:40], (3, 3),
            mode="valid", seed=tile_seed(0, 0, 1), progress_bar=False, prior="smooth",
            method="map", num_samples=20, background=0,
        )  # fmt: skip
    np.testing.assert_array_equal(result.kernel.values[0, 1], separate.kernel_draws)
    np.testing.assert_array_equal(result.background.values[0, 1], separate.background_draws)


def test_a_variance_map_is_cut_into_tiles_with_b(jax_cache):
    case = bk.simulate((24, 40), "gaussian", (3, 3), noise_sigma=0.05, seed=4)
    variance = np.random.default_rng(0).uniform(0.5, 2.0, case.B.shape) * 0.05**2
    variance[2, 25] = np.nan  # unobserved
    result = bk.fit_tiles(
        case.A, case.B, (3, 3), tile_shape=(24, 20), client="sync", compilation_cache=jax_cache,
        method="map", num_samples=20, variance=variance, batch_size=2,
    )  # fmt: skip
    assert result.attrs["tiles_batched"] == 0
    with persistent_compilation_cache(jax_cache):
        separate = bk.fit(
            image_window(case.A, (0, 24), (20, 40), (3, 3), "same"), case.B[:, 20:40], (3, 3),
            mode="valid", seed=tile_seed(0, 0, 1), progress_bar=False, prior="smooth",
            method="map", num_samples=20, variance=variance[:, 20:40],
        )  # fmt: skip
    np.testing.assert_array_equal(result.kernel.values[0, 1], separate.kernel_draws)
    np.testing.assert_allclose(result.noise_sigma.values[0, 1].mean(), 1.0, rtol=0.25)
    with pytest.raises(ValueError, match=r"variance must have B's shape \(24, 40\)"):
        bk.fit_tiles(case.A, case.B, (3, 3), 24, client="sync", variance=np.ones((3, 3)))


# --- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, match",
    [
        (dict(tile_shape=0), "tile_shape must be positive"),
        (dict(tile_shape=(24, -1)), "tile_shape must be positive"),
        (dict(tile_shape=2.5), "tile_shape must be an integer"),
        (dict(tile_shape=49), r"tile_shape \(49, 49\) is larger than B"),
        (dict(tile_shape=(24, 60)), "tile_shape .* larger than B, of shape"),
        (dict(overlap=-1), "overlap must be non-negative"),
        (dict(overlap=24), r"overlap \(24, 24\) must be smaller than tile_shape"),
        (dict(overlap=(0, 30)), "overlap .* must be smaller than tile_shape"),
        (dict(seed=-3), "seed must be a non-negative integer"),
        (dict(mode="wrap"), "mode must be one of"),
        (dict(client="threads"), "client must be None, 'sync' or a dask"),
        (dict(client=None, n_workers=0), "n_workers must be a positive integer"),
    ],
)
def test_bad_arguments_are_named(field, arguments, match):
    A, B, *_ = field
    keywords = dict(tile_shape=24, overlap=0, client="sync") | arguments
    with pytest.raises((ValueError, TypeError), match=match):
        bk.fit_tiles(A, B, KERNEL_SHAPE, **keywords)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(num_sample=10), "unexpected keyword argument 'num_sample'"),
        (dict(progress_bar=True), "fit_tiles sets 'progress_bar'"),
    ],
)
def test_unknown_fit_options_are_named(field, options, match):
    A, B, *_ = field
    with pytest.raises(TypeError, match=match):
        bk.fit_tiles(A, B, KERNEL_SHAPE, 24, client="sync", **options)


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(tile_shape=16), "tile_shape: [24, 24] in the store, [16, 16] now"),
        (dict(overlap=4), "overlap: [0, 0] in the store, [4, 4] now"),
        (dict(method="exact"), "method: 'map' in the store, 'exact' now"),
        (dict(seed=8), "seed: 7 in the store, 8 now"),
        (dict(B_offset=1.0), "B: ["),
    ],
)
def test_store_with_other_settings_is_refused(field, field_fit, change, named):
    A, B, *_ = field
    _, store = field_fit
    keywords = dict(tile_shape=24, overlap=0, seed=7, client="sync") | FIT_OPTIONS
    keywords |= {k: v for k, v in change.items() if k != "B_offset"}
    B = B + change.get("B_offset", 0.0)
    before = sorted(os.listdir(store / "tiles"))
    with pytest.raises(StoreMismatchError, match="holds tiles made with different") as info:
        bk.fit_tiles(A, B, KERNEL_SHAPE, store=store, **keywords)
    assert named in str(info.value) and str(store) in str(info.value)
    assert sorted(os.listdir(store / "tiles")) == before
    assert json.loads((store / "settings.json").read_text())["seed"] == 7


def test_a_failing_tile_names_its_index(jax_cache):
    A = np.zeros((30, 30))
    A[20:, 20:] = 1.0  # tile (0, 0) sees only zeros
    B = convolve2d(A, np.ones((3, 3)), "same")
    with pytest.raises(ValueError, match=r"tile \(0, 0\) at B\[0:15, 0:15\]: A is all zeros"):
        bk.fit_tiles(A, B, (3, 3), 15, client="sync", method="map", compilation_cache=False)


def test_example_runs_and_recovers_the_widths(tmp_path, jax_cache):
    import runpy
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "tiles_field.py"
    module = runpy.run_path(str(example), run_name="example")
    report = module["main"](
        ["--size", "48", "--tiles", "2", "--kernel", "5", "--sync", "--out", str(tmp_path),
         "--compilation-cache", str(jax_cache)]
    )  # fmt: skip
    assert report["coverage_95"] >= 0.8
    assert report["max_width_error"] < 0.1
    assert (tmp_path / "tiles_field.png").stat().st_size > 10_000


def test_default_local_cluster_of_worker_processes(field, field_fit, jax_cache):
    A, B, *_ = field
    expected, _ = field_fit
    # One spawned worker process (the default cluster): the same draws as the threads run.
    result = bk.fit_tiles(
        A, B, KERNEL_SHAPE, tile_shape=24, n_workers=1, seed=7, compilation_cache=jax_cache,
        **FIT_OPTIONS,
    )  # fmt: skip
    np.testing.assert_array_equal(result.kernel.values, expected.kernel.values)


def test_the_store_deletes_only_what_no_live_writer_owns(tmp_path):
    import socket

    import xarray as xr

    from bayeskernel.tiles.store import TileStore

    settings = {"format": "test"}
    store = TileStore(tmp_path / "s", settings)
    path = store.write(0, 0, xr.Dataset({"x": ("a", np.arange(3.0))}))
    # A tile file is a result: readable by others as the umask allows, not user-only.
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    folder = store.tile_folder
    host = socket.gethostname()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    live = folder / f".tile_0000_0001.nc.{host}-{os.getpid()}.abc.tmp"
    dead = folder / f".tile_0000_0002.nc.{host}-{ended}.abc.tmp"
    for leftover in (live, dead):
        leftover.write_bytes(b"partial")
    TileStore(tmp_path / "s", settings, writer=False)  # a reader: deletes nothing
    assert live.exists() and dead.exists()
    TileStore(tmp_path / "s", settings)  # a writer: only what an ended writer left
    assert live.exists() and not dead.exists()
    (tmp_path / "s" / "settings.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"settings.json' are damaged"):
        TileStore(tmp_path / "s", settings)


def test_a_tile_without_observed_pixels_is_refused_before_any_fit(tmp_path):
    case = bk.simulate((48, 24), "gaussian", (3, 3), noise_sigma=0.05, seed=2)
    observed = case.B.copy()
    observed[24:, :] = np.nan  # the lower tile holds no data
    with pytest.raises(ValueError, match=r"1 tile\(s\) of B have no observed pixel .*\(1, 0\)"):
        bk.fit_tiles(case.A, observed, (3, 3), tile_shape=24, client="sync",
                     store=tmp_path / "s", compilation_cache=False, method="map")  # fmt: skip
    assert not (tmp_path / "s").exists()  # refused before the store was begun
