"""The built-in actions: deny, alert, acl_groups, last_login, mail and fields, as a login runs them."""

from __future__ import annotations

import grp
import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsprov import _actions, _sql
from nsprov._actions import acl_groups_value, clean_text, run_actions, write_file_atomically
from nsprov._config import Config, config_from_mapping
from nsprov._config.actionconf import LastLoginConfig
from nsprov._login import Login

if TYPE_CHECKING:
    from pathlib import Path

GID = os.getgid()
GROUP = grp.getgrgid(GID).gr_name


def cfg(**data: Any) -> Config:
    return config_from_mapping(data, source="t.toml")


def login(protocol: str | None = "imap", **env: str) -> Login:
    base = {
        "USER": "alice",
        "IP": "192.0.2.10",
        "LOCAL_IP": "198.51.100.1",
        "UID": "70001",
        "GID": str(GID),
        "HOME": "/home/alice",
        "USERDB_KEYS": "UID GID HOME ",
    }
    base.update(env)
    return Login(base, protocol=protocol)


class TestDeny:
    """Deny rules, allow-lists and their precedence."""

    @pytest.mark.parametrize(
        ("rules", "env", "denied"),
        [
            ({"users": ["alice"]}, {}, True),
            ({"users": ["bob", "ali*"]}, {}, True),
            ({"users": ["bob"]}, {}, False),
            ({"networks": ["192.0.2.0/24"]}, {}, True),
            ({"networks": ["192.0.2.11/32"]}, {}, False),
            ({"networks": ["2001:db8::/32"]}, {"IP": "2001:db8::1"}, True),
            ({"networks": ["192.0.2.0/24"]}, {"IP": "::ffff:192.0.2.10"}, True),
            ({"networks": ["192.0.2.0/24"]}, {"IP": ""}, False),
            ({"networks": ["192.0.2.0/24"]}, {"IP": "garbage"}, False),
            ({"local_networks": ["198.51.100.0/24"]}, {}, True),
            ({"groups": [GROUP]}, {}, True),
            ({"groups": ["no-such-group-x"]}, {}, False),
            ({"users": ["alice"], "allow_networks": ["192.0.2.0/24"]}, {}, False),
            ({"users": ["alice"], "allow_users": ["alice"]}, {}, False),
            ({"users": ["alice"], "allow_groups": [GROUP]}, {}, False),
            ({"default": "deny"}, {}, True),
            ({"default": "deny", "allow_local_networks": ["198.51.100.1/32"]}, {}, False),
            ({"default": "deny", "allow_users": ["bob"]}, {}, True),
        ],
    )
    def test_precedence(self, rules: dict[str, Any], env: dict[str, str], denied: bool) -> None:
        """An allow match lets the login in; else a deny match or default=deny refuses it."""
        lg = login(**env)

        run_actions(lg, cfg(deny=rules))

        assert denied == (lg._denied is not None)

    @pytest.mark.parametrize(
        ("protocol", "line"),
        [
            ("imap", b"* BYE [ALERT] Go away now\r\n"),
            ("pop3", b"-ERR [SYS/PERM] Go away now\r\n"),
            (None, None),
        ],
    )
    def test_wire_bytes(self, protocol: str | None, line: bytes | None) -> None:
        """The deny line per protocol, CR/LF removed from the message; nothing without a protocol."""
        lg = login(protocol)

        run_actions(lg, cfg(deny={"users": ["alice"], "message": "Go away\r\nnow"}))

        assert line == lg._deny_line()

    def test_deny_stops_later_actions(self) -> None:
        """Actions after a denial do not run."""
        lg = login()

        run_actions(
            lg,
            cfg(
                deny={"users": ["alice"]},
                field=[{"name": "x", "value": "1"}],
                actions={"imap": ["deny", "fields"]},
            ),
        )

        assert "X" not in lg._env

    @given(st.text())
    def test_clean_text(self, text: str) -> None:
        """Client text never contains CR, LF or NUL."""
        assert not {"\r", "\n", "\0"} & set(clean_text(text))


class TestAlert:
    """IMAP alerts; POP3 stays silent."""

    def test_static(self) -> None:
        """A static alert is one untagged OK [ALERT] line."""
        lg = login()

        run_actions(lg, cfg(alert=[{"text": "Hello {user}\nthere"}]))

        assert [b"* OK [ALERT] Hello alice there\r\n"] == lg._client

    def test_pop3_silent(self) -> None:
        """POP3 gets no alert line, even if listed explicitly."""
        lg = login("pop3")

        run_actions(lg, cfg(alert=[{"text": "x"}], actions={"pop3": ["alert"]}))

        assert [] == lg._client

    def test_if_exists(self, tmp_path: Path) -> None:
        """A conditional alert shows only when the file exists (checked in the user phase)."""
        flag = tmp_path / "ooo"
        lg = login(HOME=str(tmp_path), UID=str(os.getuid()))
        config = cfg(alert=[{"text": "a", "if_exists": "{home}/ooo"}, {"text": "b"}])
        flag.write_text("x")

        run_actions(lg, config)
        lg._user_tasks[0][1]()

        assert [b"* OK [ALERT] a\r\n", b"* OK [ALERT] b\r\n"] == lg._client

    def test_if_exists_absent(self, tmp_path: Path) -> None:
        """Without the file the slot stays empty and nothing is written."""
        lg = login(HOME=str(tmp_path))

        run_actions(lg, cfg(alert=[{"text": "a", "if_exists": "{home}/ooo"}]))
        lg._user_tasks[0][1]()

        assert [b""] == lg._client


class TestFields:
    """acl_groups, mail and arbitrary fields, with USERDB_KEYS bookkeeping."""

    @pytest.mark.parametrize(
        ("names", "dialect", "value"),
        [
            (["staff", "100%"], "2.3", "staff,100%%"),
            (["staff", "a b", "c,d"], "2.4", 'staff,"a b","c,d"'),
            (["staff"], "2.4", "staff"),
        ],
    )
    def test_acl_groups_value(self, names: list[str], dialect: str, value: str) -> None:
        """2.3 doubles % (plugin settings are expanded); 2.4 quotes names with separators."""
        assert value == acl_groups_value(names, dialect)

    def test_acl_groups_action(self) -> None:
        """The mail identity's groups are exported, filtered, and listed in USERDB_KEYS once."""
        lg = login()

        run_actions(lg, cfg(acl_groups={"exclude": ["nothing*"]}))

        assert GROUP == lg._env["ACL_GROUPS"]
        assert lg._env["USERDB_KEYS"].endswith(" ACL_GROUPS ")

    @pytest.mark.parametrize(
        ("dialect", "value", "skipped"),
        [
            ("2.3", "staff,a b,100%%", "'c,d'"),
            ("2.4", 'staff,"a b","c,d",100%', "'e\"f', 'g\\\\h'"),
        ],
    )
    def test_acl_groups_unsafe_names(
        self, monkeypatch: pytest.MonkeyPatch, dialect: str, value: str, skipped: str
    ) -> None:
        """A name the dialect would split or misparse is left out, with one warning."""
        names = ["staff", "a b", "c,d", "100%", 'e"f', "g\\h"]
        if dialect == "2.3":
            names = names[:4]
        monkeypatch.setattr(_actions, "group_names", lambda _user, numeric: names)
        lg = login()

        run_actions(lg, cfg(dovecot={"version": dialect}, acl_groups={}))

        assert value == lg._env["ACL_GROUPS"]
        assert [f"acl_groups: left out group names Dovecot {dialect} cannot take: {skipped}"] == (
            lg._warnings
        )

    def test_acl_groups_filtered_out(self) -> None:
        """When the filter removes every group, no field is set."""
        lg = login()

        run_actions(lg, cfg(acl_groups={"include": ["zz-none"]}))

        assert "ACL_GROUPS" not in lg._env

    def test_mail_23(self) -> None:
        """The mail override renders an escaped 2.3 location into MAIL."""
        lg = login()

        run_actions(lg, cfg(mail={"location": "maildir:~/Mail:LAYOUT=fs:INDEX=/idx/{user}"}))

        assert "maildir:~/Mail:LAYOUT=fs:INDEX=/idx/alice" == lg._env["MAIL"]
        assert " MAIL " in lg._env["USERDB_KEYS"]

    def test_mail_24(self) -> None:
        """On 2.4 the override becomes mail_driver, mail_path and friends."""
        lg = login()

        run_actions(
            lg, cfg(mail={"location": "maildir:~/Mail:LAYOUT=fs"}, dovecot={"version": "2.4"})
        )

        assert ("maildir", "~/Mail", "fs") == (
            lg._env["MAIL_DRIVER"],
            lg._env["MAIL_PATH"],
            lg._env["MAILBOX_LIST_LAYOUT"],
        )

    def test_field_modes(self) -> None:
        """set replaces, append extends with the separator, default only fills a gap."""
        lg = login(QUOTA_RULE="*:storage=1G", USERDB_KEYS="UID GID HOME QUOTA_RULE ")
        fields = [
            {"name": "quota_rule", "value": "Trash:ignore", "mode": "append", "separator": " "},
            {"name": "quota_rule2", "value": "*:messages={uid}"},
            {"name": "home", "value": "/elsewhere", "mode": "default"},
            {"name": "plugin_x", "value": "50%", "literal_percent": True},
        ]

        run_actions(lg, cfg(field=fields))

        assert "*:storage=1G Trash:ignore" == lg._env["QUOTA_RULE"]
        assert "*:messages=70001" == lg._env["QUOTA_RULE2"]
        assert "/home/alice" == lg._env["HOME"]
        assert "50%%" == lg._env["PLUGIN_X"]
        assert ["UID", "GID", "HOME", "QUOTA_RULE", "QUOTA_RULE2", "PLUGIN_X"] == lg._env[
            "USERDB_KEYS"
        ].split()
        assert {"QUOTA_RULE", "QUOTA_RULE2", "PLUGIN_X", "USERDB_KEYS"} == set(lg._changes())

    def test_missing_template_field(self, capfd: pytest.CaptureFixture[str]) -> None:
        """A template naming an absent userdb field fails that action only."""
        lg = login()

        errors = run_actions(
            lg,
            cfg(
                field=[{"name": "q", "value": "{quota}"}],
                alert=[{"text": "ok"}],
                actions={"imap": ["fields", "alert"]},
            ),
        )

        assert ["fields: no value for field {quota} in '{quota}'"] == errors
        assert [b"* OK [ALERT] ok\r\n"] == lg._client

    def test_on_error_deny_raises(self) -> None:
        """With on_error = deny, a failing action propagates (the login is denied)."""
        lg = login()

        with pytest.raises(ValueError, match="no value"):
            run_actions(
                lg, cfg(field=[{"name": "q", "value": "{quota}"}], postlogin={"on_error": "deny"})
            )

    @pytest.mark.parametrize("name", ["", "a b", "a=b", "USER", "userdb_keys"])
    def test_field_name_checked(self, name: str) -> None:
        """Hook code cannot set invalid or reserved keys."""
        with pytest.raises(ValueError, match="field"):
            login().set_field(name, "x")


class TestLastLogin:
    """File and SQL last-login records."""

    def test_file_atomic(self, tmp_path: Path) -> None:
        """The file is replaced atomically, mode 0600; a planted symlink is replaced, not followed."""
        victim = tmp_path / "victim"
        victim.write_text("keep")
        path = tmp_path / "home" / ".nsprov" / "last-login"
        path.parent.mkdir(parents=True)
        path.symlink_to(victim)

        write_file_atomically(str(path), "now\n")

        assert ("keep", "now\n", False, 0o600) == (
            victim.read_text(),
            path.read_text(),
            path.is_symlink(),
            path.stat().st_mode & 0o777,
        )

    def test_failed_write_leaves_no_temporary_file(self, tmp_path: Path) -> None:
        """A last-login file that cannot be replaced leaves nothing behind in the user's directory.

        Here the name is taken by a directory (rename fails with EISDIR): the temporary
        file must go, or every login adds one more file to the user's home.
        """
        directory = tmp_path / "home" / ".nsprov"
        (directory / "last-login").mkdir(parents=True)
        (directory / "last-login" / "keep").write_text("")

        with pytest.raises(OSError, match="directory"):
            write_file_atomically(str(directory / "last-login"), "now\n")

        assert ["last-login"] == sorted(p.name for p in directory.iterdir())

    def test_file_action_queues_user_task(self, tmp_path: Path) -> None:
        """The file backend writes in the user phase, with protocol and IP."""
        lg = login(HOME=str(tmp_path), UID=str(os.getuid()) if os.getuid() else "70001")
        run_actions(lg, cfg(last_login={}))

        [(what, task)] = lg._user_tasks
        task()

        text = (tmp_path / ".nsprov" / "last-login").read_text()
        assert "last-login file" == what
        assert text.endswith("Z imap 192.0.2.10\n")

    def test_sqlite(self, tmp_path: Path) -> None:
        """Rows are upserted with parameters; a hostile user name is stored as data."""
        db = tmp_path / "ll.sqlite"
        config = cfg(last_login={"backend": "sqlite", "database": str(db), "table": "ll"})
        for user in ("alice", "x'); DROP TABLE ll; --", "alice"):
            run_actions(login(USER=user), config)

        rows = (
            sqlite3.connect(db)
            .execute("SELECT username, protocol, ip FROM ll ORDER BY username")
            .fetchall()
        )
        assert [
            ("alice", "imap", "192.0.2.10"),
            ("x'); DROP TABLE ll; --", "imap", "192.0.2.10"),
        ] == rows

    def test_timeout(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A database that hangs costs at most the timeout; the failure is an error line."""
        monkeypatch.setattr(_sql, "_postgresql", lambda *_a: time.sleep(30))
        c = LastLoginConfig(backend="postgresql", dsn="x", timeout=0.2)
        started = time.monotonic()

        with pytest.raises(TimeoutError, match="did not answer within 0.2s"):
            _sql.record_login(c, user="a", protocol="imap", ip="", when=0)
        assert time.monotonic() - started < 2

    def test_error_propagates(self, tmp_path: Path) -> None:
        """A database error is raised to the caller (and logged by the worker)."""
        c = LastLoginConfig(backend="sqlite", database=str(tmp_path / "no" / "dir.sqlite"))

        with pytest.raises(sqlite3.OperationalError):
            _sql.record_login(c, user="a", protocol="imap", ip="", when=0)
