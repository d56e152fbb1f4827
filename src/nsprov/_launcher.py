"""``nsprov install-launcher``: the ``nsprov`` command as Python itself, without bash.

The wheel installs ``bin/nsprov`` as a bash launcher (``scripts/nsprov``): pip rewrites a
``#!python`` line to the bare interpreter and drops flags after it, so a wheel cannot ship
``#!/venv/bin/python -IS``.  bash costs every login about 2 ms and 115 system calls.  Once
the interpreter's absolute path is known, Linux passes everything after it on the ``#!``
line as one argument, so ``#!/opt/nsprov/bin/python -IS`` works; this module writes that
launcher in place of the bash one:

* ``-I``: no ``PYTHON*`` variable (userdb fields, uppercased), no user site, no script
  directory on ``sys.path`` (Python's ``-P``: the venv's ``bin/`` is never searched);
* ``-S``: ``post-login`` needs nothing of ``site``; the directory holding the nsprov
  package, written in here, is appended to ``sys.path`` (the standard library first), and
  the full worker adds ``site`` in its forked child (:mod:`nsprov._worker`);
* every other subcommand (and ``post-login --print-dovecot-config``) runs ``site.main()``
  first, so ``.pth`` files, editable installs and the dependencies in site-packages work.

The interpreter path is written as given, not resolved: a virtual environment is found
from it (``bin/python`` beside ``pyvenv.cfg``).  The file is written atomically in a
directory that passes the trust rule (:mod:`nsprov._trust`).
"""

from __future__ import annotations

import os
import stat as st
import sys
from typing import TYPE_CHECKING

from ._pack import pack_path
from ._trust import open_trusted
from .exceptions import NsprovError

if TYPE_CHECKING:
    from collections.abc import Callable

#: The kernel reads at most this many bytes of a ``#!`` line, newline included (BINPRM_BUF_SIZE).
SHEBANG_MAX = 255
#: The flags on the ``#!`` line: one argument, as Linux passes it.
FLAGS = "-IS"
#: The second line of every launcher this module writes: how ``--check`` knows one.
MARK = "# nsprov direct launcher, written by 'nsprov install-launcher'"
#: The first line of the wheel's bash launcher (``scripts/nsprov``).
BASH_FIRST = "#!/bin/bash -p"

_BODY = """\
# Python started directly, isolated (-I: no PYTHON* variable, no user
# site, no script directory on sys.path) and without site (-S).  post-login appends the
# directory holding nsprov; every other command runs site first.  A pip upgrade puts the
# bash launcher back (safe, slower): run 'nsprov install-launcher' again.
import sys


def _login(args):
    if args[:1] != ["post-login"]:
        return False
    for arg in args[1:]:
        if arg == "--print-dovecot-config":
            return False
        if arg[:2] != "--" or arg == "--":
            break
    return True


if _login(sys.argv[1:]):
    sys.path.append({package_dir!r})
    try:  # the login path's modules from the login pack, when it matches the sources
        from nsprov._pack import boot

        boot({pack!r})
    except Exception:
        pass
else:
    import site

    site.main()
    if {package_dir!r} not in sys.path:
        sys.path.append({package_dir!r})
from nsprov._main import entrypoint

entrypoint()
"""


class LauncherError(NsprovError):
    """The launcher cannot be written safely (the bash launcher stays in place)."""


def default_python() -> str:
    """This interpreter's path as Python was started with it (a venv's ``bin/python``)."""
    return sys.executable


def default_package_dir() -> str:
    """The absolute directory holding this nsprov package (site-packages, or ``src/``)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_target(python: str) -> str:
    """``bin/nsprov`` beside *python*."""
    return os.path.join(os.path.dirname(python), "nsprov")


def _bad_chars(path: str) -> str | None:
    """Why *path* cannot stand on a ``#!`` line or in the launcher, or None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    for c in path:
        if c.isspace():
            return f"contains whitespace ({c!r})"
        if not c.isprintable():
            return f"contains a non-printable character ({c!r})"
    return None


def render(python: str, package_dir: str) -> str:
    """The launcher's text for *python* and the directory *package_dir* holding nsprov.

    Raises:
        LauncherError: a path is not absolute, has whitespace or non-printable characters,
            or the ``#!`` line would exceed what the kernel reads.
    """
    for what, path in (("the interpreter", python), ("the package directory", package_dir)):
        if not path.startswith("/"):
            raise LauncherError(f"{what} {path!r} is not an absolute path")
        why = _bad_chars(path)
        if why is not None:
            raise LauncherError(
                f"{what} {path!r} {why}: it cannot stand on a #! line or in the launcher"
            )
    first = f"#!{python} {FLAGS}"
    if len(first.encode()) > SHEBANG_MAX:
        raise LauncherError(
            f"the #! line for {python!r} is {len(first.encode())} bytes, more than the "
            f"{SHEBANG_MAX} the kernel reads: use a shorter path (a venv nearer /)"
        )
    body = _BODY.format(package_dir=package_dir, pack=pack_path(package_dir))
    return f"{first}\n{MARK} (nsprov {_version()})\n{body}"


def _version() -> str:
    """This nsprov's version, from its metadata ("unknown" in a tree without it)."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("nsprov")
    except PackageNotFoundError:
        return "unknown"


def describe(path: str) -> tuple[bool, str]:
    """Whether *path* is a direct launcher, and what it is, in words."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        return False, f"{path}: cannot be read ({e.strerror})"
    lines = head.split(b"\n", 2)
    first = lines[0].decode("utf-8", "backslashreplace")
    if len(lines) > 1 and lines[1].startswith(MARK.encode()):
        return True, f"{path} is the direct launcher ({first})"
    if first == BASH_FIRST:
        return False, (
            f"{path} is the bash launcher: each login starts bash first (~2 ms, ~115 system "
            "calls); 'nsprov install-launcher' writes a direct one"
        )
    return False, f"{path} is no nsprov launcher (first line {first!r})"


def _target_dir_fd(target: str) -> tuple[int, str]:
    """The trusted ``O_PATH`` descriptor of *target*'s directory, and *target*'s name."""
    directory, name = os.path.split(os.path.abspath(target))
    try:
        fd, _ = open_trusted(directory, what="launcher directory", directory=True)
    except OSError as e:
        if isinstance(e, NsprovError):
            raise LauncherError(str(e)) from e
        raise LauncherError(f"{directory}: {e.strerror or e}") from e
    return fd, name


def install(
    *,
    python: str | None = None,
    package_dir: str | None = None,
    target: str | None = None,
    executable: Callable[[str], bool] = lambda p: os.access(p, os.X_OK),
) -> tuple[str, bool]:
    """Write the direct launcher to *target*; its path and whether anything changed.

    Idempotent: a target that already holds this text with mode 0755 is left alone.

    Raises:
        LauncherError: the launcher would be unsafe or broken; *target* is left as it was.
    """
    python = default_python() if python is None else python
    package_dir = default_package_dir() if package_dir is None else package_dir
    target = os.path.abspath(default_target(python) if target is None else target)
    text = render(python, package_dir).encode()
    if not executable(python):
        raise LauncherError(f"the interpreter {python} does not exist or is not executable")
    if not os.path.isfile(os.path.join(package_dir, "nsprov", "_main.py")):
        raise LauncherError(f"{package_dir} holds no nsprov package (nsprov/_main.py)")
    dir_fd, name = _target_dir_fd(target)
    try:
        try:
            s = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            s = None
        if s is not None and st.S_ISLNK(s.st_mode):
            raise LauncherError(
                f"{target} is a symbolic link (to {os.readlink(name, dir_fd=dir_fd)}): give "
                "--target= the file it points to"
            )
        if s is not None and not st.S_ISREG(s.st_mode):
            raise LauncherError(f"{target} is not a regular file")
        if s is not None and st.S_IMODE(s.st_mode) == 0o755 and _read(dir_fd, name) == text:
            return target, False
        _write(dir_fd, name, text)
    finally:
        os.close(dir_fd)
    return target, True


def _read(dir_fd: int, name: str) -> bytes | None:
    """What *name* in *dir_fd* holds (its first 64 KiB), None if it cannot be read."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as f:
            return f.read(1 << 16)
    except OSError:
        return None


def _write(dir_fd: int, name: str, text: bytes) -> None:
    """Replace *name* in *dir_fd* with *text*, mode 0755: a temporary file, then a rename."""
    tmp = f".{name}.{os.getpid()}.tmp"
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o700,
        dir_fd=dir_fd,
    )
    try:
        try:
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, 0o755)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
