"""Check the built site: every page has content, every public name has its page.

Run by ``make docs`` after the build::

    python docs/_ext/check_site.py docs/_build/html

Fails (exit code 1) when a page is empty, when a public name of a module in the
API reference has no entry there, when a gallery page has no output image, when
a page links to a local file that does not exist, or when a public callable's
docstring lacks its numpydoc sections (:func:`check_docstrings`). That check
alone, without a built site::

    python docs/_ext/check_site.py --docstrings
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import re
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bk_docs  # noqa: E402


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.in_main = 0
        self.text: list[str] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "main" or (tag == "article" and "bd-article" in (attrs.get("class") or "")):
            self.in_main += 1
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in ("main", "article") and self.in_main:
            self.in_main -= 1

    def handle_data(self, data):
        if self.in_main:
            self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


# Methods of the pytree protocol: JAX calls them, users never do.
PROTOCOL_METHODS = {"tree_flatten", "tree_unflatten"}


def _public_callables(module: str) -> list[tuple[str, object]]:
    """``(full name, object)`` of each callable the reference documents for ``module``.

    Its functions and classes, and each class's own public methods (static and
    class methods too); properties and dataclass fields are not callables here.
    """
    mod = importlib.import_module(module)
    here, _, _ = bk_docs.module_names(module)
    found = []
    for item in here:
        obj = getattr(mod, item)
        found.append((f"{module}.{item}", obj))
        if not inspect.isclass(obj):
            continue
        for name, attr in vars(obj).items():
            if name.startswith("_") or name in PROTOCOL_METHODS:
                continue
            if isinstance(attr, (staticmethod, classmethod)):
                attr = attr.__func__
            if isinstance(attr, (property, functools.cached_property)):
                continue
            if inspect.isroutine(attr):
                found.append((f"{module}.{item}.{name}", attr))
    return found


def _is_none(annotation) -> bool:
    return annotation is None or annotation == "None"


def docstring_problems(full: str, obj) -> list[str]:
    """What one callable's docstring lacks: itself, Parameters, or Returns/Yields.

    A class needs Parameters when it defines its own ``__init__`` (a dataclass's
    fields are its attributes, documented as such). A method without a docstring
    of its own inherits its base class's, as autodoc shows it.
    """
    from numpydoc.docscrape import ClassDoc, FunctionDoc

    doc = inspect.getdoc(obj)
    if not doc or not doc.strip():
        return [f"docstring: {full} has no docstring"]
    problems = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if inspect.isclass(obj):
            parsed = ClassDoc(obj, doc=doc, config={"show_class_members": False})
        else:
            parsed = FunctionDoc(obj, doc=doc)
    problems += [f"docstring: {full}: numpydoc: {w.message}" for w in caught]
    if inspect.isclass(obj):
        if dataclasses.is_dataclass(obj) or "__init__" not in vars(obj):
            return problems
        target = obj.__init__
    else:
        target = obj
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return problems
    params = [name for name in signature.parameters if name not in ("self", "cls")]
    if params and not (parsed["Parameters"] or parsed["Other Parameters"]):
        problems.append(f"docstring: {full} has no Parameters section ({', '.join(params)})")
    if inspect.isclass(obj):
        return problems
    if not _is_none(signature.return_annotation) and not (parsed["Returns"] or parsed["Yields"]):
        problems.append(f"docstring: {full} has no Returns section")
    return problems


def check_docstrings() -> tuple[int, list[str]]:
    """``(callables checked, problems)`` over every module of :data:`bk_docs.MODULES`."""
    checked, problems = 0, []
    for module, _ in bk_docs.MODULES:
        for full, obj in _public_callables(module):
            checked += 1
            problems += docstring_problems(full, obj)
    return checked, problems


def main(root: str) -> int:
    html = Path(root)
    problems = []
    pages = sorted(p for p in html.rglob("*.html") if "_static" not in p.parts)
    ids = set()
    for path in pages:
        page = parse(path)
        words = len(" ".join(page.text).split())
        if words < 20 and path.name not in ("genindex.html", "search.html", "py-modindex.html"):
            problems.append(f"{path.relative_to(html)}: only {words} words")
        for link in page.links:
            target = link.split("#")[0]
            if not target or re.match(r"^[a-z]+:", target):
                continue
            if not (path.parent / target).exists():
                problems.append(f"{path.relative_to(html)}: broken link {link}")
        for src in page.images:
            if not re.match(r"^[a-z]+:", src) and not (path.parent / src).exists():
                problems.append(f"{path.relative_to(html)}: missing image {src}")
        ids |= {f"{path.relative_to(html)}#{i}" for i in page.ids}

    # Every public name of every module of the reference has an entry.
    generated = html / "api" / "generated"
    names = 0
    for module, _ in bk_docs.MODULES:
        here, data, elsewhere = bk_docs.module_names(module)
        for item in here:
            names += 1
            if not (generated / f"{module}.{item}.html").exists():
                problems.append(f"API: no page for {module}.{item}")
        module_page = html / "api" / f"{module.replace('.', '_')}.html"
        for item in data:
            names += 1
            if f"api/{module_page.name}#{module}.{item}" not in ids:
                problems.append(f"API: no entry for {module}.{item}")
        for item, target in elsewhere:
            if not (generated / f"{target}.html").exists():
                problems.append(f"API: {module}.{item} points to {target}, which has no page")

    # Every gallery example has its output: images, or at least printed text.
    gallery = html / "auto_examples"
    examples = [p for p in gallery.glob("*.html") if p.stem not in ("index", "sg_execution_times")]
    for path in examples:
        page = parse(path)
        text = " ".join(page.text)
        if not any("sphx_glr_" in src for src in page.images):
            problems.append(f"{path.relative_to(html)}: no output image")
        if "Out:" not in text and "sphx-glr-script-out" not in path.read_text():
            problems.append(f"{path.relative_to(html)}: no printed output")

    # Every public callable has its numpydoc sections.
    callables, docstrings = check_docstrings()
    problems += docstrings

    for line in problems:
        print(line)
    print(
        f"checked {len(pages)} pages, {names} API entries, {len(examples)} gallery examples, "
        f"{callables} docstrings: {len(problems)} problem(s)"
    )
    return 1 if problems else 0


def main_docstrings() -> int:
    callables, problems = check_docstrings()
    for line in problems:
        print(line)
    print(f"checked {callables} docstrings: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--docstrings"]:
        sys.exit(main_docstrings())
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html"))
