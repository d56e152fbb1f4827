"""The configuration sits low: it imports neither the actions nor the login context (no circle)."""

from __future__ import annotations

import ast
from pathlib import Path

import nsprov
import nsprov._config

#: The modules of nsprov the configuration may import: the layers below it.
BELOW = frozenset(
    {
        "_atomic",
        "_defaults",
        "_env",
        "_fs",
        "_model",
        "_names",
        "_template",
        "_trust",
        "_userdb",
        "exceptions",
    }
)


def runtime_imports(path: Path) -> set[str]:
    """The nsprov modules *path* imports at run time (function level too; not TYPE_CHECKING)."""
    package = Path(nsprov.__file__).parent
    here = path.parent.relative_to(package).parts
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for other in node.orelse:
                visit(other)
            return
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(here[: len(here) - node.level + 1]) + (node.module or "").split(".")
            found.add(next((p for p in base if p), ""))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nsprov."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def config_files() -> list[Path]:
    start = Path(nsprov._config.__file__)
    return sorted(start.parent.glob("*.py")) if start.name == "__init__.py" else [start]


def test_config_imports_only_lower_layers() -> None:
    """No module of the configuration imports _actions, _login or anything else above it."""
    above = {f.name: runtime_imports(f) - BELOW - {"_config"} for f in config_files()}

    assert {f.name: set() for f in config_files()} == above


def test_actions_import_the_context_only_for_types() -> None:
    """_actions uses Login only in annotations; _login imports _actions: one direction."""
    package = Path(nsprov.__file__).parent

    assert "_login" not in runtime_imports(package / "_actions.py")
    assert "_actions" in runtime_imports(package / "_login.py")
