"""Spool entries swapped while logins check them, under a real Dovecot 2.3 (issue 16, finding 7).

Anyone who may write a spool can rename its entries while a login's scan looks at them.  A
racer process swaps two pairs of names atomically, over and over (``renameat2`` with
``RENAME_EXCHANGE``): in one pair a readable directory that is no maildir and a 0700 maildir
whose ``cur`` and ``new`` are open to all, in the other another such readable directory and a
symbolic link to a readable maildir outside the spool (``symlinks = "skip"``).  At every instant
each of the four names is one of: no maildir, a directory the user may not read, a symbolic
link; none of them may ever be offered.  A check made by name, one ``lstat`` after another,
mixes the two inodes of a pair and offers the name; a check by descriptor cannot.

IMAP logins (each one runs ``nsprov post-login``) go on until 1,000 of them have been answered
by nsprov, which a readable maildir ``open`` beside the pairs shows in every NAMESPACE reply.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .harness import Dovecot, SystemAccounts, make_maildir, namespaces

pytestmark = pytest.mark.live

NSPROV = str(Path(sys.executable).with_name("nsprov"))
LOGINS = 1000
CLIENTS = 4
#: Pairs of names the racer swaps: (readable non-maildir, forbidden).
PAIRS = (("plain1", "private"), ("plain2", "link"))

RACER = """\
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2
fd = os.open(sys.argv[1], os.O_PATH | os.O_DIRECTORY)
pairs = [(a.encode(), b.encode()) for a, b in zip(sys.argv[2::2], sys.argv[3::2])]
for a, b in pairs:
    if libc.renameat2(fd, a, fd, b, RENAME_EXCHANGE) != 0:
        raise SystemExit(f"renameat2: {os.strerror(ctypes.get_errno())}")
print("racing", flush=True)
while True:
    for a, b in pairs:
        libc.renameat2(fd, a, fd, b, RENAME_EXCHANGE)
"""


def test_swapped_entries_never_offered(accounts: SystemAccounts, live_base: Path) -> None:
    """1,000 IMAP logins while entries are swapped: no swapped name is ever offered."""
    spool = live_base / "spool"
    spool.mkdir(mode=0o1777)
    spool.chmod(0o1777)  # writable by all, as a spool others may add mailboxes to
    make_maildir(spool / "open", messages=0, owner=0, group=0, mode=0o755)
    for plain, _ in PAIRS:
        (spool / plain).mkdir(mode=0o755)
    private = make_maildir(spool / "private", messages=0, owner=0, group=0, mode=0o755)
    private.chmod(0o700)
    outside = make_maildir(live_base / "outside", messages=0, owner=0, group=0, mode=0o755)
    (spool / "link").symlink_to(outside)
    config = live_base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n')
    user = accounts.user("reader")
    line = f"{NSPROV} post-login --config={config} --protocol=imap --deadline=20"
    answered: list[set[str]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    with Dovecot(live_base / "dovecot", [user], postlogin={"imap": line}) as dovecot:

        def client() -> None:
            try:
                while True:
                    with lock:
                        if len(answered) >= LOGINS or failures:
                            return
                    with dovecot.imap(user) as imap:
                        shared = {p for p, _ in namespaces(imap)["shared"]}
                    if "Shared/open/" in shared:
                        with lock:
                            answered.append(shared)
            except BaseException as e:  # reported by the main thread
                with lock:
                    failures.append(e)

        args = [sys.executable, "-I", "-c", RACER, str(spool)]
        args += [name for pair in PAIRS for name in pair]
        with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as racer:
            try:
                assert racer.stdout is not None
                assert "racing\n" == racer.stdout.readline()
                started = time.monotonic()
                threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                elapsed = time.monotonic() - started
            finally:
                racer.kill()

    if failures:
        raise failures[0]
    forbidden = {f"Shared/{name}/" for pair in PAIRS for name in pair}
    offered = [sorted(shared & forbidden) for shared in answered]
    bad = [o for o in offered if o]
    print(f"{len(answered)} logins answered in {elapsed:.0f} s; {len(bad)} offered a swapped name")

    assert LOGINS <= len(answered)
    assert [] == bad
