"""One tile's work: the task a worker receives, its fit, and the Dataset it returns.

Both routes use these: :mod:`bayeskernel.tiles.run` (one ``fit`` per tile, on
Dask) and :mod:`bayeskernel.tiles.batch` (equal tiles in one vmapped program,
falling back to :func:`fit_tile` for the others).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TileTask", "fit_tile", "tile_dataset"]


@dataclass(frozen=True)
class TileTask:
    """Everything one worker needs to fit one tile (small: windows, not the field).

    Attributes
    ----------
    tile_row, tile_col : int
    rows, cols : (int, int)
        ``[start, stop)`` of the tile in ``B``.
    A, B : list of ndarray
        Per exposure: the ``A`` window reaching the tile and the ``B`` tile.
    mask : list of (ndarray or None)
        Per exposure: observed pixels of the ``B`` tile, None when all are.
    kernel_shape : (int, int)
    seed : int
        The tile's own seed (:func:`tile_seed`).
    options : dict
        Keyword arguments for :func:`bayeskernel.fit`.
    weights : list of ndarray, optional
        Per exposure: the noise weights of the ``B`` tile (``fit(..., weights=)``).
    """

    tile_row: int
    tile_col: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    A: list
    B: list
    mask: list
    kernel_shape: tuple[int, int]
    seed: int
    options: dict
    weights: list | None = None

    def fit_arguments(self) -> tuple[Any, Any, dict]:
        """``A``, ``B`` and keywords of the equivalent :func:`bayeskernel.fit` call.

        Returns
        -------
        A, B : ndarray or list of ndarray
            One array each for a single exposure, else lists.
        keywords : dict
            :attr:`options` with ``mode='valid'``, the tile's ``seed``,
            ``progress_bar=False``, ``mask`` (None when every pixel is observed)
            and ``weights`` when given.
        """
        single = len(self.A) == 1
        masks = None if all(m is None for m in self.mask) else self.mask
        keywords = dict(
            self.options,
            mode="valid",
            seed=self.seed,
            progress_bar=False,
            mask=(masks[0] if single else masks) if masks is not None else None,
        )
        if self.weights is not None:
            keywords["weights"] = self.weights[0] if single else list(self.weights)
        if single:
            return self.A[0], self.B[0], keywords
        return list(self.A), list(self.B), keywords


def fit_tile(task: TileTask):
    """Fit one tile (runs on a Dask worker); return its posterior as a Dataset.

    Parameters
    ----------
    task : TileTask
        The tile's windows and the ``fit`` options.

    Returns
    -------
    xarray.Dataset
        ``kernel (chain, draw, kernel_row, kernel_col)``, ``noise_sigma`` and
        ``kernel_scale (chain, draw)``, named prior parameters if any; the tile
        index, seed and fit time as attributes.

    Raises
    ------
    Exception
        What ``fit`` raises, of the same type where it can be built from a
        message (else :class:`RuntimeError`), its message prefixed with the
        tile's index and window in ``B``.
    """
    from bayeskernel.api import fit

    A, B, keywords = task.fit_arguments()
    start = time.perf_counter()
    try:
        posterior = fit(A, B, task.kernel_shape, **keywords)
    except Exception as error:
        where = f"tile ({task.tile_row}, {task.tile_col}) at B[{task.rows[0]}:{task.rows[1]}, "
        where += f"{task.cols[0]}:{task.cols[1]}]"
        try:
            wrapped = type(error)(f"{where}: {error}")
        except Exception:  # exception types with other constructors
            wrapped = RuntimeError(f"{where}: {type(error).__name__}: {error}")
        raise wrapped from error
    return tile_dataset(task, posterior, time.perf_counter() - start)


def tile_dataset(task: TileTask, posterior, seconds: float, **attrs):
    """One tile's posterior as the Dataset that goes into the store.

    Parameters
    ----------
    task : TileTask
    posterior : KernelPosterior
    seconds : float
        Fit time recorded as ``fit_seconds``.
    **attrs
        Extra attributes (e.g. the route of a batched fit); the store keeps
        them, :func:`~bayeskernel.tiles.result.assemble` ignores them.

    Returns
    -------
    xarray.Dataset
    """
    import xarray as xr

    draws = ("chain", "draw")
    variables = {
        "kernel": (draws + ("kernel_row", "kernel_col"), posterior.kernel_draws),
        "noise_sigma": (draws, posterior.noise_sigma_draws),
        "kernel_scale": (draws, posterior.kernel_scale_draws),
    }
    for name, values in posterior.parameter_draws.items():
        values = np.asarray(values)
        extra = tuple(f"parameter_{name}_dim_{k}" for k in range(values.ndim - 2))
        variables[f"parameter_{name}"] = (draws + extra, values)
    if posterior.background_draws is not None:  # fit(..., background=d): per tile
        extra = ("pair",) if posterior.background_draws.ndim == 4 else ()
        variables["background"] = (draws + extra + ("background_term",), posterior.background_draws)
    divergences = int(np.sum(posterior.sample_stats.get("diverging", 0)))
    return xr.Dataset(
        variables,
        attrs={
            "tile_row": task.tile_row,
            "tile_col": task.tile_col,
            "seed": task.seed,
            "fit_seconds": seconds,
            "divergences": divergences,
            "method": posterior.method,
            "prior": posterior.prior,
            **attrs,
        },
    )


# --- inputs and settings ------------------------------------------------------
