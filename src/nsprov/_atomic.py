"""The one atomic writer of nsprov's own files (standard library only: the login path uses it).

:mod:`nsprov._fs` re-exports :func:`write_private`; the post-login worker imports it from
here, without attrs.
"""

from __future__ import annotations

from . import _os as os  # not the os module: see nsprov._os


def write_private(path: str, blob: bytes, *, dir_fd: int | None = None) -> None:
    """Replace *path* atomically with *blob*, mode 0600: a temporary file, then a rename.

    With *dir_fd*, *path* is a name in that directory (opened under the trust
    rule by the caller), so no path is resolved again.

    Raises:
        OSError: The file could not be written (the temporary file is removed).
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    try:
        try:
            view = memoryview(blob)
            while view:  # a write may be short
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
