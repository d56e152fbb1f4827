"""The post-login actions under a real Dovecot 2.3, through script-login, for IMAP and POP3.

One Dovecot serves most tests: ``script-login`` runs the installed ``nsprov post-login
--protocol=imap|pop3`` exactly as the README wires it, Dovecot listens on 127.0.0.1 and ::1, and
the ACL plugin is on. nsprov reads its configuration on every login, so each test writes the
configuration it needs and logs in. Deny and alert replies are read with a raw socket client, so
that every byte the client gets is checked. The hook examples, the auto-subscribe recipe and the
quota check run on Dovecot instances of their own.
"""

from __future__ import annotations

import grp
import imaplib
import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs
import pytest

from nsprov._config import load_config
from nsprov.exceptions import ConfigError

from .harness import (
    CLIENT_TIMEOUT,
    GROUPADD,
    GROUPDEL,
    HOST,
    Dovecot,
    Group,
    SystemAccounts,
    User,
    list_mailboxes,
    live_available,
    mailbox_arg,
    make_maildir,
    nsprov_problem,
    parse_list,
    select_count,
    wait_login_paths,
    write_script,
)
from .pg import PostgresCluster, pg_available

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

pytestmark = pytest.mark.live

NSPROV = str(Path(sys.executable).with_name("nsprov"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HOST6 = "::1"
Protocol = Literal["imap", "pop3"]
PROTOCOLS: tuple[Protocol, ...] = ("imap", "pop3")

#: Dovecot's ACL plugin with per-mailbox ``dovecot-acl`` files, and a second listener on ::1.
WORLD_CONF = """\
mail_plugins = $mail_plugins acl
protocol imap {
  mail_plugins = $mail_plugins acl imap_acl
}
plugin {
  acl = vfile
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1, ::1
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1, ::1
  }
}
"""

#: Dovecot's quota plugin, counting messages and their virtual sizes.
QUOTA_CONF = """\
mail_plugins = $mail_plugins quota
protocol imap {
  mail_plugins = $mail_plugins quota imap_quota
}
plugin {
  quota = count:User quota
  quota_vsizes = yes
}
"""

MESSAGE = "Mail is closed\\r\\nfor you."  # TOML escapes: a CR LF inside the message
SHOWN = "Mail is closed for you."  # what the client gets: CR dropped, LF a space


# --------------------------------------------------------------------------------------------
# A raw client: every byte after the credentials


@attrs.frozen(kw_only=True)
class Reply:
    """What a raw client got after sending its credentials."""

    #: Every byte up to and including the answer to the credentials (tagged, +OK or -ERR),
    #: or up to EOF when the server closed the connection first.
    login: bytes
    #: Whether the server closed the connection right after that (the login was refused).
    closed: bool
    #: The answers to the later commands, each up to and including its tagged or single line,
    #: the last one to LOGOUT or QUIT.
    answers: tuple[bytes, ...] = ()


class _Lines:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def line(self) -> bytes | None:
        """The next line with its line end; ``None`` at EOF (a partial last line is returned first)."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest or None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def until(self, done: bytes) -> tuple[bytes, bool]:
        """Lines up to one starting with *done*; and whether EOF came first."""
        out = b""
        while (line := self.line()) is not None:
            out += line
            if line.startswith(done):
                return out, False
        return out, True


def session(
    protocol: Protocol,
    port: int,
    user: User,
    commands: Sequence[str] = (),
    *,
    host: str = HOST,
) -> Reply:
    """Log in with a raw socket (IMAP ``LOGIN``, POP3 ``USER``/``PASS``), run *commands*, log out."""
    with socket.create_connection((host, port), timeout=CLIENT_TIMEOUT) as sock:
        lines = _Lines(sock)
        lines.line()  # the greeting
        answers = []
        if protocol == "imap":
            sock.sendall(f"a LOGIN {user.name} {user.password}\r\n".encode())
            login, closed = lines.until(b"a ")
            if closed:
                return Reply(login=login, closed=True)
            for i, command in enumerate((*commands, "LOGOUT")):
                sock.sendall(f"c{i} {command}\r\n".encode())
                answers.append(lines.until(f"c{i} ".encode())[0])
        else:
            sock.sendall(f"USER {user.name}\r\n".encode())
            assert (lines.line() or b"").startswith(b"+OK")
            sock.sendall(f"PASS {user.password}\r\n".encode())
            login = lines.line() or b""
            if not login.startswith(b"+OK"):
                rest, closed = lines.until(b"\0never")
                return Reply(login=login + rest, closed=closed)
            for command in (*commands, "QUIT"):
                sock.sendall(f"{command}\r\n".encode())
                answers.append(lines.line() or b"")
        rest, closed = lines.until(b"\0never")
        if rest:
            answers.append(rest)
        return Reply(login=login, closed=False, answers=tuple(answers))


def refused(protocol: Protocol, text: str) -> Reply:
    """The exact reply of a refused login: one line, then the server closes the connection."""
    line = f"* BYE [ALERT] {text}\r\n" if protocol == "imap" else f"-ERR [SYS/PERM] {text}\r\n"
    return Reply(login=line.encode(), closed=True)


def logged_in(reply: Reply) -> bool:
    """Whether the login was accepted (tagged OK for IMAP, +OK for POP3)."""
    last = reply.login.splitlines()[-1] if reply.login else b""
    return not reply.closed and (last.startswith((b"a OK ", b"+OK")))


# --------------------------------------------------------------------------------------------
# The world: accounts, a spool with dovecot-acl files, one Dovecot wired to nsprov


def _gid_taken(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True


class World:
    """Accounts, a spool and a Dovecot whose post-login step is ``nsprov post-login``."""

    def __init__(self, base: Path, accounts: SystemAccounts) -> None:
        self.base = base
        self.team = accounts.group("team")
        self.alice = accounts.user("alice", groups=[self.team])
        self.bob = accounts.user("bob")
        self.mallory = accounts.user("mallory")
        self.tester = accounts.user("test")
        self.planter = accounts.user("planter")
        self.readonly = accounts.user("readonly")
        self.rootdir = accounts.user("rootdir")
        self.orphan = self._orphan(accounts)
        self.users = [
            self.alice,
            self.bob,
            self.mallory,
            self.tester,
            self.planter,
            self.readonly,
            self.rootdir,
            self.orphan,
        ]
        self.spool = base / "spool"
        self.spool.mkdir(mode=0o755)
        sales = make_maildir(self.spool / "sales", messages=2, owner=0, group=0, mode=0o755)
        (sales / "dovecot-acl").write_text("anyone lr\n")
        weird = make_maildir(self.spool / "Weird Name", messages=3, owner=0, group=0, mode=0o755)
        (weird / "dovecot-acl").write_text("anyone lr\n")
        team = make_maildir(self.spool / "team", messages=4, owner=0, group=0, mode=0o755)
        (team / "dovecot-acl").write_text(f"group={self.team.name} lr\n")
        self.config = base / "nsprov.toml"
        self.configure("")
        line = f"{NSPROV} post-login --config={self.config} --protocol="
        self.dovecot = Dovecot(
            base / "dovecot",
            self.users,
            postlogin={"imap": line + "imap", "pop3": line + "pop3"},
            extra_conf=WORLD_CONF,
        )

    @staticmethod
    def _orphan(accounts: SystemAccounts) -> User:
        """A user whose primary group has no entry in the group database any more."""
        # A gid above GID_MAX (60000), which groupadd never hands out by itself: once the
        # group is deleted, no group created later in the run can take the gid over.
        gid = next(g for g in range(61000, 65000) if not _gid_taken(g))
        name = f"nspto{gid}"
        subprocess.run([GROUPADD, "--gid", str(gid), name], check=True, capture_output=True)
        group = Group(name=name, gid=gid)
        user = accounts.user("orphan", primary=group)
        subprocess.run([GROUPDEL, "--force", group.name], check=True, capture_output=True)
        return user

    def configure(self, text: str) -> None:
        """Replace the nsprov configuration (read afresh by every login)."""
        tmp = self.config.with_name("nsprov.toml.new")
        tmp.write_text(text)
        tmp.replace(self.config)

    def port(self, protocol: Protocol) -> int:
        """The Dovecot port for *protocol*."""
        return self.dovecot.imap_port if protocol == "imap" else self.dovecot.pop3_port

    def session(
        self,
        protocol: Protocol,
        user: User,
        commands: Sequence[str] = (),
        *,
        host: str = HOST,
    ) -> Reply:
        """A raw-socket session with this world's Dovecot."""
        return session(protocol, self.port(protocol), user, commands, host=host)

    def mark(self) -> int:
        """The current length of the log, to look only at what comes later."""
        return len(self.dovecot.log())

    def log_since(self, mark: int, needle: str, *, count: int = 1, timeout: float = 5) -> list[str]:
        """Log lines after *mark* containing *needle*, waiting up to *timeout* until *count* are there."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.dovecot.log()[mark:].splitlines() if needle in line]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)


@pytest.fixture(name="world", scope="module")
def _world() -> Iterator[World]:
    if reason := live_available():
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="nsprov-live-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        with SystemAccounts(base) as accounts:
            world = World(base, accounts)
            with world.dovecot:
                yield world
    finally:
        shutil.rmtree(base, ignore_errors=True)


def nsprov_lines(world: World, mark: int, *, wait_for: int = 0) -> list[str]:
    """nsprov's log lines after *mark* (waiting until at least *wait_for* are there)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in world.dovecot.log()[mark:].splitlines() if nsprov_problem(line)]
        if len(lines) >= wait_for or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if wait_for:
        time.sleep(0.05)  # a second line would have been written with the first
        lines = [line for line in world.dovecot.log()[mark:].splitlines() if nsprov_problem(line)]
    return lines


def deny_config(**keys: object) -> str:
    """A ``[deny]`` table with *keys* and :data:`MESSAGE`."""
    body = "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
    return f'[deny]\n{body}message = "{MESSAGE}"\n'


def _toml(value: object) -> str:
    if isinstance(value, str):
        assert not any(c in value for c in '"\\\n')
        return f'"{value}"'
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


# --------------------------------------------------------------------------------------------
# deny


@attrs.frozen(kw_only=True)
class DenyCase:
    """A ``[deny]`` configuration and who gets in from where."""

    config: str
    #: (user attribute of World, client host, refused?)
    logins: tuple[tuple[str, str, bool], ...]


def _deny_cases(world: World) -> dict[str, DenyCase]:
    team = world.team.name
    return {
        "user-glob": DenyCase(
            config=deny_config(users=["*-mallory"]),
            logins=(("mallory", HOST, True), ("alice", HOST, False)),
        ),
        "ipv4-cidr-match": DenyCase(
            config=deny_config(networks=["10.0.0.0/8", "127.0.0.0/8"]),
            logins=(("alice", HOST, True),),
        ),
        "ipv4-cidr-no-match": DenyCase(
            config=deny_config(networks=["10.0.0.0/8", "127.0.0.2/31"]),
            logins=(("alice", HOST, False),),
        ),
        "ipv6-match": DenyCase(
            config=deny_config(networks=["::1/128"]),
            logins=(("alice", HOST6, True), ("alice", HOST, False)),
        ),
        "ipv4-cidr-over-ipv6": DenyCase(
            config=deny_config(networks=["127.0.0.0/8"]),
            logins=(("alice", HOST6, False),),
        ),
        "local-network": DenyCase(
            config=deny_config(local_networks=["::1/128"]),
            logins=(("alice", HOST6, True), ("alice", HOST, False)),
        ),
        "group": DenyCase(
            config=deny_config(groups=[team]),
            logins=(("alice", HOST, True), ("bob", HOST, False)),
        ),
        "allow-user-wins": DenyCase(
            config=deny_config(users=["*"], allow_users=[world.alice.name]),
            logins=(("alice", HOST, False), ("bob", HOST, True)),
        ),
        "allow-network-wins": DenyCase(
            config=deny_config(groups=[team], allow_networks=["::1/128"]),
            logins=(("alice", HOST6, False), ("alice", HOST, True)),
        ),
        "default-deny-allow-group": DenyCase(
            config=deny_config(default="deny", allow_groups=[team]),
            logins=(("alice", HOST, False), ("bob", HOST, True), ("mallory", HOST6, True)),
        ),
    }


DENY_CASE_IDS = (
    "user-glob",
    "ipv4-cidr-match",
    "ipv4-cidr-no-match",
    "ipv6-match",
    "ipv4-cidr-over-ipv6",
    "local-network",
    "group",
    "allow-user-wins",
    "allow-network-wins",
    "default-deny-allow-group",
)


class TestDeny:
    """``[deny]`` refuses with exactly one protocol line and lets everybody else in."""

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    @pytest.mark.parametrize("case_id", DENY_CASE_IDS)
    def test_refused_exactly_or_let_in(
        self, world: World, protocol: Protocol, case_id: str
    ) -> None:
        """A refused client gets one BYE/-ERR line with the CR/LF-free message and EOF; others log in."""
        case = _deny_cases(world)[case_id]
        world.configure(case.config)

        for attr, host, deny in case.logins:
            user: User = getattr(world, attr)
            mark = world.mark()
            reply = world.session(protocol, user, host=host)

            if deny:
                assert refused(protocol, SHOWN) == reply, (attr, host)
                assert world.log_since(mark, f"Post-login script denied access to user {user.name}")
            else:
                assert logged_in(reply), (attr, host, reply)
            assert [] == nsprov_lines(world, mark)

    def test_imaplib_sees_a_closed_connection(self, world: World) -> None:
        """A refused IMAP login ends the session: imaplib's LOGIN raises."""
        world.configure(deny_config(users=["*-mallory"]))

        with pytest.raises(imaplib.IMAP4.abort) as raised:
            world.dovecot.imap(world.mallory)

        assert f"command: LOGIN => [ALERT] {SHOWN}" == str(raised.value)

    def test_denial_logs_no_fatal_line(self, world: World) -> None:
        """A refusal is policy, not a crash: Dovecot logs no Fatal line for the post-login service."""
        world.configure(deny_config(users=["*-mallory"]))
        mark = world.mark()

        reply = world.session("imap", world.mallory)
        fatal = world.log_since(mark, "Fatal:", timeout=1)

        assert refused("imap", SHOWN) == reply
        assert [] == fatal


# --------------------------------------------------------------------------------------------
# alert

ALERT_CONFIG = """\
[[alert]]
text = "Maintenance tonight\\r\\n22:00 UTC."

[[alert]]
text = "Out of office is on for {user}."
if_exists = "{home}/.out-of-office"
"""


@pytest.fixture(name="out_of_office")
def _out_of_office(world: World) -> Iterator[Path]:
    """``~/.out-of-office`` for alice, owned by her; removed afterwards."""
    path = world.alice.home / ".out-of-office"
    path.write_text("until Monday\n")
    os.chown(path, world.alice.uid, world.alice.gid)
    path.chmod(0o600)
    yield path
    path.unlink(missing_ok=True)


class TestAlert:
    """``[[alert]]`` reaches IMAP clients as untagged ALERTs and leaves POP3 alone."""

    def test_imap_alerts_then_login_completes(self, world: World, out_of_office: Path) -> None:
        """IMAP gets the static alert and, with ~/.out-of-office, the conditional one; SELECT works."""
        world.configure(ALERT_CONFIG)

        alice = world.session("imap", world.alice, ["SELECT INBOX"])
        bob = world.session("imap", world.bob, ["SELECT INBOX"])

        static = b"* OK [ALERT] Maintenance tonight 22:00 UTC.\r\n"
        personal = f"* OK [ALERT] Out of office is on for {world.alice.name}.\r\n".encode()
        assert [static, personal] == alice.login.splitlines(keepends=True)[:-1]
        assert [static] == bob.login.splitlines(keepends=True)[:-1]
        for reply in (alice, bob):
            assert logged_in(reply)
            assert reply.answers[0].splitlines()[-1].startswith(b"c0 OK [READ-WRITE]")

    @pytest.mark.parametrize("explicit", [False, True])
    def test_pop3_session_is_clean(self, world: World, out_of_office: Path, explicit: bool) -> None:
        """POP3 with the same alerts (even listed in [actions] pop3) gets +OK to PASS, STAT and QUIT, nothing else."""
        extra = '[actions]\npop3 = ["alert"]\n' if explicit else ""
        world.configure(extra + ALERT_CONFIG)

        reply = world.session("pop3", world.alice, ["STAT"])

        expected = Reply(
            login=b"+OK Logged in.\r\n",
            closed=False,
            answers=(b"+OK 0 0\r\n", b"+OK Logging out.\r\n"),
        )
        assert expected == reply


# --------------------------------------------------------------------------------------------
# acl_groups

SPOOL_CONFIG = """\
[[spool]]
path = "{spool}"
prefix = "Shared/{{name}}/"
separator = "/"
"""


def _flags(imap: imaplib.IMAP4, name: str) -> list[str]:
    typ, data = imap.list('""', mailbox_arg(name))
    assert "OK" == typ
    return next(flags for flags, _, n in parse_list(data) if n == name)


class TestAclGroups:
    """``[acl_groups]`` hands the UNIX groups to Dovecot's ACL plugin."""

    def test_group_acl_grants_only_members(self, world: World) -> None:
        """With acl_groups, a member of the group named in dovecot-acl may EXAMINE the mailbox; others may not."""
        world.configure(SPOOL_CONFIG.format(spool=world.spool) + "[acl_groups]\n")

        with world.dovecot.imap(world.alice) as imap:
            member = (_flags(imap, "Shared/team"), select_count(imap, "Shared/team"))
            rights = imap.myrights(mailbox_arg("Shared/team"))
        with world.dovecot.imap(world.bob) as imap:
            other = (_flags(imap, "Shared/team"), imap.select(mailbox_arg("Shared/team"), True))

        assert (["\\HasNoChildren"], 4) == member
        assert ("OK", [b"Shared/team lr"]) == rights
        assert "\\Noselect" in other[0]
        assert "NO" == other[1][0]

    def test_without_acl_groups_the_member_is_refused(self, world: World) -> None:
        """Without acl_groups Dovecot knows no UNIX group, so even a member cannot EXAMINE (the control)."""
        world.configure(SPOOL_CONFIG.format(spool=world.spool))

        with world.dovecot.imap(world.alice) as imap:
            typ, _ = imap.select(mailbox_arg("Shared/team"), True)
            sales = select_count(imap, "Shared/sales")

        assert ("NO", 2) == (typ, sales)

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    def test_unresolvable_primary_group(self, world: World, protocol: Protocol) -> None:
        """A user whose primary gid has no group entry still logs in with acl_groups and deny groups."""
        world.configure(
            deny_config(groups=["nomatch-*"], allow_groups=["nomatch-either"])
            + "[acl_groups]\n[actions]\nimap = ['deny', 'acl_groups']\npop3 = ['deny', 'acl_groups']\n"
        )
        with pytest.raises(KeyError):
            grp.getgrgid(world.orphan.gid)
        mark = world.mark()

        reply = world.session(protocol, world.orphan)

        assert logged_in(reply)
        assert [] == nsprov_lines(world, mark)


# --------------------------------------------------------------------------------------------
# Auto-subscribing public namespaces (hand-written environment): the recipe for nsprov


def _env_script(path: Path, fields: dict[str, str]) -> Path:
    """A /bin/sh post-login script that adds *fields* (keys uppercased) and lists them in USERDB_KEYS."""
    fields = {k.upper(): v for k, v in fields.items()}

    def q(text: str) -> str:
        return "'" + text.replace("'", "'\\''") + "'"

    args = " ".join(q(f"{k}={v}") for k, v in fields.items())
    keys = " ".join(fields)
    return write_script(path, f'exec /usr/bin/env {args} "USERDB_KEYS=$USERDB_KEYS {keys}" "$@"\n')


def _public(
    ns: str, prefix: str, location: str, *, list_: str, subscriptions: str
) -> dict[str, str]:
    return {
        f"namespace/{ns}/type": "public",
        f"namespace/{ns}/separator": "/",
        f"namespace/{ns}/prefix": prefix,
        f"namespace/{ns}/location": location,
        f"namespace/{ns}/list": list_,
        f"namespace/{ns}/subscriptions": subscriptions,
    }


def _lsub(imap: imaplib.IMAP4) -> list[str]:
    typ, data = imap.lsub('""', '"*"')
    assert "OK" == typ
    return sorted(name for _, _, name in parse_list(data))


#: A mailbox the configuration's inbox namespace auto-subscribes, as Debian's default config does.
TRASH_CONF = """\
namespace inbox {
  mailbox Trash {
    auto = subscribe
    special_use = \\Trash
  }
}
"""


class TestAutoSubscribe:
    """Which userdb fields make Dovecot 2.3 auto-subscribe a public namespace's mailbox."""

    def test_recipe(self, world: World) -> None:
        """Entries in the *inbox* namespace named by the full public name, with auto=subscribe, put them in LSUB."""
        boxes = {"s-sales": "sales", "s-weird": "Weird Name"}
        base = world.base / "autosub"
        base.mkdir()
        script = base / "post-login.sh"

        def fields(list_: str, subscriptions: str, *, subscribe: bool) -> dict[str, str]:
            out = {"namespace": " ".join(boxes)}
            for ns, directory in boxes.items():
                location = f"maildir:{world.spool}/{directory}:INDEX=~/idx/{ns}:CONTROL=~/idx/{ns}"
                prefix = f"Shared/{directory}/"
                out |= _public(ns, prefix, location, list_=list_, subscriptions=subscriptions)
            if subscribe:
                out["namespace/inbox/mailbox"] = " ".join(boxes)
                for ns, directory in boxes.items():
                    out[f"namespace/inbox/mailbox/{ns}/name"] = f"Shared/{directory}"
                    out[f"namespace/inbox/mailbox/{ns}/auto"] = "subscribe"
            return out

        seen = {}
        with Dovecot(
            base / "dovecot",
            [world.alice],
            postlogin={"imap": str(script)},
            extra_conf=TRASH_CONF,
        ) as dovecot:
            for label, list_, subscriptions, subscribe in (
                ("without", "children", "no", False),
                ("recipe", "children", "no", True),
                ("subscriptions-yes", "children", "yes", True),
                ("list-yes", "yes", "no", True),
            ):
                _env_script(script, fields(list_, subscriptions, subscribe=subscribe))
                with dovecot.imap(world.alice) as imap:
                    if label == "recipe":  # auto=subscribe cannot be undone by the user
                        assert "OK" == imap.unsubscribe(mailbox_arg("Shared/sales"))[0]
                    seen[label] = (
                        _lsub(imap),
                        sorted(list_mailboxes(imap)),
                        select_count(imap, "Shared/Weird Name"),
                    )
            errors = dovecot.errors()

        private = ["INBOX", "Trash"]
        shared = ["Shared/Weird Name", "Shared/sales"]
        assert (["Trash"], private, 3) == seen["without"]
        assert ([*shared, "Trash"], sorted([*shared, *private]), 3) == seen["recipe"]
        assert seen["recipe"] == seen["subscriptions-yes"]
        # With list=yes the public namespace lists its prefix mailbox too: each name twice.
        assert ([*shared, "Trash"], sorted([*shared, *shared, *private]), 3) == seen["list-yes"]
        assert [] == errors
        assert not (world.alice.home / "Maildir" / ".Shared.sales").exists()

    def test_nsprov_subscribe(self, world: World) -> None:
        """nsprov's subscribe = true puts every shared mailbox the user may read in LSUB, once in LIST."""
        world.configure(
            SPOOL_CONFIG.format(spool=world.spool)
            + 'list = "children"\nsubscribe = true\n[actions]\nimap = ["namespaces"]\n'
        )

        with world.dovecot.imap(world.bob) as imap:
            lsub = _lsub(imap)
            listed = list_mailboxes(imap)
            count = select_count(imap, "Shared/sales")

        shared = sorted(n for n in listed if n.startswith("Shared/"))
        assert shared == [n for n in lsub if n.startswith("Shared/")]
        assert "Shared/sales" in shared
        assert len(listed) == len(set(listed))
        assert 2 == count


# --------------------------------------------------------------------------------------------
# last_login: file

LAST_LOGIN_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (imap|pop3) (\S+)\n")


class TestLastLoginFile:
    """``[last_login] backend = "file"`` writes ~/.nsprov/last-login as the user, safely."""

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    def test_written_as_the_user(self, world: World, protocol: Protocol) -> None:
        """After a login the file holds the protocol and client address, owned by the user, mode 0600."""
        world.configure("[last_login]\n")
        path = world.alice.home / ".nsprov" / "last-login"
        path.unlink(missing_ok=True)

        reply = world.session(protocol, world.alice)
        st = path.stat()
        match = LAST_LOGIN_LINE.fullmatch(path.read_text())

        assert logged_in(reply)
        assert (world.alice.uid, world.alice.gid, 0o600) == (
            st.st_uid,
            st.st_gid,
            stat.S_IMODE(st.st_mode),
        )
        assert match is not None
        assert (protocol, HOST) == match.groups()
        assert 0o700 == stat.S_IMODE(path.parent.stat().st_mode)

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    def test_planted_symlink_is_replaced_not_followed(
        self, world: World, protocol: Protocol
    ) -> None:
        """A last-login symlink to a root-owned file is replaced; the root file keeps content, owner and mode."""
        world.configure("[last_login]\n")
        victim = world.base / f"victim-{protocol}"
        victim.write_text("precious\n")
        victim.chmod(0o644)
        state = world.planter.home / ".nsprov"
        state.mkdir(mode=0o700, exist_ok=True)
        os.chown(state, world.planter.uid, world.planter.gid)
        (state / "last-login").unlink(missing_ok=True)
        (state / "last-login").symlink_to(victim)
        os.lchown(state / "last-login", world.planter.uid, world.planter.gid)

        reply = world.session(protocol, world.planter)
        st = victim.stat()

        assert logged_in(reply)
        assert ("precious\n", 0, 0, 0o644) == (
            victim.read_text(),
            st.st_uid,
            st.st_gid,
            stat.S_IMODE(st.st_mode),
        )
        assert not (state / "last-login").is_symlink()
        assert world.planter.uid == (state / "last-login").stat().st_uid

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    @pytest.mark.parametrize("how", ["home-0500", "root-owned-dir"])
    def test_unwritable_home_logs_one_line(
        self, world: World, protocol: Protocol, how: str
    ) -> None:
        """With an unwritable home or a root-owned ~/.nsprov the login succeeds and nsprov logs one line."""
        world.configure("[last_login]\n")
        user = world.readonly if how == "home-0500" else world.rootdir
        state = user.home / ".nsprov"
        if how == "home-0500":
            shutil.rmtree(state, ignore_errors=True)
            user.home.chmod(0o500)
        else:
            state.mkdir(mode=0o755, exist_ok=True)
            os.chown(state, 0, 0)
        mark = world.mark()
        try:
            reply = world.session(protocol, user)
            lines = nsprov_lines(world, mark, wait_for=1)
        finally:
            user.home.chmod(0o700)

        assert logged_in(reply)
        assert 1 == len(lines), lines
        assert f"user {user.name}: last-login file: Permission denied" in lines[0]
        assert not (state / "last-login").exists()


# --------------------------------------------------------------------------------------------
# last_login: SQL


def _sql_config(backend: str, **keys: str | float) -> str:
    """A ``[last_login]`` table for *backend* with *keys*."""
    body = "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
    return f'[last_login]\nbackend = "{backend}"\n{body}'


class TestLastLoginSqlite:
    """``backend = "sqlite"``: one row per user, updated on every login."""

    def test_rows(self, world: World) -> None:
        """IMAP and POP3 logins upsert (username, protocol, ip, login_time), one row per user."""
        directory = world.base / "sqlite"
        directory.mkdir(mode=0o700)
        database = directory / "last-login.sqlite"
        world.configure(_sql_config("sqlite", database=str(database)))
        mark = len(world.dovecot.log())
        before = int(time.time())

        replies = [
            world.session("imap", world.alice),
            world.session("pop3", world.bob),
            world.session("pop3", world.alice, host=HOST6),
        ]
        after = int(time.time())
        paths = wait_login_paths(world.dovecot.log, 3, mark)
        with sqlite3.connect(database) as db:
            rows = db.execute(
                "SELECT username, protocol, ip, login_time FROM last_login ORDER BY username"
            ).fetchall()
        db.close()

        assert all(logged_in(r) for r in replies)
        assert [
            (world.alice.name, "pop3", HOST6),
            (world.bob.name, "pop3", HOST),
        ] == [row[:3] for row in rows]
        assert all(before <= row[3] <= after for row in rows)
        assert 0 == database.stat().st_uid
        # The sqlite backend keeps the configuration on the full path (its driver), every login.
        assert ["full"] * 3 == [path for _, path in paths]


@pytest.fixture(name="pg", scope="module")
def _pg(world: World) -> Iterator[PostgresCluster]:
    if reason := pg_available():
        pytest.skip(reason)
    with PostgresCluster(world.base) as cluster:
        yield cluster


class TestLastLoginPostgresql:
    """``backend = "postgresql"``: rows in a real server; a dead or hung server never blocks a login."""

    def test_rows(self, world: World, pg: PostgresCluster) -> None:
        """IMAP and POP3 logins upsert one row per user over the UNIX socket DSN."""
        world.configure(_sql_config("postgresql", dsn=pg.dsn, table="logins"))
        before = int(time.time())

        replies = [
            world.session("imap", world.alice),
            world.session("pop3", world.bob),
            world.session("imap", world.bob, host=HOST6),
        ]
        after = int(time.time())
        rows = pg.query("SELECT username, protocol, ip, login_time FROM logins ORDER BY username")

        assert all(logged_in(r) for r in replies)
        assert [
            (world.alice.name, "imap", HOST),
            (world.bob.name, "imap", HOST6),
        ] == [row[:3] for row in rows]
        assert all(before <= row[3] <= after for row in rows)

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    def test_server_stopped(self, world: World, pg: PostgresCluster, protocol: Protocol) -> None:
        """With the server stopped the login succeeds at once and nsprov logs one line."""
        world.configure(_sql_config("postgresql", dsn=pg.dsn, timeout=1.0))
        mark = world.mark()

        with pg.stopped():
            started = time.monotonic()
            reply = world.session(protocol, world.alice)
            elapsed = time.monotonic() - started
            lines = nsprov_lines(world, mark, wait_for=1)

        assert logged_in(reply)
        assert elapsed < 2
        assert 1 == len(lines), lines
        assert f"user {world.alice.name}: last_login: " in lines[0]

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    def test_server_hangs(self, world: World, pg: PostgresCluster, protocol: Protocol) -> None:
        """With the postmaster stopped by SIGSTOP (TCP DSN) the login succeeds after about the timeout."""
        world.configure(_sql_config("postgresql", dsn=pg.tcp_dsn, timeout=1.0))
        mark = world.mark()

        with pg.paused():
            started = time.monotonic()
            reply = world.session(protocol, world.alice)
            elapsed = time.monotonic() - started
            lines = nsprov_lines(world, mark, wait_for=1)

        assert logged_in(reply)
        assert 1.0 <= elapsed < 5, elapsed
        assert 1 == len(lines), lines
        assert f"user {world.alice.name}: last_login: " in lines[0]
        assert "did not answer within 1s" in lines[0]

    def test_hang_with_an_accepted_timeout_spares_other_actions(
        self, world: World, pg: PostgresCluster
    ) -> None:
        """A SQL timeout the config accepts never costs the login its alerts and namespaces when the server hangs."""
        world.configure(
            SPOOL_CONFIG.format(spool=world.spool)
            + _sql_config("postgresql", dsn=pg.tcp_dsn, timeout=2.0)
            + '[[alert]]\ntext = "Hello."\n'
        )
        try:
            load_config(str(world.config))
        except ConfigError:
            return  # refusing a timeout that cannot fit the deadline is a fix too

        with pg.paused():
            reply = world.session("imap", world.alice, ['LIST "" "Shared/sales"'])

        assert logged_in(reply)
        assert b"* OK [ALERT] Hello.\r\n" == reply.login.splitlines(keepends=True)[0]
        assert b'* LIST (\\HasNoChildren) "/" Shared/sales\r\n' in reply.answers[0]


# --------------------------------------------------------------------------------------------
# Hook examples and the all-actions example


def install_example(source: Path, target: Path, replacements: dict[str, str] | None = None) -> Path:
    """Copy an example hook with the venv's interpreter on the ``#!`` line (and texts replaced)."""
    first, _, body = source.read_text().partition("\n")
    assert first.startswith("#!/")
    assert "python" in first
    for old, new in (replacements or {}).items():
        assert old in body, f"{old!r} is no longer in {source.name}"
        body = body.replace(old, new)
    return write_script(target, body, interpreter=sys.executable)


class TestHookExamples:
    """examples/hooks/ scripts run under script-login and do what they say."""

    def test_quota_and_namespaces(self, world: World) -> None:
        """The quota example's rule reaches the quota plugin and its namespaces appear; POP3 logs in too."""
        base = world.base / "hook-quota"
        base.mkdir()
        config = base / "nsprov.toml"
        config.write_text(SPOOL_CONFIG.format(spool=world.spool))
        script = install_example(
            EXAMPLES / "hooks" / "quota_and_namespaces.py", base / "quota_and_namespaces.py"
        )
        line = f"{script} --config={config} --protocol="

        with Dovecot(
            base / "dovecot",
            [world.alice],
            postlogin={"imap": line + "imap", "pop3": line + "pop3"},
            extra_conf=QUOTA_CONF,
        ) as dovecot:
            with dovecot.imap(world.alice) as imap:
                typ, quota = imap.getquotaroot("INBOX")
                names = list_mailboxes(imap)
                count = select_count(imap, "Shared/Weird Name")
            reply = session("pop3", dovecot.pop3_port, world.alice, ["STAT"])
            errors = dovecot.errors()
            paths = wait_login_paths(dovecot.log, 2)

        assert ("OK", [b'"User quota" (STORAGE 0 1048576)']) == (typ, quota[1])
        assert {"Shared/sales", "Shared/Weird Name", "Shared/team", "INBOX"} == set(names)
        assert 3 == count
        assert logged_in(reply)
        assert [] == errors
        # A Python hook runs the full path (the model, attrs and all), for IMAP and POP3 alike.
        assert [(world.alice.name, "full")] * 2 == paths

    def test_deny_rule(self, world: World) -> None:
        """The deny example refuses the test account with its message on IMAP and POP3, others pass; the monitoring network passes too."""
        base = world.base / "hook-deny"
        base.mkdir()
        source = EXAMPLES / "hooks" / "deny_rule.py"
        message = "Test accounts may log in only from the monitoring network."
        script = base / "deny_rule.py"
        line = f"{script} --protocol="

        install_example(source, script)
        with Dovecot(
            base / "dovecot",
            [world.alice, world.tester],
            postlogin={"imap": line + "imap", "pop3": line + "pop3"},
        ) as dovecot:
            results = {}
            for protocol in PROTOCOLS:
                port = dovecot.imap_port if protocol == "imap" else dovecot.pop3_port
                results[protocol] = (
                    session(protocol, port, world.tester),
                    session(protocol, port, world.alice),
                )
            log = dovecot.log()
            install_example(
                source,
                script,
                {'MONITORING_NETWORKS = ("192.0.2.0/24",': 'MONITORING_NETWORKS = ("127.0.0.0/8",'},
            )
            monitored = session("imap", dovecot.imap_port, world.tester)

        for protocol in PROTOCOLS:
            tester, alice = results[protocol]
            assert refused(protocol, message) == tester
            assert logged_in(alice)
        assert 2 == log.count(f"Post-login script denied access to user {world.tester.name}")
        assert logged_in(monitored)


class TestAllActionsExample:
    """examples/nsprov-all-actions.toml loads, and a login with it runs every action."""

    def test_every_action(self, world: World, out_of_office: Path) -> None:
        """With the example's paths pointed at test files, IMAP shows alerts and namespaces, POP3 logs in, rows are written."""
        database = world.base / "all-actions" / "last-login.sqlite"
        database.parent.mkdir(mode=0o700)
        text = (EXAMPLES / "nsprov-all-actions.toml").read_text()
        for old, new in (
            ("/srv/mail/shared", str(world.spool)),
            ("/var/lib/nsprov/last-login.sqlite", str(database)),
        ):
            assert old in text
            text = text.replace(old, new)
        world.configure(text)
        config = load_config(str(world.config))
        mark = world.mark()

        imap = world.session(
            "imap", world.alice, ['EXAMINE "Shared/Weird Name"', "EXAMINE Shared/team"]
        )
        pop3 = world.session("pop3", world.bob, ["STAT"])
        with sqlite3.connect(database) as db:
            rows = db.execute("SELECT username, protocol FROM last_login ORDER BY 1").fetchall()
        db.close()

        expected_actions = (
            "deny",
            "alert",
            "acl_groups",
            "last_login",
            "mail",
            "fields",
            "namespaces",
        )
        assert expected_actions == config.actions.imap
        assert [
            b"* OK [ALERT] Mail maintenance on Saturday, 06:00-08:00 UTC.\r\n",
            b"* OK [ALERT] Your out-of-office reply is switched on.\r\n",
        ] == imap.login.splitlines(keepends=True)[:-1]
        assert logged_in(imap)
        assert b"* 3 EXISTS" in imap.answers[0]
        assert b"* 4 EXISTS" in imap.answers[1]  # acl_groups: alice is in the team group
        assert (
            Reply(
                login=b"+OK Logged in.\r\n",
                closed=False,
                answers=(b"+OK 0 0\r\n", b"+OK Logging out.\r\n"),
            )
            == pop3
        )
        assert [(world.alice.name, "imap"), (world.bob.name, "pop3")] == rows
        assert [] == nsprov_lines(world, mark)
