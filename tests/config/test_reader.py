"""The one TOML reader: its "one of" and "number in range" validators and their messages."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsprov._config import _Reader


def read(method: str, value: object, *args: Any, **kwargs: Any) -> tuple[Any, list[str]]:
    problems: list[str] = []
    r = _Reader("t.toml", problems)
    got = getattr(r, method)({"k": value}, "k", "table", *args, **kwargs)
    return got, problems


class TestOneOf:
    def test_accepted(self) -> None:
        """A listed value is returned as it is."""
        assert ("b", []) == read("one_of", "b", ("a", "b", "c"), "a")

    @pytest.mark.parametrize(
        ("quoted", "message"),
        [(False, "must be a, b or c"), (True, 'must be "a", "b" or "c"')],
    )
    def test_refused(self, quoted: bool, message: str) -> None:
        """Any other value is one problem naming the choices, and the default is used."""
        assert ("a", [f"t.toml: table.k: {message}"]) == read(
            "one_of", "d", ("a", "b", "c"), "a", quoted=quoted
        )

    def test_two_choices(self) -> None:
        """Two choices read "x or y"."""
        assert ['t.toml: table.k: must be "2.3" or "2.4"'] == read(
            "one_of", "2.5", ("2.3", "2.4"), "2.3", quoted=True
        )[1]


class TestNumber:
    @pytest.mark.parametrize(
        ("bounds", "message"),
        [
            ({"above": 0}, "must be > 0"),
            ({"at_least": 0}, "must be >= 0"),
            ({"above": 0, "at_most": 10, "unit": "seconds"}, "must be > 0 and <= 10 seconds"),
            ({"above": 0, "below": 8192, "note": "limit"}, "must be > 0 and < 8192 (limit)"),
            (
                {"at_least": 0, "at_most": 5, "message": "must be between 0 and 5"},
                "must be between 0 and 5",
            ),
        ],
    )
    def test_message(self, bounds: dict[str, Any], message: str) -> None:
        """Out of range: the generated (or given) message, and the default."""
        assert (7, [f"t.toml: table.k: {message}"]) == read("number", -1, 7, **bounds)

    @given(st.integers(-100, 100), st.integers(-100, 100), st.integers(-100, 100))
    def test_range(self, value: int, low: int, high: int) -> None:
        """A number is accepted exactly when it lies in the range."""
        got, problems = read("number", value, None, at_least=low, below=high)

        assert (low <= value < high) == (not problems)
        assert (value if not problems else None) == got

    def test_kind(self) -> None:
        """A boolean is never a number; an integer-only key refuses a float."""
        assert [] != read("number", True, 1, above=0)[1]
        assert ["t.toml: table.k: expected an integer, got a float"] == read(
            "number", 1.5, 1, kind=int, above=0
        )[1]
