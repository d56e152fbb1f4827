"""Work with a deadline for ``nsprov show`` and ``nsprov check``: a hung spool ends in an error.

A ``stat()`` on a hung filesystem never returns, and neither a thread nor the
process around it can be stopped while it waits.  So the work runs in a forked
child that sends its pickled result back on a pipe; when the deadline passes,
the child is killed (it may stay stuck until the filesystem answers; it holds
neither the terminal nor the caller's pipes, nor a lock) and the caller gets
:class:`DeadlineError`.
"""

from __future__ import annotations

import os
import pickle
import select
import time
from typing import TYPE_CHECKING, TypeVar

from .exceptions import NsprovError

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

#: The default deadline of ``nsprov show`` and of each user of ``nsprov check``, in seconds.
DEFAULT_DEADLINE = 30.0


class DeadlineError(NsprovError, TimeoutError):
    """The work did not finish within its deadline (a hung or very slow filesystem)."""


def run_with_deadline(work: Callable[[], T], seconds: float, *, what: str) -> T:
    """``work()`` in a forked child, within *seconds*; its result or its exception.

    The child's exception comes back as an :class:`~nsprov.exceptions.NsprovError`
    with the same message when it cannot be pickled.

    Raises:
        DeadlineError: *seconds* passed first; the message names *what*.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its result is what the tests check
        status = 0
        try:
            os.close(r)
            # A child stuck in the filesystem must not hold the caller's terminal or pipes
            # open (``nsprov show | less`` would wait for it): everything goes through *w*.
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            try:
                data = b"O" + pickle.dumps(work())
            except BaseException as e:
                try:
                    data = b"E" + pickle.dumps(e)
                    pickle.loads(data[1:])  # noqa: S301 - not every exception round-trips
                except Exception:
                    data = b"M" + str(e).encode("utf-8", "backslashreplace")
            view = memoryview(data)
            while view:
                view = view[os.write(w, view) :]
        except BaseException:
            status = 1
        os._exit(status)
    os.close(w)
    chunks: list[bytes] = []
    end = time.monotonic() + seconds
    try:
        poller = select.poll()
        poller.register(r, select.POLLIN)
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                os.kill(pid, 9)
                _reap(pid, wait=False)
                raise DeadlineError(
                    f"{what} did not finish within {seconds:g}s (a hung or very slow "
                    "filesystem?); the process doing it was killed"
                )
            if not poller.poll(remaining * 1000):
                continue
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    _reap(pid, wait=True)
    data = b"".join(chunks)
    if data[:1] == b"O":
        return pickle.loads(data[1:])  # type: ignore[no-any-return]  # noqa: S301 - our own child
    if data[:1] == b"E":
        raise pickle.loads(data[1:])  # noqa: S301
    raise NsprovError(data[1:].decode("utf-8", "replace") or f"{what} failed")


def _reap(pid: int, *, wait: bool) -> None:
    """Wait for the child: fully, or up to 0.1 s after SIGKILL (one stuck in the kernel stays)."""
    end = time.monotonic() + 0.1
    while True:
        try:
            done, _ = os.waitpid(pid, 0 if wait else os.WNOHANG)
        except ChildProcessError:  # pragma: no cover - reaped elsewhere
            return
        if done or time.monotonic() > end:
            return
        time.sleep(0.002)
