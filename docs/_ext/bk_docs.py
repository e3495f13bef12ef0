"""Build-time helpers of the documentation (imported by ``docs/conf.py``).

* :func:`write_api_pages`: one reStructuredText page per public module, listing
  every name of its ``__all__`` (so a new public name appears in the reference
  without editing the docs);
* :func:`write_cli_help`: the command line's ``--help`` output, captured;
* :func:`reset_argv` and :func:`png_scraper`: how sphinx-gallery runs the
  examples (their command-line arguments) and collects the PNG files they write.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent

# The modules of the API reference, in the order of its index. ``bayeskernel``
# documents its ``__all__``; a submodule documents the names of its ``__all__``
# that ``bayeskernel`` does not export (those are linked to their top-level entry).
MODULES = [
    ("bayeskernel", "Fitting, results, priors, simulation: the top-level names"),
    ("bayeskernel.priors", "Kernel priors"),
    ("bayeskernel.observation", "The data side: observed pixels, noise weights, background"),
    ("bayeskernel.field", "Kernels that vary across the field"),
    ("bayeskernel.binning", "A kernel finer than the sensor (super-resolution)"),
    ("bayeskernel.sources", "Point sources at sub-pixel positions"),
    ("bayeskernel.shapes", "Output shapes and a NumPy convolution"),
    ("bayeskernel.plots", "Figures"),
    ("bayeskernel.diagnostics", "Convergence and residual checks"),
    ("bayeskernel.metrics", "Errors and coverage against a known kernel"),
    ("bayeskernel.io", "Reading arrays, saving and loading results"),
    ("bayeskernel.fits", "FITS images and kernel files"),
    ("bayeskernel.tiles", "Large fields: one kernel per tile, on Dask"),
    ("bayeskernel.averaging", "Bayesian model averaging over priors"),
    ("bayeskernel.infer.stages", "The exact route, stage by stage"),
    ("bayeskernel.infer.ellipse", "An elliptical profile's axis ratio and angle by the evidence"),
    ("bayeskernel.normal", "Normal matrices of the blur without the blur's matrix"),
    ("bayeskernel.compilation_cache", "JAX's persistent compilation cache"),
    ("bayeskernel.simulation", "Synthetic cases"),
]

# Objects left out of the reference, with the reason. Keep this empty: a name
# listed here is a public name without a usable docstring (mark it "TODO docstring").
EXCLUDE: dict[str, str] = {}

# Modules whose docstring is left off their page (the names are all there). Keep
# this empty too: a module docstring that docutils cannot parse is a defect.
NO_MODULE_DOCSTRING: set[str] = set()

# A name exported by several modules is documented once, where it is defined.
CANONICAL = {"bayeskernel.tiles.persistent_compilation_cache": "bayeskernel.compilation_cache"}


def _is_data(value) -> bool:
    return not (inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value))


def _short_repr(value, limit: int = 70) -> str:
    if isinstance(value, dict):
        text = "{" + ", ".join(repr(k) for k in value) + "}" if value else "{}"
        text = f"dict with keys {text}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _heading(text: str, char: str) -> str:
    return f"{text}\n{char * len(text)}\n"


def module_names(name: str) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """``(documented here, data constants, (name, where documented))`` of one module."""
    import bayeskernel

    module = importlib.import_module(name)
    top = set(bayeskernel.__all__) - {"__version__"}
    here, data, elsewhere = [], [], []
    for item in module.__all__:
        full = f"{name}.{item}"
        if item == "__version__" or full in EXCLUDE:
            continue
        if name != "bayeskernel" and item in top:
            elsewhere.append((item, f"bayeskernel.{item}"))
        elif full in CANONICAL:
            elsewhere.append((item, f"{CANONICAL[full]}.{item}"))
        elif _is_data(getattr(module, item)):
            data.append(item)
        else:
            here.append(item)
    return here, data, elsewhere


def _module_page(name: str, summary: str) -> str:
    module = importlib.import_module(name)
    here, data, elsewhere = module_names(name)
    lines = [
        f".. _api-{name}:",
        "",
        _heading(f"``{name}``", "="),
        *([f"*{summary}.*", ""] if name in NO_MODULE_DOCSTRING else []),
        *(
            [f".. module:: {name}"]
            if name in NO_MODULE_DOCSTRING
            else [f".. automodule:: {name}", "   :no-members:"]
        ),
        "",
        f".. currentmodule:: {name}",
        "",
    ]
    if here:
        lines += [".. autosummary::", "   :toctree: generated/", "   :nosignatures:", ""]
        lines += [f"   {item}" for item in here]
        lines.append("")
    if data:
        lines += [_heading("Constants", "-")]
        for item in data:
            value = _short_repr(getattr(module, item))
            lines += [f".. data:: {item}", f"   :value: {value}", ""]
    if elsewhere:
        lines += [
            _heading("Also here", "-"),
            "Documented under their shorter name:",
            "",
        ]
        lines += [f"* ``{name}.{item}``: :obj:`{target}`" for item, target in elsewhere]
        lines.append("")
    del module
    return "\n".join(lines)


def write_api_pages(out: Path = DOCS / "api") -> None:
    """Write ``docs/api/index.rst`` and one page per module of :data:`MODULES`."""
    out.mkdir(exist_ok=True)
    index = [
        _heading("API reference", "="),
        "Every public name of the library, from its docstrings. ``import bayeskernel as bk``",
        "gives the top-level names (``bk.fit``, ``bk.simulate``, ...); the submodules",
        "(``bk.plots``, ``bk.io``, ...) load on first use. The command line is on",
        ":doc:`its own page <../command_line>`.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ]
    for name, summary in MODULES:
        page = name.replace(".", "_")
        text = _module_page(name, summary)
        path = out / f"{page}.rst"
        if not path.exists() or path.read_text() != text:  # keep mtimes of unchanged pages
            path.write_text(text)
        index.append(f"   {page}")
    index.append("")
    path = out / "index.rst"
    text = "\n".join(index)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def write_cli_help(out: Path = DOCS / "_generated") -> None:
    """Capture ``bayeskernel [COMMAND] --help`` into ``docs/_generated/cli_*.txt``."""
    out.mkdir(exist_ok=True)
    env = {**os.environ, "COLUMNS": "88", "JAX_PLATFORMS": "cpu"}
    for command in ("", "fit", "simulate", "demo"):
        args = [sys.executable, "-m", "bayeskernel", *([command] if command else []), "--help"]
        result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr}")
        (out / f"cli_{command or 'main'}.txt").write_text(result.stdout)


# --- sphinx-gallery -------------------------------------------------------

GALLERY_OUT = DOCS / "_build" / "gallery_out"

# The arguments each example runs with during the build, beyond ``--out`` for
# those that write files (its own defaults otherwise: each takes under 30 s on 2 cores).
GALLERY_ARGS = {
    "motivating_case.py": [],
    "choose_prior.py": [],
    "tiles_field.py": ["--workers", "2"],
}
WRITES_FILES = {"motivating_case.py", "choose_prior.py", "tiles_field.py"}


def gallery_out(src_file) -> Path:
    """The folder an example writes its figures to during the build."""
    return GALLERY_OUT / Path(src_file).stem


def reset_argv(gallery_conf, script_vars) -> list[str]:
    """``sys.argv[1:]`` of an example: ``--out`` a fresh build folder, and GALLERY_ARGS."""
    src = Path(script_vars["src_file"])
    out = gallery_out(src)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    extra = ["--out", str(out)] if src.name in WRITES_FILES else []
    return [*extra, *GALLERY_ARGS.get(src.name, [])]


def png_scraper(block, block_vars, gallery_conf, **kwargs) -> str:
    """Collect the PNG files an example wrote under its ``--out`` folder, oldest first.

    The library's figures are :class:`matplotlib.figure.Figure` objects that the
    examples save to files (pyplot never sees them), so the gallery shows the files.
    """
    from sphinx_gallery.scrapers import figure_rst

    out = gallery_out(block_vars["src_file"])
    seen = block_vars.setdefault("bk_png_seen", set())
    new = sorted(
        (p for p in out.rglob("*.png") if p not in seen),
        key=lambda p: (p.stat().st_mtime_ns, str(p)),
    )
    iterator = block_vars["image_path_iterator"]
    images = []
    for path, target in zip(new, iterator):
        shutil.copyfile(path, target)
        seen.add(path)
        images.append(target)
    return figure_rst(images, gallery_conf["src_dir"])


# --- the reference's summary tables ---------------------------------------


def first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, never cut inside ````...````."""
    lines = []
    for line in doc.strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    text = " ".join(lines)
    inside = False
    i = 0
    while i < len(text):
        if text.startswith("``", i):
            inside = not inside
            i += 2
            continue
        if not inside and text[i] == "." and (i + 1 == len(text) or text[i + 1] == " "):
            return text[: i + 1]
        i += 1
    return text


def setup_summaries(app) -> None:
    """Register ``autosummary`` again, with summaries that keep inline literals whole.

    Sphinx's autosummary cuts a summary at the first ``". "``, also inside an inline
    literal such as ````0 .. 5````, which leaves the table's cell unbalanced.
    """
    import inspect as _inspect

    from sphinx.ext.autosummary import Autosummary, import_by_name

    class LiteralSafeAutosummary(Autosummary):
        def get_items(self, names):
            items = []
            for name, sig, summary, real_name in super().get_items(names):
                if summary.count("``") % 2:
                    try:
                        obj = import_by_name(real_name)[1]
                        summary = first_sentence(_inspect.getdoc(obj) or "")
                    except ImportError:
                        pass
                items.append((name, sig, summary, real_name))
            return items

    app.add_directive("autosummary", LiteralSafeAutosummary, override=True)
