"""The namespaces job (nsprov._engine): plan() is fit(resolve(...))."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nsprov._config import config_from_mapping
from nsprov._engine import Resolved, ensure_dirs, fit, plan, resolve
from nsprov._env import EnvLimits
from nsprov._identity import MailUser
from nsprov._perms import Identity
from nsprov._scan import Fs

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

OTHER = MailUser(user="other", home="/home/other", identity=Identity(uid=70002, gid=70002))


@pytest.fixture(name="spool")
def _spool() -> Iterator[Path]:
    """A spool of five maildirs everybody may read, under directories everybody may search."""
    base = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nsprov-test-"))
    base.chmod(0o755)
    spool = base / "spool"
    for name in ("a", "b", "c", "d", "e"):
        for sub in ("cur", "new", "tmp"):
            (spool / name / sub).mkdir(parents=True, mode=0o755)
            (spool / name / sub).chmod(0o755)
        (spool / name).chmod(0o755)
    spool.chmod(0o755)
    yield spool
    shutil.rmtree(base)


def config(spool: Path, **kw: Any) -> Any:
    return config_from_mapping({"spool": [{"path": str(spool), **kw}]})


class TestResolveFit:
    """resolve finds and checks the namespaces; fit renders them for a dialect and its limits."""

    def test_plan_is_fit_of_resolve(self, spool: Path) -> None:
        """plan() gives what fit(resolve()) gives."""
        cfg = config(spool)
        env = {"USER": "other", "USERDB_KEYS": ""}

        assert plan(cfg, OTHER, env) == fit(resolve(cfg, OTHER), env)

    def test_resolve_needs_no_environment(self, spool: Path) -> None:
        """resolve gives the namespaces alone, without rendering any variable."""
        resolved = resolve(config(spool), OTHER)

        assert (Resolved, ["a", "b", "c", "d", "e"]) == (
            type(resolved),
            [s.entry for s in resolved.discovery.served],
        )
        assert [s.namespace for s in resolved.discovery.served] == list(resolved.namespaces)

    def test_one_resolution_two_fits(self, spool: Path) -> None:
        """One resolution fits a roomy and a tight environment; only the tight one cuts."""
        resolved = resolve(config(spool), OTHER)
        roomy = fit(resolved, {})
        tight = fit(resolved, {}, limits=EnvLimits(budget=600))

        assert 5 == len(roomy.discovery.served)
        assert 0 < len(tight.discovery.served) < 5
        assert any("fit the kernel's environment limits" in w for w in tight.warnings)
        assert {"over-limit"} == {k.reason for k in tight.discovery.skipped}

    def test_resolve_scans_with_the_fs_given(self, spool: Path) -> None:
        """resolve scans through the Fs it is given (the seam serve's recorder uses)."""
        seen: list[bytes] = []

        def lstat(path: bytes) -> os.stat_result:
            seen.append(path)
            return os.lstat(path)

        resolve(config(spool), OTHER, fs=Fs(lstat=lstat))

        assert os.fsencode(spool / "a") in seen

    def test_max_warning_from_resolve(self, spool: Path) -> None:
        """The namespace.max cut is resolve's, with its warning; fit keeps it."""
        cfg = config_from_mapping({"spool": [{"path": str(spool)}], "namespace": {"max": 2}})
        resolved = resolve(cfg, OTHER)
        expected = "5 namespaces found, namespace.max=2; the first 2 in discovery order are served"

        assert ((expected,), (expected,)) == (resolved.warnings, fit(resolved, {}).warnings)


def test_ensure_dirs_makes_only_missing_directories(tmp_path: Path) -> None:
    """An index directory that exists costs a stat, no mkdir; a missing one is made 0700."""
    there, missing = tmp_path / "there", tmp_path / "a" / "missing"
    there.mkdir()
    made: list[str] = []
    real_mkdir = os.mkdir

    def mkdir(path: Any, mode: int = 0o777, **kw: Any) -> None:
        made.append(os.fsdecode(path))
        real_mkdir(path, mode, **kw)

    os.mkdir = mkdir
    try:
        assert [] == ensure_dirs([str(there), str(missing)])
    finally:
        os.mkdir = real_mkdir
    assert [str(missing.parent), str(missing)] == made
    assert 0o700 == missing.stat().st_mode & 0o777
