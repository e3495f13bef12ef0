"""Forward operator timings: direct vs FFT route, padded vs literal FFT lengths.

Part 1 times ``bayeskernel.forward.make_operator(A, kernel_shape, 'same',
route='direct'|'fft')`` on a 64x64 binary image for square kernels 3..63, on
the two workloads the library has:

* one kernel, value and gradient of ``0.5 ||H k - B||^2`` (what every NUTS
  leapfrog step costs), and
* a batch of 128 kernels through ``H`` (how the exact route builds its Gram
  matrix, ``_GRAM_BATCH = 128``),

so that the crossover constant ``_DIRECT_COST_LIMIT`` (route 'auto' takes the
direct route when ``image pixels * kernel entries`` is at most that) can be
checked against where the crossover really is.

Part 2 times the FFT route on the motivating sizes (100x100 image, 199x199
kernel, full length 298 = 2 * 149) with the operator's padded fast lengths
against literal lengths ``jnp.fft.rfft2(..., s=full_shape)``.

Everything runs under ``jax.enable_x64(True)`` and ``jax.jit``; times are the
best of several repeats after compilation (the machine is shared, the best
repeat is the least disturbed one).

Usage: ``python benchmarks/bench_forward.py [--quick] [--markdown FILE]``
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import Report, command_line, machine_info

from bayeskernel import forward
from bayeskernel.forward import make_operator, output_window


def best_time(fn, *args, repeats: int = 5, min_seconds: float = 0.05) -> float:
    """Best per-call seconds of ``fn(*args)`` (compiled first, results blocked on)."""
    jax.block_until_ready(fn(*args))  # compile + warm
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            jax.block_until_ready(fn(*args))
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or number >= 1 << 16:
            break
        number *= 2
    best = elapsed / number
    for _ in range(repeats - 1):
        start = time.perf_counter()
        for _ in range(number):
            jax.block_until_ready(fn(*args))
        best = min(best, (time.perf_counter() - start) / number)
    return best


@jax.jit
def apply(op, kernels):
    return op(kernels)


@jax.jit
def value_and_grad(op, kernel, observed):
    return jax.value_and_grad(lambda k: 0.5 * jnp.sum((op(k) - observed) ** 2))(kernel)


def crossover_table(
    report: Report, sizes, repeats: int, batch: int, image_size: int = 64, caption: str = ""
) -> None:
    rng = np.random.default_rng(0)
    m = image_size
    image = rng.binomial(1, 0.2, (m, m)).astype(float)
    rows = []
    for k in sizes:
        shape = (k, k)
        kernels = jnp.asarray(rng.normal(size=(batch, k, k)))
        one = kernels[0]
        observed = jnp.asarray(rng.normal(size=(m, m)))
        ops = {r: make_operator(image, shape, "same", route=r) for r in ("direct", "fft")}
        auto = make_operator(image, shape, "same").route
        diff = float(jnp.max(jnp.abs(apply(ops["direct"], kernels) - apply(ops["fft"], kernels))))
        t = {}
        for r, op in ops.items():
            t[r, "grad"] = best_time(value_and_grad, op, one, observed, repeats=repeats)
            t[r, "batch"] = best_time(apply, op, kernels, repeats=repeats)
        rows.append(
            [
                f"{k}x{k}",
                m * m * k * k,
                auto,
                t["direct", "grad"] * 1e6,
                t["fft", "grad"] * 1e6,
                "direct" if t["direct", "grad"] < t["fft", "grad"] else "fft",
                t["direct", "batch"] * 1e3,
                t["fft", "batch"] * 1e3,
                "direct" if t["direct", "batch"] < t["fft", "batch"] else "fft",
                diff,
            ]
        )
        print(f"  done {k}x{k}", file=sys.stderr, flush=True)
    report.table(
        f"Direct vs FFT route, {m}x{m} image, mode='same' (route 'auto' picks direct when "
        f"pixels*entries <= _DIRECT_COST_LIMIT = {forward._DIRECT_COST_LIMIT:,}){caption}",
        [
            "kernel",
            "pixels*entries",
            "auto route",
            "direct v+g 1 (us)",
            "fft v+g 1 (us)",
            "faster (1)",
            f"direct x{batch} (ms)",
            f"fft x{batch} (ms)",
            f"faster (x{batch})",
            "max |direct-fft|",
        ],
        rows,
    )


def literal_apply(image_fft, full_shape, window, kernels):
    (r0, c0), (h, w) = window
    full = jnp.fft.irfft2(image_fft * jnp.fft.rfft2(kernels, s=full_shape), s=full_shape)
    return full[..., r0 : r0 + h, c0 : c0 + w]


def literal_adjoint(image_fft, full_shape, window, kernel_shape, residual):
    (r0, c0), (h, w) = window
    padded = jnp.zeros(residual.shape[:-2] + full_shape, residual.dtype)
    padded = padded.at[..., r0 : r0 + h, c0 : c0 + w].set(residual)
    full = jnp.fft.irfft2(jnp.conj(image_fft) * jnp.fft.rfft2(padded), s=full_shape)
    return full[..., : kernel_shape[0], : kernel_shape[1]]


def padding_table(report: Report, size: int, batches, repeats: int) -> None:
    rng = np.random.default_rng(1)
    image = rng.binomial(1, 0.2, (size, size)).astype(float)
    kshape = (2 * size - 1, 2 * size - 1)
    full_shape = tuple(a + k - 1 for a, k in zip(image.shape, kshape))
    op = make_operator(image, kshape, "same", route="fft")
    window = output_window(image.shape, kshape, "same")
    image_fft = jnp.fft.rfft2(jnp.asarray(image), s=full_shape)
    lit_apply = jax.jit(lambda f, k: literal_apply(f, full_shape, window, k))
    lit_adj = jax.jit(lambda f, r: literal_adjoint(f, full_shape, window, kshape, r))
    pad_adj = jax.jit(lambda o, r: o.adjoint(r))
    rows = []
    for batch in batches:
        kernels = jnp.asarray(rng.normal(size=(batch,) + kshape))
        residual = jnp.asarray(rng.normal(size=(batch, size, size)))
        diff = float(jnp.max(jnp.abs(apply(op, kernels) - lit_apply(image_fft, kernels))))
        times = {
            "padded apply": best_time(apply, op, kernels, repeats=repeats),
            "literal apply": best_time(lit_apply, image_fft, kernels, repeats=repeats),
            "padded adjoint": best_time(pad_adj, op, residual, repeats=repeats),
            "literal adjoint": best_time(lit_adj, image_fft, residual, repeats=repeats),
        }
        rows.append(
            [
                batch,
                times["padded apply"] * 1e3,
                times["literal apply"] * 1e3,
                times["literal apply"] / times["padded apply"],
                times["padded adjoint"] * 1e3,
                times["literal adjoint"] * 1e3,
                times["literal adjoint"] / times["padded adjoint"],
                diff,
            ]
        )
        print(f"  done batch {batch}", file=sys.stderr, flush=True)
    report.table(
        f"FFT lengths, {size}x{size} image, {kshape[0]}x{kshape[1]} kernel, mode='same': "
        f"padded {op.fft_shape} (operator) vs literal {full_shape}",
        [
            "batch",
            "padded apply (ms)",
            "literal apply (ms)",
            "literal/padded",
            "padded adjoint (ms)",
            "literal adjoint (ms)",
            "literal/padded ",
            "max |diff|",
        ],
        rows,
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables as Markdown")
    args = parser.parse_args(argv)

    info = machine_info()
    info["jax_devices"] = str(jax.devices())
    command = command_line("benchmarks/bench_forward.py", argv)
    report = Report("bench_forward: forward operator routes and FFT lengths", command, info)
    report.header()
    if args.quick:
        sizes, repeats, batches, size = (3, 7, 15, 31), 3, (1, 8), 100
    else:
        sizes = (3, 5, 7, 9, 11, 13, 15, 19, 23, 27, 31, 39, 47, 55, 63)
        repeats, batches, size = 7, (1, 16, 128), 100
    with jax.enable_x64(True):
        crossover_table(report, sizes, repeats, batch=128)
        crossover_table(
            report, (9,), repeats, batch=128, image_size=48, caption=" - bench_methods' small case"
        )
        padding_table(report, size, batches, repeats)
    report.note(
        "Times: best of several repeats after JIT compilation, float64, CPU. "
        "'v+g 1' = value and gradient of 0.5*||H k - B||^2 for one kernel (a NUTS "
        "leapfrog step's operator cost); 'x128' = H applied to a batch of 128 kernels "
        "(the exact route's Gram matrix build)."
    )
    report.write(args.markdown)


if __name__ == "__main__":
    main()
