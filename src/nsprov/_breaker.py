"""A circuit breaker per spool for post-login: a hung filesystem holds one worker, not one per login.

A ``stat()`` on a dead NFS server (or any filesystem whose server stopped
answering) never returns, and the process making it cannot die until it does:
the post-login deadline lets the login go on, but the worker stays, in state
``D``, about 14 MiB each.  Without a breaker every login of an outage adds one.

So the worker takes a shared ``flock`` on ``<dir>/<key>.lock`` while it scans a
spool, and tells its parent which spool it is in (through the callback it was
given: the worker sends the parent a ``T_SCAN`` frame).  When the
deadline cuts the scan, the parent touches ``<key>.cut`` (it never touches the
spool itself).  A later login, finding that marker:

* younger than :data:`BREAK_SECONDS`: skips the spool at once, one warning;
* older: tries an exclusive lock, without waiting.  Refused means a worker that
  the deadline cut still holds it, stuck in the filesystem: skip again.  Granted
  means nobody is stuck any more: this login scans the spool, and removes the
  marker when the scan returns.

The directory (:data:`SPOOL_STATE_DIR`, root's, under the trust rule) is used
only when post-login runs as root: a directory every user's post-login could
write would let one user switch spools off for all.  Standard library only.
"""

from __future__ import annotations

import fcntl
import time

from . import _os as os  # not the os module: see nsprov._os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

#: Where post-login keeps its per-spool markers and locks (root only).
SPOOL_STATE_DIR = "/run/nsprov/spools"
#: How long a spool whose scan the deadline cut is skipped without a look.
BREAK_SECONDS = 10.0

_LOCK = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def spool_state_dir() -> str | None:
    """:data:`SPOOL_STATE_DIR` for root, else None (no breaker)."""
    return SPOOL_STATE_DIR if os.geteuid() == 0 else None


def spool_key(path: str) -> str:
    """The file name stem of a spool's marker and lock."""
    from ._names import blake2b  # type: ignore[attr-defined]  # noqa: PLC0415 - loaded by the scan; not hashlib

    return blake2b(os.fsencode(path), digest_size=16, person=b"nsprov-breaker").hexdigest()


class SpoolBreaker:
    """The worker's side: :meth:`enter` before scanning a spool, :meth:`leave` after.

    *send* tells the parent which spool is being scanned: ``marker base NUL
    spool path`` when a scan begins, empty bytes when it ends (the worker
    wraps that in a ``T_SCAN`` frame).
    """

    def __init__(
        self,
        directory: str,
        send: Callable[[bytes], None],
        *,
        clock: Callable[[], float] = time.time,
        break_seconds: float = BREAK_SECONDS,
    ) -> None:
        self.directory = directory
        self.send = send
        self.clock = clock
        self.break_seconds = break_seconds
        self._dir_fd: int | None = None
        self._held: dict[str, tuple[int, bool]] = {}

    def _dir(self) -> int:
        """The directory under the trust rule (one walk per login), made (0700) when missing."""
        if self._dir_fd is None:
            from ._trust import open_trusted  # noqa: PLC0415 - stdlib only

            what = "spool state directory"
            try:
                self._dir_fd, _ = open_trusted(self.directory, what=what, directory=True)
            except FileNotFoundError:  # open first: a login does not mkdir what exists
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                self._dir_fd, _ = open_trusted(self.directory, what=what, directory=True)
        return self._dir_fd

    def enter(self, path: str) -> str | None:
        """None: scan spool *path* (its lock is held); else why it is skipped.

        Raises:
            OSError: The state directory cannot be made, or breaks the trust rule.
        """
        d = self._dir()
        key = spool_key(path)
        try:
            cut: float | None = os.stat(f"{key}.cut", dir_fd=d, follow_symlinks=False).st_mtime
        except FileNotFoundError:
            cut = None
        probing = cut is not None
        if cut is not None:
            age = self.clock() - cut
            if 0 <= age < self.break_seconds:
                return (
                    f"spool {path} skipped: the post-login deadline cut a scan of it {age:.0f}s "
                    f"ago (a hung or too slow filesystem); it is tried again after "
                    f"{self.break_seconds:g}s"
                )
            probe = os.open(f"{key}.lock", _LOCK, 0o600, dir_fd=d)
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return (
                    f"spool {path} skipped: a scan of it that the post-login deadline cut "
                    "has still not returned (a hung filesystem?)"
                )
            finally:
                os.close(probe)
        fd = os.open(f"{key}.lock", _LOCK, 0o600, dir_fd=d)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # exclusive holders only probe, never wait
            base = os.join(self.directory, key).encode()
            self.send(base + b"\0" + path.encode("utf-8", "surrogateescape"))
        except BaseException:
            os.close(fd)
            raise
        self._held[path] = (fd, probing)
        return None

    def leave(self, path: str) -> None:
        """The scan of *path* returned: release its lock (and clear a marker it was probing)."""
        fd, probing = self._held.pop(path)
        try:
            self.send(b"")
            if probing:
                try:
                    os.unlink(f"{spool_key(path)}.cut", dir_fd=self._dir())
                except FileNotFoundError:
                    pass
        finally:
            os.close(fd)

    def close(self) -> None:
        """Release every lock and the directory descriptor."""
        for fd, _ in self._held.values():
            os.close(fd)
        self._held.clear()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
