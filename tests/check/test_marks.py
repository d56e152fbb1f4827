"""Spool marks: a moved or shrunk spool makes --clean-stale remove nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest

from nsprov._check.marks import (
    SpoolMark,
    cache_marks,
    changed_spools,
    load_marks,
    spool_marks,
    store_marks,
)
from nsprov._check.report import run_checks
from nsprov._check.structure import scan_structure
from nsprov._cli.check import main
from nsprov._config import config_from_mapping
from nsprov._names import entry_id
from nsprov._scan import Fs

from .support import ALICE, STALE, maildir, make_config, world

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from nsprov._identity import MailUser


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
