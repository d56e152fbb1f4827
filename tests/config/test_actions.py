"""``[actions]`` and the action tables: the lists per protocol and their defaults."""

from __future__ import annotations

from typing import Any

import pytest

from nsprov._config import Config, config_from_mapping
from nsprov.exceptions import ConfigError


def cfg(**data: Any) -> Config:
    return config_from_mapping(data, source="t.toml")


class TestActionsConfig:
    """[actions] lists and their defaults."""

    def test_defaults(self) -> None:
        """IMAP runs every configured action; POP3 without namespaces and alert."""
        c = cfg(
            spool=[{"path": "/s"}], deny={"users": ["x"]}, alert=[{"text": "hi"}], last_login={}
        )

        assert ("deny", "alert", "last_login", "namespaces") == c.actions.imap
        assert ("deny", "last_login") == c.actions.pop3
        assert c.actions.imap == c.actions.default

    def test_only_spools(self) -> None:
        """A config with only [[spool]] runs namespaces for IMAP and nothing for POP3."""
        c = cfg(spool=[{"path": "/s"}])

        assert (("namespaces",), ()) == (c.actions.imap, c.actions.pop3)

    def test_explicit_lists(self) -> None:
        """[actions] sets the order per protocol."""
        c = cfg(
            spool=[{"path": "/s"}],
            deny={},
            actions={"imap": ["namespaces", "deny"], "pop3": ["deny"], "default": []},
        )

        assert (("namespaces", "deny"), ("deny",), ()) == (
            c.actions.imap,
            c.actions.pop3,
            c.actions.default,
        )
        assert () == c.actions.for_protocol(None)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"actions": {"imap": ["nope"]}}, "unknown action 'nope'"),
            ({"actions": {"imap": ["deny"]}}, "listed but not configured"),
            ({"deny": {}, "actions": {"imap": ["deny", "deny"]}}, "listed twice"),
            ({"deny": {"networks": ["300.0.0.0/8"]}}, "300.0.0.0/8"),
            ({"deny": {"default": "maybe"}}, '"allow" or "deny"'),
            ({"alert": [{}]}, "alert[1].text: required key missing"),
            ({"alert": [{"text": "x", "if_exists": "rel"}]}, "absolute"),
            ({"last_login": {"backend": "mysql"}}, "file, sqlite or postgresql"),
            ({"last_login": {"backend": "postgresql"}}, "dsn: required"),
            ({"last_login": {"table": "x; DROP"}}, "SQL identifier"),
            ({"last_login": {"path": "/tmp/x"}}, "must start with '{home}/'"),
            ({"last_login": {"timeout": 0}}, "> 0"),
            ({"mail": {}}, "mail.location: required"),
            ({"field": [{"name": "a b", "value": "x"}]}, "userdb field name"),
            ({"field": [{"name": "USER", "value": "x"}]}, "not USER"),
            ({"field": [{"value": "x"}]}, "field[1].name: required"),
            ({"field": [{"name": "q", "value": "x", "mode": "add"}]}, "set, append or default"),
            ({"alert": [{"text": "{oops"}]}, "unclosed"),
        ],
    )
    def test_problems(self, data: dict[str, Any], message: str) -> None:
        """Invalid action settings are reported with their key path."""
        with pytest.raises(ConfigError) as info:
            cfg(**data)

        assert any(message in p for p in info.value.problems), info.value.problems
