"""FITS input and output (astropy)."""

import numpy as np
import pytest

import bayeskernel as bk
from bayeskernel.fits import read_image, write_kernel
from bayeskernel.io import InputError, read_array

fits = pytest.importorskip("astropy.io.fits")


def _write(path, image, **planes):
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(image, name="SCI")]
    hdus += [fits.ImageHDU(value, name=name.upper()) for name, value in planes.items()]
    fits.HDUList(hdus).writeto(path)
    return path


def test_the_image_and_its_planes_are_read(tmp_path, rng):
    image = rng.normal(size=(6, 7))
    variance = rng.uniform(1, 2, (6, 7))
    dq = np.zeros((6, 7), np.int16)
    dq[2, 3] = 4  # a flagged pixel
    path = _write(tmp_path / "b.fits.gz", image, variance=variance, dq=dq)
    found = read_image(path)
    assert found.hdu == "SCI"  # the empty primary HDU and the planes are skipped
    np.testing.assert_array_equal(found.data, image)
    np.testing.assert_array_equal(found.variance, variance)
    assert found.weights is None and found.mask.sum() == 41 and not found.mask[2, 3]
    np.testing.assert_array_equal(read_array(path, hdu="sci"), image)
    np.testing.assert_array_equal(read_array(path, hdu=1), image)
    np.testing.assert_array_equal(read_array(path, hdu="VARIANCE"), variance)


def test_a_missing_hdu_or_image_is_named(tmp_path, rng):
    path = _write(tmp_path / "b.fits", rng.normal(size=(4, 4)))
    with pytest.raises(InputError, match=r"b.fits: has no HDU named 'SCIENCE' \(HDUs 0: PRIMARY"):
        read_array(path, hdu="SCIENCE")
    with pytest.raises(InputError, match="has no HDU 7"):
        read_array(path, hdu=7)
    with pytest.raises(InputError, match=r"HDU 'PRIMARY' holds no data; expected a 2D image"):
        read_array(path, hdu=0)
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((2, 3, 4))).writeto(cube)
    with pytest.raises(InputError, match="holds no 2D image"):
        read_array(cube)
    with pytest.raises(InputError, match="only FITS files have HDUs"):
        np.save(tmp_path / "a.npy", np.ones((3, 3)))
        read_array(tmp_path / "a.npy", hdu="SCI")
    (tmp_path / "junk.fits").write_bytes(b"not fits")
    with pytest.raises(InputError, match="junk.fits: could not be read as FITS"):
        read_array(tmp_path / "junk.fits")


def test_the_kernel_is_written_with_its_uncertainty(tmp_path):
    case = bk.simulate((16, 16), "gaussian", (5, 5), noise_sigma=0.05, seed=0)
    post = bk.fit(case.A, case.B + 1, (5, 5), prior="smooth", background=0, num_samples=20,
                  progress_bar=False)  # fmt: skip
    path = write_kernel(post, tmp_path / "kernel.fits", prob=0.9)
    with fits.open(path) as hdus:
        assert [h.name for h in hdus] == ["PRIMARY", "MEAN", "SD", "LOWER", "UPPER"]
        np.testing.assert_array_equal(hdus["MEAN"].data, post.kernel_mean)
        np.testing.assert_array_equal(hdus["LOWER"].data, post.interval(0.9)[0])
        header = hdus[0].header
        assert header["PRIOR"] == "smooth" and header["PROB"] == 0.9 and header["BKG_0"] == "1"
        assert header["BKGM_0"] == pytest.approx(float(post.background_mean[0]))


def test_a_long_prior_label_is_written_whole_without_a_warning(tmp_path):
    import dataclasses
    import warnings

    case = bk.simulate((16, 16), "gaussian", (5, 5), noise_sigma=0.05, seed=0)
    post = bk.fit(case.A, case.B, (5, 5), prior="smooth", num_samples=5, progress_bar=False)
    label = "average(radial 0.865, radial+smooth 0.122, radial+smooth2 0.0127, smooth 0.001)"
    post = dataclasses.replace(post, prior=label)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # astropy warned that the card was too long
        path = write_kernel(post, tmp_path / "kernel.fits")
    with fits.open(path) as hdus:
        assert hdus[0].header["PRIOR"] == label


def test_the_command_line_reads_fits_planes_and_writes_kernel_fits(tmp_path):
    import subprocess
    import sys

    case = bk.simulate((24, 24), "gaussian", (5, 5), noise_sigma=0.05, seed=3)
    variance = np.full(case.B.shape, 0.05**2)
    mask = np.zeros(case.B.shape, np.uint8)
    mask[0, :5] = 1
    _write(tmp_path / "B.fits", case.B + 2.0, variance=variance, mask=mask)
    fits.PrimaryHDU(case.A).writeto(tmp_path / "A.fits")
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "bayeskernel.cli", "fit", str(tmp_path / "A.fits"),
         str(tmp_path / "B.fits"), "--kernel-shape", "5", "5", "--prior", "smooth",
         "--background", "0", "--plots", "none", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={"JAX_PLATFORMS": "cpu", "BAYESKERNEL_COMPILATION_CACHE": "0", "PATH": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "using its VARIANCE plane as --variance" in result.stderr
    assert "its MASK plane leaves 5 pixels out" in result.stderr
    loaded = bk.load(out / "posterior.nc")
    assert 0.7 < loaded.noise_sigma < 1.4 and np.isnan(loaded.observed[0, :5]).all()
    with fits.open(out / "kernel.fits") as hdus:
        np.testing.assert_allclose(hdus["MEAN"].data, loaded.kernel_mean)
