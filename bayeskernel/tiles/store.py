"""A folder of finished tiles: one NetCDF file per tile, written atomically.

Layout::

    store/
      settings.json           what made the tiles: data fingerprints, shapes, fit options
      tiles/tile_0003_0012.nc one file per finished tile (row 3, column 12)

A tile file appears only once complete (written to a temporary name in the same
folder, flushed to disk, then renamed, which is atomic on POSIX and Windows), so a
run killed at any moment leaves whole tiles or nothing; a re-run loads the finished tiles and
fits the rest. A store made with other settings or other data is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from bayeskernel._permissions import result_mode

__all__ = ["StoreMismatchError", "TileStore", "fingerprint", "read_settings"]

# Bumped when the layout or the meaning of a tile file changes. 2: the prior
# names 'radial' (knots out to 16 px) and 'auto' (an average) changed meaning,
# so a store begun before must not be resumed with new tiles.
STORE_FORMAT = "bayeskernel-tiles-2"
_TILE_NAME = re.compile(r"^tile_(\d+)_(\d+)\.nc$")


class StoreMismatchError(ValueError):
    """The store folder holds tiles made with other settings or other data."""


def fingerprint(array) -> str | None:
    """Short content hash of an array (shape, dtype and bytes), or None."""
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.shape}{array.dtype.str}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


# Temporary files are named after their writer (host and process), so that a
# cleanup removes only those of writers that are gone.
_WRITER = f"{socket.gethostname()}-{os.getpid()}"
_TEMPORARY = re.compile(r"^\.tile_\d+_\d+\.nc\.(?P<host>.+)-(?P<pid>\d+)\.[^.]+\.tmp$")
# A leftover of another host is removed only once this old: its writer is
# surely gone (no tile takes a day).
_FOREIGN_AGE = 24 * 3600.0


def _write_atomically(path: Path, write) -> None:
    """Call ``write(temporary_path)``, then rename onto ``path`` (all or nothing)."""
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{_WRITER}.", suffix=".tmp"
    )
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb+") as written:  # on disk before the name says "done"
            os.fsync(written.fileno())
        # mkstemp makes the file user-only; a tile is a result like any other.
        os.chmod(temporary, result_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _writer_gone(entry: Path) -> bool:
    """Whether the process that was writing the temporary file ``entry`` has ended."""
    match = _TEMPORARY.match(entry.name)
    if match is None:  # an older naming: only its age can tell
        return _age(entry) > _FOREIGN_AGE
    if match["host"] != socket.gethostname():
        return _age(entry) > _FOREIGN_AGE
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _age(entry: Path) -> float:
    try:
        return time.time() - entry.stat().st_mtime
    except FileNotFoundError:
        return 0.0


class TileStore:
    """Finished tiles of one :func:`~bayeskernel.tiles.fit_tiles` run on disk.

    Parameters
    ----------
    path : str or path-like
        The store folder (created if missing).
    settings : dict
        JSON-serialisable description of the run. Written on first use;
        compared with the stored one on later runs.
    writer : bool
        A writer (``fit_tiles``) removes temporary files left by writers that
        have ended; a reader (``load_tiles``) never removes anything, so a
        run still writing the store is left alone.

    Raises
    ------
    StoreMismatchError
        When the folder already holds a run with different settings.
    """

    def __init__(self, path: str | os.PathLike, settings: dict, *, writer: bool = True):
        self.path = Path(path)
        self.tile_folder = self.path / "tiles"
        self.settings = json.loads(json.dumps(settings))  # normalise tuples to lists
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"store {str(self.path)!r} exists and is not a folder")
        self.tile_folder.mkdir(parents=True, exist_ok=True)
        settings_file = self.path / "settings.json"
        if settings_file.exists():
            self._check(read_settings(settings_file))
        else:
            text = json.dumps(self.settings, indent=1, sort_keys=True)
            _write_atomically(settings_file, lambda name: Path(name).write_text(text))
        # Leftovers of a run killed while writing: never a finished tile.
        if writer:
            for leftover in self.tile_folder.glob(".tile_*.tmp"):
                if _writer_gone(leftover):
                    leftover.unlink(missing_ok=True)

    def _check(self, stored: dict) -> None:
        differences = []
        for key in sorted(set(stored) | set(self.settings)):
            before, now = stored.get(key), self.settings.get(key)
            if isinstance(before, dict) and isinstance(now, dict):
                differences += [
                    f"{name}: {before.get(name)!r} in the store, {now.get(name)!r} now"
                    for name in sorted(set(before) | set(now))
                    if before.get(name) != now.get(name)
                ]
            elif before != now:
                differences.append(f"{key}: {before!r} in the store, {now!r} now")
        if differences:
            raise StoreMismatchError(
                f"store {str(self.path)!r} holds tiles made with different settings ("
                + "; ".join(differences)
                + "). Use a new store folder, or delete this one to start over."
            )

    def tile_path(self, tile_row: int, tile_col: int) -> Path:
        """The NetCDF file of tile ``(tile_row, tile_col)`` (it may not exist yet).

        Parameters
        ----------
        tile_row, tile_col : int
            The tile's index in the grid.

        Returns
        -------
        Path
            ``tiles/tile_RRRR_CCCC.nc`` under the store folder.
        """
        return self.tile_folder / f"tile_{tile_row:04d}_{tile_col:04d}.nc"

    def finished(self) -> set[tuple[int, int]]:
        """Indices of the tiles whose files are complete.

        Returns
        -------
        set of (int, int)
            ``(tile_row, tile_col)`` of each tile file in the store (files are
            written under a temporary name and renamed when complete).
        """
        found = set()
        for entry in self.tile_folder.iterdir():
            match = _TILE_NAME.match(entry.name)
            if match:
                found.add((int(match[1]), int(match[2])))
        return found

    def write(self, tile_row: int, tile_col: int, dataset) -> Path:
        """Write one tile's ``xarray.Dataset`` (h5netcdf), atomically.

        Parameters
        ----------
        tile_row, tile_col : int
            The tile's index in the grid.
        dataset : xarray.Dataset
            The tile's posterior (:func:`~bayeskernel.tiles.fit_tile`).

        Returns
        -------
        Path
            The tile's file, :meth:`tile_path`.
        """
        path = self.tile_path(tile_row, tile_col)
        _write_atomically(path, lambda name: dataset.to_netcdf(name, engine="h5netcdf"))
        return path

    def read(self, tile_row: int, tile_col: int):
        """One finished tile as an in-memory ``xarray.Dataset`` (file closed).

        Parameters
        ----------
        tile_row, tile_col : int
            The tile's index in the grid.

        Returns
        -------
        xarray.Dataset

        Raises
        ------
        ValueError
            When the file cannot be read (damaged, or missing), naming it.
        """
        import xarray as xr

        path = self.tile_path(tile_row, tile_col)
        if not path.is_file():
            raise ValueError(
                f"tile ({tile_row}, {tile_col}) has no file {str(path)!r} yet: it is not "
                "fitted (rerun fit_tiles with this store)"
            )
        try:
            with xr.open_dataset(path, engine="h5netcdf") as dataset:
                return dataset.load()
        except (OSError, ValueError) as error:
            raise ValueError(
                f"tile file {str(path)!r} is damaged ({type(error).__name__}: {error}); "
                "delete it and rerun fit_tiles to fit that tile again"
            ) from None


def read_settings(path: Path) -> dict:
    """A store's settings, or an error naming the file."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(
            f"store settings {str(path)!r} are damaged ({error}); use a new store folder, "
            "or delete this one to start over"
        ) from None
