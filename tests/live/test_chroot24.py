"""Live tests of Dovecot 2.4 (Debian 13 chroot): logins, what post-login scripts get, namespaces.

These tests pin down Dovecot 2.4 behaviour that nsprov relies on, with small scripts
standing in for nsprov.  Observed on Dovecot 2.4.1 (Debian 13 package).
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import json
import shlex
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pytest

from .chroot24 import (
    TEST_BASE,
    VENV,
    ChrootAccounts,
    ChrootUser,
    Dovecot24,
    chroot24_status,
    chroot_run,
    chroot_tempdir,
    install_wheel,
    make_maildir,
    python_venv,
    to_inside,
    to_outside,
    write_file,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

pytestmark = pytest.mark.live

SCRIPT_LOGIN = "/usr/lib/dovecot/script-login"
SPOOL_MESSAGES = 3
INBOX_MESSAGES = 2

# Records the environment and argv exactly: perl adds nothing to the environment
# (dash adds PWD, Python's PEP 538 locale coercion adds LC_CTYPE=C.UTF-8).
ENV_DUMPER = r"""#!/usr/bin/perl
open(my $out, '>', "@DIR@/env.$$") or die "open: $!";
print $out join("\0", $0, @ARGV), "\n";
print $out join("\0", map { "$_=$ENV{$_}" } sort keys %ENV), "\n";
close($out) or die "close: $!";
exec { $ARGV[0] } @ARGV or die "exec: $!";
"""

# Records the process identity and inherited file descriptors, as Python sees them.
PROC_DUMPER = r"""#!/usr/bin/python3 -I
import fcntl, json, os, sys
fds = {}
for fd in range(256):
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        continue
    fds[fd] = {"nonblock": bool(flags & os.O_NONBLOCK)}
record = {
    "argv": sys.argv,
    "environ": dict(os.environ),
    "uid": os.getuid(),
    "gid": os.getgid(),
    "groups": sorted(os.getgroups()),
    "cwd": os.getcwd(),
    "umask": os.umask(0o077),
    "fds": fds,
}
with open(f"@DIR@/proc.{os.getpid()}", "w") as out:
    json.dump(record, out)
os.execv(sys.argv[1], sys.argv[1:])
"""


# --- helpers --------------------------------------------------------------------------


def namespace_script(fields: Mapping[str, str]) -> str:
    """Return a /bin/sh post-login script exporting ``fields`` and appending them to USERDB_KEYS."""
    pairs = " ".join(shlex.quote(f"{key}={value}") for key, value in fields.items())
    keys = " ".join(fields)
    return f'#!/bin/sh\nexec env {pairs} "USERDB_KEYS=${{USERDB_KEYS}}{keys} " "$@"\n'


def public_namespace(
    spool: PurePosixPath, index: PurePosixPath, *, name: str = "s-sales", **extra: str
) -> dict[str, str]:
    """Return the 2.4 post-login fields of a public namespace ``Shared/sales/`` on ``spool``."""
    key = f"NAMESPACE/{name.upper()}"
    fields = {
        "NAMESPACE+": name,
        f"{key}/TYPE": "public",
        f"{key}/SEPARATOR": "/",
        f"{key}/PREFIX": "Shared/sales/",
        f"{key}/MAIL_DRIVER": "maildir",
        f"{key}/MAIL_PATH": str(spool),
        f"{key}/MAIL_INDEX_PATH": str(index),
        f"{key}/MAIL_CONTROL_PATH": str(index),
        f"{key}/SUBSCRIPTIONS": "no",
    }
    fields.update({f"{key}/{sub}": value for sub, value in extra.items()})
    return fields


def mailboxes(client: imaplib.IMAP4) -> set[str]:
    """Return the mailbox names of ``LIST "" *`` (names without spaces)."""
    typ, data = client.list()
    assert "OK" == typ
    return {item.decode().rsplit(" ", 1)[-1].strip('"') for item in data if isinstance(item, bytes)}


def examine(client: imaplib.IMAP4, mailbox: str) -> int:
    """Return the message count EXAMINE reports for ``mailbox``."""
    typ, data = client.select(mailbox, readonly=True)
    assert "OK" == typ, data
    assert isinstance(data[0], bytes)
    return int(data[0])


def namespace_reply(client: imaplib.IMAP4) -> str:
    """Return the untagged NAMESPACE response."""
    typ, data = client.namespace()
    assert "OK" == typ
    assert isinstance(data[0], bytes)
    return data[0].decode()


def build_probe_wheel(directory: Path, value: str) -> Path:
    """Write a minimal pure wheel ``nsprov_chroot_probe`` whose module holds ``VALUE``."""
    files = {
        "nsprov_chroot_probe/__init__.py": f"VALUE = {value!r}\n".encode(),
        "nsprov_chroot_probe-0.1.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: nsprov-chroot-probe\nVersion: 0.1\n"
        ),
        "nsprov_chroot_probe-0.1.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: nsprov-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = ""
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    record += "nsprov_chroot_probe-0.1.dist-info/RECORD,,\n"
    wheel = directory / "nsprov_chroot_probe-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("nsprov_chroot_probe-0.1.dist-info/RECORD", record)
    return wheel


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(name="root", scope="module")
def fixture_root() -> Path:
    """The Dovecot 2.4 root, built on first use; skip when unavailable."""
    root, reason = chroot24_status()
    if root is None:
        pytest.skip(reason)
    return root


@pytest.fixture(name="workdir", scope="module")
def fixture_workdir(root: Path) -> Iterator[PurePosixPath]:
    """A scratch directory inside the root, shared by this module."""
    with chroot_tempdir(root, prefix="t24-") as workdir:
        yield workdir


@pytest.fixture(name="chroot_accounts", scope="module")
def fixture_chroot_accounts(root: Path) -> Iterator[ChrootAccounts]:
    """Throwaway accounts inside the root, removed after the module."""
    with ChrootAccounts(root) as accounts:
        yield accounts


@pytest.fixture(name="user", scope="module")
def fixture_user(chroot_accounts: ChrootAccounts) -> ChrootUser:
    """A user in one supplementary group whose INBOX holds two messages."""
    staff = chroot_accounts.add_group("staff")
    return chroot_accounts.add_user("alice", groups=[staff], messages=INBOX_MESSAGES)


@pytest.fixture(name="spools", scope="module")
def fixture_spools(root: Path, workdir: PurePosixPath) -> dict[str, PurePosixPath]:
    """World-readable spool maildirs: ``flat`` (no children) and ``tree`` (child ``.sub``)."""
    spools = {}
    for name in ("flat", "tree"):
        spools[name] = make_maildir(
            root,
            workdir / "spool" / name,
            messages=SPOOL_MESSAGES,
            dir_mode=0o755,
            file_mode=0o644,
        )
    make_maildir(root, spools["tree"] / ".sub", messages=1, dir_mode=0o755, file_mode=0o644)
    return spools


EXEC_ONLY = '#!/bin/sh\nexec "$@"\n'
#: Stands in for the per-login AUTH_TOKEN value in comparisons.
REDACTED = "<40 hex digits>"


@dataclass(frozen=True)
class Rig:
    """One shared 2.4 instance, its user and spools, and this test's index directory."""

    dovecot: Dovecot24
    user: ChrootUser
    script: PurePosixPath
    flat: PurePosixPath
    tree: PurePosixPath
    index: PurePosixPath

    def postlogin(self, text: str) -> None:
        """Replace the post-login script (run afresh on every login, so no restart)."""
        write_file(self.dovecot.root, self.script, text, mode=0o755)

    def imap(self) -> imaplib.IMAP4:
        """Log in over IMAP as the user."""
        return self.dovecot.imap(self.user)


@pytest.fixture(name="dovecot", scope="module")
def fixture_dovecot(root: Path, workdir: PurePosixPath, user: ChrootUser) -> Iterator[Dovecot24]:
    """One 2.4 instance for IMAP and POP3 whose post-login is ``workdir/postlogin.sh``."""
    script = write_file(root, workdir / "postlogin.sh", EXEC_ONLY, mode=0o755)
    postlogin = {"imap": str(script), "pop3": str(script)}
    with Dovecot24(workdir / "dovecot", [user], postlogin=postlogin, root=root) as dovecot:
        yield dovecot


@pytest.fixture(name="rig")
def fixture_rig(
    dovecot: Dovecot24,
    user: ChrootUser,
    workdir: PurePosixPath,
    spools: dict[str, PurePosixPath],
    request: pytest.FixtureRequest,
) -> Iterator[Rig]:
    """The shared instance with a fresh per-test index directory; post-login reset afterwards."""
    test_name = str(request.node.name).replace("[", "-").strip("]")
    rig = Rig(
        dovecot=dovecot,
        user=user,
        script=workdir / "postlogin.sh",
        flat=spools["flat"],
        tree=spools["tree"],
        index=user.home / "idx" / test_name / "s-sales",
    )
    yield rig
    rig.postlogin(EXEC_ONLY)


# --- tests ----------------------------------------------------------------------------


class TestChroot:
    """The root, its path mapping and its throwaway accounts."""

    def test_dovecot_is_2_4(self, root: Path) -> None:
        """The root holds Dovecot 2.4."""
        version = chroot_run(root, "/usr/sbin/dovecot", "--version").stdout

        assert version.startswith("2.4.")

    def test_path_mapping_round_trips(self, root: Path) -> None:
        """An inside path mapped outside and back is unchanged."""
        inside = PurePosixPath("/srv/x/y")

        assert inside == to_inside(root, to_outside(root, inside))

    def test_accounts_removed_on_exit(self, root: Path) -> None:
        """Users, groups and homes made by ChrootAccounts exist only inside the block."""
        host_passwd = Path("/etc/passwd").read_text(encoding="utf-8")
        with ChrootAccounts(root) as accounts:
            group = accounts.add_group("grp")
            bob = accounts.add_user("bob", groups=[group])
            inside_ids = chroot_run(root, "id", bob.name).stdout
            home_mode = to_outside(root, bob.home).stat().st_mode & 0o777
        passwd = to_outside(root, "/etc/passwd").read_text(encoding="utf-8")
        groups = to_outside(root, "/etc/group").read_text(encoding="utf-8")

        assert group.name in inside_ids
        assert 0o700 == home_mode
        assert bob.name not in passwd
        assert group.name not in groups
        assert not to_outside(root, bob.home).exists()
        assert host_passwd == Path("/etc/passwd").read_text(encoding="utf-8")


class TestLogin:
    """IMAP and POP3 logins on 2.4, without and with a pass-through post-login script."""

    def test_without_postlogin(self, root: Path, chroot_accounts: ChrootAccounts) -> None:
        """Without post-login, IMAP and POP3 log in and count the messages placed in INBOX."""
        carol = chroot_accounts.add_user("carol", messages=4)
        with chroot_tempdir(root) as workdir, Dovecot24(workdir, [carol], root=root) as dovecot:
            client = dovecot.imap(carol)
            count = examine(client, "INBOX")
            client.logout()
            pop3 = dovecot.pop3(carol)
            stat = pop3.stat()
            pop3.quit()
            errors = dovecot.errors()

        assert 4 == count
        assert 4 == stat[0]
        assert [] == errors

    def test_sh_pass_through(self, rig: Rig) -> None:
        """A ``/bin/sh`` post-login doing ``exec "$@"`` lets IMAP and POP3 log in."""
        rig.postlogin(EXEC_ONLY)
        client = rig.imap()
        count = examine(client, "INBOX")
        client.logout()
        pop3 = rig.dovecot.pop3(rig.user)
        stat = pop3.stat()
        pop3.quit()

        assert INBOX_MESSAGES == count
        assert INBOX_MESSAGES == stat[0]

    def test_exit_without_exec_denies_login(self, rig: Rig) -> None:
        """A script that exits without exec denies the login; its stderr is logged at Error."""
        rig.postlogin("#!/bin/sh\necho nsprov-probe-failure >&2\nexit 1\n")
        mark = rig.dovecot.log_mark()
        with pytest.raises(imaplib.IMAP4.abort, match="socket error: EOF"):
            rig.imap()
        log = rig.dovecot.wait_for_log("Post-login script denied access", since=mark)

        assert "imap-postlogin: Error: nsprov-probe-failure\n" in log
        assert f"Error: Post-login script denied access to user {rig.user.name} (" in log


@dataclass(frozen=True)
class Dumps:
    """What the two dumpers recorded for one login."""

    argv: list[str]
    environ: dict[str, str]
    proc: dict[str, Any]


class TestPostLoginInput:
    """What Dovecot 2.4.1 hands to a post-login script: argv, environment, identity, fds."""

    @pytest.fixture(name="dumps")
    def fixture_dumps(self, root: Path) -> Iterator[PurePosixPath]:
        """An empty 1777 directory the dumpers write into."""
        with chroot_tempdir(root, prefix="dumps-") as dumps:
            to_outside(root, dumps).chmod(0o1777)
            yield dumps

    @staticmethod
    def run_dumpers(
        root: Path, user: ChrootUser, dumps: PurePosixPath, protocol: str, option: str = ""
    ) -> Dumps:
        """Log in through ``script-login [option] env-dumper proc-dumper``; return both records."""
        env_dumper = write_file(
            root, dumps / "env.pl", ENV_DUMPER.replace("@DIR@", str(dumps)), mode=0o755
        )
        proc_dumper = write_file(
            root, dumps / "proc.py", PROC_DUMPER.replace("@DIR@", str(dumps)), mode=0o755
        )
        program = f"{option}{env_dumper} {proc_dumper}"
        with Dovecot24(dumps / "dovecot", [user], postlogin={protocol: program}, root=root) as dc:
            if protocol == "imap":
                client = dc.imap(user)
                examine(client, "INBOX")
                client.logout()
            else:
                pop3 = dc.pop3(user)
                pop3.stat()
                pop3.quit()
        outside = to_outside(root, dumps)
        (env_file,) = outside.glob("env.[0-9]*")
        (proc_file,) = outside.glob("proc.[0-9]*")
        argv_line, env_line = env_file.read_text(encoding="utf-8").splitlines()
        environ = dict(item.split("=", 1) for item in env_line.split("\0"))
        proc = json.loads(proc_file.read_text(encoding="utf-8"))
        return Dumps(argv=argv_line.split("\0"), environ=environ, proc=proc)

    @pytest.mark.parametrize("protocol", ["imap", "pop3"])
    def test_environment(
        self, root: Path, user: ChrootUser, dumps: PurePosixPath, protocol: str
    ) -> None:
        """The environment is exactly USER, IP, LOCAL_IP, AUTH_MECH, (imap) AUTH_TOKEN, userdb fields, USERDB_KEYS."""
        seen = self.run_dumpers(root, user, dumps, protocol)
        expected = {
            "USER": user.name,
            "IP": "127.0.0.1",
            "LOCAL_IP": "127.0.0.1",
            "AUTH_MECH": "PLAIN",
            "SYSTEM_GROUPS_USER": user.name,
            "UID": str(user.uid),
            "GID": str(user.gid),
            "HOME": str(user.home),
            "USERDB_KEYS": "SYSTEM_GROUPS_USER UID HOME GID AUTH_MECH ",
        }
        if protocol == "imap":
            expected["AUTH_TOKEN"] = REDACTED
            expected["USERDB_KEYS"] += "AUTH_TOKEN "
        token = seen.environ.get("AUTH_TOKEN", "")
        environ = seen.environ
        if len(token) == 40 and all(c in "0123456789abcdef" for c in token):
            environ = {**environ, "AUTH_TOKEN": REDACTED}

        assert [str(dumps / "env.pl"), str(dumps / "proc.py"), SCRIPT_LOGIN] == seen.argv
        assert expected == environ
        assert [str(dumps / "proc.py"), SCRIPT_LOGIN] == seen.proc["argv"]
        assert {**seen.environ, "LC_CTYPE": "C.UTF-8"} == seen.proc["environ"]

    def test_identity_and_fds_without_d(
        self, root: Path, user: ChrootUser, dumps: PurePosixPath
    ) -> None:
        """Without ``-d`` the script runs as root, umask 077, fds 0-3 open, 0-2 non-blocking, 3 blocking."""
        proc = self.run_dumpers(root, user, dumps, "imap").proc
        fds = proc["fds"]

        assert (0, 0, [0], 0o077) == (proc["uid"], proc["gid"], proc["groups"], proc["umask"])
        assert {"0", "1", "2", "3"} <= set(fds)
        assert [True, True, True, False] == [fds[fd]["nonblock"] for fd in ("0", "1", "2", "3")]

    def test_identity_with_d(self, root: Path, user: ChrootUser, dumps: PurePosixPath) -> None:
        """With ``script-login -d`` (allowed on 2.4.1) the script runs as the user, with its groups."""
        seen = self.run_dumpers(root, user, dumps, "imap", "-d ")

        assert (user.uid, user.gid) == (seen.proc["uid"], seen.proc["gid"])
        assert sorted([user.gid, *(g.gid for g in user.groups)]) == seen.proc["groups"]
        assert (
            "SYSTEM_GROUPS_USER UID HOME GID AUTH_MECH AUTH_TOKEN " == seen.environ["USERDB_KEYS"]
        )


class TestNamespace:
    """Public namespaces added by a post-login script, the 2.4 way (``NAMESPACE+``)."""

    def test_public_namespace(self, rig: Rig) -> None:
        """``NAMESPACE+=s-sales`` adds ``Shared/sales/`` next to the inbox namespace, listed and examinable."""
        rig.postlogin(namespace_script(public_namespace(rig.flat, rig.index)))
        client = rig.imap()
        reply = namespace_reply(client)
        names = mailboxes(client)
        count = examine(client, "Shared/sales")
        inbox = examine(client, "INBOX")
        client.logout()
        pop3 = rig.dovecot.pop3(rig.user)
        stat = pop3.stat()
        pop3.quit()

        assert '(("" "/")) NIL (("Shared/sales/" "/"))' == reply
        assert {"INBOX", "Shared/sales"} == names
        assert SPOOL_MESSAGES == count
        assert INBOX_MESSAGES == inbox
        assert INBOX_MESSAGES == stat[0]
        assert to_outside(rig.dovecot.root, rig.index).is_dir()

    def test_list_children_hides_childless_prefix(self, rig: Rig) -> None:
        """``LIST=children`` works: a spool without children is not listed, yet EXAMINE opens it."""
        rig.postlogin(namespace_script(public_namespace(rig.flat, rig.index, LIST="children")))
        client = rig.imap()
        names = mailboxes(client)
        count = examine(client, "Shared/sales")
        client.logout()

        assert {"INBOX"} == names
        assert SPOOL_MESSAGES == count

    def test_list_children_lists_prefix_with_children(self, rig: Rig) -> None:
        """``LIST=children`` lists the prefix once the spool has a child mailbox."""
        rig.postlogin(namespace_script(public_namespace(rig.tree, rig.index, LIST="children")))
        client = rig.imap()
        names = mailboxes(client)
        client.logout()

        assert {"INBOX", "Shared/sales", "Shared/sales/sub"} == names

    @pytest.mark.parametrize(
        ("layout", "child"),
        [("", "Shared/sales/sub"), ("maildir++", "Shared/sales/sub"), ("fs", "Shared/sales/.sub")],
    )
    def test_layout(self, rig: Rig, layout: str, child: str) -> None:
        """MAILBOX_LIST_LAYOUT need not be set: maildir defaults to Maildir++ (``.sub`` is ``sub``)."""
        extra = {"MAILBOX_LIST_LAYOUT": layout} if layout else {}
        rig.postlogin(namespace_script(public_namespace(rig.tree, rig.index, **extra)))
        client = rig.imap()
        names = mailboxes(client)
        count = examine(client, child)
        client.logout()

        assert {"INBOX", "Shared/sales", child} == names
        assert 1 == count

    def test_home_relative_index_path(self, rig: Rig) -> None:
        """A leading ``~/`` in MAIL_INDEX_PATH from post-login is expanded to the user's home."""
        fields = public_namespace(rig.flat, PurePosixPath("~/idx-tilde/s-sales"))
        rig.postlogin(namespace_script(fields))
        client = rig.imap()
        count = examine(client, "Shared/sales")
        client.logout()

        assert SPOOL_MESSAGES == count
        assert to_outside(rig.dovecot.root, rig.user.home / "idx-tilde/s-sales").is_dir()

    def test_uppercase_name_fails_session(self, rig: Rig) -> None:
        """``NAMESPACE+=S-Sales`` (keys arrive lowercased) logs in, then the first command gets BYE."""
        rig.postlogin(namespace_script(public_namespace(rig.flat, rig.index, name="S-Sales")))
        mark = rig.dovecot.log_mark()
        client = rig.imap()
        try:
            with pytest.raises(imaplib.IMAP4.abort, match="Internal error occurred"):
                client.namespace()
        finally:
            client.shutdown()
        log = rig.dovecot.wait_for_log("Failed to get namespace", since=mark)

        assert (
            "Error: Failed to get namespace S-Sales: Filter namespace=S-Sales unexpectedly not found"
            " (invalid userdb or -o override settings?)"
        ) in log

    def test_namespace_without_plus_replaces_inbox(self, rig: Rig) -> None:
        """``NAMESPACE=`` (no ``+``) replaces the config's namespaces, so the session fails."""
        fields = public_namespace(rig.flat, rig.index)
        fields["NAMESPACE"] = fields.pop("NAMESPACE+")
        rig.postlogin(namespace_script(fields))
        mark = rig.dovecot.log_mark()
        client = rig.imap()
        try:
            with pytest.raises(imaplib.IMAP4.abort, match="Internal error occurred"):
                client.namespace()
        finally:
            client.shutdown()
        log = rig.dovecot.wait_for_log("namespace configuration error", since=mark)

        assert "Error: namespace configuration error: inbox=yes namespace missing" in log

    def test_unknown_keys_ignored(self, rig: Rig) -> None:
        """2.4.1 ignores a 2.3-style ``/LOCATION=`` and any unknown sub-key: no error, a debug line only."""
        fields = public_namespace(rig.flat, rig.index, LOCATION=f"maildir:{rig.tree}", BOGUS="1")
        rig.postlogin(namespace_script(fields))
        mark = rig.dovecot.log_mark()
        client = rig.imap()
        count = examine(client, "Shared/sales")
        client.logout()
        log = rig.dovecot.wait_for_log("Disconnected: Logged out", since=mark)

        assert SPOOL_MESSAGES == count
        assert (
            f"Debug: Added userdb setting: namespace/s-sales/location=maildir:{rig.tree}\n" in log
        )
        assert "Debug: Added userdb setting: namespace/s-sales/bogus=1\n" in log
        assert "Unknown setting" not in log
        assert [] == rig.dovecot.errors(mark)

    def test_location_only_falls_back_to_private_maildir(self, rig: Rig) -> None:
        """A 2.3-style namespace (``/LOCATION=``, no MAIL_DRIVER/MAIL_PATH) silently shows the user's own INBOX."""
        fields = public_namespace(rig.flat, rig.index, LOCATION=f"maildir:{rig.flat}")
        del fields["NAMESPACE/S-SALES/MAIL_DRIVER"], fields["NAMESPACE/S-SALES/MAIL_PATH"]
        rig.postlogin(namespace_script(fields))
        mark = rig.dovecot.log_mark()
        client = rig.imap()
        names = mailboxes(client)
        count = examine(client, "Shared/sales")
        client.logout()
        log = rig.dovecot.wait_for_log("Disconnected: Logged out", since=mark)

        assert {"INBOX", "Shared/sales"} == names
        assert INBOX_MESSAGES == count
        assert f"maildir++: root={rig.user.maildir}, index={rig.index}," in log
        assert [] == rig.dovecot.errors(mark)


class TestPython:
    """A venv inside the root, and wheels installed into it."""

    def test_venv_and_wheel(self, root: Path, tmp_path: Path) -> None:
        """install_wheel installs a wheel plus attrs and pathspec, and reinstalls a rebuilt wheel."""
        first = tmp_path / "first"
        first.mkdir()
        second = tmp_path / "second"
        second.mkdir()
        venv = python_venv(root)
        install_wheel(root, build_probe_wheel(first, "one"))
        install_wheel(root, build_probe_wheel(second, "two"))
        code = "import attrs, pathspec, nsprov_chroot_probe as p; print(p.VALUE)"
        output = chroot_run(root, f"{venv}/bin/python", "-I", "-c", code).stdout

        assert str(VENV) == venv
        assert "two\n" == output


def test_scratch_space_is_below_test_base(root: Path) -> None:
    """Scratch directories live below TEST_BASE inside the root and vanish afterwards."""
    with chroot_tempdir(root) as workdir:
        existed = to_outside(root, workdir).is_dir()

    assert existed
    assert TEST_BASE == workdir.parent
    assert not to_outside(root, workdir).exists()
