"""Fixtures for live tests: a world-traversable base directory and throwaway accounts."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .harness import SystemAccounts, live_available

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(name="live_base")
def _live_base() -> Iterator[Path]:
    """A 0755 directory under /var/tmp for homes, spools and Dovecot work directories.

    Skips the test when live tests cannot run here (no root, no Dovecot).
    """
    if reason := live_available():
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="nsprov-live-", dir="/var/tmp"))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(name="accounts")
def _accounts(live_base: Path) -> Iterator[SystemAccounts]:
    """Throwaway UNIX users and groups with homes under ``live_base``, removed afterwards."""
    with SystemAccounts(live_base) as accounts:
        yield accounts
