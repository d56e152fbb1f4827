"""The spools' structure: what is servable, what is skipped."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from nsprov._check.structure import case_collisions, scan_structure, structure_findings
from nsprov._config import config_from_mapping

from .support import codes, maildir, make_config

if TYPE_CHECKING:
    from pathlib import Path


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
