"""The names users choose from: priors, methods, solvers, modes. Nothing heavy is imported.

``fit``, :func:`bayeskernel.priors.resolve_prior`, the command line's choices and
help texts all read these, so a new prior (or route) is named in one place. The
prior classes load only when a prior is built, so the command line can show its
help without loading JAX.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

__all__ = [
    "AUTO_PRIORS",
    "ELLIPTICAL_CANDIDATES",
    "FAMILIES",
    "HYPER_SAMPLERS",
    "METHODS",
    "MODES",
    "NamedPrior",
    "PRIORS",
    "RESIDUAL_SUFFIX",
    "SOLVERS",
    "prior_help",
    "prior_names",
]

MODES: tuple[str, ...] = ("full", "same", "valid")
METHODS: tuple[str, ...] = ("auto", "exact", "map", "nuts", "svi")
SOLVERS: tuple[str, ...] = ("auto", "dense", "krylov")
HYPER_SAMPLERS: tuple[str, ...] = ("auto", "grid", "nuts")
# prior="auto": the candidates averaged over, weighted by the exact marginal likelihood.
AUTO_PRIORS: tuple[str, ...] = (
    "smooth", "smooth2", "radial", "radial1", "radial+smooth", "radial+smooth2",
)  # fmt: skip
# ... and, for one kernel of up to 64 x 64 entries, an elliptical profile at the axis
# ratio and angle of largest evidence, alone and with a residual (bayeskernel.infer.ellipse).
ELLIPTICAL_CANDIDATES: tuple[str, ...] = ("elliptical", "elliptical+smooth2")
# The parametric profiles of ParametricPrior.
FAMILIES: tuple[str, ...] = ("gaussian", "moffat", "airy", "power_law")
# Every parametric family also comes with a smooth nonparametric residual.
RESIDUAL_SUFFIX = "+residual"
# Largest rank that prior="lowrank_auto" lets the shrinkage prior use.
AUTO_MAX_RANK = 5


@dataclass(frozen=True)
class NamedPrior:
    """One named prior: the class that builds it, its options, and what it says.

    Attributes
    ----------
    target : str
        ``'module:Class'`` of the prior, imported when built.
    options : dict
        Keyword arguments besides ``kernel_shape``.
    summary : str
        One line for help texts.
    linear_gaussian : bool
        Whether the exact route (and ``prior='auto'``) can use it.
    """

    target: str
    summary: str
    linear_gaussian: bool
    options: dict = field(default_factory=dict)

    def build(self, kernel_shape: tuple[int, int]):
        """The prior for ``kernel_shape``."""
        module, name = self.target.split(":")
        options = dict(self.options)
        if options.pop("rank_up_to_shape", False):
            options["rank"] = min(AUTO_MAX_RANK, *kernel_shape)
        return getattr(importlib.import_module(module), name)(kernel_shape, **options)


_SMOOTH = "bayeskernel.priors.gaussian:SmoothPrior"
_RADIAL = "bayeskernel.priors.radial:RadialPrior"
_LOWRANK = "bayeskernel.priors.lowrank:LowRankPrior"
_RADIAL_RESIDUAL = "bayeskernel.priors.sum:radial_residual"

PRIORS: dict[str, NamedPrior] = {
    "smooth": NamedPrior(
        _SMOOTH, "neighbouring entries alike, zero beyond the window", True,
        {"order": 1, "boundary": "zero"},
    ),
    "smooth2": NamedPrior(
        _SMOOTH, "smoother: second differences", True, {"order": 2, "boundary": "zero"}
    ),
    "smooth_reflect": NamedPrior(
        _SMOOTH, "'smooth' with reflecting edges", True, {"order": 1, "boundary": "reflect"}
    ),
    "smooth2_reflect": NamedPrior(
        _SMOOTH, "'smooth2' with reflecting edges", True, {"order": 2, "boundary": "reflect"}
    ),
    "iid": NamedPrior("bayeskernel.priors.gaussian:IIDPrior", "independent entries", True),
    "radial": NamedPrior(_RADIAL, "a function of the distance to the centre", True),
    "radial1": NamedPrior(
        _RADIAL, "the same, for profiles with steps such as a disk", True, {"order": 1}
    ),
    # Residual scales: on the star-field benchmark the evidence preferred these
    # among 0.05-0.2 of the profile's (bayeskernel.priors.sum).
    "radial+smooth": NamedPrior(
        _RADIAL_RESIDUAL, "the radial profile plus a smooth residual", True,
        {"order": 1, "ratio": 0.05},
    ),
    "radial+smooth2": NamedPrior(
        _RADIAL_RESIDUAL, "the same with a smoother residual", True, {"order": 2, "ratio": 0.1}
    ),
    "lowrank": NamedPrior(_LOWRANK, "a rank-1 (separable) kernel", False),
    "lowrank_auto": NamedPrior(
        _LOWRANK, "rank learned up to 5 by shrinkage", False,
        {"shrinkage": True, "rank_up_to_shape": True},
    ),
    **{
        family: NamedPrior(
            "bayeskernel.priors.parametric:ParametricPrior", f"a parametric {family} profile",
            False, {"family": family},
        )
        for family in FAMILIES
    },
}  # fmt: skip


def prior_names() -> list[str]:
    """Every name ``resolve_prior`` takes (a family's ``+residual`` as a pattern).

    Returns
    -------
    list of str
        The names of :data:`PRIORS`, in its order, then ``'<family>+residual'``.
    """
    return [*PRIORS, f"<family>{RESIDUAL_SUFFIX}"]


def prior_help(auto_candidates: tuple[str, ...] = AUTO_PRIORS) -> str:
    """The command line's ``--prior`` help, from :data:`PRIORS`."""
    exact = [f"'{n}' ({p.summary})" for n, p in PRIORS.items() if p.linear_gaussian]
    sampled = [f"'{n}'" for n, p in PRIORS.items() if not p.linear_gaussian]
    return (
        f"kernel prior: 'auto' ({', '.join(auto_candidates)} averaged with weights by "
        f"marginal likelihood); {', '.join(exact)}; with NUTS: {', '.join(sampled)} (each "
        f"family also as '<family>{RESIDUAL_SUFFIX}')"
    )
