"""Helpers shared by the benchmark scripts: machine facts, tables, metrics.

Not a benchmark itself. The scripts import it as ``_common`` (they run as
``python benchmarks/NAME.py``, which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence

import numpy as np


def machine_info() -> dict:
    """Cores, load and versions, taken at start (the machine is shared)."""
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_at_start": tuple(round(x, 2) for x in os.getloadavg()),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "(unset)"),
    }
    for name in ("numpy", "scipy", "jax", "numpyro", "arviz"):
        module = sys.modules.get(name)
        if module is not None:
            info[name] = getattr(module, "__version__", "?")
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def command_line(script: str, argv=None) -> str:
    """The command that made a report, as typed (options included)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", script, *args])


def machine_lines(info: dict) -> list[str]:
    """``key: value`` lines for the machine facts."""
    return [f"{key}: {value}" for key, value in info.items()]


def fmt(value, digits: int = 3) -> str:
    """Short, table-friendly number formatting; ``-`` for missing/NaN."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits + 1) or abs(value) < 10 ** (-digits):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"


def plain_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Fixed-width text table."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """GitHub-flavoured Markdown table."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(fmt(c)) for c in row) + " |" for row in rows]
    return "\n".join(out)


def print_and_save(info: dict, headers: Sequence[str], rows, markdown: str | None) -> None:
    """Machine facts and one table to stdout, and as Markdown to ``markdown`` if given."""
    print()
    print("\n".join(machine_lines(info)))
    print(plain_table(headers, rows))
    if markdown:
        with open(markdown, "w") as fh:
            fh.write("\n".join(f"- {line}" for line in machine_lines(info)) + "\n\n")
            fh.write(markdown_table(headers, rows) + "\n")


class Report:
    """Collects sections (text + tables); prints them and writes Markdown."""

    def __init__(self, title: str, command: str, info: dict):
        self.title = title
        self.command = command
        self.info = info
        self.parts: list[tuple[str, object]] = []

    def note(self, text: str) -> None:
        print(text, flush=True)
        self.parts.append(("note", text))

    def table(self, caption: str, headers: Sequence[str], rows: Sequence[Sequence]) -> None:
        print(f"\n{caption}\n{plain_table(headers, rows)}\n", flush=True)
        self.parts.append(("table", (caption, list(headers), [list(r) for r in rows])))

    def header(self) -> None:
        print(f"{self.title}\n$ {self.command}", flush=True)
        print("\n".join(machine_lines(self.info)), flush=True)

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "```", f"$ {self.command}"]
        out += machine_lines(self.info)
        out += ["```", ""]
        for kind, payload in self.parts:
            if kind == "note":
                out += [payload, ""]
            else:
                caption, headers, rows = payload
                out += [f"**{caption}**", "", markdown_table(headers, rows), ""]
        return "\n".join(out)

    def write(self, path: str | None) -> None:
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as fh:
                fh.write(self.markdown())
            print(f"wrote {path}", flush=True)


def bulk_ess(draws: np.ndarray) -> np.ndarray:
    """Bulk ESS per variable of a ``(chains, draws, ...)`` array (ArviZ).

    A single chain is fine: ArviZ's bulk ESS splits chains in halves anyway.
    Constant variables give NaN.
    """
    import arviz as az

    draws = np.asarray(draws, dtype=np.float64)
    if draws.shape[1] < 8:
        return np.full(draws.shape[2:], np.nan)
    ess = az.ess(az.convert_to_dataset(draws), method="bulk")
    values = np.asarray(ess["x"].values, dtype=float)
    constant = np.ptp(draws, axis=(0, 1)) == 0
    return np.where(constant, np.nan, values)


def kernel_ess_summary(kernel_draws: np.ndarray) -> tuple[float, float]:
    """Min and median bulk ESS over kernel entries."""
    ess = bulk_ess(kernel_draws).ravel()
    ess = ess[np.isfinite(ess)]
    if ess.size == 0:
        return float("nan"), float("nan")
    return float(ess.min()), float(np.median(ess))


def iid_min_ess(shape: tuple[int, ...], seed: int = 0) -> float:
    """Min bulk ESS over entries of *independent* normal draws of this shape.

    The reference for ``kernel_ess_summary``'s minimum: with many entries and
    few draws, the smallest ESS estimate is low even for perfectly independent
    draws, so only a minimum well below this one points at a sampling problem.
    """
    draws = np.random.default_rng(seed).standard_normal(shape)
    return float(np.nanmin(bulk_ess(draws)))


def noise_ess(noise_draws: np.ndarray) -> float:
    """Bulk ESS of the noise sd; NaN when it is held constant (MAP)."""
    return float(bulk_ess(np.asarray(noise_draws)[..., None])[0])


def per_second(ess: float, seconds: float) -> float:
    return float("nan") if not np.isfinite(ess) else ess / seconds


def start_peer_report(
    parser: argparse.ArgumentParser,
    title: str,
    versions: Callable[[], str],
    selfcheck: Callable[[Report], bool],
    selfcheck_help: str,
) -> tuple[argparse.Namespace, Report]:
    """Parse a peer benchmark's command line and open its report.

    Adds ``--markdown`` and ``--selfcheck`` to ``parser`` (which has
    ``--seeds``), checks ``--seeds``, prints the header and the versions; with
    ``--selfcheck`` runs ``selfcheck(report)``, writes the report and exits
    (status 0 if it passed).
    """
    parser.add_argument("--markdown", help="write the report as Markdown to this file")
    parser.add_argument("--selfcheck", action="store_true", help=selfcheck_help)
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    report = Report(title, "python " + " ".join(sys.argv), machine_info())
    report.header()
    report.note(f"versions: {versions()}")
    if args.selfcheck:
        passed = selfcheck(report)
        report.note("selfcheck " + ("passed" if passed else "FAILED"))
        report.write(args.markdown)
        sys.exit(0 if passed else 1)
    return args, report
