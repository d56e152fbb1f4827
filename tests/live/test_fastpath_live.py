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
from typing import TYPE_CHECKING, Any

import pytest

from nsprov import _fast as nsprov_fast

from .harness import (
    Dovecot,
    SystemAccounts,
    User,
    live_available,
    make_maildir,
    namespaces,
    select_count,
)
from .test_actions import logged_in, refused, session
from .test_serve_live import HARNESS_USERDB, NSPROV, Serve

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


# --- the fast path never skips a decision the in-process path makes (issue 16, 3 and 4) ------


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.replace(path)


@pytest.mark.parametrize("how", ["replaced", "appended", "other-file"])
def test_deny_added_while_serving(base: Path, how: str) -> None:
    """A [deny] rule added to the file while the server runs denies the next login.

    *replaced*: a new file renamed over the old one; *appended*: the same inode, edited in
    place; *other-file*: the server runs with another configuration than the login names.
    """
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    make_maildir(spool / "sales", messages=2, owner=0, group=0, mode=0o755)
    config = base / "nsprov.toml"
    plain = f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n'
    config.write_text(plain)
    served_config = config
    if how == "other-file":
        served_config = base / "serve.toml"
        served_config.write_text(plain)
    serve = Serve(base, served_config)
    line = f"{NSPROV} post-login --config={config} --protocol=imap --serve={serve.socket} --serve-timeout=3"
    forget(config)
    with SystemAccounts(base) as accounts:
        user = accounts.user("reader")
        deny = f'[deny]\nusers = ["{user.name}"]\nmessage = "Locked."\n'
        with Dovecot(base / "dovecot", [user], postlogin={"imap": line}) as dovecot:
            serve.start()
            try:
                first = session("imap", dovecot.imap_port, user)
                from_server = not worker_ran(config)
                if how == "appended":
                    with config.open("a") as f:
                        f.write(deny)
                else:
                    _replace(config, plain + deny)
                second = session("imap", dovecot.imap_port, user)
            finally:
                serve.stop()

    assert logged_in(first)
    assert from_server == (how != "other-file")
    assert refused("imap", "Locked.") == second
    forget(config)


def _passwd_file_userdb(path: Path) -> str:
    return f"userdb {{\n  driver = passwd-file\n  args = {path}\n}}\n"


class PasswdFileDovecot(Dovecot):
    """The harness's Dovecot with a passwd-file userdb instead of ``userdb passwd``."""

    def __init__(self, workdir: Path, users: list[User], *, userdb: Path, **kw: Any) -> None:
        super().__init__(workdir, users, **kw)
        self.userdb = userdb

    def config_text(self) -> str:
        """The harness config with the passwd-file userdb."""
        text = super().config_text()
        assert text.count(HARNESS_USERDB) == 1
        return text.replace(HARNESS_USERDB, _passwd_file_userdb(self.userdb))


def test_passwd_file_identity(base: Path) -> None:
    """A passwd-file userdb whose gid and groups differ from NSS: the server uses the userdb's.

    NSS puts the user in group *team*; the passwd-file userdb gives the mail process the gid of
    group *pf* and no system_groups_user, so it has no supplementary groups (restrict-access).
    Served or computed in-process, the user gets exactly the mailboxes that identity may open:
    *sales* (world-readable) and *pfbox* (group pf), never *team*.
    """
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    config = base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n')
    serve = Serve(base, config)
    line = f"{NSPROV} post-login --config={config} --protocol=imap --serve={serve.socket} --serve-timeout=3"
    with SystemAccounts(base) as accounts:
        team = accounts.group("team")
        pf = accounts.group("pf")
        user = accounts.user("reader", groups=[team])
        make_maildir(spool / "sales", messages=2, owner=0, group=0, mode=0o755)
        make_maildir(spool / "team", messages=3, owner=0, group=team.gid, mode=0o750)
        make_maildir(spool / "pfbox", messages=4, owner=0, group=pf.gid, mode=0o750)
        userdb = base / "userdb"
        userdb.write_text(f"{user.name}::{user.uid}:{pf.gid}::{user.home}::\n")
        userdb.chmod(0o644)
        results = {}
        with PasswdFileDovecot(
            base / "dovecot", [user], postlogin={"imap": line}, userdb=userdb
        ) as dovecot:
            for route in ("served", "in-process"):
                forget(config)
                if route == "served":
                    serve.start()
                try:
                    with dovecot.imap(user) as imap:
                        boxes = sorted(p.removesuffix("/") for p, _ in namespaces(imap)["shared"])
                        results[route] = (
                            {b.removeprefix("Shared/"): select_count(imap, b) for b in boxes},
                            not worker_ran(config),
                        )
                finally:
                    serve.stop()
            errors = [e for e in dovecot.errors() if "nsprov" in e or "SERVERBUG" in e]

    assert ({"pfbox": 4, "sales": 2}, True) == results["served"]
    assert ({"pfbox": 4, "sales": 2}, False) == results["in-process"]
    assert [] == errors
    forget(config)
