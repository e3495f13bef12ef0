"""The normal-equations matrix ``H^T H`` of the blur, exactly, without ``H``.

``(H^T H)[k, k'] = sum_{i in window} A[i - k] A[i - k']``: the autocorrelation of
``A`` at lag ``k' - k``, except that the output window (``'same'``, ``'valid'``)
cuts off the sum near the image border. We write the window's sum as the full
autocorrelation minus the border strips it excludes, plus the corners
subtracted twice (inclusion-exclusion):

    sum_{I0 x I1} = sum_{all} - sum_{X0 x all} - sum_{all x X1} + sum_{X0 x X1}

with ``X = [0, lo) U [hi, N)`` the rows (columns) a kernel offset cannot reach.
The full autocorrelation is one FFT; the strips are row (column) correlations
of at most ``2 P`` border rows, by FFT along the row; the corners are small
``P x P`` blocks. For a 2048 x 2048 image and a 63 x 63 kernel this takes
seconds, against ~4,000 FFT products of the full image for the column-by-column
build, and it is exact (checked against the dense ``H`` in
``tests/test_normal.py``).

A kernel field (:mod:`bayeskernel.field`) weights the sum by monomials ``m(i)``
of the output position: ``sum_{i in window} m(i) A[i - k] A[i - k']``. With
``u = i - k`` the monomial becomes ``m(u + k)``, a polynomial in ``u`` whose
coefficients are powers of ``k`` (the binomial theorem), so each block is a
``k``-weighted sum of the same windowed sums with the *first* factor weighted
by a monomial of ``u``: ``sum_{u in window - k} f(u) A[u] A[u - d]``, cross-
rather than autocorrelations (the moment expansion of SFFT, Hu et al. 2022,
here with the window's border handled exactly). Order 2 needs the 15
monomials of degree up to 4: fifteen FFT products of the image in all,
against one transposed blur per kernel entry and monomial.
"""

from __future__ import annotations

from math import comb

import numpy as np
import scipy.fft

from bayeskernel.forward import output_window

__all__ = ["PATCH_LIMIT", "field_normal_matrix", "normal_matrix", "weighted_normal_matrix"]


def normal_matrix(image, kernel_shape: tuple[int, int], mode: str = "same") -> np.ndarray:
    """``H^T H`` for ``H k = convolve2d(image, k, mode).ravel()``, float64.

    Parameters
    ----------
    image : (N0, N1) array_like
    kernel_shape : (int, int)
    mode : {'same', 'full', 'valid'}

    Returns
    -------
    (P0 * P1, P0 * P1) ndarray
        Indexed by the row-major flattened kernel.
    """
    a = np.asarray(image, dtype=np.float64)
    return _windowed_products(a, a, kernel_shape, mode).reshape(_square(kernel_shape))


def weighted_normal_matrix(
    image, weights, kernel_shape: tuple[int, int], mode: str = "same"
) -> np.ndarray:
    """``H^T diag(w) H`` for per-pixel weights ``w`` on the output grid, float64.

    No moment expansion applies to arbitrary weights. The matrix is the Gram
    matrix of the image's patches, ``P^T diag(w) P`` with ``P[b, k] = A[b +
    start - k]``, built by matrix products over blocks of output rows: ``size^2``
    multiply-adds per pixel. For kernels of up to about a thousand entries this
    beats one float64 FFT correlation per kernel entry (441 entries on a
    512 x 512 image: 1.3 s against 2.1 s on two cores; 2048 x 2048: 18 s
    against 46 s; at 41 x 41 on 256 x 256 the FFTs win, 2.3 s against 2.9 s).

    Parameters
    ----------
    image : (N0, N1) array_like
    weights : (H, W) or (Q, H, W) array_like
        On the output grid of ``mode`` (zero: unobserved); ``Q`` maps give ``Q``
        matrices from one pass over the patches (a kernel field's monomials
        times the noise weights).
    kernel_shape : (int, int)
    mode : {'same', 'full', 'valid'}

    Returns
    -------
    (P0 * P1, P0 * P1) or (Q, P0 * P1, P0 * P1) ndarray
        Indexed by the row-major flattened kernel.
    """
    a = np.asarray(image, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    p0, p1 = tuple(kernel_shape)
    start, size = output_window(a.shape, kernel_shape, mode)
    if w.shape[-2:] != tuple(size) or w.ndim not in (2, 3):
        raise ValueError(f"weights must have the output shape {tuple(size)}, got {w.shape}")
    single = w.ndim == 2
    w = w[None] if single else w
    padded = np.pad(a, ((p0 - 1, p0 - 1), (p1 - 1, p1 - 1)))
    # windows[t][j] = padded[t + j] = A[t + j - (P - 1)]: offset k = P - 1 - j at t = b + start.
    windows = np.lib.stride_tricks.sliding_window_view(padded, (p0, p1))
    windows = windows[start[0] : start[0] + size[0], start[1] : start[1] + size[1]]
    entries, count = p0 * p1, w.shape[0]
    rows = max(1, _BLOCK_ELEMENTS // max(1, size[1] * entries * count))
    out = np.zeros((entries, count * entries))
    for r in range(0, size[0], rows):
        patches = np.ascontiguousarray(windows[r : r + rows]).reshape(-1, entries)
        scaled = patches[:, None, :] * w[:, r : r + rows].reshape(count, -1).T[:, :, None]
        out += patches.T @ scaled.reshape(patches.shape[0], -1)
    # Back from window order j to kernel order k = P - 1 - j on both axes.
    out = out.reshape(p0, p1, count, p0, p1)[::-1, ::-1, :, ::-1, ::-1]
    out = np.ascontiguousarray(out.transpose(2, 0, 1, 3, 4)).reshape(count, entries, entries)
    return out[0] if single else out


# Patch entries per block of weighted_normal_matrix (32 MB of float64).
_BLOCK_ELEMENTS = 4_000_000
# Kernels up to this many entries take weighted_normal_matrix's products; larger
# ones one FFT correlation per entry (measured crossover between 31 x 31 and 41 x 41).
PATCH_LIMIT = 1024


def _square(kernel_shape) -> tuple[int, int]:
    size = int(np.prod(kernel_shape))
    return size, size


def field_normal_matrix(image, kernel_shape: tuple[int, int], mode: str, order: int) -> np.ndarray:
    """``H_f^T H_f`` of a kernel field of ``order`` on unit weights, float64.

    ``H_f`` maps components ``(P, kh, kw)`` to ``sum_p phi_p * convolve2d(image,
    K_p, mode)`` with ``phi_p`` the monomials of :func:`bayeskernel.field.field_basis`.

    Parameters
    ----------
    image : (N0, N1) array_like
    kernel_shape : (int, int)
    mode : {'same', 'full', 'valid'}
    order : int
        Polynomial order of the field (``>= 0``).

    Returns
    -------
    (P * kh * kw, P * kh * kw) ndarray
        Component-major: block ``(p, q)`` is ``H^T diag(phi_p phi_q) H``.
    """
    a = np.asarray(image, dtype=np.float64)
    p0, p1 = tuple(kernel_shape)
    start, size = output_window(a.shape, kernel_shape, mode)
    # Normalised output coordinate of full-output index i: alpha (i - start) + beta.
    scale = [(2.0 / (n - 1), -1.0) if n > 1 else (0.0, 0.0) for n in size]
    exponents = [(e, t - e) for t in range(order + 1) for e in range(t, -1, -1)]
    monomials = sorted({(e[0] + f[0], e[1] + f[1]) for e in exponents for f in exponents})
    # Moment images f_j(u) A[u]: the first factor weighted by monomials of u itself,
    # expanded about the kernel's centre c (i = (u + c) + (k - c)) so that the powers
    # of k - c stay small and the sum cancels little.
    centre = [(p - 1) // 2 for p in (p0, p1)]
    coords = [
        alpha * (np.arange(n) + c - s) + beta
        for (alpha, beta), n, c, s in zip(scale, a.shape, centre, start)
    ]
    needed = sorted(
        {(j0, j1) for m0, m1 in monomials for j0 in range(m0 + 1) for j1 in range(m1 + 1)}
    )
    moments = {
        (j0, j1): _windowed_products(
            a * np.outer(coords[0] ** j0, coords[1] ** j1), a, kernel_shape, mode
        )
        for j0, j1 in needed
    }
    # (alpha (k - c))^e on each axis, broadcast over (k0, k1, k0', k1').
    k0 = (scale[0][0] * (np.arange(p0) - centre[0]))[:, None, None, None]
    k1 = (scale[1][0] * (np.arange(p1) - centre[1]))[None, :, None, None]
    blocks = {}
    for m0, m1 in monomials:
        total = np.zeros((p0, p1, p0, p1))
        for j0 in range(m0 + 1):
            for j1 in range(m1 + 1):
                coefficient = comb(m0, j0) * comb(m1, j1) * k0 ** (m0 - j0) * k1 ** (m1 - j1)
                total += coefficient * moments[(j0, j1)]
        blocks[(m0, m1)] = total.reshape(p0 * p1, p0 * p1)
    return np.block([[blocks[(e[0] + f[0], e[1] + f[1])] for f in exponents] for e in exponents])


def _windowed_products(
    left: np.ndarray, right: np.ndarray, kernel_shape: tuple[int, int], mode: str
) -> np.ndarray:
    """``out[k, k'] = sum_{i in window} left[i - k] right[i - k']``, shape ``(P0, P1, P0, P1)``."""
    a = right
    (n0, n1), (p0, p1) = a.shape, tuple(kernel_shape)
    start, size = output_window(a.shape, kernel_shape, mode)
    # Per axis and kernel offset k: the image rows u = i - k that the window reaches
    # are [lo, hi); head [0, lo) and tail [hi, N) are cut off.
    lo0, hi0 = _reach(start[0], size[0], n0, p0)
    lo1, hi1 = _reach(start[1], size[1], n1, p1)

    full = _correlation(left, a, (p0, p1))  # (2P0-1, 2P1-1), lag index d + P - 1
    heads0, tails0 = _strip_sums(left, a, p0, p1, lo0, hi0)  # (P0, 2P0-1, 2P1-1)
    # (P1, 2P1-1, 2P0-1), axes swapped
    heads1, tails1 = _strip_sums(left.T, a.T, p1, p0, lo1, hi1)
    strips1 = (heads1 + tails1).transpose(0, 2, 1)  # (P1, 2P0-1, 2P1-1)
    strips0 = heads0 + tails0

    out = np.zeros((p0, p1, p0, p1))
    cols = np.arange(p1)
    # lag index j1 of (k1, k1'): k1' - k1 + P1 - 1
    lag1 = cols[None, :] - cols[:, None] + p1 - 1
    corner_blocks = _corner_sums(left, a, p0, p1, lo0, hi0, lo1, hi1)
    for j0 in range(2 * p0 - 1):
        d0 = j0 - (p0 - 1)
        k0 = np.arange(max(0, -d0), min(p0, p0 - d0))  # k0' = k0 + d0 in range
        # entry(k0, k1, d1) for this d0, all k1 and lags d1
        entry = (
            full[j0][None, None, :]
            - strips0[k0, j0][:, None, :]
            - strips1[:, j0][None, :, :]
            + corner_blocks(j0, k0)
        )
        # gather lag index per (k1, k1') pair
        out[k0, :, k0 + d0, :] = np.take_along_axis(
            entry, np.broadcast_to(lag1, (k0.size, p1, p1)), axis=2
        )
    return out


def _reach(start: int, size: int, n: int, p: int):
    """``[lo, hi)``: image indices reached by each kernel offset within the window."""
    k = np.arange(p)
    lo = np.clip(start - k, 0, n)
    hi = np.clip(start - k + size, lo, n)
    return lo, hi


def _fft_length(n: int, p: int) -> int:
    # Long enough that lags |d| < p do not wrap around.
    return scipy.fft.next_fast_len(n + p, real=True)


def _correlation(left: np.ndarray, a: np.ndarray, lags: tuple[int, int]) -> np.ndarray:
    """``c[d] = sum_u left[u] a[u - d]`` for ``|d| < lags``, zero outside ``a``."""
    shape = tuple(_fft_length(n, p) for n, p in zip(a.shape, lags))
    spectrum = scipy.fft.rfft2(a, shape)
    first = spectrum if left is a else scipy.fft.rfft2(left, shape)
    circular = scipy.fft.irfft2(first * spectrum.conj(), shape)
    rows = np.arange(-(lags[0] - 1), lags[0]) % shape[0]
    cols = np.arange(-(lags[1] - 1), lags[1]) % shape[1]
    return circular[np.ix_(rows, cols)]


def _strip_sums(left: np.ndarray, a: np.ndarray, p0: int, p1: int, lo: np.ndarray, hi: np.ndarray):
    """Sums over the cut-off head rows ``[0, lo[k])`` and tail rows ``[hi[k], N)``.

    Returns ``heads, tails`` of shape ``(P0, 2P0-1, 2P1-1)``: for each kernel
    offset ``k`` and lag ``(d0, d1)``, ``sum_{u0 in strip(k)} sum_{u1} left[u] a[u - d]``.
    """
    n0, n1 = a.shape
    length = _fft_length(n1, p1)
    head_rows = np.arange(0, int(lo.max()))
    tail_rows = np.arange(int(hi.min()), n0)
    lag0 = np.arange(-(p0 - 1), p0)
    lag1 = np.arange(-(p1 - 1), p1) % length
    spectra = scipy.fft.rfft(a, length, axis=1)
    firsts = spectra if left is a else scipy.fft.rfft(left, length, axis=1)

    def row_correlations(rows):
        # rho[u0, d0, d1] = sum_{u1} left[u0, u1] a[u0 - d0, u1 - d1]
        out = np.zeros((rows.size, lag0.size, lag1.size))
        for j, d0 in enumerate(lag0):
            partner = rows - d0
            ok = (partner >= 0) & (partner < n0)
            if ok.any():
                prod = firsts[rows[ok]] * spectra[partner[ok]].conj()
                out[ok, j] = scipy.fft.irfft(prod, length, axis=1)[:, lag1]
        return out

    heads = np.zeros((p0, lag0.size, lag1.size))
    tails = np.zeros_like(heads)
    if head_rows.size:
        cumulative = np.concatenate(
            [np.zeros((1, lag0.size, lag1.size)), np.cumsum(row_correlations(head_rows), 0)]
        )
        heads = cumulative[lo]  # sum over rows [0, lo)
    if tail_rows.size:
        rho = row_correlations(tail_rows)
        # suffix sums: rows [hi, N) = rows tail_rows[hi - first:]
        suffix = np.concatenate([np.cumsum(rho[::-1], 0)[::-1], np.zeros((1,) + rho.shape[1:])])
        tails = suffix[hi - tail_rows[0]]
    return heads, tails


def _corner_sums(left, a, p0, p1, lo0, hi0, lo1, hi1):
    """Sums over the four cut-off corners, as a function of (lag index j0, offsets k0).

    Returns a callable ``(j0, k0) -> (k0.size, P1, 2P1-1)`` array: for each
    ``k0``, ``k1`` and lag ``d1``, the sum of ``left[u] a[u - d]`` over
    ``u0 in X0(k0)``, ``u1 in X1(k1)``.
    """
    n0, n1 = a.shape
    lag1 = np.arange(-(p1 - 1), p1)
    # Row and column ranges of the corner blocks and how each offset indexes them.
    row_parts = [(0, int(lo0.max()), lo0, "head"), (int(hi0.min()), n0, hi0, "tail")]
    col_parts = [(0, int(lo1.max()), lo1, "head"), (int(hi1.min()), n1, hi1, "tail")]
    padded = np.pad(a, ((p0, p0), (p1, p1)))

    def shifted(rows, cols, d0, d1):
        # a[u - d] on the block rows x cols, zero outside the image
        return padded[p0 + rows[0] - d0 : p0 + rows[-1] + 1 - d0, :][
            :, p1 + cols[0] - d1 : p1 + cols[-1] + 1 - d1
        ]

    def at(j0, k0):
        d0 = j0 - (p0 - 1)
        total = np.zeros((k0.size, p1, lag1.size))
        for r_start, r_stop, r_bound, r_kind in row_parts:
            if r_stop <= r_start:
                continue
            rows = np.arange(r_start, r_stop)
            for c_start, c_stop, c_bound, c_kind in col_parts:
                if c_stop <= c_start:
                    continue
                cols = np.arange(c_start, c_stop)
                block = left[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
                # prod[d1, u0, u1] over the block
                prod = np.stack([block * shifted(rows, cols, d0, d1) for d1 in lag1])
                table = _prefix_or_suffix(prod, r_kind, c_kind)
                # which block row/col each offset's strip ends at
                ri = (r_bound[k0] - r_start) if r_kind == "head" else (r_bound[k0] - r_start)
                ci = (c_bound - c_start) if c_kind == "head" else (c_bound - c_start)
                total += table[:, ri][:, :, ci].transpose(1, 2, 0)
        return total

    return at


def _prefix_or_suffix(prod: np.ndarray, row_kind: str, col_kind: str) -> np.ndarray:
    """``table[:, x, y]``: sum of ``prod`` over block rows before ``x`` (head) or
    from ``x`` on (tail), and likewise for columns; one padding row/column."""
    out = prod
    for axis, kind in ((1, row_kind), (2, col_kind)):
        pad = [(0, 0)] * 3
        if kind == "head":
            out = np.cumsum(out, axis=axis)
            pad[axis] = (1, 0)
        else:
            out = np.flip(np.cumsum(np.flip(out, axis=axis), axis=axis), axis=axis)
            pad[axis] = (0, 1)
        out = np.pad(out, pad)
    return out
