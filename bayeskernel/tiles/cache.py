"""JAX's persistent compilation cache, shared by worker processes.

``fit`` reuses its compiled programs within a process; the persistent cache,
keyed on the compiled program itself, also saves each new worker process its
first compilation (1-6 s per tile shape and prior).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["disable_compilation_cache", "enable_compilation_cache", "persistent_compilation_cache"]

# Cache every program, however quick to compile: most of a small tile's programs
# compile in under a second, and each is compiled once per worker anyway.
MIN_COMPILE_SECONDS = 0.0


def enable_compilation_cache(path: str | os.PathLike) -> float | None:
    """Turn the cache on in this process, unless a cache folder is set already.

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
    previous = float(jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return previous


def disable_compilation_cache(min_compile_seconds: float) -> None:
    """Undo :func:`enable_compilation_cache`: no cache folder, JAX's old threshold."""
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

    Examples
    --------
    >>> with persistent_compilation_cache("jax_cache"):  # doctest: +SKIP
    ...     posteriors = [bk.fit(a, b, (5, 5), method="map") for a, b in pairs]
    """
    previous = enable_compilation_cache(path)
    try:
        yield
    finally:
        if previous is not None:
            disable_compilation_cache(previous)
