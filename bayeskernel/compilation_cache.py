"""JAX's persistent compilation cache: compiled programs reused across processes.

``fit`` reuses its compiled programs within a process. JAX's persistent cache,
keyed on the compiled program itself, keeps them on disk so that the next
process skips compiling them (most of a small fit's first call). The
``bayeskernel`` command turns it on by default; API users call
:func:`use_compilation_cache`. ``fit_tiles`` uses the lower-level
:func:`enable_compilation_cache` and :func:`persistent_compilation_cache` on its
workers.

The environment variable ``BAYESKERNEL_COMPILATION_CACHE`` set to ``0`` keeps
bayeskernel from turning the cache on; set to a folder, it chooses the folder.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "ENV_VAR",
    "default_cache_dir",
    "disable_compilation_cache",
    "enable_compilation_cache",
    "persistent_compilation_cache",
    "resolve_cache_dir",
    "use_compilation_cache",
]

ENV_VAR = "BAYESKERNEL_COMPILATION_CACHE"

# Cache every program, however quick to compile: a small fit's programs mostly
# compile in well under a second each, and together they take seconds.
MIN_COMPILE_SECONDS = 0.0

_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"", "1", "true", "yes", "on"})


def default_cache_dir() -> Path:
    """The user's cache folder for compiled programs.

    ``$XDG_CACHE_HOME/bayeskernel/jax`` when ``XDG_CACHE_HOME`` is an absolute
    path, else the platform's cache folder: ``%LOCALAPPDATA%\\bayeskernel\\jax``
    on Windows, ``~/Library/Caches/bayeskernel/jax`` on macOS and
    ``~/.cache/bayeskernel/jax`` elsewhere.

    Returns
    -------
    pathlib.Path
        The folder; this function does not create it.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # the XDG rule: a relative value is ignored
        base = Path(xdg)
    elif sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path.home() / ".cache"
    return base / "bayeskernel" / "jax"


def resolve_cache_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The folder :func:`use_compilation_cache` would use, or None for none.

    Parameters
    ----------
    path : str or path-like, optional
        A chosen folder. Default: the folder named by
        ``BAYESKERNEL_COMPILATION_CACHE``, else :func:`default_cache_dir`.

    Returns
    -------
    pathlib.Path or None
        An absolute folder; None when ``BAYESKERNEL_COMPILATION_CACHE`` is
        ``0``, ``false``, ``no`` or ``off``, whatever ``path`` is.
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}")
    if path is not None and not os.fspath(path):
        raise ValueError("path must name a folder, got ''")
    setting = os.environ.get(ENV_VAR, "").strip()
    if setting.lower() in _OFF:
        return None
    if path is not None:
        folder = Path(path)
    elif setting.lower() not in _ON:
        folder = Path(setting)
    else:
        folder = default_cache_dir()
    return folder.expanduser().absolute()


def _make_private_folder(folder: Path) -> None:
    """Create ``folder`` and any missing parents readable by the user only.

    The cache holds code that JAX loads and runs; existing folders are left as
    they are.
    """
    missing = [f for f in (folder, *folder.parents) if not f.exists()]
    for item in reversed(missing):
        item.mkdir(mode=0o700, exist_ok=True)


def enable_compilation_cache(path: str | os.PathLike) -> float | None:
    """Turn the cache on in this process, unless a cache folder is set already.

    Parameters
    ----------
    path : str or path-like
        Cache folder, created (user-only permissions) when missing.

    Returns
    -------
    float or None
        JAX's previous ``jax_persistent_cache_min_compile_time_secs`` when this
        call turned the cache on (give it to :func:`disable_compilation_cache`),
        None when it left JAX as it was.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return None
    _make_private_folder(Path(path))
    previous = float(jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return previous


def disable_compilation_cache(min_compile_seconds: float) -> None:
    """Undo :func:`enable_compilation_cache`: no cache folder, JAX's old threshold.

    Parameters
    ----------
    min_compile_seconds : float
        The threshold :func:`enable_compilation_cache` returned.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    compilation_cache.reset_cache()  # JAX opens the cache once; let it reopen later


@contextmanager
def persistent_compilation_cache(path: str | os.PathLike) -> Iterator[None]:
    """Use JAX's persistent compilation cache inside a ``with`` block.

    Repeated :func:`bayeskernel.fit` calls of equal shapes then compile once.
    On leaving, JAX's configuration is restored. A cache folder configured
    already (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is used as it is.

    Parameters
    ----------
    path : str or path-like
        Cache folder. The cache is trusted code: keep it in a folder only you
        can write.

    Yields
    ------
    None
        The ``with`` block runs with the cache on.

    Examples
    --------
    >>> with persistent_compilation_cache("jax_cache"):  # doctest: +SKIP
    ...     posteriors = [bk.fit(a, b, (5, 5), prior="smooth", method="map") for a, b in pairs]
    """
    previous = enable_compilation_cache(path)
    try:
        yield
    finally:
        if previous is not None:
            disable_compilation_cache(previous)


def use_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Keep compiled programs on disk, so that later processes skip compiling.

    Turns on JAX's persistent compilation cache for the rest of the process and
    caches every program, however quick to compile. A later process that fits
    the same shapes with the same prior and method then loads its programs
    instead of compiling them, which is most of a small fit's first-call time.
    The ``bayeskernel`` command does this by default.

    Parameters
    ----------
    path : str or path-like, optional
        Cache folder, created with user-only permissions when missing (it
        holds code that JAX runs: keep it where only you can write). Default:
        the folder named by the environment variable
        ``BAYESKERNEL_COMPILATION_CACHE``, else the user's cache folder
        (``$XDG_CACHE_HOME/bayeskernel/jax``, usually
        ``~/.cache/bayeskernel/jax``).

    Returns
    -------
    pathlib.Path or None
        The folder JAX caches in after this call; None when it caches nowhere.

    Notes
    -----
    ``BAYESKERNEL_COMPILATION_CACHE=0`` (or ``false``, ``no``, ``off``) turns
    this call into a no-op. A cache folder already configured in JAX
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is left as it is, with
    JAX's own settings. Delete the folder at any time to reclaim its space;
    JAX refills it as programs compile. The cache is JAX's, keyed on the
    program, the JAX version and the device, so a stale entry is never used.

    Examples
    --------
    >>> import bayeskernel as bk
    >>> bk.use_compilation_cache()  # doctest: +SKIP
    PosixPath('/home/me/.cache/bayeskernel/jax')
    """
    import jax

    folder = resolve_cache_dir(path)
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured)
    if folder is None:
        return None
    enable_compilation_cache(folder)
    return folder
