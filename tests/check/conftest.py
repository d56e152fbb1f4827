"""Fixtures of the check tests: a scratch directory and a spool in it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


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
