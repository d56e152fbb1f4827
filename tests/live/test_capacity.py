"""How many namespaces one login can carry, on Dovecot 2.3 and 2.4.

A user may read ``N`` world-readable spool maildirs (``m0000`` ...), one message each, and
an empty INBOX.  The Dovecot wiring and the 2.4 config are the shipped examples with the
substitutions described in ``test_scenarios.py``, plus one step appended to each
``script-login`` line: after nsprov, a dump program records the environment nsprov exec'ed
it with (the exact ``USERDB_KEYS`` Dovecot gets back), then execs the rest of the chain.

What limits the count is the kernel: one environment string, ``USERDB_KEYS`` included, must
stay under 128 KiB (``MAX_ARG_STRLEN``), and 2.4 needs seven keys per namespace where 2.3
needs four.  Measured with nsprov 0.1.0: 2.3 serves all 1000 (``namespace.max``), 2.4 the
first 517.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING, ClassVar

import attrs
import pytest

from .chroot24 import chroot24_status
from .harness import make_maildir, namespaces, select_count
from .test_scenarios import (
    MAX_ARG_STRLEN,
    VERSIONS,
    Site,
    Site24,
    config_text,
    open_site,
    unavailable,
    version_id,
    wiring,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.live

N = 1000
#: Whether all N namespaces fit, per version (2.4 spends more key bytes per namespace).
ALL_FIT = {"2.3": True, "2.4": False}

DUMP = """\
import json, os, sys
with open(os.path.join(@OUT@, "env.%d.json" % os.getpid()), "w") as out:
    json.dump(dict(os.environ), out)
os.execv(sys.argv[1], sys.argv[1:])
"""


def mailbox(i: int) -> str:
    """The spool entry name of mailbox number *i*; byte order is numeric order."""
    return f"m{i:04d}"


@attrs.frozen(kw_only=True)
class Login:
    """One IMAP login of the reader, and what it left behind."""

    version: str
    #: Prefixes in the NAMESPACE reply's shared part, in server order.
    shared: list[str]
    #: EXAMINE counts of INBOX, the first and the last served mailbox.
    inbox: int
    first: int
    last: int
    #: The environment nsprov exec'ed the next program with.
    environ: dict[str, str]
    #: nsprov's lines in the Dovecot log.
    log: list[str]

    @property
    def served(self) -> int:
        """How many namespaces the login got."""
        return len(self.shared)

    def summary(self) -> str:
        """The measured capacity, one line."""
        keys = env_string("USERDB_KEYS", self.environ["USERDB_KEYS"])
        return (
            f"Dovecot {self.version}: {self.served} of {N} namespaces served; "
            f"USERDB_KEYS {keys} of {MAX_ARG_STRLEN} bytes"
        )


def env_string(key: str, value: str) -> int:
    """The bytes ``KEY=value`` takes in the exec'ed environment, NUL included."""
    return len(f"{key}={value}".encode("utf-8", "surrogateescape")) + 1


def log_in(site: Site, extra_config: str = "") -> Login:
    """Create the reader, the spool and the config, start Dovecot, log in once, collect."""
    reader = site.user("reader")
    spool = site.base / "spool"
    for i in range(N):
        make_maildir(site.out(spool / mailbox(i)), messages=1, owner=0, group=0, mode=0o755)
    config = site.base / "nsprov.toml"
    text = config_text(site.version, spool)
    if extra_config:
        text = text.replace("[dovecot]\n", "[dovecot]\n" + extra_config, 1)
    site.out(config).write_text(text, encoding="utf-8")
    dumps = site.base / "dumps"
    site.out(dumps).mkdir(mode=0o700)
    dump = site.base / "dump.py"
    site.out(dump).write_text(
        f"#!{site.python} -I\n" + DUMP.replace("@OUT@", repr(str(dumps))), encoding="utf-8"
    )
    site.out(dump).chmod(0o755)
    site.start([reader], wiring(site.version, site.nsprov, str(config), then=str(dump)))
    logouts = site.logouts(reader)
    with site.imap(reader) as imap:
        shared = [prefix for prefix, _ in namespaces(imap)["shared"]]
        inbox = select_count(imap, "INBOX")
        first = select_count(imap, shared[0].rstrip("/"))
        last = select_count(imap, shared[-1].rstrip("/"))
    site.wait_logouts(reader, logouts + 1)
    (dumped,) = site.out(dumps).iterdir()
    return Login(
        version=site.version,
        shared=shared,
        inbox=inbox,
        first=first,
        last=last,
        environ=json.loads(dumped.read_text(encoding="utf-8")),
        log=site.nsprov_lines(),
    )


@pytest.fixture(name="login", scope="module", params=VERSIONS, ids=version_id)
def _login(request: pytest.FixtureRequest) -> Iterator[Login]:
    """One login per Dovecot version of a user who may read N spool maildirs."""
    with open_site(request.param) as site:
        login = log_in(site)
        print(login.summary())
        yield login


class TestCapacity:
    """As many namespaces as fit, a deterministic subset, and one warning when not all do."""

    def test_served_in_byte_order(self, login: Login) -> None:
        """The login works and serves the first K mailboxes in byte order, each its own."""
        k = login.served

        assert [f"Shared/{mailbox(i)}/" for i in range(k)] == login.shared, login.summary()
        assert (0, 1, 1) == (login.inbox, login.first, login.last)
        assert ALL_FIT[login.version] == (N == k), login.summary()

    def test_one_warning_naming_the_counts(self, login: Login) -> None:
        """nsprov logs exactly one line when it cannot serve all N, naming N and K, else none."""
        k = login.served
        pattern = rf"\bnsprov: .*\b{N} namespaces found, {k} fit\b"

        if k == N:
            assert [] == login.log
        else:
            assert 1 == len(login.log), login.log
            assert re.search(pattern, login.log[0]), login.log[0]

    def test_userdb_keys_under_limit(self, login: Login) -> None:
        """Every exported string, USERDB_KEYS included, stays under 128 KiB; K is the most that fit."""
        env = login.environ
        sizes = {key: env_string(key, value) for key, value in env.items()}
        keys = env["USERDB_KEYS"].split()
        list_key = "NAMESPACE+" if login.version == "2.4" else "NAMESPACE"
        (last,) = (
            name
            for name in env[list_key].split()
            if env[f"NAMESPACE/{name.upper()}/PREFIX"] == login.shared[-1]
        )
        last_keys = [k for k in keys if k.startswith(f"NAMESPACE/{last.upper()}/")]

        assert [] == [key for key, size in sizes.items() if size > MAX_ARG_STRLEN], sizes
        assert login.served == len({k.split("/")[1] for k in keys if k.startswith("NAMESPACE/")})
        if login.served < N:
            one_more = sum(len(k) + 1 for k in last_keys)
            assert sizes["USERDB_KEYS"] + one_more > MAX_ARG_STRLEN, login.summary()


class InheritingSite24(Site24):
    """The 2.4 site with dovecot.conf's global ``mail_driver = maildir`` left to namespaces."""

    extra_conf: ClassVar[str] = ""


def test_inherited_driver_fits_600() -> None:
    """On 2.4, with ``global_mail_driver = "maildir"`` (six keys per namespace), at least 600 fit."""
    if reason := unavailable("2.4"):
        pytest.skip(reason)
    root, _ = chroot24_status()
    assert root is not None
    with contextlib.ExitStack() as stack:
        login = log_in(InheritingSite24(stack, root), 'global_mail_driver = "maildir"\n')
        print(login.summary())

    keys = login.environ["USERDB_KEYS"].split()
    assert 600 <= login.served < N, login.summary()
    assert [f"Shared/{mailbox(i)}/" for i in range(login.served)] == login.shared
    assert (0, 1, 1) == (login.inbox, login.first, login.last)
    assert not any(k.endswith("/MAIL_DRIVER") for k in keys)
