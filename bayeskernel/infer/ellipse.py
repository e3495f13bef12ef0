"""The axis ratio and angle of an elliptical profile, chosen by the evidence.

Seeing and optical PSFs are seldom round: guiding, wind shake, astigmatism and
coma stretch them along one direction. A radial profile of the elliptical
distance ``sqrt(u^2 / q + v^2 q)`` (axes turned by an angle,
:class:`~bayeskernel.priors.RadialPrior` with ``axis_ratio`` and
``angle``) is linear-Gaussian for fixed ``(q, angle)``; this module finds the
pair that maximises the marginal likelihood, with the kernel integrated out
and the noise sd and kernel scale at their maximum (type-II maximum
likelihood), from the kernel-grid normal matrix ``N = H^T S P S H`` and the
data's ``r = H^T S P S B``. Each trial pair costs one ``T^T N T`` of the
profile's few dozen knots and a small eigendecomposition, no blur of the image.

The model average (:mod:`bayeskernel.averaging`) then weighs the elliptical
profile found, and the same with a smooth residual, beside its other
candidates, on the same exact evidence. Choosing ``(q, angle)`` at their
maximum rather than integrating over them favours these candidates by about
the log of the prior range over the posterior width of the two parameters,
a few nats, against differences of tens to hundreds of nats on star fields
(``docs/difference_imaging.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize

from bayeskernel.priors.radial import RadialPrior

__all__ = [
    "ELLIPSE_KERNEL_LIMIT",
    "EllipseFit",
    "log_evidence",
    "elliptical_prior",
    "max_log_evidence",
    "search_ellipse",
]

# The search holds the kernel-grid normal matrix (size^2 entries): up to
# 64 x 64 kernels, 134 MB.
ELLIPSE_KERNEL_LIMIT = 64 * 64
# Knots: the centre, then 5% apart from half a pixel out. Knots at the pixel
# distances (RadialPrior's default) would move with the axis ratio and angle
# and make the evidence jump between neighbouring angles.
ELLIPSE_EXACT_RADIUS = 0.5
ELLIPSE_GROWTH = 0.05
# The coarse grid; its best points are then refined (Nelder-Mead). On star
# fields the evidence falls by hundreds of nats within 10 degrees of the best
# angle, so the grid is fine in angle.
_RATIOS = (0.55, 0.7, 0.85)
_ANGLES = 24  # over [0, pi): 7.5 degree steps
_STARTS = 2


@dataclass(frozen=True)
class EllipseFit:
    """What :func:`search_ellipse` found.

    Parameters
    ----------
    axis_ratio : float
        ``q`` in ``(0, 1]``.
    angle : float
        Radians in ``[0, pi)``.
    log_evidence : float
        The maximised ``log p(B | q, angle, sigma, s)``.
    evaluations : int
        Trial pairs evaluated.
    """

    axis_ratio: float
    angle: float
    log_evidence: float
    evaluations: int

    def prior(self, kernel_shape: tuple[int, int], name: str = "elliptical") -> RadialPrior:
        """The elliptical profile prior at the found ``(q, angle)``.

        Parameters
        ----------
        kernel_shape : (int, int)
        name : str

        Returns
        -------
        RadialPrior
            :func:`elliptical_prior` of these.
        """
        return elliptical_prior(kernel_shape, self.axis_ratio, self.angle, name)

    def as_dict(self) -> dict:
        """The fit as plain numbers (for ``diagnostics['ellipse']``).

        Returns
        -------
        dict
            ``axis_ratio``, ``angle_degrees``, ``log_evidence_max`` and ``evaluations``.
        """
        return {
            "axis_ratio": float(self.axis_ratio),
            "angle_degrees": float(np.rad2deg(self.angle)),
            "log_evidence_max": float(self.log_evidence),
            "evaluations": int(self.evaluations),
        }


def elliptical_prior(
    kernel_shape: tuple[int, int], axis_ratio: float, angle: float, name: str = "elliptical"
) -> RadialPrior:
    """A radial profile of the elliptical distance (order 2, free centre value).

    Parameters
    ----------
    kernel_shape : (int, int)
    axis_ratio : float
        ``q`` in ``(0, 1]``.
    angle : float
        Radians.
    name : str

    Returns
    -------
    RadialPrior
        Knots at the centre and then 5% apart from half a pixel out.
    """
    return RadialPrior(
        tuple(kernel_shape), exact_radius=ELLIPSE_EXACT_RADIUS, growth=ELLIPSE_GROWTH,
        axis_ratio=float(axis_ratio), angle=float(angle), name=name,
    )  # fmt: skip


def _terms(gram: np.ndarray, projection: np.ndarray):
    """Eigenvalues ``g`` and squared data coordinates ``d^2 = c^2 / g`` (tiny ``g`` dropped)."""
    g, basis = np.linalg.eigh(gram)
    g = np.clip(g, 0.0, None)
    keep = g > g.max() * 1e-12
    c = basis.T @ projection
    return g[keep], c[keep] ** 2 / g[keep]


def log_evidence(
    gram: np.ndarray,
    projection: np.ndarray,
    energy: float,
    num_observed: int,
    noise_sigma: float,
    kernel_scale: float,
) -> float:
    """``log p(y | sigma, s)`` for ``y = W z + e``, ``z ~ N(0, s^2 I)``, ``e ~ N(0, sigma^2 I)``.

    Parameters
    ----------
    gram : (p, p) ndarray
        ``W^T W``.
    projection : (p,) ndarray
        ``W^T y``.
    energy : float
        ``y @ y``.
    num_observed : int
        ``n``, the data's degrees of freedom.
    noise_sigma, kernel_scale : float

    Returns
    -------
    float
        As ``bayeskernel.infer.exact.log_marginal_likelihood`` gives it.
    """
    g, d2 = _terms(gram, projection)
    logs = np.log(noise_sigma**2), np.log(kernel_scale**2)
    return _value(g, d2, energy - d2.sum(), num_observed, *logs)


def _value(g, d2, residual, n, log_var, log_scale2) -> float:
    """The log evidence at ``(log sigma^2, log s^2)``."""
    var, scale2 = np.exp(log_var), np.exp(log_scale2)
    total = var + scale2 * g
    return float(
        -0.5
        * (
            n * np.log(2 * np.pi) + (n - g.size) * log_var + np.sum(np.log(total))
            + residual / var + np.sum(d2 / total)
        )
    )  # fmt: skip


def max_log_evidence(
    gram: np.ndarray, projection: np.ndarray, energy: float, num_observed: int
) -> tuple[float, float, float]:
    """The log evidence at its maximum over the noise sd and the kernel scale.

    With ``lambda = s^2 / sigma^2`` fixed the best ``sigma^2`` is
    ``Q(lambda) / n``, ``Q = R + sum d^2 / (1 + lambda g)``; what is left is a
    one-dimensional search over ``log lambda`` (Brent's method).

    Parameters
    ----------
    gram, projection, energy, num_observed
        As for :func:`log_evidence`.

    Returns
    -------
    value, noise_sigma, kernel_scale : float
    """
    g, d2 = _terms(gram, projection)
    residual = max(energy - d2.sum(), 0.0)
    n = num_observed

    def profiled(log_ratio: float) -> float:
        ratio = np.exp(log_ratio)
        quad = residual + np.sum(d2 / (1.0 + ratio * g))
        return 0.5 * (n * np.log(quad / n) + np.sum(np.log1p(ratio * g)))

    # lambda g spans from far below to far above 1 over this bracket.
    top = float(np.log(1e8 / g.min()))
    found = scipy.optimize.minimize_scalar(
        profiled, bounds=(float(np.log(1e-8 / g.max())), top), method="bounded",
        options={"xatol": 1e-4},
    )  # fmt: skip
    ratio = float(np.exp(found.x))
    var = (residual + np.sum(d2 / (1.0 + ratio * g))) / n
    value = -found.fun - 0.5 * n * (np.log(2 * np.pi) + 1.0)
    return float(value), float(np.sqrt(var)), float(np.sqrt(ratio * var))


def search_ellipse(
    normal: np.ndarray,
    grid_data: np.ndarray,
    energy: float,
    num_observed: int,
    kernel_shape: tuple[int, int],
) -> EllipseFit:
    """The axis ratio and angle of the elliptical profile of largest evidence.

    Parameters
    ----------
    normal : (size, size) ndarray
        ``H^T S P S H`` on the flattened kernel grid (summed over pairs).
    grid_data : (size,) ndarray
        ``H^T S P S B`` (``bayeskernel.infer.exact.kernel_grid_transpose``).
    energy : float
        ``||P S B||^2``.
    num_observed : int
        The data's degrees of freedom.
    kernel_shape : (int, int)

    Returns
    -------
    EllipseFit
        A coarse grid (axis ratios 0.55, 0.7, 0.85 by 7.5 degree steps, and the
        circle), then Nelder-Mead from its two best points.
    """
    count = 0

    def value(ratio: float, angle: float) -> float:
        nonlocal count
        count += 1
        t = elliptical_prior(kernel_shape, ratio, angle).kernel_matrix()
        return max_log_evidence(t.T @ normal @ t, t.T @ grid_data, energy, num_observed)[0]

    trials = [(1.0, 0.0)] + [(q, np.pi * k / _ANGLES) for q in _RATIOS for k in range(_ANGLES)]
    values = [value(q, a) for q, a in trials]
    order = np.argsort(values)[::-1]
    best = (values[order[0]], *trials[order[0]])
    if best[1] == 1.0:
        return EllipseFit(1.0, 0.0, best[0], count)

    def loss(x):
        return -value(float(np.clip(x[0], 0.2, 1.0)), float(x[1]))

    starts = [trials[i] for i in order if trials[i][0] < 1.0][:_STARTS]
    for ratio, angle in starts:
        found = scipy.optimize.minimize(
            loss, [ratio, angle], method="Nelder-Mead",
            options={"initial_simplex": [[ratio, angle], [ratio + 0.05, angle],
                                         [ratio, angle + np.pi / (2 * _ANGLES)]],
                     "xatol": 2e-3, "fatol": 0.05, "maxfev": 60},
        )  # fmt: skip
        if -found.fun > best[0]:
            best = (-found.fun, float(np.clip(found.x[0], 0.2, 1.0)), float(found.x[1]))
    top, ratio, angle = best
    # Rounded, so that the same data give the same prior to the last bit: its
    # compiled programs then come from the persistent cache on a second call.
    ratio, angle = round(ratio, 4), round(angle % np.pi, 4)
    return EllipseFit(ratio, angle, top, count)
