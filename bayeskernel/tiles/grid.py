"""Splitting a field into overlapping tiles whose borders are exact.

A tile is a window of the observed ``B``. Every pixel of ``convolve2d(A, K, mode)``
depends on a ``(P, Q)`` window of ``A`` (zero outside the image, as the ``'full'``
and ``'same'`` modes imply), so the ``B`` tile at rows ``[r0, r1)`` is exactly
``convolve2d(A_window, K, 'valid')`` for the ``A`` window of rows
``[r0 + f - P + 1, r1 + f)``, where ``f`` is the mode's offset inside the full
output. No periodic wrap, no approximation at tile borders.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from bayeskernel.forward import output_window

__all__ = ["TileGrid", "image_window", "make_grid", "tile_seed"]


def _pair(name: str, value, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each at least ``minimum``, as a pair."""
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(pair) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair
    ):
        raise ValueError(f"{name} must be an integer or a pair of integers, got {value!r}")
    if any(v < minimum for v in pair):
        what = "positive" if minimum > 0 else "non-negative"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Tile starts along one axis: the fewest equal tiles that cover ``length``
    with steps of at most ``tile - overlap``, spread evenly from edge to edge.

    Equal tiles share one shape, which JAX compiles once. Rounding keeps every
    step at most ``tile - overlap`` (the even step is at most that, an integer).
    """
    count = 1 + math.ceil((length - tile) / (tile - overlap))
    if count == 1:
        return (0,)
    step = (length - tile) / (count - 1)
    return tuple(math.floor(k * step + 0.5) for k in range(count))


@dataclass(frozen=True)
class TileGrid:
    """Positions of equal-shape tiles of ``B``, in ``B``'s pixel coordinates.

    Attributes
    ----------
    output_shape : (int, int)
        Shape of ``B``.
    tile_shape, overlap : (int, int)
        Tile size and the least overlap of neighbouring tiles, per axis. Tiles
        are spread evenly from edge to edge, so neighbours may overlap more.
    row_starts, col_starts : tuple of int
        First row (column) of each tile row (column).
    """

    output_shape: tuple[int, int]
    tile_shape: tuple[int, int]
    overlap: tuple[int, int]
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tile rows and tile columns."""
        return len(self.row_starts), len(self.col_starts)

    @property
    def num_tiles(self) -> int:
        return self.shape[0] * self.shape[1]

    def rows(self, tile_row: int) -> tuple[int, int]:
        """``[start, stop)`` rows of ``B`` covered by a tile row.

        Parameters
        ----------
        tile_row : int
            ``0 .. shape[0] - 1``.

        Returns
        -------
        (int, int)
        """
        start = self.row_starts[tile_row]
        return start, start + self.tile_shape[0]

    def cols(self, tile_col: int) -> tuple[int, int]:
        """``[start, stop)`` columns of ``B`` covered by a tile column.

        Parameters
        ----------
        tile_col : int
            ``0 .. shape[1] - 1``.

        Returns
        -------
        (int, int)
        """
        start = self.col_starts[tile_col]
        return start, start + self.tile_shape[1]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Tile indices ``(tile_row, tile_col)`` in row-major order."""
        for i in range(self.shape[0]):
            for j in range(self.shape[1]):
                yield i, j


def make_grid(output_shape: tuple[int, int], tile_shape, overlap=0) -> TileGrid:
    """Cover ``B`` with equal-shape tiles that overlap by at least ``overlap``.

    Parameters
    ----------
    output_shape : (int, int)
        Shape of ``B``.
    tile_shape : int or (int, int)
        Tile size in ``B`` pixels; at most ``output_shape``.
    overlap : int or (int, int)
        Least overlap of neighbouring tiles, ``0 <= overlap < tile_shape``.

    Returns
    -------
    TileGrid

    Raises
    ------
    ValueError
        Naming ``tile_shape`` or ``overlap`` when it is out of range.
    """
    tile = _pair("tile_shape", tile_shape, 1)
    over = _pair("overlap", overlap, 0)
    if any(t > n for t, n in zip(tile, output_shape)):
        raise ValueError(
            f"tile_shape {tile} is larger than B, of shape {tuple(output_shape)}; "
            "use a smaller tile_shape (or fit the whole field with bayeskernel.fit)"
        )
    if any(o >= t for o, t in zip(over, tile)):
        raise ValueError(f"overlap {over} must be smaller than tile_shape {tile} on both axes")
    return TileGrid(
        tuple(int(n) for n in output_shape),
        tile,
        over,
        _starts(output_shape[0], tile[0], over[0]),
        _starts(output_shape[1], tile[1], over[1]),
    )


def image_window(
    image: np.ndarray,
    rows: tuple[int, int],
    cols: tuple[int, int],
    kernel_shape: tuple[int, int],
    mode: str,
) -> np.ndarray:
    """The part of ``A`` that reaches a window of ``B``, zero-padded outside ``A``.

    Parameters
    ----------
    image : (M, N) ndarray
        The whole input ``A``.
    rows, cols : (int, int)
        ``[start, stop)`` of the ``B`` window, in ``B``'s coordinates.
    kernel_shape : (int, int)
    mode : {'same', 'full', 'valid'}
        The mode that made ``B`` from ``A``.

    Returns
    -------
    (rows + P - 1, cols + Q - 1) ndarray
        ``convolve2d(window, K, 'valid')`` equals
        ``convolve2d(image, K, mode)[r0:r1, c0:c1]`` for every kernel ``K``.
    """
    (full_row, full_col), _ = output_window(image.shape, kernel_shape, mode)
    # Output pixel (r, c) of 'full' sums A over rows r-P+1..r and cols c-Q+1..c.
    top = rows[0] + full_row - kernel_shape[0] + 1
    left = cols[0] + full_col - kernel_shape[1] + 1
    height = rows[1] - rows[0] + kernel_shape[0] - 1
    width = cols[1] - cols[0] + kernel_shape[1] - 1
    window = np.zeros((height, width), dtype=image.dtype)
    r0, r1 = max(top, 0), min(top + height, image.shape[0])
    c0, c1 = max(left, 0), min(left + width, image.shape[1])
    if r0 < r1 and c0 < c1:
        window[r0 - top : r1 - top, c0 - left : c1 - left] = image[r0:r1, c0:c1]
    return window


def tile_seed(seed: int, tile_row: int, tile_col: int) -> int:
    """The seed :func:`fit_tiles` passes to ``fit`` for one tile.

    Derived from the base seed and the tile's index alone (NumPy's
    ``SeedSequence``), so a tile's draws do not depend on the grid size, the
    order tiles finish in, or the number of workers.

    Parameters
    ----------
    seed : int
        The run's base seed (``>= 0``).
    tile_row, tile_col : int
        The tile's index in the grid.

    Returns
    -------
    int
        In ``0 .. 2**32 - 1``.
    """
    if int(seed) < 0 or int(tile_row) < 0 or int(tile_col) < 0:
        raise ValueError(
            f"seed and tile indices must be >= 0, got seed {seed}, tile ({tile_row}, {tile_col})"
        )
    sequence = np.random.SeedSequence([int(seed), int(tile_row), int(tile_col)])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])
