"""The public API: every name a public signature uses is importable, every error under NsprovError."""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import nsprov
import nsprov.exceptions

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The names a hook author may type against: the package's and its exceptions module's.
EXPORTED = frozenset(nsprov.__all__) | frozenset(nsprov.exceptions.__all__)


@functools.cache
def _imports(module: Any) -> dict[str, str]:
    """Each name *module* imports (``TYPE_CHECKING`` blocks included) -> its dotted origin."""
    package = module.__name__.split(".")
    if not hasattr(module, "__path__"):
        package = package[:-1]
    names = {}
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package[: len(package) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for a in node.names:
                names[a.asname or a.name] = f"{base}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.partition(".")[0]] = a.name
    return names


@functools.cache
def _aliases(module: Any) -> dict[str, ast.expr]:
    """The module-level assignments of *module* (its type aliases among them): name -> value."""
    out: dict[str, ast.expr] = {}
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = node.value
    return out


def _names(expr: ast.expr) -> Iterator[str]:
    """The names an annotation refers to (the first part of a dotted one); not Literal's values."""
    if isinstance(expr, ast.Name):
        yield expr.id
    elif isinstance(expr, ast.Attribute):
        yield from _names(expr.value)
    elif isinstance(expr, ast.Subscript):
        yield from _names(expr.value)
        if not (isinstance(expr.value, ast.Name) and expr.value.id == "Literal"):
            yield from _names(expr.slice)
    elif isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        yield from _names(ast.parse(expr.value, mode="eval").body)  # a forward reference
    else:
        for child in ast.iter_child_nodes(expr):
            if isinstance(child, ast.expr):
                yield from _names(child)


def _text(annotation: object) -> str:
    """An annotation as written (every module postpones them), or attrs' ``None`` of ``__init__``."""
    if annotation is None:
        return "None"
    assert isinstance(annotation, str), annotation
    return annotation


def _signature(where: str, function: Any) -> Iterator[tuple[str, str, str]]:
    sig = inspect.signature(function, eval_str=False)
    for p in sig.parameters.values():
        if p.annotation is not p.empty:
            yield f"{where}({p.name})", function.__module__, _text(p.annotation)
    if sig.return_annotation is not sig.empty:
        yield f"{where} ->", function.__module__, _text(sig.return_annotation)


def _annotations(name: str, obj: Any) -> Iterator[tuple[str, str, str]]:
    """(where, defining module, annotation text) of everything public *obj* declares."""
    if not inspect.isclass(obj):
        if inspect.isfunction(obj):
            yield from _signature(name, obj)
        return
    if attrs.has(obj):
        for f in attrs.fields(obj):
            if not f.name.startswith("_"):
                yield f"{name}.{f.name}", obj.__module__, _text(f.type)
    for key, value in vars(obj).get("__annotations__", {}).items():
        if not key.startswith("_"):
            yield f"{name}.{key}", obj.__module__, _text(value)
    for key, member in vars(obj).items():
        if key.startswith("_") and key != "__init__":
            continue
        function = member
        if isinstance(member, (classmethod, staticmethod)):
            function = member.__func__
        elif isinstance(member, property):
            function = member.fget
        if inspect.isfunction(function):
            yield from _signature(f"{name}.{key}", function)


def _unresolved(module_name: str, annotation: str) -> Iterator[str]:
    """The names in *annotation* that are neither exported, builtin nor from the standard library."""
    module = importlib.import_module(module_name)
    imports, aliases = _imports(module), _aliases(module)
    pending, seen = list(_names(ast.parse(annotation, mode="eval").body)), set()
    while pending:
        name = pending.pop()
        if name in seen or name in vars(builtins):
            continue
        seen.add(name)
        origin = imports.get(name)
        if origin is not None:
            if origin.partition(".")[0] in sys.stdlib_module_names:
                continue
            if origin.startswith("nsprov.") and origin.rpartition(".")[2] in EXPORTED:
                continue
            yield origin
        elif name in EXPORTED and getattr(nsprov, name, None) is getattr(module, name, None):
            continue
        elif name in aliases:  # a private type alias: what it stands for must resolve
            pending.extend(_names(aliases[name]))
        else:
            yield f"{module_name}.{name}"


def test_public_signatures_use_exported_types() -> None:
    """Each annotation of each public function, class, method and attrs field resolves to an export or the stdlib."""
    public = [(name, getattr(nsprov, name)) for name in nsprov.__all__]
    public += [(name, getattr(nsprov.exceptions, name)) for name in nsprov.exceptions.__all__]
    found = {
        (where, origin)
        for name, obj in public
        for where, module, annotation in _annotations(name, obj)
        for origin in _unresolved(module, annotation)
    }

    assert set() == found


def test_annotations_are_checked() -> None:
    """The walk sees fields, parameters and returns, and refuses a private type."""
    seen = {where for where, _, _ in _annotations("Config", nsprov.Config)}
    assert {"Config.identity", "Config.check_does_something ->"} <= seen
    error = nsprov.exceptions.ConfigError
    assert "ConfigError.__init__(problems)" in {
        where for where, _, _ in _annotations("ConfigError", error)
    }
    assert {"plan(config)", "plan ->"} <= {
        where for where, _, _ in _annotations("plan", nsprov.plan)
    }
    assert ["nsprov._scan._listing"] == list(_unresolved("nsprov._scan", "_listing | None"))
    assert [] == list(_unresolved("nsprov._fs", "Callable[[bytes], list[Step]] | Fs"))


def test_config_without_a_file() -> None:
    """A hook author's test builds a Config from a mapping, with the exported table types."""
    config = nsprov.config_from_mapping(
        {"spool": [{"path": "/srv/spool", "prefix": "Shared/{name}/"}], "identity": {}}
    )

    assert isinstance(config.spools[0], nsprov.SpoolConfig)
    assert nsprov.IdentityConfig() == config.identity
    assert isinstance(config.actions, nsprov.ActionsConfig)


#: Every error nsprov raises, by the name ``nsprov.exceptions`` serves it under.
ERRORS = [
    "ConfigError",
    "Denied",
    "IdentityError",
    "InvalidAclError",
    "InvalidLocationError",
    "InvalidNamespaceError",
    "InvalidTemplateError",
    "ProtocolError",
    "SocketInUseError",
    "SpoolError",
    "UntrustedFileError",
    "UsageError",
]


@pytest.mark.parametrize("name", ERRORS)
def test_error_in_exceptions(name: str) -> None:
    """The error is importable from nsprov.exceptions, listed in its __all__, and an NsprovError."""
    error = getattr(nsprov.exceptions, name)

    assert name in nsprov.exceptions.__all__
    assert issubclass(error, nsprov.exceptions.NsprovError)
    assert error.__module__ == "nsprov.exceptions" or name == "UsageError"


def test_every_exported_error_is_listed() -> None:
    """nsprov.exceptions exports exactly the base class and the listed errors."""
    exported = set(nsprov.exceptions.__all__) - {"NsprovError"}

    assert set() == exported - set(ERRORS)
    assert sorted(nsprov.exceptions.__all__) == nsprov.exceptions.__all__


def test_public_errors_are_the_exceptions_modules() -> None:
    """An error the package exports at the top level is the one nsprov.exceptions holds."""
    for name in nsprov.__all__:
        obj = getattr(nsprov, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert obj is getattr(nsprov.exceptions, name)


ROOT = Path(__file__).parent.parent
API_PAGE = ROOT / "docs" / "api.md"


def test_reference_page_lists_the_whole_api() -> None:
    """docs/api.md documents every public name once, and the exceptions module; nothing else."""
    text = API_PAGE.read_text()
    documented = re.findall(
        r"^\.\. (?:auto(?!module)\w+|py:data):: nsprov\.(\w+)\s*$", text, re.MULTILINE
    )

    assert sorted([*nsprov.__all__, "__version__"]) == sorted(documented)
    assert ".. automodule:: nsprov.exceptions\n   :members:" in text


def test_reference_page_example_runs() -> None:
    """The page's example builds a Config without a file, as it says."""
    [code] = re.findall(r"```python\n(.*?)```", API_PAGE.read_text(), re.DOTALL)

    exec(compile(code, str(API_PAGE), "exec"), {})  # noqa: S102 - the page's own example
