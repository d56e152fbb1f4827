"""``os`` for the login path: the ``posix`` built-ins, and the few ``os.path`` helpers nsprov uses.

``nsprov post-login`` runs Python with ``-S``, where nothing has imported :mod:`os`
yet; importing it costs every login about 1.5 ms (``os``, ``posixpath``,
``genericpath``, ``stat`` and the abstract base classes of ``_collections_abc``).
Every function ``os`` gives for POSIX is ``posix``'s, which is built in: the modules
of the login path import this module as ``os`` (``from . import _os as os``) and call
the same names.  The path helpers behave like ``posixpath``'s for the inputs nsprov
gives them (property-tested against it); :func:`realpath` asks the kernel (``/proc/self/fd``);
:func:`makedirs`, needed only for a directory to create, imports the real ``os`` then.

Standard library only, on every login's path.
"""

# ruff: noqa: F403, F405 - the posix functions are this module's interface, as os's are
from __future__ import annotations

import sys
from posix import *  # the same functions os offers on Linux
from posix import _exit as _exit  # noqa: PLC0414 - not exported by *

TYPE_CHECKING = False  # not typing's: this module is on the login path
if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from typing import AnyStr

__all__ = [
    "abspath",
    "current_environ",
    "dirname",
    "exists",
    "fsdecode",
    "fsencode",
    "join",
    "lexists",
    "makedirs",
    "normpath",
    "realpath",
]

SEEK_SET = 0
SEEK_CUR = 1
SEEK_END = 2


def current_environ() -> MutableMapping[str, str]:
    """The process environment as ``os.environ`` has it (that very mapping once os is loaded).

    Without ``os`` (``python -S``): decoded from ``posix.environ`` as ``os`` decodes it
    (the file system encoding, ``surrogateescape``), a fresh dict.
    """
    os = sys.modules.get("os")
    if os is not None:
        return os.environ  # type: ignore[no-any-return]
    import posix  # noqa: PLC0415 - built in, loaded

    return {fsdecode(k): fsdecode(v) for k, v in posix.environ.items()}


def fsencode(name: str | bytes) -> bytes:
    """As :func:`os.fsencode` (UTF-8 and ``surrogateescape`` on Linux)."""
    if isinstance(name, bytes):
        return name
    return name.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def fsdecode(name: str | bytes) -> str:
    """As :func:`os.fsdecode`."""
    if isinstance(name, str):
        return name
    return name.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def join(a: AnyStr, *parts: AnyStr) -> AnyStr:
    """As :func:`os.path.join` (an absolute part restarts the path)."""
    sep = b"/" if isinstance(a, bytes) else "/"
    path = a
    for b in parts:
        if b.startswith(sep):
            path = b
        elif not path or path.endswith(sep):
            path += b
        else:
            path += sep + b
    return path


def dirname(p: str) -> str:
    """As :func:`os.path.dirname`."""
    i = p.rfind("/") + 1
    head = p[:i]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head


def normpath(path: str) -> str:
    """As :func:`os.path.normpath` for ``str`` (``.``, ``..`` and repeated slashes; ``//`` kept)."""
    if not path:
        return "."
    initial = 1 if path.startswith("/") else 0
    if initial and path.startswith("//") and not path.startswith("///"):
        initial = 2
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp != ".." or (not initial and not parts) or (parts and parts[-1] == ".."):
            parts.append(comp)
        elif parts:
            parts.pop()
    return "/" * initial + "/".join(parts) or "."


def abspath(path: str) -> str:
    """As :func:`os.path.abspath` for ``str``."""
    if not path.startswith("/"):
        path = join(getcwd(), path)
    return normpath(path)


def lexists(path: str | bytes) -> bool:
    """As :func:`os.path.lexists`."""
    try:
        lstat(path)
    except (OSError, ValueError):
        return False
    return True


def exists(path: str | bytes) -> bool:
    """As :func:`os.path.exists`."""
    try:
        stat(path)
    except (OSError, ValueError):
        return False
    return True


def realpath(path: bytes) -> bytes:
    """As :func:`os.path.realpath` for an existing *path*: the kernel's name of what it opens.

    The path is opened ``O_PATH`` (following links, as realpath does) and the name read
    back from ``/proc/self/fd``: two system calls, and no ``os`` import on the login path.
    A path that cannot be opened, or a name the kernel marks unreachable (a directory
    outside this root, a deleted one), takes :func:`os.path.realpath` itself.
    """
    try:
        fd = open(path, O_PATH | O_CLOEXEC)  # noqa: SIM115 - posix.open: a descriptor
    except (OSError, ValueError):
        fd = -1
    if fd >= 0:
        try:
            name = readlink(b"/proc/self/fd/%d" % fd)
        except OSError:
            name = b""
        finally:
            close(fd)
        if name.startswith(b"/") and not name.endswith(b" (deleted)"):
            return name
    import os.path  # noqa: PLC0415 - rare: a missing path, no /proc

    return os.path.realpath(path)


def makedirs(path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
    """As :func:`os.makedirs`; imports ``os`` only when a parent directory is missing too."""
    try:
        mkdir(path, mode)
    except FileExistsError:
        if not exist_ok or not _is_dir(path):
            raise
    except FileNotFoundError:
        import os  # noqa: PLC0415 - rare: parents to create

        os.makedirs(path, mode=mode, exist_ok=exist_ok)


def _is_dir(path: str) -> bool:
    try:
        return stat(path).st_mode & 0o170000 == 0o040000
    except (OSError, ValueError):
        return False
