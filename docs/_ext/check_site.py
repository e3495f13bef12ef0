"""Check the built site: every page has content, every public name has its page.

Run by ``make docs`` after the build::

    python docs/_ext/check_site.py docs/_build/html

Fails (exit code 1) when a page is empty, when a public name of a module in the
API reference has no entry there, when a gallery page has no output image, or when
a page links to a local file that does not exist.
"""

from __future__ import annotations

import re
import sys
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

    for line in problems:
        print(line)
    print(
        f"checked {len(pages)} pages, {names} API entries, {len(examples)} gallery examples: "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html"))
