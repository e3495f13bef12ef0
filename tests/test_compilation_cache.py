"""JAX's persistent compilation cache: where it lives, its off switch, reuse across processes.

Every test keeps the cache (and the caches of matplotlib and ArviZ, which
follow ``XDG_CACHE_HOME``) inside its temporary folder.
"""

import json
import os
import stat
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
import scipy.signal
from jax.experimental.compilation_cache import compilation_cache as jax_cache

import bayeskernel as bk
from bayeskernel.cli import main
from bayeskernel.compilation_cache import (
    ENV_VAR,
    default_cache_dir,
    resolve_cache_dir,
    use_compilation_cache,
)

# Counts the programs a CLI call compiles and those it loads from the cache:
# each XLA compilation request ends in one backend-compile event, and a
# request served from the persistent cache also records a cache hit.
COUNTING_CLI = """
import json, sys
import jax
from jax import monitoring
events = {}
def count(event, *args, **kwargs):
    events[event] = events.get(event, 0) + 1
monitoring.register_event_listener(count)
monitoring.register_event_duration_secs_listener(count)
from bayeskernel.cli import main
code = main(sys.argv[1:])
requests = events.get("/jax/core/compile/backend_compile_duration", 0)
hits = events.get("/jax/compilation_cache/cache_hits", 0)
print(json.dumps({"code": code, "requests": requests, "compiled": requests - hits,
                  "cache_dir": jax.config.jax_compilation_cache_dir}))
"""


@pytest.fixture
def jax_without_cache(monkeypatch, tmp_path):
    """No cache folder in JAX for the test, the process's settings back after it."""
    saved = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    jax.config.update("jax_compilation_cache_dir", None)
    jax_cache.reset_cache()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])
    jax_cache.reset_cache()


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory):
    """A 10x10 binary image and its blur by a 3x3 kernel, as .npy files."""
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(5)
    A = (rng.random((10, 10)) < 0.3).astype(float)
    kernel = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16
    B = scipy.signal.convolve2d(A, kernel, mode="same") + 0.05 * rng.standard_normal(A.shape)
    np.save(folder / "A.npy", A)
    np.save(folder / "B.npy", B)
    return folder


def tiny_fit_args(case, out):
    return [
        "fit", str(case / "A.npy"), str(case / "B.npy"), "--kernel-shape", "3", "3",
        "--prior", "smooth", "--method", "map", "--samples", "10", "--plots", "none",
        "--quiet", "--out", str(out),
    ]  # fmt: skip


def run_counting(args, tmp_path, **env_vars):
    """The CLI in a fresh process whose caches all live under ``tmp_path``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("JAX_COMPILATION")}
    env.update(JAX_PLATFORMS="cpu", MPLBACKEND="Agg", XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env.pop(ENV_VAR, None)
    env.update(env_vars)
    result = subprocess.run(
        [sys.executable, "-c", COUNTING_CLI, *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, result.stderr
    return report


def private(folder) -> bool:
    """Neither group nor others may read, write or enter (POSIX permissions only)."""
    return os.name != "posix" or stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0


def test_default_folder_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "bayeskernel" / "jax"
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as XDG says
        assert default_cache_dir() == tmp_path / "home" / ".cache" / "bayeskernel" / "jax"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert default_cache_dir() == tmp_path / "home" / ".cache" / "bayeskernel" / "jax"


@pytest.mark.parametrize("off", ["0", "off", "False", " no "])
def test_environment_variable_turns_the_cache_off(jax_without_cache, monkeypatch, tmp_path, off):
    monkeypatch.setenv(ENV_VAR, off)
    assert resolve_cache_dir(tmp_path / "chosen") is None  # whatever the path
    assert use_compilation_cache() is None
    assert use_compilation_cache(tmp_path / "chosen") is None
    assert jax.config.jax_compilation_cache_dir is None
    assert not (tmp_path / "chosen").exists() and not (tmp_path / "xdg").exists()


def test_environment_variable_chooses_the_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from_env"))
    assert resolve_cache_dir() == tmp_path / "from_env"
    assert resolve_cache_dir(tmp_path / "argument") == tmp_path / "argument"
    for on in ("1", "true", ""):
        monkeypatch.setenv(ENV_VAR, on)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert resolve_cache_dir() == tmp_path / "bayeskernel" / "jax"


def test_use_makes_a_private_folder_and_caches_every_program(jax_without_cache, tmp_path):
    folder = tmp_path / "new" / "cache"
    assert bk.use_compilation_cache(folder) == folder
    assert jax.config.jax_compilation_cache_dir == str(folder)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    for made in (folder, folder.parent):
        assert private(made), oct(made.stat().st_mode)
    # A folder set already, by this call or by the user, is left as it is.
    assert use_compilation_cache(tmp_path / "other") == folder
    assert jax.config.jax_compilation_cache_dir == str(folder)
    assert not (tmp_path / "other").exists()


def test_use_defaults_to_the_user_cache_folder(jax_without_cache, tmp_path):
    folder = use_compilation_cache()
    assert folder == tmp_path / "xdg" / "bayeskernel" / "jax" and folder.is_dir()


@pytest.mark.parametrize(
    "path,error,message",
    [(3, TypeError, "path must be a str or path-like, got int"),
     ("", ValueError, "path must name a folder")],
)  # fmt: skip
def test_bad_path_names_the_argument(jax_without_cache, path, error, message):
    with pytest.raises(error, match=message):
        use_compilation_cache(path)


def run_in_process(args: list[str]) -> int:
    """The CLI in this process, its warnings printed as the command prints them."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # not pytest's "error"
        return main(args)


def test_cli_option_turns_the_cache_off(jax_without_cache, tiny_case, tmp_path, capsys):
    assert (
        run_in_process([*tiny_fit_args(tiny_case, tmp_path / "out"), "--no-compilation-cache"]) == 0
    )
    assert jax.config.jax_compilation_cache_dir is None
    assert not (tmp_path / "xdg" / "bayeskernel").exists()
    assert "KernelPosterior" in capsys.readouterr().out


def test_cli_warns_and_fits_when_the_folder_cannot_be_made(
    jax_without_cache, tiny_case, tmp_path, monkeypatch, capsys
):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "a_file" / "cache"))
    assert run_in_process(tiny_fit_args(tiny_case, tmp_path / "out")) == 0
    assert jax.config.jax_compilation_cache_dir is None
    err = capsys.readouterr().err
    assert "bayeskernel: warning: compiled programs are not kept for the next call" in err


def test_second_process_compiles_nothing(tiny_case, tmp_path):
    folder = tmp_path / "cache"
    first = run_counting(tiny_fit_args(tiny_case, tmp_path / "out1"), tmp_path, **{
        ENV_VAR: str(folder)
    })  # fmt: skip
    assert first["cache_dir"] == str(folder) and first["compiled"] > 0
    entries = sorted(p.name for p in folder.iterdir())
    assert len(entries) >= first["compiled"]
    assert private(folder)

    second = run_counting(tiny_fit_args(tiny_case, tmp_path / "out2"), tmp_path, **{
        ENV_VAR: str(folder)
    })  # fmt: skip
    assert second["requests"] > 0 and second["compiled"] == 0
    assert sorted(p.name for p in folder.iterdir()) == entries
    np.testing.assert_array_equal(
        np.load(tmp_path / "out1" / "kernel_mean.npy"),
        np.load(tmp_path / "out2" / "kernel_mean.npy"),
    )
    assert not (tmp_path / "xdg" / "bayeskernel").exists()  # the chosen folder only


def test_cli_caches_in_the_user_folder_by_default(tiny_case, tmp_path):
    report = run_counting(tiny_fit_args(tiny_case, tmp_path / "out"), tmp_path)
    folder = tmp_path / "xdg" / "bayeskernel" / "jax"
    assert report["cache_dir"] == str(folder) and report["compiled"] > 0
    assert any(folder.iterdir())
