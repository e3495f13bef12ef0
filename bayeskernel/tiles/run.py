"""``fit_tiles``: one kernel posterior per tile, fitted on Dask, streamed to disk."""

from __future__ import annotations

import inspect
import json
import logging
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bayeskernel._validation import check_fit_inputs, check_kernel_shape
from bayeskernel.compilation_cache import (
    disable_compilation_cache,
    enable_compilation_cache,
    persistent_compilation_cache,
)
from bayeskernel.forward import MODES, output_shape
from bayeskernel.observation import noise_weights
from bayeskernel.tiles.grid import TileGrid, image_window, make_grid, tile_seed
from bayeskernel.tiles.result import assemble
from bayeskernel.tiles.store import STORE_FORMAT, TileStore, fingerprint
from bayeskernel.tiles.task import TileTask, fit_tile, tile_dataset

__all__ = ["TileTask", "fit_tile", "fit_tiles", "tile_dataset"]  # the task's, re-exported

logger = logging.getLogger(__name__)

# The kernel prior of fit_tiles unless a prior is given.
TILE_PRIOR = "smooth"
# Arguments of ``fit`` that fit_tiles sets itself, per tile.
_SET_PER_TILE = (
    "A", "B", "kernel_shape", "mode", "mask", "seed", "progress_bar", "variance", "weights",
)  # fmt: skip


def _as_list(value, count: int | None = None) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value] * (count or 1)


def _check_data(A, B, kernel_shape, mode, mask):
    """Validated exposures: lists of ``A``, ``B`` (NaN as 0) and masks, one shape each."""
    images, observed = _as_list(A), _as_list(B)
    if len(images) != len(observed):
        raise ValueError(
            f"A and B must both be arrays or lists of the same length, got {len(images)} "
            f"image(s) and {len(observed)} observation(s)"
        )
    if not images:
        raise ValueError("A is an empty list: give at least one image")
    masks = _as_list(mask, len(images))
    if len(masks) != len(images):
        raise ValueError(f"mask is a list of length {len(masks)}, expected {len(images)}")
    checked = []
    for index, (a, b, m) in enumerate(zip(images, observed, masks)):
        try:
            checked.append(check_fit_inputs(a, b, kernel_shape, mode, m))
        except (ValueError, TypeError) as error:
            if len(images) == 1:
                raise
            raise type(error)(f"exposure {index}: {error}") from None
    shapes = {a.shape for a, *_ in checked}
    if len(shapes) > 1:
        raise ValueError(f"all exposures must share one image shape, got {sorted(shapes)}")
    return [c[0] for c in checked], [c[1] for c in checked], [c[3] for c in checked]


def _fit_options(options: dict) -> dict:
    """Check keyword arguments meant for ``fit``; fill in its defaults."""
    from bayeskernel.api import fit

    parameters = inspect.signature(fit).parameters
    for name in options:
        if name in _SET_PER_TILE:
            raise TypeError(f"fit_tiles sets {name!r} for each tile itself; do not pass it")
        if name not in parameters:
            known = sorted(set(parameters) - set(_SET_PER_TILE))
            raise TypeError(f"unexpected keyword argument {name!r}; fit options are {known}")
    defaults = {name: parameter.default for name, parameter in parameters.items()}
    # One model for every tile: fit's prior='auto' would give each tile its own
    # mixture, which neither the batched route nor a comparison across tiles wants.
    defaults["prior"] = TILE_PRIOR
    return {
        name: options.get(name, defaults[name]) for name in parameters if name not in _SET_PER_TILE
    }


def _describe(value) -> Any:
    """A JSON-able, reproducible description of a fit option (priors by repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    text = repr(value)
    if " at 0x" in text:  # a default repr changes between runs; hash the object instead
        digest = fingerprint(np.frombuffer(pickle.dumps(value), dtype=np.uint8))
        return f"{type(value).__qualname__}:{digest}"
    return text


def _settings(images, observed, masks, kernel_shape, mode, grid, seed, options) -> dict:
    return {
        "format": STORE_FORMAT,
        "A": [fingerprint(a) for a in images],
        "B": [fingerprint(b) for b in observed],
        "mask": [fingerprint(m) for m in masks],
        "image_shape": list(images[0].shape),
        "kernel_shape": list(kernel_shape),
        "mode": mode,
        "tile_shape": list(grid.tile_shape),
        "overlap": list(grid.overlap),
        "seed": int(seed),
        "fit": {name: _describe(value) for name, value in options.items()},
    }


def _check_tiles_observed(grid: TileGrid, masks) -> None:
    """Refuse, before fitting any, tiles with no observed pixel in any exposure."""
    if all(m is None for m in masks):
        return
    empty = []
    for i, j in grid:
        rows, cols = grid.rows(i), grid.cols(j)
        if not any(
            m is None or m[rows[0] : rows[1], cols[0] : cols[1]].any() for m in masks
        ):  # fmt: skip
            empty.append((i, j))
    if empty:
        shown = ", ".join(map(str, empty[:5])) + (" ..." if len(empty) > 5 else "")
        raise ValueError(
            f"{len(empty)} tile(s) of B have no observed pixel (all NaN or masked out): "
            f"{shown}; give a larger tile_shape or overlap, or crop B to the observed area"
        )


def _tasks(
    grid: TileGrid, todo: Iterable[tuple[int, int]], images, observed, masks, kernel_shape,
    mode, seed, options, weights=None,
) -> Iterator[TileTask]:  # fmt: skip
    """Windows are cut lazily, so a large field never exists twice in memory."""
    for i, j in todo:
        rows, cols = grid.rows(i), grid.cols(j)
        tile_masks = []
        for m in masks:
            window = None if m is None else m[rows[0] : rows[1], cols[0] : cols[1]]
            tile_masks.append(None if window is None or window.all() else window.copy())
        tile_weights = None
        if weights is not None:
            tile_weights = [w[rows[0] : rows[1], cols[0] : cols[1]].copy() for w in weights]
        yield TileTask(
            i, j, rows, cols,
            [image_window(a, rows, cols, kernel_shape, mode) for a in images],
            [b[rows[0] : rows[1], cols[0] : cols[1]].copy() for b in observed],
            tile_masks, kernel_shape, tile_seed(seed, i, j), options, tile_weights,
        )  # fmt: skip


# --- running ------------------------------------------------------------------


def _batches(tasks: Iterator[TileTask], batch_size: int) -> Iterator[list[TileTask]]:
    """Consecutive tiles (row-major, so mostly neighbours) in lists of ``batch_size``."""
    while batch := list(islice(tasks, batch_size)):
        yield batch


def _fit_units(unit) -> list:
    """Fit one unit of work: a tile (``batch_size=None``) or a list of tiles."""
    if isinstance(unit, TileTask):
        return [fit_tile(unit)]
    from bayeskernel.tiles.batch import fit_tile_batch

    return fit_tile_batch(unit)


def _run_sync(units: Iterator, on_result: Callable) -> None:
    for unit in units:
        for dataset in _fit_units(unit):
            on_result(dataset)


def _run_dask(units: Iterator, client, on_result: Callable, cache: str | None) -> None:
    """Submit tiles (or batches of tiles) with a bounded number in flight; hand each
    result over as it lands."""
    from dask.distributed import as_completed

    # Workers that had no cache get one for this run, and lose it after.
    turned_on = client.run(enable_compilation_cache, cache) if cache else {}
    in_flight = max(2, 2 * sum(client.nthreads().values()))
    token = os.urandom(4).hex()

    def submit(unit):
        if isinstance(unit, TileTask):
            key = f"bayeskernel-tile-{unit.tile_row}-{unit.tile_col}-{token}"
            return client.submit(fit_tile, unit, key=key, pure=False)
        from bayeskernel.tiles.batch import fit_tile_batch

        key = f"bayeskernel-tiles-{unit[0].tile_row}-{unit[0].tile_col}-{token}"
        return client.submit(fit_tile_batch, unit, key=key, pure=False)

    futures = as_completed([submit(unit) for unit in islice(units, in_flight)])
    try:
        for future in futures:
            result = future.result()  # a failed tile raises here, with its index
            for dataset in result if isinstance(result, list) else [result]:
                on_result(dataset)
            future.release()
            for unit in islice(units, 1):
                futures.add(submit(unit))
    except BaseException:
        client.cancel(list(futures.futures))
        raise
    finally:
        for previous in {p for p in turned_on.values() if p is not None}:
            workers = [w for w, p in turned_on.items() if p == previous]
            # A worker lost during the run has nothing left to restore.
            client.run(disable_compilation_cache, previous, workers=workers, on_error="ignore")


@contextmanager
def _local_client(n_workers: int | None, processes: bool) -> Iterator:
    """A LocalCluster for one call: worker processes (or threads here), one thread each."""
    from dask.distributed import Client, LocalCluster

    if n_workers is None:
        n_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    with LocalCluster(
        n_workers=int(n_workers) if processes else 1,
        threads_per_worker=1 if processes else int(n_workers),
        processes=processes,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster, Client(cluster) as client:  # fmt: skip
        yield client


def fit_tiles(
    A,
    B,
    kernel_shape: tuple[int, int],
    tile_shape: int | tuple[int, int],
    overlap: int | tuple[int, int] = 0,
    *,
    mode: Literal["same", "full", "valid"] = "same",
    mask=None,
    variance=None,
    weights=None,
    store: str | os.PathLike | None = None,
    client=None,
    n_workers: int | None = None,
    processes: bool = True,
    seed: int = 0,
    compilation_cache: bool | str | os.PathLike = True,
    batch_size: int | None = None,
    **fit_options,
):
    """Kernel posterior per tile of a large field, on Dask, resumable from disk.

    The field ``B`` is covered by equal-shape tiles that overlap by at least
    ``overlap`` pixels. Each tile's kernel posterior is fitted with
    :func:`bayeskernel.fit` from the ``B`` tile and the part of ``A`` that
    reaches it (``mode='valid'`` on a zero-padded window), so tile borders are
    exact. Finished tiles are written to ``store`` one file at a time, and a
    re-run with the same store fits only what is missing.

    Parameters
    ----------
    A : (M, N) array_like or list of them
        The known input; a list holds several exposures of one field (one
        kernel per tile shared by all, as ``fit`` does with lists).
    B : array_like or list of them
        The observed output, ``convolve2d(A, K, mode)`` plus noise; NaN marks
        unobserved pixels.
    kernel_shape : (int, int)
        Shape of each tile's kernel.
    tile_shape : int or (int, int)
        Tile size in pixels of ``B``, at most ``B``'s shape.
    overlap : int or (int, int)
        Least overlap of neighbouring tiles in pixels of ``B``, in
        ``[0, tile_shape)``. The fewest tiles that respect it are spread evenly
        from edge to edge, so neighbours may overlap more; all tiles share one
        shape (JAX compiles each shape once).
    mode : {'same', 'full', 'valid'}
        How ``B`` was made from ``A``, exactly as :func:`scipy.signal.convolve2d`.
    mask : bool array_like or list of them, optional
        ``True`` where ``B`` is observed.
    variance, weights : array_like or list of them, optional
        The noise variance (or inverse variance) of each pixel of ``B``, as for
        :func:`bayeskernel.fit`; cut into tiles with ``B``.
    store : str or path-like, optional
        Folder for the finished tiles (see :class:`TileStore`). Without one,
        nothing is kept on disk and an interrupted run starts over.
    client : dask.distributed.Client or 'sync', optional
        Where the tiles run. ``None`` (default): a ``LocalCluster`` started for
        this call and closed at the end. A ``Client``: its cluster (workers need
        bayeskernel installed; the store need only be visible here, since
        results come back to this process to be written). ``'sync'``: one tile
        after another in this process, without Dask (debugging, small jobs).
    n_workers : int, optional
        Workers of the default local cluster; default: the usable cores.
    processes : bool
        Default local cluster made of worker processes (default; measured
        faster than threads, docs/tiles.md) or of threads in this process.
    seed : int
        Base seed; tile ``(i, j)`` is fitted with ``tile_seed(seed, i, j)``,
        whatever the grid, the worker count or the order tiles finish in.
    compilation_cache : bool or path-like
        JAX's persistent compilation cache where tiles are fitted, so that
        equal-shape tiles compile once (small tiles 4x faster, docs/tiles.md).
        ``True`` (default): in ``store/jax_cache``, or a temporary folder
        without a store; a path: that folder; ``False``: JAX is left alone.
        It is on for this call only (in this process and on the workers),
        except where a cache folder was configured already, which is used as
        it is. The cache is trusted code: keep it where only you can write.
    batch_size : int, optional
        Tiles per Dask task. ``None`` (default): one tile per task, each a
        separate ``fit``. A positive integer: consecutive tiles go together,
        and those of equal shapes that qualify (one exposure, no unobserved
        pixels, a linear-Gaussian prior, ``method`` ``'map'``, ``'exact'`` or
        ``'auto'`` resolving to ``'exact'``, the dense solver in kernel space,
        both hyperparameters learnt) are fitted in one vmapped JAX program
        (:mod:`bayeskernel.tiles.batch`): the same draws as separate fits, to
        the optimisers' tolerance, at a fraction of the time. Other tiles are
        fitted separately within the task. Each tile file records its route
        (attribute ``fit_route``).
    **fit_options
        Passed to :func:`bayeskernel.fit` for every tile: ``prior``,
        ``method``, ``num_samples``, ``num_warmup``, ``num_chains``,
        ``noise_sigma``, ``kernel_scale``, ``draws_dtype``, ... The prior
        defaults to ``'smooth'`` here (``fit``'s ``'auto'`` would fit each
        tile with its own model average).

    Returns
    -------
    xarray.Dataset
        ``kernel (tile_row, tile_col, chain, draw, kernel_row, kernel_col)``,
        ``noise_sigma`` and ``kernel_scale (tile_row, tile_col, chain, draw)``,
        ``fit_seconds`` and ``seed (tile_row, tile_col)``; coordinates
        ``row_start``/``row_stop`` (per tile row) and ``col_start``/``col_stop``
        (per tile column) in pixels of ``B``; the settings and the counts
        ``tiles_fitted``, ``tiles_loaded`` and ``tiles_batched`` (fitted by the
        vmapped route) as attributes. Summaries:
        :func:`tile_summary`; figure: :func:`plot_tiles`.

    Raises
    ------
    ValueError
        Bad ``tile_shape``, ``overlap``, ``seed`` or data (the message names
        the argument); :class:`StoreMismatchError` when ``store`` holds tiles
        made with other settings or data. A tile whose fit fails raises its
        error with the tile's index and position.
    TypeError
        An option that ``fit`` does not take, or one fit_tiles sets itself.

    Examples
    --------
    >>> import bayeskernel as bk
    >>> case = bk.simulate((48, 48), "gaussian", (5, 5), noise_sigma=0.05, seed=1)
    >>> result = bk.fit_tiles(case.A, case.B, (5, 5), tile_shape=24, overlap=0,
    ...                       method="map", num_samples=100, client="sync")  # doctest: +SKIP
    >>> result.kernel.mean(("chain", "draw")).shape  # doctest: +SKIP
    (2, 2, 5, 5)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    kernel_shape = check_kernel_shape(kernel_shape)
    options = _fit_options(fit_options)
    images, observed, masks = _check_data(A, B, kernel_shape, mode, mask)
    tile_weights = noise_weights(variance, weights, [b.shape for b in observed])
    if tile_weights is not None:  # weight 0 (or NaN variance): unobserved, as a mask says
        masks = [(w > 0) if m is None else (m & (w > 0)) for m, w in zip(masks, tile_weights)]
    grid = make_grid(output_shape(images[0].shape, kernel_shape, mode), tile_shape, overlap)
    _check_tiles_observed(grid, masks)
    if client is not None and client != "sync" and not hasattr(client, "submit"):
        raise TypeError(f"client must be None, 'sync' or a dask.distributed.Client, got {client!r}")
    if n_workers is not None and (
        not isinstance(n_workers, (int, np.integer)) or isinstance(n_workers, bool) or n_workers < 1
    ):
        raise ValueError(f"n_workers must be a positive integer or None, got {n_workers!r}")
    if batch_size is not None and (
        not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
        or batch_size < 1
    ):  # fmt: skip
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if compilation_cache is not True and not compilation_cache:
        cache_folder = None
    elif compilation_cache is True and store is not None:
        cache_folder = str(Path(store) / "jax_cache")
    elif compilation_cache is True:
        cache_folder = None  # a temporary folder, made below
    else:
        cache_folder = str(compilation_cache)

    settings = _settings(images, observed, masks, kernel_shape, mode, grid, seed, options)
    if tile_weights is not None:  # only then: stores made without weights keep their settings
        settings["weights"] = [fingerprint(w) for w in tile_weights]
    tile_store = TileStore(store, settings) if store is not None else None
    tiles: dict[tuple[int, int], Any] = {}
    if tile_store is not None:
        for i, j in sorted(tile_store.finished()):
            tiles[i, j] = tile_store.read(i, j)
    loaded = len(tiles)
    todo = [index for index in grid if index not in tiles]
    logger.info("%d tile(s): %d in the store, %d to fit", grid.num_tiles, loaded, len(todo))

    batched = 0

    def on_result(dataset) -> None:
        nonlocal batched
        index = (dataset.attrs["tile_row"], dataset.attrs["tile_col"])
        if tile_store is not None:
            tile_store.write(*index, dataset)
        tiles[index] = dataset
        batched += dataset.attrs.get("fit_route") == "batched"
        logger.info("tile %s done in %.2f s", index, dataset.attrs["fit_seconds"])

    tasks = _tasks(
        grid, todo, images, observed, masks, kernel_shape, mode, seed, options, tile_weights
    )  # fmt: skip
    units = tasks if batch_size is None else _batches(tasks, int(batch_size))
    start = time.perf_counter()
    with ExitStack() as stack:
        if todo and compilation_cache is True and cache_folder is None:
            cache_folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="jax_cache"))
        if todo and client == "sync":
            with persistent_compilation_cache(cache_folder) if cache_folder else nullcontext():
                _run_sync(units, on_result)
        elif todo:
            if client is None:
                client = stack.enter_context(_local_client(n_workers, processes))
            _run_dask(units, client, on_result, cache_folder)
    attrs = {
        "store": "" if store is None else str(Path(store)),
        "tiles_fitted": len(todo),
        "tiles_loaded": loaded,
        "tiles_batched": batched,
        "seconds": time.perf_counter() - start,
        "settings": json.dumps(settings, sort_keys=True),
    }
    return assemble(grid, tiles, settings, attrs)
