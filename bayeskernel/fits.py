"""FITS files through astropy: images with their variance, weight and mask planes; kernels out.

Astronomers keep an image and what is known about its pixels in one file: the
science image in one HDU (header-data unit) and, beside it, extensions named
``VARIANCE`` (or ``VAR``), ``WEIGHT`` (``WHT``, ``IVAR``: inverse variance) and
``MASK`` (``DQ``, ``BPM``: nonzero marks a bad pixel). :func:`read_image` reads
the image and those planes; :func:`write_kernel` writes a fitted kernel with its
uncertainty as ``MEAN``, ``SD``, ``LOWER`` and ``UPPER`` extensions and the fit's
settings in the header.

astropy is an optional dependency (``pip install 'bayeskernel[fits]'``); it is
imported when a FITS file is read or written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FITS_SUFFIXES",
    "FitsImage",
    "is_fits",
    "read_image",
    "write_kernel",
    "write_kernel_field",
]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
# Extension names of the per-pixel planes, as the common pipelines write them.
PLANES = {
    "variance": ("VARIANCE", "VAR"),
    "weights": ("WEIGHT", "WHT", "IVAR", "INVVAR"),
    "mask": ("MASK", "DQ", "BPM"),
}


class FitsError(ValueError):
    """A FITS file without what was asked for (same contract as ``io.InputError``)."""


@dataclass(frozen=True)
class FitsImage:
    """One image and the planes found beside it.

    Attributes
    ----------
    data : (M, N) float64 ndarray
    hdu : str
        Which HDU the image came from (name, or index for unnamed ones).
    variance, weights : (M, N) ndarray or None
    mask : (M, N) bool ndarray or None
        ``True`` where the pixel is good (the planes' nonzero entries are bad).
    """

    data: np.ndarray
    hdu: str
    variance: np.ndarray | None = None
    weights: np.ndarray | None = None
    mask: np.ndarray | None = None


def is_fits(path: str | os.PathLike) -> bool:
    """Whether the file name ends like a FITS file (compressed or not).

    Parameters
    ----------
    path : str or path-like
        Only the name is read (any case): ``.fits``, ``.fit``, ``.fts``, each
        also with ``.gz``.

    Returns
    -------
    bool
    """
    return str(path).lower().endswith(FITS_SUFFIXES)


def _astropy_fits():
    try:
        from astropy.io import fits
    except ImportError:
        raise FitsError(
            "reading and writing FITS needs astropy: pip install 'bayeskernel[fits]'"
        ) from None
    return fits


def _label(hdus, index: int) -> str:
    return hdus[index].name or str(index)


def read_image(path: str | os.PathLike, hdu: str | int | None = None) -> FitsImage:
    """The 2D image of a FITS file, with its variance, weight and mask planes.

    Parameters
    ----------
    path : str or path-like
    hdu : str or int, optional
        The image's HDU, by name (case-insensitive) or index. Default: the
        first HDU with a 2D image that is not a variance, weight or mask plane.

    Returns
    -------
    FitsImage

    Raises
    ------
    FitsError
        No such HDU, no 2D image, or an unreadable file; the message names the
        file and lists the HDUs it has.
    """
    fits = _astropy_fits()
    path = Path(path)
    planes = {name for names in PLANES.values() for name in names}
    try:
        with fits.open(path, memmap=False) as hdus:
            names = [_label(hdus, i) for i in range(len(hdus))]
            found = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
            if hdu is None:
                choices = [
                    i for i, h in enumerate(hdus)
                    if getattr(h, "data", None) is not None and np.ndim(h.data) == 2
                    and h.name.upper() not in planes
                ]  # fmt: skip
                if not choices:
                    raise FitsError(f"{path}: holds no 2D image (HDUs {found})")
                index = choices[0]
            else:
                index = _find(hdus, hdu, path, found)
            data = hdus[index].data
            if data is None or np.ndim(data) != 2:
                shape = None if data is None else np.shape(data)
                raise FitsError(
                    f"{path}: HDU {names[index]!r} holds {shape or 'no data'}; expected a 2D image"
                )
            image = np.asarray(data, dtype=np.float64)
            found_planes = {}
            for role, aliases in PLANES.items():
                for alias in aliases:
                    if alias in hdus:
                        plane = np.asarray(hdus[alias].data, dtype=np.float64)
                        if plane.shape != image.shape:
                            raise FitsError(
                                f"{path}: its {alias} plane has shape {plane.shape}, the image "
                                f"{image.shape}"
                            )
                        found_planes[role] = plane
                        break
    except FitsError:
        raise
    except (OSError, ValueError, TypeError) as error:
        raise FitsError(f"{path}: could not be read as FITS ({error})") from None
    mask = found_planes.get("mask")
    return FitsImage(
        data=image,
        hdu=names[index],
        variance=found_planes.get("variance"),
        weights=found_planes.get("weights"),
        mask=None if mask is None else (mask == 0),
    )


def _find(hdus, hdu, path: Path, found: str) -> int:
    if isinstance(hdu, str) and hdu.strip().lstrip("-").isdigit():
        hdu = int(hdu)
    if isinstance(hdu, int):
        if not 0 <= hdu < len(hdus):
            raise FitsError(f"{path}: has no HDU {hdu} (HDUs {found})")
        return hdu
    for index, item in enumerate(hdus):
        if item.name.upper() == str(hdu).upper():
            return index
    raise FitsError(f"{path}: has no HDU named {hdu!r} (HDUs {found})")


def write_kernel(posterior, path: str | os.PathLike, prob: float = 0.95) -> Path:
    """Write the kernel's posterior mean, sd and interval as FITS image extensions.

    Parameters
    ----------
    posterior : KernelPosterior
    path : str or path-like
    prob : float
        Probability of the ``LOWER`` .. ``UPPER`` interval.

    Returns
    -------
    Path
        The file: an empty primary HDU whose header holds the fit's settings
        (``PRIOR``, ``METHOD``, ``MODE``, ``NOISESIG``, ``PROB``, background
        terms ``BKG_<i>`` with their means ``BKGM_<i>``), then ``MEAN``, ``SD``,
        ``LOWER``, ``UPPER`` (float64, the kernel's shape).
    """
    fits = _astropy_fits()
    lower, upper = posterior.interval(prob)
    header = fits.Header()
    # Whole: a model average's label runs past one card (astropy continues it).
    header["PRIOR"] = (str(posterior.prior), "kernel prior")
    header["METHOD"] = (posterior.method, "inference route")
    header["MODE"] = (posterior.mode, "convolve2d mode of B")
    header["KROWS"], header["KCOLS"] = posterior.kernel_shape
    noise = np.atleast_1d(posterior.noise_sigma)
    for i, value in enumerate(noise):
        header[f"NOISESG{i}" if noise.size > 1 else "NOISESIG"] = (float(value), "noise sd")
    header["PROB"] = (float(prob), "probability of LOWER..UPPER")
    header["DRAWS"] = (posterior.num_chains * posterior.num_draws, "posterior draws")
    if posterior.background_draws is not None:
        means = np.atleast_2d(posterior.background_mean)
        for i, term in enumerate(posterior.background_terms):
            header[f"BKG_{i}"] = (term, "background term")
            header[f"BKGM_{i}"] = (float(means[0, i]), "its posterior mean (pair 0)")
    hdus = [fits.PrimaryHDU(header=header)]
    for name, array in (
        ("MEAN", posterior.kernel_mean), ("SD", posterior.kernel_sd),
        ("LOWER", lower), ("UPPER", upper),
    ):  # fmt: skip
        hdus.append(fits.ImageHDU(np.asarray(array, dtype=np.float64), name=name))
    path = Path(path)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def write_kernel_field(posterior, path: str | os.PathLike, grid: int = 5, prob: float = 0.95):
    """Write a spatially varying kernel on a lattice of positions as FITS cubes.

    Parameters
    ----------
    posterior : KernelPosterior
        With a field (``fit(..., spatial_order=d)``).
    path : str or path-like
    grid : int
        Positions per side (:meth:`KernelPosterior.field_grid`).
    prob : float

    Returns
    -------
    Path
        The file: a primary HDU whose header has ``PRIOR``, ``MODE``,
        ``GRID``, ``PROB``, ``FTERM_<f>`` (the components' monomials),
        ``ROW_<i>`` and ``COL_<j>`` (the lattice, pixels of ``B``); then
        ``MEAN``, ``SD``, ``LOWER``, ``UPPER`` of shape ``(grid, grid, P, Q)``
        (NumPy order; FITS axes reversed) and ``COMPONENTS`` ``(F, P, Q)``.
    """
    fits = _astropy_fits()
    table = posterior.field_grid(grid, prob)
    header = fits.Header()
    # Whole: a model average's label runs past one card (astropy continues it).
    header["PRIOR"] = (str(posterior.prior), "kernel prior")
    header["MODE"] = (posterior.mode, "convolve2d mode of B")
    header["GRID"] = (int(grid), "positions per side")
    header["PROB"] = (float(prob), "probability of LOWER..UPPER")
    for i, term in enumerate(posterior.field_terms):
        header[f"FTERM_{i}"] = (term, "field component monomial")
    for i, row in enumerate(table["rows"]):
        header[f"ROW_{i}"] = (float(row), "lattice row (pixel of B)")
    for j, col in enumerate(table["cols"]):
        header[f"COL_{j}"] = (float(col), "lattice column (pixel of B)")
    hdus = [fits.PrimaryHDU(header=header)]
    for name in ("mean", "sd", "lower", "upper", "components"):
        hdus.append(fits.ImageHDU(np.asarray(table[name], np.float64), name=name.upper()))
    path = Path(path)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
