"""The package's imports flow one way: no cycles, no private names across modules.

Read from the source (``ast``), so function-level imports count as much as
module-level ones; imports under ``if TYPE_CHECKING:`` never run and do not.
"""

import ast
from pathlib import Path

import bayeskernel

PACKAGE = Path(bayeskernel.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(name: str, path: Path, modules: dict) -> list[tuple[str, list[str]]]:
    """``(imported module, imported names)`` of every import that can run."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []

    def visit(node):
        if _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            found.extend((sub, []) for sub in submodules)
            found.append((target, [n for n in names if f"{target}.{n}" not in modules]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return [(target, names) for target, names in found if target.startswith("bayeskernel")]


def _graph():
    modules = _modules()
    return modules, {
        name: {t for t, _ in _imports(name, path, modules) if t in modules and t != name}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    _, graph = _graph()
    # The package's __init__ loads its names lazily (by string), so it is no edge.
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_crosses_a_module_boundary():
    modules = _modules()
    crossing = [
        f"{name} imports {target}.{imported}"
        for name, path in modules.items()
        for target, names in _imports(name, path, modules)
        for imported in names
        if imported.startswith("_") and target != name
    ]
    assert crossing == []


def test_repr_is_cheap_and_str_is_the_summary(monkeypatch):
    import numpy as np

    posterior = bayeskernel.KernelPosterior(
        kernel_draws=np.zeros((2, 3, 4, 4)), noise_sigma_draws=np.ones((2, 3)),
        kernel_scale_draws=np.ones((2, 3)), method="exact", prior="smooth",
    )  # fmt: skip

    def expensive(*args, **kwargs):
        raise AssertionError("repr ran the summary")

    text = str(posterior)
    assert "noise sd" in text
    monkeypatch.setattr(bayeskernel.KernelPosterior, "summary", expensive)
    assert repr(posterior).startswith("KernelPosterior(4x4 kernel, prior='smooth'")


def test_the_prior_catalogue_is_the_one_place_names_live():
    from bayeskernel.catalogue import PRIORS, prior_help
    from bayeskernel.priors import resolve_prior

    for name, entry in PRIORS.items():
        prior = resolve_prior(name, (5, 5))
        assert prior.linear_gaussian == entry.linear_gaussian, name
        assert f"'{name}'" in bayeskernel.fit.__doc__, f"fit's docstring does not name {name!r}"
        assert f"'{name}'" in prior_help(), name


def test_the_command_line_parses_without_loading_jax():
    import subprocess
    import sys

    code = (
        "import sys; from bayeskernel.cli import build_parser; build_parser().parse_args("
        "['fit', 'a', 'b', '--kernel-shape', '3', '3', '--out', 'o']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'numpyro')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
