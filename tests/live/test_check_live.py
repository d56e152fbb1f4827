"""``nsprov check`` against real accounts, a real spool and a private Dovecot 2.3 configuration.

Each test builds a spool that contains the problems it is about (real UNIX users and groups
from :class:`~tests.live.harness.SystemAccounts`, real modes, owners and POSIX ACLs), writes
nsprov's configuration and a private ``dovecot.conf`` (``Dovecot(...).config_text()``), and
runs ``nsprov check --dovecot-config=<that file>``: the check asks the host's ``doveconf``
and ``dovecot --version`` (2.3.19.1), as an administrator's run would.  It runs both as the
installed ``nsprov`` program (a subprocess) and through :func:`nsprov._cli.check.main`, and the
tests assert each finding's code, severity and subject, and that a clean setup reports none.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from nsprov._cli.check import main as check_main
from nsprov._names import HASH_LENGTH, SLUG_LENGTH, entry_id
from nsprov._perms import PosixAcl

from .chroot24 import Dovecot24, chroot24_status, chroot_tempdir, write_file
from .harness import (
    USERADD,
    Dovecot,
    Group,
    SystemAccounts,
    User,
    _run,
    live_available,
    make_maildir,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.live

NSPROV = str(Path(sys.executable).with_name("nsprov"))
ACL_XATTR = "system.posix_acl_access"

Triple = tuple[str, str, str | None]


@attrs.frozen
class World:
    """Throwaway accounts shared by the tests of this module, and a base directory."""

    base: Path
    team: Group
    alice: User  # in team
    bob: User
    dave: User
    erin: User  # dave's uid (useradd -o)
    frank: User  # owns the stale directories


@pytest.fixture(name="world", scope="module")
def _world() -> Iterator[World]:
    if reason := live_available():
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="nsprov-check-live-", dir="/var/tmp"))
    base.chmod(0o755)
    with SystemAccounts(base) as accounts:
        team = accounts.group("team")
        alice = accounts.user("alice", groups=[team])
        bob = accounts.user("bob")
        dave = accounts.user("dave")
        erin = _same_uid(accounts, dave, "erin")
        frank = accounts.user("frank")
        yield World(base, team, alice, bob, dave, erin, frank)
    subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def _same_uid(accounts: SystemAccounts, owner: User, label: str) -> User:
    """A second account with *owner*'s uid and group (``useradd -o``), removed with the others."""
    name = accounts._real_name(label)
    home = accounts.base / name
    argv = [USERADD, "--no-create-home", "--no-user-group", "--home-dir", str(home)]
    argv += ["--gid", str(owner.gid), "--shell", "/usr/sbin/nologin", "-o", "-u", str(owner.uid)]
    _run([*argv, name])
    user = User(name=name, gid=owner.gid, uid=owner.uid, home=home, password="secret")
    accounts.users.append(user)
    home.mkdir(mode=0o700)
    os.chown(home, owner.uid, owner.gid)
    return user


@pytest.fixture(name="scratch")
def _scratch(world: World) -> Path:
    path = Path(tempfile.mkdtemp(prefix="t-", dir=world.base))
    path.chmod(0o755)
    return path


def maildir(path: Path, *, mode: int = 0o755, gid: int = 0) -> Path:
    return make_maildir(path, messages=1, owner=0, group=gid, mode=mode)


def grant(path: Path, uid: int) -> None:
    """Mode 0750 plus ``user:<uid>:r-x`` on *path*, its cur and new."""
    acl = PosixAcl(user_obj=7, group_obj=5, other=0, mask=5, users=[(uid, 5)])
    for p in (path, path / "cur", path / "new"):
        os.setxattr(p, ACL_XATTR, acl.to_xattr())


def dovecot_conf(
    where: Path,
    *,
    postlogin: dict[str, str] | None = None,
    extra: str = "",
    separator: str = "/",
    stat_dirs: bool = True,
) -> Path:
    """A private dovecot.conf, as the live harness writes it, at *where*."""
    text = Dovecot(
        where.parent, [], postlogin=postlogin, extra_conf=extra, private_separator=separator
    ).config_text()
    if not stat_dirs:
        text = text.replace("maildir_stat_dirs = yes", "maildir_stat_dirs = no")
    where.write_text(text)
    return where


def wiring(config: Path, *, protocol: bool = True) -> dict[str, str]:
    return {
        p: f"{NSPROV} post-login --config={config}" + (f" --protocol={p}" if protocol else "")
        for p in ("imap", "pop3")
    }


#: ``--state=FILE`` for runs that name none: the module's own file, not the system's.
STATE: list[str] = []


@pytest.fixture(autouse=True, scope="module")
def _state(world: World) -> None:
    STATE[:] = [f"--state={world.base}/check-state.json"]


def _with_state(args: tuple[str, ...]) -> list[str]:
    return [*args, *([] if any(a.startswith("--state=") for a in args) else STATE)]


def run_main(*args: str) -> tuple[int, dict[str, Any]]:
    """``nsprov check ARGS --format=json`` through :func:`nsprov._cli.check.main`."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = check_main([*_with_state(args), "--format=json"])
    return status, json.loads(out.getvalue())


def run_cli(*args: str) -> tuple[int, dict[str, Any]]:
    """``nsprov check ARGS --format=json`` as the installed program."""
    proc = subprocess.run(
        [NSPROV, "check", *_with_state(args), "--format=json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "" == proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def triples(doc: dict[str, Any]) -> set[Triple]:
    return {(f["code"], f["severity"], f["subject"]) for f in doc["findings"]}


def pairs(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["code"], f["severity"]) for f in doc["findings"]}


def message(doc: dict[str, Any], code: str) -> str:
    return str(next(f["message"] for f in doc["findings"] if f["code"] == code))


class TestClean:
    """A setup without problems."""

    def test_no_findings(self, world: World, scratch: Path) -> None:
        """Wired as shipped, with a readable spool: exit 0 and no finding, both ways."""
        spool = scratch / "spool"
        spool.mkdir(mode=0o755)
        maildir(spool / "sales")
        maildir(spool / "team", mode=0o750, gid=world.team.gid)
        cfg = scratch / "nsprov.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n\n[deny]\nusers = ["guest"]\n')
        conf = dovecot_conf(scratch / "dovecot.conf", postlogin=wiring(cfg))
        args = (f"--config={cfg}", f"--dovecot-config={conf}")
        users = (f"--user={world.alice.name}", f"--user={world.bob.name}")

        cli_status, cli = run_cli(*args, *users)
        main_status, doc = run_main(*args, *users)

        assert (0, 0) == (cli_status, main_status)
        assert set() == triples(cli) == triples(doc)
        assert [(world.alice.name, 2, 2), (world.bob.name, 1, 1)] == [
            (u["user"], u["found"], u["served"]) for u in doc["users"]
        ]
        assert ("2.3", True) == (doc["dovecot"]["version"], doc["dovecot"]["doveconf"])

    def test_enumerated_users(self, world: World, scratch: Path) -> None:
        """Without --user, every user in Dovecot's uid range who gets a namespace is reported."""
        spool = scratch / "spool"
        spool.mkdir(mode=0o755)
        maildir(spool / "team", mode=0o750, gid=world.team.gid)
        cfg = scratch / "nsprov.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n')
        low = min(world.alice.uid, world.bob.uid)
        high = max(world.alice.uid, world.bob.uid)
        extra = f"first_valid_uid = {low}\nlast_valid_uid = {high}\n"
        conf = dovecot_conf(scratch / "dovecot.conf", postlogin=wiring(cfg))
        conf.write_text(conf.read_text().replace("first_valid_uid = 100\n", extra))

        _, doc = run_main(f"--config={cfg}", f"--dovecot-config={conf}")

        names = [u["user"] for u in doc["users"]]
        assert world.alice.name in names
        assert world.bob.name not in names


class TestSpoolProblems:
    """A spool with every kind of spool problem, checked against a clean Dovecot."""

    @pytest.fixture(name="spools")
    def _spools(self, world: World, scratch: Path) -> dict[str, Path]:
        spool = scratch / "spool"
        spool.mkdir()
        os.chown(spool, 0, world.team.gid)
        spool.chmod(0o775)
        maildir(spool / "sales")
        maildir(spool / "team", mode=0o770, gid=world.team.gid)
        grant(maildir(spool / "acl-box", mode=0o750), world.bob.uid)
        maildir(spool / "Case")
        maildir(spool / "case")
        maildir(spool / os.fsdecode(b"bad\xff"))
        (spool / "link").symlink_to("sales")
        (spool / ".hidden").mkdir()
        (spool / "README").write_text("not a mailbox\n")
        (spool / "nocur").mkdir()
        (spool / "old.mbox").write_text("From sender@example.org Mon Jan  1 00:00:00 2024\n")
        (maildir(spool / "dotfile") / ".DS_Store").write_text("x")
        maildir(spool / "secret", mode=0o700)
        maildir(spool / "open", mode=0o777)
        maildir(spool / "skipme")
        closed = scratch / "closed"
        closed.mkdir(mode=0o700)
        closed.chmod(0o700)
        (closed / "spool").mkdir()
        maildir(closed / "spool" / "hidden")
        ctl = scratch / "ctl"
        ctl.mkdir(mode=0o755)
        maildir(ctl / "shared", mode=0o777)
        bad = scratch / "badprefix"
        bad.mkdir(mode=0o755)
        maildir(bad / "box")
        return {"spool": spool, "closed": closed, "ctl": ctl, "bad": bad}

    def test_findings(self, world: World, scratch: Path, spools: dict[str, Path]) -> None:
        """Every spool problem is reported with its code, severity and subject, and nothing else."""
        spool, closed, ctl, bad = spools["spool"], spools["closed"], spools["ctl"], spools["bad"]
        cfg = scratch / "nsprov.toml"
        cfg.write_text(
            f'[[spool]]\npath = "{spool}"\nexclude = ["skipme/"]\n\n'
            f'[[spool]]\npath = "{closed}/spool"\nprefix = "Closed/{{name}}/"\n\n'
            f'[[spool]]\npath = "{ctl}"\nprefix = "Ctl/{{name}}/"\ncontrol = ""\n\n'
            f'[[spool]]\npath = "{bad}"\nprefix = "Bad/{{name}}"\n'
        )
        conf = dovecot_conf(scratch / "dovecot.conf", postlogin=wiring(cfg), stat_dirs=False)
        args = (f"--config={cfg}", f"--dovecot-config={conf}")
        users = (f"--user={world.alice.name}", f"--user={world.bob.name}")

        status, doc = run_main(*args, *users)
        cli_status, cli = run_cli(*args, *users)

        s = str(spool)
        assert {
            ("spool-writable", "warning", s),
            ("mailbox-writable", "warning", s),
            ("chgrp-trap", "warning", f"{s}/acl-box"),
            ("case-collision", "warning", f"{s}/case"),
            ("unservable-name", "warning", f"{s}/bad\\xff"),
            ("symlink", "warning", f"{s}/link"),
            ("dot-entry", "info", s),
            ("not-a-directory", "info", s),
            ("not-a-maildir", "warning", f"{s}/nocur"),
            ("unsupported-format", "warning", f"{s}/old.mbox"),
            ("dot-file-in-mailbox", "warning", f"{s}/dotfile"),
            ("no-access", "info", s),
            ("excluded", "info", s),
            ("spool-not-traversable", "error", f"{closed}/spool"),
            ("control-in-spool", "error", str(ctl)),
            ("mailbox-writable", "warning", str(ctl)),
            ("template-invalid", "error", "spool[4]"),
        } == triples(doc)
        assert (1, 1) == (status, cli_status)
        assert triples(doc) == triples(cli)
        assert f"user {world.bob.name}" in message(doc, "chgrp-trap")
        assert f"ACL user:{world.bob.name}" in message(doc, "chgrp-trap")
        assert "secret" in message(doc, "no-access")
        assert "open (group root, everybody (other))" in message(doc, "mailbox-writable")
        assert f"group {world.team.name}" in message(doc, "spool-writable")
        assert str(closed) in message(doc, "spool-not-traversable")


class TestDovecotProblems:
    """A clean spool, checked against a Dovecot configuration with every Dovecot problem."""

    def test_findings(self, world: World, scratch: Path) -> None:
        """Dialect, separator, namespace, wiring and ACL problems are each reported."""
        spool = scratch / "spool"
        spool.mkdir(mode=0o755)
        sales = maildir(spool / "sales")
        cfg = scratch / "nsprov.toml"
        cfg.write_text(
            f'[[spool]]\npath = "{spool}"\n\n[dovecot]\nversion = "2.4"\nacl_plugin = true\n\n'
            '[deny]\nusers = ["guest"]\n'
        )
        extra = (
            "service imap-postlogin {\n  user = nobody\n}\n"
            "namespace clash {\n  type = public\n  prefix = Shared/sales/\n  separator = .\n"
            "  location = maildir:/nonexistent\n}\n"
            "mail_plugins = $mail_plugins acl\nplugin {\n  acl = vfile\n}\n"
        )
        conf = dovecot_conf(
            scratch / "dovecot.conf",
            postlogin={"imap": wiring(cfg, protocol=False)["imap"]},
            extra=extra,
            separator=".",
        )
        args = (f"--config={cfg}", f"--dovecot-config={conf}", f"--user={world.alice.name}")

        status, doc = run_main(*args)
        cli_status, cli = run_cli(*args)

        assert {
            ("dialect-mismatch", "error", "[dovecot] version"),
            ("separator-mismatch", "error", "namespace inbox"),
            ("separator-mismatch", "error", "namespace clash"),
            ("namespace-collision", "error", "namespace clash"),
            ("namespace-nested", "warning", "spool[1].prefix"),  # Shared/sales/ in Shared/{name}/
            ("wiring-no-protocol", "warning", "service imap-postlogin"),
            ("wiring-service-user", "warning", "service imap-postlogin"),
            ("wiring-missing", "error", "service pop3"),
            ("acl-no-grants", "warning", str(spool)),
        } == triples(doc)
        assert (1, 1) == (status, cli_status)
        assert triples(doc) == triples(cli)
        assert "Dovecot 2.3 is installed" in message(doc, "dialect-mismatch")

        (sales / "dovecot-acl").write_text("anyone lr\n")
        _, granted = run_main(*args)

        assert ("acl-no-grants", "warning") not in pairs(granted)

    def test_protocol_mismatch(self, world: World, scratch: Path) -> None:
        """POP3 handed to the IMAP post-login service is an error."""
        spool = scratch / "spool"
        spool.mkdir(mode=0o755)
        maildir(spool / "sales")
        cfg = scratch / "nsprov.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n\n[deny]\nusers = ["guest"]\n')
        extra = "service pop3 {\n  executable = pop3 imap-postlogin\n}\n"
        conf = dovecot_conf(
            scratch / "dovecot.conf", postlogin={"imap": wiring(cfg)["imap"]}, extra=extra
        )

        status, doc = run_main(
            f"--config={cfg}", f"--dovecot-config={conf}", f"--user={world.alice.name}"
        )

        assert 1 == status
        assert {("wiring-protocol-mismatch", "error", "service imap-postlogin")} == triples(doc)


class TestDovecot24:
    """The check reads real Dovecot 2.4 doveconf output (the 2.4 chroot)."""

    def test_24_installed(self, world: World, scratch: Path) -> None:
        """The 2.3 dialect against Dovecot 2.4 is an error, as are its separator and wiring gaps."""
        root, reason = chroot24_status()
        if root is None:
            pytest.skip(reason)
        spool = scratch / "spool"
        spool.mkdir(mode=0o755)
        maildir(spool / "sales")
        cfg = scratch / "nsprov.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n')
        doveconf = scratch / "doveconf24"
        doveconf.write_text(f'#!/bin/sh\nexec /usr/sbin/chroot {root} /usr/bin/doveconf "$@"\n')
        doveconf.chmod(0o755)
        with chroot_tempdir(root) as inside:
            conf = Dovecot24(inside, [], private_separator=".", root=root).config()
            write_file(root, inside / "dovecot.conf", conf)

            status, doc = run_main(
                f"--config={cfg}",
                f"--doveconf={doveconf}",
                f"--dovecot-config={inside}/dovecot.conf",
                f"--user={world.alice.name}",
            )

        assert 1 == status
        assert ("2.4", "doveconf") == (doc["dovecot"]["version"], doc["dovecot"]["source"])
        assert {
            ("dialect-mismatch", "error", "[dovecot] version"),
            ("separator-mismatch", "error", "namespace inbox"),
            ("wiring-missing", "error", "service imap"),
        } == triples(doc)


class TestUsers:
    """Per-user findings: virtual users, namespace.max, kernel limits, serve budget."""

    def test_virtual_users(self, world: World, scratch: Path) -> None:
        """Two accounts with one uid are one warning naming both, even when only one is checked."""
        spool = scratch / "spool"
        spool.mkdir(mode=0o755)
        maildir(spool / "sales")
        cfg = scratch / "nsprov.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n')
        conf = dovecot_conf(scratch / "dovecot.conf", postlogin=wiring(cfg))
        args = (f"--config={cfg}", f"--dovecot-config={conf}")

        _, both = run_main(*args, f"--user={world.dave.name}", f"--user={world.erin.name}")
        status, one = run_cli(*args, f"--user={world.erin.name}")

        subject = f"uid {world.dave.uid}"
        assert {("virtual-users", "warning", subject)} == triples(both) == triples(one)
        assert f"{world.dave.name}, {world.erin.name}" in message(both, "virtual-users")
        assert 0 == status

    def test_namespace_max(self, world: World, scratch: Path) -> None:
        """More readable mailboxes than namespace.max is a warning with the counts."""
        spool = scratch / "spool"
        spool.mkdir(mode=0o755)
        for i in range(5):
            maildir(spool / f"box{i}")
        cfg = scratch / "nsprov.toml"
        cfg.write_text(f'[namespace]\nmax = 3\n\n[[spool]]\npath = "{spool}"\n')
        conf = dovecot_conf(scratch / "dovecot.conf", postlogin=wiring(cfg))

        status, doc = run_main(
            f"--config={cfg}", f"--dovecot-config={conf}", f"--user={world.alice.name}"
        )

        assert 0 == status
        assert {("namespace-max", "warning", f"user {world.alice.name}")} == triples(doc)
        assert [(5, 3)] == [(u["found"], u["served"]) for u in doc["users"]]

    def test_many_mailboxes(self, world: World, scratch: Path) -> None:
        """1,500 readable mailboxes exceed the kernel's limits and the serve reply budget."""
        spool = scratch / "spool"
        spool.mkdir(mode=0o755)
        for i in range(1500):
            box = spool / f"box{i:04d}"
            box.mkdir()
            (box / "cur").mkdir()
            (box / "new").mkdir()
        cfg = scratch / "nsprov.toml"
        cfg.write_text(f'[namespace]\nmax = 2000\n\n[[spool]]\npath = "{spool}"\n')
        serve = "userdb {\n  driver = dict\n  args = /etc/dovecot/nsprov-userdb.conf.ext\n}\n"
        conf = dovecot_conf(scratch / "dovecot.conf", extra=serve)

        status, doc = run_main(
            f"--config={cfg}", f"--dovecot-config={conf}", f"--user={world.alice.name}"
        )

        subject = f"user {world.alice.name}"
        assert 0 == status
        assert {("env-limit", "warning", subject), ("serve-budget", "warning", subject)} == triples(
            doc
        )
        user = doc["users"][0]
        assert 1500 == user["found"]
        assert 0 < user["served"] < 1500
        assert user["userdb_keys_bytes"] <= 128 * 1024
        assert user["serve"]["fits"] < user["serve"]["total"] == user["found"]  # no env limit there
        assert f"only {user['served']} of" in message(doc, "env-limit")


#: A directory name of this nsprov's scheme that no entry has, and one of another scheme.
STALE = "s-" + "gone"[:SLUG_LENGTH] + "-" + "abcdefgh234567"[:HASH_LENGTH]
LEFT = "s-" + "left"[:SLUG_LENGTH] + "-" + "abcdefgh234567"[:HASH_LENGTH]
OTHER = "s-old-" + "a" * (HASH_LENGTH + 2)


class TestStale:
    """Stale per-user directories, and --clean-stale removing them as the user."""

    def test_stale_and_clean(self, world: World, scratch: Path) -> None:
        """Stale directories are listed; --clean-stale removes them as the user, nothing else."""
        frank = world.frank
        spool = scratch / "spool"
        spool.mkdir(mode=0o755)
        maildir(spool / "sales")
        maildir(spool / "secret", mode=0o700)
        cfg = scratch / "nsprov.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n')
        conf = dovecot_conf(scratch / "dovecot.conf", postlogin=wiring(cfg))
        nsp = frank.home / ".nsprov"
        current = [
            nsp / f"s-{entry_id(os.fsencode(str(spool)), raw)[0]}" for raw in (b"sales", b"secret")
        ]
        outside = scratch / "outside"
        outside.write_text("keep me\n")
        os.chown(outside, frank.uid, frank.gid)
        for d in (nsp, *current, nsp / STALE, nsp / LEFT, nsp / OTHER):
            d.mkdir(mode=0o700)
            os.chown(d, frank.uid, frank.gid)
        (nsp / STALE / "link").symlink_to(outside)
        os.chown(nsp / STALE / "link", frank.uid, frank.gid, follow_symlinks=False)
        rootdir = nsp / LEFT / "rootdir"
        rootdir.mkdir(mode=0o755)
        (rootdir / "f").write_text("root's\n")
        args = (f"--config={cfg}", f"--dovecot-config={conf}", f"--user={frank.name}")

        status, listed = run_main(*args)
        clean_status, cleaned = run_cli(*args, "--clean-stale")

        assert (0, 0) == (status, clean_status)
        no_access = ("no-access", "info", str(spool))  # secret: frank may not read it
        assert {
            ("stale-dir", "info", str(nsp / STALE)),
            ("stale-dir", "info", str(nsp / LEFT)),
            ("stale-other-scheme", "warning", str(nsp / OTHER)),
            no_access,
        } == triples(listed)
        assert {
            ("stale-removed", "info", str(nsp / STALE)),
            ("stale-remove-failed", "warning", str(nsp / LEFT)),
            ("stale-other-scheme", "warning", str(nsp / OTHER)),
            no_access,
        } == triples(cleaned)
        assert "Permission denied" in message(cleaned, "stale-remove-failed")
        assert not (nsp / STALE).exists()
        assert (rootdir / "f").exists()
        assert "keep me\n" == outside.read_text()
        assert all(d.is_dir() for d in (*current, nsp / OTHER))

    def test_empty_spool(self, world: World, scratch: Path) -> None:
        """An empty spool (an unmounted mount point) makes --clean-stale remove nothing."""
        frank = world.frank
        spool = scratch / "spool"
        spool.mkdir(mode=0o755)
        cfg = scratch / "nsprov.toml"
        template = f"{scratch}/idx/{{user}}/s-{{id}}"
        cfg.write_text(
            f'[[spool]]\npath = "{spool}"\nindex = "{template}"\ncontrol = "{template}"\n'
        )
        conf = dovecot_conf(scratch / "dovecot.conf", postlogin=wiring(cfg))
        nsp = scratch / "idx" / frank.name
        nsp.parent.mkdir(mode=0o755)
        dirs = [nsp / f"s-{entry_id(os.fsencode(str(spool)), raw)[0]}" for raw in (b"a", b"b")]
        for d in (nsp, *dirs):
            d.mkdir(mode=0o700)
            os.chown(d, frank.uid, frank.gid)
        args = (f"--config={cfg}", f"--dovecot-config={conf}", f"--user={frank.name}")

        status, cleaned = run_cli(*args, "--clean-stale")

        assert 0 == status
        assert {("stale-suspect", "warning", str(nsp))} == triples(cleaned)
        assert all(d.is_dir() for d in dirs)
        status, forced = run_cli(*args, "--clean-stale", "--force")
        assert {("stale-removed", "info", str(d)) for d in dirs} == triples(forced)
        assert not any(d.exists() for d in dirs)

    def stale_setup(
        self, world: World, scratch: Path, names: str, opened: str
    ) -> tuple[Path, list[str], dict[str, Path]]:
        """A spool with mailboxes *names*, and frank's directories of those he *opened*."""
        frank = world.frank
        spool = scratch / "spool"
        spool.mkdir(mode=0o755)
        for name in names:
            maildir(spool / name)
        cfg = scratch / "nsprov.toml"
        template = f"{scratch}/idx/{{user}}/s-{{id}}"
        cfg.write_text(
            f'[[spool]]\npath = "{spool}"\nindex = "{template}"\ncontrol = "{template}"\n'
        )
        conf = dovecot_conf(scratch / "dovecot.conf", postlogin=wiring(cfg))
        nsp = scratch / "idx" / frank.name
        nsp.parent.mkdir(mode=0o755)
        nsp.mkdir(mode=0o700)
        os.chown(nsp, frank.uid, frank.gid)
        dirs = {}
        for name in opened:
            d = dirs[name] = nsp / f"s-{entry_id(os.fsencode(str(spool)), name.encode())[0]}"
            d.mkdir(mode=0o700)
            os.chown(d, frank.uid, frank.gid)
        args = [f"--config={cfg}", f"--dovecot-config={conf}", f"--user={frank.name}"]
        return spool, [*args, f"--state={scratch}/state/check.json"], dirs

    def test_other_filesystem(self, world: World, scratch: Path) -> None:
        """A file system mounted over the spool since the last check makes --clean-stale remove nothing."""
        spool, args, dirs = self.stale_setup(world, scratch, "abcd", "abcd")

        first, recorded = run_cli(*args)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0755", "nsprov-test", str(spool)], check=True
        )
        try:
            for name in "abc":  # the other file system has most, not all, of the mailboxes
                maildir(spool / name)
            status, cleaned = run_cli(*args, "--clean-stale")
            kept = dirs["d"].is_dir()
            status_forced, forced = run_cli(*args, "--clean-stale", "--force")
        finally:
            subprocess.run(["umount", str(spool)], check=True)

        assert (0, 0, 0) == (first, status, status_forced)
        assert set() == triples(recorded)
        assert {("stale-suspect", "warning", str(dirs["d"].parent))} == triples(cleaned)
        assert "another file system" in message(cleaned, "stale-suspect")
        assert kept
        assert {("stale-removed", "info", str(dirs["d"]))} == triples(forced)
        assert all(dirs[name].is_dir() for name in "abc")

    def test_lost_most_entries(self, world: World, scratch: Path) -> None:
        """A spool that lost most of its entries since the last check makes --clean-stale remove nothing."""
        spool, args, dirs = self.stale_setup(world, scratch, "abcdef", "ab")

        run_cli(*args)
        for name in "bcdef":
            subprocess.run(["rm", "-rf", str(spool / name)], check=True)
        status, cleaned = run_cli(*args, "--clean-stale")

        assert 0 == status
        assert {("stale-suspect", "warning", str(dirs["b"].parent))} == triples(cleaned)
        assert "has 1 entries, 6 at the last check" in message(cleaned, "stale-suspect")
        assert all(d.is_dir() for d in dirs.values())
