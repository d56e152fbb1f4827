"""The ``nsprov`` command line (everything but the ``post-login`` hot path)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from .._defaults import DEFAULT_CONFIG_PATH
from .._postlogin import escape
from ..exceptions import NsprovError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence


def _groups(text: str) -> list[int]:
    try:
        return [int(g) for g in text.split(",") if g]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated gids, got {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def main_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nsprov``."""
    parser = argparse.ArgumentParser(
        prog="nsprov",
        description="Permission-true Dovecot public namespaces for a shared mail spool.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    show = sub.add_parser(
        "show", help="dry run: the namespaces a user would get, and why not the rest"
    )
    show.add_argument("--user", required=True, help="the login name")
    show.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="TOML config path")
    show.add_argument(
        "--format", choices=("table", "env", "json", "conf"), default="table", help="output format"
    )
    show.add_argument("--explain", action="store_true", help="list every spool entry's verdict")
    show.add_argument(
        "--dialect",
        choices=("2.3", "2.4"),
        help="Dovecot version to render for ([dovecot] version)",
    )
    show.add_argument("--uid", type=int, help="override the mail uid")
    show.add_argument("--gid", type=int, help="override the mail gid")
    show.add_argument("--groups", type=_groups, help="override supplementary gids (comma list)")
    show.add_argument("--home", help="override the home directory")
    show.add_argument(
        "--deadline",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="give up on a scan that takes longer (a hung filesystem); default 30",
    )
    sub.add_parser(
        "check",
        help="the doctor: configuration, spool and Dovecot checks (see 'nsprov check --help')",
        add_help=False,
    )
    sub.add_parser(
        "serve",
        help="resident dict-proxy userdb service (see 'nsprov serve --help')",
        add_help=False,
    )
    sub.add_parser(
        "cache",
        help="build or inspect the persistent scan cache (see 'nsprov cache --help')",
        add_help=False,
    )
    sub.add_parser(
        "post-login",
        help="the Dovecot script-login step (see 'nsprov post-login --help')",
        add_help=False,
    )
    return parser


def _uid_owner(uid: int) -> str | None:
    import pwd  # noqa: PLC0415

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _show(args: argparse.Namespace) -> int:
    import attrs  # noqa: PLC0415

    from .._config import load_config  # noqa: PLC0415
    from .._deadline import run_with_deadline  # noqa: PLC0415
    from .._engine import plan  # noqa: PLC0415
    from .._identity import mail_user_from_nss  # noqa: PLC0415
    from .._render import render_conf, render_env, render_json, render_table  # noqa: PLC0415

    config = load_config(args.config)
    config.check_does_something()
    if args.dialect:
        config = attrs.evolve(config, dialect=args.dialect)
    user = mail_user_from_nss(
        args.user,
        config.identity,
        uid=args.uid,
        gid=args.gid,
        groups=args.groups,
        home=args.home,
    )
    if (owner := _uid_owner(user.identity.uid)) is not None and owner != user.user:
        print(
            f"nsprov: note: uid {user.identity.uid} belongs to {owner}, not {user.user}: users who "
            "share a uid (virtual users) cannot be told apart by filesystem permissions",
            file=sys.stderr,
        )
    environ = {"USER": user.user, "USERDB_KEYS": "UID GID HOME SYSTEM_GROUPS_USER "}
    p = run_with_deadline(
        lambda: plan(config, user, environ), args.deadline, what=f"the scan for user {user.user}"
    )
    out = {
        "table": lambda: render_table(p, explain=args.explain),
        "env": lambda: render_env(p),
        "json": lambda: render_json(p, config.dialect),
        "conf": lambda: render_conf(p, config.dialect),
    }[args.format]()
    sys.stdout.write(out)
    return 0


def cache_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nsprov cache``."""
    parser = argparse.ArgumentParser(
        prog="nsprov cache",
        description="Build or inspect the persistent scan cache of [scan_cache] (large spools).",
    )
    parser.add_argument(
        "action",
        choices=("update", "status"),
        help="update: rebuild every spool's cache (run it from a timer, as the user "
        "post-login runs as); status: exit 1 unless every spool's cache is fresh",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="TOML config path")
    return parser


def _cache(argv: Sequence[str]) -> int:
    from .._config import load_config  # noqa: PLC0415
    from .._scan import DEFAULT_FS  # noqa: PLC0415
    from .._scancache import status, update  # noqa: PLC0415

    args = cache_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except NsprovError as e:
        for line in getattr(e, "problems", (str(e),)):
            print(f"nsprov: error: {escape(line)}", file=sys.stderr)
        return 1
    cfg = config.scan_cache
    if cfg is None:
        print(f"nsprov: error: {args.config} has no [scan_cache] table", file=sys.stderr)
        return 1
    rc = 0
    for spool in config.spools:
        if args.action == "update":
            try:
                u = update(cfg, spool, DEFAULT_FS)
            except OSError as e:
                print(f"nsprov: error: {escape(f'spool {spool.path}: {e}')}", file=sys.stderr)
                rc = 1
                continue
            print(
                f"{spool.path}: {u.entries} entries, {u.reused} unchanged since the last update, "
                f"{u.seconds:.3f}s" + (" (spool changing: logins will list it)" if u.racy else "")
            )
        else:
            s = status(cfg, spool)
            age = "-" if s.age is None else f"{s.age:.0f}s"
            state = "fresh" if s.fresh else f"NOT USED: {s.problem}"
            print(f"{spool.path}: age {age}, {s.entries} entries indexed, {state} ({s.file})")
            rc |= not s.fresh
    return rc


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    execve: Callable[[str, Sequence[str], Mapping[str, str]], object] | None = None,
) -> int:
    """Run ``nsprov``; returns the exit status (0 ok, 1 domain error, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        from .._serve import main as serve  # noqa: PLC0415

        return serve(argv[1:])
    if argv and argv[0] == "check":
        from .._check import main as check  # noqa: PLC0415

        return check(argv[1:])
    if argv and argv[0] == "cache":
        return _cache(argv[1:])
    if argv and argv[0] == "post-login":
        from .._postlogin import main as post_login  # noqa: PLC0415
        from .._worker import work  # noqa: PLC0415 - injected: _postlogin imports no nsprov

        env = dict(os.environ if environ is None else environ)
        if execve is None:
            return post_login(argv[1:], environ=env, worker=work)
        return post_login(argv[1:], environ=env, execve=execve, worker=work)
    parser = main_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version  # noqa: PLC0415

        print(f"nsprov {version('nsprov')}")
        return 0
    if args.command is None:
        parser.print_usage(sys.stderr)
        return 2
    try:
        return _show(args)
    except NsprovError as e:
        for line in getattr(e, "problems", (str(e),)):
            print(f"nsprov: error: {escape(line)}", file=sys.stderr)
        return 1
