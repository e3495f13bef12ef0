"""Spatially varying kernels: one kernel posterior per tile of a large field, on Dask.

Modules, importing one way: :mod:`~bayeskernel.tiles.grid` (splitting, exact
borders), :mod:`~bayeskernel.tiles.store` (one NetCDF file per finished tile),
:mod:`~bayeskernel.tiles.cache` (JAX's persistent compilation cache),
:mod:`~bayeskernel.tiles.result` (the labelled result, summaries, figure),
:mod:`~bayeskernel.tiles.batch` (equal-shape tiles in one vmapped program,
``fit_tiles(batch_size=...)``) and :mod:`~bayeskernel.tiles.run`
(:func:`fit_tiles`). Dask, xarray and matplotlib are imported only when a
function needs them, so ``import bayeskernel`` stays free of them.
"""

from bayeskernel.tiles.cache import persistent_compilation_cache
from bayeskernel.tiles.grid import TileGrid, image_window, make_grid, tile_seed
from bayeskernel.tiles.result import load_tiles, plot_tiles, tile_summary
from bayeskernel.tiles.run import TileTask, fit_tile, fit_tiles
from bayeskernel.tiles.store import StoreMismatchError, TileStore

__all__ = [
    "StoreMismatchError",
    "TileGrid",
    "TileStore",
    "TileTask",
    "fit_tile",
    "fit_tiles",
    "image_window",
    "load_tiles",
    "make_grid",
    "persistent_compilation_cache",
    "plot_tiles",
    "tile_seed",
    "tile_summary",
]
