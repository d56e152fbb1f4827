"""``nsprov post-login --serve`` under a real Dovecot 2.3: answers from ``nsprov serve``, falls back.

The fast path takes the namespaces from a running server over its socket, with no worker;
when the server is stopped, or when the configuration has actions besides namespaces, the
same post-login step computes in-process. Either way the user gets the same namespaces.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from nsprov import _fast as nsprov_fast
from nsprov import _profile

from .harness import (
    Dovecot,
    SystemAccounts,
    User,
    live_available,
    make_maildir,
    namespaces,
    select_count,
    write_script,
)
from .test_actions import Protocol, logged_in, refused, session
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


#: These tests witness the in-process route by the full worker's config-cache entry (below),
#: so their logins start with no login profile: the in-process route is the full path.
COLD = False


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
    which goes on in-process (the full worker, then the lean path) when the server does not answer.
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
        with Dovecot(
            base / "dovecot", [user], postlogin={"imap": line}, warm_profiles=COLD
        ) as dovecot:
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
        with Dovecot(
            base / "dovecot", [user], postlogin={"imap": line}, warm_profiles=COLD
        ) as dovecot:
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
        with Dovecot(
            base / "dovecot", [user], postlogin={"imap": line}, warm_profiles=COLD
        ) as dovecot:
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
            base / "dovecot", [user], postlogin={"imap": line}, userdb=userdb, warm_profiles=COLD
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


# --- every action behaves the same with and without --serve (issue 16, finding 3) ------------

#: The post-login step under test, between script-login and the environment dump.
WRAPPER = """\
proto=$1
shift
if [ -e {flag} ]; then
  exec {nsprov} post-login --config={config} --protocol=$proto --serve={socket} --serve-timeout=3 {dump} $proto "$@"
fi
exec {nsprov} post-login --config={config} --protocol=$proto {dump} $proto "$@"
"""
#: The next program: records the environment nsprov exec'd it with, then goes on.
DUMP = """\
import json, os, sys
with open(os.path.join({dumps!r}, os.environ.get("USER", "-") + "-" + sys.argv[1]), "w") as f:
    json.dump(dict(os.environ), f)
os.execv(sys.argv[2], sys.argv[2:])
"""
#: Action -> (extra TOML for the spool, extra TOML tables); every case lists its actions.
ACTION_CASES = {
    "namespaces": ("", ""),
    "namespaces-subscribe": ('list = "children"\nsubscribe = true\n', ""),
    "deny": ("", '[deny]\nusers = ["{user}"]\nmessage = "Locked."\n'),
    "alert": ("", '[[alert]]\ntext = "Maintenance tonight."\n'),
    "last_login": ("", "[last_login]\n"),
    "acl_groups": ("", "[acl_groups]\n"),
    "mail": ("", '[mail]\nlocation = "maildir:{{home}}/Maildir"\n'),
    "fields": ("", '[[field]]\nname = "quota_rule"\nvalue = "*:storage=2G"\nmode = "default"\n'),
}
_SECS = re.compile(rb" \(\d+\.\d+ \+ \d+\.\d+(?: \+ \d+\.\d+)? secs\)")
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


class Observed(NamedTuple):
    """What one login showed: the client's bytes, the environment exec'd, the last-login line."""

    login: bytes
    closed: bool
    answers: tuple[bytes, ...]
    env: dict[str, Any] | None
    last_login: str | None


class ActionWorld:
    """One Dovecot whose post-login step runs with or without --serve, by a flag file."""

    def __init__(self, base: Path, accounts: SystemAccounts) -> None:
        self.base = base
        self.team = accounts.group("team")
        self.user = accounts.user("reader", groups=[self.team])
        self.spool = base / "spool"
        self.spool.mkdir(mode=0o755)
        make_maildir(self.spool / "sales", messages=2, owner=0, group=0, mode=0o755)
        make_maildir(self.spool / "team", messages=3, owner=0, group=self.team.gid, mode=0o750)
        self.config = base / "nsprov.toml"
        self.flag = base / "serve-on"
        self.dumps = base / "dumps"
        self.dumps.mkdir(mode=0o700)
        self.serve = Serve(base, self.config)
        dump = write_script(
            base / "dump.py", DUMP.format(dumps=str(self.dumps)), f"{sys.executable} -I"
        )
        wrapper = write_script(
            base / "wrapper.sh",
            WRAPPER.format(
                flag=self.flag,
                nsprov=NSPROV,
                config=self.config,
                socket=self.serve.socket,
                dump=dump,
            ),
        )
        self.configure("namespaces")
        self.dovecot = Dovecot(
            base / "dovecot",
            [self.user],
            postlogin={"imap": f"{wrapper} imap", "pop3": f"{wrapper} pop3"},
        )

    def configure(self, action: str) -> None:
        """The config for one case, replaced atomically."""
        spool_extra, tables = ACTION_CASES[action]
        actions = ["namespaces"] if action.startswith("namespaces") else [action, "namespaces"]
        text = (
            f'[[spool]]\npath = "{self.spool}"\nprefix = "Shared/{{name}}/"\nseparator = "/"\n'
            + spool_extra
            + tables.format(user=self.user.name)
            + f"[actions]\nimap = {json.dumps(actions)}\npop3 = {json.dumps(actions)}\n"
        )
        _replace(self.config, text)

    def observe(self, protocol: Protocol) -> Observed:
        """One login: the client's bytes, the environment exec'd, the last-login line."""
        dump = self.dumps / f"{self.user.name}-{protocol}"
        dump.unlink(missing_ok=True)
        last = self.user.home / ".nsprov" / "last-login"
        last.unlink(missing_ok=True)
        commands = ["NAMESPACE", 'EXAMINE "Shared/sales"', 'EXAMINE "Shared/team"']
        reply = session(
            protocol, self.port(protocol), self.user, commands if protocol == "imap" else ["STAT"]
        )
        env = json.loads(dump.read_text()) if dump.exists() else None
        if env is not None:
            env.pop("LC_CTYPE", None)  # the dump script's own interpreter sets it
            env.pop("AUTH_TOKEN", None)  # one per session
            # Dovecot sorts the fields it reads back; each key must be listed once, in any order.
            env["USERDB_KEYS"] = sorted(env["USERDB_KEYS"].split())
        line = _STAMP.sub("", last.read_text()) if last.exists() else None
        answers = tuple(_SECS.sub(b"", a) for a in reply.answers)
        return Observed(reply.login, reply.closed, answers, env, line)

    def port(self, protocol: Protocol) -> int:
        """Dovecot's port for *protocol*."""
        return self.dovecot.imap_port if protocol == "imap" else self.dovecot.pop3_port


@pytest.fixture(name="action_world", scope="module")
def _action_world() -> Iterator[ActionWorld]:
    if reason := live_available():
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="nsprov-fast-actions-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        with SystemAccounts(base) as accounts:
            world = ActionWorld(base, accounts)
            world.serve.start()
            try:
                with world.dovecot:
                    yield world
            finally:
                world.serve.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _differences(results: dict[str, dict[str, Observed]]) -> list[object]:
    """What differs between the routes, item by item (the environment key by key)."""
    out: list[object] = []
    for protocol, served in results["served"].items():
        other = results["in-process"][protocol]
        for i, (a, b) in enumerate(zip(served, other, strict=True)):
            if a == b:
                continue
            if isinstance(a, dict) and isinstance(b, dict):
                keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
                out.append((protocol, "env", [(k, a.get(k), b.get(k)) for k in keys]))
            else:
                out.append((protocol, i, a, b))
    return out


@pytest.mark.parametrize("action", list(ACTION_CASES))
def test_every_action_same_with_serve(action_world: ActionWorld, action: str) -> None:
    """Each action gives the client the same bytes and the next program the same environment, served or not.

    With ``--serve`` the server answers the namespaces-only configurations (the worker does
    not run) and declines every other, which the worker then runs; the configuration is
    changed under the running server before each case.
    """
    w = action_world
    mark = len(w.dovecot.log())
    w.configure(action)
    results = {}
    ran = {}
    for route in ("served", "in-process"):
        if route == "served":
            w.flag.touch()
        else:
            w.flag.unlink()
        forget(w.config)
        results[route] = {p: w.observe(p) for p in ("imap", "pop3")}
        # In-process, a login is the full worker's (it caches the config) or, on the profile
        # the served route's worker wrote, the lean path's (it caches nothing).
        lean = route == "in-process" and _profile.load(str(w.config)) is not None
        ran[route] = worker_ran(w.config) or lean
    # Dovecot's log process writes the last denial a moment after the client sees BYE.
    expected = 4 if action == "deny" else 0
    deadline = time.monotonic() + 5
    while True:
        log = w.dovecot.log()[mark:].splitlines()
        denials = [e for e in log if "Post-login script denied access" in e]
        if len(denials) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    errors = [e for e in log if "Error:" in e and "nsprov" in e and e not in denials]

    assert results["in-process"] == results["served"], _differences(results)
    assert ran == {"served": not action.startswith("namespaces"), "in-process": True}
    imap_login, closed, answers, dumped, line = results["served"]["imap"]
    env = dumped or {}
    if action == "deny":
        assert (b"* BYE [ALERT] Locked.\r\n", True, None) == (imap_login, closed, dumped)
        assert 4 == len(denials)  # Dovecot's own line, both protocols, both routes
    else:
        assert b"* 2 EXISTS" in answers[1]
        assert "NAMESPACE" in env
    if action == "alert":
        assert imap_login.startswith(b"* OK [ALERT] Maintenance tonight.\r\n")
    if action == "last_login":
        assert "imap 127.0.0.1\n" == line
    if action == "acl_groups":
        assert w.team.name in env["ACL_GROUPS"]
    if action == "mail":
        assert f"maildir:{w.user.home}/Maildir" == env["MAIL"]
    if action == "fields":
        assert "*:storage=2G" == env["QUOTA_RULE"]
    if action == "namespaces-subscribe":
        assert any(k.startswith("NAMESPACE/INBOX/MAILBOX/") for k in env)
    assert [] == errors
    forget(w.config)
