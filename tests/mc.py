"""Monte Carlo tolerances: tests exactly as strict as the sampling error allows."""

import arviz as az
import numpy as np

# Two-sided z for ~1e-4 per comparison: with ~100 entries per test, a false
# alarm rate of about 1% per test run.
Z = 4.0


def effective_sizes(draws):
    """Bulk ESS per entry of (chains, draws, ...) draws."""
    draws = np.asarray(draws, dtype=float)
    flat = draws.reshape(draws.shape[:2] + (-1,))
    return np.array([float(az.ess(flat[:, :, i])) for i in range(flat.shape[2])])


def _mcse(draws, method):
    flat = np.asarray(draws, dtype=float).reshape(draws.shape[:2] + (-1,))
    return np.array([float(az.mcse(flat[:, :, i], method=method)) for i in range(flat.shape[2])])


def assert_moments_match(draws, mean, sd, ess=None, z=Z):
    """Per-entry mean and sd within z Monte Carlo standard errors.

    With ``ess`` given (independent draws), the errors are ``sd / sqrt(ess)``
    and ``sd / sqrt(2 ess)``; otherwise ArviZ's MCSE of the mean and of the sd.
    """
    draws = np.asarray(draws, dtype=float)
    flat = draws.reshape(-1, int(np.prod(draws.shape[2:])))
    mean, sd = np.ravel(mean), np.ravel(sd)
    if ess is None:
        mcse_mean, mcse_sd = _mcse(draws, "mean"), _mcse(draws, "sd")
    else:
        mcse_mean, mcse_sd = sd / np.sqrt(ess), sd / np.sqrt(2 * ess)
    mean_z = np.abs(flat.mean(0) - mean) / mcse_mean
    sd_z = np.abs(flat.std(0) - sd) / mcse_sd
    assert mean_z.max() < z, f"posterior mean off by {mean_z.max():.2f} MCSE"
    assert sd_z.max() < z, f"posterior sd off by {sd_z.max():.2f} MCSE"
