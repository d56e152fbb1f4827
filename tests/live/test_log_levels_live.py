"""nsprov's lines reach Dovecot's log at their level, on Dovecot 2.3 (host) and 2.4 (chroot).

Dovecot logs a post-login script's raw stderr line at Error; a line that starts with byte 1
and the byte log type + 1 carries its level (core src/lib/failures.c ``i_failure_parse_line``).
First a shell script proves that each Dovecot honours the marker for a post-login script;
then a real nsprov login: its info line at Info, a warning (an unknown option) at Warning,
``debug_users`` output at Debug, and no Error line.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import nsprov

from .chroot24 import (
    ChrootAccounts,
    Dovecot24,
    chroot24_status,
    chroot_tempdir,
    to_outside,
    write_file,
)
from .chroot24 import (
    make_maildir as make_maildir24,
)
from .harness import Dovecot, SystemAccounts, list_mailboxes, make_maildir, write_script

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.live

NSPROV = str(Path(sys.executable).with_name("nsprov"))

LEVELS_SCRIPT = r"""
printf '\001\001 nsprov-probe debug\n' >&2
printf '\001\002 nsprov-probe info\n' >&2
printf '\001\003%d nsprov-probe warning\n' $$ >&2
printf 'nsprov-probe raw\n' >&2
exec "$@"
"""


def wait_for(log: Callable[[], str], pattern: str, timeout: float = 10) -> str:
    """The log once *pattern* (a regex) matches a line of it; Dovecot logs asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        text = log()
        if re.search(pattern, text, re.MULTILINE):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not in the log:\n{text}")
        time.sleep(0.05)


def assert_probe_levels(text: str) -> None:
    assert re.search(r"imap-postlogin: Debug: nsprov-probe debug$", text, re.MULTILINE), text
    assert re.search(r"imap-postlogin: Info: nsprov-probe info$", text, re.MULTILINE), text
    assert re.search(r"imap-postlogin: Warning: nsprov-probe warning$", text, re.MULTILINE), text
    assert re.search(r"imap-postlogin: Error: nsprov-probe raw$", text, re.MULTILINE), text


def assert_nsprov_levels(text: str, user: str) -> None:
    """The info line at Info, the unknown option at Warning, debug_users at Debug; no Error."""
    info = rf"imap-postlogin: Info: nsprov: user={user} served=1 skipped=0 ms=\d+ path=full$"
    assert re.search(info, text, re.MULTILINE), text
    warning = r"imap-postlogin: Warning: nsprov: ignoring unknown option '--future=1'$"
    assert re.search(warning, text, re.MULTILINE), text
    assert re.search(rf"imap-postlogin: Debug: nsprov: user {user}: debug: ", text, re.MULTILINE)
    assert [] == [line for line in text.splitlines() if "Error: nsprov" in line]
    assert "\x01" not in text


def nsprov_config(spool: object, user: str, dialect: str) -> str:
    return (
        f'[dovecot]\nversion = "{dialect}"\n'
        f'[postlogin]\ndebug_users = ["{user}"]\n'
        f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n'
    )


# --- Dovecot 2.3 on the host ----------------------------------------------------------


def test_dovecot23_honours_the_level_marker(live_base: Path, accounts: SystemAccounts) -> None:
    """A post-login script's marked stderr lines land at their level; a raw one at Error."""
    script = write_script(live_base / "levels.sh", LEVELS_SCRIPT)
    user = accounts.user("probe")
    with Dovecot(live_base / "dovecot", [user], postlogin={"imap": str(script)}) as dovecot:
        with dovecot.imap(user):
            pass
        text = wait_for(dovecot.log, "nsprov-probe raw")

    assert_probe_levels(text)


def test_nsprov_levels_23(live_base: Path, accounts: SystemAccounts) -> None:
    """A real login on 2.3: each nsprov line at its level, the login's line at Info."""
    spool = live_base / "spool"
    spool.mkdir(mode=0o755)
    make_maildir(spool / "sales", messages=1, owner=0, group=0, mode=0o755)
    user = accounts.user("levels")
    config = live_base / "nsprov.toml"
    config.write_text(nsprov_config(spool, user.name, "2.3"))
    line = f"{NSPROV} post-login --config={config} --protocol=imap --future=1"
    with Dovecot(live_base / "dovecot", [user], postlogin={"imap": line}) as dovecot:
        with dovecot.imap(user):
            pass
        text = wait_for(dovecot.log, r"Info: nsprov: user=")

    assert_nsprov_levels(text, user.name)


# --- Dovecot 2.4 in the chroot --------------------------------------------------------


@pytest.fixture(name="root", scope="module")
def _root() -> Path:
    root, reason = chroot24_status()
    if root is None:
        pytest.skip(reason)
    return root


def test_dovecot24_honours_the_level_marker(root: Path) -> None:
    """Dovecot 2.4 reads the same marker from a post-login script's stderr."""
    with chroot_tempdir(root, "levels-") as work, ChrootAccounts(root) as accounts:
        user = accounts.add_user("probe")
        script = write_file(root, work / "levels.sh", "#!/bin/sh\n" + LEVELS_SCRIPT, mode=0o755)
        with Dovecot24(work, [user], postlogin={"imap": str(script)}, root=root) as dovecot:
            with dovecot.imap(user):
                pass
            text = wait_for(dovecot.log, "nsprov-probe raw")

    assert_probe_levels(text)


def test_nsprov_levels_24(root: Path) -> None:
    """A real login on 2.4, nsprov being this installed package run by the root's Python."""
    with chroot_tempdir(root, "levels-") as work, ChrootAccounts(root) as accounts:
        user = accounts.add_user("levels")
        # This test's own copy of the installed package, so the root's shared venv (its
        # Python, attrs and pathspec) is used without installing anything into it.
        package = Path(nsprov.__file__).parent
        shutil.copytree(package, to_outside(root, work / "lib" / "nsprov"))
        launcher = write_file(
            root,
            work / "nsprov",
            "#!/bin/bash -p\nexec /opt/nsprov-venv/bin/python -I -c "
            f'\'import sys; sys.path.insert(0, "{work}/lib"); '
            'from nsprov._main import entrypoint; entrypoint()\' "$@"\n',
            mode=0o755,
        )
        spool = work / "spool"
        make_maildir24(root, spool / "sales", messages=1, dir_mode=0o755, file_mode=0o644)
        to_outside(root, spool).chmod(0o755)
        config = write_file(root, work / "nsprov.toml", nsprov_config(spool, user.name, "2.4"))
        line = f"{launcher} post-login --config={config} --protocol=imap --future=1"
        with Dovecot24(work, [user], postlogin={"imap": line}, root=root) as dovecot:
            with dovecot.imap(user):
                pass
            text = wait_for(dovecot.log, r"Info: nsprov: user=")

    assert_nsprov_levels(text, user.name)


def test_dead_serve_socket_warns_once(live_base: Path, accounts: SystemAccounts) -> None:
    """--serve= to a stopped server: logins still get their namespaces, one Warning a minute."""
    spool = live_base / "spool"
    spool.mkdir(mode=0o755)
    make_maildir(spool / "sales", messages=1, owner=0, group=0, mode=0o755)
    user = accounts.user("noserve")
    config = live_base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n')
    dead = live_base / "serve.sock"  # nothing listens here
    line = f"{NSPROV} post-login --config={config} --protocol=imap --serve={dead}"
    marker = Path("/run/nsprov/serve-hint")  # the real rate limit: make this minute's hint due
    if marker.exists():
        os.utime(marker, (0, 0))
    with Dovecot(live_base / "dovecot", [user], postlogin={"imap": line}) as dovecot:
        for _ in range(2):
            with dovecot.imap(user) as imap:
                assert "Shared/sales" in list_mailboxes(imap)
        text = wait_for(dovecot.log, r"(?s)Info: nsprov: user=.*Info: nsprov: user=")

    warnings = [line for line in text.splitlines() if "does not answer" in line]
    assert 1 == len(warnings), text
    assert f"imap-postlogin: Warning: nsprov: nsprov serve at {dead} does not answer" in warnings[0]
    assert [] == [line for line in text.splitlines() if "Error: nsprov" in line]
