"""The configuration's problems as findings, and the path templates."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from nsprov._check.templates import check_templates, config_findings
from nsprov._config import config_from_mapping, load_config
from nsprov.exceptions import ConfigError

from .support import codes, make_config

if TYPE_CHECKING:
    from pathlib import Path


class TestConfig:
    """Configuration problems become config-error findings naming the key."""

    def test_problems(self) -> None:
        """Unknown keys and wrong types are errors with the key path as subject."""
        with pytest.raises(ConfigError) as info:
            config_from_mapping(
                {"spool": [{"path": "/s", "prefx": "x", "hidden": "yes"}]}, source="/c.toml"
            )

        findings = config_findings("/c.toml", info.value.problems)

        assert [
            ("spool[1].prefx", "unknown key; did you mean 'prefix'?"),
            ("spool[1].hidden", "expected a boolean, got a string"),
        ] == [(f.subject, f.message) for f in findings]
        assert {("config-error", "error")} == codes(findings)
        assert "Rename spool[1].prefx to 'prefix', or remove it." == findings[0].fix

    def test_unreadable_and_invalid(self, base: Path) -> None:
        """A missing file and broken TOML name the file and say what to do."""
        bad = base / "bad.toml"
        bad.write_text("[[spool]\n")
        problems = []
        for path in (str(base / "missing.toml"), str(bad)):
            with pytest.raises(ConfigError) as info:
                load_config(path)
            problems += config_findings(path, info.value.problems)

        assert [str(base / "missing.toml"), str(bad)] == [f.subject for f in problems]
        assert "--config=PATH" in problems[0].fix
        assert "TOML syntax" in problems[1].fix

    def test_other_messages(self) -> None:
        """Missing keys and bad values get a fix that names the key."""
        findings = config_findings(
            "/c.toml",
            [
                "/c.toml: spool[1].path: required key missing",
                "/c.toml: spool[1].list: must be yes, no or children",
            ],
        )

        assert ["Add spool[1].path.", "Change spool[1].list: must be yes, no or children."] == [
            f.fix for f in findings
        ]


class TestTemplates:
    """Templates that validate but render output Dovecot refuses."""

    def test_good(self, spool: Path) -> None:
        """The defaults render valid namespaces."""
        assert [] == check_templates(make_config(spool))

    def test_prefix_without_separator(self, spool: Path) -> None:
        """A prefix that does not end with the separator is an error naming the spool."""
        findings = check_templates(make_config(spool, prefix="Shared/{name}"))

        assert [("template-invalid", "error", "spool[1]")] == [
            (f.code, f.severity, f.subject) for f in findings
        ]

    def test_shared_index(self, spool: Path) -> None:
        """A per-user path without {home} or {user} is an error per key."""
        findings = check_templates(
            make_config(spool, index="/var/lib/nsprov/{ns}", control="/var/lib/nsprov/{ns}")
        )

        assert ["spool[1].index", "spool[1].control"] == [f.subject for f in findings]
        assert {("template-not-per-user", "error")} == codes(findings)

    def test_index_inside_spool(self, spool: Path) -> None:
        """A per-user path inside the spool is an error."""
        findings = check_templates(make_config(spool, index=f"{spool}/{{user}}/{{ns}}"))

        assert [("template-invalid", "error")] == [(f.code, f.severity) for f in findings]
        assert "inside the spool" in findings[0].message
