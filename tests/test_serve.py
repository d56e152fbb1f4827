"""Tests for ``nsprov serve``: the reply, the cache, and the server over a real UNIX socket.

No Dovecot here (see ``tests/live/test_serve_live.py``): the server runs in a thread with
its own event loop, or as a ``nsprov serve`` subprocess, and plain sockets talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsprov._cli import main as cli_main
from nsprov._config import config_from_mapping
from nsprov._dictproto import UserdbKey
from nsprov._env import V23, V24
from nsprov._identity import MailUser
from nsprov._location import MailLocation
from nsprov._model import Namespace
from nsprov._perms import Identity, PosixAcl
from nsprov._serve import (
    DEFAULT_REPLY_BUDGET,
    LUA_MAX_REPLY,
    Answer,
    Log,
    Recorder,
    ReplyBudget,
    Resolver,
    ServeOptions,
    Server,
    SocketInUseError,
    bind_socket,
    default_reply_budget,
    dovecot_config,
    dovecot_dict_file,
    dovecot_userdb_conf,
    fit_reply,
    main,
    make_dirs_as,
    reply_budget,
    reply_fields,
    serve_parser,
)
from nsprov.exceptions import IdentityError, NsprovError, UntrustedFileError

from .strategies import HOSTILE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from nsprov._config import Config

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "serve"
NSPROV = str(Path(sys.executable).with_name("nsprov"))
HELLO = b"H3\t2\t0\t\tnsprov\n"
ME, MY_GID = os.getuid(), os.getgid()
ROOT = os.geteuid() == 0


# --- helpers ---------------------------------------------------------------------------


def maildir(path: Path, mode: int = 0o755) -> Path:
    """A maildir with cur, new and tmp, all *mode*."""
    path.mkdir()
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir()
        (path / sub).chmod(mode)
    path.chmod(mode)
    return path


@pytest.fixture(name="base")
def _base() -> Iterator[Path]:
    """A fresh directory whose ancestors everybody may search (unlike pytest's tmp_path)."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nsprov-serve-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(name="spool")
def _spool(base: Path) -> Path:
    """A spool: two world-readable maildirs and one for the test's group only."""
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    maildir(spool / "sales")
    maildir(spool / "Weird Name")
    team = maildir(spool / "team", 0o750)
    for p in (team, team / "cur", team / "new", team / "tmp"):
        os.chown(p, -1, MY_GID)
    return spool


def make_config(spool: Path, **namespace: Any) -> Config:
    """A config serving *spool* under Shared/, without directory creation unless asked."""
    return config_from_mapping(
        {
            "spool": [{"path": str(spool), "prefix": "Shared/{name}/"}],
            "namespace": {"create_dirs": False, **namespace},
        }
    )


class Identities:
    """A stand-in for NSS: user name -> uid, gid, supplementary groups; mutable by tests."""

    def __init__(self) -> None:
        self.users: dict[str, tuple[int, int, set[int]]] = {
            "member": (70001, 70001, {MY_GID}),
            "other": (70002, 70002, set()),
        }
        self.calls = 0

    def __call__(self, config: Config, user: str, home: str | None) -> MailUser:
        self.calls += 1
        if user not in self.users:
            raise IdentityError(f"unknown user {user!r}")
        uid, gid, groups = self.users[user]
        return MailUser(
            user=user,
            home=home or f"/home/{user}",
            identity=Identity(uid=uid, gid=gid, groups=frozenset(groups)),
        )


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def prefixes(answer: Answer) -> set[str]:
    """The namespace prefixes in a found answer."""
    fields = json.loads(answer.value) if answer.value else {}
    return {v for k, v in fields.items() if k.endswith("/prefix")}


def reply_prefixes(line: bytes) -> set[str]:
    """The namespace prefixes in a dict-proxy ``O`` reply line."""
    assert line.startswith(b"O")
    fields = json.loads(line[1:].replace(b"\x01t", b"\t").replace(b"\x01n", b"\n"))
    return {v for k, v in fields.items() if k.endswith("/prefix")}


def ns(name: str, prefix: str | None = None, root: str = "/spool/x") -> Namespace:
    """A public namespace with per-user index and control directories."""
    return Namespace(
        name=name,
        prefix=prefix or f"Shared/{name}/",
        location=MailLocation(
            root=root, index=f"/home/u/.nsprov/{name}", control=f"/home/u/.nsprov/{name}"
        ),
    )


# --- the reply -------------------------------------------------------------------------


names = st.from_regex(r"s-[a-z0-9]{1,12}", fullmatch=True)
roots = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
).map(lambda t: "/spool/" + t.replace("/", "_"))


@st.composite
def namespace_lists(draw: st.DrawFn) -> list[Namespace]:
    """Up to 30 namespaces with distinct names, hostile roots and prefixes."""
    chosen = draw(st.lists(names, unique=True, max_size=30))
    return [ns(n, prefix=f"Shared/{n} {draw(roots)[7:]}/", root=draw(roots)) for n in chosen]


class TestFitReply:
    """The JSON reply and its budget."""

    @given(namespace_lists(), st.integers(min_value=2, max_value=6000), st.sampled_from([V23, V24]))
    def test_longest_prefix_within_budget(
        self, namespaces: list[Namespace], budget: int, dialect: Any
    ) -> None:
        """The reply carries the longest leading run that fits, its size is measured exactly, and one more would not fit."""
        reply = fit_reply(namespaces, dialect, budget)
        bigger = fit_reply(namespaces, dialect, 1 << 30)

        assert reply.size <= budget
        assert dict(reply_fields(namespaces[: reply.fits], dialect)) == json.loads(reply.value)
        assert (len(namespaces), bigger.size, bigger.size) == (
            reply.total,
            reply.full_size,
            bigger.full_size,
        )
        if reply.fits < reply.total:
            assert fit_reply(namespaces[: reply.fits + 1], dialect, 1 << 30).size > budget

    def test_fields_2_3(self) -> None:
        """2.3: a namespace= list, lowercase keys, the location as mail=, defaults left out."""
        fields = reply_fields([ns("s-a")], V23)

        assert [
            ("namespace", "s-a"),
            ("namespace/s-a/type", "public"),
            ("namespace/s-a/separator", "/"),
            ("namespace/s-a/prefix", "Shared/s-a/"),
            (
                "namespace/s-a/mail",
                "maildir:/spool/x:INDEX=/home/u/.nsprov/s-a:CONTROL=/home/u/.nsprov/s-a",
            ),
        ] == fields

    def test_fields_2_4(self) -> None:
        """2.4: namespace+= and one setting per location parameter."""
        keys = [k for k, _ in reply_fields([ns("s-a")], V24)]

        assert "namespace+" == keys[0]
        assert {"namespace/s-a/mail_driver", "namespace/s-a/mail_path"} <= set(keys)

    def test_empty(self) -> None:
        """No namespaces: an empty object."""
        assert (b"{}", 0, 0) == (
            fit_reply([], V23, 100).value,
            fit_reply([], V23, 100).fits,
            fit_reply([], V23, 100).total,
        )

    def test_reply_budget(self, spool: Path) -> None:
        """reply_budget says how many of a user's namespaces fit, in how many bytes."""
        user = MailUser(
            user="member", home="/home/m", identity=Identity(uid=70001, gid=70001, groups={MY_GID})
        )
        full = reply_budget(make_config(spool), user)
        tight = reply_budget(make_config(spool), user, budget=full.size - 1)

        assert (3, 3, False, DEFAULT_REPLY_BUDGET) == (
            full.fits,
            full.total,
            full.over,
            full.budget,
        )
        assert (
            ReplyBudget(fits=2, total=3, size=tight.size, full_size=full.size, budget=full.size - 1)
            == tight
        )
        assert tight.over


# --- logging -----------------------------------------------------------------------------


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


# --- the cache -----------------------------------------------------------------------------


class TestDeps:
    """What invalidates a cached answer: per path, by ctime, and by listing."""

    @staticmethod
    def recorded(spool: Path) -> Any:
        rec = Recorder()
        user = MailUser(
            user="member", home="/h", identity=Identity(uid=70001, gid=70001, groups={MY_GID})
        )
        from nsprov._engine import plan

        plan(make_config(spool), user, {}, fs=rec.fs(), keep_skipped=False)
        return rec.deps()

    def test_unchanged(self, spool: Path) -> None:
        """Nothing changed: still valid."""
        assert None is self.recorded(spool).changed()

    def test_chmod(self, spool: Path) -> None:
        """chmod of one entry invalidates (the spool's mtime does not move)."""
        deps = self.recorded(spool)
        (spool / "sales").chmod(0o700)

        assert os.fsencode(spool / "sales") == deps.changed()

    def test_chown(self, spool: Path) -> None:
        """chown of a cur directory invalidates."""
        if not ROOT:
            pytest.skip("changing a group needs root")
        deps = self.recorded(spool)
        os.chown(spool / "team" / "cur", -1, MY_GID + 1)

        assert os.fsencode(spool / "team" / "cur") == deps.changed()

    def test_setfacl(self, spool: Path) -> None:
        """An ACL change that keeps the mode bits invalidates through the ctime."""
        target = spool / "sales"
        os.setxattr(
            target,
            "system.posix_acl_access",
            PosixAcl(user_obj=7, group_obj=5, other=5, mask=5).to_xattr(),
        )
        deps = self.recorded(spool)
        os.setxattr(
            target,
            "system.posix_acl_access",
            PosixAcl(user_obj=7, group_obj=5, other=5, mask=5, users=[(70002, 5)]).to_xattr(),
        )

        assert os.fsencode(target) == deps.changed()

    def test_delivery_keeps_cache(self, spool: Path) -> None:
        """Mail delivered into cur moves cur's ctime but changes no permission: still valid."""
        deps = self.recorded(spool)
        time.sleep(0.01)
        (spool / "sales" / "cur" / "1.msg:2,").write_text("x")

        assert None is deps.changed()

    def test_new_entry(self, spool: Path) -> None:
        """A new entry changes the spool listing."""
        deps = self.recorded(spool)
        time.sleep(0.01)
        maildir(spool / "new-box")

        assert os.fsencode(spool) == deps.changed()

    def test_replaced_entry(self, spool: Path) -> None:
        """An entry removed and created again is a new inode."""
        deps = self.recorded(spool)
        shutil.rmtree(spool / "sales")
        maildir(spool / "sales")

        assert deps.changed() is not None

    def test_ignore_file(self, spool: Path) -> None:
        """Editing the ignore file invalidates."""
        ignore = spool / ".nsprovignore"
        ignore.write_text("nothing\n")
        deps = self.recorded(spool)
        time.sleep(0.01)
        ignore.write_text("sales\n")

        assert os.fsencode(ignore) == deps.changed()


class TestResolver:
    """Validating a cached answer or computing a new one."""

    @pytest.fixture(name="resolver")
    def _resolver(self) -> Resolver:
        return Resolver(ttl=5.0, clock=FakeClock(), identify=Identities())

    def test_hit_miss_and_ttl(self, resolver: Resolver, spool: Path) -> None:
        """A valid entry is a hit until the TTL, then the scan runs again."""
        config = make_config(spool)
        key = UserdbKey("member")
        first = resolver.resolve(config, 0, key, None)
        second = resolver.resolve(config, 0, key, first.entry)
        clock = resolver.clock
        assert isinstance(clock, FakeClock)
        clock.now += 5.0
        third = resolver.resolve(config, 0, key, first.entry)

        assert ("miss", "hit", "miss") == (first.how, second.how, third.how)
        assert {"Shared/sales/", "Shared/Weird Name/", "Shared/team/"} == prefixes(second.answer)

    def test_generation(self, resolver: Resolver, spool: Path) -> None:
        """An entry from before a reload is not used."""
        first = resolver.resolve(make_config(spool), 0, UserdbKey("member"), None)

        assert (
            "miss" == resolver.resolve(make_config(spool), 1, UserdbKey("member"), first.entry).how
        )

    def test_unknown_user(self, resolver: Resolver, spool: Path) -> None:
        """A user NSS does not know: not found, cached for the TTL."""
        out = resolver.resolve(make_config(spool), 0, UserdbKey("nobody-here"), None)

        assert ("not-found", True) == (out.answer.kind, out.entry is not None)

    def test_failure_not_cached(self, resolver: Resolver, base: Path) -> None:
        """A missing spool fails the lookup, logs it, and is not cached."""
        out = resolver.resolve(make_config(base / "missing"), 0, UserdbKey("member"), None)

        assert ("fail", None) == (out.answer.kind, out.entry)
        assert "missing" in out.answer.error
        assert ["lookup-failed"] == [event for _, event, _ in out.logs]

    def test_internal_error(self, spool: Path) -> None:
        """An unexpected exception becomes a failure, never a crash."""

        def broken(config: Config, user: str, home: str | None) -> MailUser:
            raise ZeroDivisionError("boom")

        out = Resolver(identify=broken).resolve(make_config(spool), 0, UserdbKey("x"), None)

        assert "internal error: ZeroDivisionError: boom" == out.answer.error

    def test_over_budget(self, spool: Path) -> None:
        """Over budget: the first namespaces in discovery order and one warning with the counts."""
        resolver = Resolver(budget=700, identify=Identities())
        out = resolver.resolve(make_config(spool), 0, UserdbKey("member"), None)
        warnings = [fields for level, _, fields in out.logs if level == "warning"]

        assert {"Shared/Weird Name/", "Shared/sales/"} == prefixes(out.answer)
        assert 1 == len(warnings)
        assert {"user": "member", "served": 2, "found": 3, "budget": 700} == {
            k: warnings[0][k] for k in ("user", "served", "found", "budget")
        }

    def test_budget_follows_the_dialect(self, spool: Path) -> None:
        """Without a configured budget, a 2.4 reply may use the Lua userdb's 7680 bytes, a 2.3 one 7000."""
        member = Identities()(make_config(spool), "member", None)
        budgets = {
            version: reply_budget(attrs.evolve(make_config(spool), dialect=version), member).budget
            for version in ("2.3", "2.4")
        }

        assert {"2.3": 7000, "2.4": 7680} == budgets
        assert (DEFAULT_REPLY_BUDGET, LUA_MAX_REPLY) == (7000, default_reply_budget("2.4"))

    def test_over_budget_24(self, spool: Path) -> None:
        """2.4 over the budget: the first namespaces and one warning naming that budget."""
        config = attrs.evolve(make_config(spool), dialect="2.4")
        full = Resolver(identify=Identities()).resolve(config, 0, UserdbKey("member"), None)
        size = len(full.answer.value or b"")
        out = Resolver(budget=size - 1, identify=Identities()).resolve(
            config, 0, UserdbKey("member"), None
        )
        warnings = [fields for level, _, fields in out.logs if level == "warning"]

        assert (3, 3) == (full.answer.fits, full.answer.total)
        assert (2, 3) == (out.answer.fits, out.answer.total)
        assert [size - 1] == [w["budget"] for w in warnings]

    def test_reply_keys_24_are_shows(self, spool: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A 2.4 reply has exactly the keys ``nsprov show --dialect=2.4 --format=env`` lists, lowercased."""
        config_path = spool.parent / "c.toml"
        config_path.write_text(
            f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n'
            "[namespace]\ncreate_dirs = false\n"
        )
        uid, gid, groups = Identities().users["member"]
        assert 0 == cli_main(
            [
                "show",
                "--user=member",
                f"--config={config_path}",
                "--dialect=2.4",
                "--format=env",
                f"--uid={uid}",
                f"--gid={gid}",
                "--groups=" + ",".join(map(str, groups)),
                "--home=/home/member",
            ]
        )
        env = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
        config = attrs.evolve(make_config(spool), dialect="2.4")
        out = Resolver(identify=Identities()).resolve(config, 0, UserdbKey("member"), None)

        shown = {k.lower(): v for k, v in env.items() if k.startswith("NAMESPACE")}
        assert shown == json.loads(out.answer.value or b"")
        assert 3 == out.answer.fits

    def test_no_ttl_no_cache(self, spool: Path) -> None:
        """--cache-ttl=0 disables the cache."""
        out = Resolver(ttl=0, identify=Identities()).resolve(
            make_config(spool), 0, UserdbKey("member"), None
        )

        assert None is out.entry

    def test_missing_dirs_listed(self, spool: Path, base: Path) -> None:
        """With create_dirs, the directories that do not exist yet are handed out with the identity."""
        out = Resolver(identify=Identities()).resolve(
            make_config(spool, create_dirs=True), 0, UserdbKey("other", str(base / "home")), None
        )

        assert out.make_dirs is not None
        (uid, gid, groups), paths = out.make_dirs
        assert (70002, 70002, (), 2) == (uid, gid, groups, len(paths))
        assert all(p.startswith(str(base / "home" / ".nsprov")) for p in paths)


# --- the server over a socket -----------------------------------------------------------


@contextlib.contextmanager
def running(
    config: Config,
    base: Path,
    *,
    resolver: Resolver | None = None,
    stamp: str | None = None,
    **options: Any,
) -> Iterator[tuple[Server, io.StringIO]]:
    """A server in a thread with its own event loop; yields it and its log."""
    out = io.StringIO()
    opts = ServeOptions(socket_path=str(base / "s.sock"), **options)
    server = Server(
        config,
        opts,
        stamp=stamp,
        log=Log("debug", stream=out),
        resolver=resolver
        or Resolver(identify=Identities(), budget=opts.reply_budget, ttl=opts.cache_ttl),
    )
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def target() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_until_complete(server.serve())

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        yield server, out
    finally:
        server.request_stop_threadsafe()
        thread.join(10)
        loop.close()


def connect(server: Server) -> socket.socket:
    """A client socket connected to *server*."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(server.options.socket_path)
    return sock


def read_lines(sock: socket.socket, count: int, sep: bytes = b"\n") -> list[bytes]:
    """Read until *count* lines arrived (or EOF)."""
    data = b""
    while data.count(sep) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(sep)[:count]


def at_eof(sock: socket.socket) -> bool:
    """Whether the server closed the connection (after any pending data)."""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return True


class TestDictProxy:
    """The dict-proxy protocol against a running server."""

    def test_lookup(self, spool: Path, base: Path) -> None:
        """A lookup of userdb/<user> returns the user's namespaces as tab-escaped JSON."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(HELLO + b"Lshared/userdb/member\tmember\nLshared/userdb/other\tother\n")
            member, other = read_lines(c, 2)

        assert {"Shared/sales/", "Shared/Weird Name/", "Shared/team/"} == reply_prefixes(member)
        assert {"Shared/sales/", "Shared/Weird Name/"} == reply_prefixes(other)

    def test_pipelined_in_order(self, spool: Path, base: Path) -> None:
        """Two hundred pipelined lookups in one write get two hundred replies, in request order."""
        users = [b"member", b"other", b"nosuch"] * 67
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(HELLO + b"".join(b"Lshared/userdb/%s\t%s\n" % (u, u) for u in users))
            replies = read_lines(c, len(users))

        kinds = {b"member": 3, b"other": 2, b"nosuch": 0}
        assert [kinds[u] for u in users] == [
            len(reply_prefixes(r)) if r != b"N" else 0 for r in replies
        ]

    def test_partial_reads(self, spool: Path, base: Path) -> None:
        """A request sent one byte at a time is answered once complete."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            for byte in HELLO + b"Lshared/userdb/other\tother\n":
                c.send(bytes((byte,)))
            (reply,) = read_lines(c, 1)

        assert 2 == len(reply_prefixes(reply))

    def test_other_commands(self, spool: Path, base: Path) -> None:
        """Unknown keys are not found, iterate and commit fail cleanly, transaction commands get no reply."""
        with running(make_config(spool), base) as (server, log), connect(server) as c:
            c.sendall(
                HELLO
                + b"Lshared/passdb/x\tx\nI0\tshared/\nB1\tx\nS1\tk\tv\nC1\nD2\nLshared/userdb/other\tother\n"
            )
            replies = read_lines(c, 5)

        assert [
            b"N",
            b"Fnsprov: iteration is not supported",
            b"F1\tnsprov: read-only dict",
            b"AF2\tnsprov: read-only dict",
        ] == replies[:4]
        assert 2 == len(reply_prefixes(replies[4]))
        assert 1 == log.getvalue().count("event=write-ignored")

    def test_user_mismatch(self, spool: Path, base: Path) -> None:
        """A key whose user differs from the lookup's user is refused (home-form ambiguity)."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(HELLO + b"Lshared/userdb/other//x\tother//x\n")
            (reply,) = read_lines(c, 1)

        assert b"N" == reply

    def test_malformed_closes_after_earlier_replies(self, spool: Path, base: Path) -> None:
        """A malformed line closes the connection, after the replies to the requests before it."""
        with running(make_config(spool), base) as (server, log), connect(server) as c:
            c.sendall(HELLO + b"Lshared/userdb/other\tother\nZbad\n")
            (reply,) = read_lines(c, 1)
            closed = at_eof(c)

        assert (2, True) == (len(reply_prefixes(reply)), closed)
        assert "unknown command" in log.getvalue()

    def test_no_hello(self, spool: Path, base: Path) -> None:
        """A lookup before the handshake is a protocol error."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(b"Hx\n")
            assert at_eof(c)

    def test_oversized_line(self, spool: Path, base: Path) -> None:
        """A line over --max-line closes the connection without buffering it all."""
        with running(make_config(spool), base, max_line=128) as (server, log), connect(server) as c:
            c.sendall(HELLO + b"L" + b"x" * 1000)
            assert at_eof(c)

        assert "longer than 128" in log.getvalue()

    def test_deadline(self, spool: Path, base: Path) -> None:
        """A lookup that takes too long fails at the deadline; the next one waits for the same work."""
        gate = threading.Event()
        ids = Identities()

        def slow(config: Config, user: str, home: str | None) -> MailUser:
            gate.wait(5)
            return ids(config, user, home)

        resolver = Resolver(identify=slow)
        with (
            running(make_config(spool), base, resolver=resolver, deadline=0.2) as (server, log),
            connect(server) as c,
        ):
            started = time.monotonic()
            c.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            (first,) = read_lines(c, 1)
            elapsed = time.monotonic() - started
            gate.set()
            time.sleep(0.1)
            c.sendall(b"Lshared/userdb/other\tother\n")
            (second,) = read_lines(c, 1)

        assert first.startswith(b"Fnsprov: no answer within 0.2s")
        assert 0.15 < elapsed < 2
        assert 2 == len(reply_prefixes(second))
        assert "event=deadline" in log.getvalue()

    def test_single_flight(self, spool: Path, base: Path) -> None:
        """Concurrent lookups for one user share one scan."""
        ids = Identities()
        gate = threading.Event()

        def slow(config: Config, user: str, home: str | None) -> MailUser:
            gate.wait(5)
            return ids(config, user, home)

        socks = []
        with running(make_config(spool), base, resolver=Resolver(identify=slow)) as (server, _):
            for _ in range(10):
                s = connect(server)
                s.sendall(HELLO + b"Lshared/userdb/member\tmember\n")
                socks.append(s)
            time.sleep(0.2)
            gate.set()
            replies = [read_lines(s, 1)[0] for s in socks]
            for s in socks:
                s.close()

        assert [3] * 10 == [len(reply_prefixes(r)) for r in replies]
        assert 1 == ids.calls


class TestRedis:
    """The RESP subset Dovecot's redis dict speaks."""

    @staticmethod
    def get(key: bytes) -> bytes:
        return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)

    def test_get(self, spool: Path, base: Path) -> None:
        """GET userdb/<user> returns the JSON as a bulk string; unknown users and keys are nil."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(
                self.get(b"userdb/other") + self.get(b"userdb/nosuch") + self.get(b"other/key")
            )
            data = b""
            while data.count(b"$-1\r\n") < 2:
                data += c.recv(65536)

        head, _, rest = data.partition(b"\r\n")
        value = rest[: int(head[1:])]
        assert {"Shared/sales/", "Shared/Weird Name/"} == {
            v for k, v in json.loads(value).items() if k.endswith("/prefix")
        }
        assert rest[int(head[1:]) :] == b"\r\n$-1\r\n$-1\r\n"

    def test_auth_select_ping_and_others(self, spool: Path, base: Path) -> None:
        """AUTH and SELECT are accepted, PING answered, anything else an error."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(
                b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*1\r\n$4\r\nPING\r\n"
                b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
            )
            replies = read_lines(c, 4, b"\r\n")

        assert [b"+OK", b"+OK", b"+PONG", b"-ERR nsprov: unsupported command b'SET'"] == replies

    def test_failure_is_an_error(self, base: Path) -> None:
        """A failed lookup is a RESP error, which Dovecot's client counts as a failure."""
        with running(make_config(base / "missing"), base) as (server, _), connect(server) as c:
            c.sendall(self.get(b"userdb/other"))
            (reply,) = read_lines(c, 1, b"\r\n")

        assert reply.startswith(b"-ERR spool ")

    def test_malformed(self, spool: Path, base: Path) -> None:
        """Inline commands close the connection."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(b"*1\r\n$4\r\nPING\r\nGET x\r\n")
            (reply,) = read_lines(c, 1, b"\r\n")
            assert at_eof(c)

        assert b"+PONG" == reply


class TestConnections:
    """Connection handling: unknown protocols, the connection cap, peers."""

    def test_unknown_protocol(self, spool: Path, base: Path) -> None:
        """A connection that starts with neither H nor * is closed."""
        with running(make_config(spool), base) as (server, log), connect(server) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert at_eof(c)

        assert "unknown protocol" in log.getvalue()

    def test_connection_cap_evicts_the_longest_idle(self, spool: Path, base: Path) -> None:
        """Beyond --max-connections the connection idle the longest is closed for the new one."""
        with running(make_config(spool), base, max_connections=2) as (server, log):
            first = connect(server)
            first.sendall(HELLO)
            time.sleep(0.05)
            second = connect(server)
            second.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            read_lines(second, 1)
            third = connect(server)
            third.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            (reply,) = read_lines(third, 1)
            evicted = at_eof(first)
            second.sendall(b"Lshared/userdb/other\tother\n")
            (again,) = read_lines(second, 1)
            for s in (first, second, third):
                s.close()

        assert (True, 2, 2) == (evicted, len(reply_prefixes(reply)), len(reply_prefixes(again)))
        assert "event=evicted" in log.getvalue()

    def test_connection_cap_all_busy(self, spool: Path, base: Path) -> None:
        """When every connection is waiting for an answer, a new one is closed at once."""
        gate = threading.Event()
        ids = Identities()

        def slow(config: Config, user: str, home: str | None) -> MailUser:
            gate.wait(5)
            return ids(config, user, home)

        resolver = Resolver(identify=slow)
        with running(make_config(spool), base, resolver=resolver, max_connections=2) as (
            server,
            log,
        ):
            busy = [connect(server) for _ in range(2)]
            for s in busy:
                s.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            time.sleep(0.2)
            third = connect(server)
            refused = at_eof(third)
            gate.set()
            replies = [read_lines(s, 1)[0] for s in busy]
            for s in (*busy, third):
                s.close()

        assert (True, [2, 2]) == (refused, [len(reply_prefixes(r)) for r in replies])
        assert "too-many-connections" in log.getvalue()

    @pytest.mark.parametrize("partial", [b"", b"*2\r\n$3\r\nGET\r\n"])
    def test_idle_timeout(self, spool: Path, base: Path, partial: bytes) -> None:
        """A connection without a complete request for idle_timeout is closed (a trickle does not count)."""
        with running(make_config(spool), base, idle_timeout=0.3) as (server, log):
            c = connect(server)
            started = time.monotonic()
            for byte in partial:  # slowloris: one byte at a time, never a whole request
                c.sendall(bytes([byte]))
                time.sleep(0.02)
            closed = at_eof(c)
            elapsed = time.monotonic() - started
            c.close()

        assert closed
        assert 0.25 < elapsed < 3
        assert "event=idle-timeout" in log.getvalue()

    def test_idle_timeout_counts_from_the_last_request(self, spool: Path, base: Path) -> None:
        """A connection that keeps asking stays open past the timeout."""
        with (
            running(make_config(spool), base, idle_timeout=0.4) as (server, _),
            connect(server) as c,
        ):
            c.sendall(HELLO)
            replies = []
            for _ in range(4):
                time.sleep(0.2)
                c.sendall(b"Lshared/userdb/other\tother\n")
                replies += read_lines(c, 1)

        assert [2] * 4 == [len(reply_prefixes(r)) for r in replies]

    def test_slowloris(self, spool: Path, base: Path) -> None:
        """256 idle connections (the default max_connections) lock nobody out: every lookup is answered."""
        with running(make_config(spool), base) as (server, _):
            assert 256 == server.options.max_connections
            idle = [connect(server) for _ in range(256)]
            for i, s in enumerate(idle):
                if i % 2:
                    s.sendall(b"*2\r\n$3\r\n")  # half of them with a request begun
            time.sleep(0.2)
            answered = 0
            for _ in range(20):
                with connect(server) as c:
                    c.sendall(TestRedis.get(b"userdb/other"))
                    head = c.recv(65536)
                    answered += head.startswith(b"$") and not head.startswith(b"$-1")
            for s in idle:
                s.close()

        assert 20 == answered

    def test_peer_logged_once(self, spool: Path, base: Path) -> None:
        """Each new peer uid is logged once, with its user name."""
        with running(make_config(spool), base) as (server, log):
            for _ in range(3):
                with connect(server) as c:
                    c.sendall(HELLO + b"Lshared/userdb/other\tother\n")
                    read_lines(c, 1)

        assert 1 == log.getvalue().count(f"event=peer uid={os.geteuid()} ")


class TestRevocation:
    """Permission changes reach the answers: at once by ctime, group changes within the TTL."""

    def test_chmod_revokes_at_once(self, spool: Path, base: Path) -> None:
        """chmod o-rx on a mailbox: the next lookup no longer has it."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            before = read_lines(c, 1)[0]
            (spool / "sales").chmod(0o750)
            c.sendall(b"Lshared/userdb/other\tother\n")
            after = read_lines(c, 1)[0]

        assert {"Shared/sales/", "Shared/Weird Name/"} == reply_prefixes(before)
        assert {"Shared/Weird Name/"} == reply_prefixes(after)

    def test_group_removal_within_ttl(self, spool: Path, base: Path) -> None:
        """Leaving a group (no filesystem change) takes effect once the TTL has passed."""
        ids = Identities()
        with (
            running(make_config(spool), base, resolver=Resolver(identify=ids, ttl=0.5)) as (
                server,
                _,
            ),
            connect(server) as c,
        ):
            c.sendall(HELLO + b"Lshared/userdb/member\tmember\n")
            before = read_lines(c, 1)[0]
            ids.users["member"][2].clear()
            c.sendall(b"Lshared/userdb/member\tmember\n")
            cached = read_lines(c, 1)[0]
            time.sleep(0.6)
            c.sendall(b"Lshared/userdb/member\tmember\n")
            after = read_lines(c, 1)[0]

        assert (3, 3, 2) == (
            len(reply_prefixes(before)),
            len(reply_prefixes(cached)),
            len(reply_prefixes(after)),
        )
        assert "Shared/team/" not in reply_prefixes(after)


class TestReload:
    """SIGHUP's reload, in process."""

    def test_good_and_bad(self, spool: Path, base: Path) -> None:
        """A good config replaces the old one and empties the cache; a bad one is logged and ignored."""
        configs = iter([make_config(spool, list="children")])

        def load(path: str) -> Config:
            for config in configs:
                return config
            raise NsprovError("broken.toml: invalid TOML")

        server = Server(
            make_config(spool),
            ServeOptions(socket_path=str(base / "s.sock")),
            log=Log("error", stream=io.StringIO()),
            load=load,
        )
        server.cache[("x", None, None)] = object()  # type: ignore[assignment]

        async def both() -> tuple[bool, bool]:
            return await server.reload(), await server.reload()

        good, bad = asyncio.run(both())
        server.executor.shutdown()

        assert (True, False, "children", 1, {}) == (
            good,
            bad,
            server.config.spools[0].list,
            server.generation,
            server.cache,
        )
        assert "reload-failed" in server.log.stream.getvalue()  # type: ignore[union-attr]

    def test_fifo_config_leaks_no_thread(
        self, spool: Path, base: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each SIGHUP with a FIFO config is refused at once and leaves no reader thread behind."""
        import nsprov._serve.server as serve_mod

        monkeypatch.setattr(serve_mod, "RELOAD_TIMEOUT", 0.2)
        fifo = base / "nsprov.toml"
        os.mkfifo(fifo, 0o600)
        out = io.StringIO()
        server = Server(
            make_config(spool),
            ServeOptions(config_path=str(fifo), socket_path=str(base / "s")),
            log=Log(stream=out),
        )
        try:
            results = [asyncio.run(server.reload()) for _ in range(3)]
            time.sleep(0.1)
            readers = [t for t in threading.enumerate() if t.name.startswith("nsprov-reload")]
        finally:
            with contextlib.suppress(OSError):  # before the fix: release blocked readers
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            server.executor.shutdown()

        assert ([False] * 3, []) == (results, readers)
        assert 3 == out.getvalue().count("not a regular file (a FIFO)")


class TestSocket:
    """The listening socket: mode, group, stale and live sockets."""

    def test_mode_and_group(self, base: Path) -> None:
        """The socket gets the mode and group asked for."""
        sock = bind_socket(str(base / "a.sock"), mode=0o660, group=str(MY_GID))
        st_ = os.stat(base / "a.sock")
        sock.close()

        assert (0o660, MY_GID, True) == (
            stat.S_IMODE(st_.st_mode),
            st_.st_gid,
            stat.S_ISSOCK(st_.st_mode),
        )

    def test_default_mode_and_parent(self, base: Path) -> None:
        """Default 0600; a missing parent directory is created."""
        path = base / "run" / "nsprov" / "s.sock"
        bind_socket(str(path), mode=0o600, group=None).close()

        assert 0o600 == stat.S_IMODE(path.stat().st_mode)

    def test_stale_replaced_live_refused(self, base: Path) -> None:
        """A stale socket is replaced; a socket someone listens on is an error."""
        path = str(base / "s.sock")
        bind_socket(path, mode=0o600, group=None).close()
        live = bind_socket(path, mode=0o600, group=None)
        try:
            with pytest.raises(SocketInUseError):
                bind_socket(path, mode=0o600, group=None)
        finally:
            live.close()

    def test_not_a_socket(self, base: Path) -> None:
        """A regular file at the path is never removed."""
        (base / "f").write_text("keep")

        with pytest.raises(NsprovError, match="not a socket"):
            bind_socket(str(base / "f"), mode=0o600, group=None)
        assert "keep" == (base / "f").read_text()

    def test_untrusted_directory(self, base: Path) -> None:
        """A socket directory others may write is refused (they could swap the socket)."""
        (base / "w").mkdir()
        (base / "w").chmod(0o777)

        with pytest.raises(UntrustedFileError, match="socket directory not trusted"):
            bind_socket(str(base / "w" / "s.sock"), mode=0o600, group=None)
        assert [] == list((base / "w").iterdir())

    def test_no_link_followed(self, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A link swapped in for the temporary socket is not followed: its target keeps mode and group."""
        victim = base / "victim"
        victim.write_text("x")
        victim.chmod(0o600)
        before = victim.stat()

        class Swapped(socket.socket):
            def bind(self, address: Any, /) -> None:
                super().bind(address)
                os.rename(address, f"{address}.moved")
                os.symlink(victim, address)

        monkeypatch.setattr(socket, "socket", Swapped)
        bind_socket(str(base / "s.sock"), mode=0o666, group=str(MY_GID or 1)).close()

        after = victim.stat()
        assert (0o600, before.st_gid) == (stat.S_IMODE(after.st_mode), after.st_gid)

    def test_unknown_group(self, base: Path) -> None:
        """An unknown --socket-group is an error."""
        with pytest.raises(NsprovError, match="unknown group"):
            bind_socket(str(base / "s.sock"), mode=0o600, group="no-such-group-nsprov")


@pytest.mark.skipif(not ROOT, reason="dropping to another user needs root")
class TestDirs:
    """Index directories are created by a child that has become the user."""

    def test_created_as_user(self, spool: Path, base: Path) -> None:
        """Missing index directories exist after the lookup, owned by the user, mode 0700."""
        home = base / "home"
        home.mkdir(mode=0o700)
        os.chown(home, 70002, 70002)
        config = make_config(spool, create_dirs=True)
        with running(config, base) as (server, _), connect(server) as c:
            c.sendall(HELLO + f"Lshared/userdb/other/{home}\tother\n".encode())
            read_lines(c, 1)

        made = sorted((home / ".nsprov").iterdir())
        assert [(70002, 0o700)] * 2 == [
            (p.stat().st_uid, stat.S_IMODE(p.stat().st_mode)) for p in made
        ]

    def test_planted_symlink(self, spool: Path, base: Path) -> None:
        """A link the user planted to a root-owned directory leads nowhere: nothing is created there."""
        home = base / "home"
        home.mkdir(mode=0o700)
        victim = base / "victim"
        victim.mkdir(mode=0o755)
        (home / ".nsprov").symlink_to(victim)
        os.chown(home, 70002, 70002)
        os.lchown(home / ".nsprov", 70002, 70002)
        with (
            running(make_config(spool, create_dirs=True), base) as (server, log),
            connect(server) as c,
        ):
            c.sendall(HELLO + f"Lshared/userdb/other/{home}\tother\n".encode())
            (reply,) = read_lines(c, 1)

        assert ([], 2) == (list(victim.iterdir()), len(reply_prefixes(reply)))
        assert "event=index-dirs" in log.getvalue()

    def test_refuses_root(self) -> None:
        """The helper never creates directories as root."""
        assert {"error": "refusing to create directories as root"} == make_dirs_as(
            0, 0, [], ["/x"], 1
        )


# --- the command line ---------------------------------------------------------------------


class TestDovecotConfig:
    """--print-dovecot-config and the shipped examples."""

    def test_examples_match(self) -> None:
        """The shipped files are what the defaults print."""
        assert (dovecot_userdb_conf(), dovecot_dict_file()) == (
            (EXAMPLES / "dovecot-2.3-userdb-dict.conf").read_text(),
            (EXAMPLES / "nsprov-userdb.conf.ext").read_text(),
        )

    def test_print(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The printed config holds both files and follows the options."""
        status = main(
            [
                "--print-dovecot-config",
                "--socket=/run/x.sock",
                "--deadline=2",
                "--dict-file=/etc/d.ext",
            ]
        )
        out = capsys.readouterr().out

        assert 0 == status
        assert out == dovecot_config(socket_path="/run/x.sock", deadline=2, dict_file="/etc/d.ext")
        assert "uri = redis:path=/run/x.sock:timeout_msecs=3000\n" in out
        assert "args = /etc/d.ext\n" in out

    def test_proxy(self) -> None:
        """The proxy client's URI."""
        assert "uri = proxy:/s:nsprov\n" in dovecot_dict_file(socket_path="/s", client="proxy")

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--dialect=2.4"], "Dovecot 2.4 has no userdb dict driver"),
            (["--socket=/a:b"], "cannot contain one"),
        ],
    )
    def test_refused(
        self, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """What cannot work is refused with the reason."""
        assert 1 == main(["--print-dovecot-config", *args])
        assert message in capsys.readouterr().err

    def test_unit_file(self) -> None:
        """The systemd unit's ExecStart parses, and systemd-analyze accepts the unit."""
        unit = (EXAMPLES / "nsprov-serve.service").read_text()
        (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
        argv = exec_start.removeprefix("ExecStart=").split()
        args = serve_parser().parse_args(argv[2:])

        assert (["/usr/local/bin/nsprov", "serve"], "/run/nsprov/userdb.sock") == (
            argv[:2],
            args.socket,
        )
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "nsprov-serve.service")
            path.write_text(unit.replace("/usr/local/bin/nsprov", NSPROV))
            proc = subprocess.run(
                [analyze, "verify", str(path)],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
        assert (0, "") == (proc.returncode, proc.stderr)


class TestMain:
    """``nsprov serve`` as a process: start, reload on SIGHUP, stop on SIGTERM."""

    def test_budget_option_checked(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A reply budget Dovecot would refuse is an error."""
        assert 1 == main(["--reply-budget=8192"])
        assert "8192" in capsys.readouterr().err

    def test_bad_config(self, base: Path) -> None:
        """An unreadable config at start is exit 1 with one log line."""
        proc = subprocess.run(
            [NSPROV, "serve", f"--config={base}/missing.toml", f"--socket={base}/s.sock"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )

        assert (1, "") == (proc.returncode, proc.stdout)
        assert "event=config-error" in proc.stderr

    def test_lifecycle(self, spool: Path, base: Path) -> None:
        """Serve, reload a good and a bad config on SIGHUP, exit 0 on SIGTERM and remove the socket."""
        conf = base / "nsprov.toml"
        conf.write_text(
            f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n[namespace]\ncreate_dirs = false\n'
        )
        sock = base / "s.sock"
        log = base / "serve.log"
        with log.open("w") as err:
            proc = subprocess.Popen(
                [NSPROV, "serve", f"--config={conf}", f"--socket={sock}"], stderr=err
            )
        try:
            wait_for(lambda: "event=start" in log.read_text())
            first = lookup_nobody(sock)
            conf.write_text(conf.read_text().replace("Shared/{name}/", "Public/{name}/"))
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "event=reload " in log.read_text())
            second = lookup_nobody(sock)
            conf.write_text("[[spool]\n")
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "event=reload-failed" in log.read_text())
            third = lookup_nobody(sock)
            proc.send_signal(signal.SIGTERM)
            status = proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

        assert {"Shared/sales/", "Shared/Weird Name/"} == first
        assert {"Public/sales/", "Public/Weird Name/"} == second == third
        assert (0, False) == (status, sock.exists())
        assert "event=stop" in log.read_text()


def wait_for(check: Callable[[], bool], timeout: float = 10) -> None:
    """Poll *check* until true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def lookup_nobody(sock: Path) -> set[str]:
    """Ask a running ``nsprov serve`` for the real NSS user nobody (home from the key)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(5)
        c.connect(str(sock))
        c.sendall(HELLO + b"Lshared/userdb/nobody//nonexistent\tnobody\n")
        (reply,) = read_lines(c, 1)
    return reply_prefixes(reply)


class TestImports:
    """``nsprov serve`` stays off the post-login path."""

    def test_postlogin_does_not_import_serve(self) -> None:
        """Importing the post-login modules loads neither _serve, _dictproto nor asyncio."""
        code = "import sys, nsprov._main, nsprov._postlogin, nsprov._worker; print(' '.join(sorted(sys.modules)))"
        out = subprocess.run(
            [sys.executable, "-I", "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout

        assert set() == {"nsprov._serve", "nsprov._dictproto", "asyncio"} & set(out.split())


def test_options_roundtrip() -> None:
    """Every option reaches ServeOptions."""
    from nsprov._serve import options_from_args

    args = serve_parser().parse_args(
        [
            "--config=/c",
            "--socket=/s",
            "--socket-mode=0660",
            "--socket-group=mail",
            "--deadline=0.5",
            "--cache-ttl=0",
            "--cache-size=5",
            "--reply-budget=4000",
            "--max-connections=3",
            "--idle-timeout=2.5",
            "--max-line=99",
            "--workers=2",
            "--log-level=debug",
        ]
    )

    assert ServeOptions(
        config_path="/c",
        socket_path="/s",
        socket_mode=0o660,
        socket_group="mail",
        deadline=0.5,
        cache_ttl=0.0,
        cache_size=5,
        reply_budget=4000,
        max_connections=3,
        idle_timeout=2.5,
        max_line=99,
        workers=2,
        log_level="debug",
    ) == attrs.evolve(options_from_args(args))


def test_idle_timeout_from_config() -> None:
    """[serve] idle_timeout is the default of --idle-timeout; it must be > 0."""
    from nsprov._serve import options_from_args
    from nsprov.exceptions import ConfigError

    config = config_from_mapping({"spool": [{"path": "/s"}], "serve": {"idle_timeout": 1.5}})
    args = serve_parser().parse_args([])

    assert 1.5 == options_from_args(args, config.serve).idle_timeout
    assert 5.0 == options_from_args(args).idle_timeout
    with pytest.raises(ConfigError, match="idle_timeout"):
        config_from_mapping({"spool": [{"path": "/s"}], "serve": {"idle_timeout": 0}})


class TestIdentify:
    """The identity of a lookup, from NSS and [identity]."""

    def test_nss_user(self, spool: Path) -> None:
        """A passwd user: uid, gid and home from NSS; a home in the key wins."""
        from nsprov._serve import identify

        nss = identify(make_config(spool), "nobody", None)
        keyed = identify(make_config(spool), "nobody", "/srv/h")

        assert (65534, "/nonexistent", "/srv/h") == (nss.uid, nss.home, keyed.home)

    def test_unknown_user(self, spool: Path) -> None:
        """No passwd entry and no [identity]: an identity error (the lookup is not found)."""
        from nsprov._serve import identify

        with pytest.raises(IdentityError):
            identify(make_config(spool), "no-such-user-nsprov", "/h")

    @pytest.mark.parametrize(("uid", "gid"), [("nobody", "nogroup"), ("65534", "65534")])
    def test_virtual_user(self, spool: Path, uid: str, gid: str) -> None:
        """Virtual users: [identity] mail_uid/mail_gid (names or numbers) and the key's home."""
        from nsprov._serve import identify

        config = config_from_mapping(
            {"spool": [{"path": str(spool)}], "identity": {"mail_uid": uid, "mail_gid": gid}}
        )
        user = identify(config, "v@example.org", "/srv/mail/v")

        assert (65534, 65534, "/srv/mail/v") == (user.uid, user.identity.gid, user.home)

    def test_virtual_user_unknown_name(self, spool: Path) -> None:
        """An unknown [identity] name is an identity error."""
        from nsprov._serve import identify

        config = config_from_mapping(
            {
                "spool": [{"path": str(spool)}],
                "identity": {"mail_uid": "no-such-nsprov", "mail_gid": "0"},
            }
        )
        with pytest.raises(IdentityError, match="no-such-nsprov"):
            identify(config, "v@example.org", "/srv/mail/v")


class TestMoreResolver:
    """Corners of the resolver and the recorder."""

    def test_new_cur_makes_a_maildir(self, spool: Path) -> None:
        """An entry that was no maildir becomes one when cur and new appear: the cache notices."""
        (spool / "later").mkdir(mode=0o755)
        resolver = Resolver(identify=Identities())
        first = resolver.resolve(make_config(spool), 0, UserdbKey("other"), None)
        for sub in ("cur", "new"):
            (spool / "later" / sub).mkdir(mode=0o755)
        second = resolver.resolve(make_config(spool), 0, UserdbKey("other"), first.entry)

        assert ("miss", {"Shared/later/", "Shared/sales/", "Shared/Weird Name/"}) == (
            second.how,
            prefixes(second.answer),
        )

    def test_unreadable_path_invalidates(self, spool: Path) -> None:
        """A path that cannot be looked at any more counts as changed."""
        from nsprov._scan import DEFAULT_FS

        rec = Recorder()
        user = MailUser(user="o", home="/h", identity=Identity(uid=70002, gid=70002))
        from nsprov._engine import plan

        plan(make_config(spool), user, {}, fs=rec.fs(), keep_skipped=False)

        def denied(path: bytes) -> os.stat_result:
            raise PermissionError(13, "denied", os.fsdecode(path))

        assert rec.deps().changed(attrs.evolve(DEFAULT_FS, lstat=denied)) is not None

    def test_debug_user_explained(self, spool: Path) -> None:
        """A user in [postlogin] debug_users gets the --explain listing in the log."""
        config = config_from_mapping(
            {
                "spool": [{"path": str(spool)}],
                "postlogin": {"debug_users": ["other"]},
                "namespace": {"create_dirs": False},
            }
        )
        out = Resolver(identify=Identities()).resolve(config, 0, UserdbKey("other"), None)
        lines = [fields["line"] for _, event, fields in out.logs if event == "explain"]

        assert any(str(line).startswith("skip  ") and "team" in str(line) for line in lines)


class TestServerCorners:
    """Start, stop, reload and cache corners of the server."""

    def test_dialect_24_served_without_warning(self, spool: Path, base: Path) -> None:
        """The 2.4 dialect is served to the Lua userdb: no warning at start."""
        config = config_from_mapping(
            {"spool": [{"path": str(spool)}], "dovecot": {"version": "2.4"}}
        )
        with running(config, base) as (_, log):
            pass

        lines = log.getvalue().splitlines()
        assert [] == [line for line in lines if "warning" in line]
        assert 1 == sum("event=start" in line and "dialect=2.4" in line for line in lines)

    def test_serve_before_start(self, base: Path) -> None:
        """serve() needs start()."""
        server = Server(make_config(base), ServeOptions(socket_path=str(base / "s.sock")))

        with pytest.raises(RuntimeError, match="start"):
            asyncio.run(server.serve())
        server.executor.shutdown()

    def test_stop_finishes_running_requests(self, spool: Path, base: Path) -> None:
        """SIGTERM's stop lets a lookup in progress answer before the connection closes."""
        gate = threading.Event()
        ids = Identities()

        def slow(config: Config, user: str, home: str | None) -> MailUser:
            gate.wait(5)
            return ids(config, user, home)

        with running(make_config(spool), base, resolver=Resolver(identify=slow), deadline=3) as (
            server,
            _,
        ):
            c = connect(server)
            c.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            time.sleep(0.2)
            threading.Timer(0.3, gate.set).start()
            server.request_stop_threadsafe()
            (reply,) = read_lines(c, 1)
            closed = at_eof(c)
            c.close()

        assert (2, True, False) == (
            len(reply_prefixes(reply)),
            closed,
            Path(server.options.socket_path).exists(),
        )

    def test_reload_default_loader_and_timeout(
        self, spool: Path, base: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a loader the real config file is read; a read that hangs is given up after the timeout."""
        import nsprov._serve.server as serve_mod

        conf = base / "nsprov.toml"
        conf.write_text(f'[[spool]]\npath = "{spool}"\n')
        out = io.StringIO()
        server = Server(
            make_config(spool),
            ServeOptions(config_path=str(conf), socket_path=str(base / "s")),
            log=Log(stream=out),
        )
        good = asyncio.run(server.reload())
        monkeypatch.setattr(serve_mod, "RELOAD_TIMEOUT", 0.1)
        gate = threading.Event()
        server.load = lambda path: (gate.wait(5), make_config(spool))[1]
        slow = asyncio.run(server.reload())
        gate.set()
        server.executor.shutdown()

        assert (True, False) == (good, slow)
        assert "reading took over 0.1s" in out.getvalue()

    def test_lookup_after_shutdown(self, spool: Path, base: Path) -> None:
        """A lookup after the thread pool shut down fails cleanly."""
        server = Server(
            make_config(spool),
            ServeOptions(socket_path=str(base / "s")),
            log=Log(stream=io.StringIO()),
        )
        server.executor.shutdown()

        answer = asyncio.run(server.lookup(UserdbKey("other")))

        assert ("fail", True) == (answer.kind, "shutting down" in answer.error)

    def test_cache_bounded(self, spool: Path, base: Path) -> None:
        """The cache holds at most --cache-size users, dropping the oldest."""
        server = Server(
            make_config(spool),
            ServeOptions(socket_path=str(base / "s"), cache_size=2),
            log=Log(stream=io.StringIO()),
            resolver=Resolver(identify=Identities()),
        )

        async def three() -> None:
            for user in ("member", "other", "nosuch"):
                await server.lookup(UserdbKey(user))

        asyncio.run(three())
        server.executor.shutdown()

        assert [("userdb", "other", None), ("userdb", "nosuch", None)] == list(server.cache)

    def test_overloaded(self, spool: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With too many users in flight, a new one fails at once instead of queueing."""
        import nsprov._serve.server as serve_mod

        monkeypatch.setattr(serve_mod, "MAX_INFLIGHT", 1)
        gate = threading.Event()
        ids = Identities()

        def slow(config: Config, user: str, home: str | None) -> MailUser:
            gate.wait(5)
            return ids(config, user, home)

        with running(make_config(spool), base, resolver=Resolver(identify=slow)) as (server, log):
            first, second = connect(server), connect(server)
            first.sendall(HELLO + b"Lshared/userdb/member\tmember\n")
            time.sleep(0.1)
            second.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            (refused,) = read_lines(second, 1)
            gate.set()
            (served,) = read_lines(first, 1)
            first.close()
            second.close()

        assert (b"Fnsprov: 1 lookups already in progress", 3) == (
            refused,
            len(reply_prefixes(served)),
        )
        assert "event=overloaded" in log.getvalue()

    def test_non_utf8_key(self, spool: Path, base: Path) -> None:
        """A key that is not UTF-8 is not found."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(HELLO + b"Lshared/userdb/\xff\t\xff\n")
            (reply,) = read_lines(c, 1)

        assert b"N" == reply


class TestRun:
    """run() and main() in process: signals, exit statuses."""

    def test_signals(self, spool: Path, base: Path) -> None:
        """SIGHUP reloads, SIGTERM stops with status 0."""
        conf = base / "nsprov.toml"
        conf.write_text(f'[[spool]]\npath = "{spool}"\n')
        out = io.StringIO()
        from nsprov._serve import run

        def ready(server: Server) -> None:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, os.kill, os.getpid(), signal.SIGHUP)
            loop.call_later(0.3, os.kill, os.getpid(), signal.SIGTERM)

        status = asyncio.run(
            run(
                ServeOptions(config_path=str(conf), socket_path=str(base / "s.sock")),
                log=Log(stream=out),
                ready=ready,
            )
        )

        assert 0 == status
        assert ["start", "reload", "stop"] == re.findall(
            r"event=(start|reload|stop)\b", out.getvalue()
        )

    def test_socket_in_use(self, spool: Path, base: Path) -> None:
        """A socket another server listens on: status 1."""
        conf = base / "nsprov.toml"
        conf.write_text(f'[[spool]]\npath = "{spool}"\n')
        from nsprov._serve import run

        live = bind_socket(str(base / "s.sock"), mode=0o600, group=None)
        try:
            status = asyncio.run(
                run(
                    ServeOptions(config_path=str(conf), socket_path=str(base / "s.sock")),
                    log=Log(stream=io.StringIO()),
                )
            )
        finally:
            live.close()

        assert 1 == status

    def test_main_bad_config(self, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """main() with a missing config returns 1 and logs why."""
        assert 1 == main([f"--config={base}/missing.toml", f"--socket={base}/s.sock"])
        assert "event=config-error" in capsys.readouterr().err

    def test_main_untrusted_config(self, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """main() refuses a config others may write, with the loader's message, and binds nothing."""
        conf = base / "nsprov.toml"
        conf.write_text(f'[[spool]]\npath = "{base}"\n')
        conf.chmod(0o666)

        assert 1 == main([f"--config={conf}", f"--socket={base}/s.sock"])
        err = capsys.readouterr().err
        assert "event=config-error" in err
        assert f"config file not trusted: {conf} is writable by group or other" in err
        assert not (base / "s.sock").exists()

    @pytest.mark.parametrize(
        "arg",
        [
            "--socket-mode=999",
            "--socket-mode=x",
            "--deadline=0",
            "--deadline=x",
            "--cache-ttl=-1",
            "--cache-ttl=x",
        ],
    )
    def test_usage_errors(self, arg: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Bad option values are usage errors (exit 2)."""
        with pytest.raises(SystemExit) as e:
            main([arg])

        assert 2 == e.value.code


class TestDirHelper:
    """The directory helper's line protocol."""

    def test_requests(self) -> None:
        """Bad requests and root requests get an error line each; the loop ends at EOF."""
        from nsprov._serve import dir_helper

        out = io.BytesIO()
        status = dir_helper(
            io.BytesIO(
                b"not json\n"
                + json.dumps({"uid": 0, "gid": 0, "groups": [], "paths": ["/x"]}).encode()
                + b"\n"
            ),
            out,
        )

        assert 0 == status
        assert [
            {"error": "bad request: Expecting value: line 1 column 1 (char 0)"},
            {"error": "refusing to create directories as root"},
        ] == [json.loads(line) for line in out.getvalue().splitlines()]

    def test_dirmaker_reports_errors(self) -> None:
        """DirMaker turns the helper's errors into one message."""
        from nsprov._serve import DirMaker

        async def ask() -> str | None:
            maker = DirMaker(Log(stream=io.StringIO()))
            try:
                return await maker.ensure(0, 0, [], ["/x"])
            finally:
                await maker.close()

        assert "refusing to create directories as root" == asyncio.run(ask())


class TestFreshStart:
    """Issue 15 part 1: the first lookup after start waits on nothing but its own scan."""

    def test_dir_helper_started_before_the_socket(self, spool: Path, base: Path) -> None:
        """The directory helper (a new process) runs before the socket accepts anything."""
        with running(make_config(spool), base) as (server, _):
            proc = server.dirs._proc

            assert proc is not None
            assert proc.returncode is None

    def test_logged_ms_is_the_whole_time(self, spool: Path, base: Path) -> None:
        """The lookup line's ``ms`` counts from the request read to the reply written, dirs included."""

        class SlowDirs:
            async def start(self) -> None:
                pass

            async def ensure(self, *_: object) -> str | None:
                await asyncio.sleep(0.3)
                return None

            async def close(self) -> None:
                pass

        class NeedsDirs(Resolver):
            def resolve(self, *_: Any) -> Any:
                from nsprov._serve import Outcome

                return Outcome(
                    Answer("found", value=b"{}"), "miss", make_dirs=((1, 1, ()), ("/x",))
                )

        with running(make_config(spool), base, resolver=NeedsDirs()) as (server, log):
            server.dirs = SlowDirs()  # type: ignore[assignment]
            with connect(server) as sock:
                sock.sendall(b"*2\r\n$3\r\nGET\r\n$12\r\nuserdb/alice\r\n")
                read_lines(sock, 2, b"\r\n")
            wait_for(lambda: "event=lookup" in log.getvalue())
            ms = float(re.findall(r"event=lookup .*ms=([0-9.]+)", log.getvalue())[0])

        assert ms >= 300


class TestRefusals:
    """Lookups serve refuses exactly as post-login does, and what they log (issue 16, finding 14)."""

    @staticmethod
    def get(key: bytes) -> bytes:
        return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)

    def test_uid_0_refused_like_postlogin(self, spool: Path) -> None:
        """root (uid 0 from NSS) is not served: post-login refuses uid 0 with the same words."""
        from nsprov._identity import mail_user_from_environ

        out = Resolver().resolve(make_config(spool), 0, UserdbKey("root", "/root"), None)
        with pytest.raises(IdentityError) as postlogin:
            mail_user_from_environ(
                {"USER": "root", "UID": "0", "GID": "0"}, make_config(spool).identity
            )

        assert ("not-found", str(postlogin.value)) == (out.answer.kind, out.answer.error)

    def test_virtual_uid_0_refused(self, spool: Path) -> None:
        """[identity] mail_uid = 0 for users without a passwd entry: refused too."""
        config = config_from_mapping(
            {"spool": [{"path": str(spool)}], "identity": {"mail_uid": "0", "mail_gid": "0"}}
        )

        out = Resolver().resolve(config, 0, UserdbKey("virtual-nsprov-x", "/h"), None)

        assert "not-found" == out.answer.kind
        assert "uid 0" in out.answer.error

    def test_unknown_user_one_debug_line(self, spool: Path, base: Path) -> None:
        """An unknown user's lookup writes one line, at debug level, saying why."""
        with running(make_config(spool), base) as (server, log), connect(server) as c:
            c.sendall(self.get(b"userdb/nosuch-nsprov"))
            assert c.recv(65536) == b"$-1\r\n"
            wait_for(lambda: "event=lookup" in log.getvalue())

        lines = [line for line in log.getvalue().splitlines() if "nosuch-nsprov" in line]
        assert 1 == len(lines), lines
        assert "level=debug event=lookup user=nosuch-nsprov" in lines[0]
        assert "result=not-found" in lines[0]
        assert "error=" in lines[0]
