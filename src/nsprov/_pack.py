"""The login pack: the code of the login path's modules in one file, checked against the sources.

Python's import machinery finds each module through the path finders: about a dozen system
calls for a module's ``.py`` and ``.pyc`` (directory ``stat``, two ``stat`` of the source, ``open``,
``fstat``, a tty probe, ``lseek``, ``read``, ``close``) before any of its code runs.  The lean
login imports up to 17 nsprov modules.  ``nsprov install-launcher`` writes their code objects
(:data:`MODULES`, compiled from the installed sources) to one file,
``nsprov/__pycache__/login.<cache tag>.pack``, beside the ``.pyc`` files; the direct launcher
calls :func:`boot` for ``post-login``, which serves those modules from it: one ``open`` for all
and one ``stat`` per module.  Measured at 10 entries: 629 system calls to the exec of the next
program instead of 797, and about 3 % of the step's wall time.

The pack is used only when all of this holds, else the modules import as usual:

* it is a regular file owned by root or the running user, writable by nobody else, no
  larger than :data:`MAX_SIZE`, of this :data:`FORMAT` and this interpreter's bytecode
  magic;
* every module's source file is the one the pack was built from: same device, inode,
  size, mtime and ctime (stricter than a ``.pyc``'s mtime and size: a reinstall, an
  edit, even a ``touch`` back to the old mtime changes the ctime).

So an upgrade or an edit never runs old code: the pack stops being used until
``nsprov install-launcher`` writes it again (a pip upgrade puts the bash launcher back,
which never reads it).  Standard library built-ins only: :func:`boot` runs before any
other nsprov module is imported.
"""

from __future__ import annotations

import marshal
import posix
import sys

TYPE_CHECKING = False  # not typing's: see nsprov/__init__.py
if TYPE_CHECKING:
    from types import CodeType, ModuleType

#: The nsprov modules a lean login imports (a test keeps this list complete), in import order.
MODULES = (
    "nsprov._main",
    "nsprov._os",
    "nsprov._servefields",
    "nsprov._postlogin",
    "nsprov._defaults",
    "nsprov._profile",
    "nsprov.exceptions",
    "nsprov._trust",
    "nsprov._breaker",
    "nsprov._access",
    "nsprov._userdb",
    "nsprov._fields",
    "nsprov._names",
    "nsprov._plainscan",
    "nsprov._lean",
    "nsprov._actrules",
    "nsprov._atomic",
)
#: The pack's layout version: ``(FORMAT, magic, {module: (source path, stamp, code)})``.
FORMAT = 1
#: The largest pack read.
MAX_SIZE = 1 << 23

_O_READ = posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_CLOEXEC | posix.O_NOCTTY | posix.O_NONBLOCK


def pack_path(package_dir: str) -> str:
    """The pack of the nsprov package in *package_dir* (site-packages, say), for this Python."""
    tag = sys.implementation.cache_tag
    return f"{package_dir}/nsprov/__pycache__/login.{tag}.pack"


def _magic() -> bytes | None:
    external = sys.modules.get("_frozen_importlib_external")
    magic = getattr(external, "MAGIC_NUMBER", None)
    return magic if isinstance(magic, bytes) else None


def stamp(s: posix.stat_result) -> tuple[int, int, int, int, int]:
    """What identifies a source file's contents: device, inode, size, mtime and ctime (ns)."""
    return (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)


def build(package_dir: str) -> bytes:
    """The pack of the nsprov package in *package_dir*: each of :data:`MODULES` compiled.

    The code is what the import system would run: the valid ``.pyc`` or, failing that, the
    source compiled (``SourceFileLoader.get_code``).

    Raises:
        OSError: A module's source cannot be read.
        SyntaxError: A source does not compile.
    """
    from importlib.machinery import SourceFileLoader  # noqa: PLC0415 - never on the login path

    magic = _magic()
    if magic is None:  # pragma: no cover - CPython has the frozen importlib
        raise OSError("this interpreter has no bytecode magic")
    entries: dict[str, tuple[str, tuple[int, ...], CodeType]] = {}
    for name in MODULES:
        origin = f"{package_dir}/{name.replace('.', '/')}.py"
        before = stamp(posix.stat(origin))
        code = SourceFileLoader(name, origin).get_code(name)
        if code is None or stamp(posix.stat(origin)) != before:  # pragma: no cover - a race
            raise OSError(f"{origin} changed while the login pack was built")
        entries[name] = (origin, before, code)
    return marshal.dumps((FORMAT, magic, entries))


def write(package_dir: str) -> str:
    """Write the pack of *package_dir* atomically (mode 0600); its path.

    Raises:
        OSError: The pack cannot be built or written (an untrusted directory among them).
    """
    from . import _os as os  # noqa: PLC0415 - only install-launcher writes a pack
    from ._atomic import write_private  # noqa: PLC0415 - as above
    from ._trust import open_trusted  # noqa: PLC0415 - as above

    blob = build(package_dir)
    path = pack_path(package_dir)
    directory, name = path.rsplit("/", 1)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    dir_fd, _ = open_trusted(directory, what="login pack directory", directory=True)
    try:
        write_private(name, blob, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _read(path: str) -> bytes | None:
    """The pack's bytes if it passes the file checks, else None."""
    try:
        fd = posix.open(path, _O_READ)
    except OSError:
        return None
    try:
        s = posix.fstat(fd)
        if (
            (s.st_mode & 0o170000) != 0o100000
            or s.st_uid not in (0, posix.geteuid())
            or s.st_mode & 0o022
            or s.st_size > MAX_SIZE
        ):
            return None
        chunks = []
        left = s.st_size + 1
        while left > 0:
            chunk = posix.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        posix.close(fd)


def load(path: str) -> dict[str, tuple[str, CodeType]] | None:
    """``{module: (source path, code)}`` of the pack at *path* when every check holds, else None."""
    blob = _read(path)
    if blob is None:
        return None
    try:
        data = marshal.loads(blob)  # noqa: S302 - a file root owns and no one else may write
        fmt, magic, entries = data
    except (EOFError, ValueError, TypeError):
        return None
    if fmt != FORMAT or magic != _magic() or not isinstance(entries, dict):
        return None
    out: dict[str, tuple[str, CodeType]] = {}
    code_type = type(load.__code__)
    for name, entry in entries.items():
        try:
            origin, want, code = entry
            if stamp(posix.stat(origin)) != tuple(want) or type(code) is not code_type:
                return None
        except (OSError, TypeError, ValueError):
            return None
        out[name] = (origin, code)
    return out


class PackFinder:
    """A meta path finder and loader serving the modules of one checked pack."""

    def __init__(self, entries: dict[str, tuple[str, CodeType]]) -> None:
        self.entries = entries

    def find_spec(  # the finder protocol: the path and the target do not matter here
        self,
        name: str,
        path: object = None,  # noqa: ARG002
        target: object = None,  # noqa: ARG002
    ) -> object:
        entry = self.entries.get(name)
        if entry is None:
            return None
        spec = type(sys.__spec__)(name, self, origin=entry[0])  # type: ignore[arg-type]
        spec.has_location = True
        return spec

    def create_module(self, spec: object) -> None:  # noqa: ARG002 - the loader protocol
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        name = module.__name__
        origin, code = self.entries[name]
        module.__file__ = origin
        exec(code, module.__dict__)  # noqa: S102 - the installed sources' own code, checked

    def get_source(self, name: str) -> str | None:
        """The module's source text (for tracebacks)."""
        entry = self.entries.get(name)
        if entry is None:
            return None
        try:
            with open(entry[0], encoding="utf-8") as f:
                return f.read()
        except OSError:
            return None


def boot(path: str) -> bool:
    """Serve :data:`MODULES` from the pack at *path* when it passes every check; whether it does.

    Never raises: a missing, stale or refused pack leaves the import system as it was.
    """
    try:
        entries = load(path)
        if not entries or any(name in sys.modules for name in entries):
            return False
        sys.meta_path.insert(0, PackFinder(entries))  # type: ignore[arg-type]
    except Exception:
        return False
    return True
