"""The compiled login profile under a real Dovecot 2.3: which path served each login.

The first login after a config change takes the full path, which writes the profile; the
next logins are served by the lean path, which reads it and leaves both it and the
config cache alone; a corrupt or foreign-owned profile is never trusted: the full path
serves that login and writes a fresh one.  Every login gets the same namespaces.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nsprov import _profile
from nsprov._config import DEFAULT_CACHE_DIR, _cache_file

from .harness import Dovecot, make_maildir, namespaces, select_count
from .test_serve_live import NSPROV

if TYPE_CHECKING:
    from .harness import SystemAccounts

pytestmark = pytest.mark.live

NOBODY = 65534


def profile_path(config: Path) -> Path:
    return Path(DEFAULT_CACHE_DIR) / _profile.file_name(str(config))


def config_cache(config: Path) -> Path:
    """The full worker's witness: it parses the config and caches the parse here."""
    return Path(_cache_file(DEFAULT_CACHE_DIR, str(config)))


def identity(path: Path) -> tuple[int, int, int]:
    s = path.stat()
    return s.st_ino, s.st_mtime_ns, s.st_uid


def test_which_path_served(live_base: Path, accounts: SystemAccounts) -> None:
    """cold -> full (writes the profile); warm -> lean; corrupt, foreign-owned -> full again."""
    spool = live_base / "spool"
    spool.mkdir(mode=0o755)
    make_maildir(spool / "sales", messages=2, owner=0, group=0, mode=0o755)
    make_maildir(spool / "secret", messages=1, owner=0, group=0, mode=0o700)
    config = live_base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n')
    profile = profile_path(config)
    profile.unlink(missing_ok=True)
    config_cache(config).unlink(missing_ok=True)
    user = accounts.user("reader")
    line = f"{NSPROV} post-login --config={config} --protocol=imap"
    seen: list[tuple[list[str], int]] = []

    def login() -> tuple[list[str], int]:
        with dovecot.imap(user) as imap:
            got = ([p for p, _ in namespaces(imap)["shared"]], select_count(imap, "Shared/sales"))
        seen.append(got)
        return got

    try:
        with Dovecot(
            live_base / "dovecot", [user], postlogin={"imap": line}, warm_profiles=False
        ) as dovecot:
            login()  # cold: the full path
            cold_full = config_cache(config).exists()
            cold_stored = _profile.load(str(config)) is not None
            before = identity(profile)
            config_cache(config).unlink()

            login()  # warm: the lean path touches neither file
            warm_lean = not config_cache(config).exists() and before == identity(profile)

            profile.write_bytes(b"not a profile")  # corrupt: the full path, a fresh profile
            login()
            corrupt_full = config_cache(config).exists() and _profile.load(str(config)) is not None
            config_cache(config).unlink()

            os.chown(profile, NOBODY, NOBODY)  # foreign-owned: never read, replaced
            login()
            foreign_full = config_cache(config).exists() and 0 == profile.stat().st_uid
            errors = [e for e in dovecot.errors() if "nsprov" in e]
            paths = [path for _, path in dovecot.login_paths()]
    finally:
        profile.unlink(missing_ok=True)
        config_cache(config).unlink(missing_ok=True)

    assert [(["Shared/sales/"], 2)] * 4 == seen
    assert (True, True) == (cold_full, cold_stored)
    assert warm_lean
    assert corrupt_full
    assert foreign_full
    assert ["full", "lean", "full", "full"] == paths  # the info line names the path too
    assert [] == errors


def test_protocol_with_nothing_configured(live_base: Path, accounts: SystemAccounts) -> None:
    """A warm profile whose protocol (pop3 here) runs no action: the login goes on untouched."""
    spool = live_base / "spool"
    spool.mkdir(mode=0o755)
    make_maildir(spool / "sales", messages=1, owner=0, group=0, mode=0o755)
    config = live_base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\n[actions]\nimap = ["namespaces"]\npop3 = []\n')
    profile = profile_path(config)
    user = accounts.user("reader")
    lines = {p: f"{NSPROV} post-login --config={config} --protocol={p}" for p in ("imap", "pop3")}
    try:
        with Dovecot(
            live_base / "dovecot", [user], postlogin=lines, warm_profiles=False
        ) as dovecot:
            with dovecot.imap(user) as imap:  # cold: writes the profile
                shared = [p for p, _ in namespaces(imap)["shared"]]
            warm = _profile.load(str(config)) is not None
            config_cache(config).unlink()
            pop = dovecot.pop3(user)
            try:
                status = pop.stat()
            finally:
                pop.quit()
            full_ran = config_cache(config).exists()
            errors = [e for e in dovecot.errors() if "nsprov" in e]
    finally:
        profile.unlink(missing_ok=True)
        config_cache(config).unlink(missing_ok=True)

    assert ["Shared/sales/"] == shared
    assert warm
    assert 2 == len(status)
    assert not full_ran
    assert [] == errors


def test_warm_before_the_first_login(live_base: Path, accounts: SystemAccounts) -> None:
    """``nsprov cache profile`` ahead of the first login: that login is lean already."""
    spool = live_base / "spool"
    spool.mkdir(mode=0o755)
    make_maildir(spool / "sales", messages=1, owner=0, group=0, mode=0o755)
    config = live_base / "nsprov.toml"
    config.write_text(f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n')
    user = accounts.user("reader")
    line = f"{NSPROV} post-login --config={config} --protocol=imap"
    try:
        with Dovecot(live_base / "dovecot", [user], postlogin={"imap": line}) as dovecot:
            with dovecot.imap(user) as imap:
                shared = [p for p, _ in namespaces(imap)["shared"]]
            paths = dovecot.login_paths()
            full_ran = config_cache(config).exists()
    finally:
        profile_path(config).unlink(missing_ok=True)
        config_cache(config).unlink(missing_ok=True)

    assert ["Shared/sales/"] == shared
    assert [(user.name, "lean")] == paths
    assert not full_ran
