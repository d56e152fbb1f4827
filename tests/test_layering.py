"""The layers of nsprov, written down: an ``ast`` walk of every module's imports.

Every import counts, at module level or inside a function; only an
``if TYPE_CHECKING:`` block is exempt (annotations only, never run).  The rules:

* no import circle;
* the modules of :data:`LOGIN_PATH` (every login runs them) import only the
  standard library and each other;
* the core (every module outside the wings and the entry points) never imports
  a wing (``_serve``, ``_check``, ``_cli``, as package or module);
* a function-level import of an nsprov module in the core says why it is not at
  the top, as ``# noqa: PLC0415 - <reason>`` on the import.

Today's violations are listed in :data:`KNOWN`.  The test requires each listed
one to still be a violation, so whoever removes one removes its entry too, and
the list only shrinks.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest

import nsprov

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(nsprov.__file__).parent

#: Run on every login, before the worker: standard library only (they may import each other).
#: ``nsprov`` is the package's ``__init__``, which importing any of them runs.
LOGIN_PATH = (
    "nsprov",
    "nsprov._access",
    "nsprov._actrules",
    "nsprov._atomic",
    "nsprov._breaker",
    "nsprov._defaults",
    "nsprov._fields",
    "nsprov._lean",
    "nsprov._names",
    "nsprov._os",
    "nsprov._pack",
    "nsprov._plainscan",
    "nsprov._postlogin",
    "nsprov._profile",
    "nsprov._servefields",
    "nsprov._trust",
    "nsprov._userdb",
    "nsprov.exceptions",
)
#: The wings: front ends and services over the core; the core never imports them.
WINGS = ("nsprov._serve", "nsprov._check", "nsprov._cli")
#: The entry points, which dispatch to the wings.
ENTRY_POINTS = ("nsprov.__main__", "nsprov._fast", "nsprov._main")
#: The reason a function-level import gives, after the rule it is exempt from:
#: ``noqa: PLC0415 - why it is not at the top`` (a bare exemption does not count).
REASON = re.compile(r"#\s*noqa:\s*PLC0415\s+-\s+\S")

#: Imports under another name (none today: ``_fast`` imports the package it puts on the path).
RENAMED: dict[tuple[str, str], str] = {}

#: Today's violations, per rule; each must still be one (delete the entry with the violation).
#: A circle is a strongly connected component of the import graph, its modules sorted.
KNOWN: dict[str, set[tuple[str, ...]]] = {
    "circle": set(),
    "login-path": set(),
    "core-imports-wing": set(),
    "no-reason": set(),
}


@attrs.frozen
class Import:
    """One runtime import of an nsprov module."""

    importer: str
    imported: str
    line: int
    #: Inside a function (or any block below module level but a TYPE_CHECKING one).
    nested: bool
    #: The source lines of the import statement.
    text: str


def module_name(path: Path) -> str:
    """``.../nsprov/_cli/show.py`` -> ``nsprov._cli.show``; a package's ``__init__`` is the package."""
    parts = ["nsprov", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the installed package, by name."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], nested: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """Every statement that runs, with whether it is below module level; TYPE_CHECKING bodies skipped."""
    for node in body:
        yield node, nested
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.orelse, nested)
            continue
        inner = nested or isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
        )
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                stmts = [s.body if isinstance(s, ast.ExceptHandler) else [s] for s in block]
                yield from _statements([s for group in stmts for s in group], inner)
        if isinstance(node, ast.Match):
            for case in node.cases:
                yield from _statements(case.body, inner)


def _targets(node: ast.stmt, importer: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The modules *node* imports (a ``from X import y`` imports ``X.y`` when that is a module)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = importer.split(".") if is_package else importer.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, *([node.module] if node.module else [])])
        submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
        if submodules:
            yield from submodules
        if not submodules or len(submodules) < len(node.names):
            yield base


def imports(name: str, path: Path, known: set[str]) -> Iterator[Import | str]:
    """The runtime imports of module *name*: an :class:`Import` for nsprov's, the top name for others."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    for node, nested in _statements(tree.body, nested=False):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for found in _targets(node, name, path.name == "__init__.py", known):
            target = RENAMED.get((name, found), found)
            if target == "nsprov" or target.startswith("nsprov."):
                text = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                yield Import(name, target, node.lineno, nested, text)
            else:
                yield target.partition(".")[0]


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in prefixes)


def graph() -> tuple[dict[str, set[str]], list[Import], dict[str, set[str]]]:
    """Edges between nsprov modules, every nsprov import, and each module's outside imports."""
    found = modules()
    known = set(found)
    edges: dict[str, set[str]] = {m: set() for m in found}
    every: list[Import] = []
    outside: dict[str, set[str]] = {m: set() for m in found}
    for name, path in found.items():
        for imp in imports(name, path, known):
            if isinstance(imp, str):
                outside[name].add(imp)
                continue
            every.append(imp)
            if imp.imported != name:
                edges[name].add(imp.imported)
    return edges, every, outside


def circles(edges: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                out.add(tuple(sorted(component)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


@functools.cache
def violations() -> dict[str, set[tuple[str, ...]]]:
    """Every rule's violations in the installed package."""
    edges, every, outside = graph()
    found: dict[str, set[tuple[str, ...]]] = {rule: set() for rule in KNOWN}
    found["circle"] = circles(edges)
    stdlib = sys.stdlib_module_names
    for name in LOGIN_PATH:
        found["login-path"] |= {(name, m) for m in outside.get(name, ()) if m not in stdlib}
    for imp in every:
        core = not _in(imp.importer, WINGS + ENTRY_POINTS)
        if imp.importer in LOGIN_PATH and imp.imported not in LOGIN_PATH:
            found["login-path"].add((imp.importer, imp.imported))
        if core and _in(imp.imported, WINGS):
            found["core-imports-wing"].add((imp.importer, imp.imported))
        if core and imp.nested and not REASON.search(imp.text):
            found["no-reason"].add((imp.importer, imp.imported))
    return found


@pytest.mark.parametrize("rule", sorted(KNOWN))
def test_no_new_violation(rule: str) -> None:
    """No violation of the rule beyond the known ones."""
    assert set() == violations()[rule] - KNOWN[rule]


@pytest.mark.parametrize("rule", sorted(KNOWN))
def test_known_violations_still_exist(rule: str) -> None:
    """Each known violation is still one: when it is fixed, its entry must go."""
    assert set() == KNOWN[rule] - violations()[rule]


def test_the_walk_sees_what_it_must() -> None:
    """Function-level and relative imports count, TYPE_CHECKING ones do not, packages resolve."""
    edges, every, outside = graph()

    assert "nsprov._cli" in edges["nsprov._main"]  # inside a function
    assert "nsprov._cli.show" in edges["nsprov._cli"]  # from . import show
    assert "nsprov._postlogin" in edges["nsprov._cli.errors"]  # from .._postlogin import escape
    assert all(i.nested for i in every if i.importer == "nsprov._main")
    assert "typing" not in outside["nsprov._postlogin"]  # under the local TYPE_CHECKING = False
    assert "sys" in outside["nsprov._postlogin"]
    assert "os" not in outside["nsprov._postlogin"]  # from . import _os as os
    assert "nsprov._os" in edges["nsprov._postlogin"]


#: What a module of the login path must not load by being imported (``python -S`` loads none):
#: ``os`` alone costs each login about 1.5 ms (see nsprov._os).
HEAVY = (
    "os",
    "posixpath",
    "_collections_abc",
    "typing",
    "re",
    "enum",
    "attrs",
    "pathspec",
    "tomllib",
)


def test_login_path_imports_nothing_heavy() -> None:
    """A fresh ``python -I -S`` importing every login-path module loads none of :data:`HEAVY`."""
    import subprocess

    spec = nsprov.__spec__
    assert spec is not None
    assert spec.submodule_search_locations is not None
    where = str(Path(next(iter(spec.submodule_search_locations))).parent)
    code = (
        f"import sys; sys.path.append({where!r})\n"
        f"for m in {LOGIN_PATH!r}: __import__(m)\n"
        f"print(sorted(set(sys.modules) & set({HEAVY!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert "[]" == out.stdout.strip()


def test_circle_finder() -> None:
    """A cycle of three is one circle; a chain is none."""
    assert {("a", "b", "c")} == circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert set() == circles({"a": {"b"}, "b": {"c"}, "c": set()})


def test_statements_skip_type_checking_only(tmp_path: Path) -> None:
    """The else branch of ``if TYPE_CHECKING`` runs; its body does not; function bodies are nested."""
    tree = ast.parse(
        "if TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
        "def f():\n    try:\n        import c\n    except E:\n        import d\n"
    )
    seen = {
        (n.names[0].name, nested)
        for n, nested in _statements(tree.body, nested=False)
        if isinstance(n, ast.Import)
    }

    assert {("b", False), ("c", True), ("d", True)} == seen


def test_reason_convention() -> None:
    """A reason follows the exemption after a dash; a bare exemption is no reason."""
    assert REASON.search(
        "from ._scancache import candidates  # noqa: PLC0415 - only when configured"
    )
    assert not REASON.search("from ._config import load_config  # noqa: PLC0415")
    assert not REASON.search("from ._config import load_config")
