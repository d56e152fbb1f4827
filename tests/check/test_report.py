"""run_checks over a whole World."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import attrs

from nsprov._check.doveconf import DovecotConf
from nsprov._check.findings import Finding
from nsprov._check.gather import World
from nsprov._check.report import run_checks
from nsprov._config import config_from_mapping
from nsprov._names import entry_id
from nsprov._perms import Identity

from .support import (
    ALICE,
    BOB,
    DOVECONF_OK,
    IMAP_OK,
    LEFT,
    MEMBER,
    NSPROV,
    OTHER,
    STALE,
    budget_of,
    line,
    maildir,
    make_config,
    world,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from nsprov._identity import MailUser


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
