"""Tests for the server's log lines."""

from __future__ import annotations

import io
import json

from nsprov._serve.log import Log

from ..strategies import HOSTILE


class TestLog:
    """Structured log lines."""

    def test_line(self) -> None:
        """One key=value line; values with spaces or quotes are JSON-quoted; None is left out."""
        out = io.StringIO()
        Log(stream=out, clock=lambda: 0.25)(
            "info", "lookup", user="a b", n=3, skip=None, path="/x/y"
        )

        assert (
            'ts=1970-01-01T00:00:00.250Z level=info event=lookup user="a b" n=3 path=/x/y\n'
            == out.getvalue()
        )

    def test_hostile_values(self) -> None:
        """A value with controls, bidi overrides or undecodable bytes is quoted printable JSON."""
        out = io.StringIO()
        for value in HOSTILE:
            Log(stream=out, clock=lambda: 0.25)("info", "lookup", user=value)

        lines = out.getvalue().rstrip("\n").split("\n")
        assert all(line.isprintable() for line in lines)
        assert HOSTILE == [json.loads(line.split("user=", 1)[1]) for line in lines]

    def test_threshold(self) -> None:
        """Lines below the level are dropped."""
        out = io.StringIO()
        log = Log("warning", stream=out)
        log("info", "quiet")
        log("error", "loud", text="x\ny")

        assert ['event=loud text="x\\ny"'] == [
            line.split(" ", 2)[2] for line in out.getvalue().splitlines()
        ]
