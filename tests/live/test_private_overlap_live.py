"""A prefix starting with ``{name}`` against the private namespace, under a real Dovecot 2.3.

The shipped wiring (``examples/dovecot-2.3/10-master.conf``) runs nsprov post-login; the
private namespace is Dovecot's usual ``inbox`` with an empty prefix.  A spool entry ``Sent``
(mode 0777, as a careless spool is) served with ``prefix = "{name}/"`` took over the user's
own ``Sent``: the client's APPEND of a sent message wrote it into the shared spool.  The
configuration is now refused: post-login fails open (no namespaces, one error line) and the
APPEND lands in the user's private mailbox.  ``allow_private_overlap = true`` brings the
overlap back, and ``nsprov check`` then reports it as ``private-overlap``.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from typing import TYPE_CHECKING

import pytest

from nsprov._cli.check import main as check_main

from .harness import Dovecot, SystemAccounts, User, make_maildir, namespaces
from .test_fastpath_live import forget
from .test_scenarios import NSPROV23, wiring

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.live

MESSAGE = (
    b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: sent mail\r\n"
    b"Message-ID: <overlap@nsprov.test>\r\n\r\nprivate\r\n"
)


def messages(maildir: Path) -> int:
    """Messages in a maildir's ``new`` and ``cur`` (0 when it does not exist)."""
    return sum(
        1 for sub in ("new", "cur") if (maildir / sub).is_dir() for _ in (maildir / sub).iterdir()
    )


def send_to_sent(dovecot: Dovecot, user: User) -> tuple[list[str], str]:
    """Log in, CREATE and APPEND to ``Sent`` as a mail client does; shared prefixes, APPEND status."""
    imap = dovecot.imap(user)
    try:
        seen = [prefix for prefix, _ in namespaces(imap)["shared"]]
        imap.create("Sent")
        status, _ = imap.append("Sent", None, None, MESSAGE)
    finally:
        imap.logout()
    return seen, status


@pytest.fixture(name="site")
def _site(live_base: Path, accounts: SystemAccounts) -> Iterator[tuple[Dovecot, User, Path, Path]]:
    alice = accounts.user("alice")
    spool = live_base / "spool"
    spool.mkdir(mode=0o755)
    spool.chmod(0o755)
    make_maildir(spool / "Sent", messages=0, owner=0, group=0, mode=0o777)
    config = live_base / "nsprov.toml"
    dovecot = Dovecot(
        live_base / "dovecot", [alice], extra_conf=wiring("2.3", NSPROV23, str(config))
    )
    try:
        with dovecot:
            yield dovecot, alice, spool, config
    finally:
        forget(config)


def nsprov_errors(dovecot: Dovecot, since: int) -> list[str]:
    """Dovecot's error lines from nsprov after the first *since* lines of the log."""
    lines = dovecot.log().splitlines()[since:]
    return [line for line in lines if "nsprov" in line and re.search(r"Error|Fatal", line)]


def wait_for_log(dovecot: Dovecot, since: int, pattern: str) -> None:
    deadline = time.monotonic() + 10
    while not any(re.search(pattern, line) for line in dovecot.log().splitlines()[since:]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no log line matching {pattern!r}:\n{dovecot.log()}")
        time.sleep(0.05)


def test_name_first_prefix_refused(site: tuple[Dovecot, User, Path, Path]) -> None:
    """prefix = "{name}/" is refused: no namespaces, one error line, Sent stays private."""
    dovecot, alice, spool, config = site
    config.write_text(f'[[spool]]\npath = "{spool}"\nprefix = "{{name}}/"\n')
    mark = len(dovecot.log().splitlines())

    seen, status = send_to_sent(dovecot, alice)
    wait_for_log(dovecot, mark, r"starts with \{name\}")

    assert "OK" == status
    assert [] == seen
    assert (0, 1) == (messages(spool / "Sent"), messages(alice.home / "Maildir" / ".Sent"))
    errors = nsprov_errors(dovecot, mark)
    assert 1 == len(errors)
    assert "spool[1].prefix" in errors[0]
    assert "allow_private_overlap" in errors[0]


def test_allowed_overlap_is_reported_by_check(site: tuple[Dovecot, User, Path, Path]) -> None:
    """With allow_private_overlap the takeover happens, and check reports it as an error."""
    dovecot, alice, spool, config = site
    config.write_text(
        f'[[spool]]\npath = "{spool}"\nprefix = "{{name}}/"\nallow_private_overlap = true\n'
    )

    seen, status = send_to_sent(dovecot, alice)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = check_main(
            [
                f"--config={config}",
                f"--dovecot-config={dovecot.conf_path}",
                f"--user={alice.name}",
                f"--state={config.parent / 'check-state.json'}",
                "--format=json",
            ]
        )
    doc = json.loads(out.getvalue())

    assert ["Sent/"] == seen
    assert "OK" == status
    assert (1, 0) == (messages(spool / "Sent"), messages(alice.home / "Maildir" / ".Sent"))
    assert 1 == code
    assert ("private-overlap", "error", "spool[1].prefix") in {
        (f["code"], f["severity"], f["subject"]) for f in doc["findings"]
    }
