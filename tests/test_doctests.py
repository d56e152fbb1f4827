"""The examples in nsprov's docstrings run as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import nsprov

MODULES = sorted(
    m.name for m in pkgutil.iter_modules(nsprov.__path__, "nsprov.") if m.name != "nsprov.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    """Every ``>>>`` example in the module gives the output it shows."""
    module = importlib.import_module(name)

    failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)

    assert 0 == failed
