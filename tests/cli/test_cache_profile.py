"""``nsprov cache profile``: the login profile compiled ahead of the first login."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nsprov import _os, _profile
from nsprov._cli import main
from nsprov._defaults import STATE_DIR

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="profiles are kept for root only")


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    spool = tmp_path / "spool"
    spool.mkdir()
    path = tmp_path / "nsprov.toml"
    path.write_text(f'[[spool]]\npath = "{spool}"\n')
    yield path
    profile = Path(STATE_DIR) / _profile.file_name(str(path))
    profile.unlink(missing_ok=True)


@ROOT_ONLY
def test_writes_a_warm_profile(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _profile.load(str(config)) is None

    assert 0 == main(["cache", "profile", "--config", str(config)])

    assert _profile.load(str(config)) is not None
    assert "login profile written" in capsys.readouterr().out


@ROOT_ONLY
def test_a_config_the_profile_cannot_serve(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The scan cache is read by the full path only: nothing is written, and it says why."""
    config.write_text(config.read_text() + f'\n[scan_cache]\ndir = "{config.parent}"\n')

    rc = main(["cache", "profile", "--config", str(config)])

    assert (1, None) == (rc, _profile.load(str(config)))
    assert "([scan_cache]): logins take the full path" in capsys.readouterr().err


def test_not_root(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_os, "geteuid", lambda: 1000)

    assert 1 == main(["cache", "profile", "--config", str(config)])
    assert "root only" in capsys.readouterr().err


@ROOT_ONLY
def test_untrusted_config(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config.chmod(0o666)

    assert 1 == main(["cache", "profile", "--config", str(config)])
    assert "not trusted" in capsys.readouterr().err
