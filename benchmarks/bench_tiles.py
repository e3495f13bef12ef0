"""Tiled fits on Dask: throughput against workers, cost per tile size, vmap, memory.

Part 1 fits a 96x96 field (5x5 Gaussian kernel, noise sd 0.05) in 25 tiles of
24x24 (overlap 4) with ``method='map'`` and 100 draws, on: a LocalCluster of
1 and 2 worker processes, one of 1 and 2 threads, and ``client='sync'``. Each
run starts from an empty store, so it pays cluster start-up and one
compilation per worker process; ``steady tiles/s`` leaves both out (tiles
finished after the first one per worker, over the time they took).

Part 2 times one tile in this process (warm compilation cache) for tile sizes
32..256 (overlap 1/8 of the tile) and kernels 5x5 and 15x15, and projects the
cost of a 16k x 16k field with the 2-worker speed-up of Part 1.

Part 3 asks whether batching tiles with ``jax.vmap`` beats separate fits: a
separate fit (cold, and with the persistent compilation cache) against the
linear algebra at the core of the MAP route for a tile (dense ``W``, Gram
``W^T W``, eigendecomposition, 100 exact draws), jitted once and looped over
tiles, and the same core vmapped over all 25 tiles at once.

Part 4 (``--memory``) watches resident memory over many fits in one process,
with and without the compilation cache.

Part 5 times the batched route (``fit_tiles(batch_size=...)``, vmapped groups
of tiles, :mod:`bayeskernel.tiles.batch`): first its core, one group of 25
tiles fitted in this process against warm separate fits of the same tiles
(``'map'`` and ``'exact'``); then Part 1's field through ``fit_tiles`` with
``batch_size`` None, 5 and 25 on 1 and 2 worker processes and ``'sync'``.

Usage: ``python benchmarks/bench_tiles.py [--quick] [--memory] [--batch-only]
[--markdown FILE]``
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import Report, command_line, machine_info

KERNEL = (5, 5)
OPTIONS = dict(prior="smooth", method="map", num_samples=100)


def field(size: int, kernel_shape=KERNEL, seed: int = 0):
    import bayeskernel as bk

    width = kernel_shape[0] / 5
    return bk.simulate(
        (size, size), "gaussian", kernel_shape, noise_sigma=0.05, seed=seed, width=width
    )


class _Finished(logging.Handler):
    """Clock time of every 'tile done' message of bayeskernel.tiles.run."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.times: list[float] = []

    def emit(self, record):
        if record.getMessage().startswith("tile ("):
            self.times.append(time.perf_counter())


def timed_run(case, tile, overlap, **kwargs) -> tuple[int, float, float]:
    """Tiles, wall seconds, steady tiles/s of one fit_tiles call on a fresh store."""
    from bayeskernel.tiles import fit_tiles

    logger = logging.getLogger("bayeskernel.tiles.run")
    handler = _Finished()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            result = fit_tiles(
                case.A, case.B, KERNEL, tile, overlap, store=Path(folder) / "store", **kwargs,
                **OPTIONS,
            )  # fmt: skip
            seconds = time.perf_counter() - start
    finally:
        logger.removeHandler(handler)
    tiles = result.sizes["tile_row"] * result.sizes["tile_col"]
    # Each worker's first task (one tile, or batch_size tiles) pays the compilation.
    first = (kwargs.get("n_workers") or 1) * (kwargs.get("batch_size") or 1)
    times = handler.times
    if len(times) <= first:
        return tiles, seconds, math.nan
    steady = (len(times) - first) / (times[-1] - times[first - 1])
    return tiles, seconds, steady


def part_workers(report: Report, quick: bool) -> float:
    case = field(72 if quick else 96)
    rows = []
    for scheduler, workers, kwargs in [
        ("processes", 1, dict(n_workers=1)),
        ("processes", 2, dict(n_workers=2)),
        ("threads", 1, dict(n_workers=1, processes=False)),
        ("threads", 2, dict(n_workers=2, processes=False)),
        ("sync (no Dask)", 1, dict(client="sync")),
    ]:
        tiles, seconds, steady = timed_run(case, 24, 4, **kwargs)
        rows.append([scheduler, workers, tiles, seconds, tiles / seconds, steady])
        print(rows[-1], flush=True)
    report.table(
        f"Part 1: {case.A.shape[0]}x{case.A.shape[1]} field, 24x24 tiles (overlap 4), "
        "5x5 kernel, method='map', 100 draws; fresh store and cache each run",
        ["scheduler", "workers", "tiles", "seconds", "tiles/s", "steady tiles/s"],
        rows,
    )
    steady = {(r[0], r[1]): r[5] for r in rows}
    return steady["processes", 2] / steady["processes", 1]


def _per_tile_seconds(tile: int, kernel_shape, cache: str, repeats: int) -> float:
    """Median seconds of fitting one tile with fit() in this process, cache warm."""
    import bayeskernel as bk
    from bayeskernel.tiles import image_window, persistent_compilation_cache

    case = field(tile + 16, kernel_shape)
    rows = cols = (8, 8 + tile)
    window = image_window(case.A, rows, cols, kernel_shape, "same")
    observed = case.B[8 : 8 + tile, 8 : 8 + tile]
    times = []
    with persistent_compilation_cache(cache):
        for seed in range(repeats + 1):
            start = time.perf_counter()
            bk.fit(
                window, observed, kernel_shape, mode="valid", seed=seed, progress_bar=False,
                **OPTIONS,
            )  # fmt: skip
            times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))  # the first compiles


def part_tile_size(report: Report, quick: bool, speedup: float, cache: str) -> None:
    from bayeskernel.tiles import make_grid

    side = 16_000
    rows = []
    sizes = [(32, KERNEL), (64, KERNEL), (128, KERNEL), (256, KERNEL), (64, (15, 15))]
    for tile, kernel_shape in sizes[:2] if quick else sizes:
        seconds = _per_tile_seconds(tile, kernel_shape, cache, 2 if quick else 4)
        overlap = tile // 8
        count = make_grid((side, side), tile, overlap).num_tiles
        hours = count * seconds / speedup / 3600
        kernel = "x".join(map(str, kernel_shape))
        rows.append([f"{tile}x{tile}", overlap, kernel, seconds, count, hours])
        print(rows[-1], flush=True)
    report.table(
        f"Part 2: one tile in this process (warm cache), and a {side}x{side} field in such "
        f"tiles on this machine's 2 worker processes (speed-up {speedup:.2f} from Part 1)",
        ["tile", "overlap", "kernel", "s/tile", "tiles in 16k field", "projected hours"],
        rows,
    )


def _core(window, observed, kernel_shape, sigma, scale, key, draws: int):
    """MAP-route linear algebra for one tile at fixed hyperparameters (iid prior)."""
    import jax
    import jax.numpy as jnp

    p = kernel_shape[0] * kernel_shape[1]
    basis = jnp.eye(p).reshape((p,) + kernel_shape)
    # W: blur of each unit kernel, 'valid' over the window (as each tile fit does).
    blurred = jax.lax.conv_general_dilated(
        window[None, None], jnp.flip(basis, (-2, -1))[:, None], (1, 1), "VALID",
        precision=jax.lax.Precision.HIGHEST,
    )[0]  # fmt: skip
    W = blurred.reshape(p, -1).T
    g, V = jnp.linalg.eigh(W.T @ W)
    c = V.T @ (W.T @ observed.reshape(-1))
    total = sigma**2 + scale**2 * g
    xi = jax.random.normal(key, (draws, p))
    latent = (scale * c / total + jnp.sqrt(sigma**2 / total) * xi) @ V.T
    return scale * latent.reshape((draws,) + kernel_shape)


def part_vmap(report: Report, quick: bool, cache: str) -> None:
    import jax
    import jax.numpy as jnp

    import bayeskernel as bk
    from bayeskernel.tiles import image_window, make_grid, persistent_compilation_cache

    case = field(96)
    grid = make_grid(case.B.shape, 24, 4)
    windows = np.stack(
        [image_window(case.A, grid.rows(i), grid.cols(j), KERNEL, "same") for i, j in grid]
    )
    tiles = np.stack([case.B[slice(*grid.rows(i)), slice(*grid.cols(j))] for i, j in grid])
    count = len(tiles)
    rows = []

    def fits(n: int) -> float:
        start = time.perf_counter()
        for t in range(n):
            bk.fit(
                windows[t], tiles[t], KERNEL, mode="valid", seed=t, progress_bar=False, **OPTIONS
            )
        return (time.perf_counter() - start) / n

    cold = fits(2 if quick else 4)
    rows.append(["separate fit(), no compilation cache", cold, 1.0])
    with persistent_compilation_cache(cache):
        fits(1)
        warm = fits(5 if quick else count)
    rows.append(["separate fit(), persistent compilation cache", warm, cold / warm])

    with jax.enable_x64(True):
        core = jax.jit(_core, static_argnums=(2, 6))
        batched = jax.jit(
            jax.vmap(_core, in_axes=(0, 0, None, None, None, 0, None)), static_argnums=(2, 6)
        )
        keys = jax.random.split(jax.random.PRNGKey(0), count)
        w, b = jnp.asarray(windows), jnp.asarray(tiles)
        args = (0.05, 0.05)

        def loop():
            return [core(w[t], b[t], KERNEL, *args, keys[t], 100) for t in range(count)]

        jax.block_until_ready(loop())
        jax.block_until_ready(batched(w, b, KERNEL, *args, keys, 100))
        best_loop = best_batch = math.inf
        for _ in range(5):
            start = time.perf_counter()
            jax.block_until_ready(loop())
            best_loop = min(best_loop, (time.perf_counter() - start) / count)
            start = time.perf_counter()
            jax.block_until_ready(batched(w, b, KERNEL, *args, keys, 100))
            best_batch = min(best_batch, (time.perf_counter() - start) / count)
    rows.append(
        ["core linear algebra, jitted once, looped over tiles", best_loop, cold / best_loop]
    )
    rows.append([f"core linear algebra, vmapped over {count} tiles", best_batch, cold / best_batch])
    report.table(
        "Part 3: seconds per 24x24 tile, 5x5 kernel, 100 draws ('map' route; the core leaves "
        "out the hyperparameter optimisation)",
        ["how", "s/tile", "speed-up vs cold fit"],
        rows,
    )


def _tasks(case, tile: int, overlap: int, options: dict) -> list:
    """TileTasks of a field, as fit_tiles makes them (seed 0)."""
    from bayeskernel.tiles import image_window, make_grid, tile_seed
    from bayeskernel.tiles.run import TileTask, _fit_options

    grid = make_grid(case.B.shape, tile, overlap)
    full = _fit_options(options)
    return [
        TileTask(
            i,
            j,
            grid.rows(i),
            grid.cols(j),
            [image_window(case.A, grid.rows(i), grid.cols(j), KERNEL, "same")],
            [case.B[slice(*grid.rows(i)), slice(*grid.cols(j))].copy()],
            [None],
            KERNEL,
            tile_seed(0, i, j),
            full,
        )  # fmt: skip
        for i, j in grid
    ]


def part_batch_core(report: Report, quick: bool) -> None:
    """Seconds per tile: warm separate fits against one vmapped group of 25 tiles."""
    from bayeskernel.tiles.batch import fit_tile_batch
    from bayeskernel.tiles.run import fit_tile

    case = field(96)
    rows = []
    for method, draws in (("map", dict(num_samples=100)), ("exact", dict(num_samples=50))):
        tasks = _tasks(case, 24, 4, dict(prior="smooth", method=method, **draws))
        fit_tile(tasks[0])  # compile
        count = 5 if quick else len(tasks)
        start = time.perf_counter()
        for task in tasks[:count]:
            fit_tile(task)
        separate = (time.perf_counter() - start) / count
        start = time.perf_counter()
        fit_tile_batch(tasks)
        first = time.perf_counter() - start
        best = math.inf
        for _ in range(2 if quick else 5):
            start = time.perf_counter()
            results = fit_tile_batch(tasks)
            best = min(best, (time.perf_counter() - start) / len(tasks))
        batched = sum(r.attrs.get("fit_route") == "batched" for r in results)
        rows.append([method, separate, best, separate / best, first, batched])
        print(rows[-1], flush=True)
    report.table(
        "Part 5a: seconds per 24x24 tile (5x5 kernel) in this process, warm: separate fit "
        "(fit_tile) against one vmapped group of 25 tiles (fit_tile_batch, Dataset per tile "
        "included); 'map' 100 draws, 'exact' 2x50 draws",
        ["method", "separate s/tile", "batched s/tile", "speed-up", "first group s (compiles)",
         "tiles batched"],
        rows,
    )  # fmt: skip


def part_batch_runs(report: Report, quick: bool) -> None:
    """fit_tiles throughput against batch_size, on Part 1's field."""
    # 100 tiles (25 with --quick): enough for the steady rate to leave out each
    # worker's first task (start-up and compilation).
    case = field(96 if quick else 192)
    rows = []
    for scheduler, workers, kwargs in [
        ("processes", 1, dict(n_workers=1)),
        ("processes", 2, dict(n_workers=2)),
        ("sync (no Dask)", 1, dict(client="sync")),
    ]:
        for batch_size in (None, 5, 25):
            tiles, seconds, steady = timed_run(case, 24, 4, batch_size=batch_size, **kwargs)
            rows.append(
                [scheduler, workers, str(batch_size), tiles, seconds, tiles / seconds, steady]
            )
            print(rows[-1], flush=True)
    report.table(
        f"Part 5b: {case.A.shape[0]}x{case.A.shape[1]} field, 24x24 tiles (overlap 4), "
        "5x5 kernel, method='map', 100 draws; fresh store and cache each run: `seconds` "
        "includes cluster start-up and compilation, `steady tiles/s` leaves out the tiles "
        "finished with each worker's first task",
        ["scheduler", "workers", "batch_size", "tiles", "seconds", "tiles/s", "steady tiles/s"],
        rows,
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def part_memory(report: Report, cache: str) -> None:
    import jax

    import bayeskernel as bk
    from bayeskernel.tiles import image_window, make_grid, persistent_compilation_cache

    case = field(96)
    grid = make_grid(case.B.shape, 24, 4)
    indices = list(grid)
    rows = []
    runs = [("persistent cache", 150, 30, True), ("no cache", 20, 5, False)]
    for label, fits, every, use_cache in runs:
        context = persistent_compilation_cache(cache) if use_cache else _Null()
        start = time.perf_counter()
        with context:
            for n in range(fits + 1):
                if n % every == 0:
                    rows.append([label, n, _rss_mb(), time.perf_counter() - start])
                    print(rows[-1], flush=True)
                if n == fits:
                    break
                i, j = indices[n % len(indices)]
                window = image_window(case.A, grid.rows(i), grid.cols(j), KERNEL, "same")
                observed = case.B[slice(*grid.rows(i)), slice(*grid.cols(j))]
                bk.fit(
                    window, observed, KERNEL, mode="valid", seed=n, progress_bar=False, **OPTIONS
                )
        jax.clear_caches()
    report.table(
        "Part 4: resident memory of one process over many tile fits (24x24, 5x5, 'map')",
        ["compilation", "fits", "RSS MB", "seconds"],
        rows,
    )


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller field, fewer sizes")
    parser.add_argument("--memory", action="store_true", help="also run Part 4 (about 3 min)")
    parser.add_argument("--batch-only", action="store_true", help="run Part 5 alone")
    parser.add_argument("--markdown", help="also write the report as Markdown to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    report = Report(
        "Tiles on Dask", command_line("benchmarks/bench_tiles.py", argv), machine_info()
    )
    report.header()
    with tempfile.TemporaryDirectory() as cache:
        if not args.batch_only:
            speedup = part_workers(report, args.quick)
            part_tile_size(report, args.quick, speedup, cache)
            part_vmap(report, args.quick, cache)
            if args.memory:
                part_memory(report, cache)
        part_batch_core(report, args.quick)
        part_batch_runs(report, args.quick)
    report.note(f"load average at the end: {os.getloadavg()}")
    report.write(args.markdown)
    return 0


if __name__ == "__main__":  # worker processes re-import this file: keep the guard
    sys.exit(main())
