"""Checks of the zero-fork routes: a Lua or dict userdb asking ``nsprov serve`` (docs/serve.md).

:func:`zero_fork_userdbs` finds them in ``doveconf -n``; :func:`route_settings`
reads what each one is configured with (the socket, the client's timeout, the
Lua script); :func:`check_routes` judges them with what
:func:`nsprov._check.gather.gather_routes` found on the system (:class:`RouteState`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

import attrs

from .findings import Finding, _f
from .wiring import _post_login_service, _socket_of

if TYPE_CHECKING:
    from .._config import Config
    from .doveconf import ConfSection, DovecotConf

RouteKind = Literal["lua", "dict"]

#: The Lua script's built-in settings (``BUILTIN`` in ``nsprov/lua/nsprov-userdb.lua``).
LUA_SOCKET = "/run/nsprov/userdb.sock"
LUA_TIMEOUT = 1.0
#: Dovecot's dict-proxy client waits this long for a reply, fixed.
PROXY_TIMEOUT = 30.0
#: Actions a zero-fork route carries: userdb fields only.
ROUTE_ACTIONS = frozenset({"namespaces"})


@attrs.frozen(kw_only=True)
class Route:
    """A zero-fork userdb as ``doveconf -n`` shows it."""

    kind: RouteKind
    #: ``userdb lua`` / ``userdb dict`` (for finding subjects).
    subject: str
    #: The Lua script (``lua_file`` / ``args = file=``), or the dict userdb's args file.
    path: str | None
    #: The Lua userdb runs in the auth workers (2.4 ``use_worker``, 2.3 ``blocking``).
    worker: bool = True
    #: How the wiring turns the worker off, for messages.
    worker_setting: str = "use_worker = no"
    #: 2.3: the Lua userdb's ``cache_key`` (None: not given, Dovecot's default ``%u``).
    cache_key: str | None = ""
    #: 2.4: ``lua_settings`` as configured.
    lua_settings: dict[str, str] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class RouteState:
    """What :func:`~nsprov._check.gather.gather_routes` found for one :class:`Route`."""

    route: Route
    #: The file at ``route.path`` (None: unreadable, see ``file_error``).
    text: str | None = None
    file_error: str | None = None
    #: Why the file fails the trust rule (then it was not read).
    untrusted: str | None = None
    #: The socket and the client's timeout the route uses (None: unknown).
    socket: str | None = None
    timeout: float | None = None
    #: Why the probe lookup failed (None: it answered, or was not made).
    probe_error: str | None = None
    probed: bool = False
    #: The running server's per-lookup deadline, from its status (None: unknown).
    server_deadline: float | None = None
    #: ``luac -p``: the program run (None: none found), its exit status and message.
    luac: str | None = None
    luac_status: int = 0
    luac_message: str = ""
    #: The Lua version Dovecot links (``5.4``), if known.
    lua_version: str | None = None


def zero_fork_userdbs(conf: DovecotConf) -> list[Route]:
    """The Lua and dict userdbs of *conf*, in order (2.3 ``driver =``, 2.4 ``userdb <driver>``)."""
    out: list[Route] = []
    for section in conf.root.children("userdb"):
        driver = section.get("driver") or section.name
        if driver == "lua":
            out.append(_lua_route(section))
        elif driver == "dict":
            out.append(Route(kind="dict", subject="userdb dict", path=section.get("args") or None))
    return out


def _lua_route(section: ConfSection) -> Route:
    if section.get("driver"):  # 2.3: args = file=PATH blocking=yes cache_key=
        words = dict(w.partition("=")[::2] for w in section.get("args").split())
        return Route(
            kind="lua",
            subject="userdb lua",
            path=words.get("file") or None,
            worker=words.get("blocking", "yes").lower() not in {"no", "n", "0"},
            worker_setting="blocking=no",
            cache_key=words.get("cache_key"),
        )
    settings: dict[str, str] = {}
    for sub in section.children("lua_settings"):
        settings.update(sub.settings)
    return Route(
        kind="lua",
        subject=f"userdb {section.name}",
        path=section.get("lua_file") or None,
        worker=section.get("use_worker", "yes").lower() not in {"no", "n", "0"},
        lua_settings=settings,
    )


_DEFAULT_RE = re.compile(r"^\s*(socket|timeout)\s*=\s*(.+?),?\s*(--.*)?$")


def lua_defaults(text: str) -> dict[str, str]:
    """``socket`` and ``timeout`` from the ``DEFAULTS`` table of a script's *text*."""
    from .._serve.wiring import lua_defaults_block  # noqa: PLC0415

    block = lua_defaults_block(text) or ""
    out: dict[str, str] = {}
    for line in block.splitlines():
        if m := _DEFAULT_RE.match(line):
            value = m.group(2).strip()
            out[m.group(1)] = value[1:-1] if value[:1] == value[-1:] == '"' else value
    return out


def _seconds(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and 0.001 <= value <= 60 else None


def route_settings(route: Route, text: str | None) -> tuple[str | None, float | None]:
    """The socket and client timeout *route* uses, given its file's *text*.

    Lua: ``lua_settings`` (2.4) over the script's ``DEFAULTS`` over its built-in
    values, as the script applies them.  Dict: the ``uri`` of the args file.
    """
    if route.kind == "lua":
        defaults = lua_defaults(text) if text is not None else {}
        socket = route.lua_settings.get("socket") or defaults.get("socket") or LUA_SOCKET
        timeout = (
            _seconds(route.lua_settings.get("timeout"))
            or _seconds(defaults.get("timeout"))
            or LUA_TIMEOUT
        )
        return (socket if socket.startswith("/") else LUA_SOCKET), timeout
    if text is None:
        return None, None
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and key.strip() == "uri":
            return _dict_uri(value.strip())
    return None, None


def _dict_uri(uri: str) -> tuple[str | None, float | None]:
    """Socket and timeout of ``redis:path=S:timeout_msecs=N`` or ``proxy:S:name``."""
    kind, _, rest = uri.partition(":")
    if kind == "proxy":
        return rest.rpartition(":")[0] or rest, PROXY_TIMEOUT
    if kind != "redis":
        return None, None
    args = dict(a.partition("=")[::2] for a in rest.split(":"))
    try:
        timeout = int(args.get("timeout_msecs", "30000")) / 1000
    except ValueError:
        timeout = None
    return args.get("path") or None, timeout


def post_login_wired(conf: DovecotConf) -> list[str]:
    """The protocols whose logins go through a post-login service running nsprov."""
    out = []
    for protocol in conf.protocols:
        service = conf.services.get(protocol)
        socket = _socket_of(service.get("executable")) if service is not None else None
        post = _post_login_service(conf, socket) if socket is not None else None
        line = post.get("executable") if post is not None else ""
        if " post-login" in f" {line}" or "/nsprov/_fast.py" in line:
            out.append(protocol)
    return out


def check_routes(
    config: Config,
    conf: DovecotConf,
    states: list[RouteState],
    *,
    installed_script: str,
    serve_deadline: float,
) -> list[Finding]:
    """The zero-fork routes of *conf*: socket, timeouts, script, worker, the other route.

    *serve_deadline* is the deadline ``[serve]`` configures (or serve's default);
    a running server's own (``state.server_deadline``) takes precedence.
    """
    out: list[Finding] = []
    for state in states:
        if state.untrusted is not None:
            out.append(_untrusted(state))
        out += _socket_findings(state)
        out += _timeout_findings(state, serve_deadline)
        if state.route.kind == "lua":
            out += _lua_findings(state, installed_script, conf)
    if states:
        out += _both_routes(config, conf, states)
    return out


def _untrusted(state: RouteState) -> Finding:
    path = state.route.path or state.route.subject
    return _f(
        "error",
        "untrusted-file",
        path,
        f"{state.untrusted}: Dovecot's auth workers run {state.route.subject} as root, so whoever "
        f"may write {path} (or a directory above it) controls every login"
        if state.route.kind == "lua"
        else f"{state.untrusted}: whoever may write it chooses where Dovecot's auth workers ask "
        "for userdb fields",
        f"Make {path} and every directory above it owned by root and not writable by group or "
        "other (chown root:, chmod go-w), or use a path that is.",
    )


def _socket_findings(state: RouteState) -> list[Finding]:
    if not state.probed or state.probe_error is None:
        return []
    return [
        _f(
            "warning",
            "route-socket-down",
            state.socket,
            f"{state.route.subject} asks nsprov serve on {state.socket}, but {state.probe_error}: "
            "logins go on without shared namespaces (fail open), each with one warning in "
            "Dovecot's log",
            "Start nsprov serve on that socket (systemctl start nsprov-serve; nsprov serve "
            f"--status --socket={state.socket} tells when it answers), or point the wiring at "
            "the socket it listens on.",
        )
    ]


def _timeout_findings(state: RouteState, serve_deadline: float) -> list[Finding]:
    deadline = state.server_deadline if state.server_deadline is not None else serve_deadline
    timeout = state.timeout
    if timeout is None or deadline < timeout:
        return []
    whose = "the running server's" if state.server_deadline is not None else "[serve]'s"
    return [
        _f(
            "warning",
            "route-timeouts",
            state.route.subject,
            f"{state.route.subject} waits {timeout:g} s for nsprov serve, but {whose} "
            f"per-lookup deadline is {deadline:g} s: a slow scan ends as a login without "
            "shared namespaces, its answer arriving after the client gave up",
            f"Give nsprov serve a deadline below {timeout:g} s ([serve] deadline, --deadline), "
            "or raise the client's timeout; docs/serve.md, 'Timeouts', has the defaults that "
            "nest.",
        )
    ]


def _lua_findings(state: RouteState, installed_script: str, conf: DovecotConf) -> list[Finding]:
    from .._serve.wiring import lua_defaults_block  # noqa: PLC0415

    route = state.route
    subject = route.path or route.subject
    out: list[Finding] = []
    if not route.worker:
        out.append(
            _f(
                "error",
                "lua-no-worker",
                route.subject,
                f"{route.subject} runs without the auth worker ({route.worker_setting}): "
                "the script then runs in the single auth process as dovecot, cannot open a "
                "0600 root socket, and a hung nsprov serve stalls every login in turn",
                "Set use_worker = yes in the userdb lua block (2.4), or blocking=yes in its "
                "args (2.3), as nsprov serve --print-dovecot-config prints.",
            )
        )
    if conf.setting("auth_cache_size", "0") not in {"", "0"} and route.cache_key is None:
        out.append(
            _f(
                "warning",
                "lua-cache-key",
                route.subject,
                f"{route.subject} has no cache_key= in its args, so Dovecot 2.3 caches nsprov's "
                "answer under %u for auth_cache_ttl: a user keeps stale namespaces (or an empty "
                "answer from when nsprov serve was down)",
                "Add an empty cache_key= to the args (args = file=… blocking=yes cache_key=); "
                "nsprov serve has its own cache, invalidated by every change.",
            )
        )
    if state.untrusted is not None:
        return out
    if state.text is None:
        out.append(
            _f(
                "error",
                "lua-script-missing",
                subject,
                f"{route.subject} runs {route.path or '(no file given)'}, which cannot be read"
                f"{f': {state.file_error}' if state.file_error else ''}: Dovecot's auth process "
                "dies at start and every login fails",
                "Write the script there: nsprov serve --print-dovecot-config --client=lua "
                f"--lua-file={route.path or '/etc/dovecot/nsprov-userdb.lua'} prints it under "
                "its own header.",
            )
        )
        return out

    def body(text: str) -> str:
        return text.replace(lua_defaults_block(text) or "", "")

    if body(state.text) != body(installed_script):
        out.append(
            _f(
                "warning",
                "lua-script-differs",
                subject,
                f"{route.path} differs from the script of this nsprov (beyond its DEFAULTS "
                "table): an older nsprov's copy, or edited",
                "Write this nsprov's script there again (nsprov serve --print-dovecot-config "
                f"--client=lua --lua-file={route.path}); settings belong in DEFAULTS (2.3) "
                "or lua_settings (2.4).",
            )
        )
    if state.luac is None:
        version = state.lua_version or "5.4"
        out.append(
            _f(
                "info",
                "luac-unavailable",
                subject,
                f"no luac{version} is installed: the syntax of {route.path} was not checked "
                "(a syntax error kills Dovecot's auth process at start)",
                f"Install the Lua {version} compiler (Debian: apt install lua{version}) and "
                "check again.",
            )
        )
    elif state.luac_status != 0:
        out.append(
            _f(
                "error",
                "lua-syntax",
                subject,
                f"{state.luac} -p rejects {route.path}: {state.luac_message.strip()}: Dovecot's "
                "auth process dies at start and every login gets '* BYE Auth process broken'",
                "Write this nsprov's script there again (nsprov serve --print-dovecot-config "
                "--client=lua), or correct the edit the message names.",
            )
        )
    return out


def _both_routes(config: Config, conf: DovecotConf, states: list[RouteState]) -> list[Finding]:
    """Post-login next to a zero-fork route; actions a zero-fork route alone cannot run."""
    out: list[Finding] = []
    routes = ", ".join(dict.fromkeys(s.route.subject for s in states))
    posted = post_login_wired(conf)
    double = [p for p in posted if "namespaces" in getattr(config.actions, p)]
    if double:
        out.append(
            _f(
                "warning",
                "route-double",
                routes,
                f"{' and '.join(double)} logins get shared namespaces twice: from {routes} and "
                "from nsprov post-login (a process per login for namespaces the userdb "
                "already gave)",
                "Keep one route for namespaces. Post-login next to a zero-fork route works as "
                "intended for actions (deny, alerts, acl_groups, last_login): then remove "
                f"'namespaces' from [actions] {', '.join(double)}.",
            )
        )
    for protocol in conf.protocols:
        if protocol not in {"imap", "pop3"} or protocol in posted:
            continue
        actions: tuple[str, ...] = getattr(config.actions, protocol)
        lost = [a for a in actions if a not in ROUTE_ACTIONS]
        if lost:
            keep = ", ".join(f'"{a}"' for a in actions if a not in ROUTE_ACTIONS)
            deny = "deny" in lost
            out.append(
                _f(
                    "error" if deny else "warning",
                    "route-actions",
                    f"service {protocol}",
                    f"[actions] {protocol} runs {', '.join(lost)}, but only {routes} is wired "
                    f"for {protocol}: a zero-fork route carries namespaces only, so "
                    + ("nobody is denied" if deny else "these never run"),
                    f"Wire nsprov post-login for {protocol} too (docs/serve.md, 'Which action "
                    "works on which route'), with [actions] "
                    f"{protocol} = [{keep}] so that the namespaces come from the userdb alone.",
                )
            )
    return out
