"""bayeskernel: Bayesian estimation of a 2D convolution kernel with honest uncertainty.

The public names load on first use (PEP 562, as scikit-image does): ``import
bayeskernel`` costs nothing until a name is asked for, so the command line can
answer ``--help``, and a Ctrl-C while JAX loads, at once and in one line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "DEFAULT_SAMPLES": "api",
    "METHODS": "api",
    "NotBinaryWarning": "api",
    "PriorDominatedWarning": "api",
    "fit": "api",
    "compare": "comparison",
    "ccd_variance": "observation",
    "use_compilation_cache": "compilation_cache",
    "ConvolutionOperator": "forward",
    "convolve": "forward",
    "make_operator": "forward",
    "FieldPrior": "priors",
    "kernel_moments": "metrics",
    "output_shape": "forward",
    "load": "io",
    "central_window": "metrics",
    "coverage": "metrics",
    "relative_error": "metrics",
    "KernelPosterior": "posterior",
    "ConstrainedPrior": "priors",
    "EllipticalRadialPrior": "priors",
    "IIDPrior": "priors",
    "KernelPrior": "priors",
    "LinearGaussianPrior": "priors",
    "LowRankPrior": "priors",
    "ParametricPrior": "priors",
    "RadialPrior": "priors",
    "SmoothPrior": "priors",
    "SumPrior": "priors",
    "SimulatedCase": "simulation",
    "make_kernel": "simulation",
    "motivating_case": "simulation",
    "simulate": "simulation",
    "render_points": "sources",
    "fit_tiles": "tiles",  # dask loads only when it is called
}

# Submodules reachable as attributes (``bk.io.save``, ``bk.plots.plot_kernel``).
_SUBMODULES = (
    "api",
    "averaging",
    "binning",
    "cli",
    "comparison",
    "compilation_cache",
    "datasets",
    "diagnostics",
    "field",
    "fits",
    "forward",
    "infer",
    "io",
    "metrics",
    "model",
    "normal",
    "observation",
    "plots",
    "posterior",
    "priors",
    "simulation",
    "shapes",
    "sources",
    "tiles",
)

__all__ = [
    "ConstrainedPrior",
    "ConvolutionOperator",
    "DEFAULT_SAMPLES",
    "EllipticalRadialPrior",
    "FieldPrior",
    "IIDPrior",
    "KernelPosterior",
    "KernelPrior",
    "LinearGaussianPrior",
    "LowRankPrior",
    "METHODS",
    "NotBinaryWarning",
    "ParametricPrior",
    "PriorDominatedWarning",
    "RadialPrior",
    "SimulatedCase",
    "SmoothPrior",
    "SumPrior",
    "__version__",
    "ccd_variance",
    "central_window",
    "compare",
    "convolve",
    "coverage",
    "fit",
    "fit_tiles",
    "kernel_moments",
    "load",
    "make_kernel",
    "make_operator",
    "motivating_case",
    "output_shape",
    "relative_error",
    "render_points",
    "simulate",
    "use_compilation_cache",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


if TYPE_CHECKING:  # what static tools see
    from bayeskernel.api import (
        DEFAULT_SAMPLES,
        METHODS,
        NotBinaryWarning,
        PriorDominatedWarning,
        fit,
    )
    from bayeskernel.comparison import compare
    from bayeskernel.compilation_cache import use_compilation_cache
    from bayeskernel.forward import ConvolutionOperator, convolve, make_operator, output_shape
    from bayeskernel.io import load
    from bayeskernel.metrics import central_window, coverage, relative_error
    from bayeskernel.observation import ccd_variance
    from bayeskernel.posterior import KernelPosterior
    from bayeskernel.priors import (
        ConstrainedPrior,
        EllipticalRadialPrior,
        IIDPrior,
        KernelPrior,
        LinearGaussianPrior,
        LowRankPrior,
        ParametricPrior,
        RadialPrior,
        SmoothPrior,
    )
    from bayeskernel.simulation import SimulatedCase, make_kernel, motivating_case, simulate
    from bayeskernel.tiles import fit_tiles
