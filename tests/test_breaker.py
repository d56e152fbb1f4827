"""The per-spool breaker of post-login (issue 16, findings 8 and 9)."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nsprov import _postlogin as pl
from nsprov._breaker import SpoolBreaker, spool_key, spool_state_dir
from nsprov._config import config_from_mapping
from nsprov._identity import MailUser
from nsprov._perms import Identity
from nsprov._postlogin import T_SCAN, frame, run_worker
from nsprov._scan import discover

if TYPE_CHECKING:
    from collections.abc import Iterator

SPOOL = "/srv/spool"
USER = MailUser(user="u", home="/home/u", identity=Identity(uid=70002, gid=70002))


@pytest.fixture(name="state")
def _state(tmp_path: Path) -> Path:
    return tmp_path / "spools"


@pytest.fixture(name="sent")
def _sent() -> list[bytes]:
    return []


@pytest.fixture(name="breaker")
def _breaker(state: Path, sent: list[bytes]) -> Iterator[SpoolBreaker]:
    b = SpoolBreaker(str(state), sent.append)
    yield b
    b.close()


def cut(state: Path, spool: str, age: float) -> Path:
    """Mark *spool* as cut by the deadline *age* seconds ago."""
    state.mkdir(mode=0o700, exist_ok=True)
    marker = state / f"{spool_key(spool)}.cut"
    marker.touch()
    when = time.time() - age
    os.utime(marker, (when, when))
    return marker


class TestSpoolBreaker:
    """A spool whose scan the deadline cut is skipped until no worker is stuck in it."""

    def test_fresh_spool_scanned(
        self, breaker: SpoolBreaker, state: Path, sent: list[bytes]
    ) -> None:
        """Without a marker the spool is scanned, and the parent is told where the scan is."""
        base = str(state / spool_key(SPOOL)).encode()

        assert None is breaker.enter(SPOOL)
        breaker.leave(SPOOL)

        assert [base + b"\0" + SPOOL.encode(), b""] == sent
        assert 0o700 == state.stat().st_mode & 0o777

    def test_recent_cut_skips(self, breaker: SpoolBreaker, state: Path) -> None:
        """A scan cut 3 s ago: the spool is skipped at once, with the reason."""
        cut(state, SPOOL, 3)

        why = breaker.enter(SPOOL)

        assert why is not None
        assert why.startswith(
            f"spool {SPOOL} skipped: the post-login deadline cut a scan of it 3s ago"
        )

    def test_stuck_worker_skips(self, breaker: SpoolBreaker, state: Path) -> None:
        """After the break, a worker still holding the lock (stuck) keeps the spool skipped."""
        marker = cut(state, SPOOL, 60)
        stuck = os.open(state / f"{spool_key(SPOOL)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(stuck, fcntl.LOCK_SH)
        try:
            why = breaker.enter(SPOOL)
        finally:
            os.close(stuck)

        assert why is not None
        assert "has still not returned" in why
        assert marker.exists()

    def test_probe_clears_marker(self, breaker: SpoolBreaker, state: Path) -> None:
        """After the break, with nobody stuck, one login scans again and clears the marker."""
        marker = cut(state, SPOOL, 60)

        assert None is breaker.enter(SPOOL)
        assert marker.exists()
        breaker.leave(SPOOL)

        assert not marker.exists()

    def test_untrusted_directory(self, tmp_path: Path, sent: list[bytes]) -> None:
        """A state directory others may write is refused, naming the rule."""
        state = tmp_path / "open"
        state.mkdir()
        state.chmod(0o777)
        b = SpoolBreaker(str(state), sent.append)

        with pytest.raises(OSError, match="writable by group or other"):
            b.enter(SPOOL)

    def test_state_dir_for_root_only(self) -> None:
        """Only root's post-login has a breaker: nobody else owns a directory all logins share."""
        expected = "/run/nsprov/spools" if os.geteuid() == 0 else None

        assert expected == spool_state_dir()


class TestDiscover:
    """discover() honours the breaker spool by spool."""

    @pytest.fixture(name="base")
    def _base(self) -> Iterator[Path]:
        """A directory whose ancestors everybody may search (unlike pytest's tmp_path)."""
        path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nsprov-test-"))
        path.chmod(0o755)
        yield path
        shutil.rmtree(path)

    @staticmethod
    def spools(base: Path) -> list[Path]:
        out = []
        for name in ("one", "two"):
            box = base / name / f"box-{name}"  # distinct prefixes
            for sub in ("cur", "new"):
                (box / sub).mkdir(parents=True)
            for p in (base / name, box, box / "cur", box / "new"):
                p.chmod(0o755)
            out.append(base / name)
        return out

    def test_skipped_spool_others_served(
        self, base: Path, breaker: SpoolBreaker, state: Path
    ) -> None:
        """A cut spool is left out with one warning; the next spool is still served."""
        one, two = self.spools(base)
        config = config_from_mapping({"spool": [{"path": str(one)}, {"path": str(two)}]})
        cut(state, str(one), 1)

        found = discover(config, USER, keep_skipped=False, breaker=breaker)

        assert [str(two)] == [s.spool for s in found.served]
        assert 1 == len(found.warnings)
        assert found.warnings[0].startswith(f"spool {one} skipped")

    def test_broken_breaker_scans(self, base: Path, tmp_path: Path, sent: list[bytes]) -> None:
        """A state directory that cannot be used: every spool is scanned, with one warning."""
        one, two = self.spools(base)
        config = config_from_mapping({"spool": [{"path": str(one)}, {"path": str(two)}]})
        (tmp_path / "file").write_text("")
        broken = SpoolBreaker(str(tmp_path / "file" / "spools"), sent.append)

        found = discover(config, USER, keep_skipped=False, breaker=broken)

        assert 2 == len(found.served)
        assert [True] == [w.startswith("spool breaker not used: ") for w in found.warnings]


class TestCutByDeadline:
    """The parent marks the spool its worker was scanning when the deadline passed."""

    def test_marker_and_one_log_line_per_interval(
        self, state: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Two cut scans: each marks the spool; the explanation is logged once."""
        state.mkdir(mode=0o700)
        base = str(state / spool_key(SPOOL)).encode()

        def work(fd: int) -> None:
            os.write(fd, frame(T_SCAN, base + b"\0" + SPOOL.encode()))
            time.sleep(5)

        errors = [run_worker(work, 0.3).error for _ in range(2)]
        lines = capfd.readouterr().err.splitlines()

        assert [f"deadline of 0.3s passed while scanning spool {SPOOL}"] * 2 == errors
        assert (state / f"{spool_key(SPOOL)}.cut").exists()
        assert 1 == len(lines), lines
        assert lines[0].startswith(f"nsprov: spool {SPOOL}: the 0.3s post-login deadline cut")

    def test_finished_scan_not_marked(self, state: Path) -> None:
        """A scan that ended before the deadline leaves no marker."""
        state.mkdir(mode=0o700)
        base = str(state / spool_key(SPOOL)).encode()

        def work(fd: int) -> None:
            os.write(fd, frame(T_SCAN, base + b"\0" + SPOOL.encode()) + frame(T_SCAN, b""))
            time.sleep(5)

        result = run_worker(work, 0.3)

        assert "deadline of 0.3s passed" == result.error
        assert not (state / f"{spool_key(SPOOL)}.cut").exists()

    def test_unwritable_marker_logged(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A marker that cannot be written is said, and the explanation still logged."""
        base = str(tmp_path / "missing" / "x").encode()

        assert " while scanning spool /s" == pl._cut(base + b"\0/s", 2.0)
        err = capfd.readouterr().err

        assert "spool /s: cannot mark it for the next logins" in err
        assert "spool /s: the 2.0s post-login deadline cut" in err
