"""Repeated exact fits of equal shapes reuse compiled programs (no per-fit compilation).

Before, every ``fit`` built fresh jitted closures: 1-2 s of compilation per fit,
and ~760 new memory mappings per fit until the process aborted after ~85 fits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jax
import numpy as np
import pytest

import bayeskernel as bk
from bayeskernel.infer._static import Static
from bayeskernel.priors import LinearGaussianPrior, SmoothPrior


class _CompileLog(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.messages.append(message[:120])


def _compiles(run) -> list[str]:
    handler = _CompileLog()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            run()
    finally:
        logger.removeHandler(handler)
    return handler.messages


@pytest.mark.parametrize(
    "options",
    [
        {"method": "exact", "prior": "smooth"},
        {"method": "map", "prior": "smooth"},
        {"method": "exact", "solver": "krylov", "prior": "smooth"},
        {"method": "exact", "prior": "radial"},
    ],
    ids=["exact-dense", "map", "exact-krylov", "radial"],
)
def test_second_fit_of_equal_shapes_compiles_nothing(options):
    first = bk.simulate((20, 20), kernel="gaussian", kernel_shape=(5, 5), noise_sigma=0.05, seed=1)
    second = bk.simulate((20, 20), kernel="disk", kernel_shape=(5, 5), noise_sigma=0.1, seed=2)
    kwargs = dict(num_samples=50, num_chains=2, progress_bar=False, **options)
    bk.fit(first.A, first.B, (5, 5), seed=0, **kwargs)
    # Other data, other seed, a new prior instance: the same programs apply.
    compiled = _compiles(lambda: bk.fit(second.A, second.B, (5, 5), seed=1, **kwargs))
    assert compiled == []


def test_reused_programs_give_the_same_result_as_a_fresh_process_would():
    case = bk.simulate((20, 20), kernel="gaussian", kernel_shape=(5, 5), noise_sigma=0.05, seed=3)
    runs = [
        bk.fit(case.A, case.B, (5, 5), prior="smooth", num_samples=40, progress_bar=False)
        for _ in range(2)
    ]
    jax.clear_caches()
    fresh = bk.fit(case.A, case.B, (5, 5), prior="smooth", num_samples=40, progress_bar=False)
    np.testing.assert_array_equal(runs[0].kernel_draws, runs[1].kernel_draws)
    np.testing.assert_array_equal(runs[0].kernel_draws, fresh.kernel_draws)


def test_static_equal_by_value_for_hashable_priors_else_by_identity():
    assert Static(SmoothPrior((5, 5))) == Static(SmoothPrior((5, 5)))
    assert hash(Static(SmoothPrior((5, 5)))) == hash(Static(SmoothPrior((5, 5))))
    assert Static(SmoothPrior((5, 5))) != Static(SmoothPrior((5, 5), order=2))

    @dataclass(frozen=True)
    class ArrayPrior(LinearGaussianPrior):  # unhashable: an array field
        kernel_shape: tuple
        weights: np.ndarray
        num_latent: int = 4

        def to_kernel(self, latent):
            return latent.reshape(latent.shape[:-1] + (2, 2)) * self.weights

    a = ArrayPrior((2, 2), np.ones((2, 2)))
    b = ArrayPrior((2, 2), np.ones((2, 2)))
    assert Static(a) == Static(a) and hash(Static(a)) == hash(Static(a))
    assert Static(a) != Static(b)


def test_user_prior_with_array_fields_fits():
    @dataclass(frozen=True)
    class Weighted(LinearGaussianPrior):
        kernel_shape: tuple
        weights: np.ndarray
        num_latent: int = 25
        name: str = "weighted"

        def to_kernel(self, latent):
            return latent.reshape(latent.shape[:-1] + (5, 5)) * self.weights

    case = bk.simulate((20, 20), kernel="gaussian", kernel_shape=(5, 5), noise_sigma=0.05, seed=4)
    prior = Weighted((5, 5), np.ones((5, 5)))
    post = bk.fit(case.A, case.B, (5, 5), prior=prior, num_samples=40, progress_bar=False)
    reference = bk.fit(case.A, case.B, (5, 5), prior="iid", num_samples=40, progress_bar=False)
    # Unit weights make it the iid prior: the same posterior, draw for draw.
    np.testing.assert_allclose(post.kernel_draws, reference.kernel_draws, rtol=1e-5, atol=1e-6)
