"""``nsprov serve`` under a real Dovecot 2.3 with a dict userdb, real UNIX users, groups and ACLs.

What is tested is what is shipped: Dovecot's userdb blocks are
``examples/serve/dovecot-2.3-userdb-dict.conf`` and the dict file is
``examples/serve/nsprov-userdb.conf.ext``, each pasted verbatim after one substitution
(the dict file's path, the socket's path).  The harness's own ``userdb passwd`` block is
replaced by the shipped one.  The server is the dev venv's ``nsprov serve``, run as a
subprocess with ``--cache-ttl=1`` so that the TTL test is quick.

The Dovecot 2.4 test shows why this mode is 2.3 only: 2.4 has no ``dict`` userdb driver.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nsprov._config import load_config
from nsprov._engine import plan
from nsprov._identity import mail_user_from_nss
from nsprov._perms import PosixAcl
from nsprov._reply import reply_budget

from .chroot24 import ChrootAccounts, Dovecot24, chroot24_status, chroot_tempdir
from .harness import (
    Dovecot,
    SystemAccounts,
    User,
    list_mailboxes,
    live_available,
    make_maildir,
    namespaces,
    select_count,
)

if TYPE_CHECKING:
    import imaplib
    from collections.abc import Iterator

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "serve"
NSPROV = str(Path(sys.executable).with_name("nsprov"))
SHIPPED_DICT_FILE = "/etc/dovecot/nsprov-userdb.conf.ext"
SHIPPED_SOCKET = "/run/nsprov/userdb.sock"
HARNESS_USERDB = "userdb {\n  driver = passwd\n}\n"
TTL = 1.0
INBOX = 1
LONG = "L" + "o" * 198 + "g"
#: Entry name -> messages; every one of these is world-readable.
PUBLIC = {
    "sales": 2,
    "Weird Name": 3,
    "a,b": 4,
    "odd:INDEX=evil": 5,
    "pct%u": 6,
    "Case": 7,
    "case": 8,
    "star*": 9,
    LONG: 10,
    'q"x\\y': 16,
    "caf\u00e9 \u2603": 17,
}
#: Entry name -> messages for the mailboxes only some users may read.
RESTRICTED = {"team": 11, "dave-only": 12, "acl-carol": 13}
ACCESS = {"alice": ("team",), "bob": (), "carol": ("acl-carol",), "dave": ("dave-only",)}


def _substitute(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise AssertionError(f"expected {old!r} once in the shipped example")
    return text.replace(old, new)


def shipped_userdb(dict_file: Path) -> str:
    """The shipped userdb blocks, pointing at *dict_file*."""
    text = (EXAMPLES / "dovecot-2.3-userdb-dict.conf").read_text()
    return _substitute(text, SHIPPED_DICT_FILE, str(dict_file))


def shipped_dict_file(sock: Path, *, proxy: bool = False) -> str:
    """The shipped dict file, pointing at *sock*; *proxy* swaps in the dict-proxy client."""
    text = _substitute((EXAMPLES / "nsprov-userdb.conf.ext").read_text(), SHIPPED_SOCKET, str(sock))
    if proxy:
        text = re.sub(r"(?m)^uri = .*$", f"uri = proxy:{sock}:nsprov", text)
    return text


class DictDovecot(Dovecot):
    """The harness's Dovecot with its userdb replaced by the shipped dict wiring."""

    def __init__(self, workdir: Path, users: list[User], *, dict_file: Path) -> None:
        super().__init__(workdir, users)
        self.dict_file = dict_file

    def config_text(self) -> str:
        """The harness config, shipped userdb blocks instead of its own."""
        text = super().config_text()
        return _substitute(text, HARNESS_USERDB, shipped_userdb(self.dict_file))


class Serve:
    """``nsprov serve`` as a subprocess; its log is a file."""

    def __init__(self, workdir: Path, config: Path, *args: str) -> None:
        self.socket = workdir / "nsprov.sock"
        self.log_path = workdir / "serve.log"
        self.argv = [NSPROV, "serve", f"--config={config}", f"--socket={self.socket}", *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait for the start line."""
        mark = len(self.log())
        with self.log_path.open("a") as err:
            self.proc = subprocess.Popen(self.argv, stderr=err, stdin=subprocess.DEVNULL)
        self.wait_log("event=start", mark)

    def stop(self) -> None:
        """SIGCONT, SIGTERM, then SIGKILL after 10 s; safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def signal(self, sig: signal.Signals) -> None:
        """Send *sig* to the server."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def log(self) -> str:
        """Everything the server logged."""
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, since: int = 0, timeout: float = 10) -> None:
        """Wait until *text* appears in the log after offset *since*."""
        deadline = time.monotonic() + timeout
        while text not in self.log()[since:]:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nsprov serve exited:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not logged:\n{self.log()}")
            time.sleep(0.02)


class World:
    """Four users, a spool, an nsprov config, ``nsprov serve`` and a Dovecot wired to it."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        base = Path(tempfile.mkdtemp(prefix="nsprov-serve-live-", dir="/var/tmp"))
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        base.chmod(0o755)
        self.base = base
        accounts = stack.enter_context(SystemAccounts(base))
        self.team = accounts.group("team")
        self.users = {
            "alice": accounts.user("alice", groups=[self.team]),
            "bob": accounts.user("bob"),
            "carol": accounts.user("carol"),
            "dave": accounts.user("dave"),
        }
        for user in self.users.values():
            make_maildir(
                user.home / "Maildir", messages=INBOX, owner=user.uid, group=user.gid, mode=0o700
            )
        self.spool = base / "spool"
        self.spool.mkdir(mode=0o755)
        for name, count in PUBLIC.items():
            make_maildir(self.spool / name, messages=count, owner=0, group=0, mode=0o755)
        make_maildir(
            self.spool / "team",
            messages=RESTRICTED["team"],
            owner=0,
            group=self.team.gid,
            mode=0o750,
        )
        dave = self.users["dave"]
        make_maildir(
            self.spool / "dave-only",
            messages=RESTRICTED["dave-only"],
            owner=dave.uid,
            group=dave.gid,
            mode=0o700,
        )
        make_maildir(self.spool / "secret", messages=14, owner=0, group=0, mode=0o700)
        acl_box = make_maildir(
            self.spool / "acl-carol", messages=RESTRICTED["acl-carol"], owner=0, group=0, mode=0o700
        )
        acl = PosixAcl(
            user_obj=7, group_obj=0, other=0, mask=5, users=[(self.users["carol"].uid, 5)]
        )
        for p in (acl_box, acl_box / "cur", acl_box / "new", *sorted((acl_box / "cur").iterdir())):
            os.setxattr(p, "system.posix_acl_access", acl.to_xattr())
        make_maildir(self.spool / ".dot", messages=15, owner=0, group=0, mode=0o755)
        (self.spool / "link").symlink_to("sales")
        (self.spool / "plain").write_text("not a mailbox\n")
        self.config = base / "nsprov.toml"
        self.write_config()
        self.serve = Serve(base, self.config, f"--cache-ttl={TTL}")
        self.serve.start()
        stack.callback(self.serve.stop)
        self.dict_file = base / "nsprov-userdb.conf.ext"
        self.dict_file.write_text(shipped_dict_file(self.serve.socket))
        self.dovecot = stack.enter_context(
            DictDovecot(base / "dovecot", list(self.users.values()), dict_file=self.dict_file)
        )

    def write_config(self, extra: str = "") -> None:
        """The README's 2.3 config serving the world's spool, plus *extra* TOML."""
        self.config.write_text(
            f'[[spool]]\npath = "{self.spool}"\nprefix = "Shared/{{name}}/"\nseparator = "/"\n{extra}'
        )

    def reload(self) -> None:
        """SIGHUP the server and wait for it to log the reload."""
        mark = len(self.serve.log())
        self.serve.signal(signal.SIGHUP)
        self.serve.wait_log("event=reload", mark)

    def shared(self, who: str, dovecot: Dovecot | None = None) -> dict[str, int]:
        """Log in over IMAP; the EXAMINE count of each mailbox under Shared/, by entry name."""
        with (dovecot or self.dovecot).imap(self.users[who]) as imap:
            return shared_counts(imap)


def shared_counts(imap: imaplib.IMAP4) -> dict[str, int]:
    """EXAMINE every mailbox under Shared/ and INBOX; entry name -> count, INBOX included."""
    names = [n for n in list_mailboxes(imap) if n.startswith("Shared/")]
    counts = {n.removeprefix("Shared/"): select_count(imap, n) for n in sorted(names)}
    counts["INBOX"] = select_count(imap, "INBOX")
    return counts


def expected(who: str) -> dict[str, int]:
    """What *who* should see: the public mailboxes, their restricted ones, INBOX."""
    return PUBLIC | {name: RESTRICTED[name] for name in ACCESS[who]} | {"INBOX": INBOX}


@pytest.fixture(name="world", scope="module")
def _world() -> Iterator[World]:
    """One world for the module; skips when live tests cannot run here."""
    if reason := live_available():
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:
        yield World(stack)


@pytest.fixture(name="fresh")
def _fresh(world: World) -> Iterator[World]:
    """Restore the server, the config and the spool after a test that changes them."""
    yield world
    if world.serve.proc is None or world.serve.proc.poll() is not None:
        world.serve.start()
    world.serve.signal(signal.SIGCONT)
    world.spool.chmod(0o755)
    (world.spool / "sales").chmod(0o755)
    world.write_config()
    world.reload()


class TestVisibility:
    """Each user sees exactly what the filesystem lets their mail process read, with no post-login process."""

    @pytest.mark.parametrize("who", sorted(ACCESS))
    def test_per_user(self, world: World, who: str) -> None:
        """LIST, EXAMINE and NAMESPACE agree with the permissions, hostile names included."""
        with world.dovecot.imap(world.users[who]) as imap:
            counts = shared_counts(imap)
            spaces = namespaces(imap)["shared"]

        assert expected(who) == counts
        assert {(f"Shared/{n}/", "/") for n in expected(who) if n != "INBOX"} == set(spaces)

    @pytest.mark.parametrize("who", sorted(ACCESS))
    def test_doveadm_agrees(self, world: World, who: str) -> None:
        """doveadm mailbox list -u USER shows what IMAP LIST shows: the namespaces reach doveadm too."""
        with world.dovecot.imap(world.users[who]) as imap:
            listed = set(list_mailboxes(imap))
        proc = world.dovecot.doveadm("mailbox", "list", "-u", world.users[who].name)

        assert (0, listed) == (proc.returncode, set(proc.stdout.splitlines()))
        assert {f"Shared/{n}" for n in expected(who) if n != "INBOX"} <= listed

    def test_index_dirs_created_as_user(self, world: World) -> None:
        """The server created carol's index directories as carol, mode 0700, one per namespace."""
        world.shared("carol")
        carol = world.users["carol"]

        dirs = sorted((carol.home / ".nsprov").iterdir())
        assert [(carol.uid, 0o700)] * (len(expected("carol")) - 1) == [
            (d.stat().st_uid, d.stat().st_mode & 0o7777) for d in dirs
        ]

    def test_key_carries_home(self, world: World) -> None:
        """Dovecot expands %{userdb:home} in the shipped key: the lookup names the first userdb's home."""
        bob = world.users["bob"]
        world.reload()  # empties the cache: the next lookup is computed and logged
        mark = len(world.serve.log())
        world.shared("bob")

        assert (
            f"event=lookup user={bob.name} home={bob.home} result=found" in world.serve.log()[mark:]
        )

    def test_pop3(self, world: World) -> None:
        """POP3 logins through the dict userdb see their INBOX."""
        pop3 = world.dovecot.pop3(world.users["bob"])
        count, _ = pop3.stat()
        pop3.quit()

        assert INBOX == count

    def test_auth_worker_is_the_peer(self, world: World) -> None:
        """The peer on the socket is root (Dovecot 2.3's auth-worker), so a 0600 root socket suffices."""
        world.shared("bob")
        peers = re.findall(r"event=peer uid=(\d+) .*user=(\S+)", world.serve.log())

        assert [("0", "root")] == peers

    def test_no_errors(self, world: World) -> None:
        """Normal logins log no Dovecot errors (but Dovecot's ChgrpNoPerm for the ACL mailbox) and no server errors."""
        for who in ACCESS:
            world.shared(who)

        assert [] == [e for e in world.dovecot.errors() if "ChgrpNoPerm" not in e]
        assert [] == [line for line in world.serve.log().splitlines() if "level=error" in line]


@pytest.fixture(name="proxy_dovecot", scope="module")
def _proxy_dovecot(world: World) -> Iterator[Dovecot]:
    """A second Dovecot, wired like the first but with the dict-proxy client."""
    dict_file = world.base / "proxy.conf.ext"
    dict_file.write_text(shipped_dict_file(world.serve.socket, proxy=True))
    with DictDovecot(
        world.base / "dovecot-proxy", list(world.users.values()), dict_file=dict_file
    ) as dovecot:
        yield dovecot


class TestProxyClient:
    """The dict-proxy client (uri = proxy:…) gets the same namespaces, and fails open when the server is gone."""

    def test_visibility(self, world: World, proxy_dovecot: Dovecot) -> None:
        """alice and dave see their mailboxes through the proxy client."""
        seen = {who: world.shared(who, proxy_dovecot) for who in ("alice", "dave")}

        assert {who: expected(who) for who in ("alice", "dave")} == seen

    def test_killed(self, fresh: World, proxy_dovecot: Dovecot) -> None:
        """Server killed: the proxy client retries connect() for about a second, then the login goes on."""
        fresh.serve.signal(signal.SIGKILL)
        assert fresh.serve.proc is not None
        fresh.serve.proc.wait()
        started = time.monotonic()
        counts = fresh.shared("bob", proxy_dovecot)
        elapsed = time.monotonic() - started

        assert ({"INBOX": INBOX}, True) == (counts, elapsed < 3)


class TestFailOpen:
    """A dead, hung or empty-handed server never keeps users out."""

    @staticmethod
    def timed_login(world: World, who: str) -> tuple[float, dict[str, int]]:
        started = time.monotonic()
        counts = world.shared(who)
        return time.monotonic() - started, counts

    def test_killed(self, fresh: World) -> None:
        """Server killed: logins go on at once with INBOX only; restarted, the namespaces are back."""
        fresh.serve.signal(signal.SIGKILL)
        assert fresh.serve.proc is not None
        fresh.serve.proc.wait()
        elapsed, counts = self.timed_login(fresh, "bob")
        fresh.serve.start()

        assert ({"INBOX": INBOX}, True) == (counts, elapsed < 3)
        assert expected("bob") == fresh.shared("bob")

    def test_killed_during_storm(self, fresh: World) -> None:
        """Killed while forty logins run on eight threads: every login succeeds, with or without namespaces."""
        order = [sorted(ACCESS)[i % 4] for i in range(40)]

        def login(i: int) -> tuple[str, dict[str, int]]:
            if i == 12:
                fresh.serve.signal(signal.SIGKILL)
            return order[i], fresh.shared(order[i])

        with ThreadPoolExecutor(max_workers=8) as pool:
            seen = list(pool.map(login, range(40)))

        assert [] == [(who, c) for who, c in seen if c not in (expected(who), {"INBOX": INBOX})]
        assert {"INBOX": INBOX} == seen[-1][1]

    def test_hung(self, fresh: World) -> None:
        """Server stopped (SIGSTOP): logins go on within the redis client's timeout; after SIGCONT all is back."""
        fresh.serve.signal(signal.SIGSTOP)
        try:
            elapsed, counts = self.timed_login(fresh, "dave")
        finally:
            fresh.serve.signal(signal.SIGCONT)

        assert ({"INBOX": INBOX}, True) == (counts, elapsed < 5)
        assert expected("dave") == fresh.shared("dave")

    def test_empty_reply(self, fresh: World) -> None:
        """A spool nobody may search gives an empty object ({}): the login works, no errors."""
        fresh.spool.chmod(0o700)
        before = len(fresh.dovecot.errors())

        assert {"INBOX": INBOX} == fresh.shared("alice")
        assert [] == fresh.dovecot.errors()[before:]


class TestBudget:
    """Over the reply budget: a deterministic subset, one warning, a working login."""

    def test_overflow(self, fresh: World) -> None:
        """Forty more mailboxes: the first ones in discovery order that fit, and one warning naming bob."""
        many = fresh.base / "many"
        many.mkdir(mode=0o755)
        for i in range(40):
            make_maildir(many / f"box{i:02d}", messages=0, owner=0, group=0, mode=0o755)
        fresh.write_config(f'[[spool]]\npath = "{many}"\nprefix = "Many/{{name}}/"\n')
        fresh.reload()
        config = load_config(str(fresh.config))
        bob = mail_user_from_nss(fresh.users["bob"].name, config.identity)
        budget = reply_budget(config, bob)
        served = plan(config, bob, {}).discovery.served[: budget.fits]
        mark = len(fresh.serve.log())

        with fresh.dovecot.imap(fresh.users["bob"]) as imap:
            listed = list_mailboxes(imap)
            inbox = select_count(imap, "INBOX")

        assert (True, len(PUBLIC) + 40) == (budget.over, budget.total)
        want = {s.namespace.prefix.rstrip("/") for s in served}
        assert want == {
            n for n in listed if n.startswith(("Shared/", "Many/")) and n.count("/") == 1
        }
        assert INBOX == inbox
        warnings = [
            line for line in fresh.serve.log()[mark:].splitlines() if "event=over-budget" in line
        ]
        assert 1 == len(warnings)
        assert (
            f"user={fresh.users['bob'].name} served={budget.fits} found={budget.total}"
            in warnings[0]
        )


class TestRevocation:
    """Revoked permissions disappear: at once for chmod, within the TTL for group membership."""

    def test_chmod(self, fresh: World) -> None:
        """chmod o-rx on sales: bob's next login no longer has it."""
        assert "sales" in fresh.shared("bob")
        (fresh.spool / "sales").chmod(0o750)

        assert expected("bob").keys() - {"sales"} == fresh.shared("bob").keys()

    def test_group_within_ttl(self, fresh: World) -> None:
        """alice leaves the team group: within the TTL her team namespace is gone."""
        alice = fresh.users["alice"]
        assert "team" in fresh.shared("alice")
        subprocess.run(
            ["gpasswd", "-d", alice.name, fresh.team.name], check=True, capture_output=True
        )
        try:
            time.sleep(TTL + 0.2)
            after = fresh.shared("alice")
        finally:
            subprocess.run(
                ["gpasswd", "-a", alice.name, fresh.team.name], check=True, capture_output=True
            )

        assert expected("bob") == after


class TestConcurrency:
    """One server, many logins at once."""

    def test_parallel_logins(self, world: World) -> None:
        """Fifty IMAP logins over eight threads each see exactly their mailboxes."""
        order = [sorted(ACCESS)[i % 4] for i in range(50)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            seen = list(pool.map(world.shared, order))

        assert [expected(who) for who in order] == seen


class TestSlowloris:
    """Idle connections to the socket lock no login out (issue 16, finding 10)."""

    def test_idle_connections_do_not_lock_out(self, world: World) -> None:
        """256 idle connections (the default max_connections), half with a request begun: logins keep their namespaces."""
        idle = []
        try:
            for i in range(256):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(world.serve.socket))
                if i % 2:
                    s.sendall(b"*2\r\n$3\r\n")
                idle.append(s)
            time.sleep(0.2)
            seen = {who: world.shared(who) for who in sorted(ACCESS)}
        finally:
            for s in idle:
                s.close()

        assert {who: expected(who) for who in sorted(ACCESS)} == seen


class TestDovecot24:
    """Why this mode is Dovecot 2.3 only."""

    def test_no_userdb_dict(self) -> None:
        """Dovecot 2.4 has no dict userdb driver: its auth process dies and every login fails."""
        root, reason = chroot24_status()
        if root is None:
            pytest.skip(reason)
        with ChrootAccounts(root) as accounts, chroot_tempdir(root) as work:
            user = accounts.add_user("alice")
            dovecot = Dovecot24(
                work / "dovecot",
                [user],
                extra_conf="userdb nsprov {\n  driver = dict\n}\n",
                root=root,
            )
            with dovecot, pytest.raises(Exception, match="Auth process broken"):
                dovecot.imap(user)
            log = dovecot.log()

        assert "auth: Fatal: Unknown userdb driver 'dict'" in log
