"""``nsprov post-login --serve`` under a real Dovecot 2.3: answers from ``nsprov serve``, falls back.

The fast path takes the namespaces from a running server over its socket, with no worker;
when the server is stopped, or when the configuration has actions besides namespaces, the
same post-login step computes in-process. Either way the user gets the same namespaces.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nsprov import _fast as nsprov_fast

from .harness import Dovecot, SystemAccounts, live_available, make_maildir, namespaces, select_count
from .test_serve_live import NSPROV, Serve

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.live


@pytest.fixture(name="base")
def _base() -> Iterator[Path]:
    if reason := live_available():
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="nsprov-fast-live-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def worker_ran(config: Path) -> bool:
    """Whether the in-process worker handled a login: it caches each config it parses (root)."""
    from nsprov._config import DEFAULT_CACHE_DIR, _cache_file

    return Path(_cache_file(DEFAULT_CACHE_DIR, str(config))).exists()


def forget(config: Path) -> None:
    """Drop the worker's cached copy of *config* (the witness above)."""
    from nsprov._config import DEFAULT_CACHE_DIR, _cache_file

    Path(_cache_file(DEFAULT_CACHE_DIR, str(config))).unlink(missing_ok=True)


#: ``python -I -S /path/to/nsprov/_fast.py``: the fast path without ``site`` (docs/serve.md).
FAST = f"{sys.executable} -I -S {Path(nsprov_fast.__file__)}"


@pytest.mark.parametrize("form", ["console-script", "fast-script"])
def test_served_and_fallback(base: Path, form: str) -> None:
    """Namespaces come from the server while it runs, from the worker once it is stopped.

    Both wirings: ``nsprov post-login --serve=...`` and ``python -I -S .../_fast.py --serve=...``,
    which re-runs as ``python -I -m nsprov post-login`` when the server does not answer.
    """
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    make_maildir(spool / "sales", messages=2, owner=0, group=0, mode=0o755)
    make_maildir(spool / "secret", messages=1, owner=0, group=0, mode=0o700)
    config = base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n')
    serve = Serve(base, config)
    program = FAST if form == "fast-script" else f"{NSPROV} post-login"
    # Which route answered is the point, not how fast: a generous timeout, so that a slow
    # (2-CPU, loaded) machine still gets the server's answer.  Serve.start waits for the
    # start line, which the server logs once its socket accepts and its helper runs.
    line = f"{program} --config={config} --protocol=imap --serve={serve.socket} --serve-timeout=3"
    forget(config)
    with SystemAccounts(base) as accounts:
        user = accounts.user("reader")
        with Dovecot(base / "dovecot", [user], postlogin={"imap": line}) as dovecot:
            serve.start()
            try:
                with dovecot.imap(user) as imap:
                    served = (
                        [p for p, _ in namespaces(imap)["shared"]],
                        select_count(imap, "Shared/sales"),
                    )
                from_server = not worker_ran(config)
            finally:
                serve.stop()
            with dovecot.imap(user) as imap:
                fallback = (
                    [p for p, _ in namespaces(imap)["shared"]],
                    select_count(imap, "Shared/sales"),
                )
            errors = [e for e in dovecot.errors() if "nsprov" in e]

    assert (["Shared/sales/"], 2) == served
    assert from_server
    assert served == fallback
    assert worker_ran(config)
    assert [] == errors
    forget(config)


def test_other_actions_use_the_worker(base: Path) -> None:
    """With an alert configured, the server declines and the worker runs the actions (the alert arrives)."""
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    make_maildir(spool / "sales", messages=1, owner=0, group=0, mode=0o755)
    config = base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\n[[alert]]\ntext = "Maintenance tonight."\n')
    serve = Serve(base, config)
    line = f"{NSPROV} post-login --config={config} --protocol=imap --serve={serve.socket}"
    forget(config)
    with SystemAccounts(base) as accounts:
        user = accounts.user("reader")
        with Dovecot(base / "dovecot", [user], postlogin={"imap": line}) as dovecot:
            serve.start()
            try:
                imap = dovecot.imap(user)
                alerts = [r for r in imap.untagged_responses.get("OK", []) if b"[ALERT]" in r]
                shared = [p for p, _ in namespaces(imap)["shared"]]
                imap.logout()
            finally:
                serve.stop()

    assert [b"[ALERT] Maintenance tonight."] == alerts
    assert ["Shared/sales/"] == shared
    assert worker_ran(config)
    forget(config)
