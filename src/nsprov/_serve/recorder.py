"""What a scan looked at: :class:`Recorder` wraps the scan's filesystem, :class:`Deps` re-checks it."""

from __future__ import annotations

import errno
import os

import attrs

from .._scan import DEFAULT_FS, Fs

_ACL_XATTR = "system.posix_acl_access"
_NO_ACL = frozenset({errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP})


def _sig(s: os.stat_result) -> tuple[int, int, int, int, int]:
    return (s.st_dev, s.st_ino, s.st_mode, s.st_uid, s.st_gid)


@attrs.frozen
class _Seen:
    """One path as the scan saw it: identity and permission bits, ctime, ACL if read."""

    sig: tuple[int, int, int, int, int] | None
    ctime: int = 0
    acl: bytes | None = None
    acl_read: bool = False


class Recorder:
    """An :class:`~nsprov._scan.Fs` that records every path a scan looks at, for validation.

    Stat results are recorded before anything is read from the path, so a
    change racing the scan shows up as a change on the next validation.
    """

    def __init__(self, base: Fs = DEFAULT_FS) -> None:
        self.base = base
        self.seen: dict[bytes, _Seen] = {}
        self.listed: dict[bytes, tuple[int, int, int] | None] = {}
        self.read: dict[bytes, tuple[int, ...] | None] = {}

    def fs(self) -> Fs:
        """The recording filesystem to give :func:`nsprov._engine.plan`."""
        return Fs(
            lstat=self._lstat,
            listdir=self._listdir,
            getxattr=self._getxattr,
            realpath=self._realpath,
            read_text=self._read_text,
            read_ignore=self._read_ignore,
            listing=self._listing,
            dir_sig=self._dir_sig,
        )

    def note_file(self, path: str) -> None:
        """Record a file the answer depends on as a whole (the scan cache's index)."""
        self.read[os.fsencode(path)] = _content_sig(self.base, os.fsencode(path))

    def _listing(self, path: bytes) -> list[tuple[bytes, int]]:
        self.listed[path] = _list_sig(self.base, path)
        return self.base.listing(path)

    def _dir_sig(self, path: bytes) -> tuple[int, int, int]:
        sig = self.base.dir_sig(path)
        self.listed[path] = sig
        return sig

    def _lstat(self, path: bytes) -> os.stat_result:
        try:
            s = self.base.lstat(path)
        except FileNotFoundError:
            self.seen.setdefault(path, _Seen(None))
            raise
        old = self.seen.get(path)
        if old is None or old.sig != _sig(s):
            self.seen[path] = _Seen(_sig(s), s.st_ctime_ns)
        return s

    def _getxattr(self, path: bytes, name: str, *, follow_symlinks: bool = True) -> bytes:
        try:
            data = self.base.getxattr(path, name, follow_symlinks=follow_symlinks)
        except OSError as e:
            if name == _ACL_XATTR and e.errno in _NO_ACL:
                self._acl(path, None)
            raise
        if name == _ACL_XATTR:
            self._acl(path, data)
        return data

    def _acl(self, path: bytes, data: bytes | None) -> None:
        seen = self.seen.get(path)
        if seen is not None and seen.sig is not None:
            self.seen[path] = attrs.evolve(seen, acl=data, acl_read=True)

    def _listdir(self, path: bytes) -> list[bytes]:
        self.listed[path] = _list_sig(self.base, path)
        return self.base.listdir(path)

    def _realpath(self, path: bytes) -> bytes:
        self.read[path] = _content_sig(self.base, path)
        return self.base.realpath(path)

    def _read_text(self, path: bytes) -> str | None:
        self.read[path] = _content_sig(self.base, path)
        return self.base.read_text(path)

    def _read_ignore(self, path: bytes) -> str | None:
        self.read[path] = _content_sig(self.base, path)
        return self.base.read_ignore(path)

    def deps(self) -> Deps:
        """Everything recorded, frozen."""
        return Deps(
            seen=tuple(self.seen.items()),
            listed=tuple(self.listed.items()),
            read=tuple(self.read.items()),
        )


def _list_sig(fs: Fs, path: bytes) -> tuple[int, int, int] | None:
    try:
        s = fs.lstat(path)
    except FileNotFoundError:
        return None
    return (s.st_dev, s.st_ino, s.st_mtime_ns)


def _content_sig(fs: Fs, path: bytes) -> tuple[int, ...] | None:
    try:
        s = fs.lstat(path)
    except FileNotFoundError:
        return None
    return (*_sig(s), s.st_ctime_ns, s.st_mtime_ns, s.st_size)


def _read_acl(fs: Fs, path: bytes) -> bytes | None:
    try:
        return fs.getxattr(path, _ACL_XATTR, follow_symlinks=False)
    except OSError as e:
        if e.errno in _NO_ACL:
            return None
        raise


@attrs.frozen
class Deps:
    """The paths one answer depends on, and how they looked."""

    seen: tuple[tuple[bytes, _Seen], ...] = ()
    listed: tuple[tuple[bytes, tuple[int, int, int] | None], ...] = ()
    read: tuple[tuple[bytes, tuple[int, ...] | None], ...] = ()

    def changed(self, fs: Fs = DEFAULT_FS) -> bytes | None:
        """The first path that no longer looks the same, or None if none changed."""
        try:
            for path, seen in self.seen:
                if not _still(fs, path, seen):
                    return path
            for path, listed in self.listed:
                if _list_sig(fs, path) != listed:
                    return path
            for path, read in self.read:
                if _content_sig(fs, path) != read:
                    return path
        except OSError as e:
            return os.fsencode(getattr(e, "filename", None) or "?")
        return None


def _still(fs: Fs, path: bytes, seen: _Seen) -> bool:
    try:
        s = fs.lstat(path)
    except FileNotFoundError:
        return seen.sig is None
    if seen.sig is None or _sig(s) != seen.sig:
        return False
    if s.st_ctime_ns == seen.ctime:
        return True
    # The ctime moved (chmod, chown, setfacl, a link count or content change):
    # only the ACL can have changed what the scan decided.
    return not seen.acl_read or _read_acl(fs, path) == seen.acl
