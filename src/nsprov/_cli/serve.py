"""The front end of ``nsprov serve``: its argument parser, and options from arguments and ``[serve]``.

The server itself is :mod:`nsprov._serve`; see ``docs/serve.md`` for the
operator's side.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from .._reply import AUTH_REPLY_LIMIT
from .._serve.codec import DEFAULT_MAX_LINE
from .._serve.dirs import dir_helper
from .._serve.log import _LEVELS
from .._serve.options import (
    DEFAULT_CACHE_SIZE,
    DEFAULT_CACHE_TTL,
    DEFAULT_CONFIG,
    DEFAULT_DEADLINE,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SOCKET,
    DEFAULT_SOCKET_MODE,
    DEFAULT_WORKERS,
    ServeOptions,
)
from .._serve.server import exit_if_threads_hang, run
from .._serve.wiring import DEFAULT_DICT_FILE, DEFAULT_LUA_FILE, dovecot_config
from ..exceptions import NsprovError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._config import ServeConfig


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an octal mode, got {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"mode {text} out of range")
    return mode


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return convert


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def serve_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nsprov serve``."""
    p = argparse.ArgumentParser(
        prog="nsprov serve",
        description="Resident Dovecot userdb service (dict on 2.3, Lua on 2.3 and 2.4): shared namespaces without a post-login process.",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help="TOML config path")
    p.add_argument("--socket", help=f"UNIX socket path ([serve] socket, {DEFAULT_SOCKET})")
    p.add_argument(
        "--socket-mode", type=_mode, help="octal socket mode ([serve] socket_mode, 0600)"
    )
    p.add_argument("--socket-group", help="group of the socket (default: the server's)")
    p.add_argument("--deadline", type=_positive(float), help="seconds per lookup")
    p.add_argument("--cache-ttl", type=_non_negative, help="seconds; 0 disables the cache")
    p.add_argument(
        "--cache-size", type=_positive(int), default=DEFAULT_CACHE_SIZE, help="cached users at most"
    )
    p.add_argument("--reply-budget", type=_positive(int), help="bytes of JSON per reply")
    p.add_argument("--max-connections", type=_positive(int))
    p.add_argument(
        "--idle-timeout",
        type=_positive(float),
        help=f"seconds without a request before a connection is closed ({DEFAULT_IDLE_TIMEOUT:g})",
    )
    p.add_argument(
        "--max-line", type=_positive(int), default=DEFAULT_MAX_LINE, help="bytes per request line"
    )
    p.add_argument("--workers", type=_positive(int), default=DEFAULT_WORKERS, help="scan threads")
    p.add_argument("--log-level", choices=tuple(_LEVELS), default="info")
    p.add_argument(
        "--print-dovecot-config", action="store_true", help="print the Dovecot wiring and exit"
    )
    p.add_argument(
        "--dialect", choices=("2.3", "2.4"), default="2.3", help="Dovecot version to print for"
    )
    p.add_argument(
        "--client",
        choices=("redis", "proxy", "lua"),
        help="Dovecot client to print: a dict userdb (redis, proxy; 2.3 only) or the Lua "
        "userdb (lua; the default for --dialect=2.4)",
    )
    p.add_argument(
        "--dict-file", default=DEFAULT_DICT_FILE, help="path of the dict userdb's args file"
    )
    p.add_argument(
        "--lua-file",
        default=DEFAULT_LUA_FILE,
        help=f"where the Lua userdb script goes (printed under its own header; {DEFAULT_LUA_FILE})",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="ask the server on --socket for its health and counters; exit 0 when it answers",
    )
    p.add_argument("--dir-helper", action="store_true", help=argparse.SUPPRESS)
    return p


def options_from_args(
    args: argparse.Namespace, defaults: ServeConfig | None = None
) -> ServeOptions:
    """:class:`ServeOptions` from parsed arguments; *defaults* (``[serve]``) fill the gaps."""
    from .._config import ServeConfig  # noqa: PLC0415

    d = defaults or ServeConfig()

    def pick(given: Any, configured: Any, builtin: Any) -> Any:
        return given if given is not None else configured if configured is not None else builtin

    budget = pick(args.reply_budget, d.reply_budget, None)
    if budget is not None and budget >= AUTH_REPLY_LIMIT:
        raise NsprovError(
            f"--reply-budget={budget}: Dovecot refuses userdb replies over {AUTH_REPLY_LIMIT} bytes"
        )
    return ServeOptions(
        config_path=args.config,
        socket_path=pick(args.socket, d.socket, DEFAULT_SOCKET),
        socket_mode=pick(args.socket_mode, d.socket_mode, DEFAULT_SOCKET_MODE),
        socket_group=pick(args.socket_group, d.socket_group, None),
        deadline=pick(args.deadline, d.deadline, DEFAULT_DEADLINE),
        cache_ttl=pick(args.cache_ttl, d.cache_ttl, DEFAULT_CACHE_TTL),
        cache_size=args.cache_size,
        reply_budget=budget,
        max_connections=pick(args.max_connections, d.max_connections, DEFAULT_MAX_CONNECTIONS),
        idle_timeout=pick(args.idle_timeout, d.idle_timeout, DEFAULT_IDLE_TIMEOUT),
        max_line=args.max_line,
        workers=args.workers,
        log_level=args.log_level,
    )


def main(argv: Sequence[str]) -> int:
    """``nsprov serve ARGS``: the exit status (0 ok, 1 error, 2 usage)."""
    parser = serve_parser()
    args = parser.parse_args(list(argv))
    if args.dir_helper:
        return dir_helper()
    if args.status:
        return _status(args.socket or _configured_socket(args.config))
    try:
        if args.print_dovecot_config:
            sys.stdout.write(
                dovecot_config(
                    dialect=args.dialect,
                    socket_path=args.socket or DEFAULT_SOCKET,
                    client=args.client,
                    deadline=args.deadline or DEFAULT_DEADLINE,
                    dict_file=args.dict_file,
                    lua_file=args.lua_file,
                )
            )
            return 0
        options = options_from_args(args, _serve_defaults(args.config))
    except NsprovError as e:
        print(f"nsprov serve: error: {e}", file=sys.stderr)
        return 1
    status = asyncio.run(run(options))
    exit_if_threads_hang(status)
    return status


def _status(path: str) -> int:
    """``nsprov serve --status``: print the server's status; 0 when it answered, 1 when not."""
    from .._serve.probe import ProbeError, format_status, probe_lookup, server_status  # noqa: PLC0415

    try:
        status = server_status(path)
        took = probe_lookup(path)
    except ProbeError as e:
        print(f"nsprov serve: error: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(f"socket: {path}\n" + format_status(status) + f"probe_ms: {took * 1000:.2f}\n")
    return 0


def _configured_socket(path: str) -> str:
    """``[serve] socket`` of the config at *path*, or the default."""
    defaults = _serve_defaults(path)
    return (defaults.socket if defaults is not None else None) or DEFAULT_SOCKET


def _serve_defaults(path: str) -> ServeConfig | None:
    """``[serve]`` of the config at *path*, or None when it cannot be read (``run`` reports that)."""
    from .._config import load_config  # noqa: PLC0415

    try:
        return load_config(path).serve
    except NsprovError:
        return None
