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
