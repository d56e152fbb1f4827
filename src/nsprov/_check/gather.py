"""The one part of ``nsprov check`` that touches the operating system: :class:`World` and :func:`gather`."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

import attrs

from .._deadline import DEFAULT_DEADLINE
from .._scan import DEFAULT_FS, Fs
from ..exceptions import ConfigError, NsprovError, UntrustedFileError
from .doveconf import DovecotConf, major_minor
from .findings import Finding, _f
from .marks import SpoolMark, cache_marks, load_marks, store_marks
from .routes import RouteState, route_settings, zero_fork_userdbs
from .stale import clean_stale_as
from .trust import check_trusted_files
from .users import select_users

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .._config import Config
    from .._identity import MailUser
    from .._reply import ReplyBudget


@attrs.frozen(kw_only=True)
class World:
    """Everything the checks look at, gathered by :func:`gather` (or built by a test)."""

    config_path: str
    config: Config | None = None
    config_problems: tuple[str, ...] = ()
    #: ``untrusted-file`` findings (:func:`check_trusted_files`).
    trust_findings: tuple[Finding, ...] = ()
    #: ``[dovecot] acl_plugin`` as written (the parsed config applies it and forgets it).
    acl_plugin: bool = False
    doveconf: DovecotConf | None = None
    #: Why there is no doveconf output (``doveconf-unavailable`` or ``doveconf-failed``).
    doveconf_finding: Finding | None = None
    dovecot_version: str | None = None
    version_source: str | None = None
    users: tuple[MailUser, ...] = ()
    user_findings: tuple[Finding, ...] = ()
    #: True when the users were enumerated rather than named with --user.
    enumerated: bool = False
    #: Every passwd login name by uid, for the virtual-users check.
    uid_names: Mapping[int, tuple[str, ...]] = attrs.Factory(dict)
    fs: Fs = DEFAULT_FS
    executable: Callable[[str], bool] = lambda p: os.access(p, os.X_OK)
    budget: Callable[[Config, MailUser], ReplyBudget] | None = None
    #: With --clean-stale: removes directories as a user (:func:`clean_stale_as`).
    clean: Callable[[MailUser, Sequence[str]], list[tuple[str, str | None]]] | None = None
    #: --max-remove-fraction and --force (see :func:`find_stale`).
    max_remove_fraction: float = 0.5
    force: bool = False
    #: What earlier checks (or the scan cache) saw of each spool, by path.
    spool_marks: Mapping[str, SpoolMark] = attrs.Factory(dict)
    #: Stores what this check saw of the spools it trusts (None: nowhere).
    record_marks: Callable[[Mapping[str, SpoolMark]], None] | None = None
    uid_name: Callable[[int], str] = str
    gid_name: Callable[[int], str] = str
    #: Seconds each user's scan may take (--deadline).
    deadline: float = DEFAULT_DEADLINE
    #: The zero-fork routes ``doveconf -n`` wires, and what was found of each.
    routes: tuple[RouteState, ...] = ()
    #: Asks a post-login ``--serve`` socket for one lookup: why it failed, None if it answered.
    serve_probe: Callable[[str], str | None] | None = None


def _find_program(name: str, given: str | None) -> str | None:
    import shutil  # noqa: PLC0415

    if given:
        return given
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    return shutil.which(name, path=search)


def _run_doveconf(args: Any) -> tuple[DovecotConf | None, Finding | None]:
    import subprocess  # noqa: PLC0415

    program = _find_program("doveconf", args.doveconf)
    if program is None or not os.access(program, os.X_OK):
        where = f" at {program}" if program else ""
        return None, _f(
            "info",
            "doveconf-unavailable",
            program,
            f"doveconf was not found{where}: the Dovecot checks (separator, namespaces, "
            "wiring, ACL plugin) were skipped",
            "Run the check where Dovecot is installed, or pass --doveconf=PATH.",
        )
    argv = [program, "-n"]
    if args.dovecot_config:
        argv += ["-c", args.dovecot_config]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, _doveconf_failed(argv, str(e))
    if proc.returncode != 0:
        return None, _doveconf_failed(argv, proc.stderr.strip() or f"exit status {proc.returncode}")
    return DovecotConf.parse(proc.stdout), None


def _doveconf_failed(argv: Sequence[str], why: str) -> Finding:
    return _f(
        "error",
        "doveconf-failed",
        " ".join(argv),
        f"{' '.join(argv)} failed: {why}; Dovecot itself will not start with this configuration",
        "Fix Dovecot's configuration (the message names the file and line), then run the "
        "check again.",
    )


def _dovecot_version(args: Any, conf: DovecotConf | None) -> tuple[str | None, str | None]:
    import subprocess  # noqa: PLC0415

    from .._worker import installed_version  # noqa: PLC0415

    if args.dovecot_version:
        return args.dovecot_version, "--dovecot-version"
    header = major_minor(conf.version) if conf is not None and conf.version else None
    if header and args.doveconf:
        return header, "doveconf"
    program = _find_program("dovecot", args.dovecot)
    if program is not None:
        try:
            proc = subprocess.run(
                [program, "--version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            proc = None
        if proc is not None and proc.returncode == 0 and (v := major_minor(proc.stdout)):
            return v, f"{program} --version"
    if header:
        return header, "doveconf"
    if detected := installed_version(["/usr/lib/dovecot/script-login"]):
        return detected, "/usr/lib/dovecot"
    return None, None


def _load(path: str) -> tuple[Config | None, tuple[str, ...], bool]:
    from .._config import _load_raw, load_config  # noqa: PLC0415

    try:
        config = load_config(path)
    except ConfigError as e:
        return None, e.problems, False
    except UntrustedFileError:
        return None, (), False  # an untrusted-file finding (check_trusted_files)
    try:
        raw = _load_raw(path, None)
    except NsprovError:  # pragma: no cover - it was just read
        raw = {}
    dovecot = raw.get("dovecot", {})
    return config, (), isinstance(dovecot, dict) and dovecot.get("acl_plugin") is True


def _resolve_users(
    args: Any, config: Config, conf: DovecotConf | None
) -> tuple[list[MailUser], list[Finding], dict[int, tuple[str, ...]]]:
    import pwd  # noqa: PLC0415

    from .._identity import mail_user_from_nss  # noqa: PLC0415
    from ..exceptions import IdentityError  # noqa: PLC0415

    entries = [(p.pw_name, p.pw_uid) for p in pwd.getpwall()]
    uid_names: dict[int, list[str]] = {}
    for name, uid in entries:
        uid_names.setdefault(uid, []).append(name)
    findings: list[Finding] = []
    if args.user:
        names = list(dict.fromkeys(args.user))
    else:
        first = conf.first_valid_uid if conf is not None else 500
        last = conf.last_valid_uid if conf is not None else 0
        names, total = select_users(
            entries, first_valid_uid=first, last_valid_uid=last, cap=args.max_users
        )
        if not total:
            findings.append(
                _f(
                    "info",
                    "no-users",
                    None,
                    f"no passwd user has a uid Dovecot accepts ({first}"
                    + (f"..{last}" if last else " or more")
                    + "): no user was checked",
                    "Name users with --user USER.",
                )
            )
        elif total > len(names):
            findings.append(
                _f(
                    "info",
                    "users-capped",
                    None,
                    f"{total} users have a uid Dovecot accepts; the first {len(names)} by uid "
                    "were checked",
                    "Raise --max-users, or name users with --user USER.",
                )
            )
    users = []
    for name in names:
        try:
            users.append(mail_user_from_nss(name, config.identity))
        except IdentityError as e:
            if args.user:
                findings.append(
                    _f(
                        "error",
                        "user-unknown",
                        f"user {name}",
                        str(e),
                        "Check the spelling, or that NSS (getent passwd USER) knows the user.",
                    )
                )
    return users, findings, {uid: tuple(n) for uid, n in uid_names.items()}


#: Where Dovecot's Lua library may be (it names the liblua it links).
_DOVECOT_LUA_LIBS = (
    "/usr/lib/dovecot/libdovecot-lua.so.0",
    "/usr/lib64/dovecot/libdovecot-lua.so.0",
    "/usr/lib/dovecot/modules/auth/libauthdb_lua.so",
    "/usr/lib64/dovecot/auth/libauthdb_lua.so",
)
_MAX_SCRIPT = 1 << 20


def dovecot_lua_version(libs: Sequence[str] = _DOVECOT_LUA_LIBS) -> str | None:
    """The Lua version Dovecot links (``"5.4"``), read from the liblua name in its library."""
    import re  # noqa: PLC0415

    for lib in libs:
        try:
            with open(lib, "rb") as f:
                data = f.read(16 << 20)
        except OSError:
            continue
        if m := re.search(rb"liblua-?(5\.\d)", data):
            return m.group(1).decode()
    return None


def _read_text(path: str | None, what: str) -> tuple[str | None, str | None, str | None]:
    """The text of *path* under the trust rule (at most 1 MiB): text, why not, why untrusted.

    The Lua script runs as root in Dovecot's auth workers: one that others may write is
    an ``untrusted-file``, not merely a script to compare.
    """
    from .._trust import read_trusted  # noqa: PLC0415

    if not path:
        return None, "no file given", None
    try:
        data = read_trusted(path, what=what, limit=_MAX_SCRIPT)
    except UntrustedFileError as e:
        return None, None, str(e)
    except OSError as e:
        return None, e.strerror or str(e), None
    return data.decode("utf-8", "replace"), None, None


def _luac(path: str, version: str | None) -> tuple[str | None, int, str]:
    """``luacX.Y -p PATH``: the program (None: none installed), its status and message."""
    import subprocess  # noqa: PLC0415

    names = [f"luac{version}"] if version else ["luac5.4", "luac5.3"]
    program = next((p for n in names if (p := _find_program(n, None))), None)
    if program is None:
        return None, 0, ""
    try:
        proc = subprocess.run(
            [program, "-p", path], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return program, 1, str(e)
    return program, proc.returncode, proc.stderr


def probe_serve(socket: str) -> str | None:
    """One probe lookup on *socket*: None when ``nsprov serve`` answers, else why not."""
    from .._serve.probe import ProbeError, probe_lookup  # noqa: PLC0415 - only when wired

    try:
        probe_lookup(socket)
    except (ProbeError, OSError) as e:
        return str(e) or type(e).__name__
    return None


def gather_routes(conf: DovecotConf | None, *, probe: bool = True) -> tuple[RouteState, ...]:
    """Each zero-fork route of *conf*: its file, socket and timeout, a probe, ``luac -p``."""
    from .._serve.probe import ProbeError, probe_lookup, server_status  # noqa: PLC0415

    if conf is None:
        return ()
    out: list[RouteState] = []
    version = None
    for route in zero_fork_userdbs(conf):
        what = "Lua userdb script" if route.kind == "lua" else "dict userdb args file"
        text, error, untrusted = _read_text(route.path, what)
        socket, timeout = route_settings(route, text)
        state = RouteState(
            route=route,
            text=text,
            file_error=error,
            untrusted=untrusted,
            socket=socket,
            timeout=timeout,
        )
        if probe and socket is not None:
            deadline = None
            why: str | None = None
            try:
                probe_lookup(socket)
            except ProbeError as e:
                why = str(e)
            else:
                # A server that answers lookups but not INFO (another version): deadline unknown.
                with contextlib.suppress(ProbeError):
                    deadline = server_status(socket).get("deadline")
            state = attrs.evolve(
                state,
                probed=True,
                probe_error=why,
                server_deadline=deadline if isinstance(deadline, (int, float)) else None,
            )
        if route.kind == "lua" and text is not None and route.path:
            version = version or dovecot_lua_version()
            luac, status, message = _luac(route.path, version)
            state = attrs.evolve(
                state, luac=luac, luac_status=status, luac_message=message, lua_version=version
            )
        out.append(state)
    return tuple(out)


def _uid_name(uid: int) -> str:
    import pwd  # noqa: PLC0415

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _gid_name(gid: int) -> str:
    import grp  # noqa: PLC0415

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def gather(args: Any) -> World:
    """Look at the system: config, doveconf, Dovecot's version, NSS."""
    from .._reply import reply_budget  # noqa: PLC0415

    config, problems, acl_plugin = _load(args.config)
    trust = check_trusted_files(args.config, config, deadline=args.deadline)
    conf, conf_finding = _run_doveconf(args)
    version, source = _dovecot_version(args, conf)
    routes = gather_routes(conf)
    users: list[MailUser] = []
    user_findings: list[Finding] = []
    uid_names: dict[int, tuple[str, ...]] = {}
    if config is not None:
        users, user_findings, uid_names = _resolve_users(args, config, conf)

    def budget(cfg: Config, user: MailUser) -> ReplyBudget:
        return reply_budget(cfg, user, budget=cfg.serve.reply_budget)

    state: str | None = args.state  # None: marks.DEFAULT_STATE_FILE

    return World(
        config_path=args.config,
        config=config,
        config_problems=problems,
        trust_findings=tuple(trust),
        acl_plugin=acl_plugin,
        doveconf=conf,
        doveconf_finding=conf_finding,
        dovecot_version=version,
        version_source=source,
        users=tuple(users),
        user_findings=tuple(user_findings),
        enumerated=not args.user,
        uid_names=uid_names,
        budget=budget,
        deadline=args.deadline,
        clean=clean_stale_as if args.clean_stale else None,
        max_remove_fraction=args.max_remove_fraction,
        force=args.force,
        spool_marks={**(cache_marks(config) if config is not None else {}), **load_marks(state)},
        record_marks=lambda seen: store_marks(state, seen),
        uid_name=_uid_name,
        gid_name=_gid_name,
        routes=routes,
        serve_probe=probe_serve,
    )
