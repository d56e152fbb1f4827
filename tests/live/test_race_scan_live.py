"""A spool writer swapping entries while logins scan: nothing forbidden is offered (issue 16, finding 7).

The spool belongs to an attacker, a real UNIX user, who may rename its entries.  A racer
process, running as that user, swaps pairs of entries with ``renameat2(RENAME_EXCHANGE)`` in a
tight loop: a plain directory (no ``cur``/``new``) with a symbolic link to a maildir outside the
spool (``symlinks = "skip"``), and a plain directory with a maildir only the attacker may open.
No entry of those pairs is, at any moment, a mailbox the victim may be offered; only the control
entry ``ok`` is.  Checked by path, the scan looked up ``cur`` in whatever had been swapped in
after the entry's own check, and offered the plain directory.  The scans here run as root for
the victim, in-process (the code post-login runs) and through ``nsprov show``; every one must
offer exactly ``ok``.  A control run with the file-descriptor re-check switched off shows that
this racer does hit the window.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nsprov._config import config_from_mapping
from nsprov._identity import MailUser
from nsprov._lean import compute
from nsprov._perms import Identity
from nsprov._profile_compile import compile_profile
from nsprov._scan import Fs, discover

from .harness import SystemAccounts, User, make_maildir

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.live

NSPROV = str(Path(sys.executable).with_name("nsprov"))
RUNS = 5000
SHOW_RUNS = 20
RENAME_EXCHANGE = 2


def _racer(spool: Path, attacker: User, ready: int) -> None:  # pragma: no cover - the child
    """In a forked child: become *attacker*, then swap the pairs forever."""
    try:
        os.setgroups([])
        os.setgid(attacker.gid)
        os.setuid(attacker.uid)
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
        fd = os.open(spool, os.O_RDONLY | os.O_DIRECTORY)
        pairs = [(b"a", b"b"), (b"c", b"d")]
        os.write(ready, b"r")
        while True:
            for x, y in pairs:
                if renameat2(fd, x, fd, y, RENAME_EXCHANGE) != 0:
                    os.write(2, f"renameat2: {os.strerror(ctypes.get_errno())}\n".encode())
                    os._exit(1)
    finally:
        os._exit(1)


def _spool(base: Path, attacker: User, victim: User) -> Path:
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    os.chown(spool, attacker.uid, attacker.gid)
    spool.chmod(0o755)
    uid, gid = attacker.uid, attacker.gid
    outside = make_maildir(base / "outside", messages=1, owner=uid, group=gid, mode=0o755)
    make_maildir(spool / "ok", messages=1, owner=uid, group=gid, mode=0o755)
    for plain in ("a", "c"):
        (spool / plain).mkdir(mode=0o755)
        os.chown(spool / plain, uid, gid)
        (spool / plain).chmod(0o755)
    os.symlink(outside, spool / "b")
    os.lchown(spool / "b", uid, gid)
    private = make_maildir(spool / "d", messages=1, owner=uid, group=gid, mode=0o755)
    private.chmod(0o700)
    assert victim.uid != attacker.uid
    return spool


@pytest.fixture(name="race")
def _race(live_base: Path, accounts: SystemAccounts) -> Iterator[tuple[Path, User]]:
    """The attacker's spool, its racer running, and the victim."""
    attacker = accounts.user("attacker")
    victim = accounts.user("victim")
    spool = _spool(live_base, attacker, victim)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        _racer(spool, attacker, w)
    os.close(w)
    try:
        assert b"r" == os.read(r, 1), "the racer did not start"
        time.sleep(0.05)
        assert (0, 0) == os.waitpid(pid, os.WNOHANG), "the racer stopped"
        yield spool, victim
        assert (0, 0) == os.waitpid(pid, os.WNOHANG), "the racer stopped"
    finally:
        os.close(r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _offered(spool: Path, user: MailUser, fs: Fs | None = None) -> list[str]:
    config = config_from_mapping({"spool": [{"path": str(spool)}]})
    found = discover(config, user) if fs is None else discover(config, user, fs=fs)
    return sorted(s.entry for s in found.served)


def _victim(victim: User) -> MailUser:
    return MailUser(
        user=victim.name,
        home=str(victim.home),
        identity=Identity(uid=victim.uid, gid=victim.gid, groups=frozenset({victim.gid})),
    )


def test_racer_offers_nothing_forbidden(race: tuple[Path, User]) -> None:
    """5,000 in-process scans and 20 ``nsprov show`` runs for the victim offer only ``ok``."""
    spool, victim = race
    user = _victim(victim)

    wrong = [o for o in (_offered(spool, user) for _ in range(RUNS)) if o != ["ok"]]

    assert [] == wrong
    config = spool.parent / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\n')
    config.chmod(0o644)
    shows = []
    for _ in range(SHOW_RUNS):
        out = subprocess.run(
            [NSPROV, "show", "--config", str(config), "--user", victim.name, "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        shows.append(sorted(ns["entry"] for ns in json.loads(out.stdout)["namespaces"]))
    assert [["ok"]] * SHOW_RUNS == shows


def test_racer_lean_path_offers_nothing_forbidden(race: tuple[Path, User]) -> None:
    """5,000 lean-path logins (one descriptor walk per entry, no path pass) offer only ``ok``."""
    spool, victim = race
    config = config_from_mapping(
        {
            "spool": [{"path": str(spool), "prefix": "Shared/{name}/"}],
            "namespace": {"create_dirs": False},
        }
    )
    profile = compile_profile(config)
    assert profile is not None
    env = {
        "USER": victim.name,
        "UID": str(victim.uid),
        "GID": str(victim.gid),
        "HOME": str(victim.home),
        "USERDB_KEYS": "UID GID HOME ",
    }

    offered = {compute(profile, env, user_tasks=False)[0].get("NAMESPACE", "") for _ in range(RUNS)}

    assert 1 == len(offered), offered
    [only] = offered
    assert (1, "s-ok-") == (len(only.split()), only[:5])


def test_racer_hits_the_window_without_the_recheck(race: tuple[Path, User]) -> None:
    """Control: with the re-check by file descriptor off, the same racer gets entries offered."""
    spool, victim = race
    user = _victim(victim)
    by_path_only = Fs(anchored=None)

    offered: set[str] = set()
    for _ in range(4 * RUNS):
        offered.update(_offered(spool, user, by_path_only))
        if offered - {"ok"}:
            break

    assert offered - {"ok"}
