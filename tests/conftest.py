import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# With numba installed (SFFT, a benchmark peer, brings it), ArviZ 0.x's MCSE of
# the sd returns an array where it means a float and fails; its NumPy path is right.
az.Numba.disable_numba()


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)


@pytest.fixture(autouse=True)
def _no_persistent_cache_between_tests():
    """Each test starts without JAX's persistent compilation cache.

    The command line turns the cache on for its process; run in-process by a
    test (``cli.main``), it would stay on for every later test, which would
    then write each program it compiles to disk. Tests that want the cache
    turn it on themselves.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {name: getattr(jax.config, name) for name in names}
    yield
    if any(getattr(jax.config, name) != value for name, value in saved.items()):
        for name, value in saved.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()


@pytest.fixture(scope="module", autouse=True)
def _compiled_programs_freed_per_module():
    """Each test module frees the programs JAX compiled for it.

    A process keeps every program it compiles (and its code mappings) for
    reuse. The suite compiles thousands, for many shapes; kept all together
    they approach the kernel's limit on memory mappings per process
    (``vm.max_map_count``, 65530 by default), past which compiling crashes.
    """
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
