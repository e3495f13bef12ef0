"""The ``bayeskernel`` command end to end, through a subprocess, on small files."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

import bayeskernel as bk
from bayeskernel import plots
from bayeskernel.catalogue import AUTO_PRIORS, ELLIPTICAL_CANDIDATES
from bayeskernel.cli import build_parser

KERNEL = ("--kernel-shape", "5", "5")
QUICK = ("--method", "map", "--samples", "20", "--quiet")


_jax_cache = {}


@pytest.fixture(scope="module", autouse=True)
def jax_cache(tmp_path_factory):
    # Each subprocess compiles the same small programs: share them (saves 1-3 s a run).
    _jax_cache["dir"] = str(tmp_path_factory.mktemp("jax_cache"))
    yield
    _jax_cache.clear()


def run(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    # The command's own cache, in a temporary folder rather than the user's.
    env["BAYESKERNEL_COMPILATION_CACHE"] = _jax_cache.get("dir", "0")
    return subprocess.run(
        [sys.executable, "-m", "bayeskernel.cli", *map(str, args)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )  # fmt: skip


def assert_ok(result):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    result = run(
        "simulate", "--out", folder, "--image-shape", 24, 24, *KERNEL, "--noise-sigma", 0.05,
        "--seed", 2,
    )  # fmt: skip
    assert_ok(result)
    assert "next: bayeskernel fit" in result.stdout
    return folder


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """A full fit from .npy files, with figures."""
    out = tmp_path_factory.mktemp("reference")
    result = run(
        "fit", data / "A.npy", data / "B.npy", *KERNEL, "--prior", "smooth", "--method", "map",
        "--samples", 30, "--true-kernel", data / "kernel.npy", "--out", out,
    )  # fmt: skip
    assert_ok(result)
    return out, result


def test_simulate_writes_a_consistent_case(data):
    A, B, kernel = (np.load(data / f"{name}.npy") for name in ("A", "B", "kernel"))
    case = json.loads((data / "case.json").read_text())
    assert A.shape == B.shape == (24, 24) and kernel.shape == (5, 5)
    assert case["noise_sigma"] == 0.05 and case["mode"] == "same"
    expected = bk.simulate((24, 24), "gaussian", (5, 5), noise_sigma=0.05, seed=2)
    np.testing.assert_array_equal(B, expected.B)


def test_fit_writes_every_result(reference):
    out, result = reference
    names = {p.name for p in out.iterdir()}
    assert {
        "posterior.nc", "kernel_mean.npy", "kernel_sd.npy", "kernel_lower.npy",
        "kernel_upper.npy", "summary.json", "plots",
    } <= names  # fmt: skip
    figures = sorted(p.name for p in (out / "plots").iterdir())
    assert figures == sorted(f"{name}.png" for name in plots.REPORT_FIGURES)
    assert all((out / "plots" / name).stat().st_size > 5000 for name in figures)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kernel_shape"] == [5, 5] and summary["method"] == "map"
    assert summary["inputs"]["A_shape"] == [24, 24]
    assert isinstance(summary["warnings"], list)
    assert summary["convergence"]["noise_sigma"]["r_hat"] is None  # NaN written as null
    assert "KernelPosterior: 5x5 kernel" in result.stdout
    assert "fitting a 5x5 kernel" in result.stderr  # progress on stderr


def test_fitted_netcdf_loads_back_to_the_same_means_and_intervals(reference):
    out, _ = reference
    posterior = bk.load(out / "posterior.nc")
    np.testing.assert_array_equal(posterior.kernel_mean, np.load(out / "kernel_mean.npy"))
    lower, upper = posterior.interval(0.95)
    np.testing.assert_array_equal(lower, np.load(out / "kernel_lower.npy"))
    np.testing.assert_array_equal(upper, np.load(out / "kernel_upper.npy"))
    summary = json.loads((out / "summary.json").read_text())
    assert posterior.noise_sigma == summary["noise_sigma"]["mean"]


def _write_formats(data, folder, a_format, b_format):
    A, B = np.load(data / "A.npy"), np.load(data / "B.npy")
    paths = []
    for name, array, fmt in (("A", A, a_format), ("B", B, b_format)):
        path = folder / f"{name}.{fmt}"
        if fmt == "png":
            Image.fromarray(array.astype(np.uint8)).save(path)  # A is 0/1
        elif fmt == "tif":
            tifffile.imwrite(path, array)
        elif fmt == "csv":
            np.savetxt(path, array, delimiter=",", fmt="%.17g")
        elif fmt == "txt":
            np.savetxt(path, array, fmt="%.17g")
        elif fmt == "npz":
            path = folder / "case.npz"
            np.savez(path, A=A, B=B)  # one archive; each side picks its own array
        paths.append(path)
    return paths


@pytest.mark.parametrize("a_format,b_format", [("png", "tif"), ("txt", "csv"), ("npz", "npz")])
def test_fit_reads_every_format(data, reference, a_format, b_format, tmp_path):
    a_path, b_path = _write_formats(data, tmp_path, a_format, b_format)
    out = tmp_path / "out"
    # One run also writes the PDF report; the others skip figures to stay quick.
    figures = "pdf" if a_format == "npz" else "none"
    result = run("fit", a_path, b_path, *KERNEL, "--samples", 30, "--prior", "smooth",
                 "--method", "map", "--plots", figures, "--quiet", "--out", out)  # fmt: skip
    assert_ok(result)
    # Same numbers in, same seed: the same posterior as from the .npy files.
    np.testing.assert_allclose(
        np.load(out / "kernel_mean.npy"), np.load(reference[0] / "kernel_mean.npy"), rtol=1e-9
    )
    assert not (out / "plots").exists()
    if figures == "pdf":
        assert (out / "report.pdf").read_bytes().startswith(b"%PDF")


def test_fit_averages_over_priors_by_default(data, tmp_path):
    out = tmp_path / "out"
    result = run("fit", data / "A.npy", data / "B.npy", *KERNEL, "--samples", 30, "--plots",
                 "none", "--quiet", "--out", out)  # fmt: skip
    assert_ok(result)
    summary = json.loads((out / "summary.json").read_text())
    weights = summary["prior_weights"]
    # The elliptical pair joins unless the search finds the kernel round.
    assert set(AUTO_PRIORS) <= set(weights) <= set(AUTO_PRIORS) | set(ELLIPTICAL_CANDIDATES)
    assert sum(weights.values()) == pytest.approx(1) and summary["method"] == "exact"


def test_default_priors_of_fit_and_demo():
    parser = build_parser()
    fit = parser.parse_args(["fit", "A.npy", "B.npy", *KERNEL, "--out", "out"])
    demo = parser.parse_args(["demo"])
    assert fit.prior == "auto" and demo.prior == "auto"
    assert not fit.no_compilation_cache and not demo.no_compilation_cache


def test_demo_runs_small(tmp_path):
    result = run("demo", "--size", 6, "--samples", 20, "--quiet", "--out", tmp_path)
    assert_ok(result)
    report = json.loads((tmp_path / "summary.json").read_text())["demo"]
    assert 0 <= report["coverage_whole"] <= 1 and report["true_noise_sigma"] == 1.0
    assert '"relative_error_central"' in result.stdout
    assert (tmp_path / "plots" / "kernel.png").exists()


def test_help_explains_a_b_modes_and_methods():
    result = run("fit", "--help")
    assert_ok(result)
    for phrase in ("known input image A", "observed output B", "same", "valid", "exact", "map"):
        assert phrase in result.stdout
    assert "simulate" in run("--help").stdout


@pytest.fixture(scope="module")
def bad(data, tmp_path_factory):
    """Broken inputs beside the good ones (finer cases: tests/test_io.py, in-process)."""
    folder = tmp_path_factory.mktemp("bad")
    A = np.load(data / "A.npy")
    nan_a = A.copy()
    nan_a[0, 0] = np.nan
    np.save(folder / "A_nan.npy", nan_a)
    np.save(folder / "B_short.npy", np.zeros((20, 24)))
    np.savez(folder / "two.npz", X=A, Y=A)
    colour = np.zeros((24, 24, 3), dtype=np.uint8)
    colour[..., 2] = 255
    Image.fromarray(colour).save(folder / "colour.png")
    (folder / "words.csv").write_text("a,b\nc,d\n")
    return folder


@pytest.mark.parametrize(
    "args,message",
    [
        (["missing.npy", "{d}/B.npy", *KERNEL], r"^bayeskernel: error: missing.npy: no such file"),
        (["{d}/A.npy", "{b}/B_short.npy", *KERNEL],
         r"B_short.npy: B has shape \(20, 24\), but A \(24, 24\)"),
        (["{b}/A_nan.npy", "{d}/B.npy", *KERNEL], r"A_nan.npy: contains 1 NaN value\(s\)"),
        (["{b}/two.npz", "{d}/B.npy", *KERNEL], r"two.npz: holds 2 arrays \['X', 'Y'\]"),
        (["{b}/colour.png", "{d}/B.npy", *KERNEL], "colour.png: is a colour or transparent image"),
        (["{b}/words.csv", "{d}/B.npy", *KERNEL], "words.csv: is not a table of numbers"),
        (["{d}/A.npy", "{d}/B.npy", "--kernel-shape", "30", "3", "--mode", "valid"],
         "--kernel-shape 30 3 is impossible with --mode valid"),
        (["{d}/A.npy", "{d}/B.npy", *KERNEL, "--prior", "wobbly"], "prior must be one of"),
        (["{d}/A.npy", "{d}/B.npy", "--kernel-shape", "0", "5"],
         "argument --kernel-shape: expected a positive integer, got '0'"),
    ],
)  # fmt: skip
def test_user_errors_give_one_line_and_exit_code_2(data, bad, args, message, tmp_path):
    args = [a.format(d=data, b=bad) for a in args]
    result = run("fit", *args, *QUICK, "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bayeskernel") and ": error: " in last
    assert re.search(message, last), last


def test_simulate_refuses_impossible_shapes(tmp_path):
    result = run("simulate", "--out", tmp_path, "--mode", "valid", "--image-shape", 5, 20)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "impossible for mode='valid'" in result.stderr


def test_fit_solver_and_binary_options(data, tmp_path):
    scaled = tmp_path / "A255.npy"
    np.save(scaled, 255 * np.load(data / "A.npy"))
    out = tmp_path / "out"
    result = run(
        "fit", scaled, data / "B.npy", *KERNEL, *QUICK, "--prior", "smooth", "--solver", "krylov",
        "--binary",
        "--plots", "none", "--out", out,
    )  # fmt: skip
    assert_ok(result)
    assert "bayeskernel: warning: A was declared binary" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diagnostics"]["solver"] == "krylov"
    assert summary["diagnostics"]["cg_max_residual"] <= summary["diagnostics"]["cg_rtol"]


def test_results_are_never_mixed_with_or_lost_to_an_earlier_run(data, tmp_path):
    out = tmp_path / "results"
    fit_args = ("fit", data / "A.npy", data / "B.npy", *KERNEL, "--prior", "smooth", *QUICK)
    assert_ok(run(*fit_args, "--out", out))
    assert (out / "plots").is_dir()
    before = (out / "summary.json").read_bytes()
    # A rerun into the same folder is refused, and leaves it as it was.
    again = run(*fit_args, "--seed", 5, "--out", out)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "is not empty; give --overwrite" in again.stderr
    assert (out / "summary.json").read_bytes() == before
    # --overwrite replaces the folder whole: no figures of the earlier run remain.
    assert_ok(run(*fit_args, "--seed", 5, "--plots", "none", "--overwrite", "--out", out))
    assert not (out / "plots").exists() and (out / "summary.json").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # nothing hidden left
    # --overwrite replaces only earlier results, never another folder's files.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    refused = run(*fit_args, "--overwrite", "--out", other)
    assert refused.returncode == 2 and "holds no bayeskernel results" in refused.stderr
    assert (other / "notes.txt").read_text() == "keep me"
    empty = run(*fit_args, "--out", "")
    assert empty.returncode == 2 and "expected a folder name" in empty.stderr


def test_an_interrupted_write_leaves_nothing_half_written(data, tmp_path, monkeypatch):
    from bayeskernel import cli

    original = cli._write_files

    def interrupted(posterior, out, **kwargs):
        original(posterior, out, **kwargs)
        raise KeyboardInterrupt  # as SIGTERM or Ctrl-C after the files, before the rename

    monkeypatch.setattr(cli, "_write_files", interrupted)
    out = tmp_path / "results"
    code = cli.main(["fit", str(data / "A.npy"), str(data / "B.npy"), *KERNEL, "--prior",
                     "smooth", *QUICK, "--plots", "none", "--out", str(out)])  # fmt: skip
    assert code == 130
    assert list(tmp_path.iterdir()) == []  # no results, no hidden partial folder


def _wait_until_loaded(process, library: str, timeout: float = 60) -> None:
    """Until the process has mapped a shared library whose path holds ``library``."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with open(f"/proc/{process.pid}/maps") as maps:
            if library in maps.read():
                return
        time.sleep(0.005)
    raise AssertionError(f"{library} was never loaded")


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
@pytest.mark.parametrize("delay", [0.0, 1.0])
def test_ctrl_c_at_any_moment_is_one_line_and_exit_130(data, tmp_path, delay):
    # 0 s after JAX's library is mapped: while JAX loads; 1 s: while the fit
    # compiles or runs (JAX's garbage-collector callback runs often then, and
    # an interrupt raised inside it would be dropped).
    import signal
    import time

    env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    env["BAYESKERNEL_COMPILATION_CACHE"] = "0"
    out = tmp_path / "o"
    process = subprocess.Popen(
        [sys.executable, "-m", "bayeskernel.cli", "fit", str(data / "A.npy"), str(data / "B.npy"),
         *KERNEL, "--prior", "smooth", "--quiet", "--out", str(out)],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    _wait_until_loaded(process, "jaxlib")
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip() == "bayeskernel: interrupted", stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_interrupt_inside_a_finaliser_is_delivered_again():
    import signal
    import time

    from bayeskernel import cli

    class Finalised:
        def __del__(self):
            cli._interrupt(signal.SIGINT, sys._getframe())  # as if the signal came now

    previous = signal.signal(signal.SIGINT, cli._interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            Finalised()  # dropped at once: __del__ runs here
            for _ in range(100):
                time.sleep(0.01)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_interrupt_inside_a_garbage_collector_callback_is_delivered_again():
    import gc
    import signal
    import time

    from bayeskernel import cli

    caught = []

    def callback(phase, info):
        if phase == "start" and not caught:
            caught.append("in callback")
            cli._interrupt(signal.SIGINT, sys._getframe())  # as if the signal came now

    previous = signal.signal(signal.SIGINT, cli._interrupt)
    gc.callbacks.append(callback)
    try:
        with pytest.raises(KeyboardInterrupt):
            gc.collect()
            for _ in range(100):  # the redelivered signal arrives in the main thread
                time.sleep(0.01)
    finally:
        gc.callbacks.remove(callback)
        signal.signal(signal.SIGINT, previous)
    assert caught == ["in callback"]


def test_the_same_array_as_a_and_b_is_refused(data, tmp_path):
    result = run("fit", data / "A.npy", data / "A.npy", *KERNEL, *QUICK, "--out", tmp_path / "o")
    assert result.returncode == 2 and "hold the same array" in result.stderr
    assert not (tmp_path / "o").exists()


def test_an_impossible_kernel_shape_is_one_line_not_a_traceback(data, tmp_path):
    result = run("fit", data / "A.npy", data / "B.npy", "--kernel-shape", 1000000, 1000000,
                 "--quiet", "--out", tmp_path / "o")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the data cannot constrain it" in result.stderr


def test_fit_with_a_background_and_a_variance_map(data, tmp_path):
    B = np.load(data / "B.npy")
    np.save(tmp_path / "B_sky.npy", B + 2.5)
    np.save(tmp_path / "variance.npy", np.full(B.shape, 0.05**2))
    out = tmp_path / "results"
    result = run("fit", data / "A.npy", tmp_path / "B_sky.npy", *KERNEL, "--prior", "smooth",
                 "--background", 0, "--variance", tmp_path / "variance.npy", "--plots", "none",
                 "--quiet", "--out", out)  # fmt: skip
    assert_ok(result)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["background"]["terms"] == ["1"]
    assert summary["background"]["lower"][0] < 2.5 < summary["background"]["upper"][0]
    assert 0.7 < summary["noise_sigma"]["mean"] < 1.4  # a scale on the right map
    assert summary["inputs"]["variance"].endswith("variance.npy")
    assert bk.load(out / "posterior.nc").background_terms == ("1",)
    np.save(tmp_path / "small.npy", np.ones((3, 3)))
    wrong = run("fit", data / "A.npy", data / "B.npy", *KERNEL, "--weights", tmp_path / "small.npy",
                "--out", tmp_path / "o")  # fmt: skip
    assert wrong.returncode == 2 and "--weights has shape (3, 3)" in wrong.stderr
    both = run("fit", data / "A.npy", data / "B.npy", *KERNEL, "--weights", tmp_path / "small.npy",
               "--variance", tmp_path / "small.npy", "--out", tmp_path / "o")  # fmt: skip
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
