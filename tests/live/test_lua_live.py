"""The Lua userdb route under real Dovecot 2.3.19 and 2.4.1: no post-login script at all.

Dovecot asks ``nsprov serve`` through the shipped ``nsprov/lua/nsprov-userdb.lua``, wired as
``docs/serve.md`` documents (``luaroute.py``); every scenario runs once per version (test ids
``dovecot2.3``, ``dovecot2.4``).  2.3 is the host's Debian 12 package and the dev venv's
``nsprov serve``; 2.4 runs in the Debian 13 chroot with ``nsprov serve`` from a wheel of this
working tree, since the users and paths exist only there.  On 2.3 the script's settings are
its DEFAULTS (the copy's socket path edited, as documented); on 2.4 they are ``lua_settings``.

The spool is ``test_scenarios.py``'s: world-readable, group-only, owner-only (0700),
ACL-granted, symlinked, dot and hostile-named entries, each mailbox a different size.  The
failure modes replace what listens on the configured socket (or stop the real server) and
time the login: it must succeed, without shared namespaces, within the timeout + 0.5 s,
with at most one warning line from the script.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pytest

from nsprov._perms import PosixAcl

from .chroot24 import Dovecot24, chroot_run
from .harness import (
    Dovecot,
    DovecotStartError,
    list_mailboxes,
    make_maildir,
    namespaces,
    select_count,
)
from .luaroute import (
    SCRIPT,
    FakeServer,
    LuaDovecot,
    LuaDovecot24,
    ServeProcess,
    documented_userdb,
    install_script,
    median,
    park_socket,
    userdb_conf,
)
from .test_scenarios import (
    INBOX,
    PUBLIC,
    RESTRICTED,
    VERSIONS,
    Person,
    Seen,
    Site,
    Site24,
    config_text,
    expected,
    known_chgrp_error,
    open_site,
    version_id,
)

if TYPE_CHECKING:
    import imaplib
    import poplib
    from collections.abc import Iterator

pytestmark = pytest.mark.live

#: The script's default timeout (seconds) and the bound a failure may cost a login.
TIMEOUT = 1.0
SLACK = 0.5
#: ``nsprov serve``'s per-lookup deadline for this route: shorter than the script's timeout.
DEADLINE = 0.8
TTL = 1.0
WARNING = "nsprov-userdb: "
ACCESS = [("alice", ("team",)), ("bob", ()), ("carol", ("acl-carol",)), ("dave", ("dave-only",))]
NOTHING = Seen(names=set(), counts={}, spaces=[], inbox=INBOX)


class LuaWorld:
    """Four users, the scenario spool, ``nsprov serve`` and a Dovecot wired through Lua."""

    def __init__(self, site: Site, stack: contextlib.ExitStack) -> None:
        self.site = site
        self.version = site.version
        self.stack = stack
        team = site.group("team")
        self.alice = site.user("alice", groups=[team], messages=INBOX)
        self.bob = site.user("bob", messages=INBOX)
        self.carol = site.user("carol", messages=INBOX)
        self.dave = site.user("dave", messages=INBOX)
        self.users = [self.alice, self.bob, self.carol, self.dave]
        self.spool = site.base / "spool"
        spool = site.out(self.spool)
        spool.mkdir(mode=0o755)
        spool.chmod(0o755)
        self._box(spool / "team", RESTRICTED["team"], 0, team, 0o750)
        for name, count in PUBLIC.items():
            self._box(spool / name, count, 0, 0, 0o755)
        dave = self.dave
        self._box(spool / "dave-only", RESTRICTED["dave-only"], dave.uid, dave.gid, 0o700)
        self._box(spool / "secret", 14, 0, 0, 0o700)
        acl_box = self._box(spool / "acl-carol", RESTRICTED["acl-carol"], 0, 0, 0o700)
        acl = PosixAcl(user_obj=7, group_obj=0, other=0, mask=5, users=[(self.carol.uid, 5)])
        for p in (acl_box, acl_box / "cur", acl_box / "new", *sorted((acl_box / "cur").iterdir())):
            os.setxattr(p, "system.posix_acl_access", acl.to_xattr())
        self._box(spool / ".dot", 15, 0, 0, 0o755)
        (spool / "link").symlink_to("sales")
        (spool / "plain").write_text("not a mailbox\n")
        self.config = site.base / "nsprov.toml"
        self.write_config()
        self.socket = site.base / "userdb.sock"
        self.script = site.base / "nsprov-userdb.lua"
        self.install(self.script)
        root = site.root if isinstance(site, Site24) else None
        self.serve = ServeProcess(
            site.nsprov,
            self.config,
            self.socket,
            site.out(site.base) / "serve.log",
            f"--deadline={DEADLINE}",
            f"--cache-ttl={TTL}",
            root=root,
        )
        self.serve.start()
        stack.callback(self.serve.stop)
        self.dovecot = self.start_dovecot("dovecot", self.userdb())

    @staticmethod
    def _box(path: Path, messages: int, uid: int, gid: int, mode: int) -> Path:
        return make_maildir(path, messages=messages, owner=uid, group=gid, mode=mode)

    # -- wiring

    def install(self, inside: PurePosixPath, **defaults: str) -> PurePosixPath:
        """Copy the shipped script to *inside*; on 2.3 its DEFAULTS socket is the test's."""
        if self.version == "2.3":
            defaults = {"socket": f'"{self.socket}"', **defaults}
        install_script(self.site.out(inside), defaults=defaults)
        return inside

    def userdb(self, script: PurePosixPath | None = None, **settings: Any) -> str:
        """The documented userdb blocks for this version, pointing at this world's socket."""
        if self.version == "2.3":
            return userdb_conf("2.3", script or self.script)
        settings = {"socket_path": self.socket, "timeout": TIMEOUT, **settings}
        return userdb_conf("2.4", script or self.script, **settings)

    def start_dovecot(self, name: str, userdb: str | None, extra: str = "") -> Any:
        """Start a Dovecot of this version for the four users; None: the harness's own userdb."""
        site = self.site
        if isinstance(site, Site24):
            accounts = {u.name: u for u in site._accounts.users.values()}
            chroot_users = [accounts[u.name] for u in self.users]
            conf = site.extra_conf + extra
            dovecot: Any = (
                Dovecot24(site.base / name, chroot_users, extra_conf=conf, root=site.root)
                if userdb is None
                else LuaDovecot24(
                    site.base / name, chroot_users, userdb=userdb, root=site.root, extra_conf=conf
                )
            )
        else:
            users = [site._users[u.name] for u in self.users]  # type: ignore[attr-defined]
            workdir = site.out(site.base / name)
            dovecot = (
                Dovecot(workdir, users, extra_conf=extra)
                if userdb is None
                else LuaDovecot(workdir, users, userdb=userdb, extra_conf=extra)
            )
        return self.stack.enter_context(dovecot)

    def write_config(self) -> None:
        """Write the nsprov config serving the spool (the shipped 2.4 example, or the README's)."""
        path = self.site.out(self.config)
        path.write_text(config_text(self.version, self.spool), encoding="utf-8")

    # -- clients

    def imap(self, user: Person, dovecot: Any = None) -> imaplib.IMAP4:
        """An IMAP connection of *user* to *dovecot* (default: the world's)."""
        d = dovecot or self.dovecot
        return d.imap(user.name) if isinstance(d, Dovecot24) else d.imap(self._user(user))

    def pop3(self, user: Person, dovecot: Any = None) -> poplib.POP3:
        """A POP3 connection of *user*."""
        d = dovecot or self.dovecot
        return d.pop3(user.name) if isinstance(d, Dovecot24) else d.pop3(self._user(user))

    def _user(self, user: Person) -> Any:
        return self.site._users[user.name]  # type: ignore[attr-defined]

    def shared(self, user: Person, dovecot: Any = None) -> Seen:
        """Log in over IMAP: LIST under Shared/, EXAMINE each, NAMESPACE, INBOX; log out."""
        with self.imap(user, dovecot) as imap:
            names = {n for n in list_mailboxes(imap) if n.startswith("Shared/")}
            counts = {
                n.removeprefix("Shared/"): select_count(imap, n)
                for n in sorted(names)
                if n != "Shared"
            }
            spaces = namespaces(imap)["shared"]
            inbox = select_count(imap, "INBOX")
        return Seen(names=names, counts=counts, spaces=spaces, inbox=inbox)

    def timed_login(self, user: Person, dovecot: Any = None) -> tuple[float, Seen]:
        """Seconds from connect to the tagged LOGIN reply, and what the session showed."""
        started = time.monotonic()
        with self.imap(user, dovecot) as imap:
            elapsed = time.monotonic() - started
            names = {n for n in list_mailboxes(imap) if n.startswith("Shared/")}
            spaces = namespaces(imap)["shared"]
            inbox = select_count(imap, "INBOX")
        return elapsed, Seen(names=names, counts={}, spaces=spaces, inbox=inbox)

    def doveadm(self, *args: str, dovecot: Any = None) -> Any:
        """``doveadm ARGS`` against *dovecot* (default: the world's)."""
        return (dovecot or self.dovecot).doveadm(*args)

    # -- logs

    def log_path(self, dovecot: Any = None) -> Path:
        """The host path of *dovecot*'s log file."""
        d = dovecot or self.dovecot
        return d.outside(d.log_path) if isinstance(d, Dovecot24) else Path(d.log_path)

    def mark(self, dovecot: Any = None) -> int:
        """The current end of *dovecot*'s log."""
        try:
            return self.log_path(dovecot).stat().st_size
        except FileNotFoundError:
            return 0

    def lines_since(self, mark: int, dovecot: Any = None) -> list[str]:
        """*dovecot*'s log lines after *mark*."""
        data = self.log_path(dovecot).read_bytes()[mark:]
        return data.decode("utf-8", "replace").splitlines()

    def warnings_since(
        self, mark: int, dovecot: Any = None, *, expect: int = 1, wait: float = 5
    ) -> list[str]:
        """The script's log lines after *mark*, once *expect* of them arrived (the log lags)."""
        deadline = time.monotonic() + wait
        while True:
            found = [line for line in self.lines_since(mark, dovecot) if WARNING in line]
            if len(found) >= expect or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        time.sleep(0.2)
        return [line for line in self.lines_since(mark, dovecot) if WARNING in line]


def no_namespaces_within_bound(world: LuaWorld, user: Person, bound: float) -> list[str]:
    """Log *user* in: no shared namespace, within *bound* s; return the script's new lines."""
    mark = world.mark()
    elapsed, seen = world.timed_login(user)

    assert (NOTHING, True) == (seen, elapsed <= bound), f"login took {elapsed:.3f} s"
    lines = world.warnings_since(mark)
    assert [] == [
        line
        for line in world.lines_since(mark)
        if "Error:" in line or "Fatal:" in line or "Panic:" in line
    ]
    return lines


def assert_one_warning(lines: list[str], world: LuaWorld, user: Person, text: str) -> None:
    """Exactly one warning, saying *text*, naming no other test user."""
    assert 1 == len(lines), lines
    assert "Warning" in lines[0]
    assert text in lines[0]
    assert [] == [u.name for u in world.users if u != user and u.name in lines[0]]


@pytest.fixture(name="world", scope="module", params=VERSIONS, ids=version_id)
def _world(request: pytest.FixtureRequest) -> Iterator[LuaWorld]:
    """A world per Dovecot version; skips when that version cannot run here."""
    with open_site(request.param) as site, contextlib.ExitStack() as stack:
        yield LuaWorld(site, stack)


@pytest.fixture(name="fresh")
def _fresh(world: LuaWorld) -> Iterator[LuaWorld]:
    """Restore the real server on the socket after a test that stopped, killed or replaced it."""
    yield world
    parked = world.site.out(world.socket).with_name(world.socket.name + ".parked")
    if world.serve.proc is None or world.serve.proc.poll() is not None:
        parked.unlink(missing_ok=True)
        world.serve.start()
    else:
        world.serve.signal(signal.SIGCONT)
        if parked.exists():
            shutil.move(parked, world.site.out(world.socket))
    world.site.out(world.spool).chmod(0o755)


class TestVisibility:
    """Through Lua, each user sees exactly the mailboxes the filesystem lets them read."""

    @pytest.mark.parametrize(("who", "extra"), ACCESS, ids=[who for who, _ in ACCESS])
    def test_per_user(self, world: LuaWorld, who: str, extra: tuple[str, ...]) -> None:
        """NAMESPACE, LIST and EXAMINE agree with groups, ACLs and modes, hostile names included."""
        seen = world.shared(getattr(world, who))

        want = expected(*extra)
        assert want == seen.counts
        assert {f"Shared/{n}" for n in want} == seen.names - {"Shared"}
        assert {(f"Shared/{n}/", "/") for n in want} == set(seen.spaces)
        assert INBOX == seen.inbox

    @pytest.mark.parametrize(("who", "extra"), ACCESS, ids=[who for who, _ in ACCESS])
    def test_doveadm_agrees(self, world: LuaWorld, who: str, extra: tuple[str, ...]) -> None:
        """``doveadm mailbox list -u USER`` lists what IMAP LIST lists: no login process needed."""
        user = getattr(world, who)
        with world.imap(user) as imap:
            listed = set(list_mailboxes(imap))
        proc = world.doveadm("mailbox", "list", "-u", user.name)

        assert (0, listed) == (proc.returncode, set(proc.stdout.splitlines()))
        assert {f"Shared/{n}" for n in expected(*extra)} <= listed

    def test_pop3(self, world: LuaWorld) -> None:
        """POP3 logins through the Lua userdb see their INBOX."""
        for user in world.users:
            pop3 = world.pop3(user)
            count, _ = pop3.stat()
            pop3.quit()
            assert INBOX == count

    def test_doveadm_iterates(self, world: LuaWorld) -> None:
        """``doveadm user '*'`` exits 0 and lists each user once: auth_userdb_iterate returns {}."""
        proc = world.doveadm("user", "*")
        listed = proc.stdout.split()

        assert 0 == proc.returncode, proc.stderr
        assert [1, 1, 1, 1] == [listed.count(u.name) for u in world.users]

    def test_index_dirs_owned_by_user(self, world: LuaWorld) -> None:
        """serve created carol's per-namespace index directories as carol, mode 0700."""
        world.shared(world.carol)

        dirs = list(world.site.out(world.carol.home / ".nsprov").iterdir())
        assert len(expected("acl-carol")) == len(dirs)
        assert [(world.carol.uid, 0o700, True)] * len(dirs) == [
            (d.lstat().st_uid, stat.S_IMODE(d.lstat().st_mode), stat.S_ISDIR(d.lstat().st_mode))
            for d in dirs
        ]

    def test_planted_symlink(self, world: LuaWorld) -> None:
        """~/.nsprov pointing at a root-owned directory: nothing there changes, the login works."""
        inside = world.site.base / "victim"
        victim = world.site.out(inside)
        victim.mkdir(mode=0o755, exist_ok=True)
        (victim / "keep").write_text("x")
        before = [(p.name, p.stat().st_uid, p.stat().st_mode) for p in [victim, *victim.iterdir()]]
        bob = world.bob
        index_root = world.site.out(bob.home / ".nsprov")
        if index_root.exists():
            shutil.rmtree(index_root)
        os.symlink(inside, index_root)
        os.lchown(index_root, bob.uid, bob.gid)
        try:
            with world.imap(bob) as imap:
                inbox = select_count(imap, "INBOX")
        finally:
            index_root.unlink()

        after = [(p.name, p.stat().st_uid, p.stat().st_mode) for p in [victim, *victim.iterdir()]]
        assert before == after
        assert INBOX == inbox

    @pytest.mark.parametrize(
        "name", ["x/y", "a\x1bb", "a" * 300], ids=["slash", "control", "over-long"]
    )
    def test_hostile_user_names(self, world: LuaWorld, name: str) -> None:
        """A lookup for a name with '/', a control character or 300 bytes is not found, and nothing breaks.

        Only the over-long name reaches the script (the passwd userdb fails internally on it,
        and the chain goes on); it refuses it without asking the server.  For the others the
        passwd userdb's "unknown user" ends the chain before the Lua userdb.
        """
        mark, served = world.mark(), len(world.serve.log())
        proc = world.doveadm("user", name)

        assert (67, "") == (proc.returncode, world.serve.log()[served:])
        assert [] == [
            line
            for line in world.lines_since(mark)
            if "Fatal" in line or "Panic" in line or "lua" in line.lower()
        ]
        assert expected() == world.shared(world.bob).counts

    def test_no_errors(self, world: LuaWorld) -> None:
        """Normal logins log no Dovecot error (but the ACL mailbox's fchown), no warning from the script."""
        mark = world.mark()
        for user in world.users:
            world.shared(user)
        time.sleep(0.3)
        lines = world.lines_since(mark)

        assert [] == [line for line in lines if WARNING in line]
        assert [] == [
            line
            for line in lines
            if ("Error:" in line or "Fatal:" in line) and not known_chgrp_error(world.version, line)
        ]
        assert [] == [line for line in world.serve.log().splitlines() if "level=error" in line]


class TestFailOpen:
    """Whatever the server does, the login succeeds within the timeout + 0.5 s, one warning at most."""

    def test_server_killed(self, fresh: LuaWorld) -> None:
        """Killed (socket file left behind): connection refused, the login goes on at once."""
        fresh.serve.signal(signal.SIGKILL)
        assert fresh.serve.proc is not None
        fresh.serve.proc.wait()

        lines = no_namespaces_within_bound(fresh, fresh.bob, SLACK)

        assert_one_warning(lines, fresh, fresh.bob, "cannot connect")

    def test_socket_missing(self, fresh: LuaWorld) -> None:
        """No socket at the configured path: the login goes on at once."""
        park_socket(fresh.site.out(fresh.socket))

        lines = no_namespaces_within_bound(fresh, fresh.alice, SLACK)

        assert_one_warning(lines, fresh, fresh.alice, "No such file or directory")

    def test_server_stopped(self, fresh: LuaWorld) -> None:
        """Stopped (SIGSTOP): the kernel accepts, nobody answers; the login waits the timeout, no more."""
        fresh.serve.signal(signal.SIGSTOP)

        lines = no_namespaces_within_bound(fresh, fresh.dave, TIMEOUT + SLACK)

        assert_one_warning(lines, fresh, fresh.dave, f"timed out after {TIMEOUT:g} s")

    def test_hung_server(self, fresh: LuaWorld, capsys: pytest.CaptureFixture[str]) -> None:
        """A server that accepts and never answers costs a login the timeout, no more."""
        sock = fresh.site.out(fresh.socket)
        park_socket(sock)
        with FakeServer(sock, "hang") as fake:
            started = time.monotonic()
            lines = no_namespaces_within_bound(fresh, fresh.carol, TIMEOUT + SLACK)
            elapsed = time.monotonic() - started

        with capsys.disabled():
            sys.stderr.write(f"\n[{fresh.version}] hung server: the login took {elapsed:.3f} s\n")
        assert 1 <= fake.accepted
        assert TIMEOUT <= elapsed
        assert_one_warning(lines, fresh, fresh.carol, "timed out")

    def test_hung_server_parallel(
        self, fresh: LuaWorld, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Twenty logins at once against a hung server: each runs in its own auth worker, all succeed."""
        sock = fresh.site.out(fresh.socket)
        park_socket(sock)
        order = [fresh.users[i % 4] for i in range(20)]
        with FakeServer(sock, "hang"), ThreadPoolExecutor(max_workers=20) as pool:
            seen = list(pool.map(fresh.timed_login, order))
        times = sorted(t for t, _ in seen)
        with capsys.disabled():
            sys.stderr.write(
                f"\n[{fresh.version}] 20 parallel logins, hung server: "
                f"median {median(times):.3f} s, max {times[-1]:.3f} s\n"
            )

        assert [NOTHING] * 20 == [s for _, s in seen]
        assert times[-1] <= TIMEOUT + 2 * SLACK

    @pytest.mark.parametrize(
        ("behaviour", "text"),
        [
            ("garbage", "garbage reply"),
            ("oversized", "over max_reply = 7680, dropped"),
            ("uid", "non-namespace field, dropped"),
            ("close", "no reply"),
        ],
    )
    def test_bad_reply(self, fresh: LuaWorld, behaviour: Any, text: str) -> None:
        """Garbage, an oversized reply, a field other than a namespace's, a hang-up: dropped, the login goes on."""
        sock = fresh.site.out(fresh.socket)
        park_socket(sock)
        with FakeServer(sock, behaviour):
            lines = no_namespaces_within_bound(fresh, fresh.bob, SLACK)
            user = fresh.doveadm("user", "-f", "uid", fresh.bob.name)

        assert_one_warning(lines, fresh, fresh.bob, text)
        assert (0, str(fresh.bob.uid)) == (user.returncode, user.stdout.strip())

    def test_not_found_is_silent(self, fresh: LuaWorld) -> None:
        """A nil reply (serve knows no such user): no namespaces and no warning."""
        sock = fresh.site.out(fresh.socket)
        park_socket(sock)
        with FakeServer(sock, "nil"):
            lines = no_namespaces_within_bound(fresh, fresh.alice, SLACK)

        assert [] == lines

    def test_empty_reply(self, fresh: LuaWorld) -> None:
        """A spool nobody may search gives {}: the login works, without a warning or an error."""
        fresh.site.out(fresh.spool).chmod(0o700)
        mark = fresh.mark()

        seen = fresh.shared(fresh.alice)

        assert NOTHING == seen
        assert [] == [
            line for line in fresh.lines_since(mark) if "Error:" in line or WARNING in line
        ]


def test_shipped_script_compiles() -> None:
    """The shipped script passes ``luac5.4 -p`` (Dovecot 2.3.19 and 2.4.1 on Debian link Lua 5.4)."""
    luac = shutil.which("luac5.4")
    if luac is None:
        pytest.skip("luac5.4 not installed (Debian: apt install lua5.4)")
    proc = subprocess.run([luac, "-p", str(SCRIPT)], capture_output=True, text=True, check=False)

    assert (0, "") == (proc.returncode, proc.stderr)


class TestWiring:
    """The userdb blocks docs/serve.md documents are valid syntax for their version."""

    def test_doveconf_accepts_documented_blocks(self, world: LuaWorld) -> None:
        """``doveconf -n`` takes the documented blocks (default paths) in a full config."""
        block = documented_userdb(world.version)
        site = world.site
        if isinstance(site, Site24):
            dovecot24 = LuaDovecot24(site.base / "doveconf", [], userdb=block, root=site.root)
            conf = site.base / "doveconf.conf"
            site.out(conf).write_text(dovecot24.config())
            proc = chroot_run(site.root, "/usr/bin/doveconf", "-n", "-c", str(conf), check=False)
            want = "lua_file = /etc/dovecot/nsprov-userdb.lua"
        else:
            conf_path = site.out(site.base / "doveconf.conf")
            conf_path.write_text(LuaDovecot(conf_path.parent, [], userdb=block).config_text())
            proc = subprocess.run(
                ["/usr/bin/doveconf", "-n", "-c", str(conf_path)],
                capture_output=True,
                text=True,
                check=False,
            )
            want = "args = file=/etc/dovecot/nsprov-userdb.lua blocking=yes cache_key="

        assert (0, True) == (proc.returncode, want in proc.stdout), proc.stderr


def printed_wiring(world: LuaWorld, name: str) -> tuple[str, PurePosixPath]:
    """``nsprov serve --print-dovecot-config --client=lua`` for this world: the userdb blocks, the script.

    The script section is written where its header says (``--lua-file``, inside the
    version's root); the dovecot.conf section is returned as printed.
    """
    script = world.site.base / name
    argv = [
        str(Path(sys.executable).with_name("nsprov")),
        "serve",
        "--print-dovecot-config",
        "--client=lua",
        f"--dialect={world.version}",
        f"--socket={world.socket}",
        f"--deadline={DEADLINE}",
        f"--lua-file={script}",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    head, sep, body = out.partition(f"# ---- {script} ----\n")
    assert sep, out
    path = world.site.out(script)
    path.write_text(body, encoding="utf-8")
    path.chmod(0o644)
    return head, script


class TestPrintedWiring:
    """What ``--print-dovecot-config --client=lua`` prints is valid, and logins through it get the namespaces."""

    def test_doveconf_and_login(self, world: LuaWorld) -> None:
        """doveconf -n takes the printed blocks; IMAP and doveadm see the namespaces; no warning."""
        userdb, script = printed_wiring(world, "printed.lua")
        dovecot = world.start_dovecot("dovecot-printed", userdb)
        if isinstance(dovecot, Dovecot24):
            proc = chroot_run(
                world.site.root,
                "/usr/bin/doveconf",
                "-n",
                "-c",
                str(dovecot.conf_path),
                check=False,
            )
            want = f"lua_file = {script}"
        else:
            proc = subprocess.run(
                ["/usr/bin/doveconf", "-n", "-c", str(dovecot.conf_path)],
                capture_output=True,
                text=True,
                check=False,
            )
            want = f"args = file={script} blocking=yes cache_key="
        mark = world.mark(dovecot)
        seen = world.shared(world.bob, dovecot)
        listed = world.doveadm("mailbox", "list", "-u", world.bob.name, dovecot=dovecot)
        warnings = world.warnings_since(mark, dovecot, expect=0, wait=0.3)
        dovecot.stop()

        assert (0, True) == (proc.returncode, want in proc.stdout), proc.stderr
        assert expected() == seen.counts
        assert 0 == listed.returncode, listed.stderr
        assert {f"Shared/{n}" for n in expected()} <= set(listed.stdout.splitlines())
        assert [] == warnings

    def test_worker_default(self, world: LuaWorld) -> None:
        """Without use_worker / blocking= the Lua lookup still runs in the auth worker (as root).

        Why check warns only on an explicit use_worker = no / blocking=no: the route's
        0600 root socket is reached, so logins get their namespaces.
        """
        userdb, _ = printed_wiring(world, "noworker.lua")
        userdb = userdb.replace("  use_worker = yes\n", "").replace(" blocking=yes", "")
        assert "use_worker" not in userdb
        assert "blocking" not in userdb
        dovecot = world.start_dovecot("dovecot-noworker", userdb)
        seen = world.shared(world.bob, dovecot)
        dovecot.stop()

        assert expected() == seen.counts

    def test_worker_off(self, world: LuaWorld) -> None:
        """use_worker = no / blocking=no: the script runs in the auth process, cannot open the socket.

        What check's lua-no-worker error is about: the login succeeds without namespaces.
        """
        userdb, _ = printed_wiring(world, "worker-off.lua")
        userdb = userdb.replace("use_worker = yes", "use_worker = no").replace(
            "blocking=yes", "blocking=no"
        )
        dovecot = world.start_dovecot("dovecot-worker-off", userdb)
        mark = world.mark(dovecot)
        seen = world.shared(world.bob, dovecot)
        lines = world.warnings_since(mark, dovecot)
        dovecot.stop()

        assert NOTHING == seen
        assert 1 == len(lines), lines
        assert "cannot connect" in lines[0]


class TestCheckLive:
    """``nsprov check`` against the printed Lua wiring, with the server up and down."""

    def run_check(self, world: LuaWorld, conf: PurePosixPath) -> set[str]:
        """The finding codes of ``nsprov check --json`` for this world's config and *conf*."""
        argv = [
            world.site.nsprov,
            "check",
            f"--config={world.config}",
            f"--dovecot-config={conf}",
            f"--user={world.bob.name}",
            "--format=json",
        ]
        if isinstance(world.site, Site24):
            proc = chroot_run(world.site.root, *argv, check=False)
        else:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        report = json.loads(proc.stdout)
        return {f["code"] for f in report["findings"]}

    def test_route_recognised(self, fresh: LuaWorld) -> None:
        """Up: no route finding; socket moved away: route-socket-down; script edited: lua-script-differs."""
        userdb, script = printed_wiring(fresh, "check.lua")
        dovecot = fresh.start_dovecot("dovecot-check", userdb)
        conf = PurePosixPath(str(dovecot.conf_path))
        up = self.run_check(fresh, conf)
        sock = fresh.site.out(fresh.socket)
        park_socket(sock)
        try:
            down = self.run_check(fresh, conf)
        finally:
            shutil.move(sock.with_name(sock.name + ".parked"), sock)
        path = fresh.site.out(script)
        path.write_text(path.read_text() + "\n-- edited\n")
        edited = self.run_check(fresh, conf)
        path.write_text(path.read_text() + "\nthis is not lua\n")
        broken = self.run_check(fresh, conf)
        dovecot.stop()

        # The 2.4 root has Dovecot's Lua but not necessarily the lua5.4 package: then an info.
        luac = fresh.site.out(PurePosixPath("/usr/bin/luac5.4")).exists()
        none = set() if luac else {"luac-unavailable"}
        route_codes = {c for c in up | down | edited | broken if c.startswith(("route-", "lua"))}
        assert none == {c for c in up if c in route_codes}
        assert {"route-socket-down"} | none == {c for c in down if c in route_codes}
        assert {"lua-script-differs"} | none == {c for c in edited if c in route_codes}
        assert {"lua-script-differs", "lua-syntax" if luac else "luac-unavailable"} == {
            c for c in broken if c in route_codes
        }
        assert "wiring-missing" not in up


class TestLoading:
    """The script loads, and reads its settings, in each version's way."""

    def test_settings_reach_the_script(self, world: LuaWorld) -> None:
        """A 0.3 s timeout (2.4: lua_settings; 2.3: the DEFAULTS of the installed copy) bounds a hung server."""
        script = world.site.base / "short-timeout.lua"
        if world.version == "2.3":
            world.install(script, timeout="0.3")
            userdb = world.userdb(script)
        else:
            world.install(script)
            userdb = world.userdb(script, timeout=0.3)
        dovecot = world.start_dovecot("dovecot-short", userdb)
        sock = world.site.out(world.socket)
        park_socket(sock)
        try:
            with FakeServer(sock, "hang"):
                elapsed, seen = world.timed_login(world.bob, dovecot)
        finally:
            shutil.move(sock.with_name(sock.name + ".parked"), sock)
        dovecot.stop()

        assert (NOTHING, True) == (seen, 0.3 <= elapsed <= 0.3 + SLACK), elapsed

    def test_bad_settings_guarded(self, world: LuaWorld) -> None:
        """A non-numeric timeout, an over-limit max_reply, an unknown key: a warning each, logins keep their namespaces.

        2.4 gets them in lua_settings; 2.3 in the installed copy's DEFAULTS, its only settings.
        """
        script = world.site.base / "bad-settings.lua"
        if world.version == "2.3":
            world.install(script, timeout='"abc"', max_reply='99999,\n  colour = "blue"')
            userdb = world.userdb(script)
            where = "DEFAULTS"
        else:
            world.install(script)
            userdb = world.userdb(
                script, timeout="abc", max_reply=99999, extra_settings={"colour": "blue"}
            )
            where = "lua_settings"
        dovecot = world.start_dovecot("dovecot-badset", userdb)

        seen = world.shared(world.bob, dovecot)
        time.sleep(0.3)
        log = "\n".join(world.lines_since(0, dovecot))
        dovecot.stop()

        assert expected() == seen.counts
        assert f"{where} timeout = abc is not a number in [0.001, 60]; using 1" in log
        assert f"{where} max_reply = 99999 is not a number in [2, 8191]; using 7680" in log
        assert f"unknown {where} key colour ignored" in log

    def test_lua_socket_missing(self, world: LuaWorld) -> None:
        """Without lua-socket the script still loads, says so once per process, and logins go on."""
        # Lua's module search paths pointed at nothing: the require fails as without the package.
        paths = {"LUA_PATH_5_4": "/nonexistent/?.lua", "LUA_CPATH_5_4": "/nonexistent/?.so"}
        if world.version == "2.3":
            extra = "import_environment = TZ " + " ".join(f"{k}={v}" for k, v in paths.items())
        else:
            extra = "import_environment {\n" + "".join(f"  {k} = {v}\n" for k, v in paths.items())
            extra += "}\n"
        dovecot = world.start_dovecot("dovecot-nosocket", world.userdb(), extra)

        seen = [world.shared(u, dovecot) for u in world.users]
        time.sleep(0.3)
        lines = world.lines_since(0, dovecot)
        dovecot.stop()

        assert [NOTHING] * 4 == seen
        said = [line for line in lines if "lua-socket is not installed" in line]
        assert 1 <= len(said) <= 1 + 4  # the auth process and each auth worker, once
        assert [] == [line for line in lines if f"{WARNING}no shared namespaces" in line]
        assert [] == [line for line in lines if "Fatal:" in line or "Error:" in line]

    def test_syntax_error_kills_auth(self, world: LuaWorld) -> None:
        """Why the script must pass ``luac -p``: Dovecot cannot guard a syntax error, auth dies at start."""
        broken = world.site.base / "broken.lua"
        world.install(broken)
        path = world.site.out(broken)
        path.write_text(path.read_text() + "\nthis is not lua\n")

        # 2.3's login processes greet only once auth is up, so the harness never sees it ready.
        try:
            dovecot = world.start_dovecot("dovecot-broken", world.userdb(broken))
        except (DovecotStartError, RuntimeError) as e:
            text = str(e)
        else:
            with pytest.raises(Exception, match="Auth process broken"):
                world.imap(world.bob, dovecot)
            text = "\n".join(world.lines_since(0, dovecot))
            dovecot.stop()

        assert "Fatal: userdb-lua" in text
        assert "syntax error near 'is'" in text


class TestAuthCache:
    """With Dovecot's auth cache on, nsprov's answer is never cached: a new grant shows at the next login."""

    def test_new_grant_next_login(self, fresh: LuaWorld) -> None:
        """auth_cache_size = 10M, auth_cache_ttl = 1 hour: chmod a 0700 mailbox to 0755, the next login has it."""
        extra = "auth_cache_size = 10M\nauth_cache_ttl = 1 hour\n"
        dovecot = fresh.start_dovecot("dovecot-cache", fresh.userdb(), extra)
        box = fresh.site.out(fresh.spool / "later")
        fresh._box(box, 21, 0, 0, 0o700)
        try:
            before = fresh.shared(fresh.bob, dovecot)
            for p in (box, box / "cur", box / "new", box / "tmp", *(box / "cur").iterdir()):
                p.chmod(0o755)
            after = fresh.shared(fresh.bob, dovecot)
        finally:
            shutil.rmtree(box)
            dovecot.stop()

        assert expected() == before.counts
        assert expected() | {"later": 21} == after.counts


class TestLatency:
    """What the Lua lookup adds to a login, serve's cache warm (printed; bounded loosely here)."""

    def test_added_ms(self, world: LuaWorld, capsys: pytest.CaptureFixture[str]) -> None:
        """Median of 30 interleaved logins with and without the Lua userdb; the difference is small."""
        plain = world.start_dovecot("dovecot-plain", None)
        for _ in range(3):
            world.timed_login(world.bob)
            world.timed_login(world.bob, plain)
        lua: list[float] = []
        base: list[float] = []
        for _ in range(30):
            lua.append(world.timed_login(world.bob)[0])
            base.append(world.timed_login(world.bob, plain)[0])
        plain.stop()
        added = (median(lua) - median(base)) * 1000
        with capsys.disabled():
            sys.stderr.write(
                f"\n[{world.version}] IMAP LOGIN median of 30: no extra userdb "
                f"{median(base) * 1000:.2f} ms, Lua route {median(lua) * 1000:.2f} ms, "
                f"added {added:.2f} ms\n"
            )

        assert added < 20
