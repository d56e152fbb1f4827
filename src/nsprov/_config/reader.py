"""The one TOML reader: typed access to a table that records every problem with its key path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._template import Template
from ..exceptions import InvalidTemplateError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping


class _Reader:
    """Typed access to a TOML table that records problems and unknown keys."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path}: {message}")

    def table(self, data: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem(path, f"expected a table, got {_kind(value)}")
            return {}
        return value

    def take(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        kind: type | tuple[type, ...],
        default: Any,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        if key not in data:
            return default
        value = data[key]
        # bool is an int in Python, but never a valid int or float here.
        if (isinstance(value, bool) and bool not in _as_tuple(kind)) or not isinstance(value, kind):
            self.problem(f"{path}.{key}", f"expected {_kind_name(kind)}, got {_kind(value)}")
            return default
        if check is not None:
            message = check(value)
            if message:
                self.problem(f"{path}.{key}", message)
                return default
        return value

    def one_of(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        choices: tuple[str, ...],
        default: str,
        *,
        quoted: bool = False,
    ) -> Any:
        """A string that must be one of *choices* ("must be a, b or c", quoted as TOML with *quoted*)."""
        if key not in data:  # the usual case, and the cheap one: 20,000 spools each ask
            return default
        names = [f'"{c}"' if quoted else c for c in choices]
        message = f"must be {', '.join(names[:-1])} or {names[-1]}"
        return self.take(data, key, path, str, default, lambda v: None if v in choices else message)

    def number(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        default: Any,
        *,
        kind: type | tuple[type, ...] = (int, float),
        above: float | None = None,
        at_least: float | None = None,
        at_most: float | None = None,
        below: float | None = None,
        unit: str = "",
        note: str = "",
        message: str | None = None,
    ) -> Any:
        """A number in a range ("must be > 0 and <= 10 seconds"); *message* replaces the generated text."""
        if key not in data:
            return default
        if message is None:
            bounds = [
                f"{op} {bound:g}"
                for op, bound in ((">", above), (">=", at_least), ("<=", at_most), ("<", below))
                if bound is not None
            ]
            message = "must be " + " and ".join(bounds)
            message += f" {unit}" if unit else ""
            message += f" ({note})" if note else ""

        def check(v: float) -> str | None:
            ok = (
                (above is None or v > above)
                and (at_least is None or v >= at_least)
                and (at_most is None or v <= at_most)
                and (below is None or v < below)
            )
            return None if ok else message

        return self.take(data, key, path, kind, default, check)

    def strings(self, data: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(f"{path}.{key}", f"expected an array of strings, got {_kind(value)}")
            return None
        return tuple(value)

    def template(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        fields: frozenset[str],
        default: Template | None,
        *,
        optional: bool = False,
    ) -> Template | None:
        text = self.take(data, key, path, str, None)
        if text is None:
            return default
        if optional and text == "":
            return None
        try:
            template = Template(text)
            template.check_fields(fields)
        except InvalidTemplateError as e:
            self.problem(f"{path}.{key}", str(e))
            return default
        return template

    def array(self, data: Mapping[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
        """The tables of ``[[key]]`` with their key paths (``key[1]`` …); other items are problems."""
        items = data.get(key, [])
        if not isinstance(items, list):
            self.problem(key, f"expected an array of tables ([[{key}]])")
            return []
        out = []
        for i, item in enumerate(items, 1):
            if isinstance(item, dict):
                out.append((f"{key}[{i}]", item))
            else:
                self.problem(f"{key}[{i}]", f"expected a table, got {_kind(item)}")
        return out

    def unknown(self, data: Mapping[str, Any], known: set[str] | frozenset[str], path: str) -> None:
        for key in data:
            if key not in known:
                where = f"{path}.{key}" if path else key
                self.problem(where, "unknown key" + did_you_mean(key, known))


def did_you_mean(key: object, known: Iterable[str]) -> str:
    """``"; did you mean 'deadline'?"`` for the closest known keys, or ``""``.

    >>> did_you_mean("dedline", {"deadline", "on_error"})
    "; did you mean 'deadline'?"
    >>> did_you_mean("bogus", {"deadline"})
    ''
    """
    import difflib  # noqa: PLC0415 - only for a config with a mistake

    if not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key, sorted(known), n=2, cutoff=0.75)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(k) for k in close) + "?"


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(_kind(k()) for k in _as_tuple(kind))
