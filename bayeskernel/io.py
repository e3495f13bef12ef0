"""Reading input arrays from files; saving and loading a posterior as NetCDF.

Input formats, chosen by the file's extension:

=====================  ==========================================================
``.npy``               one NumPy array
``.npz``               NumPy archive; ``key`` picks the array
``.csv .txt .dat``     numbers in rows, separated by commas or whitespace
``.tsv``
``.tif .tiff``         single-page TIFF of any numeric type (``tifffile``); a
                       multi-page one is refused
``.png``               greyscale PNG, 8 or 16 bit (``Pillow``); values as stored,
                       e.g. 0..255, not rescaled
``.fits .fit .fts``    FITS image (astropy, optional), also gzipped (``.fits.gz``);
                       ``hdu`` picks the HDU (:mod:`bayeskernel.fits` reads its
                       variance, weight and mask planes too)
=====================  ==========================================================

Every failure raises :class:`InputError` (a ``ValueError``) whose one-line message
names the file and says what was expected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from bayeskernel._machine import memory_bytes
from bayeskernel.fits import FitsError, is_fits, read_image
from bayeskernel.posterior import KernelPosterior, is_plain

__all__ = ["FORMATS", "InputError", "load", "read_array", "save"]

FORMATS: dict[str, tuple[str, ...]] = {
    "numpy": (".npy",),
    "numpy archive": (".npz",),
    "text": (".csv", ".txt", ".dat", ".tsv"),
    "tiff": (".tif", ".tiff"),
    "png": (".png",),
    "fits": (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz"),
}
_SUFFIXES = tuple(suffix for suffixes in FORMATS.values() for suffix in suffixes)


class InputError(ValueError):
    """A file that cannot be read as the array that was expected."""


def _fail(path: Path, message: str) -> InputError:
    return InputError(f"{path}: {message}")


def _read_npz(path: Path, key: str | None, role: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.files)
        if key is None:
            if len(keys) == 1:
                key = keys[0]
            elif role is not None and role in keys:
                # An archive holding both A and B: take the array named after the role.
                key = role
            else:
                raise _fail(
                    path,
                    f"holds {len(keys)} arrays {keys}; choose one with --key (key= in Python)",
                )
        if key not in keys:
            raise _fail(path, f"has no array named {key!r}; it holds {keys}")
        return archive[key]


def _read_text(path: Path) -> np.ndarray:
    with open(path, encoding="utf-8-sig") as fh:
        sample = fh.read(65536)
    delimiter = "," if "," in sample else ("\t" if "\t" in sample else None)
    if not sample.strip():
        raise _fail(path, "holds no numbers (an empty text file)")
    try:
        # ndmin=2: a single row or column still reads as a 2D array.
        return np.loadtxt(path, delimiter=delimiter, ndmin=2, dtype=float, encoding="utf-8-sig")
    except ValueError as error:
        first = str(error).splitlines()[0] if str(error) else "unreadable text"
        raise _fail(
            path, f"is not a table of numbers separated by commas or whitespace ({first})"
        ) from None


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            if len(tiff.pages) > 1:
                # A stack, a time series or a pyramid: which page is meant is not ours to guess.
                raise _fail(
                    path, f"holds {len(tiff.pages)} pages; expected a single-page TIFF (save "
                    "the image you mean on its own)",
                )  # fmt: skip
            return tiff.asarray()
    except (tifffile.TiffFileError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise _fail(path, f"is not a readable TIFF image ({error})") from None


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            # Palette entries are indices into a colour table, not values.
            array = np.asarray(image.convert("RGBA") if image.mode == "P" else image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise _fail(path, f"is not a readable PNG image ({error})") from None
    if array.ndim == 3:
        # Greyscale saved as RGB(A) or with an opaque alpha is common, and is
        # one array; real colour or transparency is not.
        has_alpha = array.shape[-1] in (2, 4)
        colour = array[..., :-1] if has_alpha else array
        opaque = not has_alpha or np.all(array[..., -1] == np.iinfo(array.dtype).max)
        if opaque and np.all(colour == colour[..., :1]):
            return colour[..., 0]
        raise _fail(
            path,
            f"is a colour or transparent image ({array.shape[-1]} channels); expected a "
            "single-channel (greyscale) image",
        )
    return array


def read_array(
    path: str | os.PathLike,
    *,
    key: str | None = None,
    role: str | None = None,
    allow_nan: bool = False,
    hdu: str | int | None = None,
) -> np.ndarray:
    """Read one 2D numeric array from a file.

    Parameters
    ----------
    path : str or path-like
        A file in one of :data:`FORMATS` (chosen by extension).
    key : str, optional
        Array name inside a ``.npz`` archive. Default: the only array, or the
        one named ``role`` when there are several.
    role : str, optional
        What the array is (``'A'``, ``'B'``): used to pick from a ``.npz`` and to
        word messages.
    allow_nan : bool
        Accept NaN entries (unobserved pixels of ``B``). Infinities never pass.
    hdu : str or int, optional
        FITS only: the HDU, by name or index (default: the first 2D image).

    Returns
    -------
    (M, N) float64 ndarray

    Raises
    ------
    InputError
        Missing or unreadable file, unknown extension, not 2D, not numeric, or
        non-finite values; the message names the file and what was expected.
    """
    path = Path(path)
    what = f" ({role})" if role else ""
    if not path.exists():
        raise InputError(f"{path}: no such file{what}")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected a file{what}")
    suffix = path.suffix.lower()
    if is_fits(path):
        suffix = ".fits"
    if hdu is not None and suffix != ".fits":
        raise _fail(path, f"hdu {hdu!r} was given, but only FITS files have HDUs")
    if key is not None and suffix != ".npz":
        raise _fail(path, f"key {key!r} was given, but only .npz archives hold named arrays")
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            array = _read_npz(path, key, role)
        elif suffix in FORMATS["text"]:
            array = _read_text(path)
        elif suffix in FORMATS["tiff"]:
            array = _read_tiff(path)
        elif suffix in FORMATS["png"]:
            array = _read_png(path)
        elif suffix == ".fits":
            array = read_image(path, hdu).data
        else:
            raise _fail(
                path,
                f"unknown file type {suffix or '(no extension)'!r}; expected one of "
                + ", ".join(_SUFFIXES),
            )
    except InputError:
        raise
    except FitsError as error:
        raise InputError(str(error)) from None
    except (OSError, ValueError, EOFError) as error:
        # np.load on a corrupt file, pickled object arrays, unreadable bytes.
        raise _fail(path, f"could not be read as {suffix} ({error})") from None
    except MemoryError:
        # A small file can declare a huge array (a .npy header, an image size).
        raise _fail(path, "declares an array too large for this machine's memory") from None

    array = np.asarray(array)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise _fail(path, f"holds {array.dtype} values; expected real numbers")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise _fail(path, f"holds complex values ({array.dtype}); expected real numbers")
    if array.ndim != 2:
        raise _fail(path, f"holds an array of shape {array.shape}; expected a 2D array{what}")
    if array.size == 0:
        raise _fail(path, f"holds an empty array of shape {array.shape}")
    array = array.astype(np.float64)
    if np.isinf(array).any():
        raise _fail(path, f"contains {int(np.isinf(array).sum())} infinite value(s)")
    if not allow_nan and np.isnan(array).any():
        raise _fail(
            path,
            f"contains {int(np.isnan(array).sum())} NaN value(s); {role or 'the array'} "
            "must be fully known",
        )
    return array


# Attribute holding route-specific facts (run time, solver details) as JSON.
_DIAGNOSTICS_ATTR = "bayeskernel_diagnostics"


def save(posterior: KernelPosterior, path: str | os.PathLike) -> Path:
    """Write a posterior to NetCDF, in ArviZ's ``InferenceData`` layout.

    Parameters
    ----------
    posterior : KernelPosterior
    path : str or path-like
        Usually ends in ``.nc``.

    Returns
    -------
    Path
        The file written; :func:`load` reads it back, and so does
        ``arviz.from_netcdf``.
    """
    import xarray as xr

    path = Path(path)
    groups = posterior.to_datasets()
    plain = {
        k: v
        for k, v in posterior.diagnostics.items()
        if is_plain(v) or (isinstance(v, dict) and all(map(is_plain, v.values())))
    }  # flat dicts too: prior='auto''s prior_evidence, prior_weights, prior_draws
    # The posterior group carries what load() needs to rebuild the object.
    groups["posterior"].attrs[_DIAGNOSTICS_ATTR] = json.dumps(plain)
    # Compressed as ArviZ writes it; written by xarray, without importing ArviZ.
    encoding = {
        f"/{name}": {
            key: {"zlib": True}
            for key, values in group.variables.items()
            if np.issubdtype(values.dtype, np.number) or values.dtype == bool
        }
        for name, group in groups.items()
    }
    tree = xr.DataTree.from_dict({f"/{name}": group for name, group in groups.items()})
    tree.to_netcdf(path, engine="h5netcdf", encoding=encoding)
    return path


def _check_declared_size(path: Path, tree) -> None:
    """Refuse, before reading, a file that declares more than memory can hold.

    A small compressed NetCDF file can declare arrays of hundreds of GiB; read
    eagerly they would exhaust memory (or be killed by the system) before any
    error could name the file. ``tree`` is the file opened lazily.
    """
    declared = sum(node.dataset.nbytes for node in tree.subtree)
    limit = memory_bytes() // 2
    if declared > limit:
        raise _fail(
            path,
            f"declares {declared / 2**30:,.1f} GiB of arrays; half this machine's memory is "
            f"{limit / 2**30:,.1f} GiB",
        )


def load(path: str | os.PathLike) -> KernelPosterior:
    """Read a posterior written by :func:`save` (or ``bayeskernel fit``).

    Parameters
    ----------
    path : str or path-like
        A NetCDF file.

    Returns
    -------
    KernelPosterior
        Same draws, hence the same means and intervals; with the data ``A`` and
        ``B`` when the file holds them.

    Raises
    ------
    InputError
        Missing file, or a file that is not a bayeskernel posterior.
    """
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected a posterior .nc written by fit)")
    try:
        tree = xr.open_datatree(path, engine="h5netcdf")  # lazy: nothing read yet
    except (OSError, ValueError) as error:
        raise _fail(path, f"is not a readable NetCDF file ({error})") from None
    with tree:
        _check_declared_size(path, tree)
        try:
            # Eager: read everything and close the file (it may be overwritten later).
            groups = {name: node.to_dataset().load() for name, node in tree.children.items()}
        except (OSError, ValueError) as error:
            raise _fail(path, f"is not a readable NetCDF file ({error})") from None
        except MemoryError:
            raise _fail(path, "declares arrays too large for this machine's memory") from None
    posterior = groups.get("posterior")
    needed = ("kernel", "noise_sigma", "kernel_scale")
    if posterior is None or any(name not in posterior for name in needed):
        raise _fail(
            path, "is not a bayeskernel posterior (needs variables " + ", ".join(needed) + ")"
        )
    attrs = dict(posterior.attrs)
    sample_stats = groups.get("sample_stats")
    stats = (
        {name: np.asarray(values) for name, values in sample_stats.data_vars.items()}
        if sample_stats is not None
        else {}
    )
    image = _data(groups, "constant_data", "A")
    observed = _data(groups, "observed_data", "B")
    # A parametric prior's named parameters (e.g. a Gaussian's width) beside the kernel.
    parameters = {
        name: np.asarray(values) for name, values in posterior.data_vars.items()
        if name not in needed and name not in ("background", "kernel_field")
    }  # fmt: skip
    background = posterior["background"] if "background" in posterior else None
    field = posterior["kernel_field"] if "kernel_field" in posterior else None
    if field is not None and "field_shape" not in attrs:
        raise _fail(path, "has a kernel_field but no field_shape attribute (its grid)")
    return KernelPosterior(
        kernel_draws=posterior["kernel"].values,
        noise_sigma_draws=posterior["noise_sigma"].values,
        kernel_scale_draws=posterior["kernel_scale"].values,
        method=str(attrs.get("method", "unknown")),
        prior=str(attrs.get("prior", "unknown")),
        mode=str(attrs.get("mode", "same")),
        diagnostics=json.loads(attrs.get(_DIAGNOSTICS_ATTR, "{}")),
        sample_stats=stats,
        parameter_draws=parameters,
        image=image,
        observed=observed,
        noise_weights=_data(groups, "constant_data", "weights"),
        background_draws=None if background is None else background.values,
        background_terms=(
            () if background is None else tuple(map(str, background["background_term"].values))
        ),
        field_draws=None if field is None else field.values,
        field_terms=() if field is None else tuple(map(str, field["field_term"].values)),
        field_shape=(
            None if field is None else tuple(int(n) for n in np.ravel(attrs["field_shape"]))
        ),
        oversample=(
            tuple(int(n) for n in np.ravel(attrs["oversample"])) if "oversample" in attrs else None
        ),
    )


def _data(groups: dict, group: str, name: str):
    """One pair's array ``name``, several pairs' ``name_0, name_1, ...`` as a list, or None."""
    if group not in groups:
        return None
    variables = groups[group].data_vars
    if name in variables:
        return variables[name].values
    numbered = sorted(
        (int(key.rsplit("_", 1)[1]), key) for key in variables
        if key.startswith(f"{name}_") and key.rsplit("_", 1)[1].isdigit()
    )  # fmt: skip
    return [variables[key].values for _, key in numbered] or None
