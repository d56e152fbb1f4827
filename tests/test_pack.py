"""The login pack (:mod:`nsprov._pack`): built from the sources, refused when anything differs."""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nsprov
from nsprov import _pack

from .test_lean import ALLOWED

#: The installed nsprov package's directory and the one that holds it.
PACKAGE = Path(nsprov.__file__).parent
HOLDER = PACKAGE.parent


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the installed package (its sources only): stamps a test may change."""
    holder = tmp_path / "site"
    shutil.copytree(PACKAGE, holder / "nsprov", ignore=shutil.ignore_patterns("__pycache__"))
    return holder


def _write(path: Path, blob: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(blob)
    path.chmod(mode)
    return path


def test_modules_cover_the_lean_login() -> None:
    """Every nsprov module the lean path may import (the allowed set of test_lean, and the
    post-login parent's own) is in the pack; the pack holds nothing else."""
    lean = {m for m in ALLOWED if m.startswith("nsprov.")}
    parent = {"nsprov._main", "nsprov._postlogin", "nsprov._profile", "nsprov._breaker"}
    assert lean | parent == set(_pack.MODULES)
    assert len(set(_pack.MODULES)) == len(_pack.MODULES)


def test_round_trip(tree: Path, tmp_path: Path) -> None:
    """A pack built from the sources loads: every module, its source path and its code."""
    path = _write(tmp_path / "login.pack", _pack.build(str(tree)))
    entries = _pack.load(str(path))
    assert entries is not None
    assert set(_pack.MODULES) == set(entries)
    origin, code = entries["nsprov._lean"]
    assert str(tree / "nsprov" / "_lean.py") == origin
    assert origin == code.co_filename


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.write_text(p.read_text() + "\n"),  # an edit
        lambda p: os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns)),  # same mtime
        lambda p: p.chmod(0o600),  # metadata only: the ctime moves
        lambda p: p.unlink(),  # a module gone
    ],
    ids=["edited", "touched-to-the-same-mtime", "chmod", "removed"],
)
def test_stale_when_a_source_changes(tree: Path, tmp_path: Path, change: object) -> None:
    """Any change to any module's source file, even one that keeps size and mtime, refuses the
    pack: no old code runs."""
    path = _write(tmp_path / "login.pack", _pack.build(str(tree)))
    assert _pack.load(str(path)) is not None
    change(tree / "nsprov" / "_access.py")  # type: ignore[operator]
    assert _pack.load(str(path)) is None


def test_refused_files(tree: Path, tmp_path: Path) -> None:
    """Writable by group or others, a symbolic link, a directory, corrupt, another format or
    another interpreter's magic: refused alike."""
    blob = _pack.build(str(tree))
    good = _write(tmp_path / "good.pack", blob)
    assert _pack.load(str(good)) is not None
    assert _pack.load(str(_write(tmp_path / "g.pack", blob, 0o620))) is None
    assert _pack.load(str(_write(tmp_path / "o.pack", blob, 0o602))) is None
    link = tmp_path / "link.pack"
    link.symlink_to(good)
    assert _pack.load(str(link)) is None
    assert _pack.load(str(tmp_path)) is None
    assert _pack.load(str(tmp_path / "missing.pack")) is None
    assert _pack.load(str(_write(tmp_path / "c.pack", blob[: len(blob) // 2]))) is None
    assert _pack.load(str(_write(tmp_path / "e.pack", b""))) is None
    fmt, magic, entries = marshal.loads(blob)  # noqa: S302 - the pack just built
    other = marshal.dumps((fmt + 1, magic, entries))
    assert _pack.load(str(_write(tmp_path / "f.pack", other))) is None
    other = marshal.dumps((fmt, b"\x00\x00\r\n", entries))
    assert _pack.load(str(_write(tmp_path / "m.pack", other))) is None
    origin, stamp, _code = entries["nsprov._os"]
    other = marshal.dumps((fmt, magic, {**entries, "nsprov._os": (origin, stamp, "not code")}))
    assert _pack.load(str(_write(tmp_path / "t.pack", other))) is None


def test_unreadable_or_foreign_is_refused(tree: Path, tmp_path: Path) -> None:
    """A pack this user cannot read, or (as root) one another user owns: refused."""
    path = _write(tmp_path / "login.pack", _pack.build(str(tree)))
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    else:
        path.chmod(0o000)
    assert _pack.load(str(path)) is None


def _fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=False
    )


def test_boot_serves_the_modules(tree: Path, tmp_path: Path) -> None:
    """In a fresh ``python -I -S``: after :func:`boot`, the login modules come from the pack,
    with their source paths, and work (a lean scan helper runs); the rest imports as usual."""
    path = _write(tmp_path / "login.pack", _pack.build(str(tree)))
    code = (
        "import sys\n"
        f"sys.path.append({str(tree)!r})\n"
        "from nsprov._pack import boot, PackFinder\n"
        f"assert boot({str(path)!r})\n"
        "import nsprov._lean, nsprov._names, nsprov._launcher\n"
        "assert isinstance(nsprov._lean.__spec__.loader, PackFinder)\n"
        f"assert nsprov._lean.__file__ == {str(tree / 'nsprov' / '_lean.py')!r}\n"
        "assert not isinstance(nsprov._launcher.__spec__.loader, PackFinder)\n"
        "print(nsprov._names.entry_id(b'/var/spool/mail/Shared', b'sales')[0])\n"
    )
    out = _fresh(code)
    assert 0 == out.returncode, out.stderr
    assert "sal-wkzjidrw\n" == out.stdout


def test_boot_declines_without_raising(tree: Path, tmp_path: Path) -> None:
    """A stale or missing pack, or one whose modules are already imported: False, nothing
    installed, the imports as usual."""
    path = _write(tmp_path / "login.pack", _pack.build(str(tree)))
    (tree / "nsprov" / "_trust.py").write_text((tree / "nsprov" / "_trust.py").read_text())
    code = (
        "import sys\n"
        f"sys.path.append({str(tree)!r})\n"
        "from nsprov._pack import boot\n"
        "n = len(sys.meta_path)\n"
        f"assert not boot({str(path)!r})\n"
        f"assert not boot({str(tmp_path / 'missing')!r})\n"
        "assert n == len(sys.meta_path)\n"
        "import nsprov._lean\n"
        "print(type(nsprov._lean.__spec__.loader).__name__)\n"
    )
    out = _fresh(code)
    assert 0 == out.returncode, out.stderr
    assert "SourceFileLoader\n" == out.stdout
    fresh = _write(tmp_path / "fresh.pack", _pack.build(str(tree)))
    code = (
        "import sys\n"
        f"sys.path.append({str(tree)!r})\n"
        "import nsprov._os\n"
        "from nsprov._pack import boot\n"
        f"print(boot({str(fresh)!r}))\n"
    )
    out = _fresh(code)
    assert (0, "False\n") == (out.returncode, out.stdout), out.stderr


def test_write_puts_it_beside_the_pyc_files(tree: Path) -> None:
    """:func:`write` makes ``__pycache__`` if needed and writes the pack 0600, atomically."""
    path = Path(_pack.write(str(tree)))
    assert Path(_pack.pack_path(str(tree))) == path
    assert tree / "nsprov" / "__pycache__" == path.parent
    assert 0o600 == path.stat().st_mode & 0o777
    assert _pack.load(str(path)) is not None
    assert [path.name] == [p.name for p in path.parent.iterdir() if "pack" in p.name]
