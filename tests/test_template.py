from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsprov._template import Template
from nsprov.exceptions import InvalidTemplateError


class TestTemplate:
    """``{field}`` templates with ``{{``/``}}`` escapes."""

    def test_fields_substituted(self) -> None:
        """Each ``{field}`` is replaced by its value."""
        assert "Shared/sales/" == Template("Shared{sep}{name}{sep}").render(
            {"sep": "/", "name": "sales"}
        )

    def test_escapes(self) -> None:
        """``{{`` and ``}}`` are literal braces."""
        assert "{x}-1" == Template("{{x}}-{x}").render({"x": "1"})

    def test_values_are_data(self) -> None:
        """A value containing braces is inserted as it is, never parsed."""
        assert "a{b}%u" == Template("a{v}").render({"v": "{b}%u"})

    @pytest.mark.parametrize("text", ["{", "a{b", "}", "x}y", "{}", "{1a}", "{a.b}", "{a!r}"])
    def test_malformed(self, text: str) -> None:
        """Unclosed, unescaped or non-identifier braces are errors."""
        with pytest.raises(InvalidTemplateError):
            Template(text)

    def test_unknown_field(self) -> None:
        """check_fields names the unknown field and the allowed ones."""
        with pytest.raises(InvalidTemplateError, match=r"unknown field \{nme\}.*\{name\}"):
            Template("{nme}").check_fields({"name", "sep"})

    def test_missing_value(self) -> None:
        """Rendering without a value for a used field is an error."""
        with pytest.raises(InvalidTemplateError, match="no value"):
            Template("{a}").render({})

    def test_fields(self) -> None:
        """fields lists the names used."""
        assert frozenset({"a", "b"}) == Template("{a}{b}{{c}}{a}").fields

    @given(st.text())
    def test_literal_round_trip(self, text: str) -> None:
        """Any text with its braces doubled renders back to itself."""
        escaped = text.replace("{", "{{").replace("}", "}}")

        assert text == Template(escaped).render({})
