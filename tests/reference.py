"""Dense float64 references, built independently of the library's fast paths.

The convolution matrix comes from scipy.signal.convolve2d on unit kernels, the
smoothness prior's precision from explicit finite-difference matrices (not the
DCT), and the posterior from the textbook Gaussian formulas.
"""

import numpy as np
from scipy.signal import convolve2d


def convolution_matrix(image, kernel_shape, mode):
    """Dense H with H @ k.ravel() == convolve2d(image, k, mode).ravel()."""
    columns = []
    for index in range(int(np.prod(kernel_shape))):
        unit = np.zeros(kernel_shape)
        unit.flat[index] = 1.0
        columns.append(convolve2d(image, unit, mode).ravel())
    return np.stack(columns, axis=1)


def neumann_laplacian_1d(n):
    """Second-difference matrix with reflecting ends (rows sum to zero)."""
    lap = 2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)
    lap[0, 0] = lap[-1, -1] = 1.0
    if n == 1:
        lap[0, 0] = 0.0
    return lap


def dirichlet_laplacian_1d(n):
    """Second-difference matrix with the vector taken as 0 beyond both ends."""
    return 2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)


def smooth_prior_covariance(kernel_shape, order, boundary="zero"):
    """Covariance of the normalised GMRF prior at unit scale, densely.

    ``boundary='zero'`` (the library's default): Dirichlet Laplacian, positive
    definite. ``'reflect'``: Neumann Laplacian plus ``delta`` (the smallest
    non-zero eigenvalue) on the diagonal.
    """
    h, w = kernel_shape
    one_d = dirichlet_laplacian_1d if boundary == "zero" else neumann_laplacian_1d
    lap = np.kron(one_d(h), np.eye(w)) + np.kron(np.eye(h), one_d(w))
    precision_core = np.linalg.matrix_power(lap, order)
    if boundary == "zero":
        covariance = np.linalg.inv(precision_core)
    else:
        eigenvalues = np.linalg.eigvalsh(precision_core)
        delta = eigenvalues[eigenvalues > 1e-9].min()
        covariance = np.linalg.inv(precision_core + delta * np.eye(h * w))
    return covariance / np.mean(np.diag(covariance))


def gaussian_posterior(H, y, prior_covariance, noise_sigma):
    """Mean and covariance of k | y for y = H k + N(0, sigma^2), k ~ N(0, C)."""
    precision = H.T @ H / noise_sigma**2 + np.linalg.inv(prior_covariance)
    covariance = np.linalg.inv(precision)
    covariance = 0.5 * (covariance + covariance.T)
    mean = covariance @ H.T @ y / noise_sigma**2
    return mean, covariance


def log_marginal(H, y, prior_covariance, noise_sigma):
    """log N(y | 0, sigma^2 I + H C H^T), densely."""
    cov = noise_sigma**2 * np.eye(H.shape[0]) + H @ prior_covariance @ H.T
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return -0.5 * (y.size * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(cov, y))
