"""Shared constants, builders and fakes of the check tests."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nsprov._check.doveconf import DovecotConf
from nsprov._check.gather import World
from nsprov._check.wiring import check_wiring
from nsprov._config import config_from_mapping
from nsprov._identity import MailUser
from nsprov._names import HASH_LENGTH, SLUG_LENGTH
from nsprov._perms import Identity, PosixAcl
from nsprov._reply import ReplyBudget
from nsprov._scan import Fs

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from nsprov._check.findings import Finding
    from nsprov._config import Config


ROOT = Path(__file__).parent.parent.parent
DOCS = ROOT / "docs" / "check.md"
EXAMPLE_23 = ROOT / "examples" / "dovecot-2.3" / "10-master.conf"
NSPROV = "/usr/local/bin/nsprov"
CONFIG = "/etc/nsprov/nsprov.toml"

ALICE = MailUser(user="alice", home="/home/alice", identity=Identity(uid=70001, gid=70001))
BOB = MailUser(user="bob", home="/home/bob", identity=Identity(uid=70002, gid=70002))
TEAM_GID = 70100
MEMBER = MailUser(
    user="member", home="/home/member", identity=Identity(uid=70003, gid=70003, groups={TEAM_GID})
)

#: Per-user directory names: one of the current scheme for no entry, one of another scheme.
STALE = "s-" + "gone"[:SLUG_LENGTH] + "-" + "abcdefgh234567"[:HASH_LENGTH]
LEFT = "s-" + "left"[:SLUG_LENGTH] + "-" + "abcdefgh234567"[:HASH_LENGTH]
OTHER = "s-old-" + "a" * (HASH_LENGTH + 2)
HEADER_23 = "# 2.3.19.1 (9b53102964): /etc/dovecot/dovecot.conf\n# OS: Linux x86_64\n"


def codes(findings: Sequence[Finding]) -> set[tuple[str, str]]:
    return {(f.code, f.severity) for f in findings}


def maildir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir()
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir()
        (path / sub).chmod(mode)
    path.chmod(mode)
    return path


def make_config(spool: Path, data: dict[str, Any] | None = None, **spool_keys: Any) -> Config:
    return config_from_mapping({**(data or {}), "spool": [{"path": str(spool), **spool_keys}]})


def wired(
    extra: str = "", *, example: str | None = None, protocols: str = "imap pop3"
) -> DovecotConf:
    """The shipped 2.3 wiring (nsprov at NSPROV, config at CONFIG) as doveconf would print it."""
    text = EXAMPLE_23.read_text() if example is None else example
    return DovecotConf.parse(f"{HEADER_23}protocols = {protocols}\n{text}\n{extra}\n")


def fake_acls(acls: dict[bytes, PosixAcl]) -> Fs:
    """The real file system, with POSIX ACLs from *acls* instead of the files' own."""

    def getxattr(path: bytes, _name: str, **_kw: object) -> bytes:
        if path in acls:
            return acls[path].to_xattr()
        raise OSError(errno.ENODATA, "no ACL")

    # Faked ACLs are path-based: the scanner's descriptor re-check would read the real ones.
    return Fs(getxattr=getxattr, anchored=None)


INBOX_EMPTY = "namespace inbox {\n  inbox = yes\n  prefix = \n  separator = /\n}\n"


def wiring(
    config: Config, conf: DovecotConf, executable: Callable[[str], bool] | None = None
) -> list[Finding]:
    return check_wiring(
        config, conf, config_path=CONFIG, executable=executable or (lambda p: p == NSPROV)
    )


def line(protocol: str, program: str, *, user: str = "") -> str:
    """A post-login service for *protocol* with ``executable = script-login <program>``."""
    return (
        f"service {protocol} {{\n  executable = {protocol} {protocol}-postlogin\n}}\n"
        f"service {protocol}-postlogin {{\n  executable = script-login {program}\n"
        + (f"  user = {user}\n" if user else "")
        + "}\n"
    )


IMAP_OK = f"{NSPROV} post-login --config={CONFIG} --protocol=imap"


def budget_of(fits: int) -> Callable[[Config, MailUser], ReplyBudget]:
    def budget(_config: Config, _user: MailUser) -> ReplyBudget:
        return ReplyBudget(fits=fits, total=5, size=100, full_size=9000, budget=7000)

    return budget


DOVECONF_OK = (
    HEADER_23
    + "first_valid_uid = 65534\nlast_valid_uid = 65534\nmaildir_stat_dirs = yes\n"
    + "namespace inbox {\n  inbox = yes\n  prefix = \n  separator = /\n}\nprotocols = imap\n"
)


def world(spool: Path, **kw: Any) -> World:
    config = kw.pop("config", None) or make_config(spool)
    return World(config_path=CONFIG, config=config, **kw)


class Ticks:
    """A fake clock: each call returns the next value of *ticks*."""

    def __init__(self, *ticks: float) -> None:
        self.ticks = list(ticks)

    def __call__(self) -> float:
        return self.ticks.pop(0)


def script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}")
    path.chmod(0o755)
    return str(path)
