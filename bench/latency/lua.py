"""(g) The Lua userdb route, live on Dovecot 2.3 (host) and 2.4 (the chroot), one interleaved run.

Per version three private Dovecots on a 10-entry spool: ``none`` (the harness's userdb passwd,
nothing more), ``post-login`` (``nsprov post-login`` through script-login) and ``lua`` (no
post-login; ``userdb passwd`` with ``result_success = continue-ok``, then the shipped
``nsprov/lua/nsprov-userdb.lua`` as a Lua userdb asking a running ``nsprov serve``, wired as
docs/serve.md documents it).  Every round logs in once to each of the six instances, in a
shuffled order.  The serve cache is warm during the rounds (one warm-up login per user first,
and every user comes back well within the cache TTL); afterwards each ``lua`` server is
restarted a few times, and the first login of each user after a restart (an empty cache: the
server scans) is reported separately as the cold first lookup.

2.4 runs in the Debian 13 chroot (``$NSPROV_CHROOT24``, used as it is, never rebuilt): the
snapshot's ``src/nsprov`` is copied into a scratch directory of the chroot with a venv of the
chroot's Python that borrows attrs and pathspec from the chroot's test venv, like
``target.py`` does on the host; users, spool and configs are created there and removed at the
end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import attrs
from tests.live.chroot24 import (
    VENV,
    ChrootAccounts,
    Dovecot24,
    chroot_run,
    chroot_tempdir,
    make_maildir,
    to_outside,
    write_file,
)
from tests.live.harness import Dovecot, write_script

from .imap import Sample, imap_login
from .instances import EXTRA_CONF, ServeProcess
from .report import ms, p90, say, verdict
from .spools import NS_CONF
from .subjects import nsprov_line, serve_command
from .tables import error_summary

if TYPE_CHECKING:
    import argparse
    import random
    from collections.abc import Sequence

    from tests.live.chroot24 import ChrootUser
    from tests.live.harness import User

    from .target import Target

#: Issue 14: the Lua route adds at most this much (ms, median) over no extra userdb.
LUA_LIMIT_MS = 3.0
#: At least this many interleaved logins per subject, even with ``--quick``.
MIN_ROUNDS = 30
#: Restarts of each Lua route's server for the cold first lookups (one login per user each).
COLD_RESTARTS = 3
SPOOL_SIZE = 10
SUBJECTS = ("none", "post-login", "lua")
#: The Lua route's servers keep every answer through the rounds (the default TTL, 5 s, is
#: shorter than a user's return in a slow round): the rounds measure the warm cache only.
WARM_TTL = ("--cache-ttl=3600",)
HARNESS_USERDB_23 = "userdb {\n  driver = passwd\n}\n"
HARNESS_USERDB_24 = "userdb passwd {\n}\n"
CHROOT = "/usr/sbin/chroot"


def userdb_23(script: Path) -> str:
    """docs/serve.md's Dovecot 2.3 blocks (settings are the script's edited DEFAULTS)."""
    return (
        "userdb {\n  driver = passwd\n  result_success = continue-ok\n}\n"
        f"userdb {{\n  driver = lua\n  args = file={script} blocking=yes cache_key=\n"
        "  result_failure = continue\n  result_internalfail = continue\n}\n"
    )


def userdb_24(script: PurePosixPath, socket: PurePosixPath) -> str:
    """docs/serve.md's Dovecot 2.4 blocks, the script's settings in ``lua_settings``."""
    return (
        "userdb passwd {\n  result_success = continue-ok\n}\n"
        f"userdb lua {{\n  lua_file = {script}\n  use_worker = yes\n"
        "  result_failure = continue\n  result_internalfail = continue\n"
        f"  lua_settings {{\n    socket = {socket}\n    timeout = 1\n    max_reply = 7680\n  }}\n"
        "}\n"
    )


def install_script(source: Path, target: Path, *, socket: str | None = None) -> None:
    """Copy the shipped script (root, 0644); on 2.3 with DEFAULTS' socket set to ``socket``."""
    text = source.read_text(encoding="utf-8")
    if socket is not None:
        head, sep, tail = text.partition('\n  socket = "')
        if not sep:
            raise RuntimeError(f"no DEFAULTS socket entry in {source}")
        text = f'{head}{sep}{socket}"{tail.partition(chr(34))[2]}'
    target.write_text(text, encoding="utf-8")
    os.chown(target, 0, 0)
    target.chmod(0o644)


def _swap(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise RuntimeError(f"expected the harness's {old!r} once in its dovecot.conf")
    return text.replace(old, new)


class LuaDovecot23(Dovecot):
    """The harness's Dovecot 2.3 with the Lua userdb wiring in place of its userdb block."""

    def __init__(self, workdir: Path, users: Sequence[User], *, userdb: str) -> None:
        super().__init__(workdir, users, extra_conf=EXTRA_CONF)
        self.userdb = userdb

    def config_text(self) -> str:
        return _swap(super().config_text(), HARNESS_USERDB_23, self.userdb)


class LuaDovecot24(Dovecot24):
    """The chroot's Dovecot 2.4 with the Lua userdb wiring in place of its userdb block."""

    def __init__(
        self, workdir: PurePosixPath, users: Sequence[ChrootUser], *, userdb: str, root: Path
    ) -> None:
        super().__init__(workdir, users, root=root)
        self.userdb = userdb

    def config(self) -> str:
        return _swap(super().config(), HARNESS_USERDB_24, self.userdb)


@attrs.define
class Instance:
    """One running subject of one version: its port, server and samples."""

    version: str
    subject: str
    dovecot: Dovecot | Dovecot24
    users: Sequence[User] | Sequence[ChrootUser]
    serve: ServeProcess | None = None
    #: How the server is started again (a fresh log directory each time) for the cold lookups.
    serve_argv: tuple[str, ...] = ()
    serve_dir: Path | None = None
    samples: list[Sample] = attrs.Factory(list)
    cold: list[Sample] = attrs.Factory(list)
    counters: list[dict[str, int]] = attrs.Factory(list)
    misses: list[float] = attrs.Factory(list)

    @property
    def name(self) -> str:
        return f"{self.version} {self.subject}"

    def login(self, user: User | ChrootUser) -> Sample:
        return imap_login(self.dovecot.imap_port, user)

    def stop_serve(self) -> None:
        """Stop the server, keeping its counters and cache-miss times."""
        if self.serve is None:
            return
        self.serve.stop()
        if (stats := self.serve.stats()) is not None:
            self.counters.append(stats)
        self.misses += self.serve.miss_times()
        self.serve = None

    def restart_serve(self, number: int) -> None:
        """A new server on the same socket: its cache is empty."""
        self.stop_serve()
        if self.serve_dir is None:
            raise RuntimeError(f"{self.name} has no server")
        directory = self.serve_dir / f"cold{number}"
        directory.mkdir(parents=True, exist_ok=True)
        self.serve = ServeProcess(directory, self.serve_argv)


def start_serve(stack: contextlib.ExitStack, inst: Instance) -> None:
    if inst.serve_dir is None:
        raise RuntimeError(f"{inst.name} has no server")
    inst.serve_dir.mkdir(parents=True, exist_ok=True)
    inst.serve = ServeProcess(inst.serve_dir, inst.serve_argv)
    stack.callback(inst.stop_serve)


def side_23(
    stack: contextlib.ExitStack,
    target: Target,
    users: Sequence[User],
    workdir: Path,
    config: Path,
    serve_extra: Sequence[str],
) -> list[Instance]:
    """The three Dovecot 2.3 instances on the host, on the main run's 10-entry spool."""
    workdir.mkdir(parents=True, exist_ok=True)
    made = [Instance("2.3", "none", Dovecot(workdir / "none", users, extra_conf=EXTRA_CONF), users)]
    postlogin = {"imap": nsprov_line(target, config)}
    dovecot = Dovecot(workdir / "post-login", users, postlogin=postlogin, extra_conf=EXTRA_CONF)
    made.append(Instance("2.3", "post-login", dovecot, users))
    lua_dir = workdir / "lua"
    lua_dir.mkdir()
    socket = lua_dir / "serve" / "serve.sock"  # ServeProcess puts it in its directory
    script = lua_dir / "nsprov-userdb.lua"
    install_script(target.src / "nsprov" / "lua" / "nsprov-userdb.lua", script, socket=str(socket))
    lua = Instance(
        "2.3",
        "lua",
        LuaDovecot23(lua_dir / "dovecot", users, userdb=userdb_23(script)),
        users,
        serve_argv=tuple(
            a.replace("{socket}", str(socket))
            for a in serve_command(target, config, (*WARM_TTL, *serve_extra))
        ),
        serve_dir=lua_dir / "serve",
    )
    start_serve(stack, lua)
    made.append(lua)
    for inst in made:
        stack.enter_context(inst.dovecot)
    return made


def chroot_root() -> Path | None:
    """``$NSPROV_CHROOT24`` when it holds a Dovecot (used as it is: never built here)."""
    value = os.environ.get("NSPROV_CHROOT24")
    if not value or not (Path(value) / "usr/sbin/dovecot").exists():
        return None
    return Path(value)


def chroot_nsprov(root: Path, target: Target, base: PurePosixPath) -> str:
    """The snapshot's ``src/nsprov`` in a venv of the chroot's Python; its console script."""
    home = base / "nsprov"
    shutil.copytree(target.src, to_outside(root, home / "src"))
    venv = home / "venv"
    chroot_run(root, "/usr/bin/python3", "-m", "venv", "--without-pip", str(venv))
    (site,) = to_outside(root, VENV).glob("lib/python3*/site-packages")
    deps = to_outside(root, home / "deps")
    for name in ("attr", "attrs", "pathspec"):
        shutil.copytree(site / name, deps / name)
    (mine,) = to_outside(root, venv).glob("lib/python3*/site-packages")
    (mine / "nsprov_bench.pth").write_text(f"{home / 'src'}\n{home / 'deps'}\n")
    python = str(venv / "bin" / "python3")
    script = venv / "bin" / "nsprov"
    first, body = target.script.read_text().split("\n", 1)
    if "python" in first:  # a console script (before the launcher): the chroot's interpreter
        write_script(to_outside(root, script), body, python)
    else:  # the launcher starts the Python beside it
        shutil.copy2(target.script, to_outside(root, script))
    chroot_run(root, python, "-I", "-m", "compileall", "-q", str(home / "src"))
    where = chroot_run(root, python, "-I", "-c", "import nsprov; print(nsprov.__file__)").stdout
    if not where.startswith(str(home)):
        raise RuntimeError(f"the chroot venv imports nsprov from {where.strip()}, not {home}")
    return str(script)


def side_24(
    stack: contextlib.ExitStack, root: Path, target: Target, serve_extra: Sequence[str]
) -> list[Instance]:
    """The three Dovecot 2.4 instances in the chroot, with users and a spool of their own."""
    base = stack.enter_context(chroot_tempdir(root, prefix="bench-"))
    nsprov = chroot_nsprov(root, target, base)
    accounts = stack.enter_context(ChrootAccounts(root))
    users = [accounts.add_user(f"u{i}", messages=1) for i in range(1, 5)]
    spool = base / "spool"
    to_outside(root, spool).mkdir(mode=0o755)
    for i in range(1, SPOOL_SIZE + 1):
        make_maildir(root, spool / f"box{i:06d}", dir_mode=0o755, file_mode=0o644)
    config = write_file(
        root, base / "ns.toml", '[dovecot]\nversion = "2.4"\n\n' + NS_CONF.format(spool=spool)
    )
    made = [Instance("2.4", "none", Dovecot24(base / "none", users, root=root), users)]
    line = f"{nsprov} post-login --config={config} --protocol=imap"
    dovecot = Dovecot24(base / "post-login", users, postlogin={"imap": line}, root=root)
    made.append(Instance("2.4", "post-login", dovecot, users))
    socket = base / "serve.sock"
    script = base / "nsprov-userdb.lua"
    install_script(target.src / "nsprov" / "lua" / "nsprov-userdb.lua", to_outside(root, script))
    serve = (CHROOT, str(root), nsprov, "serve", f"--config={config}", f"--socket={socket}")
    lua = Instance(
        "2.4",
        "lua",
        LuaDovecot24(base / "lua", users, userdb=userdb_24(script, socket), root=root),
        users,
        serve_argv=(*serve, *WARM_TTL, *serve_extra),
        serve_dir=to_outside(root, base / "serve"),
    )
    start_serve(stack, lua)
    made.append(lua)
    for inst in made:
        stack.enter_context(inst.dovecot)
    return made


def lua_route(
    target: Target,
    users: Sequence[User],
    workdir: Path,
    config: Path,
    args: argparse.Namespace,
    rng: random.Random,
) -> None:
    """(g): set up both versions, warm up, interleave, then the cold lookups; report."""
    rounds = max(args.rounds, MIN_ROUNDS)
    say()
    say(
        f"(g) the Lua userdb route, live, {SPOOL_SIZE}-entry spool: Dovecot 2.3 (host) and 2.4 "
        f"(chroot), {rounds} interleaved rounds over every instance of both versions"
    )
    with contextlib.ExitStack() as stack:
        instances = side_23(stack, target, users, workdir, config, args.serve_arg)
        root = chroot_root()
        if root is None:
            say("  note: Dovecot 2.4 skipped: $NSPROV_CHROOT24 does not name a chroot with Dovecot")
        else:
            try:
                instances += side_24(stack, root, target, args.serve_arg)
            except Exception as e:  # reported; 2.3 is still measured
                say(f"  note: Dovecot 2.4 skipped: {str(e).splitlines()[0][:200]}")
        for inst in instances:  # warm-up: processes, index directories, the servers' caches
            for user in inst.users:
                inst.login(user)
        started = time.monotonic()
        for r in range(rounds):
            order = list(instances)
            rng.shuffle(order)
            for inst in order:
                inst.samples.append(inst.login(inst.users[r % len(inst.users)]))
        say(f"  {rounds} interleaved rounds in {time.monotonic() - started:.0f} s")
        lua = [inst for inst in instances if inst.subject == "lua"]
        for number in range(COLD_RESTARTS):
            for inst in lua:
                inst.restart_serve(number)
                inst.cold += [inst.login(user) for user in inst.users]
        report(instances)
        for inst in lua:
            inst.stop_serve()
        say()
        say("  Dovecot errors per instance (distinct messages, numbers as N):")
        for inst in instances:
            summary = error_summary(inst.dovecot)
            say(f"    {inst.name}: {'; '.join(summary) if summary else 'none'}")
    for inst in lua:
        if not inst.counters:
            say(f"  {inst.name} server: no event=stop line")
            continue
        warm, cold = inst.counters[0], inst.counters[1:]
        total = {k: sum(c.get(k, 0) for c in cold) for k in warm}
        misses = inst.misses
        say(
            f"  {inst.name} server, warm-up and rounds: "
            + ", ".join(f"{k} {v}" for k, v in warm.items())
            + f" ({len(inst.users)} misses expected: the warm-up's); after the {len(cold)} "
            "restarts: " + ", ".join(f"{k} {v}" for k, v in total.items())
        )
        if misses:
            say(f"    a miss (scan) took {ms(statistics.median(misses))} ms median in the server")


def _stats(samples: Sequence[Sample]) -> tuple[float, float] | None:
    logins = [s.login for s in samples if s.ok]
    return (statistics.median(logins), p90(logins)) if logins else None


def report(instances: Sequence[Instance]) -> None:
    say()
    say("  LOGIN round trip (ms; added = median - the same version's none median, +p90 likewise)")
    say(f"  {'instance':<16} {'ok':>7} {'median':>8} {'p90':>8} {'added':>8} {'+p90':>7}  notes")
    by = {(i.version, i.subject): i for i in instances}
    for inst in instances:
        ok = [s for s in inst.samples if s.ok]
        got, base = _stats(inst.samples), _stats(by[inst.version, "none"].samples)
        cells = f"{'-':>8} {'-':>8} {'-':>8} {'-':>7}"
        if got is not None and base is not None:
            cells = (
                f"{ms(got[0]):>8} {ms(got[1]):>8} {ms(got[0] - base[0]):>8} "
                f"{ms(got[1] - base[1]):>7}"
            )
        shared = sorted({s.shared for s in ok})
        notes = ["shared " + "/".join(map(str, shared))] if ok else []
        if inst.subject != "none" and ok and not all(s.shared for s in ok):
            notes.append("LOGINS WITHOUT SHARED NAMESPACES")
        failed = [s for s in inst.samples if not s.ok]
        if failed:
            notes.append(
                f"{len(failed)} failed: {'; '.join(sorted({s.error for s in failed}))[:100]}"
            )
        say(f"  {inst.name:<16} {len(ok):>3}/{len(inst.samples):<3} {cells}  {', '.join(notes)}")
    say()
    for version in sorted({i.version for i in instances}):
        base, post, lua = (_stats(by[version, s].samples) for s in SUBJECTS)
        if base is None or lua is None:
            say(f"  {version}: lua added over none: n/a")
            continue
        med, tail = lua[0] - base[0], lua[1] - base[1]
        line = (
            f"  {version}: lua - none = {ms(med)} ms median, {ms(tail)} ms p90; "
            f"target <= {LUA_LIMIT_MS:g} ms median: {verdict(med * 1000, LUA_LIMIT_MS)}"
        )
        if post is not None and post[0] - base[0] > 0.0005:
            line += f"; lua/post-login added (median) {med / (post[0] - base[0]):.2f}"
            line += f" ({ms(med)}/{ms(post[0] - base[0])})"
        say(line)
        cold = by[version, "lua"].cold
        if (c := _stats(cold)) is not None:
            worst = max(s.login for s in cold if s.ok)
            say(
                f"  {version}: cold first lookup (server restarted, empty cache; "
                f"{sum(s.ok for s in cold)}/{len(cold)} ok): {ms(c[0])} ms median, {ms(worst)} ms "
                f"max; {ms(c[0] - base[0])} ms over none's median, {ms(c[0] - lua[0])} ms over "
                "the warm lua median"
                + ("" if all(s.shared for s in cold if s.ok) else "; SOME WITHOUT NAMESPACES")
            )
