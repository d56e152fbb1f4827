"""nsprov post-login under real Dovecot 2.3 and 2.4, with real UNIX users, groups and ACLs.

Every scenario runs once per Dovecot version; the test ids say which (``dovecot2.3``,
``dovecot2.4``).  2.3 is the host's Debian 12 package and runs the dev venv's ``nsprov``;
2.4 runs in the Debian 13 chroot (``chroot24.py``) with ``/opt/nsprov-venv/bin/nsprov``
installed there from a wheel built from this working tree.  Users, groups, spool, ACLs and
the nsprov config live where that Dovecot sees them (inside the chroot for 2.4).

One spool serves every scenario: world-readable, group-only, owner-only, ACL-granted, 0700,
symlinked, plain-file, dot and hostile-named entries.  Every mailbox, INBOX included, holds
a different number of messages, so a namespace that opens the wrong directory (2.4 ignores
unknown keys and falls back to the user's own ``mail_path``) cannot pass unnoticed.

What is tested is what is shipped.  The Dovecot wiring is ``examples/dovecot-<version>/
10-master.conf``, pasted verbatim into the test's ``dovecot.conf`` (``extra_conf``) after
exactly two substitutions, each of which must occur once per protocol:

* ``/usr/local/bin/nsprov``   -> the nsprov under test (see above);
* ``/etc/nsprov/nsprov.toml`` -> the test's config file.

The 2.4 config is ``examples/dovecot-2.4/nsprov.toml`` with its spool path
(``/var/spool/mail/Shared``) replaced by the test spool; the 2.3 config is the README's.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, ClassVar

import attrs
import pytest

from nsprov._perms import PosixAcl

from .chroot24 import (
    VENV,
    ChrootAccounts,
    ChrootGroup,
    Dovecot24,
    chroot24_status,
    chroot_run,
    chroot_tempdir,
    install_wheel,
    to_outside,
)
from .harness import (
    Dovecot,
    Group,
    SystemAccounts,
    User,
    list_mailboxes,
    live_available,
    make_maildir,
    namespaces,
    nsprov_problem,
    select_count,
)

if TYPE_CHECKING:
    import imaplib
    import poplib
    from collections.abc import Iterator, Sequence

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
#: The paths the shipped examples use, replaced by the tests (module docstring).
SHIPPED_NSPROV = "/usr/local/bin/nsprov"
SHIPPED_CONFIG = "/etc/nsprov/nsprov.toml"
SHIPPED_SPOOL = "/var/spool/mail/Shared"
VERSIONS = ("2.3", "2.4")
#: The nsprov the 2.3 instance runs: the console script next to this interpreter.
NSPROV23 = str(Path(sys.executable).with_name("nsprov"))
#: Linux MAX_ARG_STRLEN: one ``NAME=value`` environment string, NUL included.
MAX_ARG_STRLEN = 128 * 1024
LOG_TIMEOUT = 10.0

#: 2.4 only, not nsprov's: the private namespace names its own maildir and everything else
#: defaults to sdbox, so a namespace whose MAIL_DRIVER Dovecot dropped cannot open a maildir
#: spool (2.3 location strings carry the driver in MAIL itself).
DRIVER_TRAP_24 = """\
mail_driver = sdbox
mail_path = ~/sdbox
namespace inbox {
  mail_driver = maildir
  mail_path = ~/Maildir
}
"""

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
}
#: Entry name -> messages for the mailboxes only some users may read.
RESTRICTED = {"team": 11, "dave-only": 12, "acl-carol": 13}


def version_id(version: str) -> str:
    """The test id part for a Dovecot version."""
    return f"dovecot{version}"


# --- what is shipped ------------------------------------------------------------------


def _substitute(text: str, old: str, new: str, count: int) -> str:
    found = text.count(old)
    if found != count:
        raise AssertionError(
            f"expected {old!r} {count} times in the shipped example, found {found}"
        )
    return text.replace(old, new)


def wiring(version: str, nsprov: str, config: str, *, then: str = "") -> str:
    """The shipped ``10-master.conf`` for *version*, with the nsprov and config paths replaced.

    *then*, if given, is appended to each ``script-login`` line: a further program in the
    post-login chain, after nsprov.
    """
    text = (EXAMPLES / f"dovecot-{version}" / "10-master.conf").read_text(encoding="utf-8")
    text = _substitute(text, SHIPPED_NSPROV, nsprov, 2)
    text = _substitute(text, SHIPPED_CONFIG, config, 2)
    if then:
        text = re.sub(r"(?m)^(\s*executable = script-login .*)$", rf"\1 {then}", text)
    return text


def config_text(version: str, spool: PurePosixPath) -> str:
    """The nsprov config serving *spool*: the shipped 2.4 example, or the README's for 2.3."""
    if version == "2.4":
        text = (EXAMPLES / "dovecot-2.4" / "nsprov.toml").read_text(encoding="utf-8")
        return _substitute(text, SHIPPED_SPOOL, str(spool), 1)
    return f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\nseparator = "/"\n'


@functools.cache
def nsprov24(root: Path) -> str:
    """Build a wheel from this working tree, install it into the chroot venv; the script path."""
    with tempfile.TemporaryDirectory(prefix="nsprov-wheel-") as out:
        argv = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out]
        proc = subprocess.run(
            [*argv, str(REPO)], capture_output=True, text=True, check=False, timeout=300
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-12:])
            raise RuntimeError(f"cannot build the nsprov wheel from {REPO}:\n{tail}")
        (wheel,) = Path(out).glob("nsprov-*.whl")
        install_wheel(root, wheel)
    return str(VENV / "bin" / "nsprov")


def unavailable(version: str) -> str | None:
    """Why the live tests for *version* cannot run here, or None."""
    if version == "2.3":
        return live_available()
    return chroot24_status()[1] or None


# --- one Dovecot version's side -------------------------------------------------------


@attrs.frozen(kw_only=True)
class Person:
    """A throwaway account as the Dovecot under test sees it (``home`` inside its root)."""

    name: str
    uid: int
    gid: int
    home: PurePosixPath
    password: str


class Site(abc.ABC):
    """Where one Dovecot version lives: its root, scratch directory, accounts, server, nsprov."""

    version: ClassVar[str]
    #: The host path of the root directory this Dovecot sees as ``/``.
    root: Path
    #: A scratch directory (0755), as this Dovecot sees it.
    base: PurePosixPath
    #: The absolute path of the nsprov console script, as this Dovecot sees it.
    nsprov: str
    #: A Python interpreter for helper scripts, as this Dovecot sees it.
    python: str
    #: Further dovecot.conf text for every instance on this site.
    extra_conf: ClassVar[str] = ""

    def out(self, inside: PurePosixPath) -> Path:
        """The host path of a path inside the root."""
        return to_outside(self.root, inside)

    @abc.abstractmethod
    def group(self, label: str) -> int:
        """Create a group; return its gid."""

    @abc.abstractmethod
    def user(self, label: str, *, groups: Sequence[int] = (), messages: int = 0) -> Person:
        """Create a user with a 0700 home and a Maildir holding *messages* messages."""

    @abc.abstractmethod
    def start(self, users: Sequence[Person], conf: str) -> None:
        """Start this site's Dovecot for *users* with *conf* added to its dovecot.conf."""

    @abc.abstractmethod
    def imap(self, user: Person) -> imaplib.IMAP4:
        """An IMAP connection logged in as *user*."""

    @abc.abstractmethod
    def pop3(self, user: Person) -> poplib.POP3:
        """A POP3 connection logged in as *user*."""

    @abc.abstractmethod
    def log(self) -> str:
        """Everything Dovecot logged so far."""

    @abc.abstractmethod
    def errors(self) -> list[str]:
        """Log lines at Error, Fatal or Panic level."""

    @abc.abstractmethod
    def run_nsprov(self, *args: str) -> str:
        """Run the nsprov command line where Dovecot runs it; return its output."""

    def nsprov_lines(self) -> list[str]:
        """The log lines nsprov wrote, but its per-login Info line."""
        return [line for line in self.log().splitlines() if nsprov_problem(line)]

    def logouts(self, user: Person) -> int:
        """How many sessions of *user* Dovecot has logged as ended."""
        tag = f"({user.name})<"
        return sum(tag in line and "Logged out" in line for line in self.log().splitlines())

    def wait_logouts(self, user: Person, count: int) -> None:
        """Poll until Dovecot logged *count* ended sessions of *user* (its log process lags)."""
        deadline = time.monotonic() + LOG_TIMEOUT
        while self.logouts(user) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{user.name}: {count} logouts not logged:\n{self.log()}")
            time.sleep(0.02)


class Site23(Site):
    """Dovecot 2.3 on the host; accounts in the host's passwd, files below /var/tmp."""

    version = "2.3"

    def __init__(self, stack: contextlib.ExitStack) -> None:
        base = Path(tempfile.mkdtemp(prefix="nsprov-live-", dir="/var/tmp"))
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        base.chmod(0o755)
        self.root = Path("/")
        self.base = PurePosixPath(base)
        self.nsprov = NSPROV23
        self.python = sys.executable
        self._stack = stack
        self._accounts = stack.enter_context(SystemAccounts(base))
        self._groups: dict[int, Group] = {}
        self._users: dict[str, User] = {}
        self._dovecot: Dovecot | None = None

    def group(self, label: str) -> int:
        group = self._accounts.group(label)
        self._groups[group.gid] = group
        return group.gid

    def user(self, label: str, *, groups: Sequence[int] = (), messages: int = 0) -> Person:
        user = self._accounts.user(label, groups=[self._groups[gid] for gid in groups])
        make_maildir(
            user.home / "Maildir", messages=messages, owner=user.uid, group=user.gid, mode=0o700
        )
        self._users[user.name] = user
        home = PurePosixPath(user.home)
        return Person(name=user.name, uid=user.uid, gid=user.gid, home=home, password=user.password)

    def start(self, users: Sequence[Person], conf: str) -> None:
        dovecot = Dovecot(
            self.out(self.base / "dovecot"),
            [self._users[u.name] for u in users],
            extra_conf=self.extra_conf + conf,
        )
        self._dovecot = self._stack.enter_context(dovecot)

    @property
    def dovecot(self) -> Dovecot:
        """The running instance."""
        assert self._dovecot is not None
        return self._dovecot

    def imap(self, user: Person) -> imaplib.IMAP4:
        return self.dovecot.imap(self._users[user.name])

    def pop3(self, user: Person) -> poplib.POP3:
        return self.dovecot.pop3(self._users[user.name])

    def log(self) -> str:
        return self.dovecot.log()

    def errors(self) -> list[str]:
        return self.dovecot.errors()

    def run_nsprov(self, *args: str) -> str:
        proc = subprocess.run(
            [self.nsprov, *args], capture_output=True, text=True, check=True, timeout=60
        )
        return proc.stdout


class Site24(Site):
    """Dovecot 2.4 in the Debian 13 chroot; accounts in its passwd, files below its /srv."""

    version = "2.4"
    extra_conf = DRIVER_TRAP_24

    def __init__(self, stack: contextlib.ExitStack, root: Path) -> None:
        self.root = root
        self.nsprov = nsprov24(root)
        self.python = "/usr/bin/python3"
        self.base = stack.enter_context(chroot_tempdir(root, prefix="nsprov-"))
        self._stack = stack
        self._accounts = stack.enter_context(ChrootAccounts(root))
        self._groups: dict[int, ChrootGroup] = {}
        self._dovecot: Dovecot24 | None = None

    def group(self, label: str) -> int:
        group = self._accounts.add_group(label)
        self._groups[group.gid] = group
        return group.gid

    def user(self, label: str, *, groups: Sequence[int] = (), messages: int = 0) -> Person:
        user = self._accounts.add_user(
            label, groups=[self._groups[gid] for gid in groups], messages=messages
        )
        return Person(
            name=user.name, uid=user.uid, gid=user.gid, home=user.home, password=user.password
        )

    def start(self, users: Sequence[Person], conf: str) -> None:
        accounts = {u.name: u for u in self._accounts.users.values()}
        dovecot = Dovecot24(
            self.base / "dovecot",
            [accounts[u.name] for u in users],
            extra_conf=self.extra_conf + conf,
            root=self.root,
        )
        self._dovecot = self._stack.enter_context(dovecot)

    @property
    def dovecot(self) -> Dovecot24:
        """The running instance."""
        assert self._dovecot is not None
        return self._dovecot

    def imap(self, user: Person) -> imaplib.IMAP4:
        return self.dovecot.imap(user.name)

    def pop3(self, user: Person) -> poplib.POP3:
        return self.dovecot.pop3(user.name)

    def log(self) -> str:
        return self.dovecot.log()

    def errors(self) -> list[str]:
        return self.dovecot.errors()

    def run_nsprov(self, *args: str) -> str:
        return chroot_run(self.root, self.nsprov, *args).stdout


@contextlib.contextmanager
def open_site(version: str) -> Iterator[Site]:
    """The site for *version*; everything it creates is removed on exit.  Skips if unavailable."""
    if reason := unavailable(version):
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:
        if version == "2.3":
            yield Site23(stack)
        else:
            root, _ = chroot24_status()
            assert root is not None
            yield Site24(stack, root)


def append_as(uid: int, gid: int, path: Path, text: str) -> None:
    """Append *text* to *path* from a child process running as *uid*/*gid* (the kernel decides)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with path.open("a", encoding="utf-8") as f:
                f.write(text)
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert 0 == os.waitstatus_to_exitcode(status), f"uid {uid} could not append to {path}"


# --- the scenario world ---------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Seen:
    """What one IMAP session showed a user."""

    #: LIST names under ``Shared/``.
    names: set[str]
    #: EXAMINE message counts, by entry name.
    counts: dict[str, int]
    #: The shared part of the NAMESPACE reply: (prefix, separator).
    spaces: list[tuple[str, str | None]]
    #: The INBOX message count.
    inbox: int


class World:
    """Four users, a spool, an nsprov config and a Dovecot wired by the shipped snippet."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.version = site.version
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
        for name, count in PUBLIC.items():
            make_maildir(spool / name, messages=count, owner=0, group=0, mode=0o755)
        make_maildir(spool / "team", messages=RESTRICTED["team"], owner=0, group=team, mode=0o750)
        dave = self.dave
        count = RESTRICTED["dave-only"]
        make_maildir(
            spool / "dave-only", messages=count, owner=dave.uid, group=dave.gid, mode=0o700
        )
        make_maildir(spool / "secret", messages=14, owner=0, group=0, mode=0o700)
        acl_box = make_maildir(
            spool / "acl-carol", messages=RESTRICTED["acl-carol"], owner=0, group=0, mode=0o700
        )
        acl = PosixAcl(user_obj=7, group_obj=0, other=0, mask=5, users=[(self.carol.uid, 5)])
        for p in (acl_box, acl_box / "cur", acl_box / "new", *sorted((acl_box / "cur").iterdir())):
            os.setxattr(p, "system.posix_acl_access", acl.to_xattr())
        make_maildir(spool / ".dot", messages=15, owner=0, group=0, mode=0o755)
        (spool / "link").symlink_to("sales")
        (spool / "plain").write_text("not a mailbox\n")
        self.config = site.base / "nsprov.toml"
        self.write_config()
        site.start(self.users, wiring(self.version, site.nsprov, str(self.config)))

    def write_config(self, spool: PurePosixPath | None = None) -> None:
        """Write the nsprov config serving *spool* (default: the world's spool)."""
        path = self.site.out(self.config)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_text(config_text(self.version, spool or self.spool), encoding="utf-8")

    def shared(self, user: Person) -> Seen:
        """Log in over IMAP: LIST under Shared/, EXAMINE each, NAMESPACE, INBOX; log out."""
        with self.site.imap(user) as imap:
            names = {n for n in list_mailboxes(imap) if n.startswith("Shared/")}
            counts = {
                n.removeprefix("Shared/"): select_count(imap, n)
                for n in sorted(names)
                if n != "Shared"
            }
            spaces = namespaces(imap)["shared"]
            inbox = select_count(imap, "INBOX")
        return Seen(names=names, counts=counts, spaces=spaces, inbox=inbox)

    def shared_and_log(self, user: Person) -> tuple[Seen, list[str]]:
        """:meth:`shared`, and the nsprov log lines written during it (once Dovecot logged it)."""
        lines = len(self.site.nsprov_lines())
        logouts = self.site.logouts(user)
        seen = self.shared(user)
        self.site.wait_logouts(user, logouts + 1)
        return seen, self.site.nsprov_lines()[lines:]

    def exported(self, user: Person) -> dict[str, str]:
        """The variables nsprov exports for *user* (``nsprov show --format=json``)."""
        out = self.site.run_nsprov(
            "show", "--user", user.name, f"--config={self.config}", "--format=json"
        )
        environment: dict[str, str] = json.loads(out)["environment"]
        return environment


def location_parts(location: str) -> list[str]:
    """Split a 2.3 location string on ``:``; ``::`` is a literal colon (contract section 6)."""
    parts = [""]
    i = 0
    while i < len(location):
        if location.startswith("::", i):
            parts[-1] += ":"
            i += 2
        elif location[i] == ":":
            parts.append("")
            i += 1
        else:
            parts[-1] += location[i]
            i += 1
    return parts


def storage_dirs(version: str, environ: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Namespace prefix -> (index directory, control directory), as nsprov exported them."""
    list_key = "NAMESPACE+" if version == "2.4" else "NAMESPACE"
    dirs = {}
    for name in environ[list_key].split():
        key = f"NAMESPACE/{name.upper()}/"
        if version == "2.4":
            index, control = environ[key + "MAIL_INDEX_PATH"], environ[key + "MAIL_CONTROL_PATH"]
        else:
            params = {}
            for part in location_parts(environ[key + "MAIL"])[2:]:
                param, _, value = part.partition("=")
                params[param] = value
            index, control = params["INDEX"], params["CONTROL"]
        dirs[environ[key + "PREFIX"]] = (index, control)
    return dirs


@pytest.fixture(name="world", scope="module", params=VERSIONS, ids=version_id)
def _world(request: pytest.FixtureRequest) -> Iterator[World]:
    """A world per Dovecot version; skips when that version cannot run here."""
    with open_site(request.param) as site:
        yield World(site)


@pytest.fixture(name="fresh")
def _fresh(world: World) -> Iterator[World]:
    """Restore the documented config and spool mode after a test that changes them."""
    yield world
    world.site.out(world.spool).chmod(0o755)
    world.write_config()


#: How each version's fchown error ends: 2.3 points at its wiki, 2.4 at its documentation.
CHGRP_HINT = {
    "2.3": "wiki2.dovecot.org/Errors/ChgrpNoPerm)",
    "2.4": "/admin/errors.html#change-group-operation-not-permitted)",
}


def known_chgrp_error(version: str, line: str) -> bool:
    """Whether *line* is Dovecot's fchown error for the ACL-granted mailbox (see below)."""
    return "fchown(" in line and "/spool/acl-carol " in line and line.endswith(CHGRP_HINT[version])


def expected(*extra: str) -> dict[str, int]:
    """Entry name -> message count of what a user with access to *extra* should see."""
    return PUBLIC | {name: RESTRICTED[name] for name in extra}


ACCESS = [("alice", ("team",)), ("bob", ()), ("carol", ("acl-carol",)), ("dave", ("dave-only",))]


class TestVisibility:
    """Each user sees exactly the mailboxes the filesystem lets their mail process read."""

    @pytest.mark.parametrize(("who", "extra"), ACCESS, ids=[who for who, _ in ACCESS])
    def test_per_user(self, world: World, who: str, extra: tuple[str, ...]) -> None:
        """NAMESPACE, LIST and EXAMINE agree with the permissions, hostile names included."""
        seen = world.shared(getattr(world, who))

        want = expected(*extra)
        assert want == seen.counts
        assert len(seen.counts) + 1 == len({*seen.counts.values(), seen.inbox})
        assert {f"Shared/{n}" for n in want} == seen.names - {"Shared"}
        assert {(f"Shared/{n}/", "/") for n in want} == set(seen.spaces)
        assert INBOX == seen.inbox

    @pytest.mark.parametrize("who", [who for who, _ in ACCESS])
    def test_index_and_control_paths_used(self, world: World, who: str) -> None:
        """After EXAMINE, each exported index directory holds Dovecot index files and each control directory its uidlist."""
        user = getattr(world, who)
        dirs = storage_dirs(world.version, world.exported(user))

        seen = world.shared(user)

        found = {
            prefix: (
                any(world.site.out(PurePosixPath(index)).glob("dovecot.index*")),
                world.site.out(PurePosixPath(control) / "dovecot-uidlist").is_file(),
            )
            for prefix, (index, control) in dirs.items()
        }
        assert {prefix for prefix, _ in seen.spaces} == set(dirs)
        assert dict.fromkeys(dirs, (True, True)) == found

    def test_spool_untouched(self, world: World) -> None:
        """Sessions of every user leave nothing in the spool's maildirs: indexes go to the user's directories."""
        for user in world.users:
            world.shared(user)

        spool = world.site.out(world.spool)
        contents = {
            entry.name: tuple(sorted(p.name for p in entry.iterdir()))
            for entry in spool.iterdir()
            if entry.is_dir() and not entry.is_symlink()
        }
        assert dict.fromkeys(contents, ("cur", "new", "tmp")) == contents

    def test_index_dirs_owned_by_user(self, world: World) -> None:
        """Per-user index directories exist, owned by the user, mode 0700, for each namespace."""
        world.shared(world.carol)

        dirs = list(world.site.out(world.carol.home / ".nsprov").iterdir())
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
            pop3 = world.site.pop3(user)
            count, _ = pop3.stat()
            pop3.quit()
            assert INBOX == count

    def test_no_nsprov_errors(self, world: World) -> None:
        """Normal logins log nothing from nsprov and no Dovecot errors.

        The one known exception: for a mailbox granted through an ACL, whose group
        bits differ from its other bits, Dovecot tries to give new index files the
        mailbox's group and logs a failed fchown (contract, "Index directory group");
        SELECT works because nsprov created the index directory as the user.
        """
        _, lines = world.shared_and_log(world.bob)

        assert [] == lines
        assert [] == world.site.nsprov_lines()
        assert [] == [e for e in world.site.errors() if not known_chgrp_error(world.version, e)]


class TestFaults:
    """Faults never lock users out: one log line, the login goes on without namespaces."""

    @staticmethod
    def login_without_namespaces(world: World, user: Person) -> list[str]:
        """Log in, check that no namespace came through, return nsprov's new log lines."""
        seen, lines = world.shared_and_log(user)
        assert Seen(names=set(), counts={}, spaces=[], inbox=INBOX) == seen
        return lines

    def test_missing_config(self, fresh: World) -> None:
        """A missing config file."""
        fresh.site.out(fresh.config).unlink()

        lines = self.login_without_namespaces(fresh, fresh.alice)

        assert 1 == len(lines)
        assert "cannot read" in lines[0]

    def test_corrupt_config(self, fresh: World) -> None:
        """A config that is not TOML."""
        fresh.site.out(fresh.config).write_text("[[spool]\npath = \n")

        lines = self.login_without_namespaces(fresh, fresh.bob)

        assert 1 == len(lines)
        assert "invalid TOML" in lines[0]

    def test_missing_spool(self, fresh: World) -> None:
        """A spool that does not exist."""
        fresh.write_config(fresh.site.base / "no-such-spool")

        lines = self.login_without_namespaces(fresh, fresh.carol)

        assert 1 == len(lines)
        assert "no-such-spool" in lines[0]

    def test_spool_not_traversable(self, fresh: World) -> None:
        """A spool the users cannot search gives nobody anything, and logs nothing."""
        fresh.site.out(fresh.spool).chmod(0o700)

        lines = self.login_without_namespaces(fresh, fresh.alice)

        assert [] == lines

    def test_dialect_mismatch(self, fresh: World) -> None:
        """The other version's dialect is caught before it breaks sessions: no namespaces, one warning."""
        other = "2.3" if fresh.version == "2.4" else "2.4"
        path = fresh.site.out(fresh.config)
        path.write_text(
            f'[dovecot]\nversion = "{other}"\n[[spool]]\npath = "{fresh.spool}"\n', encoding="utf-8"
        )

        lines = self.login_without_namespaces(fresh, fresh.bob)

        assert 1 == len(lines)
        assert f'Dovecot {fresh.version} is installed but [dovecot] version = "{other}"' in lines[0]

    def test_fifo_config(self, fresh: World) -> None:
        """A FIFO config with a silent writer (every read would block) is refused at once; the login goes on."""
        config = fresh.site.out(fresh.config)
        config.unlink()
        os.mkfifo(config)
        # Holding the write end open makes every read block (without a writer it returns EOF).
        writer = os.open(config, os.O_RDWR | os.O_NONBLOCK)
        started = time.monotonic()
        try:
            lines = self.login_without_namespaces(fresh, fresh.dave)
        finally:
            os.close(writer)

        assert time.monotonic() - started < LOG_TIMEOUT
        assert 1 == len(lines)
        assert "is not a regular file (a FIFO)" in lines[0]

    def test_world_writable_config(self, fresh: World) -> None:
        """A 0666 config another user appends [[field]] uid/gid/home to is refused (issue 16, finding 2).

        Before, root read it and the attacker's session ran as the victim, with the
        victim's mail.  Now the login goes on as the attacker, without namespaces,
        and Dovecot logs one line naming the file and the rule.
        """
        victim, attacker = fresh.alice, fresh.bob
        config = fresh.site.out(fresh.config)
        config.chmod(0o666)
        folder = f"planted-{os.getpid()}"
        marker = fresh.site.out(victim.home) / "Maildir" / f".{folder}"
        make_maildir(marker, messages=1, owner=victim.uid, group=victim.gid, mode=0o700)
        fields = "".join(
            f'[[field]]\nname = "{key}"\nvalue = "{value}"\n'
            for key, value in (("uid", victim.uid), ("gid", victim.gid), ("home", victim.home))
        )
        try:
            append_as(attacker.uid, attacker.gid, config, fields)
            lines = len(fresh.site.nsprov_lines())
            logouts = fresh.site.logouts(attacker)
            with fresh.site.imap(attacker) as imap:
                names = set(list_mailboxes(imap))
            fresh.site.wait_logouts(attacker, logouts + 1)
            new = fresh.site.nsprov_lines()[lines:]
        finally:
            shutil.rmtree(marker)

        assert fields in config.read_text(encoding="utf-8")
        assert folder not in names
        assert "INBOX" in names
        assert [] == [n for n in names if n.startswith("Shared")]
        assert 1 == len(new)
        assert f"{fresh.config}: config file not trusted: {fresh.config} is writable" in new[0]
        assert "continuing with the environment untouched" in new[0]


class TestSymlinkAttack:
    """A user who plants symlinks in their home cannot make root touch anything outside it."""

    def test_planted_links(self, world: World) -> None:
        """~/.nsprov pointing at a root-owned directory: nothing there changes, the login works."""
        inside = world.site.base / "victim"
        victim = world.site.out(inside)
        victim.mkdir(mode=0o755)
        (victim / "keep").write_text("x")
        before = [(p.name, p.stat().st_uid, p.stat().st_mode) for p in [victim, *victim.iterdir()]]
        bob = world.bob
        index_root = world.site.out(bob.home / ".nsprov")
        if index_root.exists():
            shutil.rmtree(index_root)
        os.symlink(inside, index_root)
        os.lchown(index_root, bob.uid, bob.gid)
        try:
            with world.site.imap(bob) as imap:
                inbox = select_count(imap, "INBOX")
        finally:
            index_root.unlink()

        after = [(p.name, p.stat().st_uid, p.stat().st_mode) for p in [victim, *victim.iterdir()]]
        assert before == after
        assert INBOX == inbox
