"""A spool on a filesystem that hangs: logins go on, and stuck workers do not pile up (finding 8).

A tiny FUSE server (the kernel's ``/dev/fuse`` protocol, no libfuse) answers ``FUSE_INIT`` and then
reads every request without ever answering it: a process that touches the mount waits, and once
killed waits on uninterruptibly (state ``D``), as on a dead NFS server.  200 ``nsprov post-login``
processes (root, as under Dovecot), four at a time, each with a 0.5 s deadline, scan a config
whose one spool is that mount.  Each must exec the next program in time; before the per-spool
breaker every one of them left its worker stuck in the mount, now the first few do and the rest
skip the spool, each with one line; past the breaker's break, logins see that the stuck
workers still hold the spool's lock and skip it again, so the count stays put for the outage.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nsprov._breaker import BREAK_SECONDS

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.live

NSPROV = str(Path(sys.executable).with_name("nsprov"))
LOGINS = 200
PARALLEL = 4
#: At most this many workers may be left stuck in the hung mount ("a handful").
STUCK_MAX = 2 * PARALLEL
MNT_DETACH = 2

SERVER = """\
import ctypes, os, struct, sys
fd = os.open("/dev/fuse", os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
options = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
if libc.mount(b"nsprov-hung", sys.argv[1].encode(), b"fuse.nsprovhung", 6, options) != 0:
    raise SystemExit(f"mount: {os.strerror(ctypes.get_errno())}")
print("mounted", flush=True)
while True:
    data = os.read(fd, 1 << 20)
    _, opcode, unique = struct.unpack_from("<IIQ", data)
    if opcode == 26:  # FUSE_INIT: protocol 7.31, no features
        minor = min(struct.unpack_from("<I", data, 44)[0], 31)
        body = struct.pack("<IIIIHHIIHHI7I", 7, minor, 0, 0, 0, 0, 4096, 1, 0, 0, 0, *[0] * 7)
        os.write(fd, struct.pack("<IiQ", 16 + len(body), 0, unique) + body)
    # Every other request is read (so the kernel counts it as sent) and never answered.
"""


@pytest.fixture(name="hung_mount")
def _hung_mount(live_base: Path) -> Iterator[Path]:
    """A directory whose filesystem never answers; unmounted (which frees its waiters) afterwards."""
    if not Path("/dev/fuse").exists():
        pytest.skip("no /dev/fuse")
    mount = live_base / "hung"
    mount.mkdir(mode=0o755)
    with subprocess.Popen(
        [sys.executable, "-I", "-c", SERVER, str(mount)], stdout=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            assert "mounted\n" == server.stdout.readline()
            yield mount
        finally:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.umount2(os.fsencode(mount), MNT_DETACH)
            server.kill()  # closing /dev/fuse aborts the connection: every waiter gets an error


def workers_of(config: Path) -> list[int]:
    """Pids of live processes started with *config* on their command line (the workers left)."""
    pids = []
    needle = f"--config={config}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z" and needle in (entry / "cmdline").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids


def test_hung_spool_workers_do_not_pile_up(live_base: Path, hung_mount: Path) -> None:
    """200 post-login runs against a hung spool: all exec in time, at most a handful stay stuck."""
    config = live_base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{hung_mount}"\n')
    env = {
        "USER": "hung",
        "UID": "65534",
        "GID": "65534",
        "HOME": "/nonexistent",
        "USERDB_KEYS": "UID GID HOME ",
    }
    argv = [NSPROV, "post-login", f"--config={config}", "--deadline=0.5", "/bin/true"]

    def login(n: int) -> tuple[float, int, str]:
        # stderr to a file: a worker stuck in the mount keeps fd 2 (Dovecot's log pipe) open.
        log = live_base / f"stderr.{n}"
        started = time.monotonic()
        with log.open("w") as err:
            proc = subprocess.run(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=err, timeout=30, check=False
            )
        return time.monotonic() - started, proc.returncode, log.read_text()

    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        runs = list(pool.map(login, range(LOGINS)))
        time.sleep(BREAK_SECONDS + 0.5)  # past the break: the spool is looked at again
        later = list(pool.map(login, range(LOGINS, LOGINS + PARALLEL)))
    time.sleep(0.5)  # the last runs' workers: killed, or stuck
    stuck = workers_of(config)
    print(f"{len(stuck)} workers stuck after {LOGINS + PARALLEL} post-login runs")
    lines = [line for _, _, err in runs for line in err.splitlines()]
    skipped = [line for line in lines if f"spool {hung_mount} skipped" in line]
    still = [f"spool {hung_mount} skipped: a scan of it that" in err for _, _, err in later]

    assert [0] * (LOGINS + PARALLEL) == [rc for _, rc, _ in runs + later]
    assert max(seconds for seconds, _, _ in runs + later) < 5
    assert len(stuck) <= STUCK_MAX, stuck
    assert LOGINS - STUCK_MAX <= len(skipped)
    assert [True] * PARALLEL == still  # the stuck workers still hold the spool's lock


@pytest.mark.parametrize("command", ["show", "check"])
def test_show_and_check_give_up(live_base: Path, hung_mount: Path, command: str) -> None:
    """nsprov show and check on a hung spool: an error naming the deadline, not a hang."""
    config = live_base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{hung_mount}"\n')
    argv = [NSPROV, command, "--user=nobody", f"--config={config}", "--deadline=1"]
    if command == "check":
        argv.append("--dovecot-version=2.3")
    started = time.monotonic()
    with (live_base / "stderr").open("w+") as err:
        proc = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=err, text=True, timeout=60, check=False
        )
        err.seek(0)
        output = proc.stdout + err.read()
    elapsed = time.monotonic() - started

    assert 1 == proc.returncode, output
    assert "did not finish within 1s" in output
    assert elapsed < 15
