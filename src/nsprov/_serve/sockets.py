"""The server's UNIX socket: binding it safely, and who is on the other end."""

from __future__ import annotations

import contextlib
import os
import socket
import stat as st
import struct

from ..exceptions import NsprovError, SocketInUseError

__all__ = ["SocketInUseError", "bind_socket", "peer_credentials"]


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """``(pid, uid, gid)`` of a UNIX socket's peer, or None."""
    try:
        data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


def bind_socket(path: str, *, mode: int, group: str | None) -> socket.socket:
    """A listening UNIX socket at *path* with *mode* and *group*, never visible with other ones.

    The socket's directory must pass the trust rule (:mod:`nsprov._trust`):
    whoever may write it could swap the socket for their own.  The socket is
    bound under a temporary name with its mode from the umask, given its
    group without following a link, then renamed into place.  A stale socket
    is replaced; a live one is an error.
    """
    from .._trust import check_trusted  # noqa: PLC0415

    gid = -1
    if group is not None:
        import grp  # noqa: PLC0415

        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise NsprovError(f"--socket-group: unknown group {group!r}") from None
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
    check_trusted(parent, what="socket directory", directory=True)
    with contextlib.suppress(FileNotFoundError):
        s = os.lstat(path)
        if not st.S_ISSOCK(s.st_mode):
            raise NsprovError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            pass  # stale: replaced below
        else:
            raise SocketInUseError(f"{path}: another server is listening there")
        finally:
            probe.close()
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bind() creates the file with 0777 & ~umask: the mode is right from the start, and
    # nothing is chmod'ed by name (Linux cannot chmod a link itself; chmod would follow one).
    old = os.umask(~mode & 0o777)
    try:
        sock.bind(tmp)
    finally:
        os.umask(old)
    try:
        os.chown(tmp, -1, gid, follow_symlinks=False)
        sock.listen(512)
        os.rename(tmp, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sock.setblocking(False)
    return sock
