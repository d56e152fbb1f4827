"""Work in a child with a deadline, for show and check (issue 16, finding 8)."""

from __future__ import annotations

import os
import time

import pytest

from nsprov._deadline import DeadlineError, run_with_deadline
from nsprov.exceptions import ConfigError, NsprovError


class Unpicklable(Exception):  # noqa: N818 - a test double
    """An exception whose constructor pickle cannot call again."""

    def __init__(self, a: int, *, b: int) -> None:
        super().__init__(f"a={a} b={b}")


class TestRunWithDeadline:
    """The result, the exception, or DeadlineError once the time is up."""

    def test_result(self) -> None:
        """The child's return value comes back."""
        assert {"pid": os.getpid()} != run_with_deadline(lambda: {"pid": os.getpid()}, 5, what="x")

    def test_exception(self) -> None:
        """The child's exception is raised in the parent."""
        with pytest.raises(ConfigError, match="bad config"):
            run_with_deadline(lambda: (_ for _ in ()).throw(ConfigError("bad config")), 5, what="x")

    def test_unpicklable_exception(self) -> None:
        """An exception that does not round-trip comes back as its message."""

        def work() -> None:
            raise Unpicklable(1, b=2)

        with pytest.raises(NsprovError, match="a=1 b=2"):
            run_with_deadline(work, 5, what="x")

    def test_deadline(self) -> None:
        """Work that does not finish in time: DeadlineError naming it, soon after the deadline."""
        started = time.monotonic()

        with pytest.raises(DeadlineError, match=r"the scan did not finish within 0\.2s"):
            run_with_deadline(lambda: time.sleep(30), 0.2, what="the scan")

        assert time.monotonic() - started < 2
