"""The persistent scan cache (``[scan_cache]``) under a real Dovecot 2.3, real users, groups and ACLs.

One Dovecot, wired by the shipped ``examples/dovecot-2.3/10-master.conf`` (see
``test_scenarios.py``), serves four users for the whole module; each test gets a spool of its
own (about a hundred entries: world-readable, group-only through a primary and through a
supplementary group, owner-only, ACL-granted to a user and to a group, root-only, symlinked,
a dot entry and a plain file), its own cache directory, and rewrites the one nsprov config
Dovecot's post-login step reads.  ``nsprov cache update`` and ``nsprov cache status`` run as
root with the dev venv's ``nsprov``, the same program post-login runs.

What a login got is read from the IMAP NAMESPACE reply: the shared prefixes, in server order.
A new *grant* is the one change a fresh cache does not show before the next update; so a
grant that stays hidden shows that a login used the cache, and a grant that shows without an
update shows that it did not.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import attrs
import pytest

from nsprov._perms import PosixAcl
from nsprov._scancache import Index, cache_files

from .harness import (
    Dovecot,
    Group,
    SystemAccounts,
    User,
    live_available,
    make_maildir,
    namespaces,
    nsprov_problem,
    select_count,
)
from .test_fastpath_live import forget
from .test_scenarios import NSPROV23, config_text, wiring
from .test_serve_live import Serve

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

pytestmark = pytest.mark.live

USERS = frozenset({"alice", "bob", "carol", "dave"})
NOBODY: frozenset[str] = frozenset()
ACL = "system.posix_acl_access"
WAIT = 10.0


@attrs.frozen(kw_only=True)
class Site:
    """Four users (alice in group ``team``), and a Dovecot whose post-login reads ``config``."""

    base: Path
    team: Group
    users: dict[str, User]
    config: Path
    dovecot: Dovecot


@pytest.fixture(name="site", scope="module")
def _site() -> Iterator[Site]:
    if reason := live_available():
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix="nsprov-scancache-live-", dir="/var/tmp"))
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        base.chmod(0o755)
        accounts = stack.enter_context(SystemAccounts(base))
        team = accounts.group("team")
        users = {
            "alice": accounts.user("alice", groups=[team]),
            "bob": accounts.user("bob"),
            "carol": accounts.user("carol"),
            "dave": accounts.user("dave"),
        }
        config = base / "nsprov.toml"
        stack.callback(forget, config)  # the worker's parsed copy, under /run/nsprov
        dovecot = Dovecot(
            base / "dovecot", users.values(), extra_conf=wiring("2.3", NSPROV23, str(config))
        )
        stack.enter_context(dovecot)
        yield Site(base=base, team=team, users=users, config=config, dovecot=dovecot)


def set_acl(box: Path, acl: PosixAcl) -> None:
    """Give a maildir and its ``cur``, ``new`` and ``tmp`` the access ACL *acl*."""
    for p in (box, box / "cur", box / "new", box / "tmp"):
        os.setxattr(p, ACL, acl.to_xattr())


def by_name(seen: dict[str, list[str]]) -> dict[str, list[str]]:
    """*seen* with each user's entries sorted (NAMESPACE's order is Dovecot's own)."""
    return {user: sorted(names) for user, names in seen.items()}


def wait_for(what: str, done: Callable[[], bool]) -> None:
    """Poll *done* until it holds; fail after :data:`WAIT` seconds."""
    deadline = time.monotonic() + WAIT
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {WAIT} s")
        time.sleep(0.05)


class Spool:
    """One test's spool, cache directory and config, and what each user may read in it."""

    def __init__(self, site: Site, workdir: Path) -> None:
        self.site = site
        self.workdir = workdir
        self.path = workdir / "spool"
        self.cache = workdir / "cache"
        self.idx = Path(cache_files(str(self.cache), os.fsencode(self.path))[0])
        #: Entry name -> the users the filesystem lets read it now.
        self.access: dict[str, frozenset[str]] = {}
        self._log_mark = len(site.dovecot.log())
        self.populate()
        self.configure()

    # -- the spool

    def box(
        self, name: str, who: Iterable[str], *, owner: int = 0, group: int = 0, mode: int = 0o755
    ) -> Path:
        """Create maildir *name*, readable by *who*."""
        path = make_maildir(self.path / name, messages=1, owner=owner, group=group, mode=mode)
        self.access[name] = frozenset(who)
        return path

    def populate(self) -> None:
        """About a hundred entries, every kind of principal among them; then :meth:`settle`."""
        users, team = self.site.users, self.site.team
        self.path.mkdir(mode=0o755)
        for i in range(60):
            self.box(f"pub-{i:03d}", USERS)
        for i in range(5):
            self.box(f"team-{i}", {"alice"}, group=team.gid, mode=0o750)
            bob = users["bob"]
            self.box(f"bob-{i}", {"bob"}, group=bob.gid, mode=0o750)
            carol = users["carol"]
            self.box(f"carol-{i}", {"carol"}, owner=carol.uid, group=carol.gid, mode=0o700)
        dave = users["dave"].uid
        acl = PosixAcl(user_obj=7, group_obj=0, other=0, mask=5, users=[(dave, 5)])
        set_acl(self.box("acl-dave", {"dave"}, mode=0o700), acl)
        acl = PosixAcl(user_obj=7, group_obj=0, other=0, mask=5, groups=[(team.gid, 5)])
        set_acl(self.box("acl-team", {"alice"}, mode=0o700), acl)
        for i in range(20):
            self.box(f"secret-{i:02d}", NOBODY, mode=0o700)
        # Readable by nobody but root until a test grants "other" search on the entry itself.
        self.box("grant", NOBODY).chmod(0o750)
        (self.path / "link-pub").symlink_to("pub-001")
        self.access["link-pub"] = USERS
        (self.path / "link-team").symlink_to("team-0")
        self.access["link-team"] = frozenset({"alice"})
        self.box(".dot", NOBODY)
        (self.path / "plain").write_text("not a mailbox\n")
        self.access["plain"] = NOBODY
        self.settle()

    def settle(self) -> None:
        """Date the spool directory's mtime 10 s back.

        An update that starts within a second of the spool's last change waits that second
        out (the kernel's timestamps are coarse); a spool just built would cost every test a
        second.  Nothing else reads this mtime but the cache, which compares it for equality.
        """
        past = time.time() - 10
        os.utime(self.path, (past, past))

    def revoke(self, name: str, *users: str) -> None:
        """Record that *users* may no longer read *name*."""
        self.access[name] -= set(users)

    # -- the config and the cache

    def configure(self, *, cache: bool = True, max_age: float = 300, refresh: float = 0) -> None:
        """Point Dovecot's nsprov config at this spool, with or without ``[scan_cache]``.

        The file is replaced, not rewritten: the worker's copy of a parsed config is keyed by
        the file's identity, and a new inode can never look like the old file.
        """
        text = config_text("2.3", PurePosixPath(self.path)) + 'symlinks = "inside"\n'
        if cache:
            text += (
                f'\n[scan_cache]\ndir = "{self.cache}"\nmax_age = {max_age}\nrefresh = {refresh}\n'
            )
        tmp = self.site.config.with_name("nsprov.toml.new")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(self.site.config)

    def nsprov(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``nsprov ARGS --config=...`` as root with the nsprov post-login runs."""
        return subprocess.run(
            [NSPROV23, *args, f"--config={self.site.config}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def update(self) -> None:
        """``nsprov cache update``; it must succeed and name this spool."""
        proc = self.nsprov("cache", "update")
        assert (0, "") == (proc.returncode, proc.stderr)
        assert proc.stdout.startswith(f"{self.path}: {len(self.access)} entries, "), proc.stdout

    def status(self) -> tuple[int, str]:
        """``nsprov cache status``: exit status and output."""
        proc = self.nsprov("cache", "status")
        assert "" == proc.stderr
        return proc.returncode, proc.stdout

    def status_line(self, state: str) -> str:
        """A regex matching the status line of this spool in *state*."""
        return rf"{re.escape(str(self.path))}: age \d+s, \d+ entries indexed, {state} \({re.escape(str(self.idx))}\)\n"

    def built(self) -> int:
        """When the cache files were built (ns), 0 without a usable index."""
        idx = Index.load(str(self.idx))
        return 0 if idx is None else idx.built

    # -- logins

    def seen(self, user: str) -> list[str]:
        """The spool entries the shared namespaces of one IMAP login of *user* serve, in order."""
        with self.site.dovecot.imap(self.site.users[user]) as imap:
            prefixes = [prefix for prefix, _ in namespaces(imap)["shared"]]
        names = [p.removeprefix("Shared/").removesuffix("/") for p in prefixes]
        assert [f"Shared/{n}/" for n in names] == prefixes
        return names

    def seen_all(self) -> dict[str, list[str]]:
        """:meth:`seen` for every user."""
        return {user: self.seen(user) for user in sorted(USERS)}

    def expected(self, user: str, *, hidden: Iterable[str] = ()) -> list[str]:
        """What *user* may read now, sorted, less *hidden* (grants the cache does not know)."""
        return sorted({n for n, who in self.access.items() if user in who} - set(hidden))

    def expected_all(self, *, hidden: Iterable[str] = ()) -> dict[str, list[str]]:
        """:meth:`expected` for every user."""
        hide = set(hidden)
        return {user: self.expected(user, hidden=hide) for user in sorted(USERS)}

    def nsprov_lines(self) -> list[str]:
        """What nsprov logged through Dovecot since this spool was made, but the login lines.

        Each login's own ``Info: nsprov: user=… served=…`` line is no problem to report.
        """
        text = self.site.dovecot.log()[self._log_mark :]
        return [line for line in text.splitlines() if nsprov_problem(line)]


@pytest.fixture(name="spool")
def _spool(site: Site) -> Iterator[Spool]:
    workdir = Path(tempfile.mkdtemp(prefix="t-", dir=site.base))
    try:
        workdir.chmod(0o755)
        yield Spool(site, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_same_namespaces_with_and_without_cache(spool: Spool) -> None:
    """Without [scan_cache], with it but no cache built yet, and with a fresh cache: the same."""
    spool.configure(cache=False)
    without = spool.seen_all()
    spool.configure()
    missing = spool.status()
    not_built = spool.seen_all()
    spool.update()
    fresh = spool.status()
    cached = spool.seen_all()
    files = [spool.cache, *map(Path, cache_files(str(spool.cache), os.fsencode(spool.path)))]

    want = spool.expected_all()
    assert 68 == len(want["alice"])  # 60 public, 5 team-*, acl-team, 2 links
    assert want == by_name(without)
    assert without == not_built
    assert without == cached
    assert (
        1,
        f"{spool.path}: age -, 0 entries indexed, NOT USED: missing ({spool.idx})\n",
    ) == missing
    assert 0 == fresh[0]
    assert re.fullmatch(spool.status_line("fresh"), fresh[1]), fresh[1]
    assert [(0o700, 0), (0o600, 0), (0o600, 0), (0o600, 0)] == [
        (stat.S_IMODE(s.st_mode), s.st_uid) for s in map(os.lstat, files)
    ]
    assert [] == spool.nsprov_lines()


def test_revocation_is_immediate(spool: Spool) -> None:
    """Taking read access away shows at the next login, with no cache update."""
    spool.update()
    before = spool.seen_all()
    (spool.path / "pub-007").chmod(0o700)
    spool.revoke("pub-007", *USERS)
    (spool.path / "team-0").chmod(0o700)  # link-team points here
    spool.revoke("team-0", "alice")
    spool.revoke("link-team", "alice")
    os.setxattr(spool.path / "acl-dave", ACL, PosixAcl(user_obj=7, group_obj=0, other=0).to_xattr())
    spool.revoke("acl-dave", "dave")
    (spool.path / "bob-1" / "cur").chmod(0o700)  # below the entry: the live check sees it too
    spool.revoke("bob-1", "bob")

    after = spool.seen_all()
    fresh = spool.status()

    assert spool.expected_all() == by_name(after)
    assert {
        "alice": {"pub-007", "team-0", "link-team"},
        "bob": {"pub-007", "bob-1"},
        "carol": {"pub-007"},
        "dave": {"pub-007", "acl-dave"},
    } == {user: set(before[user]) - set(after[user]) for user in USERS}
    assert all(set(after[user]) < set(before[user]) for user in USERS)
    assert 0 == fresh[0]
    assert [] == spool.nsprov_lines()


def test_new_entries_show_at_once(spool: Spool) -> None:
    """Entries added, removed or replaced after the update show at the next login.

    The spool directory's mtime moved, so the login lists names and inode numbers and scans
    what the cache does not know; the cache is still used for the rest, as a grant on an
    unchanged entry stays hidden.  (That needs a spool users may mostly not read: when a
    user's candidates are over half the spool, a changed spool is scanned as without a cache.)
    """
    for i in range(120):
        spool.box(f"vault-{i:03d}", NOBODY, mode=0o700)
    spool.settle()
    spool.update()
    spool.box("new-pub", USERS)
    spool.box("new-team", {"alice"}, group=spool.site.team.gid, mode=0o750)
    # A replacement under another inode: the new one is made while the old one exists.
    old_ino = (spool.path / "secret-00").stat().st_ino
    spool.box("aside", USERS)
    shutil.rmtree(spool.path / "secret-00")
    (spool.path / "aside").rename(spool.path / "secret-00")
    spool.access["secret-00"] = spool.access.pop("aside")
    shutil.rmtree(spool.path / "pub-003")
    del spool.access["pub-003"]
    (spool.path / "grant").chmod(0o755)
    spool.access["grant"] = USERS

    seen = spool.seen_all()
    fresh = spool.status()

    assert spool.expected_all(hidden={"grant"}) == by_name(seen)
    assert old_ino != (spool.path / "secret-00").stat().st_ino
    assert {"new-pub", "secret-00"} <= set(seen["bob"])
    assert {"new-pub", "new-team", "secret-00"} <= set(seen["alice"])
    assert 0 == fresh[0]
    assert [] == spool.nsprov_lines()


def test_new_grant_shows_after_update(spool: Spool) -> None:
    """A grant on an entry the cache says nobody could read shows once the cache is updated."""
    spool.update()
    (spool.path / "grant").chmod(0o755)  # its cur and new were 0755 all along
    spool.access["grant"] = USERS
    carol = spool.site.users["carol"].uid
    acl = PosixAcl(user_obj=7, group_obj=0, other=0, mask=5, users=[(carol, 5)])
    set_acl(spool.path / "secret-01", acl)
    spool.access["secret-01"] = frozenset({"carol"})

    stale = spool.seen_all()
    spool.update()
    updated = spool.seen_all()
    with spool.site.dovecot.imap(spool.site.users["bob"]) as imap:
        messages = select_count(imap, "Shared/grant")

    assert spool.expected_all(hidden={"grant", "secret-01"}) == by_name(stale)
    assert spool.expected_all() == by_name(updated)
    assert {"grant", "secret-01"} == set(updated["carol"]) - set(stale["carol"])
    assert 1 == messages
    assert [] == spool.nsprov_lines()


def test_expired_cache_is_not_used(spool: Spool) -> None:
    """A cache older than max_age is ignored (the login scans everything), whatever it holds."""
    spool.update()
    (spool.path / "grant").chmod(0o755)
    spool.access["grant"] = USERS
    stale = spool.seen("bob")
    spool.configure(max_age=1)
    built = spool.built()
    time.sleep(max(0.0, (built + 1_200_000_000 - time.time_ns()) / 1e9))
    expired = spool.status()
    live = spool.seen("bob")
    spool.configure(max_age=300)
    again = spool.seen("bob")

    assert spool.expected("bob", hidden={"grant"}) == sorted(stale)
    assert spool.expected("bob") == sorted(live)
    assert stale == again  # the same files, young enough again under the old max_age
    assert "grant" in live
    assert 1 == expired[0]
    assert re.fullmatch(spool.status_line(r"NOT USED: older than max_age \(1s\)"), expired[1])
    assert built == spool.built()  # nothing rebuilt the cache meanwhile
    assert [] == spool.nsprov_lines()


UNUSABLE = (
    "NOT USED: unusable (corrupt, another version, or owned by another user or writable by others)"
)


@pytest.mark.parametrize("tamper", ["group-writable", "owned-by-user"])
def test_untrusted_cache_is_ignored(spool: Spool, tamper: str) -> None:
    """An index file writable by others, or owned by someone else, is not used: a full scan."""
    spool.update()
    (spool.path / "grant").chmod(0o755)
    spool.access["grant"] = USERS
    stale = spool.seen("bob")
    bob = spool.site.users["bob"]
    if tamper == "group-writable":
        spool.idx.chmod(0o620)
    else:
        os.chown(spool.idx, bob.uid, bob.gid)
    untrusted = spool.status()
    live = spool.seen("bob")
    spool.idx.chmod(0o600)
    os.chown(spool.idx, 0, 0)
    again = spool.seen("bob")

    assert spool.expected("bob", hidden={"grant"}) == sorted(stale)
    assert spool.expected("bob") == sorted(live)
    assert stale == again
    assert (
        1,
        f"{spool.path}: age -, 0 entries indexed, {UNUSABLE} ({spool.idx})\n",
    ) == untrusted
    assert [] == spool.nsprov_lines()


def test_serve_refreshes_the_cache(spool: Spool) -> None:
    """``nsprov serve`` with ``refresh = 1`` builds the cache, then rebuilds it: grants show."""
    spool.configure(refresh=1)
    serve = Serve(spool.workdir, spool.site.config)
    serve.start()
    try:
        wait_for("the first build", lambda: spool.built() > 0)
        first = spool.status()
        (spool.path / "grant").chmod(0o755)
        spool.access["grant"] = USERS
        granted = time.time_ns()
        wait_for("a build after the grant", lambda: spool.built() > granted)
        seen = spool.seen_all()
    finally:
        serve.stop()
    log = serve.log()

    assert 0 == first[0]
    assert re.fullmatch(spool.status_line("fresh"), first[1]), first[1]
    assert spool.expected_all() == by_name(seen)
    assert "grant" in seen["dave"]
    assert "scan-cache-failed" not in log, log
    assert (0o700, 0) == (spool.cache.stat().st_mode & 0o777, spool.cache.stat().st_uid)
    assert [] == spool.nsprov_lines()
