"""The trust rule: which files nsprov, running as root, may use on behalf of others.

``nsprov post-login`` runs as root on every login and acts on what some files
say: the configuration, a spool's ignore file, the config and scan caches, the
directory of the ``nsprov serve`` socket.  Whoever may write one of them, or
replace it, decides what root does.  So each is used only when it passes one
rule:

* the file and every directory on the way from ``/`` to it are owned by root
  or by the uid nsprov runs as;
* none of them is writable by group or other.  A directory above the file may
  be, when it has the sticky bit (``/tmp``, mode 1777): there only an entry's
  owner may rename or remove it, and the next component must be owned by root
  or by us anyway.  The final directory (a cache or socket directory) may not;
* a symbolic link on the way (``/var/run -> /run``) is followed only when the
  link itself is owned by root or by us, in a directory that passes; its
  target is then walked by the same rule (at most 40 links, as the kernel);
* a file is a regular file (a FIFO, a device, a socket is refused before it is
  opened for reading, so nothing blocks and no driver runs) no larger than the
  caller's cap, and it is read from the descriptor that was checked.

Each component is opened with ``O_PATH | O_NOFOLLOW`` relative to the
descriptor of the directory above it and checked with ``fstat``: what is
checked is what is used, whatever is renamed meanwhile.  Root's own checks pass
every permission test, so the rule looks at owners and mode bits only (with a
POSIX ACL the group bits are the mask, so a named user's write access shows).

Standard library only, and imported by the post-login worker: no attrs here.
"""

from __future__ import annotations

import stat as st

from . import _os as os  # not the os module: see nsprov._os
from .exceptions import UntrustedFileError

TYPE_CHECKING = False  # typing costs the login path ~7 ms
if TYPE_CHECKING:
    from collections.abc import Iterable

#: The largest configuration file nsprov reads.
MAX_FILE_SIZE = 1 << 20
#: How many symbolic links one walk follows (the kernel's limit is 40 too).
MAX_LINKS = 40

_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def rule(euid: int | None = None) -> str:
    """The trust rule in one sentence, for error messages."""
    uid = os.geteuid() if euid is None else euid
    who = "root" if uid == 0 else f"root or uid {uid}"
    return (
        f"nsprov uses a file only if it and every directory above it are owned by {who} "
        "and writable by neither group nor other (a sticky directory such as /tmp above it "
        "excepted), and only a regular file"
    )


def _show(path: bytes) -> str:
    return os.fsdecode(path)


def _join(parent: bytes, name: bytes) -> bytes:
    return (parent if parent.endswith(b"/") else parent + b"/") + name


def _parts(path: bytes) -> list[bytes]:
    """The components of *path*, last first (a stack to pop)."""
    return [p for p in reversed(path.split(b"/")) if p and p != b"."]


class _Walk:
    """One resolution of a path, component by component, from ``/``."""

    def __init__(self, path: str | bytes, what: str, uids: Iterable[int]) -> None:
        raw = os.fsencode(path)
        if not raw.startswith(b"/"):
            raw = _join(os.fsencode(os.getcwd()), raw)
        self.given = _show(os.fsencode(path))
        self.what = what
        self.uids = frozenset(uids)
        self.todo = _parts(raw)
        self.stack: list[tuple[int, bytes]] = []
        self.links = 0

    def refuse(self, where: bytes, why: str) -> UntrustedFileError:
        return UntrustedFileError(
            f"{self.given}: {self.what} not trusted: {_show(where)} {why}; {rule()}",
            path=self.given,
            component=_show(where),
        )

    def close(self) -> None:
        while self.stack:
            os.close(self.stack.pop()[0])

    def check_owner(self, where: bytes, s: os.stat_result) -> None:
        if s.st_uid not in self.uids:
            raise self.refuse(where, f"is owned by uid {s.st_uid}")

    def check_dir(self, where: bytes, s: os.stat_result, *, final: bool) -> None:
        self.check_owner(where, s)
        if s.st_mode & 0o022 and (final or not s.st_mode & st.S_ISVTX):
            raise self.refuse(
                where, f"is writable by group or other (mode {st.S_IMODE(s.st_mode):04o})"
            )

    def root(self) -> None:
        fd = os.open(b"/", _PATH | os.O_DIRECTORY)
        self.stack.append((fd, b"/"))
        self.check_dir(b"/", os.fstat(fd), final=not self.todo)

    def run(self) -> tuple[int, os.stat_result, bytes]:
        """Walk to the last component; its ``O_PATH`` descriptor, stat and path (the caller closes)."""
        self.root()
        while self.todo:
            name = self.todo.pop()
            if name == b"..":
                if len(self.stack) > 1:
                    os.close(self.stack.pop()[0])
                continue
            parent_fd, parent = self.stack[-1]
            where = _join(parent, name)
            fd = os.open(name, _PATH, dir_fd=parent_fd)
            try:
                s = os.fstat(fd)
                if st.S_ISLNK(s.st_mode):
                    self.follow(name, where, s)
                    os.close(fd)
                    continue
            except BaseException:
                os.close(fd)
                raise
            self.stack.append((fd, where))
            if not self.todo:
                return fd, s, where
            if not st.S_ISDIR(s.st_mode):
                raise NotADirectoryError(20, "Not a directory", _show(where))
            self.check_dir(where, s, final=False)
        # The path named a directory on the way (``/`` or ``x/..``).
        fd, where = self.stack[-1]
        return fd, os.fstat(fd), where

    def follow(self, name: bytes, where: bytes, s: os.stat_result) -> None:
        self.check_owner(where, s)
        self.links += 1
        if self.links > MAX_LINKS:
            raise OSError(40, "Too many levels of symbolic links", _show(where))
        target = os.readlink(name, dir_fd=self.stack[-1][0])
        again = os.stat(name, dir_fd=self.stack[-1][0], follow_symlinks=False)
        if (again.st_dev, again.st_ino) != (s.st_dev, s.st_ino):
            raise self.refuse(where, "changed while it was read")
        if target.startswith(b"/"):
            while len(self.stack) > 1:
                os.close(self.stack.pop()[0])
        self.todo += _parts(target)


def open_trusted(
    path: str | bytes,
    *,
    what: str = "file",
    directory: bool = False,
    uids: Iterable[int] | None = None,
) -> tuple[int, os.stat_result]:
    """Open *path* under the trust rule; the descriptor and its stat (the caller closes).

    A file is opened ``O_RDONLY`` (after its type was checked on an ``O_PATH``
    descriptor); with *directory*, the ``O_PATH`` descriptor of the directory,
    for ``dir_fd`` arguments.  *uids* are the trusted owners: root and the
    effective uid by default.

    Raises:
        UntrustedFileError: *path* or a directory above it breaks the rule.
        OSError: *path* cannot be resolved (``FileNotFoundError`` when it is absent).
    """
    walk = _Walk(path, what, {0, os.geteuid()} if uids is None else uids)
    try:
        fd, s, where = walk.run()
        if directory:
            if not st.S_ISDIR(s.st_mode):
                raise NotADirectoryError(20, "Not a directory", walk.given)
            walk.check_dir(where, s, final=True)
            walk.stack.pop()
            return fd, s
        if not st.S_ISREG(s.st_mode):
            raise walk.refuse(where, f"is not a regular file ({_kind(s.st_mode)})")
        walk.check_owner(where, s)
        if s.st_mode & 0o022:
            raise walk.refuse(
                where, f"is writable by group or other (mode {st.S_IMODE(s.st_mode):04o})"
            )
        parent_fd = walk.stack[-2][0]
        name = where.rsplit(b"/", 1)[1]
        rfd = os.open(name, _READ, dir_fd=parent_fd)
        rs = os.fstat(rfd)
        if (rs.st_dev, rs.st_ino) != (s.st_dev, s.st_ino):
            os.close(rfd)
            raise walk.refuse(where, "changed while it was opened")
        return rfd, rs
    finally:
        walk.close()


def _kind(mode: int) -> str:
    for test, name in (
        (st.S_ISDIR, "a directory"),
        (st.S_ISFIFO, "a FIFO"),
        (st.S_ISCHR, "a character device"),
        (st.S_ISBLK, "a block device"),
        (st.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_fd(fd: int, s: os.stat_result, *, path: str, what: str, limit: int) -> bytes:
    """At most *limit* bytes of the regular file open on *fd*; refuse a larger one."""
    if s.st_size > limit:
        raise _too_big(path, what, limit)
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, min(1 << 16, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:  # it grew while we read
            raise _too_big(path, what, limit)
    return b"".join(chunks)


def _too_big(path: str, what: str, limit: int) -> UntrustedFileError:
    size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
    return UntrustedFileError(
        f"{path}: {what} refused: larger than {size}", path=path, component=path
    )


def read_trusted(
    path: str | bytes,
    *,
    what: str = "file",
    limit: int = MAX_FILE_SIZE,
    uids: Iterable[int] | None = None,
) -> bytes:
    """The contents of *path* if it passes the trust rule and is at most *limit* bytes.

    Raises:
        UntrustedFileError: *path* breaks the rule, or is larger than *limit*.
        OSError: *path* cannot be opened or read.
    """
    fd, s = open_trusted(path, what=what, uids=uids)
    try:
        return read_fd(fd, s, path=os.fsdecode(path), what=what, limit=limit)
    finally:
        os.close(fd)


def check_trusted(path: str | bytes, *, what: str = "file", directory: bool = False) -> None:
    """Raise unless *path* passes the trust rule (see :func:`open_trusted`)."""
    fd, _ = open_trusted(path, what=what, directory=directory)
    os.close(fd)


# --- nsprov's own state files: the config cache, the login profile ----------------------------


def is_private(s: os.stat_result) -> bool:
    """Whether a state file nsprov wrote may be trusted: a regular file this uid owns, that
    neither group nor other may write (the rule of the config cache and the login profile)."""
    return st.S_ISREG(s.st_mode) and s.st_uid == os.geteuid() and not s.st_mode & 0o022


def private_dir_fd(directory: str, *, create: bool, what: str = "cache directory") -> int | None:
    """An ``O_PATH`` descriptor of *directory* if it passes the trust rule, else None.

    With *create*, the directory is made first (mode 0700) when it is missing: a
    ``stat`` first, so a login does not ``mkdir`` a directory that exists.  A
    directory someone else could write is not used at all: its files would decide
    what root reads.
    """
    if create:
        try:
            os.stat(directory)
        except FileNotFoundError:
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass
            except OSError:
                return None
        except OSError:
            return None
    try:
        fd, _ = open_trusted(directory, what=what, directory=True)
    except OSError:  # UntrustedFileError too: then there is no cache
        return None
    return fd


def read_private(dir_fd: int, name: str, *, limit: int) -> bytes | None:
    """The contents of nsprov's own state file *name* in *dir_fd*, None unless :func:`is_private`.

    Opened without following a link, without blocking; a file larger than *limit*,
    missing or unreadable is None too.
    """
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        s = os.fstat(fd)
        if not is_private(s) or s.st_size > limit:
            return None
        return read_fd(fd, s, path=name, what="state file", limit=limit)
    except (OSError, UntrustedFileError):
        return None
    finally:
        os.close(fd)
