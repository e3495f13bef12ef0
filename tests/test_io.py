"""Reading arrays from every supported format; the NetCDF round trip of a posterior."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

import bayeskernel as bk
from bayeskernel.io import InputError, load, read_array, save


@pytest.fixture
def array(rng):
    return rng.normal(size=(6, 7))


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv", ".txt", ".tsv", ".tif", ".tiff"])
def test_float_formats_round_trip(array, suffix, tmp_path):
    path = tmp_path / f"data{suffix}"
    if suffix == ".npy":
        np.save(path, array)
    elif suffix == ".npz":
        np.savez(path, only=array)
    elif suffix == ".csv":
        np.savetxt(path, array, delimiter=",", fmt="%.17g")
    elif suffix == ".tsv":
        np.savetxt(path, array, delimiter="\t", fmt="%.17g")
    elif suffix == ".txt":
        np.savetxt(path, array, fmt="%.17g")
    else:
        tifffile.imwrite(path, array)
    result = read_array(path)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize("mode,dtype,top", [("L", np.uint8, 255), ("I;16", np.uint16, 60000)])
def test_greyscale_png_keeps_its_values(mode, dtype, top, tmp_path, rng):
    pixels = rng.integers(0, top, size=(5, 9)).astype(dtype)
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)
    np.testing.assert_array_equal(read_array(path), pixels.astype(float))


def test_grey_saved_as_rgb_png_reads_as_one_channel(tmp_path, rng):
    grey = rng.integers(0, 2, size=(4, 4)).astype(np.uint8) * 255
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_array(tmp_path / "rgb.png"), grey)


def test_png_palette_and_alpha(tmp_path, rng):
    grey = rng.integers(0, 256, size=(4, 4)).astype(np.uint8)
    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_array(tmp_path / "palette.png"), grey)
    Image.fromarray(grey).convert("LA").save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(read_array(tmp_path / "opaque.png"), grey)
    see_through = np.stack([grey, np.full_like(grey, 100)], axis=-1)
    Image.fromarray(see_through, mode="LA").save(tmp_path / "alpha.png")
    with pytest.raises(InputError, match="transparent image"):
        read_array(tmp_path / "alpha.png")


def test_single_row_text_is_2d(tmp_path):
    (tmp_path / "row.csv").write_text("1, 2, 3\n")
    assert read_array(tmp_path / "row.csv").shape == (1, 3)


def test_npz_picks_by_key_or_role(array, tmp_path):
    path = tmp_path / "case.npz"
    np.savez(path, A=array, B=2 * array)
    np.testing.assert_array_equal(read_array(path, role="B"), 2 * array)
    np.testing.assert_array_equal(read_array(path, key="A", role="B"), array)


def test_nan_allowed_only_where_asked(array, tmp_path):
    array[1, 2] = np.nan
    np.save(tmp_path / "b.npy", array)
    assert np.isnan(read_array(tmp_path / "b.npy", allow_nan=True)[1, 2])
    with pytest.raises(InputError, match=r"b\.npy: contains 1 NaN value\(s\); A must be fully"):
        read_array(tmp_path / "b.npy", role="A")


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        content(path)
    return path


@pytest.mark.parametrize(
    "name,content,kwargs,message",
    [
        ("missing.npy", None, {}, r"missing\.npy: no such file"),
        ("a.xyz", "1 2", {}, r"unknown file type '\.xyz'; expected one of \.npy"),
        ("a.csv", "1,2\nx,3\n", {}, "is not a table of numbers"),
        ("a.csv", "1,2\n3\n", {}, "is not a table of numbers"),
        ("a.npy", b"not numpy", {}, r"could not be read as \.npy"),
        ("a.tif", b"not a tiff", {}, "is not a readable TIFF"),
        ("a.png", b"not a png", {}, "is not a readable PNG"),
        ("a.npy", lambda p: np.save(p, np.ones((2, 3, 4))), {},
         r"shape \(2, 3, 4\); expected a 2D"),
        ("a.npy", lambda p: np.save(p, np.ones(3)), {}, "expected a 2D array"),
        ("a.npy", lambda p: np.save(p, np.zeros((0, 3))), {}, "empty array"),
        ("a.npy", lambda p: np.save(p, np.array([["a"]])), {}, "expected real numbers"),
        ("a.npy", lambda p: np.save(p, np.ones((2, 2)) * 1j), {}, "complex values"),
        ("a.npy", lambda p: np.save(p, np.full((2, 2), np.inf)), {}, "4 infinite value"),
        ("a.npz", lambda p: np.savez(p, x=np.ones((2, 2)), y=np.ones((2, 2))), {},
         r"holds 2 arrays \['x', 'y'\]; choose one with --key"),
        ("a.npz", lambda p: np.savez(p, x=np.ones((2, 2))), {"key": "z"},
         r"has no array named 'z'; it holds \['x'\]"),
        ("a.npy", lambda p: np.save(p, np.ones((2, 2))), {"key": "z"},
         "only .npz archives hold named arrays"),
        ("a.png", lambda p: Image.fromarray(
            np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(p), {},
         r"is a colour or transparent image \(3 channels\); expected a single-channel"),
    ],
)  # fmt: skip
def test_bad_files_get_one_line_naming_them(name, content, kwargs, message, tmp_path):
    path = tmp_path / name if content is None else _write(tmp_path, name, content)
    with pytest.raises(InputError, match=message) as info:
        read_array(path, **kwargs)
    text = str(info.value)
    assert text.startswith(str(path)) and "\n" not in text


def test_a_folder_is_not_a_file(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        read_array(tmp_path)


# --- NetCDF round trip -----------------------------------------------------------------


@pytest.fixture(scope="module")
def posterior():
    case = bk.simulate((20, 20), "gaussian", (5, 5), noise_sigma=0.05, seed=4)
    observed = case.B.copy()
    observed[3, 4] = np.nan  # an unobserved pixel must survive the trip
    return bk.fit(
        case.A, observed, (5, 5), prior="smooth", method="map", num_samples=30, progress_bar=False
    )


def test_netcdf_round_trip_keeps_means_intervals_and_data(posterior, tmp_path):
    path = save(posterior, tmp_path / "posterior.nc")
    loaded = bk.load(path)
    assert isinstance(loaded, bk.KernelPosterior)
    np.testing.assert_array_equal(loaded.kernel_mean, posterior.kernel_mean)
    for got, expected in zip(loaded.interval(0.9), posterior.interval(0.9)):
        np.testing.assert_array_equal(got, expected)
    assert loaded.noise_sigma == posterior.noise_sigma
    assert loaded.noise_sigma_interval() == posterior.noise_sigma_interval()
    assert (loaded.method, loaded.prior, loaded.mode) == ("map", posterior.prior, "same")
    np.testing.assert_array_equal(loaded.image, posterior.image)
    np.testing.assert_array_equal(loaded.observed, posterior.observed)  # NaN included
    assert loaded.diagnostics["rank"] == posterior.diagnostics["rank"]
    # As JSON text: the NaN r_hat of method 'map' compares unequal to itself.
    assert json.dumps(loaded.summary(), sort_keys=True) == json.dumps(
        posterior.summary(), sort_keys=True
    )


def test_saved_file_reads_with_arviz_as_the_inference_data(posterior, tmp_path):
    import arviz as az

    path = save(posterior, tmp_path / "posterior.nc")
    idata, expected = az.from_netcdf(str(path)), posterior.to_inference_data()
    assert set(idata.groups()) == set(expected.groups())
    for group in expected.groups():
        got, want = idata[group], expected[group]
        assert dict(got.sizes) == dict(want.sizes)
        for name, values in want.data_vars.items():
            assert got[name].dims == values.dims
            np.testing.assert_array_equal(got[name].values, values.values)
    assert idata.posterior.attrs["method"] == "map"


def test_save_and_load_do_not_import_arviz(posterior, tmp_path):
    # ArviZ's import is a third of a small command-line fit; the file needs only xarray.
    path = save(posterior, tmp_path / "posterior.nc")
    code = (
        "import sys; from bayeskernel.io import load, save; "
        f"p = load({str(path)!r}); save(p, {str(tmp_path / 'again.nc')!r}); p.summary(); "
        "assert 'arviz' not in sys.modules, 'arviz imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_round_trip_keeps_the_prior_weights_of_a_model_average(tmp_path):
    case = bk.simulate((24, 24), "disk", (5, 5), noise_sigma=0.1, seed=0)
    post = bk.fit(case.A, case.B, (5, 5), prior=["radial", "radial1"], num_samples=20,
                  progress_bar=False)  # fmt: skip
    loaded = bk.load(save(post, tmp_path / "average.nc"))
    assert loaded.prior == post.prior and loaded.prior.startswith("average(")
    for name in ("prior_evidence", "prior_weights", "prior_draws"):
        assert loaded.diagnostics[name] == post.diagnostics[name]
    assert "components" not in loaded.diagnostics  # nested: not kept
    assert str(loaded) == str(post)


def test_round_trip_keeps_chains_and_sample_stats(tmp_path, rng):
    diverging = np.zeros((2, 10), dtype=bool)
    diverging[1, 3] = True
    original = bk.KernelPosterior(
        kernel_draws=rng.normal(size=(2, 10, 3, 4)).astype(np.float32),
        noise_sigma_draws=rng.uniform(1, 2, (2, 10)),
        kernel_scale_draws=rng.uniform(1, 2, (2, 10)),
        method="exact", prior="iid", mode="valid",
        sample_stats={"diverging": diverging},
    )  # fmt: skip
    loaded = load(save(original, tmp_path / "p.nc"))
    assert loaded.kernel_draws.shape == (2, 10, 3, 4)
    assert loaded.kernel_draws.dtype == np.float32
    np.testing.assert_array_equal(loaded.sample_stats["diverging"], diverging)
    assert loaded.image is None and loaded.observed is None
    assert loaded.mode == "valid"


def test_round_trip_of_several_pairs_keeps_each_pair(tmp_path):
    first = bk.simulate((16, 16), "gaussian", (5, 5), noise_sigma=0.05, seed=1)
    second = bk.simulate((12, 14), "gaussian", (5, 5), noise_sigma=0.05, seed=2)
    post = bk.fit([first.A, second.A], [first.B, second.B], (5, 5), prior="smooth",
                  num_samples=5, progress_bar=False)  # fmt: skip
    loaded = load(save(post, tmp_path / "pairs.nc"))
    assert isinstance(loaded.image, list) and len(loaded.image) == 2
    for got, want in zip(loaded.image, [first.A, second.A], strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(loaded.observed, [first.B, second.B], strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded.kernel_draws, post.kernel_draws)


def test_round_trip_keeps_parameter_draws(tmp_path, rng):
    width = rng.uniform(1, 2, (2, 10))
    original = bk.KernelPosterior(
        kernel_draws=rng.normal(size=(2, 10, 3, 3)),
        noise_sigma_draws=rng.uniform(1, 2, (2, 10)),
        kernel_scale_draws=rng.uniform(1, 2, (2, 10)),
        method="nuts", prior="gaussian", mode="same", parameter_draws={"width": width},
    )  # fmt: skip
    loaded = load(save(original, tmp_path / "p.nc"))
    assert set(loaded.parameter_draws) == {"width"}
    np.testing.assert_array_equal(loaded.parameter_draws["width"], width)


def test_load_refuses_what_is_not_a_posterior(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load(tmp_path / "missing.nc")
    (tmp_path / "junk.nc").write_bytes(b"junk")
    with pytest.raises(InputError, match="is not a readable NetCDF"):
        load(tmp_path / "junk.nc")


def test_a_multi_page_tiff_is_refused_not_read_as_its_first_page(tmp_path):
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(np.zeros((4, 4)))
        tiff.write(np.ones((4, 4)))
    with pytest.raises(InputError, match=r"stack.tif: holds 2 pages; expected a single-page TIFF"):
        read_array(path)


def test_files_declaring_huge_arrays_get_one_line(tmp_path, monkeypatch):
    # A 200-byte .npy whose header declares 10^10 float64 values.
    path = tmp_path / "huge.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f8", "fortran_order": False, "shape": (100_000, 100_000)}
        )
        fh.write(b"0" * 100)
    with pytest.raises(InputError, match=r"huge.npy: (declares an array too large|could not be)"):
        read_array(path)
    # A decompression bomb: more pixels than Pillow allows (its limit lowered here).
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match=r"bomb.png: is not a readable PNG image"):
        read_array(tmp_path / "bomb.png")


def _netcdf_declaring(path, shape):
    """A small compressed NetCDF file whose one variable declares ``shape`` float64."""
    import h5netcdf

    dims = ("chain", "draw", "kernel_row", "kernel_col")
    with h5netcdf.File(path, "w") as handle:
        group = handle.create_group("posterior")
        group.dimensions = dict(zip(dims, shape))
        group.create_variable("kernel", dims, "f8", chunks=(1, 1, *shape[2:]), compression="gzip")
    return path


def test_a_netcdf_file_declaring_huge_arrays_is_refused_before_reading(tmp_path, monkeypatch):
    # 7 kB on disk, 745 GiB declared: refused with the number, not a MemoryError.
    huge = _netcdf_declaring(tmp_path / "huge.nc", (4, 100_000, 500, 500))
    assert huge.stat().st_size < 100_000
    with pytest.raises(InputError, match=r"huge.nc: declares 745.1 GiB of arrays; half this"):
        load(huge)
    # The guard reads the declaration, not the allocation: 80 MB declared on a
    # machine told it has 100 MB is refused before anything is read.
    modest = _netcdf_declaring(tmp_path / "modest.nc", (1, 40, 500, 500))
    monkeypatch.setattr(bk.io, "memory_bytes", lambda: 100 * 2**20)
    with pytest.raises(InputError, match=r"modest.nc: declares 0.1 GiB of arrays"):
        load(modest)


def test_round_trip_keeps_per_pair_noise(tmp_path, rng):
    sigma = rng.uniform(1, 2, (2, 10, 3))  # one noise sd per image pair
    original = bk.KernelPosterior(
        kernel_draws=rng.normal(size=(2, 10, 3, 3)),
        noise_sigma_draws=sigma,
        kernel_scale_draws=rng.uniform(1, 2, (2, 10)),
        method="nuts", prior="smooth", mode="same",
    )  # fmt: skip
    loaded = load(save(original, tmp_path / "p.nc"))
    assert loaded.noise_per_pair
    np.testing.assert_array_equal(loaded.noise_sigma_draws, sigma)
    np.testing.assert_array_equal(loaded.kernel_draws, original.kernel_draws)
