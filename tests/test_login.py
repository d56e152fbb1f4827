"""The Login context: its documented members, and nothing else public."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nsprov import _actions, _login
from nsprov._login import Login, run_user_tasks
from nsprov._template import Template
from nsprov.exceptions import Denied

from .test_actions import GID, cfg, login


class TestLoginApi:
    """The hook API's context and effects."""

    def test_context(self) -> None:
        """user, ip, local_ip and userdb come from the environment."""
        lg = login(QUOTA="1G", USERDB_KEYS="UID HOME quota ")

        assert ("alice", "192.0.2.10", "198.51.100.1") == (lg.user, lg.ip, lg.local_ip)
        assert {"uid": "70001", "home": "/home/alice", "quota": "1G"} == lg.userdb

    def test_deny_raises(self) -> None:
        """deny() records the text and stops the hook."""
        lg = login()

        with pytest.raises(Denied):
            lg.deny("no\r\n")
        assert b"* BYE [ALERT] no \r\n" == lg._deny_line()

    def test_user_tasks_errors_collected(self) -> None:
        """A failing user task is reported, the others still run."""
        lg = Login({"USER": "a", "UID": str(os.getuid() or 70001), "GID": str(GID)})
        ran = []

        def bad() -> None:
            raise OSError(13, "Permission denied", "/x")

        lg.as_user("bad", bad)
        lg.as_user("good", lambda: ran.append(1))
        if os.getuid() == 0:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                os._exit(
                    0 if run_user_tasks(lg) == ["bad: Permission denied: /x"] and ran == [1] else 1
                )
            assert 0 == os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        else:
            assert ["bad: Permission denied: /x"] == run_user_tasks(lg)

    def test_template_escapes(self) -> None:
        """Template values are data: braces and % in userdb values pass through."""
        lg = login(NOTE="{user} 100%", USERDB_KEYS="NOTE ")

        assert "{user} 100%" == Template("{note}").render(lg.template_values())

    def test_run_by_name(self) -> None:
        """Login.run runs one built-in action with the given config."""
        lg = login()

        lg.run("fields", cfg(field=[{"name": "x", "value": "1"}]))

        assert "1" == lg._env["X"]
        assert _login.ACTIONS["fields"] is _actions.action_fields


def documented_members() -> frozenset[str]:
    """The members of Login that docs/hooks.md documents (its autoclass ``:members:`` list)."""
    text = (Path(__file__).parent.parent / "docs" / "hooks.md").read_text(encoding="utf-8")
    block = text.split(".. autoclass:: nsprov.Login", 1)[1].split(":members:", 1)[1]
    listed = block.split("\n\n", 1)[0]
    return frozenset(m.strip() for m in listed.replace("\n", " ").split(",") if m.strip())


class TestLoginSurface:
    """Only the documented members of Login are public (docs/hooks.md lists them)."""

    def test_public_members(self) -> None:
        """Every public member is documented, and vice versa."""
        documented = documented_members()
        public = {n for n in dir(login()) if not n.startswith("_")}

        assert "add_namespaces" in documented
        assert set() == public - documented
        assert set() == documented - public

    def test_state_is_private(self) -> None:
        """The login's state lives in private attributes only."""
        assert [] == [n for n in vars(login()) if not n.startswith("_")]
