"""The documentation: every link resolves and every public name is documented.

Anchors follow GitHub's rules: the heading's text (markdown marks removed) in
lowercase, characters other than letters, digits, spaces, '-' and '_'
dropped, spaces turned into '-', and '-1', '-2', ... appended to repeats.
"""
from __future__ import annotations

import doctest
import inspect
import re
from pathlib import Path

import pytest

import fastinterp
import fastinterp.models
import fastinterp.optim
import fastinterp.plugins

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README] + sorted((ROOT / "examples").glob("**/README.md"))

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")


def _prose_lines(text: str):
    """(line number, line) of the lines outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def _code_text(text: str) -> str:
    """All code of a markdown text: fenced blocks and inline code spans."""
    parts, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif fenced:
            parts.append(line)
        else:
            parts.extend(m.group(2) for m in INLINE_CODE.finditer(line))
    return "\n".join(parts)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading text (before de-duplication)."""
    text = LINK.sub(lambda m: m.group(1), heading)            # [text](url) -> text
    text = re.sub(r"[`*]|(?<!\w)_|_(?!\w)", "", text)        # code and emphasis marks
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def headings(path: Path) -> list[tuple[int, str]]:
    """(level, text) of every heading outside code blocks."""
    found = []
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if m:
            found.append((len(m.group(1)), m.group(2)))
    return found


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub generates for a markdown file."""
    seen: dict[str, int] = {}
    result = set()
    for _, text in headings(path):
        base = slug(text)
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link outside code."""
    found = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub("", line)
        found.extend((number, m.group(2)) for m in LINK.finditer(line))
    return found


def _contents_links() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Contents\n", 1)[1].split("\n## ", 1)[0]
    return [target for _, target in (("", m.group(2)) for m in LINK.finditer(section))]


# --- the anchor rules themselves ------------------------------------------------------

@pytest.mark.parametrize("heading, anchor", [
    ("Plugins: the C ABI", "plugins-the-c-abi"),
    ("Spatial sampling: `affine_grid`, `grid_sample` and their gradients",
     "spatial-sampling-affine_grid-grid_sample-and-their-gradients"),
    ("Optimizers: `fastinterp.optim`", "optimizers-fastinterpoptim"),
    ("How a call runs: backends, DLPack, errors, threads",
     "how-a-call-runs-backends-dlpack-errors-threads"),
    ("`knn(x, queries, k, return_distances=True)`", "knnx-queries-k-return_distancestrue"),
    ("Edge values (documented behaviour)", "edge-values-documented-behaviour"),
    ("**Bold** and _emphasis_", "bold-and-emphasis"),
])
def test_slug_follows_github(heading, anchor):
    assert slug(heading) == anchor


def test_repeated_headings_get_numbered_anchors(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("# A\n```\n# not a heading\n```\n## A\n### A\n")
    assert anchors(doc) == {"a", "a-1", "a-2"}


# --- README and examples ---------------------------------------------------------------

def test_contents_lists_every_section_and_resolves():
    targets = _contents_links()
    assert targets, "README.md has no Contents links"
    known = anchors(README)
    dead = [t for t in targets if t.lstrip("#") not in known]
    assert not dead, f"Contents links to headings that do not exist: {dead}"
    listed = {t.lstrip("#") for t in targets}
    sections = [text for level, text in headings(README) if level == 2]
    after = sections[sections.index("Contents") + 1:]
    missing = [text for text in after if slug(text) not in listed]
    assert not missing, f"sections missing from Contents: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(doc):
    problems = []
    for number, target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):       # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        where = f"{doc.relative_to(ROOT)}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with that anchor in {dest.name}")
    assert not problems, "\n".join(problems)


def _public_names():
    for name in fastinterp.__all__:
        yield "fastinterp", name, name
    for module in (fastinterp.optim, fastinterp.models):
        for name in module.__all__:
            yield module.__name__, name, name
    for name in fastinterp.plugins.__all__:
        # functions such as load or list need their module to be recognisable
        yield "fastinterp.plugins", name, f"plugins.{name}" if name.islower() else name


@pytest.mark.parametrize("module, name, spelling", list(_public_names()),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_public_name_is_documented(module, name, spelling):
    code = _code_text(README.read_text(encoding="utf-8"))
    assert re.search(rf"(?<![\w.]){re.escape(spelling)}\b|\.{re.escape(spelling)}\b", code), (
        f"{module}.{name} does not appear in README.md's code (expected `{spelling}`)")


def test_public_modules_list_their_names():
    """The documented names are the modules' real exports (no stale __all__ entry)."""
    for module in (fastinterp, fastinterp.optim, fastinterp.models, fastinterp.plugins):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"


def _public_callables():
    for module in (fastinterp, fastinterp.optim, fastinterp.models, fastinterp.plugins):
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and not inspect.ismodule(obj):
                yield f"{module.__name__}.{name}", obj


@pytest.mark.parametrize("name, obj", list(_public_callables()), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_every_public_callable_has_a_working_example(name, obj):
    """Each public function and class shows an example, and the example runs as shown."""
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
    assert tests and any(t.examples for t in tests), f"{name}: no example in its docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


# --- docstrings that point into the README ------------------------------------------------

def _docstrings():
    for module in (fastinterp, fastinterp.optim, fastinterp.models, fastinterp.plugins):
        for name in module.__all__:
            doc = getattr(getattr(module, name), "__doc__", None) or ""
            yield f"{module.__name__}.{name}", doc


def _readme_references(doc: str):
    """Anchors (README.md#x) and section names ("the README's x section") in a docstring."""
    flat = " ".join(doc.split())
    refs = [("anchor", a) for a in re.findall(r"README\.md#([\w-]+)", flat)]
    refs += [("section", s) for s in re.findall(r"README's ([\w\- ]+?) section", flat)]
    return refs


def _section_exists(words: str) -> bool:
    """A top-level section whose title holds every word's stem ("resize": "Resizing ...")."""
    stems = [w[:5].lower() for w in words.split()]
    return any(level == 2 and all(s in text.lower() for s in stems)
               for level, text in headings(README))


def test_resize_docstring_points_at_an_existing_section():
    refs = _readme_references(fastinterp.resize.__doc__)
    assert refs, "resize's docstring no longer points into the README: update this test"
    for kind, ref in refs:
        ok = ref in anchors(README) if kind == "anchor" else _section_exists(ref)
        assert ok, f"resize's docstring points at README {kind} {ref!r}, which does not exist"


def test_every_docstring_reference_into_the_readme_resolves():
    known = anchors(README)
    bad = [(name, kind, ref) for name, doc in _docstrings() for kind, ref in _readme_references(doc)
           if not (ref in known if kind == "anchor" else _section_exists(ref))]
    assert not bad, f"docstrings point at README sections that do not exist: {bad}"
