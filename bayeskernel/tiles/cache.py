"""JAX's persistent compilation cache, for many fits of equal shapes.

``fit`` builds fresh jitted closures on every call, so JAX's in-memory cache
misses and each tile recompiles programs of the same shapes: about 3/4 of a
small tile's fit time (docs/tiles.md). JAX's persistent cache is keyed on the
compiled program itself, so a hit is exact and skips the compilation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["disable_compilation_cache", "enable_compilation_cache", "persistent_compilation_cache"]

# Cache every program, however quick to compile: no threshold separates the
# reusable ones (the blur operator, 0.1 s to compile) from those that embed a
# tile's data as constants and are never reused (the hyperparameter objective,
# 0.07 s). The latter add about 12 kB per tile, next to the tile's own file.
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
