"""Every configuration in examples/config/ works as shipped, under a real Dovecot 2.3.

The test copies each example, replaces its spool paths (``/var/spool/mail/Shared``,
``/srv/mail/archive``) with throwaway spools, wires nsprov as README and
examples/dovecot-2.3/10-master.conf document, and logs a user in.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nsprov._config import load_config

from .harness import (
    Dovecot,
    SystemAccounts,
    list_mailboxes,
    live_available,
    make_maildir,
    namespaces,
    select_count,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.live

NSPROV = str(Path(sys.executable).with_name("nsprov"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "config"


@pytest.fixture(name="base", scope="module")
def _base() -> Iterator[Path]:
    if reason := live_available():
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="nsprov-examples-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def spool(base: Path, name: str, boxes: dict[str, int]) -> Path:
    path = base / name
    path.mkdir(mode=0o755)
    for box, count in boxes.items():
        make_maildir(path / box, messages=count, owner=0, group=0, mode=0o755)
    return path


def login(
    base: Path, example: str, spools: dict[str, Path], also: tuple[str, ...] = ()
) -> tuple[dict[str, int], list[str], list[str]]:
    """Install *example* with its spools replaced, log in over IMAP; counts, shared prefixes, errors."""
    text = (EXAMPLES / example).read_text()
    for shipped, real in spools.items():
        assert shipped in text
        text = text.replace(shipped, str(real))
    config = base / example
    config.write_text(text)
    load_config(str(config))
    line = f"{NSPROV} post-login --config={config} --protocol="
    with SystemAccounts(base) as accounts:
        user = accounts.user("reader")
        with Dovecot(
            base / f"dovecot-{example}",
            [user],
            postlogin={"imap": line + "imap", "pop3": line + "pop3"},
        ) as dovecot:
            with dovecot.imap(user) as imap:
                names = [n for n in list_mailboxes(imap) if "/" in n]
                counts = {n: select_count(imap, n) for n in [*names, *also]}
                shared = [prefix for prefix, _ in namespaces(imap)["shared"]]
            pop3 = dovecot.pop3(user)
            pop3.quit()
            errors = [e for e in dovecot.errors() if "nsprov" in e]
    return counts, shared, errors


def test_single_spool(base: Path) -> None:
    """single-spool.toml serves each readable mailbox as Shared/<name>/."""
    shared = spool(base, "single", {"sales": 2, "support": 1})

    counts, prefixes, errors = login(base, "single-spool.toml", {"/var/spool/mail/Shared": shared})

    assert {"Shared/sales": 2, "Shared/support": 1} == counts
    assert ["Shared/sales/", "Shared/support/"] == sorted(prefixes)
    assert [] == errors


def test_several_spools(base: Path) -> None:
    """several-spools.toml serves both spools; the archive's hidden namespace stays out of NAMESPACE."""
    team = spool(base, "team", {"sales": 1})
    archive = spool(base, "archive", {"2019": 3})

    counts, prefixes, errors = login(
        base,
        "several-spools.toml",
        {"/var/spool/mail/Shared": team, "/srv/mail/archive": archive},
        also=("Archive/2019",),
    )

    assert 1 == counts["Shared/sales"]
    assert 3 == counts["Archive/2019"]
    assert ["Shared/sales/"] == prefixes
    assert [] == errors


def test_excludes(base: Path) -> None:
    """excludes.toml leaves out retired, scratch and ignore-file mailboxes, and re-includes tmp-keep."""
    shared = spool(
        base, "excl", {"sales": 1, "legal.old": 1, "tmp-copy": 1, "tmp-keep": 2, "private": 1}
    )
    (shared / ".nsprovignore").write_text("private/\n")

    counts, _, errors = login(base, "excludes.toml", {"/var/spool/mail/Shared": shared})

    assert {"Shared/sales": 1, "Shared/tmp-keep": 2} == counts
    assert [] == errors
