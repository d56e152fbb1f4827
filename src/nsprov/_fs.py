"""The filesystem seam: the calls the scanner makes, the small safe readers, the private writer.

:class:`Fs` bundles every filesystem call a spool scan makes, so that tests
(and ``nsprov serve``'s dependency recorder) can inject their own; the
default, :data:`DEFAULT_FS`, is the real filesystem.  Its race-free part is
the descriptor walk (:func:`anchored_facts`): each name opened relative to
the descriptor of the directory above it, its facts read from that
descriptor.  What the facts mean (may this user read it?) is decided
elsewhere, by pure functions (:func:`nsprov._scan.anchored_verdict`,
:func:`nsprov._perms.decide`).

The readers are bounded and never follow a symbolic link nor block on a FIFO:
:func:`read_regular_file` (an mbox file's first line), :func:`read_ignore_file`
(a spool's ignore file, under the trust rule), and the trust rule's own
:func:`~nsprov._trust.read_trusted` and :func:`~nsprov._trust.read_fd`
(re-exported here; they live in :mod:`nsprov._trust`, below this module).
:func:`write_private` is the one atomic writer of nsprov's own files (it lives in
:mod:`nsprov._atomic`, standard library only, for the login path; re-exported here).
"""

from __future__ import annotations

import os
import stat as st
from typing import TYPE_CHECKING

import attrs

# The descriptor walk is the lean path's, one implementation (nsprov._plainscan).
from . import _plainscan
from ._atomic import write_private
from ._perms import FileFacts, PosixAcl, read_acl
from ._plainscan import ANCHOR as ANCHOR  # noqa: PLC0414 - re-exported
from ._trust import read_fd, read_trusted
from .exceptions import UntrustedFileError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from ._access import Facts

__all__ = [
    "ANCHOR",
    "DEFAULT_FS",
    "IGNORE_MAX_BYTES",
    "Fs",
    "Step",
    "anchored_facts",
    "dir_sig",
    "fd_acl",
    "listing",
    "look",
    "read_fd",
    "read_ignore_file",
    "read_regular_file",
    "read_trusted",
    "write_private",
]

#: The cap on a spool's ignore file; beyond it, the file is not used (one warning).
IGNORE_MAX_BYTES = 64 << 10


def read_regular_file(path: bytes, limit: int = 65536) -> str | None:
    """A small regular file's text, or None when absent; never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if not st.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", "replace")
    finally:
        os.close(fd)


def read_ignore_file(path: bytes) -> str | None:
    """A spool's ignore file, or None when absent: it must pass the trust rule and the size cap.

    Raises:
        UntrustedFileError: Someone other than root (or us) could write or replace
            it, it is no regular file, or it is larger than :data:`IGNORE_MAX_BYTES`.
        OSError: It cannot be read.
    """
    try:
        data = read_trusted(path, what="ignore file", limit=IGNORE_MAX_BYTES)
    except FileNotFoundError:
        return None
    except UntrustedFileError:
        # A spool others may write (a group-writable shared spool is common) without an
        # ignore file is no finding: nothing was planted.  One that exists is refused.
        try:
            os.lstat(path)
        except FileNotFoundError:
            return None
        raise
    return data.decode("utf-8", "replace")


def listing(path: bytes) -> list[tuple[bytes, int]]:
    """A directory's names with their inode numbers, from ``readdir`` alone (no ``stat``)."""
    with os.scandir(path) as it:
        return [(e.name, e.inode()) for e in it]


def dir_sig(path: bytes) -> tuple[int, int, int]:
    """``(dev, ino, mtime)`` of a directory: what moves when an entry is added or removed."""
    s = os.lstat(path)
    return (s.st_dev, s.st_ino, s.st_mtime_ns)


#: One step of an anchored walk: the name, its ``st_mode`` (0: absent), and for a directory its facts.
Step = tuple[bytes, int, FileFacts | None]


def _model_acl(acl: Any) -> PosixAcl | None:
    if acl is None:
        return None
    return PosixAcl(acl.user_obj, acl.group_obj, acl.other, acl.mask, acl.users, acl.groups)


def _model_step(step: tuple[bytes, int, Facts | None]) -> Step:
    name, mode, facts = step
    if facts is None:
        return name, mode, None
    return name, mode, FileFacts(facts.mode, facts.uid, facts.gid, _model_acl(facts.acl))


def fd_acl(fd: int) -> PosixAcl | None:
    """The access ACL of the inode open on *fd* (an ``O_PATH`` descriptor)."""
    return _model_acl(_plainscan.fd_acl(fd))


def look(dir_fd: int, name: bytes) -> tuple[int | None, Step]:
    """Open *name* in the directory *dir_fd* without following it; a descriptor only for a directory."""
    fd, step = _plainscan.look(dir_fd, name)
    return fd, _model_step(step)


def anchored_facts(real: bytes, parts: Sequence[bytes]) -> list[Step]:
    """What the directories *real*/*parts*... and the last one's ``cur`` and ``new`` are, race-free.

    Each name is opened with ``O_PATH | O_NOFOLLOW`` relative to the descriptor
    of the directory before it, and its mode, owner and ACL are read from that
    descriptor: renaming or swapping an entry (``RENAME_EXCHANGE``) between two
    calls cannot make one inode's facts pass for another's, nor lead through a
    symbolic link.  The walk stops at the first name that is no directory.  It
    is :func:`nsprov._plainscan.anchored_facts`, the lean path's, with the facts
    as the public model's classes.
    """
    return [_model_step(step) for step in _plainscan.anchored_facts(real, parts)]


@attrs.frozen
class Fs:
    """The filesystem calls the scanner makes; tests may inject their own."""

    lstat: Callable[[bytes], os.stat_result] = os.lstat
    listdir: Callable[[bytes], list[bytes]] = os.listdir
    getxattr: Callable[..., bytes] = os.getxattr
    realpath: Callable[[bytes], bytes] = os.path.realpath
    read_text: Callable[[bytes], str | None] = attrs.field(factory=lambda: read_regular_file)
    #: A spool's ignore file under the trust rule (``nsprov._fs.read_ignore_file``).
    read_ignore: Callable[[bytes], str | None] = attrs.field(factory=lambda: read_ignore_file)
    #: Names and inode numbers of a directory (the scan cache's view of a changed spool).
    listing: Callable[[bytes], list[tuple[bytes, int]]] = attrs.field(factory=lambda: listing)
    #: ``(dev, ino, mtime_ns)`` of a directory (the scan cache's freshness check).
    dir_sig: Callable[[bytes], tuple[int, int, int]] = attrs.field(factory=lambda: dir_sig)
    #: The race-free re-check of an entry about to be served (``nsprov._fs.anchored_facts``); None
    #: leaves only the path-based checks (a test that fakes them: never in production).
    anchored: Callable[[bytes, Sequence[bytes]], list[Step]] | None = attrs.field(
        factory=lambda: anchored_facts
    )

    def facts(self, path: bytes) -> tuple[os.stat_result, FileFacts]:
        """lstat *path* and read its ACL."""
        s = self.lstat(path)
        # Positional, not FileFacts.from_stat: this runs once per spool entry.
        acl = read_acl(path, getxattr=self.getxattr, follow_symlinks=False)
        return s, FileFacts(s.st_mode, s.st_uid, s.st_gid, acl)


DEFAULT_FS = Fs()
