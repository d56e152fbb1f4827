"""The examples in nsprov's docstrings run as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys
from typing import TYPE_CHECKING

import pytest

import nsprov

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path


def collect(path: Iterable[str], prefix: str) -> list[str]:
    """Every module under *path*, subpackages included, but not ``__main__``.

    ``pkgutil.walk_packages`` recurses into subpackages; ``iter_modules`` would
    silently stop at the top level and skip the doctests of every moved module.
    """
    return sorted(
        m.name
        for m in pkgutil.walk_packages(path, prefix)
        if m.name.rpartition(".")[2] != "__main__"
    )


MODULES = collect(nsprov.__path__, "nsprov.")


def test_collector_recurses_into_subpackages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module two levels down is collected, next to its package and the top-level modules."""
    for rel in ("pkg/__init__.py", "pkg/top.py", "pkg/sub/__init__.py", "pkg/sub/leaf.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text('"""A module."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pkg", raising=False)
    pkg = importlib.import_module("pkg")

    assert ["pkg.sub", "pkg.sub.leaf", "pkg.top"] == collect(pkg.__path__, "pkg.")


def test_collects_nsprov_subpackages() -> None:
    """The command-line package and the modules inside it are collected."""
    assert {"nsprov._cli", "nsprov._cli.cache", "nsprov._cli.errors", "nsprov._cli.show"} <= set(
        MODULES
    )


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    """Every ``>>>`` example in the module gives the output it shows."""
    module = importlib.import_module(name)

    failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)

    assert 0 == failed
