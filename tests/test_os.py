"""``nsprov._os``: the login path's ``os`` behaves as the real one for what nsprov asks of it."""

from __future__ import annotations

import os
import posixpath

from hypothesis import given
from hypothesis import strategies as st

from nsprov import _os

#: Path components with the characters that matter to the path functions.
PART = st.sampled_from(["", ".", "..", "a", "b", "é", "x y", "\udcff"])
PATHS = st.lists(PART, max_size=6).map("/".join) | st.lists(PART, max_size=6).map(
    lambda parts: "/" + "/".join(parts)
)


@given(PATHS)
def test_normpath(path: str) -> None:
    assert posixpath.normpath(path) == _os.normpath(path)


@given(PATHS)
def test_dirname(path: str) -> None:
    assert posixpath.dirname(path) == _os.dirname(path)


@given(PATHS, st.lists(PATHS, max_size=3))
def test_join(a: str, rest: list[str]) -> None:
    assert posixpath.join(a, *rest) == _os.join(a, *rest)
    raw = [p.encode("utf-8", "surrogateescape") for p in (a, *rest)]
    assert posixpath.join(*raw) == _os.join(*raw)


@given(PATHS)
def test_abspath(path: str) -> None:
    assert posixpath.abspath(path) == _os.abspath(path)


@given(PATHS)
def test_fs_codec(path: str) -> None:
    assert os.fsencode(path) == _os.fsencode(path)
    raw = os.fsencode(path)
    assert os.fsdecode(raw) == _os.fsdecode(raw)
    assert raw == _os.fsencode(raw)
    assert path == _os.fsdecode(path)


def test_exists_and_lexists(tmp_path: os.PathLike[str]) -> None:
    link = os.path.join(tmp_path, "dangling")
    os.symlink("/nonexistent/target", link)
    assert (False, True) == (_os.exists(link), _os.lexists(link))
    assert (True, True) == (_os.exists(str(tmp_path)), _os.lexists(str(tmp_path)))
    assert not _os.exists("bad\0path")


def test_environ_is_os_environ_once_os_is_loaded() -> None:
    """In a process that has os (tests, show, check, serve) it is the very mapping."""
    assert _os.current_environ() is os.environ


def test_the_posix_functions_are_the_real_ones() -> None:
    for name in ("open", "stat", "lstat", "fork", "execve", "getxattr", "O_PATH", "WNOHANG"):
        assert getattr(os, name) is getattr(_os, name)
    assert os._exit is _os._exit
    assert (os.SEEK_SET, os.SEEK_CUR, os.SEEK_END) == (_os.SEEK_SET, _os.SEEK_CUR, _os.SEEK_END)


def test_environ_without_os(tmp_path: os.PathLike[str]) -> None:
    """Under ``python -I -S`` (no os loaded) the environment decodes as os would decode it."""
    import subprocess
    import sys

    where = os.path.dirname(os.path.dirname(_os.__file__))
    code = (
        f"import sys; sys.path.append({where!r})\n"
        "from nsprov import _os\n"
        "env = _os.current_environ()\n"
        "assert 'os' not in sys.modules\n"
        "print(ascii(sorted((k, v) for k, v in env.items() if k.startswith('NSPROV_T'))))\n"
    )
    env = {b"NSPROV_T1": b"plain", b"NSPROV_T2": b"caf\xc3\xa9", b"NSPROV_T3": b"bad\xff"}
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], env=env, capture_output=True, check=True
    )
    expected = sorted((os.fsdecode(k), os.fsdecode(v)) for k, v in env.items())
    assert ascii(expected) == out.stdout.decode().strip()


def test_realpath_and_makedirs(tmp_path: os.PathLike[str]) -> None:
    base = os.fsencode(tmp_path)
    os.mkdir(base + b"/d\xff")
    os.symlink(base, base + b"/link")
    os.symlink(b"d\xff/../link/./d\xff", base + b"/rel")
    os.symlink(b"/nonexistent/x", base + b"/dangling")
    for p in (b"/link", b"/rel", b"/link/rel/", b"/d\xff/..", b"/dangling", b"/missing/../x"):
        assert os.path.realpath(base + p) == _os.realpath(base + p), p
    deep = os.path.join(tmp_path, "a", "b")
    _os.makedirs(deep, mode=0o700, exist_ok=True)
    _os.makedirs(deep, mode=0o700, exist_ok=True)
    assert os.path.isdir(deep)
    with open(os.path.join(tmp_path, "file"), "w"):
        pass
    for exist_ok in (True, False):
        try:
            _os.makedirs(os.path.join(tmp_path, "file"), exist_ok=exist_ok)
        except FileExistsError:
            pass
        else:
            raise AssertionError("makedirs over a file")
    try:
        _os.makedirs(deep)
    except FileExistsError:
        pass
    else:
        raise AssertionError("makedirs of an existing directory without exist_ok")
