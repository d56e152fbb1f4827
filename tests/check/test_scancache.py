"""The scan-slow check (a spool too slow without a scan cache)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nsprov._check.report import run_checks
from nsprov._check.scancache import check_scan_slow
from nsprov._check.structure import scan_structure

from .support import Ticks, maildir, make_config, world

if TYPE_CHECKING:
    from pathlib import Path


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
