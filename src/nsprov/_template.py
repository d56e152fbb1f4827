"""``{field}`` templates, the one template syntax of nsprov.

A template is literal text with ``{field}`` placeholders; ``{{`` and ``}}``
stand for literal braces.  There are no format specs or conversions: the
value of a field is inserted as it is, which keeps hostile values (directory
names with ``{``, ``%`` or ``:``) data, never syntax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ._plainscan import render
from .exceptions import InvalidTemplateError

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping


def _parse(text: str) -> tuple[tuple[str, bool], ...]:
    parts: list[tuple[str, bool]] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "{":
            if text.startswith("{{", i):
                literal.append("{")
                i += 2
                continue
            end = text.find("}", i + 1)
            if end < 0:
                raise InvalidTemplateError(f"unclosed '{{' at offset {i} in {text!r}")
            field = text[i + 1 : end]
            if not field.isidentifier():
                raise InvalidTemplateError(f"invalid field name {field!r} in {text!r}")
            if literal:
                parts.append(("".join(literal), False))
                literal = []
            parts.append((field, True))
            i = end + 1
        elif c == "}":
            if text.startswith("}}", i):
                literal.append("}")
                i += 2
                continue
            raise InvalidTemplateError(f"single '}}' at offset {i} in {text!r}; write '}}}}'")
        else:
            literal.append(c)
            i += 1
    if literal:
        parts.append(("".join(literal), False))
    return tuple(parts)


@attrs.frozen
class Template:
    """A parsed ``{field}`` template.

    >>> Template("Shared/{name}/").render({"name": "sales"})
    'Shared/sales/'
    >>> Template("{{literal}} {x}").render({"x": "1"})
    '{literal} 1'
    """

    text: str
    parts: tuple[tuple[str, bool], ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "parts", _parse(self.text))

    @property
    def fields(self) -> frozenset[str]:
        """The field names the template uses."""
        return frozenset(value for value, is_field in self.parts if is_field)

    def check_fields(self, allowed: Collection[str]) -> None:
        """Raise :class:`InvalidTemplateError` if the template uses a field not in *allowed*."""
        unknown = sorted(self.fields - set(allowed))
        if unknown:
            raise InvalidTemplateError(
                f"unknown field {{{unknown[0]}}} in {self.text!r}; "
                f"allowed: {', '.join('{' + a + '}' for a in sorted(allowed))}"
            )

    def render(self, values: Mapping[str, str]) -> str:
        """Substitute *values*; a missing field raises :class:`InvalidTemplateError`."""
        return render(self.parts, values, self.text)
