"""JSON and table output."""

from __future__ import annotations

import io
import json
import re

import attrs
import pytest

from nsprov._check.findings import Finding
from nsprov._check.render import render_json, render_table, use_colour
from nsprov._check.report import Report
from nsprov._check.users import UserReport
from nsprov._names import NAMING_SCHEME
from nsprov._postlogin import escape

from ..strategies import HOSTILE
from .support import CONFIG


class TestOutput:
    """JSON and table output, and when to colour."""

    @pytest.fixture(name="report")
    def _report(self) -> Report:
        return Report(
            config_path=CONFIG,
            dialect="2.3",
            dovecot_version="2.3",
            version_source="test",
            doveconf=True,
            findings=(
                Finding(
                    severity="error",
                    code="wiring-missing",
                    message="m1",
                    fix="f1",
                    subject="service pop3",
                ),
                Finding(severity="info", code="dot-entry", message="m2", fix="f2"),
            ),
            users=(
                UserReport(
                    user="alice",
                    uid=1,
                    gid=1,
                    home="/h",
                    found=2,
                    served=2,
                    env_bytes=10,
                    userdb_keys_bytes=5,
                ),
            ),
        )

    def test_json(self, report: Report) -> None:
        """The JSON document has the documented shape."""
        doc = json.loads(render_json(report))

        assert {
            "nsprov",
            "config",
            "dialect",
            "naming_scheme",
            "naming",
            "dovecot",
            "status",
            "summary",
            "findings",
            "users",
        } == set(doc)
        assert (NAMING_SCHEME, 1, {"error": 1, "warning": 0, "info": 1}) == (
            doc["naming_scheme"],
            doc["status"],
            doc["summary"],
        )
        assert {"version": "2.3", "source": "test", "doveconf": True} == doc["dovecot"]
        assert ["wiring-missing", "dot-entry"] == [f["code"] for f in doc["findings"]]
        assert "alice" == doc["users"][0]["user"]

    def test_table(self, report: Report) -> None:
        """The table shows every finding with its fix, the users and a summary, without colour."""
        text = render_table(report)

        assert "\033[" not in text
        assert "ERROR   wiring-missing  service pop3\n    m1\n    fix: f1\n" in text
        assert "  alice        1         2/2" in text
        assert text.endswith("1 error, 0 warnings, 1 info\n")

    def test_hostile_text_escaped(self) -> None:
        """Names in a finding's subject, message and fix, and user names, are shown escaped."""
        hostile = "".join(HOSTILE)
        finding = Finding(
            severity="error", code="dot-entry", subject=hostile, message=hostile, fix=hostile
        )
        report = attrs.evolve(
            Report(config_path=f"/etc/{hostile}.toml", findings=(finding,)),
        )

        text = render_table(report, colour=True)

        visible = re.sub(r"\033\[[0-9;]*m", "", text)  # the table's own colours
        assert all(line.isprintable() for line in visible.rstrip("\n").split("\n"))
        assert 4 == visible.count(escape(hostile))

    def test_colour(self, report: Report) -> None:
        """With colour, severities are painted."""
        text = render_table(report, colour=True)

        assert "\033[1;31mERROR  \033[0m" in text

    def test_nothing(self) -> None:
        """An empty report says so."""
        text = render_table(Report(config_path=CONFIG))

        assert "No problems found." in text
        assert "Dovecot version unknown" in text

    @pytest.mark.parametrize(
        ("tty", "environ", "expected"),
        [
            (True, {}, True),
            (False, {}, False),
            (True, {"NO_COLOR": "1"}, False),
            (True, {"NO_COLOR": ""}, True),
        ],
    )
    def test_use_colour(self, tty: bool, environ: dict[str, str], expected: bool) -> None:
        """Colour on a terminal unless NO_COLOR is set and not empty."""

        class Stream(io.StringIO):
            def isatty(self) -> bool:
                return tty

        assert expected == use_colour(Stream(), environ)

    def test_closed_stream(self) -> None:
        """A stream that cannot say whether it is a terminal gets no colour."""
        stream = io.StringIO()
        stream.close()

        assert not use_colour(stream, {})
