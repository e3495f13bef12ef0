"""bayeskernel: Bayesian estimation of a 2D convolution kernel with honest uncertainty."""

from bayeskernel.api import DEFAULT_SAMPLES, METHODS, NotBinaryWarning, PriorDominatedWarning, fit
from bayeskernel.compare import compare
from bayeskernel.compilation_cache import use_compilation_cache
from bayeskernel.forward import ConvolutionOperator, convolve, make_operator, output_shape
from bayeskernel.io import load
from bayeskernel.metrics import central_window, coverage, relative_error
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
from bayeskernel.simulate import SimulatedCase, make_kernel, motivating_case, simulate
from bayeskernel.tiles import fit_tiles  # imports dask only when called

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SAMPLES",
    "METHODS",
    "ConstrainedPrior",
    "ConvolutionOperator",
    "EllipticalRadialPrior",
    "IIDPrior",
    "KernelPosterior",
    "KernelPrior",
    "LinearGaussianPrior",
    "LowRankPrior",
    "NotBinaryWarning",
    "ParametricPrior",
    "PriorDominatedWarning",
    "RadialPrior",
    "SimulatedCase",
    "SmoothPrior",
    "__version__",
    "central_window",
    "compare",
    "convolve",
    "coverage",
    "fit",
    "fit_tiles",
    "load",
    "make_kernel",
    "make_operator",
    "motivating_case",
    "output_shape",
    "relative_error",
    "simulate",
    "use_compilation_cache",
]
