"""System calls of one lean login, counted with strace (issue 13).

One warm lean login of a user whose userdb names a ``system_groups_user``, on a spool of
root:root 0755 maildirs, is traced with ``strace -f`` from the exec of the post-login step
(``python -I -S .../nsprov/_fast.py``) to the exec of the next program.  What the interpreter
costs is taken off: a bare ``python -I -S -c pass``, and the imports, counted by importing the
very modules the login imported (``-X importtime``) in one bare process.  What is left is
nsprov's own work, bounded here:

* per entry at most 9 calls: ``openat`` of the entry (``O_PATH|O_NOFOLLOW``), ``fstat``, its
  ACL, ``fstatat`` and the ACL of ``cur`` and ``new``, ``close``, and one ``stat`` of its index
  directory (measured as the difference between 20 and 10 entries);
* at most :data:`FIXED` calls besides: the config's and profile's trust walks, the fork and the
  frames to the parent, the spool breaker, the spool and its ancestors, the identity switch
  that confirms the index directories;
* no ``mkdir`` (every directory exists) and no NSS: ``getgrouplist`` is not needed when no
  verdict depends on group membership, so ``/etc/nsswitch.conf`` and ``/etc/group`` are never
  opened.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import nsprov._main

if TYPE_CHECKING:
    from .harness import SystemAccounts, User

pytestmark = pytest.mark.live

FAST = str(Path(nsprov._main.__file__).with_name("_fast.py"))
#: Calls per entry: the descriptor walk (8) and the stat of its index directory (1), plus
#: what the allocator and the interpreter's lock cost per entry in the thread worker (its
#: malloc arena grows by ``mprotect``, the two threads meet on a ``futex``): about 0.1.
PER_ENTRY = 9.5
#: Calls besides the entries' (measured about 140 on Debian 12, Python 3.11, /var/tmp).
FIXED = 170
_CALL = re.compile(r"^(?:\d+\s+)?([a-z_0-9]+)\(")


def _calls(trace: Path) -> list[str]:
    """The calls of a ``strace -f`` log up to the exec of ``/bin/true`` (resumptions not twice)."""
    out = []
    for line in trace.read_text(errors="replace").splitlines():
        body = line.split(None, 1)[1] if line[:1].isdigit() else line
        if body.startswith(("<...", "+++", "---")):
            continue
        if body.startswith('execve("/bin/true"'):
            break
        out.append(body)
    return out


def _traced(argv: list[str], env: dict[str, str], trace: Path) -> list[str]:
    result = subprocess.run(
        ["strace", "-f", "-o", str(trace), *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "path=lean" in result.stderr, result.stderr
    return _calls(trace)


def _spool(base: Path, name: str, entries: int) -> Path:
    spool = base / name
    for i in range(entries):
        for sub in ("cur", "new", "tmp"):
            (spool / f"box{i}" / sub).mkdir(parents=True)
    for path in (spool, *spool.rglob("*")):
        path.chmod(0o755)
    return spool


def _login(base: Path, user: User, entries: int) -> tuple[list[str], list[str]]:
    """``(calls, imported modules)`` of one warm lean login on a spool of *entries* maildirs."""
    spool = _spool(base, f"spool{entries}", entries)
    config = base / f"nsprov{entries}.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n')
    config.chmod(0o644)
    env = {
        "USER": user.name,
        "UID": str(user.uid),
        "GID": str(user.gid),
        "HOME": str(user.home),
        "SYSTEM_GROUPS_USER": user.name,
        "USERDB_KEYS": "UID GID HOME SYSTEM_GROUPS_USER ",
        "IP": "127.0.0.1",
        "LOCAL_IP": "127.0.0.1",
    }
    argv = [sys.executable, "-I", "-S", FAST, f"--config={config}", "--protocol=imap", "/bin/true"]
    for _ in range(2):  # cold (the full path writes the profile, makes the index dirs), warm
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=True)
    imported = subprocess.run(
        [*argv[:1], "-X", "importtime", *argv[1:]],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    # -X importtime names a module when its import completes: reversed, importers come first.
    modules = list(
        dict.fromkeys(
            line.rsplit("|", 1)[1].strip()
            for line in reversed(imported.splitlines())
            if line.startswith("import time:") and not line.endswith("imported package")
        )
    )
    return _traced(argv, env, base / f"trace{entries}"), modules


def _bare(base: Path, modules: list[str]) -> tuple[int, int]:
    """Calls of a bare interpreter, and of one that imports *modules* (as ``_fast.py`` finds them)."""
    site = str(Path(FAST).parent.parent)
    script = (
        f"import sys; sys.path.append({site!r})\n"
        f"for m in {modules!r}:\n    m in sys.modules or __import__(m)"
    )
    counts = []
    for code in ("pass", script):
        trace = base / "bare"
        subprocess.run(
            ["strace", "-f", "-o", str(trace), sys.executable, "-I", "-S", "-c", code],
            env={},
            stdin=subprocess.DEVNULL,
            check=True,
        )
        counts.append(len(_calls(trace)))
    return counts[0], counts[1]


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
def test_lean_login_system_calls(live_base: Path, accounts: SystemAccounts) -> None:
    """One warm lean login at 10 entries: ~9 calls per entry, FIXED besides, no mkdir, no NSS, no fork."""
    user = accounts.user("sys")
    ten, modules = _login(live_base, user, 10)
    twenty, _ = _login(live_base, user, 20)
    bare, with_imports = _bare(live_base, modules)
    names = [_CALL.match(c).group(1) for c in ten if _CALL.match(c)]  # type: ignore[union-attr]
    work = len(ten) - with_imports
    per_entry = (len(twenty) - len(ten)) / 10
    report = (
        f"login {len(ten)} calls: interpreter {bare}, imports {with_imports - bare} "
        f"({len(modules)} modules), nsprov's work {work}; per entry {per_entry:g}"
    )
    print(report)

    assert per_entry <= PER_ENTRY, report
    assert work - 10 * PER_ENTRY <= FIXED, report
    assert [] == [c for c in ten if c.startswith("mkdir")]
    assert [] == [c for c in ten if "/etc/nsswitch.conf" in c or '"/etc/group"' in c]
    # Every index directory exists: the thread worker sees them as root and switches no ids,
    # and nothing is forked (no clone but the thread's).
    switched = [n for n in names if n.startswith(("setres", "setgroups", "setuid", "setgid"))]
    assert [] == switched, "no drop to the user when every index directory exists"
    forks = [c for c in ten if c.startswith(("clone(", "clone3(", "fork(", "vfork("))]
    assert 1 == len(forks), forks
    assert "CLONE_THREAD" in forks[0], forks
