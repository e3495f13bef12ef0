"""The result object: kernel draws, noise sd, intervals, diagnostics, ArviZ export."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from bayeskernel.diagnostics import diagnose

__all__ = ["KernelPosterior"]


def _rhat_ess(draws: np.ndarray) -> tuple[float, float]:
    """Rank-normalised split r_hat and bulk ESS of a ``(chain, draw)`` array.

    ArviZ's ``rhat`` (rank method) for draws without ties (Vehtari et al.
    2021) and its bulk ``ess`` within a few per cent (NumPyro's estimator ends
    the sum of autocorrelations by its own rule), from NumPyro's estimators on
    the split chains: importing ArviZ would be a third of a small command-line fit.
    """
    from numpyro.diagnostics import effective_sample_size, gelman_rubin

    draws = np.asarray(draws, dtype=float)
    if draws.shape[1] < 8 or np.ptp(draws) == 0:
        return float("nan"), float("nan")
    if draws.shape[0] == 1:
        # One chain (SVI, MAP): split it in halves, as split-r_hat does anyway.
        half = draws.shape[1] // 2
        draws = draws[:, : 2 * half].reshape(2, half)
    half = draws.shape[1] // 2
    split = np.concatenate([draws[:, :half], draws[:, -half:]])  # the split chains
    bulk = _rank_normal(split)
    tail = _rank_normal(np.abs(split - np.median(split)))  # the folded draws
    r_hat = max(gelman_rubin(bulk), gelman_rubin(tail))
    return float(r_hat), float(effective_sample_size(bulk))


def _rank_normal(draws: np.ndarray) -> np.ndarray:
    """Normal scores of the ranks over all chains together (Blom's offsets)."""
    from scipy.special import ndtri

    ranks = np.empty(draws.size)
    ranks[np.argsort(draws, axis=None, kind="stable")] = np.arange(1, draws.size + 1)
    return ndtri((ranks - 0.375) / (draws.size + 0.25)).reshape(draws.shape)


@dataclass(eq=False)
class KernelPosterior:
    """Posterior draws of a kernel and of the noise sd, with summaries.

    Attributes
    ----------
    kernel_draws : (chains, draws, P, Q) ndarray
        Posterior draws of the kernel (float32 by default to save memory).
    noise_sigma_draws : (chains, draws) ndarray
        Draws of the noise standard deviation.
    kernel_scale_draws : (chains, draws) ndarray
        Draws of the prior's scale (typical size of a kernel entry).
    method : str
        Inference route that made the draws.
    prior : str
        Name of the kernel prior.
    mode : str
        Convolution mode of the data.
    diagnostics : dict
        Route-specific facts (run time, divergences, solver details).
    sample_stats : dict of (chains, draws) ndarray
        Per-draw sampler statistics (e.g. ``diverging``), exported to ArviZ.
    image, observed : ndarray or None
        The data ``A`` and ``B``, kept for residual plots.
    parameter_draws : dict of (chains, draws) ndarray
        Named parameters of parametric and low-rank priors (e.g. ``exponent``).
    background_draws : (chains, draws, k) or (chains, draws, pairs, k) ndarray, optional
        Background coefficients (``fit(..., background=d)``), one set per pair
        with several pairs.
    background_terms : tuple of str
        The background's monomials, e.g. ``('1', 'y', 'x')``.
    noise_weights : ndarray, list of them, or None
        Relative inverse noise variances of ``B`` (``fit(..., variance=)``),
        0 where unobserved; kept for the residual checks.
    field_draws : (chains, draws, F, P, Q) ndarray, optional
        A spatially varying kernel's components ``K_f`` (``fit(...,
        spatial_order=d)``, :mod:`bayeskernel.field`); ``kernel_draws`` is
        then the kernel at the centre of ``B`` (``K_0``), and
        :meth:`kernel_at` gives it anywhere.
    field_terms : tuple of str
        The components' monomials, e.g. ``('1', 'y', 'x')``.
    field_shape : (int, int) or None
        The grid the field's positions are normalised over (``B``'s shape).
    oversample : (int, int) or None
        Fine pixels per pixel of ``B`` (``fit(..., oversample=s)``): the
        kernel and ``A`` are on the fine grid (:mod:`bayeskernel.binning`).
    """

    kernel_draws: np.ndarray
    noise_sigma_draws: np.ndarray
    kernel_scale_draws: np.ndarray
    method: str
    prior: str
    mode: str = "same"
    diagnostics: dict[str, Any] = field(default_factory=dict)
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    image: np.ndarray | None = None
    observed: np.ndarray | None = None
    parameter_draws: dict[str, np.ndarray] = field(default_factory=dict)
    background_draws: np.ndarray | None = None
    background_terms: tuple[str, ...] = ()
    noise_weights: np.ndarray | list | None = None
    field_draws: np.ndarray | None = None
    field_terms: tuple[str, ...] = ()
    field_shape: tuple[int, int] | None = None
    oversample: tuple[int, int] | None = None

    # --- shapes ------------------------------------------------------------
    @property
    def kernel_shape(self) -> tuple[int, int]:
        return tuple(self.kernel_draws.shape[-2:])

    @property
    def num_chains(self) -> int:
        return self.kernel_draws.shape[0]

    @property
    def num_draws(self) -> int:
        return self.kernel_draws.shape[1]

    def _flat_kernels(self) -> np.ndarray:
        return self.kernel_draws.reshape((-1,) + self.kernel_shape)

    # --- kernel summaries ----------------------------------------------------
    @functools.cached_property
    def kernel_mean(self) -> np.ndarray:
        """Posterior mean of every kernel entry, shape ``kernel_shape`` (float64)."""
        return self._flat_kernels().mean(axis=0, dtype=np.float64)

    @functools.cached_property
    def kernel_sd(self) -> np.ndarray:
        """Posterior standard deviation of every kernel entry."""
        return self._flat_kernels().std(axis=0, dtype=np.float64)

    def interval(
        self, prob: float = 0.95, kind: Literal["eti", "hdi"] = "eti"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Credible interval of every kernel entry.

        Parameters
        ----------
        prob : float
            Probability mass inside the interval, in (0, 1).
        kind : {'eti', 'hdi'}
            Equal-tailed (quantiles) or highest-density interval (ArviZ).

        Returns
        -------
        lower, upper : (P, Q) ndarray
        """
        _check_prob(prob)
        if kind == "eti":
            lower, upper = np.quantile(
                self._flat_kernels(), [(1 - prob) / 2, (1 + prob) / 2], axis=0
            )
            return lower.astype(np.float64), upper.astype(np.float64)
        if kind == "hdi":
            import arviz as az

            bounds = az.hdi(self.kernel_draws.astype(np.float64), hdi_prob=prob)
            return bounds[..., 0], bounds[..., 1]
        raise ValueError(f"kind must be 'eti' or 'hdi', got {kind!r}")

    # --- noise ---------------------------------------------------------------
    @property
    def noise_per_pair(self) -> bool:
        """Whether each image pair has its own noise sd (``fit(..., noise_per_pair=True)``)."""
        return np.ndim(self.noise_sigma_draws) == 3

    @property
    def noise_sigma(self) -> float | np.ndarray:
        """Posterior mean of the noise standard deviation (one per pair when per pair)."""
        if self.noise_per_pair:
            return np.mean(self.noise_sigma_draws, axis=(0, 1))
        return float(np.mean(self.noise_sigma_draws))

    def noise_sigma_interval(self, prob: float = 0.95) -> tuple:
        """Equal-tailed credible interval of the noise sd (arrays when per pair).

        Parameters
        ----------
        prob : float
            Probability mass inside the interval, in (0, 1).

        Returns
        -------
        lower, upper : float, or (pairs,) ndarray when per pair

        Raises
        ------
        ValueError
            For ``prob`` outside (0, 1).
        """
        _check_prob(prob)
        if self.noise_per_pair:
            flat = self.noise_sigma_draws.reshape(-1, self.noise_sigma_draws.shape[-1])
            lower, upper = np.quantile(flat, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
            return lower, upper
        lower, upper = np.quantile(self.noise_sigma_draws, [(1 - prob) / 2, (1 + prob) / 2])
        return float(lower), float(upper)

    @property
    def background_mean(self) -> np.ndarray | None:
        """Posterior mean of the background coefficients, ``(k,)`` or ``(pairs, k)``."""
        if self.background_draws is None:
            return None
        return np.mean(self.background_draws, axis=(0, 1))

    def background_interval(self, prob: float = 0.95) -> tuple | None:
        """Equal-tailed credible intervals of the background coefficients.

        Parameters
        ----------
        prob : float
            Probability mass inside the interval, in (0, 1).

        Returns
        -------
        (lower, upper) or None
            Each ``(k,)``, or ``(pairs, k)`` with several pairs, in the order
            of ``background_terms``; None without a background.

        Raises
        ------
        ValueError
            For ``prob`` outside (0, 1).
        """
        _check_prob(prob)
        if self.background_draws is None:
            return None
        flat = self.background_draws.reshape((-1,) + self.background_draws.shape[2:])
        lower, upper = np.quantile(flat, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
        return lower, upper

    def background_image(self, pair: int = 0) -> np.ndarray | None:
        """Posterior mean background on ``B``'s grid of image pair ``pair``.

        Parameters
        ----------
        pair : int
            Index of the image pair (0 for a single pair).

        Returns
        -------
        (H, W) ndarray or None
            None without a background.

        Raises
        ------
        ValueError
            When the data ``B`` were not kept.
        """
        from bayeskernel.observation import background_image

        if self.background_draws is None:
            return None
        several = self.background_draws.ndim == 4
        observed = self.observed[pair] if isinstance(self.observed, list) else self.observed
        if observed is None:
            raise ValueError("background_image needs the data B (kept by fit, and by load)")
        mean = self.background_mean[pair] if several else self.background_mean
        return background_image(mean, np.shape(observed))

    def kernel_at(self, y: float, x: float) -> KernelPosterior:
        """The posterior of the kernel at pixel position ``(y, x)`` of ``B``.

        Parameters
        ----------
        y, x : float
            Row and column (sub-pixel allowed), ``0 <= y <= H - 1``.

        Returns
        -------
        KernelPosterior
            Draws ``sum_f phi_f(y, x) K_f`` (``(chains, draws, P, Q)``), with
            this posterior's noise sd, scale and diagnostics: means,
            intervals, summaries and plots as for any fit. Without a field,
            the one kernel.
        """
        from bayeskernel.field import evaluate_field

        if self.field_draws is None:
            return self
        height, width = self.field_shape
        for name, value, size in (("y", y, height), ("x", x, width)):
            if not (np.isfinite(value) and 0 <= value <= size - 1):
                raise ValueError(f"{name} must be a pixel position in 0..{size - 1}, got {value!r}")
        draws = evaluate_field(self.field_draws, y, x, self.field_shape)
        return replace(
            self, kernel_draws=draws.astype(self.field_draws.dtype), field_draws=None,
            field_terms=(), field_shape=None,
            diagnostics={**self.diagnostics, "position": [float(y), float(x)]},
        )  # fmt: skip

    def field_grid(self, grid: int = 5, prob: float = 0.95) -> dict[str, np.ndarray]:
        """The kernel's posterior on a ``grid x grid`` lattice of positions over ``B``.

        Positions are the centres of equal cells, ``(i + 0.5) (H - 1) / grid``.

        Parameters
        ----------
        grid : int
            Positions per axis (``>= 1``).
        prob : float
            Probability mass inside the intervals, in (0, 1).

        Returns
        -------
        dict
            ``rows`` and ``cols`` ``(grid,)``; ``mean``, ``sd``, ``lower``,
            ``upper`` ``(grid, grid, P, Q)``; ``components`` ``(F, P, Q)``, the
            components' posterior means; ``terms`` ``(F,)``, their monomials.

        Raises
        ------
        ValueError
            Without a field (``spatial_order=0``), for a ``grid`` that is not
            a positive integer, or for ``prob`` outside (0, 1).
        """
        if self.field_draws is None:
            raise ValueError("field_grid needs a field: fit with spatial_order=1, 2 or 'auto'")
        if not isinstance(grid, (int, np.integer)) or grid < 1:
            raise ValueError(f"grid must be a positive integer, got {grid!r}")
        _check_prob(prob)
        height, width = self.field_shape
        rows = (np.arange(grid) + 0.5) * (height - 1) / grid
        cols = (np.arange(grid) + 0.5) * (width - 1) / grid
        names = ("mean", "sd", "lower", "upper")
        out = {name: np.empty((grid, grid) + self.kernel_shape) for name in names}
        for i, y in enumerate(rows):
            for j, x in enumerate(cols):
                local = self.kernel_at(y, x)
                out["mean"][i, j], out["sd"][i, j] = local.kernel_mean, local.kernel_sd
                out["lower"][i, j], out["upper"][i, j] = local.interval(prob)
        out["rows"], out["cols"] = rows, cols
        out["components"] = np.mean(self.field_draws, axis=(0, 1), dtype=np.float64)
        out["terms"] = np.asarray(self.field_terms)
        return out

    def blurred(self, pair: int = 0) -> np.ndarray:
        """The blurred mean: ``convolve2d(A, kernel_mean, mode)`` on ``B``'s grid.

        With a field (``spatial_order``), ``sum_f phi_f (A * mean K_f)``.

        Parameters
        ----------
        pair : int
            Index of the image pair (0 for a single pair).

        Returns
        -------
        (H, W) ndarray
            With ``oversample``, binned onto ``B``'s pixels.

        Raises
        ------
        ValueError
            When the data ``A`` were not kept.
        """
        if self.field_draws is None:
            return self.blur(self.kernel_mean, pair)
        return self.blur(np.mean(self.field_draws, axis=(0, 1), dtype=np.float64), pair)

    def blur(self, kernel: np.ndarray, pair: int = 0) -> np.ndarray:
        """``A`` of image pair ``pair`` blurred by a given kernel, as this fit's model blurs.

        Parameters
        ----------
        kernel : (P, Q) or (F, P, Q) array_like
            One kernel, or a field's components (``spatial_order``).
        pair : int
            Index of the image pair (0 for a single pair).

        Returns
        -------
        (H, W) ndarray
            On ``B``'s grid: binned with ``oversample``, the field's monomials
            applied with ``spatial_order``.

        Raises
        ------
        ValueError
            When the data ``A`` were not kept.
        """
        from bayeskernel.shapes import fft_convolve

        image = self.image[pair] if isinstance(self.image, list) else self.image
        if image is None:
            raise ValueError("blurred and predict need the data A (kept by fit, and by load)")
        image = np.asarray(image, float)
        kernel = np.asarray(kernel, np.float64)
        if kernel.ndim == 3:
            from bayeskernel.field import field_basis, field_order

            parts = np.stack([fft_convolve(image, k, self.mode) for k in kernel])
            order = field_order(parts.shape[0])
            return np.sum(field_basis(parts.shape[1:], order) * parts, axis=0)
        blurred = fft_convolve(image, kernel, self.mode)
        if self.oversample is None:
            return blurred
        from bayeskernel.binning import bin_image

        return bin_image(blurred, self.oversample)

    def predict(self, pair: int = 0) -> np.ndarray:
        """The posterior mean of ``B``: ``convolve2d(A, kernel_mean, mode)`` plus the background.

        For a variance map from the fit rather than from the noisy data
        (``bk.ccd_variance(posterior.predict(), gain, read_noise)``), or residuals.

        Parameters
        ----------
        pair : int
            Index of the image pair (0 for a single pair).

        Returns
        -------
        (H, W) ndarray
            On ``B``'s grid, every pixel (masked ones too).
        """
        blurred = self.blurred(pair)
        if self.background_draws is not None:
            blurred = blurred + self.background_image(pair)
        return blurred

    def pair_noise_sigma_draws(self, index: int = 0) -> np.ndarray:
        """``(chains, draws)`` noise sd draws of image pair ``index`` (shared or its own).

        Parameters
        ----------
        index : int
            Index of the image pair; read only when each pair has its own noise sd.

        Returns
        -------
        (chains, draws) ndarray
        """
        if self.noise_per_pair:
            return self.noise_sigma_draws[..., index]
        return self.noise_sigma_draws

    # --- diagnostics ----------------------------------------------------------
    def convergence(self) -> dict[str, dict[str, float]]:
        """r_hat and bulk ESS of the noise sd and the kernel scale.

        Returns
        -------
        dict of str to dict
            ``{'noise_sigma': {'r_hat': ..., 'ess': ...}, 'kernel_scale': {...}}``
            (``'noise_sigma[i]'`` per pair with ``noise_per_pair``); NaN where
            there are fewer than 8 draws or the draws are constant.
        """
        noise = (
            {
                f"noise_sigma[{i}]": self.noise_sigma_draws[..., i]
                for i in range(self.noise_sigma_draws.shape[-1])
            }
            if self.noise_per_pair
            else {"noise_sigma": self.noise_sigma_draws}
        )
        return {
            **{k: dict(zip(("r_hat", "ess"), _rhat_ess(v))) for k, v in noise.items()},
            "kernel_scale": dict(zip(("r_hat", "ess"), _rhat_ess(self.kernel_scale_draws))),
        }

    def summary(self, prob: float = 0.95) -> dict[str, Any]:
        """Plain-data summary (JSON-serialisable).

        Parameters
        ----------
        prob : float
            Probability mass inside the intervals, in (0, 1).

        Returns
        -------
        dict
            The route, prior and shapes; the noise sd's mean and interval; the
            kernel scale's mean; the kernel sum's mean and sd; the mean interval
            width; the background's coefficients if any; divergences,
            :meth:`convergence`, the plain-data diagnostics, the prior weights
            and the warnings of :func:`bayeskernel.diagnostics.diagnose`.

        Raises
        ------
        ValueError
            For ``prob`` outside (0, 1).
        """
        lower, upper = self.interval(prob)
        noise_lo, noise_hi = self.noise_sigma_interval(prob)
        divergences = int(np.sum(self.sample_stats.get("diverging", 0)))
        return {
            "method": self.method,
            "prior": self.prior,
            "mode": self.mode,
            "kernel_shape": list(self.kernel_shape),
            "chains": self.num_chains,
            "draws_per_chain": self.num_draws,
            "noise_sigma": {
                "mean": _plain(self.noise_sigma),
                "lower": _plain(noise_lo),
                "upper": _plain(noise_hi),
            },
            "kernel_scale_mean": float(np.mean(self.kernel_scale_draws)),
            "kernel_sum": {
                "mean": float(self.kernel_mean.sum()),
                "sd": float(self._flat_kernels().sum(axis=(1, 2), dtype=np.float64).std()),
            },
            "mean_interval_width": float(np.mean(upper - lower)),
            **self._background_summary(prob),
            "interval_prob": prob,
            "divergences": divergences,
            "convergence": self.convergence(),
            "diagnostics": {k: v for k, v in self.diagnostics.items() if is_plain(v)},
            # prior='auto': the posterior probability of each candidate prior.
            "prior_weights": {
                k: float(v) for k, v in self.diagnostics.get("prior_weights", {}).items()
            },
            "warnings": diagnose(self),
        }

    def _background_summary(self, prob: float) -> dict:
        if self.background_draws is None:
            return {}
        lower, upper = self.background_interval(prob)
        return {
            "background": {
                "terms": list(self.background_terms),
                "mean": np.asarray(self.background_mean).tolist(),
                "lower": np.asarray(lower).tolist(),
                "upper": np.asarray(upper).tolist(),
            }
        }

    def __str__(self) -> str:
        s = self.summary()
        noise = s["noise_sigma"]
        if isinstance(noise["mean"], list):  # one per pair
            noise_lines = [
                f"  noise sd [{i}]     {m:.4g}  (95% CI {lo:.4g} .. {hi:.4g})"
                for i, (m, lo, hi) in enumerate(zip(noise["mean"], noise["lower"], noise["upper"]))
            ]
        else:
            noise_lines = [
                f"  noise sd         {noise['mean']:.4g}  "
                f"(95% CI {noise['lower']:.4g} .. {noise['upper']:.4g})"
            ]
        lines = [
            f"KernelPosterior: {s['kernel_shape'][0]}x{s['kernel_shape'][1]} kernel, "
            f"prior={s['prior']}, method={s['method']}, mode={s['mode']}",
            f"  draws            {s['chains']} chain(s) x {s['draws_per_chain']}",
            *noise_lines,
            f"  kernel sum       {s['kernel_sum']['mean']:.4g} +- {s['kernel_sum']['sd']:.2g}",
            f"  kernel scale     {s['kernel_scale_mean']:.4g}",
            f"  mean 95% width   {s['mean_interval_width']:.4g}",
        ]
        if "background" in s:
            mean = np.atleast_2d(s["background"]["mean"])
            for index, row in enumerate(mean):
                label = "background" if mean.shape[0] == 1 else f"background [{index}]"
                terms = ", ".join(
                    f"{t} {v:.4g}" for t, v in zip(s["background"]["terms"], row, strict=True)
                )
                lines.append(f"  {label:<16} {terms}")
        if s["prior_weights"]:
            ranked = sorted(s["prior_weights"].items(), key=lambda item: -item[1])
            lines.append("  prior weights    " + ", ".join(f"{name} {w:.3g}" for name, w in ranked))
        for name, values in s["convergence"].items():
            lines.append(f"  {name:<16} r_hat {values['r_hat']:.3f}, ESS {values['ess']:.0f}")
        if s["divergences"]:
            lines.append(f"  divergences      {s['divergences']}")
        lines += [f"  warning: {text}" for text in s["warnings"]]
        return "\n".join(lines)

    def __repr__(self) -> str:
        # Cheap (a notebook shows it on every evaluation): no summary, no diagnostics.
        rows, cols = self.kernel_shape
        return (
            f"KernelPosterior({rows}x{cols} kernel, prior={self.prior!r}, "
            f"method={self.method!r}, mode={self.mode!r}, {self.num_chains} chain(s) x "
            f"{self.num_draws} draws; print() it or call summary() for the numbers)"
        )

    # --- figures ----------------------------------------------------------------
    def plot_report(self, path, **kwargs) -> list:
        """Write every figure to a folder of PNGs, or to one PDF if ``path`` ends in .pdf.

        See :func:`bayeskernel.plots.plot_report` for the keyword arguments.

        Parameters
        ----------
        path : str or path-like
            A folder (created if needed), or a file ending in ``.pdf``.
        **kwargs
            ``true_kernel``, ``prob``, ``entries``, ``dpi``.

        Returns
        -------
        list of Path
            The files written (one for a PDF).
        """
        from bayeskernel.plots import plot_report

        return plot_report(self, path, **kwargs)

    # --- export -----------------------------------------------------------------
    def to_datasets(self) -> dict:
        """The posterior as xarray Datasets, one per ArviZ group.

        The layout of :meth:`to_inference_data` (which wraps these), built
        without importing ArviZ: every dimension has integer coordinates except
        the named ``background_term`` and ``field_term``.

        Returns
        -------
        dict of str to xarray.Dataset
            ``posterior``: ``kernel`` ``(chain, draw, kernel_row, kernel_col)``,
            ``noise_sigma`` ``(chain, draw[, pair])``, ``kernel_scale``, the
            named parameters, and ``background`` ``(chain, draw[, pair],
            background_term)`` and ``kernel_field`` ``(chain, draw, field_term,
            kernel_row, kernel_col)`` when fitted; ``sample_stats`` when the
            route has any; ``observed_data`` ``B`` ``(row, col)`` and
            ``constant_data`` ``A`` ``(image_row, image_col)`` (``B_0``,
            ``A_0``, ... for several pairs) and the noise weights, when kept.
        """
        created = {"created_at": datetime.now(UTC).isoformat()}
        named = {
            "background_term": list(self.background_terms),
            "field_term": list(self.field_terms),
        }
        sampled = {
            "kernel": (self.kernel_draws, ["kernel_row", "kernel_col"]),
            "noise_sigma": (self.noise_sigma_draws, ["pair"] if self.noise_per_pair else []),
            "kernel_scale": (self.kernel_scale_draws, []),
            **{name: (values, None) for name, values in self.parameter_draws.items()},
        }
        if self.background_draws is not None:
            pair = ["pair"] if self.background_draws.ndim == 4 else []
            sampled["background"] = (self.background_draws, [*pair, "background_term"])
        if self.field_draws is not None:
            sampled["kernel_field"] = (self.field_draws, ["field_term", "kernel_row", "kernel_col"])
        groups = {
            "posterior": _dataset(sampled, ["chain", "draw"], named, created | self._attrs()),
        }
        if self.sample_stats:
            stats = {name: (values, None) for name, values in self.sample_stats.items()}
            groups["sample_stats"] = _dataset(stats, ["chain", "draw"], named, created)
        observed, constant = {}, {}
        if isinstance(self.observed, list):  # several pairs: B_0, B_1, ... and A_0, ...
            # Each with its own dims (B_0_dim_0, ...): the pairs' shapes may differ.
            observed = {f"B_{i}": (b, None) for i, b in enumerate(self.observed)}
            constant = {f"A_{i}": (a, None) for i, a in enumerate(self.image)}
        elif self.observed is not None:
            observed = {"B": (self.observed, ["row", "col"])}
            constant = {"A": (self.image, ["image_row", "image_col"])}
        if isinstance(self.noise_weights, list):
            constant |= {f"weights_{i}": (w, None) for i, w in enumerate(self.noise_weights)}
        elif self.noise_weights is not None:
            constant["weights"] = (self.noise_weights, ["row", "col"])
        for group, variables in (("observed_data", observed), ("constant_data", constant)):
            if variables:
                groups[group] = _dataset(variables, [], named, created | self._attrs())
        return groups

    def _attrs(self) -> dict:
        return {
            "method": self.method,
            "prior": self.prior,
            "mode": self.mode,
            "inference_library": "bayeskernel",
            **({} if self.field_shape is None else {"field_shape": list(self.field_shape)}),
            **({} if self.oversample is None else {"oversample": list(self.oversample)}),
        }

    def to_inference_data(self):
        """ArviZ ``InferenceData`` with dims ``kernel_row`` and ``kernel_col``.

        Returns
        -------
        arviz.InferenceData
            The groups of :meth:`to_datasets`.
        """
        import arviz as az

        return az.InferenceData(**self.to_datasets())


def _dataset(variables: dict, leading: list[str], named: dict, attrs: dict):
    """An xarray Dataset of ``name: (array, trailing dims or None)``.

    Each array's dims are ``leading`` then its trailing dims (``name_dim_i``
    when None, as ArviZ names them). Every dim gets integer coordinates,
    except those in ``named``, which get the given labels.
    """
    import xarray as xr

    arrays = {}
    for name, (values, trailing) in variables.items():
        values = np.asarray(values)
        rest = values.ndim - len(leading)
        dims = [*leading, *(trailing if trailing is not None else
                           [f"{name}_dim_{i}" for i in range(rest)])]  # fmt: skip
        coords = {d: named[d] if d in named else np.arange(n) for d, n in zip(dims, values.shape)}
        arrays[name] = xr.DataArray(values, dims=dims, coords=coords)
    return xr.Dataset(arrays, attrs=attrs)


def _plain(value) -> float | list[float]:
    """A float, or a list of floats for per-pair values (JSON-friendly)."""
    return [float(v) for v in value] if np.ndim(value) else float(value)


def is_plain(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def _check_prob(prob) -> None:
    """Interval probabilities lie strictly between 0 and 1."""
    if not (isinstance(prob, (int, float, np.floating)) and 0 < prob < 1):
        raise ValueError(f"prob must lie strictly between 0 and 1, got {prob!r}")
