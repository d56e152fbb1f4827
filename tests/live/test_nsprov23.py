"""nsprov post-login under a real Dovecot 2.3, with real UNIX users, groups and ACLs.

One spool serves every scenario: world-readable, group-only, owner-only,
ACL-granted, 0700, symlinked, plain-file, dot and hostile-named entries.
``script-login`` is wired to the installed ``nsprov post-login`` exactly as the
README documents, for IMAP and POP3.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nsprov._perms import PosixAcl

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
    from collections.abc import Iterator

pytestmark = pytest.mark.live

NSPROV = str(Path(sys.executable).with_name("nsprov"))
LONG = "L" + "o" * 198 + "g"
#: Entry name -> messages; every one of these is world-readable.
PUBLIC = {
    "sales": 3,
    "Weird Name": 1,
    "a,b": 2,
    "odd:INDEX=evil": 4,
    "pct%u": 5,
    "Case": 1,
    "case": 2,
    "star*": 3,
    LONG: 1,
}


class World:
    """Accounts, a spool and a Dovecot wired to nsprov."""

    def __init__(self, base: Path, accounts: SystemAccounts) -> None:
        self.base = base
        self.team = accounts.group("team")
        self.alice = accounts.user("alice", groups=[self.team])
        self.bob = accounts.user("bob")
        self.carol = accounts.user("carol")
        self.dave = accounts.user("dave")
        self.users = [self.alice, self.bob, self.carol, self.dave]
        for u in self.users:
            make_maildir(u.home / "Maildir", messages=1, owner=u.uid, group=u.gid, mode=0o700)
        self.spool = base / "spool"
        self.spool.mkdir(mode=0o755)
        for name, count in PUBLIC.items():
            make_maildir(self.spool / name, messages=count, owner=0, group=0, mode=0o755)
        make_maildir(self.spool / "team", messages=2, owner=0, group=self.team.gid, mode=0o750)
        make_maildir(
            self.spool / "dave-only",
            messages=1,
            owner=self.dave.uid,
            group=self.dave.gid,
            mode=0o700,
        )
        make_maildir(self.spool / "secret", messages=1, owner=0, group=0, mode=0o700)
        acl_box = make_maildir(self.spool / "acl-carol", messages=2, owner=0, group=0, mode=0o700)
        acl = PosixAcl(user_obj=7, group_obj=0, other=0, mask=5, users=[(self.carol.uid, 5)])
        for p in (acl_box, acl_box / "cur", acl_box / "new", *sorted((acl_box / "cur").iterdir())):
            os.setxattr(p, "system.posix_acl_access", acl.to_xattr())
        make_maildir(self.spool / ".dot", messages=1, owner=0, group=0, mode=0o755)
        (self.spool / "link").symlink_to("sales")
        (self.spool / "plain").write_text("not a mailbox\n")
        self.config = base / "nsprov.toml"
        self.write_config()
        line = f"{NSPROV} post-login --config={self.config} --protocol="
        self.dovecot = Dovecot(
            base / "dovecot",
            self.users,
            postlogin={"imap": line + "imap", "pop3": line + "pop3"},
        )

    def write_config(self, spool: Path | None = None, extra: str = "") -> None:
        if self.config.is_symlink() or self.config.exists():
            self.config.unlink()
        self.config.write_text(
            f'[[spool]]\npath = "{spool or self.spool}"\nprefix = "Shared/{{name}}/"\nseparator = "/"\n{extra}'
        )

    def shared(
        self, user: User
    ) -> tuple[set[str], dict[str, int], list[tuple[str, str | None]], int]:
        """LIST names under Shared/, EXAMINE counts, NAMESPACE shared list, INBOX count."""
        with self.dovecot.imap(user) as imap:
            names = {n for n in list_mailboxes(imap) if n.startswith("Shared/")}
            counts = {
                n.removeprefix("Shared/"): select_count(imap, n)
                for n in sorted(names)
                if n != "Shared"
            }
            spaces = namespaces(imap)["shared"]
            inbox = select_count(imap, "INBOX")
        return names, counts, spaces, inbox

    def nsprov_log(self) -> list[str]:
        return [line for line in self.dovecot.log().splitlines() if "nsprov:" in line]


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


@pytest.fixture(name="fresh")
def _fresh(world: World) -> Iterator[World]:
    """Restore the documented config after a test that changes it."""
    yield world
    world.spool.chmod(0o755)
    world.write_config()


def expected(*extra: str) -> dict[str, int]:
    counts = dict(PUBLIC)
    table = {"team": 2, "dave-only": 1, "acl-carol": 2}
    counts.update({e: table[e] for e in extra})
    return counts


class TestVisibility:
    """Each user sees exactly the mailboxes the filesystem lets their mail process read."""

    @pytest.mark.parametrize(
        ("who", "extra"),
        [("alice", ("team",)), ("bob", ()), ("carol", ("acl-carol",)), ("dave", ("dave-only",))],
    )
    def test_per_user(self, world: World, who: str, extra: tuple[str, ...]) -> None:
        """NAMESPACE, LIST and EXAMINE agree with the permissions, hostile names included."""
        user = getattr(world, who)

        names, counts, spaces, inbox = world.shared(user)

        want = expected(*extra)
        assert want == counts
        assert {f"Shared/{n}" for n in want} == names - {"Shared"}
        assert {(f"Shared/{n}/", "/") for n in want} == set(spaces)
        assert 1 == inbox

    def test_index_dirs_owned_by_user(self, world: World) -> None:
        """Per-user index directories exist, owned by the user, mode 0700, for each namespace."""
        world.shared(world.carol)

        dirs = list((world.carol.home / ".nsprov").iterdir())
        assert len(expected("acl-carol")) == len(dirs)
        for d in dirs:
            st = d.lstat()
            assert (world.carol.uid, 0o700, True) == (
                st.st_uid,
                stat.S_IMODE(st.st_mode),
                stat.S_ISDIR(st.st_mode),
            )

    def test_pop3(self, world: World) -> None:
        """POP3 logins through the same wiring see their INBOX."""
        for user in world.users:
            pop3 = world.dovecot.pop3(user)
            count, _ = pop3.stat()
            pop3.quit()
            assert 1 == count

    def test_no_nsprov_errors(self, world: World) -> None:
        """Normal logins log nothing from nsprov and no Dovecot errors.

        The one known exception: for a mailbox granted through an ACL, whose group
        bits differ from its other bits, Dovecot tries to give new index files the
        mailbox's group and logs ChgrpNoPerm (contract, "Index directory group");
        SELECT works because nsprov created the index directory as the user.
        ``nsprov check`` reports such mailboxes.
        """
        world.shared(world.bob)

        assert [] == world.nsprov_log()
        assert [] == [e for e in world.dovecot.errors() if "ChgrpNoPerm" not in e]


class TestFaults:
    """Faults never lock users out: one log line, the login goes on without namespaces."""

    def login_without_namespaces(self, world: World, user: User) -> None:
        names, counts, spaces, inbox = world.shared(user)
        assert (set(), {}, [], 1) == (names, counts, spaces, inbox)

    def test_missing_config(self, fresh: World) -> None:
        """A missing config file."""
        fresh.config.unlink()

        self.login_without_namespaces(fresh, fresh.alice)
        assert any("cannot read" in line for line in fresh.nsprov_log())

    def test_corrupt_config(self, fresh: World) -> None:
        """A config that is not TOML."""
        fresh.config.write_text("[[spool]\npath = \n")

        self.login_without_namespaces(fresh, fresh.bob)
        assert any("invalid TOML" in line for line in fresh.nsprov_log())

    def test_missing_spool(self, fresh: World) -> None:
        """A spool that does not exist."""
        fresh.write_config(fresh.base / "no-such-spool")

        self.login_without_namespaces(fresh, fresh.carol)
        assert any("no-such-spool" in line for line in fresh.nsprov_log())

    def test_spool_not_traversable(self, fresh: World) -> None:
        """A spool the users cannot search gives nobody anything, and logs nothing."""
        fresh.spool.chmod(0o700)

        self.login_without_namespaces(fresh, fresh.alice)

    def test_hung_filesystem_call(self, fresh: World) -> None:
        """A config read that blocks forever (a FIFO) hits the deadline; the login goes on."""
        fresh.config.unlink()
        os.mkfifo(fresh.config)
        started = time.monotonic()

        self.login_without_namespaces(fresh, fresh.dave)
        assert time.monotonic() - started < 10
        assert any("deadline" in line for line in fresh.nsprov_log())


class TestSymlinkAttack:
    """A user who plants symlinks in their home cannot make root touch anything outside it."""

    def test_planted_links(self, world: World) -> None:
        """~/.nsprov pointing at a root-owned directory: nothing there changes, the login works."""
        victim = world.base / "victim"
        victim.mkdir(mode=0o755)
        (victim / "keep").write_text("x")
        before = [(p.name, p.stat().st_uid, p.stat().st_mode) for p in [victim, *victim.iterdir()]]
        bob = world.bob
        index_root = bob.home / ".nsprov"
        if index_root.exists():
            shutil.rmtree(index_root)
        os.symlink(victim, index_root)
        os.lchown(index_root, bob.uid, bob.gid)

        with world.dovecot.imap(bob) as imap:
            inbox = select_count(imap, "INBOX")

        after = [(p.name, p.stat().st_uid, p.stat().st_mode) for p in [victim, *victim.iterdir()]]
        assert before == after
        assert 1 == inbox
        index_root.unlink()
