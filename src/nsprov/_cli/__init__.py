"""The ``nsprov`` command line (everything but the ``post-login`` hot path).

This package holds only argument parsing: the dispatcher :func:`main` and
:func:`main_parser` here, one module per command's front end (``show``,
``cache``, …) and one error printer (:mod:`nsprov._cli.errors`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from ..exceptions import NsprovError
from . import show
from .errors import report

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence


def main_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nsprov``."""
    parser = argparse.ArgumentParser(
        prog="nsprov",
        description="Permission-true Dovecot public namespaces for a shared mail spool.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    show.add_arguments(
        sub.add_parser(
            "show", help="dry run: the namespaces a user would get, and why not the rest"
        )
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
        "install-launcher",
        help="write a direct Python launcher in place of the bash one "
        "(see 'nsprov install-launcher --help')",
        add_help=False,
    )
    sub.add_parser(
        "post-login",
        help="the Dovecot script-login step (see 'nsprov post-login --help')",
        add_help=False,
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    execve: Callable[[str, Sequence[str], Mapping[str, str]], object] | None = None,
) -> int:
    """Run ``nsprov``; returns the exit status (0 ok, 1 domain error, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        from .serve import main as serve  # noqa: PLC0415

        return serve(argv[1:])
    if argv and argv[0] == "check":
        from .check import main as check  # noqa: PLC0415

        return check(argv[1:])
    if argv and argv[0] == "cache":
        from .cache import main as cache  # noqa: PLC0415

        return cache(argv[1:])
    if argv and argv[0] == "install-launcher":
        from .launcher import main as install_launcher  # noqa: PLC0415

        return install_launcher(argv[1:])
    if argv and argv[0] == "post-login" and "--print-dovecot-config" in argv[1:]:
        from .postlogin import main as print_config  # noqa: PLC0415

        return print_config(argv[1:])
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
        return show.run(args)
    except NsprovError as e:
        return report(e)
