"""Per-user checks."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import attrs
import pytest

from nsprov._check.users import base_environ, check_user, check_virtual, select_users
from nsprov._env import EnvLimits
from nsprov._scan import Fs

from .support import ALICE, BOB, budget_of, maildir, make_config

if TYPE_CHECKING:
    from pathlib import Path


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

    def test_budget_for_24(self, five: Path) -> None:
        """The 2.4 dialect has a zero-fork route too (Lua): its budget is computed and reported."""
        config = make_config(five, {"dovecot": {"version": "2.4"}})

        report, _, _ = check_user(config, ALICE, budget=budget_of(3))

        assert report is not None
        assert report.serve is not None
        assert 3 == report.as_dict()["serve"]["fits"]

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
