"""Shared pytest configuration.

Live tests (real Dovecot, real UNIX users) are marked ``live``.  They skip on a
machine without root or Dovecot, but when ``NSPROV_REQUIRE_LIVE=1`` (set by
``.ci/run``) a skipped live test is reported as a failure instead.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from collections.abc import Generator

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REQUIRE_LIVE = os.environ.get("NSPROV_REQUIRE_LIVE") == "1"

# nsprov refuses a config or ignore file that group or other may write (the trust rule,
# nsprov._trust): files the tests write must not depend on the caller's umask (002 on some
# desktops), or every config a test writes would be refused.
os.umask(0o022)


@pytest.fixture(name="base")
def _base() -> Generator[Path]:
    """A fresh 0755 directory under /var/tmp whose ancestors everybody may search.

    Unlike pytest's ``tmp_path`` (under a 0700 ``/tmp/pytest-of-root``), a process that
    dropped to another user can reach it: the permission checks run against what that
    user may do.  Shared by the test modules of every wing; a module may still define
    its own ``base``, which takes precedence.
    """
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nsprov-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Turn a skipped ``live`` test into a failure when live tests are required."""
    report = yield
    if (
        REQUIRE_LIVE
        and report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("live") is not None
    ):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"live test skipped but NSPROV_REQUIRE_LIVE=1: {reason}"
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """After live tests: how many nsprov post-logins each login path served."""
    harness = next(
        (m for name, m in list(sys.modules.items()) if name.endswith("live.harness")), None
    )
    seen = getattr(harness, "PATHS_SEEN", None)
    if seen:
        tally = ", ".join(f"{path} {n}" for path, n in sorted(seen.items()))
        terminalreporter.write_line(f"live nsprov post-logins by login path: {tally}")
