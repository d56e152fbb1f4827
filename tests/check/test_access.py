"""The spools' permissions and the path to them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from nsprov._check.access import acl_grants, check_mailboxes, check_traversal, no_access_findings
from nsprov._check.structure import scan_structure
from nsprov._config import config_from_mapping
from nsprov._perms import Identity, PosixAcl
from nsprov._scan import DEFAULT_FS

from .support import ALICE, BOB, MEMBER, codes, fake_acls, maildir, make_config

if TYPE_CHECKING:
    from pathlib import Path


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


class TestPartialGrant:
    """A directory granted without its cur and new: partial-grant, and no chgrp-trap reader."""

    def test_half_applied_acl(self, spool: Path) -> None:
        """setfacl on the directory only: the named group is a partial grant, not a reader."""
        box = maildir(spool / "box", 0o750)
        granted = PosixAcl(user_obj=7, group_obj=5, other=0, mask=5, groups=[(70100, 5)])
        fs = fake_acls({bytes(box): granted})  # cur and new keep their 0750, no entry
        scans = scan_structure(make_config(spool))

        findings = check_mailboxes(
            scans,
            fs=fs,
            access={},
            stat_dirs=True,
            gid_name=lambda g: {70100: "sales"}.get(g, str(g)),
        )

        partial = [f for f in findings if f.code == "partial-grant"]
        assert [("warning", str(box))] == [(f.severity, f.subject) for f in partial]
        assert "ACL group:sales (cur: other bits --- of mode 0750" in partial[0].message
        assert "needs r-x" in partial[0].message
        assert "setfacl -m g:GROUP:rx DIR/cur DIR/new" in partial[0].fix
        assert [] == [f for f in findings if f.code == "chgrp-trap"]

    def test_other_bits_on_the_directory_only(self, spool: Path) -> None:
        """chmod o+rx on the directory but not on cur: everybody (other) is a partial grant."""
        box = maildir(spool / "box", 0o755)
        (box / "cur").chmod(0o750)

        findings = check_mailboxes(scan_structure(make_config(spool)), stat_dirs=True)

        partial = [f for f in findings if f.code == "partial-grant"]
        assert 1 == len(partial)
        assert "everybody (other) (cur: other bits --- of mode 0750" in partial[0].message

    def test_whole_grant_is_no_finding(self, spool: Path) -> None:
        """The same ACL on the directory, cur and new: no partial-grant."""
        box = maildir(spool / "box", 0o750)
        acl = PosixAcl(user_obj=7, group_obj=5, other=0, mask=5, groups=[(70100, 5)])
        fs = fake_acls({bytes(box): acl, bytes(box / "cur"): acl, bytes(box / "new"): acl})

        findings = check_mailboxes(scan_structure(make_config(spool)), fs=fs, stat_dirs=True)

        assert [] == [f for f in findings if f.code == "partial-grant"]


class TestNoAccessReasons:
    """no-access names what refused the first checked user."""

    def test_mode_bits(self, spool: Path) -> None:
        """The owner, the mode bits and the group that were not enough."""
        box = maildir(spool / "secret")
        (box / "cur").chmod(0o750)
        scans = scan_structure(make_config(spool))
        gid = (box / "cur").stat().st_gid

        findings = no_access_findings(
            scans,
            {},
            1,
            fs=DEFAULT_FS,
            users=[ALICE],
            gid_name=lambda g: "staff" if g == gid else str(g),
        )

        assert 1 == len(findings)
        assert (
            "secret (alice: cur: other bits --- of mode 0750 (not the owner 0, not in group "
            "staff); needs r-x)" in findings[0].message
        )

    def test_acl_entry_and_mask(self, spool: Path) -> None:
        """A named entry cut by the mask is named with the mask."""
        box = maildir(spool / "secret", 0o750)
        acl = PosixAcl(user_obj=7, group_obj=4, other=0, mask=4, users=[(ALICE.identity.uid, 5)])
        fs = fake_acls({bytes(box): acl})
        scans = scan_structure(make_config(spool))

        findings = no_access_findings(
            scans,
            {},
            1,
            fs=fs,
            users=[ALICE],
            uid_name=lambda u: "alice" if u == ALICE.identity.uid else str(u),
        )

        assert (
            "secret (alice: the directory: ACL entry user:alice:r-x limited by mask r-- gives "
            "r--; needs r-x)" in findings[0].message
        )
