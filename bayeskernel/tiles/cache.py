"""JAX's persistent compilation cache, shared by worker processes.

The code lives in :mod:`bayeskernel.compilation_cache`; this module keeps the
names importable from :mod:`bayeskernel.tiles`.
"""

from bayeskernel.compilation_cache import (
    MIN_COMPILE_SECONDS,
    disable_compilation_cache,
    enable_compilation_cache,
    persistent_compilation_cache,
)

__all__ = [
    "MIN_COMPILE_SECONDS",
    "disable_compilation_cache",
    "enable_compilation_cache",
    "persistent_compilation_cache",
]
