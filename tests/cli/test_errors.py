"""The one error printer of the command-line front ends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nsprov._cli.errors import report
from nsprov.exceptions import ConfigError, IdentityError

if TYPE_CHECKING:
    import pytest


class TestErrors:
    """The one error printer every front end uses."""

    def test_one_escaped_line_per_problem(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Each problem of a ConfigError is a line of its own, control characters escaped."""
        error = ConfigError("two problems", ("spool.path: missing", "name \x1b]0;x\x07: bad"))

        assert 1 == report(error, prog="nsprov cache")

        assert (
            "nsprov cache: error: spool.path: missing\n"
            "nsprov cache: error: name \\x1b]0;x\\x07: bad\n"
        ) == capsys.readouterr().err

    def test_plain_error_is_its_message(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An error without problems prints its message, escaped, under the default program name."""
        assert 1 == report(IdentityError("no user\r"))

        assert "nsprov: error: no user\\x0d\n" == capsys.readouterr().err
