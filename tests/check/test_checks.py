"""``nsprov check``: each check on constructed inputs, the report, the command.

No Dovecot is needed: doveconf output is given as text (or printed by a small
script standing in for doveconf), identities are synthetic, spools are built in
temporary directories, and ACLs come from a fake ``getxattr``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from hashlib import blake2b
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from nsprov import _fast as nsprov_fast
from nsprov._check import (
    CODES,
    DovecotConf,
    Finding,
    Report,
    SpoolMark,
    UserReport,
    World,
    acl_grants,
    acl_required,
    base_environ,
    cache_marks,
    case_collisions,
    changed_spools,
    check_acl_plugin,
    check_conf_namespaces,
    check_mail_driver,
    check_mailboxes,
    check_prefix_overlap,
    check_scan_slow,
    check_separator,
    check_templates,
    check_traversal,
    check_trusted_files,
    check_user,
    check_version,
    check_virtual,
    check_wiring,
    clean_stale_as,
    config_findings,
    find_stale,
    load_marks,
    main,
    major_minor,
    no_access_findings,
    remove_dirs,
    render_json,
    render_table,
    run_checks,
    scan_structure,
    select_users,
    spool_marks,
    store_marks,
    structure_findings,
    use_colour,
)
from nsprov._cli import main as cli_main
from nsprov._config import config_from_mapping, load_config
from nsprov._env import EnvLimits
from nsprov._identity import MailUser
from nsprov._names import HASH_LENGTH, NAMING_SCHEME, SLUG_LENGTH, entry_hash, entry_id
from nsprov._perms import Identity, PosixAcl
from nsprov._postlogin import escape
from nsprov._scan import Fs
from nsprov._serve import ReplyBudget
from nsprov.exceptions import ConfigError

from ..strategies import HOSTILE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from nsprov._config import Config

ROOT = Path(__file__).parent.parent.parent
DOCS = ROOT / "docs" / "check.md"
EXAMPLE_23 = ROOT / "examples" / "dovecot-2.3" / "10-master.conf"
NSPROV = "/usr/local/bin/nsprov"
CONFIG = "/etc/nsprov/nsprov.toml"

ALICE = MailUser(user="alice", home="/home/alice", identity=Identity(uid=70001, gid=70001))
BOB = MailUser(user="bob", home="/home/bob", identity=Identity(uid=70002, gid=70002))
TEAM_GID = 70100
MEMBER = MailUser(
    user="member", home="/home/member", identity=Identity(uid=70003, gid=70003, groups={TEAM_GID})
)

#: Per-user directory names: one of the current scheme for no entry, one of another scheme.
STALE = "s-" + "gone"[:SLUG_LENGTH] + "-" + "abcdefgh234567"[:HASH_LENGTH]
LEFT = "s-" + "left"[:SLUG_LENGTH] + "-" + "abcdefgh234567"[:HASH_LENGTH]
OTHER = "s-old-" + "a" * (HASH_LENGTH + 2)
HEADER_23 = "# 2.3.19.1 (9b53102964): /etc/dovecot/dovecot.conf\n# OS: Linux x86_64\n"


def codes(findings: Sequence[Finding]) -> set[tuple[str, str]]:
    return {(f.code, f.severity) for f in findings}


def maildir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir()
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir()
        (path / sub).chmod(mode)
    path.chmod(mode)
    return path


def make_config(spool: Path, data: dict[str, Any] | None = None, **spool_keys: Any) -> Config:
    return config_from_mapping({**(data or {}), "spool": [{"path": str(spool), **spool_keys}]})


def wired(
    extra: str = "", *, example: str | None = None, protocols: str = "imap pop3"
) -> DovecotConf:
    """The shipped 2.3 wiring (nsprov at NSPROV, config at CONFIG) as doveconf would print it."""
    text = EXAMPLE_23.read_text() if example is None else example
    return DovecotConf.parse(f"{HEADER_23}protocols = {protocols}\n{text}\n{extra}\n")


def fake_acls(acls: dict[bytes, PosixAcl]) -> Fs:
    """The real file system, with POSIX ACLs from *acls* instead of the files' own."""

    def getxattr(path: bytes, _name: str, **_kw: object) -> bytes:
        if path in acls:
            return acls[path].to_xattr()
        raise OSError(errno.ENODATA, "no ACL")

    # Faked ACLs are path-based: the scanner's descriptor re-check would read the real ones.
    return Fs(getxattr=getxattr, anchored=None)


@pytest.fixture(name="base")
def _base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nsprov-check-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture(name="spool")
def _spool(base: Path) -> Path:
    spool = base / "spool"
    spool.mkdir()
    spool.chmod(0o755)
    return spool


class TestFinding:
    """Findings carry a known code and a valid severity."""

    def test_as_dict(self) -> None:
        """The JSON form has every field."""
        f = Finding(severity="info", code="dot-entry", message="m", fix="x", subject="/s")

        assert {
            "severity": "info",
            "code": "dot-entry",
            "subject": "/s",
            "message": "m",
            "fix": "x",
        } == f.as_dict()

    def test_unknown_code(self) -> None:
        """A code outside CODES is refused."""
        with pytest.raises(ValueError, match="unknown finding code"):
            Finding(severity="info", code="made-up", message="m", fix="x")

    def test_unknown_severity(self) -> None:
        """A severity other than error, warning, info is refused."""
        with pytest.raises(ValueError, match="severity"):
            Finding(severity="fatal", code="dot-entry", message="m", fix="x")  # type: ignore[arg-type]


class TestDocs:
    """docs/check.md documents exactly the codes the check emits."""

    def test_every_code_documented(self) -> None:
        """Each code has a heading with a severity in docs/check.md, and no other code does."""
        text = DOCS.read_text()
        sections = re.split(r"^#### ", text, flags=re.MULTILINE)[1:]
        documented = {}
        for section in sections:
            code = re.match(r"`([a-z0-9-]+)`", section)
            assert code is not None, section[:40]
            severity = re.search(r"\*Severity:\* (error|warning|info)", section)
            assert severity is not None, code.group(1)
            assert "*Fix:*" in section, code.group(1)
            documented[code.group(1)] = severity.group(1)

        assert sorted(CODES) == sorted(documented)

    def test_naming_scheme_is_the_hash_personalisation(self) -> None:
        """NAMING_SCHEME is the BLAKE2b person string of nsprov._names."""
        raw = b"/var/spool/mail/Shared\0sales"
        digest = blake2b(raw, digest_size=10, person=NAMING_SCHEME.encode()).digest()
        number = int.from_bytes(digest, "big")
        alphabet = "abcdefghijklmnopqrstuvwxyz234567"
        expected = "".join(
            alphabet[(number >> (80 - 5 * (i + 1))) & 31] for i in range(HASH_LENGTH)
        )

        assert expected == entry_hash(b"/var/spool/mail/Shared", b"sales")


class TestDovecotConf:
    """doveconf -n output of 2.3 and 2.4 parses into settings and sections."""

    def test_23(self) -> None:
        """Header version, quoted values, sections, plugins per protocol, global ACLs."""
        conf = DovecotConf.parse(
            HEADER_23 + 'first_valid_uid = 1000\nlast_valid_uid = 2000\nmail_plugins = " acl"\n'
            "maildir_stat_dirs = yes\nnamespace inbox {\n  inbox = yes\n  prefix = \n}\n"
            "plugin {\n  acl = vfile:/etc/dovecot/acls:cache_secs=300\n}\n"
            'protocol imap {\n  mail_plugins = " acl imap_acl"\n}\nprotocols = imap lmtp\n'
            "userdb {\n  driver = passwd\n}\nuserdb {\n  args = /x\n  driver = dict\n}\n}\n"
        )

        assert "2.3.19.1" == conf.version
        assert (1000, 2000, True) == (
            conf.first_valid_uid,
            conf.last_valid_uid,
            conf.maildir_stat_dirs,
        )
        assert ("imap", "lmtp") == conf.protocols
        assert {"acl", "imap_acl"} == conf.plugins("imap")
        assert {"acl"} == conf.plugins("pop3")
        assert "/etc/dovecot/acls" == conf.acl_global
        assert ["passwd", "dict"] == conf.userdb_drivers
        assert ["inbox"] == [ns.name for ns in conf.namespaces]
        assert "" == conf.namespaces[0].get("prefix", "unset")

    def test_24(self) -> None:
        """2.4's boollist mail_plugins, named userdb sections and acl_global_path."""
        conf = DovecotConf.parse(
            "# 2.4.1-4 (7d8c0e5759): /etc/dovecot/dovecot.conf\n"
            "mail_plugins {\n  acl = yes\n  quota = no\n}\nacl_global_path = /etc/dovecot/acl\n"
            "userdb passwd {\n}\n"
        )

        assert ("2.4.1", "2.4") == (conf.version, major_minor(conf.version or ""))
        assert {"acl"} == conf.plugins("imap")
        assert "/etc/dovecot/acl" == conf.acl_global
        assert ["passwd"] == conf.userdb_drivers

    def test_defaults(self) -> None:
        """Settings doveconf -n leaves out have Dovecot's defaults."""
        conf = DovecotConf.parse("first_valid_uid = junk\n")

        assert (None, 500, 0, False) == (
            conf.version,
            conf.first_valid_uid,
            conf.last_valid_uid,
            conf.maildir_stat_dirs,
        )
        assert ("imap", "pop3") == conf.protocols
        assert conf.acl_global is None
        assert major_minor("unknown") is None


class TestConfig:
    """Configuration problems become config-error findings naming the key."""

    def test_problems(self) -> None:
        """Unknown keys and wrong types are errors with the key path as subject."""
        with pytest.raises(ConfigError) as info:
            config_from_mapping(
                {"spool": [{"path": "/s", "prefx": "x", "hidden": "yes"}]}, source="/c.toml"
            )

        findings = config_findings("/c.toml", info.value.problems)

        assert [
            ("spool[1].prefx", "unknown key"),
            ("spool[1].hidden", "expected a boolean, got a string"),
        ] == [(f.subject, f.message) for f in findings]
        assert {("config-error", "error")} == codes(findings)
        assert "Remove spool[1].prefx" in findings[0].fix

    def test_unreadable_and_invalid(self, base: Path) -> None:
        """A missing file and broken TOML name the file and say what to do."""
        bad = base / "bad.toml"
        bad.write_text("[[spool]\n")
        problems = []
        for path in (str(base / "missing.toml"), str(bad)):
            with pytest.raises(ConfigError) as info:
                load_config(path)
            problems += config_findings(path, info.value.problems)

        assert [str(base / "missing.toml"), str(bad)] == [f.subject for f in problems]
        assert "--config=PATH" in problems[0].fix
        assert "TOML syntax" in problems[1].fix

    def test_other_messages(self) -> None:
        """Missing keys and bad values get a fix that names the key."""
        findings = config_findings(
            "/c.toml",
            [
                "/c.toml: spool[1].path: required key missing",
                "/c.toml: spool[1].list: must be yes, no or children",
            ],
        )

        assert ["Add spool[1].path.", "Change spool[1].list: must be yes, no or children."] == [
            f.fix for f in findings
        ]


class TestTemplates:
    """Templates that validate but render output Dovecot refuses."""

    def test_good(self, spool: Path) -> None:
        """The defaults render valid namespaces."""
        assert [] == check_templates(make_config(spool))

    def test_prefix_without_separator(self, spool: Path) -> None:
        """A prefix that does not end with the separator is an error naming the spool."""
        findings = check_templates(make_config(spool, prefix="Shared/{name}"))

        assert [("template-invalid", "error", "spool[1]")] == [
            (f.code, f.severity, f.subject) for f in findings
        ]

    def test_shared_index(self, spool: Path) -> None:
        """A per-user path without {home} or {user} is an error per key."""
        findings = check_templates(
            make_config(spool, index="/var/lib/nsprov/{ns}", control="/var/lib/nsprov/{ns}")
        )

        assert ["spool[1].index", "spool[1].control"] == [f.subject for f in findings]
        assert {("template-not-per-user", "error")} == codes(findings)

    def test_index_inside_spool(self, spool: Path) -> None:
        """A per-user path inside the spool is an error."""
        findings = check_templates(make_config(spool, index=f"{spool}/{{user}}/{{ns}}"))

        assert [("template-invalid", "error")] == [(f.code, f.severity) for f in findings]
        assert "inside the spool" in findings[0].message


class TestStructure:
    """The structural scan: every skip reason, case collisions, missing spools."""

    def test_every_reason(self, spool: Path) -> None:
        """Each kind of entry gets its code and severity."""
        maildir(spool / "sales")
        maildir(spool / "Sales")
        maildir(spool / "secret", 0o700)
        maildir(spool / os.fsdecode(b"bad\xff"))
        maildir(spool / "drafts")
        (spool / "nocur").mkdir()
        (spool / "mbox").write_text("From x\n")
        (spool / "README").write_text("hello\n")
        (spool / ".hidden").mkdir()
        (spool / ".nsprovignore").write_text("drafts/\n")
        (spool / "link").symlink_to("sales")
        (spool / "sdbox").mkdir()
        (spool / "sdbox" / "dbox-Mails").mkdir()
        config = make_config(spool)

        scans = scan_structure(config)
        findings = structure_findings(scans, templates_ok={1})

        assert {
            ("case-collision", "warning"),
            ("dot-entry", "info"),
            ("excluded", "info"),
            ("not-a-directory", "info"),
            ("not-a-maildir", "warning"),
            ("symlink", "warning"),
            ("unservable-name", "warning"),
            ("unsupported-format", "warning"),
        } == codes(findings)
        assert ["Sales", "sales", "secret"] == [s.entry for s in scans[0].served]
        dot = next(f for f in findings if f.code == "dot-entry")
        assert ".nsprovignore" not in dot.message
        assert 2 == sum(f.code == "unsupported-format" for f in findings)

    def test_symlink_inside(self, spool: Path) -> None:
        """With symlinks = "inside", a link out of the spool gets another fix."""
        (spool / "out").symlink_to("/")

        findings = structure_findings(
            scan_structure(make_config(spool, symlinks="inside")), templates_ok={1}
        )

        assert ["symlink"] == [f.code for f in findings]
        assert "Point the link" in findings[0].fix

    def test_duplicate_prefix_and_reserved(self, base: Path) -> None:
        """A prefix listed in config_prefixes or taken by another spool is reported per entry."""
        one, two = base / "one", base / "two"
        for spool in (one, two):
            spool.mkdir()
            maildir(spool / "sales")
        config = config_from_mapping(
            {
                "spool": [{"path": str(one)}, {"path": str(two)}],
                "dovecot": {"config_prefixes": ["Shared/other/"]},
            }
        )
        maildir(one / "other")

        findings = structure_findings(scan_structure(config), templates_ok={1, 2})

        assert [f"{one}/other", f"{two}/sales"] == [
            f.subject for f in findings if f.code == "duplicate-prefix"
        ]

    def test_missing_spool(self, base: Path) -> None:
        """A spool that cannot be listed is an error, and nothing else is said about it."""
        scans = scan_structure(make_config(base / "nope"))

        assert [("spool-missing", "error")] == [
            (f.code, f.severity) for f in structure_findings(scans, templates_ok={1})
        ]

    def test_template_errors_reported_once(self, spool: Path) -> None:
        """Entries made unservable by a bad template are not reported one by one."""
        maildir(spool / "sales")
        maildir(spool / os.fsdecode(b"bad\xff"))
        scans = scan_structure(make_config(spool, prefix="Shared/{name}"))

        findings = structure_findings(scans, templates_ok=set())

        assert [f"{spool}/bad\\xff"] == [f.subject for f in findings]

    def test_inbox_prefix(self, spool: Path) -> None:
        """A prefix whose first level is INBOX in any case is a case collision."""
        maildir(spool / "inbox")

        findings = case_collisions(
            scan_structure(make_config(spool, prefix="{name}/", allow_private_overlap=True))
        )

        assert [("case-collision", str(spool / "inbox"))] == [(f.code, f.subject) for f in findings]


class TestMailboxes:
    """Permission findings for spool roots and mailboxes."""

    def test_clean(self, spool: Path) -> None:
        """A 0755 spool of 0755 mailboxes raises nothing."""
        maildir(spool / "sales")

        assert [] == check_mailboxes(scan_structure(make_config(spool)), stat_dirs=True)

    def test_writable(self, spool: Path) -> None:
        """Group or world write on the spool and mailboxes is reported."""
        spool.chmod(0o775)
        maildir(spool / "open", 0o777)
        maildir(spool / "team", 0o770)

        findings = check_mailboxes(scan_structure(make_config(spool)), stat_dirs=True)

        assert {("spool-writable", "warning"), ("mailbox-writable", "warning")} == codes(findings)
        writable = next(f for f in findings if f.code == "mailbox-writable")
        assert "2 mailboxes" in writable.message
        assert "everybody (other)" in writable.message

    def test_acl_writers(self, spool: Path) -> None:
        """Named ACL entries with write, limited by the mask, count as writers."""
        box = maildir(spool / "box", 0o750)
        acl = PosixAcl(
            user_obj=7, group_obj=5, other=0, mask=7, users=[(70001, 7)], groups=[(70100, 7)]
        )
        fs = fake_acls(
            {bytes(box): acl, bytes(spool): PosixAcl(user_obj=7, group_obj=7, other=5, mask=7)}
        )

        findings = check_mailboxes(scan_structure(make_config(spool)), fs=fs, stat_dirs=True)

        writable = next(f for f in findings if f.code == "mailbox-writable")
        assert "ACL user:70001, ACL group:70100" in writable.message
        assert "group" in next(f for f in findings if f.code == "spool-writable").message

    def test_chgrp_trap_acl(self, spool: Path) -> None:
        """A named ACL reader of a mailbox whose group bits differ from its other bits is trapped."""
        box = maildir(spool / "box", 0o750)
        acl = PosixAcl(user_obj=7, group_obj=5, other=0, mask=5, users=[(70001, 5)])
        fs = fake_acls({bytes(box): acl, bytes(box / "cur"): acl, bytes(box / "new"): acl})
        scans = scan_structure(make_config(spool))
        access = {(str(spool), b"box"): [ALICE]}

        findings = check_mailboxes(scans, fs=fs, access=access, stat_dirs=True)

        assert [("chgrp-trap", "warning", str(box))] == [
            (f.code, f.severity, f.subject) for f in findings
        ]
        assert "user alice" in findings[0].message
        assert "ACL user:70001" in findings[0].message
        assert f"chgrp GROUP {box}" in findings[0].fix

    def test_chgrp_trap_other(self, spool: Path) -> None:
        """A group-writable, world-readable mailbox traps readers outside its group."""
        maildir(spool / "team", 0o775)
        scans = scan_structure(make_config(spool))
        gid = (spool / "team").stat().st_gid
        member = attrs.evolve(MEMBER, identity=Identity(uid=70003, gid=gid))
        access = {(str(spool), b"team"): [member, BOB]}

        findings = [
            f
            for f in check_mailboxes(scans, access=access, stat_dirs=True)
            if f.code == "chgrp-trap"
        ]

        assert 1 == len(findings)
        assert "user bob " in findings[0].message
        assert "member" not in findings[0].message
        assert f"chmod g=rx {spool}/team" in findings[0].fix

    def test_no_trap_without_outside_readers(self, spool: Path) -> None:
        """A group-only mailbox (0750) read by members only is no trap."""
        maildir(spool / "team", 0o750)
        gid = (spool / "team").stat().st_gid
        member = attrs.evolve(MEMBER, identity=Identity(uid=70003, gid=gid))

        findings = check_mailboxes(
            scan_structure(make_config(spool)),
            access={(str(spool), b"team"): [member]},
            stat_dirs=True,
        )

        assert [] == findings

    def test_dot_files(self, spool: Path) -> None:
        """Dot files (not directories) in a mailbox root are reported unless maildir_stat_dirs is on."""
        box = maildir(spool / "box")
        (box / ".DS_Store").write_text("x")
        (box / ".Sub").mkdir()
        scans = scan_structure(make_config(spool))

        known = check_mailboxes(scans, stat_dirs=False)
        unknown = check_mailboxes(scans, stat_dirs=None)
        on = check_mailboxes(scans, stat_dirs=True)

        assert [("dot-file-in-mailbox", "warning")] == [(f.code, f.severity) for f in known]
        assert ".DS_Store" in known[0].message
        assert ".Sub" not in known[0].message
        assert "with maildir_stat_dirs = no" in known[0].message
        assert "unless maildir_stat_dirs = yes" in unknown[0].message
        assert [] == on

    def test_acl_files(self, spool: Path) -> None:
        """With the ACL plugin required, mailboxes without a granting dovecot-acl are listed."""
        granted = maildir(spool / "granted")
        (granted / "dovecot-acl").write_text("# comment\nowner lrwstipekxa\nanyone lr\n")
        owner_only = maildir(spool / "owner")
        (owner_only / "dovecot-acl").write_text("owner lrwstipekxa\n")
        maildir(spool / "none")

        findings = check_mailboxes(
            scan_structure(make_config(spool)), stat_dirs=True, acl_required=True
        )

        assert [("acl-no-grants", "warning")] == [(f.code, f.severity) for f in findings]
        assert "2 of 3 mailboxes" in findings[0].message
        assert "none, owner" in findings[0].message

    def test_acl_grants(self) -> None:
        """Lookup rights count for anyone but the owner, and never when negative."""
        assert acl_grants("user=alice lr\n")
        assert acl_grants("group=sales lrws :$Seen\n")
        assert not acl_grants("owner lrwstipekxa\n")
        assert not acl_grants("anyone -l\n")
        assert not acl_grants("anyone rw\n\n# anyone lr\n")

    def test_control_in_spool(self, base: Path) -> None:
        """control = "" is an error when users can write a mailbox, else a warning."""
        ro, rw = base / "ro", base / "rw"
        ro.mkdir()
        rw.mkdir()
        maildir(ro / "a")
        maildir(rw / "b", 0o777)
        config = config_from_mapping(
            {"spool": [{"path": str(ro), "control": ""}, {"path": str(rw), "control": ""}]}
        )

        findings = check_mailboxes(scan_structure(config), stat_dirs=True)

        assert [
            ("control-in-spool", "warning", str(ro)),
            ("control-in-spool", "error", str(rw)),
        ] == [(f.code, f.severity, f.subject) for f in findings if f.code == "control-in-spool"]

    def test_missing_spool_ignored(self, base: Path) -> None:
        """A spool that could not be scanned has no permission findings."""
        assert [] == check_mailboxes(scan_structure(make_config(base / "nope")))


class TestTraversal:
    """Spools the users cannot reach."""

    def test_reachable(self, spool: Path) -> None:
        """A spool under 0755 directories raises nothing, with or without users."""
        scans = scan_structure(make_config(spool))

        assert [] == check_traversal(scans) + check_traversal(scans, users=[ALICE])

    def test_blocked(self, base: Path) -> None:
        """Under a 0700 directory: an error with users, a warning without."""
        closed = base / "closed"
        closed.mkdir(mode=0o700)
        closed.chmod(0o700)
        spool = closed / "spool"
        spool.mkdir()
        scans = scan_structure(make_config(spool))

        with_users = check_traversal(scans, users=[ALICE, BOB])
        without = check_traversal(scans)

        assert [("spool-not-traversable", "error")] == [(f.code, f.severity) for f in with_users]
        assert "none of the 2 checked users" in with_users[0].message
        assert str(closed) in with_users[0].message
        assert [("spool-not-traversable", "warning")] == [(f.code, f.severity) for f in without]

    def test_vanished(self, spool: Path) -> None:
        """A spool that disappears between the scan and the check is reported missing."""
        scans = scan_structure(make_config(spool))
        spool.rmdir()

        assert [("spool-missing", "error")] == [
            (f.code, f.severity) for f in check_traversal(scans, users=[ALICE])
        ]

    def test_no_access(self, spool: Path) -> None:
        """Servable mailboxes no checked user gets are one info finding per spool."""
        maildir(spool / "sales")
        maildir(spool / "secret", 0o700)
        scans = scan_structure(make_config(spool))

        findings = no_access_findings(scans, {(str(spool), b"sales"): [ALICE]}, 1)

        assert [("no-access", "info")] == [(f.code, f.severity) for f in findings]
        assert "1 mailbox of" in findings[0].message
        assert "secret" in findings[0].message


class TestVersion:
    """The installed Dovecot against [dovecot] version."""

    @pytest.mark.parametrize(
        ("dialect", "version", "expected"),
        [
            ("2.3", "2.3", set()),
            ("2.4", "2.3", {("dialect-mismatch", "error")}),
            ("2.3", "2.4", {("dialect-mismatch", "error")}),
            ("2.3", "2.2", {("dovecot-version-unsupported", "warning")}),
            ("2.3", None, {("dovecot-version-unknown", "info")}),
        ],
    )
    def test_versions(
        self, spool: Path, dialect: str, version: str | None, expected: set[tuple[str, str]]
    ) -> None:
        """Only a matching 2.3 or 2.4 passes silently."""
        config = make_config(spool, {"dovecot": {"version": dialect}})

        assert expected == codes(check_version(config, version, "test"))


class TestSeparator:
    """Every listed Dovecot namespace must use nsprov's separator."""

    @pytest.mark.parametrize(
        ("conf", "mismatches"),
        [
            ("namespace inbox {\n  inbox = yes\n  separator = /\n}\n", []),
            ("namespace inbox {\n  inbox = yes\n  separator = .\n}\n", ["namespace inbox"]),
            (
                "mail_location = maildir:~/Maildir\nnamespace inbox {\n  inbox = yes\n}\n",
                ["namespace inbox"],
            ),
            ("mail_location = maildir:~/Maildir:LAYOUT=fs\nnamespace inbox {\n}\n", []),
            ("mail_location = mdbox:~/mdbox\n", []),
            ("mail_location = maildir:~/Maildir\n", ["namespace (implicit)"]),
            ("mail_driver = maildir\nnamespace inbox {\n  inbox = yes\n}\n", ["namespace inbox"]),
            ("mail_driver = maildir\nmailbox_list_layout = fs\nnamespace inbox {\n}\n", []),
            ("namespace inbox {\n  inbox = yes\n}\n", []),
            (
                (
                    "namespace inbox {\n  separator = /\n}\nnamespace x {\n  separator = .\n"
                    "  list = no\n}\nnamespace y {\n  separator = .\n  disabled = yes\n}\n"
                ),
                [],
            ),
        ],
    )
    def test_separators(self, spool: Path, conf: str, mismatches: list[str]) -> None:
        """Explicit separators and storage defaults (Maildir++ '.', else '/') are compared."""
        findings = check_separator(make_config(spool), DovecotConf.parse(conf))

        assert mismatches == [f.subject for f in findings]
        assert {"separator-mismatch"} >= {f.code for f in findings}

    def test_unlisted_spools(self, spool: Path) -> None:
        """Spools with list = "no" need no common separator."""
        conf = DovecotConf.parse("namespace inbox {\n  separator = .\n}\n")

        assert [] == check_separator(make_config(spool, list="no", prefix="Shared/{name}"), conf)


class TestConfNamespaces:
    """Dovecot namespaces that collide with or overlap nsprov's."""

    def test_collisions(self, spool: Path) -> None:
        """A taken prefix is an error, a prefix in config_prefixes is not, case twins warn."""
        maildir(spool / "sales")
        maildir(spool / "team")
        maildir(spool / "misc")
        name = "s-" + entry_id(os.fsencode(str(spool)), b"misc")[0]
        conf = DovecotConf.parse(
            "namespace clash {\n  prefix = Shared/sales/\n}\n"
            "namespace listed {\n  prefix = Shared/team/\n}\n"
            "namespace twin {\n  prefix = shared/Sales/\n}\n"
            f"namespace {name} {{\n  prefix = Other/\n}}\n"
        )
        config = make_config(spool, {"dovecot": {"config_prefixes": ["Shared/team/"]}})

        findings = check_conf_namespaces(config, conf, scan_structure(make_config(spool)))

        assert [
            ("namespace-collision", "error", "namespace clash"),
            ("case-collision", "warning", "namespace twin"),
            ("namespace-collision", "error", f"namespace {name}"),
        ] == [(f.code, f.severity, f.subject) for f in findings]

    def test_nested(self, spool: Path) -> None:
        """A namespace around nsprov's prefixes, or serving a spool directory, is reported."""
        maildir(spool / "sales")
        conf = DovecotConf.parse(
            "namespace around {\n  prefix = Shared/\n}\n"
            f"namespace static {{\n  prefix = Public/\n  location = maildir:{spool}/sales\n}}\n"
            f"namespace static24 {{\n  prefix = P24/\n  mail_path = {spool}\n}}\n"
            "namespace bad {\n  prefix = B/\n  location = nonsense\n}\n"
            "namespace elsewhere {\n  prefix = E/\n  location = maildir:/srv/other\n}\n"
        )
        config = make_config(spool)

        findings = check_conf_namespaces(config, conf, scan_structure(config))

        assert [
            ("namespace-nested", "namespace around"),
            ("namespace-nested", "namespace static"),
            ("namespace-nested", "namespace static24"),
        ] == [(f.code, f.subject) for f in findings]

    def test_private_namespace(self, spool: Path) -> None:
        """subscribe = true needs the private namespace to exist in Dovecot's configuration."""
        config = make_config(spool, subscribe=True, list="children")
        missing = DovecotConf.parse("namespace mine {\n  inbox = yes\n}\n")
        present = DovecotConf.parse("namespace inbox {\n  inbox = yes\n}\n")

        assert [("private-namespace-missing", "warning")] == [
            (f.code, f.severity) for f in check_conf_namespaces(config, missing, [])
        ]
        assert [] == check_conf_namespaces(config, present, [])


INBOX_EMPTY = "namespace inbox {\n  inbox = yes\n  prefix = \n  separator = /\n}\n"


class TestPrefixOverlap:
    """Prefix templates against Dovecot's namespaces, independent of the entries."""

    @pytest.mark.parametrize(
        ("prefix", "doveconf", "expected"),
        [
            ("Shared/{name}/", INBOX_EMPTY, []),
            ("{name}/", INBOX_EMPTY, [("private-overlap", "error")]),
            ("{name}/", "", [("private-overlap", "error")]),
            (
                "{name}/",
                INBOX_EMPTY.replace("prefix = ", "prefix = INBOX/"),
                [("namespace-nested", "warning")],
            ),
            (
                "INBOX/{name}/",
                INBOX_EMPTY.replace("prefix = ", "prefix = INBOX/"),
                [("private-overlap", "error")],
            ),
            (
                "Shared/{name}/",
                INBOX_EMPTY + "namespace pub {\n  type = public\n  prefix = Shared/\n}\n",
                [("namespace-nested", "warning")],
            ),
            (
                "Shared{sep}{name}{sep}",
                INBOX_EMPTY + "namespace pub {\n  type = public\n  prefix = Shared/x/y/\n}\n",
                [("namespace-nested", "warning")],
            ),
            (
                "Shared/{name}/",
                INBOX_EMPTY
                + "namespace pub {\n  type = public\n  prefix = Public/\n}\n"
                + "namespace old {\n  prefix = Shared/\n  disabled = yes\n}\n",
                [],
            ),
        ],
    )
    def test_overlaps(
        self, spool: Path, prefix: str, doveconf: str, expected: list[tuple[str, str]]
    ) -> None:
        """An equal private prefix is an error; other nesting a warning; disabled ones do not count."""
        config = make_config(spool, prefix=prefix, allow_private_overlap=True)

        findings = check_prefix_overlap(config, DovecotConf.parse(doveconf))

        assert expected == [(f.code, f.severity) for f in findings]
        assert all(f.subject == "spool[1].prefix" for f in findings)

    def test_sent_message(self, spool: Path) -> None:
        """The message names the spool, the namespace and what goes wrong."""
        config = make_config(spool, prefix="{name}/", allow_private_overlap=True)

        [finding] = check_prefix_overlap(config, DovecotConf.parse(INBOX_EMPTY))

        assert f"spool {spool}: prefix '{{name}}/'" in finding.message
        assert "Sent" in finding.message
        assert "namespace inbox (prefix '')" in finding.message

    def test_in_run_checks(self, spool: Path) -> None:
        """run_checks reports the overlap even with an empty spool."""
        config = make_config(spool, prefix="{name}/", allow_private_overlap=True)
        conf = DovecotConf.parse(DOVECONF_OK)

        report = run_checks(world(spool, config=config, doveconf=conf, dovecot_version="2.3"))

        assert ("private-overlap", "error") in report.codes()


def wiring(
    config: Config, conf: DovecotConf, executable: Callable[[str], bool] | None = None
) -> list[Finding]:
    return check_wiring(
        config, conf, config_path=CONFIG, executable=executable or (lambda p: p == NSPROV)
    )


def line(protocol: str, program: str, *, user: str = "") -> str:
    """A post-login service for *protocol* with ``executable = script-login <program>``."""
    return (
        f"service {protocol} {{\n  executable = {protocol} {protocol}-postlogin\n}}\n"
        f"service {protocol}-postlogin {{\n  executable = script-login {program}\n"
        + (f"  user = {user}\n" if user else "")
        + "}\n"
    )


IMAP_OK = f"{NSPROV} post-login --config={CONFIG} --protocol=imap"


class TestWiring:
    """The post-login services of IMAP and POP3."""

    @pytest.fixture(name="config")
    def _config(self, spool: Path) -> Config:
        return make_config(spool, {"deny": {"users": ["guest"]}})

    def test_shipped_example(self, config: Config) -> None:
        """The shipped 10-master.conf passes."""
        assert [] == wiring(config, wired())

    def test_missing_pop3(self, config: Config) -> None:
        """POP3 without wiring while [deny] applies to it is an error."""
        findings = wiring(config, wired(example=line("imap", IMAP_OK)))

        assert [("wiring-missing", "error", "service pop3")] == [
            (f.code, f.severity, f.subject) for f in findings
        ]
        assert "deny rules do not apply" in findings[0].message

    def test_pop3_without_actions(self, spool: Path) -> None:
        """POP3 without wiring is fine when nsprov has nothing to do for POP3."""
        assert [] == wiring(make_config(spool), wired(example=line("imap", IMAP_OK)))

    def test_serve_mode(self, spool: Path) -> None:
        """Without post-login wiring, a dict userdb provides the namespaces."""
        conf = wired(example="userdb {\n  driver = dict\n}\n")

        assert [] == wiring(make_config(spool), conf)
        assert ["service imap"] == [
            f.subject for f in wiring(make_config(spool), wired(example=""))
        ]

    def test_fast_script(self, config: Config) -> None:
        """``python -I -S .../nsprov/_fast.py --serve=...`` is nsprov's wiring too."""
        fast = str(Path(nsprov_fast.__file__))
        python = "/opt/nsprov/bin/python"

        def conf(args: str, script: str = fast) -> DovecotConf:
            return wired(
                example=line("imap", f"{python} -I -S {script} {args} --protocol=imap")
                + line("pop3", f"{python} -I -S {script} {args} --protocol=pop3")
            )

        def found(c: DovecotConf) -> list[tuple[str, str]]:
            return [
                (f.code, f.severity) for f in wiring(config, c, executable=lambda p: p == python)
            ]

        assert [] == found(conf(f"--serve=/run/nsprov/userdb.sock --config={CONFIG}"))
        assert [("wiring-bad-arguments", "warning")] * 2 == found(conf(f"--config={CONFIG}"))
        assert [("wiring-program-missing", "error")] * 2 == found(
            conf(f"--serve=/s --config={CONFIG}", "/nowhere/nsprov/_fast.py")
        )

    @pytest.mark.parametrize("flags", ["-S", "", "-S -E"])
    def test_fast_script_not_isolated(self, config: Config, flags: str) -> None:
        """The fast path's interpreter without -I is an error; -I, alone or combined, is not."""
        fast = str(Path(nsprov_fast.__file__))
        python = "/opt/nsprov/bin/python"

        def found(interpreter: str) -> list[tuple[str, str]]:
            program = f"{interpreter} {fast} --serve=/s --config={CONFIG} --protocol=imap"
            conf = wired(example=line("imap", program), protocols="imap")
            return [
                (f.code, f.severity) for f in wiring(config, conf, executable=lambda p: p == python)
            ]

        assert [("wiring-not-isolated", "error")] == found(f"{python} {flags}".strip())
        assert [] == found(f"{python} -IS")

    @pytest.mark.parametrize(
        ("first_line", "isolated"),
        [
            ("#!/opt/nsprov/bin/python3", False),
            ("#!/usr/bin/env python3", False),
            ("#!/opt/nsprov/bin/python3 -I", True),
            ("#!/opt/nsprov/bin/python3 -IS", True),
            ("#!/bin/bash -p", True),
        ],
    )
    def test_script_not_isolated(
        self, config: Config, tmp_path: Path, first_line: str, isolated: bool
    ) -> None:
        """A hook (or an old console script) whose #! line starts Python without -I is an error."""
        hook = tmp_path / "hook"
        hook.write_text(f"{first_line}\nimport nsprov\n")
        conf = wired(example=line("imap", f"{hook} --config={CONFIG}"), protocols="imap")

        codes = [f.code for f in wiring(config, conf, executable=lambda p: True)]

        assert isolated == ("wiring-not-isolated" not in codes)

    def test_installed_command_isolated(self, config: Config) -> None:
        """The installed nsprov command (the launcher) passes."""
        installed = str(Path(sys.executable).with_name("nsprov"))
        program = f"{installed} post-login --config={CONFIG} --protocol=imap"
        conf = wired(example=line("imap", program), protocols="imap")

        assert [] == wiring(config, conf, executable=lambda p: p == installed)

    def test_protocols(self, config: Config) -> None:
        """Protocols Dovecot does not serve are not checked."""
        assert [] == wiring(config, wired(example="", protocols="lmtp"))

    def test_no_protocol_and_user(self, config: Config) -> None:
        """A missing --protocol and a non-root service user are warnings."""
        conf = wired(
            example=line("imap", f"{NSPROV} post-login --config={CONFIG}", user="nobody")
            + line("pop3", f"-d {NSPROV} post-login --config {CONFIG} --protocol=pop3")
        )

        findings = wiring(config, conf)

        assert [
            ("wiring-no-protocol", "warning", "service imap-postlogin"),
            ("wiring-service-user", "warning", "service imap-postlogin"),
        ] == [(f.code, f.severity, f.subject) for f in findings]

    def test_protocol_mismatch(self, config: Config) -> None:
        """POP3 wired to the IMAP post-login service is an error."""
        conf = wired(
            example=line("imap", IMAP_OK)
            + "service pop3 {\n  executable = pop3 -t 30 imap-postlogin\n}\n"
        )

        assert [("wiring-protocol-mismatch", "error", "service imap-postlogin")] == [
            (f.code, f.severity, f.subject) for f in wiring(config, conf)
        ]

    @pytest.mark.parametrize(
        ("program", "expected"),
        [
            (IMAP_OK.removeprefix("/usr/local/bin/"), ("wiring-relative-path", "error")),
            (IMAP_OK.replace(NSPROV, "/opt/nsprov"), ("wiring-program-missing", "error")),
            (IMAP_OK.replace("=imap", "=smtp"), ("wiring-bad-arguments", "error")),
            (f"{IMAP_OK} --deadline=60", ("wiring-bad-arguments", "error")),
            (f"{IMAP_OK} --serve=relative.sock", ("wiring-bad-arguments", "error")),
            (f"{IMAP_OK} --help", ("wiring-bad-arguments", "error")),
            (IMAP_OK.replace(" --protocol", "  --protocol"), ("wiring-bad-arguments", "error")),
            (f"{IMAP_OK} --fast", ("wiring-bad-arguments", "warning")),
            (f"{IMAP_OK} -- next", ("wiring-relative-path", "error")),
            (IMAP_OK.replace(CONFIG, "/etc/other.toml"), ("wiring-config-path", "warning")),
            (f"/usr/local/bin/hook --config={CONFIG}", ("wiring-missing", "warning")),
        ],
    )
    def test_bad_lines(self, config: Config, program: str, expected: tuple[str, str]) -> None:
        """Each malformed imap post-login line gets its code and severity."""
        conf = wired(example=line("imap", program), protocols="imap")

        assert [expected] == [(f.code, f.severity) for f in wiring(config, conf)]

    @pytest.mark.parametrize(
        ("extra", "consequence"),
        [("", "uses the default instead"), (" --on-error=deny", "denies every login")],
    )
    def test_bad_value_message(self, config: Config, extra: str, consequence: str) -> None:
        """A bad value names the option, and says what post-login does about it."""
        conf = wired(example=line("imap", f"{IMAP_OK} --deadline=abc{extra}"), protocols="imap")

        [finding] = wiring(config, conf)

        assert "--deadline must be a number, got 'abc'" in finding.message
        assert consequence in finding.message

    def test_not_script_login(self, config: Config) -> None:
        """A post-login service that is not script-login is a warning."""
        conf = wired(
            example="service imap {\n  executable = imap imap-postlogin\n}\n"
            "service imap-postlogin {\n  executable = /usr/local/bin/other\n}\n",
            protocols="imap",
        )

        assert [("wiring-missing", "warning")] == [
            (f.code, f.severity) for f in wiring(config, conf)
        ]

    def test_socket_without_service(self, config: Config) -> None:
        """A post-login socket no service provides fails every login."""
        conf = wired(
            example="service imap {\n  executable = imap -D  nowhere\n}\n", protocols="imap"
        )

        assert [("wiring-missing", "error")] == [(f.code, f.severity) for f in wiring(config, conf)]

    def test_listener_of_another_name(self, config: Config) -> None:
        """The post-login service may be found by its unix_listener's name."""
        conf = wired(
            example="service imap {\n  executable = imap pl\n}\n"
            f"service post {{\n  executable = script-login {IMAP_OK}\n"
            "  unix_listener pl {\n  }\n}\n",
            protocols="imap",
        )

        assert [] == wiring(config, conf)


class TestAclPlugin:
    """[dovecot] acl_plugin against mail_plugins."""

    def test_24_without_flag(self, spool: Path) -> None:
        """On 2.4, the ACL plugin without acl_plugin = true is an error."""
        conf = DovecotConf.parse("mail_plugins {\n  acl = yes\n}\n")
        config = make_config(spool, {"dovecot": {"version": "2.4"}})

        assert [("acl-plugin-setting", "error")] == [
            (f.code, f.severity) for f in check_acl_plugin(config, conf, acl_plugin=False)
        ]
        assert [] == check_acl_plugin(config, conf, acl_plugin=True)

    def test_flag_without_plugin(self, spool: Path) -> None:
        """acl_plugin = true without the plugin is a note."""
        conf = DovecotConf.parse("mail_plugins = quota\n")

        assert [("acl-plugin-setting", "info")] == [
            (f.code, f.severity)
            for f in check_acl_plugin(make_config(spool), conf, acl_plugin=True)
        ]

    def test_required(self) -> None:
        """dovecot-acl files are required with the plugin and no global ACLs."""
        assert acl_required(DovecotConf.parse("mail_plugins = acl\n"))
        assert not acl_required(DovecotConf.parse("mail_plugins = acl\nacl_global_path = /a\n"))
        assert not acl_required(DovecotConf.parse(""))
        assert not acl_required(None)


class TestMailDriver:
    """[dovecot] global_mail_driver against dovecot.conf's mail_driver."""

    @pytest.mark.parametrize(
        ("dialect", "driver", "conf", "expected"),
        [
            ("2.4", "maildir", "mail_driver = maildir\n", []),
            ("2.4", "maildir", "mail_driver = sdbox\n", [("mail-driver-mismatch", "error")]),
            ("2.4", "maildir", "", [("mail-driver-mismatch", "error")]),
            ("2.4", None, "mail_driver = sdbox\n", []),
            ("2.3", "maildir", "mail_driver = sdbox\n", []),
        ],
    )
    def test_drivers(
        self,
        spool: Path,
        dialect: str,
        driver: str | None,
        conf: str,
        expected: list[tuple[str, str]],
    ) -> None:
        """Only a 2.4 global_mail_driver that dovecot.conf does not set is an error."""
        dovecot = {"version": dialect} | ({"global_mail_driver": driver} if driver else {})
        config = make_config(spool, {"dovecot": dovecot})

        findings = check_mail_driver(config, DovecotConf.parse(conf))

        assert expected == [(f.code, f.severity) for f in findings]


class TestIdentity:
    """[identity] against doveconf's group range and mail_access_groups."""

    @pytest.mark.parametrize(
        ("identity", "conf", "expected"),
        [
            ({}, "", []),
            ({}, "first_valid_uid = 1000\nlast_valid_uid = 60000\n", []),
            (
                {"first_valid_gid": 100, "last_valid_gid": 2000, "mail_access_groups": ["mail"]},
                "first_valid_gid = 100\nlast_valid_gid = 2000\nmail_access_groups = mail\n",
                [],
            ),
            ({"mail_access_groups": ["b", "a"]}, "mail_access_groups = a, b\n", []),
            ({}, "first_valid_gid = 1000\n", ["[identity] first_valid_gid"]),
            ({}, "last_valid_gid = 5000\n", ["[identity] last_valid_gid"]),
            ({"last_valid_gid": 5000}, "", ["[identity] last_valid_gid"]),
            ({}, "mail_access_groups = mail\n", ["[identity] mail_access_groups"]),
            (
                {"mail_access_groups": ["mail"], "first_valid_gid": 0},
                "",
                ["[identity] first_valid_gid", "[identity] mail_access_groups"],
            ),
        ],
    )
    def test_drift(
        self, spool: Path, identity: dict[str, Any], conf: str, expected: list[str]
    ) -> None:
        """Each setting that differs from Dovecot's (or its default) is one error."""
        config = make_config(spool, {"identity": identity})
        doveconf = DovecotConf.parse(HEADER_23 + conf)

        report = run_checks(world(spool, config=config, dovecot_version="2.3", doveconf=doveconf))

        drift = [f for f in report.findings if f.code == "identity-mismatch"]
        assert expected == [f.subject for f in drift]
        assert all(f.severity == "error" for f in drift)
        if drift:
            assert "Dovecot's" in drift[0].message


def budget_of(fits: int) -> Callable[[Config, MailUser], ReplyBudget]:
    def budget(_config: Config, _user: MailUser) -> ReplyBudget:
        return ReplyBudget(fits=fits, total=5, size=100, full_size=9000, budget=7000)

    return budget


class TestUsers:
    """Per-user counts and limits."""

    @pytest.fixture(name="five")
    def _five(self, spool: Path) -> Path:
        for name in ("a", "b", "c", "d", "e"):
            maildir(spool / name)
        return spool

    def test_counts(self, five: Path) -> None:
        """A user within every limit gets a report and no finding."""
        report, findings, keys = check_user(make_config(five), ALICE, budget=budget_of(5))

        assert report is not None
        assert (5, 5, False) == (report.found, report.served, report.over)
        assert [] == findings
        assert {(str(five), n) for n in (b"a", b"b", b"c", b"d", b"e")} == keys
        assert report.userdb_keys_bytes < report.env_bytes
        assert 9000 == report.as_dict()["serve"]["full_size"]

    def test_hung_scan_is_an_error(self, five: Path) -> None:
        """A scan that outlasts the per-user deadline is an error finding, not a hang."""

        def stuck(path: bytes) -> os.stat_result:
            time.sleep(30)
            return os.lstat(path)

        started = time.monotonic()
        report, findings, _ = check_user(make_config(five), ALICE, fs=Fs(lstat=stuck), deadline=0.3)

        assert time.monotonic() - started < 5
        assert None is report
        assert [("user-error", "error")] == [(f.code, f.severity) for f in findings]
        assert "did not finish within 0.3s" in findings[0].message

    def test_namespace_max(self, five: Path) -> None:
        """More readable mailboxes than namespace.max is a warning."""
        config = make_config(five, {"namespace": {"max": 2}})

        report, findings, keys = check_user(config, ALICE)

        assert report is not None
        assert (5, 2) == (report.found, report.served)
        assert [("namespace-max", "warning")] == [(f.code, f.severity) for f in findings]
        assert 5 == len(keys)

    def test_env_limit(self, five: Path) -> None:
        """Namespaces beyond the kernel's limits are a warning naming the counts."""
        report, findings, _ = check_user(make_config(five), ALICE, limits=EnvLimits(budget=2000))

        assert report is not None
        assert report.served < 5
        assert [("env-limit", "warning")] == [(f.code, f.severity) for f in findings]
        assert f"only {report.served} of user alice's 5 namespaces" in findings[0].message

    @pytest.mark.parametrize(
        ("serve_mode", "severity"), [(True, "warning"), (None, "warning"), (False, "info")]
    )
    def test_serve_budget(self, five: Path, serve_mode: bool | None, severity: str) -> None:
        """Over the serve budget: a warning, a note when post-login mode is wired."""
        _, findings, _ = check_user(
            make_config(five), ALICE, budget=budget_of(3), serve_mode=serve_mode
        )

        assert [("serve-budget", severity)] == [(f.code, f.severity) for f in findings]

    def test_no_budget_for_24(self, five: Path) -> None:
        """Serve mode needs 2.3: no budget is computed for the 2.4 dialect."""
        config = make_config(five, {"dovecot": {"version": "2.4"}})

        report, _, _ = check_user(config, ALICE, budget=budget_of(3))

        assert report is not None
        assert report.serve is None
        assert report.as_dict()["serve"] is None

    def test_error(self, five: Path) -> None:
        """A user without a home, with {home} templates, is an error."""
        homeless = attrs.evolve(ALICE, home=None)

        report, findings, keys = check_user(make_config(five), homeless)

        assert (None, set()) == (report, keys)
        assert [("user-error", "error")] == [(f.code, f.severity) for f in findings]

    def test_base_environ(self) -> None:
        """The base environment lists the userdb keys it holds."""
        env = base_environ(ALICE)

        assert 40 == len(env["AUTH_TOKEN"])
        assert all(k in env for k in env["USERDB_KEYS"].split())

    def test_virtual(self, spool: Path) -> None:
        """Users sharing a uid, in the check or in passwd, are one warning per uid."""
        dave = attrs.evolve(BOB, user="dave")

        findings = check_virtual(make_config(spool), [ALICE, BOB, dave], {70001: ("alice", "x")})

        assert [("uid 70001", "alice, x"), ("uid 70002", "bob, dave")] == [
            (f.subject, f.message.split("users ")[1].split(" map")[0]) for f in findings
        ]

    def test_mail_uid(self, spool: Path) -> None:
        """[identity] mail_uid maps every user to one uid: a warning even for one user."""
        config = make_config(spool, {"identity": {"mail_uid": "70001", "mail_gid": "70001"}})

        findings = check_virtual(config, [ALICE], {})

        assert [("virtual-users", "warning")] == [(f.code, f.severity) for f in findings]
        assert "mail_uid" in findings[0].message

    def test_select_users(self) -> None:
        """Users within Dovecot's uid range, never root, in uid order, capped."""
        entries = [("root", 0), ("sys", 100), ("b", 1002), ("a", 1001), ("big", 70000), ("c", 1003)]

        assert (["a", "b"], 4) == select_users(
            entries, first_valid_uid=500, last_valid_uid=0, cap=2
        )
        assert (["a", "b", "c"], 3) == select_users(
            entries, first_valid_uid=1000, last_valid_uid=2000, cap=10
        )
        assert (["sys"], 1) == select_users(entries, first_valid_uid=0, last_valid_uid=999, cap=10)


class TestStale:
    """Per-user directories that match no spool entry any more."""

    @pytest.fixture(name="home")
    def _home(self, base: Path, spool: Path) -> Path:
        maildir(spool / "sales")
        maildir(spool / "secret", 0o700)
        (spool / "README").write_text("x")
        home = base / "home"
        (home / ".nsprov").mkdir(parents=True)
        return home

    def ns_dir(self, home: Path, spool: Path, raw: bytes) -> Path:
        return home / ".nsprov" / f"s-{entry_id(os.fsencode(str(spool)), raw)[0]}"

    def test_stale(self, home: Path, spool: Path) -> None:
        """Stale and other-scheme directories are found; current ones, others and files are not."""
        nsp = home / ".nsprov"
        for raw in (b"sales", b"secret", b"README"):
            self.ns_dir(home, spool, raw).mkdir()
        (nsp / STALE).mkdir()
        (nsp / OTHER).mkdir()
        (nsp / "notes").mkdir()
        (nsp / "last-login").write_text("x")
        (nsp / ("s-file-" + "a" * HASH_LENGTH)).write_text("x")
        (nsp / ("s-lnk-" + "a" * HASH_LENGTH)).symlink_to(STALE)
        user = attrs.evolve(ALICE, home=str(home))

        stale, findings = find_stale(make_config(spool), user)

        assert [
            (str(nsp / STALE), "current"),
            (str(nsp / OTHER), "other"),
        ] == [(d.path, d.scheme) for d in stale]
        assert [("stale-dir", "info"), ("stale-other-scheme", "warning")] == [
            (f.code, f.severity) for f in findings
        ]

    def test_no_parent(self, base: Path, spool: Path) -> None:
        """A user without the parent directory has nothing stale."""
        user = attrs.evolve(ALICE, home=str(base / "nohome"))

        assert ([], []) == find_stale(make_config(spool), user)

    def test_homeless(self, spool: Path) -> None:
        """{home} templates are skipped for a user without a home."""
        assert ([], []) == find_stale(make_config(spool), attrs.evolve(ALICE, home=None))

    def test_unlisted_spool(self, home: Path, base: Path) -> None:
        """A parent shared with a spool that cannot be listed is not checked."""
        (home / ".nsprov" / STALE).mkdir()
        user = attrs.evolve(ALICE, home=str(home))

        stale, findings = find_stale(make_config(base / "nope"), user)

        assert [] == stale
        assert [("stale-unchecked", "info")] == [(f.code, f.severity) for f in findings]

    def test_symlinked_parent(self, home: Path, base: Path, spool: Path) -> None:
        """A parent reached through a symbolic link is not checked."""
        real = base / "elsewhere"
        real.mkdir()
        (real / STALE).mkdir()
        shutil.rmtree(home / ".nsprov")
        (home / ".nsprov").symlink_to(real)

        stale, findings = find_stale(make_config(spool), attrs.evolve(ALICE, home=str(home)))

        assert [] == stale
        assert ["stale-unchecked"] == [f.code for f in findings]

    def test_unreadable_parent(self, home: Path, spool: Path) -> None:
        """A parent that cannot be listed is not checked."""

        def listdir(path: bytes) -> list[bytes]:
            if path.endswith(b".nsprov"):
                raise PermissionError(errno.EACCES, "denied")
            return os.listdir(path)

        stale, findings = find_stale(
            make_config(spool), attrs.evolve(ALICE, home=str(home)), fs=Fs(listdir=listdir)
        )

        assert [] == stale
        assert ["stale-unchecked"] == [f.code for f in findings]

    def test_user_template(self, base: Path, spool: Path) -> None:
        """A {user} parent outside the home, with {id} names, works the same way."""
        maildir(spool / "sales")
        parent = base / "idx" / "alice"
        parent.mkdir(parents=True)
        ident = entry_id(os.fsencode(str(spool)), b"sales")[0]
        (parent / f"i-{ident}").mkdir()
        (parent / ("i-" + STALE[2:])).mkdir()
        template = f"{base}/idx/{{user}}/i-{{id}}"
        config = make_config(spool, index=template, control=template)

        stale, _ = find_stale(config, ALICE)

        assert [str(parent / ("i-" + STALE[2:]))] == [d.path for d in stale]

    def test_remove_dirs(self, base: Path) -> None:
        """Trees are removed without following links; files and missing paths are errors."""
        outside = base / "outside"
        outside.mkdir()
        (outside / "keep").write_text("x")
        tree = base / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "f").write_text("x")
        (tree / "link").symlink_to(outside)
        (base / "file").write_text("x")

        results = remove_dirs([str(tree), str(base / "file"), str(base / "missing")])

        assert [str(tree), str(base / "file"), str(base / "missing")] == [p for p, _ in results]
        assert results[0][1] is None
        assert "not a directory" in (results[1][1] or "")
        assert "No such file" in (results[2][1] or "")
        assert not tree.exists()
        assert (outside / "keep").exists()
        assert (base / "file").exists()

    def test_clean_stale_as(self, base: Path) -> None:
        """The forked clean-up reports each path; as the current identity it removes them."""
        tree = base / "tree"
        tree.mkdir()
        me = MailUser(
            user="me", home=str(base), identity=Identity(uid=os.getuid(), gid=os.getgid())
        )

        assert [(str(tree), None)] == clean_stale_as(me, [str(tree)])
        assert not tree.exists()

    def test_clean_stale_as_failure(self, base: Path) -> None:
        """A clean-up process that cannot become the user reports every path as failed."""
        ghost = MailUser(user="ghost", home=None, identity=Identity(uid=-5, gid=-5))

        results = clean_stale_as(ghost, [str(base / "x")])

        assert [str(base / "x")] == [p for p, _ in results]
        assert "could not become user ghost" in (results[0][1] or "")


DOVECONF_OK = (
    HEADER_23
    + "first_valid_uid = 65534\nlast_valid_uid = 65534\nmaildir_stat_dirs = yes\n"
    + "namespace inbox {\n  inbox = yes\n  prefix = \n  separator = /\n}\nprotocols = imap\n"
)


def world(spool: Path, **kw: Any) -> World:
    config = kw.pop("config", None) or make_config(spool)
    return World(config_path=CONFIG, config=config, **kw)


class Ticks:
    """A fake clock: each call returns the next value of *ticks*."""

    def __init__(self, *ticks: float) -> None:
        self.ticks = list(ticks)

    def __call__(self) -> float:
        return self.ticks.pop(0)


class TestScanSlow:
    """``scan-slow``: a spool scan over half the post-login deadline, without [scan_cache]."""

    def test_slow_scan_reported(self, spool: Path) -> None:
        """1.2 s of a 2 s deadline: a warning with the time, the entry count and the fix."""
        for name in ("a", "b", "c"):
            maildir(spool / name)
        config = make_config(spool)

        scans = scan_structure(config, clock=Ticks(10.0, 11.2))
        found = check_scan_slow(config, scans)

        assert [1.2] == [round(s.seconds or 0, 6) for s in scans]
        assert [("scan-slow", "warning", str(spool))] == [
            (f.code, f.severity, f.subject) for f in found
        ]
        assert "(3 entries) took 1.20s" in found[0].message
        assert "deadline (2s)" in found[0].message
        assert "Configure [scan_cache]" in found[0].fix

    def test_half_the_deadline_is_fine(self, spool: Path) -> None:
        """Up to half of the config's deadline, and with [scan_cache], nothing is reported."""
        maildir(spool / "a")
        slow = make_config(spool, {"postlogin": {"deadline": 4}})
        cached = make_config(spool, {"scan_cache": {"dir": str(spool.parent / "cache")}})

        assert [] == check_scan_slow(slow, scan_structure(slow, clock=Ticks(0.0, 2.0)))
        assert [] == check_scan_slow(cached, scan_structure(cached, clock=Ticks(0.0, 9.0)))

    def test_failed_scan_not_timed(self, base: Path) -> None:
        """A spool that cannot be listed has no time and no scan-slow finding."""
        config = make_config(base / "nope")

        scans = scan_structure(config, clock=Ticks())

        assert [None] == [s.seconds for s in scans]
        assert [] == check_scan_slow(config, scans)

    def test_run_checks_reports_it(self, spool: Path) -> None:
        """The whole check times its own scan: a 1 microsecond deadline is always exceeded."""
        maildir(spool / "a")
        config = make_config(spool, {"postlogin": {"deadline": 0.000001}})

        report = run_checks(world(spool, config=config))

        assert ("scan-slow", "warning") in report.codes()


class TestRunChecks:
    """The whole check on a constructed world."""

    def test_config_error(self) -> None:
        """Without a configuration only its problems (and doveconf's) are reported."""
        report = run_checks(
            World(config_path="/c.toml", config_problems=("/c.toml: x: unknown key",))
        )

        assert ({("config-error", "error")}, 1, None) == (
            report.codes(),
            report.status,
            report.dialect,
        )

    def test_does_nothing(self, spool: Path) -> None:
        """A configuration without spools or actions is an error."""
        report = run_checks(world(spool, config=config_from_mapping({}), dovecot_version="2.3"))

        assert {("config-does-nothing", "error")} == report.codes()

    def test_clean_world(self, spool: Path) -> None:
        """A good setup reports no errors or warnings and lists the user."""
        maildir(spool / "sales")
        conf = DovecotConf.parse(DOVECONF_OK + line("imap", IMAP_OK))

        report = run_checks(
            world(
                spool,
                doveconf=conf,
                dovecot_version="2.3",
                version_source="test",
                users=(ALICE,),
                executable=lambda p: p == NSPROV,
                budget=budget_of(5),
            )
        )

        assert (set(), 0) == (report.codes(), report.status)
        assert [("alice", 1)] == [(u.user, u.served) for u in report.users]

    def test_problem_world(self, spool: Path) -> None:
        """Problems from every area end up in one report, errors first."""
        maildir(spool / "sales")
        maildir(spool / "secret", 0o700)
        unavailable = Finding(severity="info", code="doveconf-unavailable", message="m", fix="f")
        unknown = Finding(severity="error", code="user-unknown", message="m", fix="f")

        report = run_checks(
            world(
                spool,
                config=make_config(spool, {"dovecot": {"version": "2.4"}}),
                doveconf_finding=unavailable,
                dovecot_version="2.3",
                users=(ALICE, attrs.evolve(BOB, user="bob2", identity=ALICE.identity)),
                user_findings=(unknown,),
            )
        )

        assert {
            ("dialect-mismatch", "error"),
            ("user-unknown", "error"),
            ("doveconf-unavailable", "info"),
            ("no-access", "info"),
            ("virtual-users", "warning"),
        } == report.codes()
        assert ["error", "error", "warning", "info", "info"] == [
            f.severity for f in report.findings
        ]

    def test_enumerated(self, spool: Path) -> None:
        """Enumerated users without namespaces are left out of the report."""
        maildir(spool / "team", 0o750)
        gid = (spool / "team").stat().st_gid
        member = attrs.evolve(MEMBER, identity=Identity(uid=70003, gid=gid))

        report = run_checks(
            world(spool, dovecot_version="2.3", users=(ALICE, member), enumerated=True)
        )

        assert ["member"] == [u.user for u in report.users]

    def test_enumerated_failures(self, spool: Path) -> None:
        """Failures of enumerated users are summarised in one finding."""
        maildir(spool / "sales")
        homeless = attrs.evolve(BOB, home=None)

        some = run_checks(
            world(spool, dovecot_version="2.3", users=(ALICE, homeless), enumerated=True)
        )
        none = run_checks(world(spool, dovecot_version="2.3", users=(homeless,), enumerated=True))

        assert {("user-error", "warning")} == some.codes()
        assert ("user-error", "error") in none.codes()
        assert "1 of 2 users" in some.findings[0].message

    def test_clean(self, spool: Path, base: Path) -> None:
        """With a clean-up function, stale directories are removed and reported per result."""
        maildir(spool / "sales")
        nsp = base / "home" / ".nsprov"
        for name in (STALE, LEFT, OTHER):
            (nsp / name).mkdir(parents=True)
        user = attrs.evolve(ALICE, home=str(base / "home"))
        calls: list[tuple[str, list[str]]] = []

        def clean(u: MailUser, paths: Sequence[str]) -> list[tuple[str, str | None]]:
            calls.append((u.user, list(paths)))
            return [(p, None if p.endswith(STALE) else "Permission denied") for p in paths]

        report = run_checks(
            world(spool, dovecot_version="2.3", users=(user,), clean=clean, force=True)
        )

        assert [("alice", [str(nsp / STALE), str(nsp / LEFT)])] == calls
        assert {
            ("stale-removed", "info"),
            ("stale-remove-failed", "warning"),
            ("stale-other-scheme", "warning"),
        } == report.codes()

    def test_clean_empty_spool(self, spool: Path, base: Path) -> None:
        """An empty spool (an unmounted mount point) removes nothing, unless forced."""
        nsp = base / "home" / ".nsprov"
        dirs = [nsp / f"s-{entry_id(os.fsencode(str(spool)), raw)[0]}" for raw in (b"a", b"b")]
        for d in dirs:
            d.mkdir(parents=True)
        user = attrs.evolve(ALICE, home=str(base / "home"))
        calls: list[list[str]] = []

        def clean(_u: MailUser, paths: Sequence[str]) -> list[tuple[str, str | None]]:
            calls.append(list(paths))
            return [(p, None) for p in paths]

        report = run_checks(world(spool, dovecot_version="2.3", users=(user,), clean=clean))
        forced = run_checks(
            world(spool, dovecot_version="2.3", users=(user,), clean=clean, force=True)
        )

        assert {("stale-suspect", "warning")} == report.codes()
        assert "is empty" in report.findings[0].message
        assert [sorted(map(str, dirs))] == calls
        assert {("stale-removed", "info")} == forced.codes()

    def test_clean_most_gone(self, spool: Path, base: Path) -> None:
        """Removing more than --max-remove-fraction of a parent's directories needs --force."""
        maildir(spool / "sales")
        nsp = base / "home" / ".nsprov"
        ids = [entry_id(os.fsencode(str(spool)), raw)[0] for raw in (b"sales", b"a", b"b")]
        for ident in ids:
            (nsp / f"s-{ident}").mkdir(parents=True)
        user = attrs.evolve(ALICE, home=str(base / "home"))
        calls: list[list[str]] = []

        def clean(_u: MailUser, paths: Sequence[str]) -> list[tuple[str, str | None]]:
            calls.append(list(paths))
            return [(p, None) for p in paths]

        report = run_checks(world(spool, dovecot_version="2.3", users=(user,), clean=clean))
        loose = run_checks(
            world(spool, dovecot_version="2.3", users=(user,), clean=clean, max_remove_fraction=0.7)
        )

        assert {("stale-suspect", "warning")} == report.codes()
        assert "2 of 3" in report.findings[0].message
        assert 1 == len(calls)
        assert {("stale-removed", "info")} == loose.codes()
        assert (nsp / f"s-{ids[0]}").is_dir()


class TestSpoolMarks:
    """What the last check saw of a spool makes a moved or shrunk one suspect to --clean-stale."""

    @pytest.fixture(name="setup")
    def _setup(self, spool: Path, base: Path) -> tuple[MailUser, list[Path], Path]:
        """Four mailboxes with their directories, and the directory of a fifth one, removed."""
        for name in ("a", "b", "c", "d"):
            maildir(spool / name)
        nsp = base / "home" / ".nsprov"
        dirs = [
            nsp / f"s-{entry_id(os.fsencode(str(spool)), raw)[0]}"
            for raw in (b"a", b"b", b"c", b"d")
        ]
        for d in (*dirs, nsp / STALE):
            d.mkdir(parents=True)
        return attrs.evolve(ALICE, home=str(base / "home")), dirs, nsp / STALE

    def clean_calls(self) -> tuple[list[list[str]], Callable[..., list[tuple[str, str | None]]]]:
        calls: list[list[str]] = []

        def clean(_u: MailUser, paths: Sequence[str]) -> list[tuple[str, str | None]]:
            calls.append(list(paths))
            return [(p, None) for p in paths]

        return calls, clean

    def test_other_filesystem(self, spool: Path, setup: tuple[MailUser, list[Path], Path]) -> None:
        """A spool on another device than at the last check removes nothing, unless forced."""
        user, _, stale = setup
        s = spool.stat()
        before = {str(spool): SpoolMark(s.st_dev + 1, s.st_ino, 4)}
        calls, clean = self.clean_calls()

        report = run_checks(
            world(spool, dovecot_version="2.3", users=(user,), clean=clean, spool_marks=before)
        )
        forced = run_checks(
            world(
                spool,
                dovecot_version="2.3",
                users=(user,),
                clean=clean,
                spool_marks=before,
                force=True,
            )
        )

        assert {("stale-suspect", "warning")} == report.codes()
        assert "another file system" in report.findings[0].message
        assert [[str(stale)]] == calls
        assert {("stale-removed", "info")} == forced.codes()

    def test_lost_most_entries(self, spool: Path, setup: tuple[MailUser, list[Path], Path]) -> None:
        """A spool that lost more than --max-remove-fraction of its entries since then is suspect."""
        user, dirs, stale = setup
        for name in ("b", "c", "d"):
            shutil.rmtree(spool / name)
        for d in dirs[1:]:
            d.rmdir()
        s = spool.stat()
        before = {str(spool): SpoolMark(s.st_dev, s.st_ino, 4)}
        calls, clean = self.clean_calls()

        report = run_checks(
            world(spool, dovecot_version="2.3", users=(user,), clean=clean, spool_marks=before)
        )
        unmarked = run_checks(world(spool, dovecot_version="2.3", users=(user,), clean=clean))

        assert {("stale-suspect", "warning")} == report.codes()
        assert "has 1 entries, 4 at the last check" in report.findings[0].message
        assert [[str(stale)]] == calls
        assert {("stale-removed", "info")} == unmarked.codes()

    def test_unchanged_spool_cleans(
        self, spool: Path, setup: tuple[MailUser, list[Path], Path]
    ) -> None:
        """The same file system with a few entries fewer is cleaned as before, and recorded."""
        user, _, stale = setup
        s = spool.stat()
        before = {str(spool): SpoolMark(s.st_dev, s.st_ino, 5)}
        calls, clean = self.clean_calls()
        recorded: list[dict[str, SpoolMark]] = []

        report = run_checks(
            world(
                spool,
                dovecot_version="2.3",
                users=(user,),
                clean=clean,
                spool_marks=before,
                record_marks=lambda m: recorded.append(dict(m)),
            )
        )

        assert {("stale-removed", "info")} == report.codes()
        assert [[str(stale)]] == calls
        assert [{str(spool): SpoolMark(s.st_dev, s.st_ino, 4)}] == recorded

    def test_suspect_and_empty_not_recorded(self, spool: Path, base: Path) -> None:
        """A suspect spool keeps its last good mark, an empty one records nothing."""
        maildir(spool / "a")
        empty = base / "empty"
        empty.mkdir()
        config = config_from_mapping({"spool": [{"path": str(spool)}, {"path": str(empty)}]})
        s = spool.stat()
        before = {str(spool): SpoolMark(s.st_dev + 1, s.st_ino, 1)}
        recorded: list[dict[str, SpoolMark]] = []

        def record(marks: Mapping[str, SpoolMark]) -> None:
            recorded.append(dict(marks))

        run_checks(world(spool, config=config, spool_marks=before, record_marks=record))
        run_checks(world(spool, config=config, spool_marks=before, record_marks=record, force=True))

        assert [{}, {str(spool): SpoolMark(s.st_dev, s.st_ino, 1)}] == recorded

    def test_changed_spools(self) -> None:
        """Another device or more than the fraction gone is suspect; no mark or empty is not."""
        now = {
            "/same": SpoolMark(1, 2, 10),
            "/dev": SpoolMark(9, 2, 10),
            "/half": SpoolMark(1, 2, 5),
            "/most": SpoolMark(1, 2, 4),
            "/new": SpoolMark(1, 2, 1),
            "/empty": SpoolMark(9, 2, 0),
        }
        before = {p: SpoolMark(1, 2, 10) for p in ("/same", "/dev", "/half", "/most", "/empty")}

        assert ["/dev", "/most"] == sorted(changed_spools(now, before, max_fraction=0.5))
        assert ["/dev"] == sorted(changed_spools(now, before, max_fraction=0.6))

    def test_spool_marks(self, spool: Path, base: Path) -> None:
        """Each listed spool gives its device, inode and entry count; a missing one none."""
        maildir(spool / "a")
        config = config_from_mapping(
            {"spool": [{"path": str(spool)}, {"path": str(base / "missing")}]}
        )
        s = spool.stat()

        marks = spool_marks(scan_structure(config))

        assert {str(spool): SpoolMark(s.st_dev, s.st_ino, 1)} == marks

    def test_state_file(self, base: Path) -> None:
        """Marks round-trip through a 0600 state file; old ones expire; untrusted is ignored."""
        state = str(base / "state" / "check.json")
        store_marks(state, {"/a": SpoolMark(1, 2, 3), "/old": SpoolMark(1, 1, 1)}, now=0)
        store_marks(state, {"/b": SpoolMark(4, 5, 6)}, now=86400)
        store_marks(state, {"/a": SpoolMark(1, 2, 7)}, now=100 * 86400)

        assert {"/a": SpoolMark(1, 2, 7)} == load_marks(state)
        assert 0o600 == os.stat(state).st_mode & 0o777
        assert 0o700 == os.stat(base / "state").st_mode & 0o777
        os.chmod(state, 0o620)
        assert {} == load_marks(state)
        os.chmod(state, 0o600)
        os.chmod(base / "state", 0o777)  # noqa: S103 - the untrusted case
        store_marks(state, {"/c": SpoolMark(1, 1, 1)})
        assert {} == load_marks(state)
        os.chmod(base / "state", 0o700)
        Path(state).write_text('{"v": 1, "spools": {"/x": {"dev": "?"}, "/y": [1]}}')
        assert {} == load_marks(state)
        Path(state).write_text("{not json")
        assert {} == load_marks(state)
        assert {} == load_marks(str(base / "missing"))

    def test_scan_cache_marks(self, base: Path, spool: Path) -> None:
        """The [scan_cache] index gives a spool's device, inode and entry count."""
        from nsprov._scancache import update

        maildir(spool / "a")
        maildir(spool / "b")
        config = make_config(spool, {"scan_cache": {"dir": str(base / "cache")}})
        assert config.scan_cache is not None
        update(config.scan_cache, config.spools[0], Fs())
        s = spool.stat()

        assert {str(spool): SpoolMark(s.st_dev, s.st_ino, 2)} == cache_marks(config)
        assert {} == cache_marks(make_config(spool))
        assert {} == cache_marks(make_config(spool, {"scan_cache": {"dir": str(base / "no")}}))

    def test_main_records_and_uses_the_state(
        self, base: Path, spool: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """nsprov check records each spool in --state; a shrunk one only with --force."""
        for name in ("a", "b", "c", "d"):
            maildir(spool / name)
        cfg = base / "nsprov.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n')
        state = base / "state.json"
        argv = [f"--config={cfg}", f"--doveconf={base}/none", "--dovecot-version=2.3"]
        argv += [f"--state={state}", "--user=root", "--format=json"]

        main(argv)
        first = load_marks(str(state))
        for name in "abc":
            shutil.rmtree(spool / name)
        main(argv)
        kept = load_marks(str(state))
        main([*argv, "--force"])
        capsys.readouterr()

        s = spool.stat()
        assert {str(spool): SpoolMark(s.st_dev, s.st_ino, 4)} == first == kept
        assert {str(spool): SpoolMark(s.st_dev, s.st_ino, 1)} == load_marks(str(state))


class TestOutput:
    """JSON and table output, and when to colour."""

    @pytest.fixture(name="report")
    def _report(self) -> Report:
        return Report(
            config_path=CONFIG,
            dialect="2.3",
            dovecot_version="2.3",
            version_source="test",
            doveconf=True,
            findings=(
                Finding(
                    severity="error",
                    code="wiring-missing",
                    message="m1",
                    fix="f1",
                    subject="service pop3",
                ),
                Finding(severity="info", code="dot-entry", message="m2", fix="f2"),
            ),
            users=(
                UserReport(
                    user="alice",
                    uid=1,
                    gid=1,
                    home="/h",
                    found=2,
                    served=2,
                    env_bytes=10,
                    userdb_keys_bytes=5,
                ),
            ),
        )

    def test_json(self, report: Report) -> None:
        """The JSON document has the documented shape."""
        doc = json.loads(render_json(report))

        assert {
            "nsprov",
            "config",
            "dialect",
            "naming_scheme",
            "naming",
            "dovecot",
            "status",
            "summary",
            "findings",
            "users",
        } == set(doc)
        assert (NAMING_SCHEME, 1, {"error": 1, "warning": 0, "info": 1}) == (
            doc["naming_scheme"],
            doc["status"],
            doc["summary"],
        )
        assert {"version": "2.3", "source": "test", "doveconf": True} == doc["dovecot"]
        assert ["wiring-missing", "dot-entry"] == [f["code"] for f in doc["findings"]]
        assert "alice" == doc["users"][0]["user"]

    def test_table(self, report: Report) -> None:
        """The table shows every finding with its fix, the users and a summary, without colour."""
        text = render_table(report)

        assert "\033[" not in text
        assert "ERROR   wiring-missing  service pop3\n    m1\n    fix: f1\n" in text
        assert "  alice        1         2/2" in text
        assert text.endswith("1 error, 0 warnings, 1 info\n")

    def test_hostile_text_escaped(self) -> None:
        """Names in a finding's subject, message and fix, and user names, are shown escaped."""
        hostile = "".join(HOSTILE)
        finding = Finding(
            severity="error", code="dot-entry", subject=hostile, message=hostile, fix=hostile
        )
        report = attrs.evolve(
            Report(config_path=f"/etc/{hostile}.toml", findings=(finding,)),
        )

        text = render_table(report, colour=True)

        visible = re.sub(r"\033\[[0-9;]*m", "", text)  # the table's own colours
        assert all(line.isprintable() for line in visible.rstrip("\n").split("\n"))
        assert 4 == visible.count(escape(hostile))

    def test_colour(self, report: Report) -> None:
        """With colour, severities are painted."""
        text = render_table(report, colour=True)

        assert "\033[1;31mERROR  \033[0m" in text

    def test_nothing(self) -> None:
        """An empty report says so."""
        text = render_table(Report(config_path=CONFIG))

        assert "No problems found." in text
        assert "Dovecot version unknown" in text

    @pytest.mark.parametrize(
        ("tty", "environ", "expected"),
        [
            (True, {}, True),
            (False, {}, False),
            (True, {"NO_COLOR": "1"}, False),
            (True, {"NO_COLOR": ""}, True),
        ],
    )
    def test_use_colour(self, tty: bool, environ: dict[str, str], expected: bool) -> None:
        """Colour on a terminal unless NO_COLOR is set and not empty."""

        class Stream(io.StringIO):
            def isatty(self) -> bool:
                return tty

        assert expected == use_colour(Stream(), environ)

    def test_closed_stream(self) -> None:
        """A stream that cannot say whether it is a terminal gets no colour."""
        stream = io.StringIO()
        stream.close()

        assert not use_colour(stream, {})


def script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}")
    path.chmod(0o755)
    return str(path)


class TestTrustedFiles:
    """check_trusted_files: every file root uses for others, by the trust rule."""

    def test_directories(self, base: Path, spool: Path) -> None:
        """Cache and socket directories others may write are reported; absent ones are not."""
        for name in ("cache", "run"):
            (base / name).mkdir()
            (base / name).chmod(0o777)
        cfg = base / "nsprov.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n')
        config = config_from_mapping(
            {
                "spool": [{"path": str(spool)}],
                "scan_cache": {"dir": str(base / "cache")},
                "serve": {"socket": str(base / "run" / "s.sock")},
            }
        )

        found = check_trusted_files(str(cfg), config)
        absent = check_trusted_files(str(base / "none.toml"), None)

        assert [str(base / "cache"), str(base / "run")] == [f.subject for f in found]
        assert {"untrusted-file"} == {f.code for f in found}
        assert "scan cache directory not trusted" in found[0].message
        assert "socket directory not trusted" in found[1].message
        assert "chmod go-w" in found[0].fix
        assert [] == absent


class TestMain:
    """The command: arguments, doveconf and dovecot programs, exit status."""

    @pytest.fixture(autouse=True)
    def _state(self, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("nsprov._check.marks.DEFAULT_STATE_FILE", str(base / "check-state.json"))

    @pytest.fixture(name="setup")
    def _setup(self, base: Path, spool: Path) -> dict[str, str]:
        maildir(spool / "sales")
        cfg = base / "nsprov.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n')
        nsprov = script(base / "nsprov", "exit 0\n")
        text = DOVECONF_OK + line("imap", f"{nsprov} post-login --config={cfg} --protocol=imap")
        (base / "doveconf.out").write_text(text)
        return {
            "config": str(cfg),
            "doveconf": script(base / "doveconf", f"cat {base}/doveconf.out\n"),
            "dovecot": script(base / "dovecot", 'echo "2.3.19.1 (9b53102964)"\n'),
            "base": str(base),
        }

    def args(self, setup: dict[str, str], *extra: str) -> list[str]:
        return [
            f"--config={setup['config']}",
            f"--doveconf={setup['doveconf']}",
            f"--dovecot={setup['dovecot']}",
            *extra,
        ]

    def test_clean(self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        """A good setup exits 0; without --user the users come from doveconf's uid range."""
        status = main(self.args(setup, "--format=json"))

        doc = json.loads(capsys.readouterr().out)
        assert 0 == status
        assert [] == [f for f in doc["findings"] if f["severity"] != "info"]
        assert ["nobody"] == [u["user"] for u in doc["users"]]
        assert ("2.3", True) == (doc["dovecot"]["version"], doc["dovecot"]["doveconf"])

    def test_table_and_dispatch(
        self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """nsprov check is dispatched from the CLI and prints a table without colour off a TTY."""
        status = cli_main(["check", *self.args(setup, "--user=nobody")])

        out = capsys.readouterr().out
        assert 0 == status
        assert "\033[" not in out
        assert out.startswith(f"nsprov check: {setup['config']}\n")

    def test_errors_exit_1(self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown user is an error, and errors exit 1."""
        status = main(self.args(setup, "--user=nsprov-no-such-user", "--format=json"))

        doc = json.loads(capsys.readouterr().out)
        assert 1 == status
        assert [("user-unknown", "error")] == [
            (f["code"], f["severity"]) for f in doc["findings"] if f["severity"] != "info"
        ]

    @pytest.mark.parametrize(
        "bad",
        [
            ["--format=xml"],
            ["--dovecot-version=2"],
            ["--max-users=0"],
            ["--max-remove-fraction=2"],
            ["--max-remove-fraction=x"],
        ],
    )
    def test_usage_exit_2(self, bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        """Usage errors exit 2."""
        with pytest.raises(SystemExit) as info:
            main(bad)

        assert 2 == info.value.code
        assert "usage: nsprov check" in capsys.readouterr().err

    def test_no_doveconf(self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        """Without doveconf the Dovecot checks are skipped with one note."""
        argv = [f"--config={setup['config']}", f"--doveconf={setup['base']}/none"]

        status = main([*argv, "--dovecot-version=2.3", "--user=nobody", "--format=json"])

        doc = json.loads(capsys.readouterr().out)
        assert 0 == status
        assert [("doveconf-unavailable", "info")] == [
            (f["code"], f["severity"]) for f in doc["findings"]
        ]
        assert (False, "--dovecot-version") == (
            doc["dovecot"]["doveconf"],
            doc["dovecot"]["source"],
        )

    def test_doveconf_fails(
        self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A failing doveconf is an error quoting its message."""
        broken = script(Path(setup["base"]) / "broken", "echo 'Fatal: bad line' >&2\nexit 89\n")

        status = main([*self.args(setup), f"--doveconf={broken}", "--user=nobody", "--format=json"])

        doc = json.loads(capsys.readouterr().out)
        assert 1 == status
        assert ("doveconf-failed", True) == (
            doc["findings"][0]["code"],
            "Fatal: bad line" in doc["findings"][0]["message"],
        )

    @pytest.mark.parametrize(
        ("extra", "installed", "expected"),
        [
            (["--doveconf={doveconf}"], None, ("2.3", "doveconf")),
            (
                ["--doveconf={base}/none", "--dovecot={dovecot}"],
                None,
                ("2.3", "{dovecot} --version"),
            ),
            (
                ["--doveconf={base}/none", "--dovecot={base}/silent"],
                "2.4",
                ("2.4", "/usr/lib/dovecot"),
            ),
            (["--doveconf={base}/none", "--dovecot={base}/none"], None, (None, None)),
        ],
    )
    def test_version_sources(
        self,
        setup: dict[str, str],
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        extra: list[str],
        installed: str | None,
        expected: tuple[str | None, str | None],
    ) -> None:
        """Version sources: a given doveconf's header, dovecot --version, then libexecdir."""
        monkeypatch.setattr("nsprov._worker.installed_version", lambda _chain: installed)
        script(Path(setup["base"]) / "silent", "exit 1\n")
        argv = [e.format(**setup) for e in extra]

        main([f"--config={setup['config']}", "--user=nobody", "--format=json", *argv])

        doc = json.loads(capsys.readouterr().out)
        wanted = tuple(None if e is None else e.format(**setup) for e in expected)
        assert wanted == (doc["dovecot"]["version"], doc["dovecot"]["source"])

    def test_bad_config(self, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid configuration is reported and exits 1."""
        cfg = base / "bad.toml"
        cfg.write_text('[[spool]]\npath = "/x"\nbogus = 1\n')

        status = main([f"--config={cfg}", f"--doveconf={base}/none", "--dovecot-version=2.3"])

        out = capsys.readouterr().out
        assert 1 == status
        assert "config-error  spool[1].bogus" in out

    def codes_of(self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> list[Any]:
        status = main([*self.args(setup), "--user=nobody", "--format=json"])
        doc = json.loads(capsys.readouterr().out)
        return [status, *((f["code"], f["subject"], f["message"]) for f in doc["findings"])]

    def test_untrusted_config(
        self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A 0666 config is one untrusted-file error naming it and the rule (before: not reported)."""
        cfg = setup["config"]
        Path(cfg).chmod(0o666)

        status, *found = self.codes_of(setup, capsys)

        assert 1 == status
        [(code, subject, message)] = [f for f in found if f[0] != "acl-plugin-setting"]
        assert ("untrusted-file", cfg) == (code, subject)
        assert message.startswith(f"{cfg}: config file not trusted: {cfg} is writable by group")
        assert "nsprov uses a file only if" in message

    def test_fifo_config(self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        """A FIFO config is reported at once (before: check blocked for ever reading it)."""
        cfg = Path(setup["config"])
        cfg.unlink()
        os.mkfifo(cfg, 0o600)

        status, *found = self.codes_of(setup, capsys)

        assert 1 == status
        assert [("untrusted-file", str(cfg))] == [(c, s) for c, s, _ in found]
        assert "is not a regular file (a FIFO)" in found[0][2]

    def test_untrusted_ignore_file(
        self, setup: dict[str, str], spool: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A spool's ignore file others may write is an untrusted-file error (it is not used)."""
        ignore = spool / ".nsprovignore"
        ignore.write_text("*\n")
        ignore.chmod(0o666)

        status, *found = self.codes_of(setup, capsys)

        assert 1 == status
        [(code, subject, message)] = found
        assert ("untrusted-file", str(ignore)) == (code, subject)
        assert message.startswith(f"spool {spool}: ignore file not used: {ignore}: ignore file")

    def test_acl_plugin_flag(
        self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The acl_plugin flag is read from the file as written."""
        cfg = Path(setup["config"])
        cfg.write_text(cfg.read_text() + "[dovecot]\nacl_plugin = true\n")

        main([*self.args(setup), "--user=nobody", "--format=json"])

        doc = json.loads(capsys.readouterr().out)
        assert [("acl-plugin-setting", "info")] == [
            (f["code"], f["severity"]) for f in doc["findings"]
        ]
