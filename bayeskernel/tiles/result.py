"""The tiled result as one labelled ``xarray.Dataset``; its summaries and figure."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bayeskernel.tiles.grid import TileGrid, make_grid

__all__ = ["assemble", "load_tiles", "plot_tiles", "tile_summary"]

_PER_DRAW = ("chain", "draw")


def assemble(grid: TileGrid, tiles: dict, settings: dict, attrs: dict | None = None):
    """Stack per-tile Datasets into ``(tile_row, tile_col, ...)`` arrays.

    Tiles missing from ``tiles`` are NaN (a partial store).
    """
    import xarray as xr

    if not tiles:
        raise ValueError("no finished tile to assemble")
    first = next(iter(tiles.values()))
    rows, cols = grid.shape
    variables = {}
    for name, array in first.data_vars.items():
        values = np.full((rows, cols) + array.shape, np.nan, dtype=array.dtype)
        for (i, j), tile in tiles.items():
            values[i, j] = tile[name].values
        variables[name] = (("tile_row", "tile_col") + array.dims, values)
    for name, dtype in (("fit_seconds", float), ("seed", np.int64), ("divergences", np.int64)):
        fill = np.nan if dtype is float else -1  # -1: tile not finished
        values = np.full((rows, cols), fill, dtype=dtype)
        for (i, j), tile in tiles.items():
            values[i, j] = tile.attrs[name]
        variables[name] = (("tile_row", "tile_col"), values)
    kernel = first["kernel"]
    coords = {
        "tile_row": np.arange(rows),
        "tile_col": np.arange(cols),
        "chain": np.arange(kernel.sizes["chain"]),
        "draw": np.arange(kernel.sizes["draw"]),
        "kernel_row": np.arange(kernel.sizes["kernel_row"]),
        "kernel_col": np.arange(kernel.sizes["kernel_col"]),
        "row_start": ("tile_row", np.array(grid.row_starts)),
        "row_stop": ("tile_row", np.array(grid.row_starts) + grid.tile_shape[0]),
        "col_start": ("tile_col", np.array(grid.col_starts)),
        "col_stop": ("tile_col", np.array(grid.col_starts) + grid.tile_shape[1]),
    }
    fit = settings["fit"]
    meta = {
        "mode": settings["mode"],
        "kernel_shape": list(settings["kernel_shape"]),
        "tile_shape": list(grid.tile_shape),
        "overlap": list(grid.overlap),
        "output_shape": list(grid.output_shape),
        "method": str(first.attrs["method"]),
        "prior": str(first.attrs["prior"]),
        "prior_option": str(fit.get("prior")),
        "seed": int(settings["seed"]),
        "tiles_finished": len(tiles),
        "inference_library": "bayeskernel",
        **(attrs or {}),
    }
    return xr.Dataset(variables, coords=coords, attrs=meta)


def load_tiles(store: str | os.PathLike):
    """Read a store's finished tiles (a partial run too: missing tiles are NaN).

    Parameters
    ----------
    store : str or path-like
        A folder written by :func:`~bayeskernel.tiles.fit_tiles`.

    Returns
    -------
    xarray.Dataset
        As :func:`~bayeskernel.tiles.fit_tiles` returns.
    """
    from bayeskernel.tiles.store import TileStore, read_settings

    settings_file = Path(store) / "settings.json"
    if not settings_file.is_file():
        raise FileNotFoundError(f"store {str(store)!r} has no settings.json: not a tile store")
    settings = read_settings(settings_file)
    kernel_shape, image_shape = settings["kernel_shape"], settings["image_shape"]
    from bayeskernel.forward import output_shape

    shape = output_shape(tuple(image_shape), tuple(kernel_shape), settings["mode"])
    grid = make_grid(shape, tuple(settings["tile_shape"]), tuple(settings["overlap"]))
    tile_store = TileStore(store, settings, writer=False)  # a reader deletes nothing
    tiles = {index: tile_store.read(*index) for index in sorted(tile_store.finished())}
    return assemble(grid, tiles, settings, {"store": str(Path(store))})


def tile_summary(result, prob: float = 0.95):
    """Per-tile posterior mean, sd and equal-tailed interval of every kernel entry.

    Parameters
    ----------
    result : xarray.Dataset
        From :func:`~bayeskernel.tiles.fit_tiles`.
    prob : float
        Probability inside the interval.

    Returns
    -------
    xarray.Dataset
        ``kernel_mean``, ``kernel_sd``, ``kernel_lower``, ``kernel_upper``,
        ``interval_width`` over ``(tile_row, tile_col, kernel_row, kernel_col)``;
        ``noise_sigma_mean`` and ``kernel_sum_mean`` per tile.
    """
    import xarray as xr

    if not 0 < prob < 1:
        raise ValueError(f"prob must lie strictly between 0 and 1, got {prob!r}")
    kernel = result["kernel"].astype(np.float64)
    lower = kernel.quantile((1 - prob) / 2, dim=_PER_DRAW).drop_vars("quantile")
    upper = kernel.quantile((1 + prob) / 2, dim=_PER_DRAW).drop_vars("quantile")
    mean = kernel.mean(_PER_DRAW)
    return xr.Dataset(
        {
            "kernel_mean": mean,
            "kernel_sd": kernel.std(_PER_DRAW),
            "kernel_lower": lower,
            "kernel_upper": upper,
            "interval_width": upper - lower,
            "noise_sigma_mean": result["noise_sigma"].mean(_PER_DRAW),
            "kernel_sum_mean": mean.sum(("kernel_row", "kernel_col")),
        },
        attrs={"interval_prob": prob},
    )


def _mosaic(values: np.ndarray, gap: int = 1) -> np.ndarray:
    """``(rows, cols, P, Q)`` kernels laid out in the tile grid, NaN between them."""
    rows, cols, p, q = values.shape
    out = np.full((rows * (p + gap) - gap, cols * (q + gap) - gap), np.nan)
    for i in range(rows):
        for j in range(cols):
            out[i * (p + gap) : i * (p + gap) + p, j * (q + gap) : j * (q + gap) + q] = values[i, j]
    return out


def plot_tiles(result, path: str | os.PathLike | None = None, prob: float = 0.95):
    """The kernel field and its uncertainty: per-tile mean, sd and interval width.

    Each panel lays the tiles' kernels out in the tile grid (tile ``(0, 0)`` top
    left); axis ticks give each tile's first row and column in ``B``.

    Parameters
    ----------
    result : xarray.Dataset
        From :func:`~bayeskernel.tiles.fit_tiles`.
    path : str or path-like, optional
        Also save the figure there (PNG, PDF, ... by extension).
    prob : float
        Probability of the interval whose width is shown.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    summary = tile_summary(result, prob)
    rows, cols = result.sizes["tile_row"], result.sizes["tile_col"]
    p, q = result.sizes["kernel_row"], result.sizes["kernel_col"]
    panels = [
        ("posterior mean", summary["kernel_mean"], "viridis"),
        ("posterior sd", summary["kernel_sd"], "magma"),
        (f"{prob:.0%} interval width", summary["interval_width"], "magma"),
    ]
    figure = Figure(figsize=(4.2 * len(panels), 4.0 * max(rows / cols, 0.5)), layout="constrained")
    axes = figure.subplots(1, len(panels))
    for ax, (title, values, cmap) in zip(axes, panels):
        kernels = values.transpose("tile_row", "tile_col", "kernel_row", "kernel_col").values
        image = ax.imshow(_mosaic(kernels), cmap=cmap)
        ax.set_title(title)
        ax.set_xticks(np.arange(cols) * (q + 1) + (q - 1) / 2)
        ax.set_xticklabels(result["col_start"].values, fontsize=7)
        ax.set_yticks(np.arange(rows) * (p + 1) + (p - 1) / 2)
        ax.set_yticklabels(result["row_start"].values, fontsize=7)
        ax.set_xlabel("tile's first column in B")
        ax.set_ylabel("tile's first row in B")
        figure.colorbar(image, ax=ax, shrink=0.8)
    figure.suptitle(
        f"kernel field: {rows}x{cols} tiles of {tuple(result.attrs['tile_shape'])}, "
        f"{p}x{q} kernels, prior={result.attrs['prior']}, method={result.attrs['method']}"
    )
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
