"""``nsprov post-login --print-dovecot-config``: the Dovecot wiring of this installation.

The login itself never comes here: :mod:`nsprov._main` sends ``post-login`` straight
to :mod:`nsprov._postlogin` unless ``--print-dovecot-config`` is among its options.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import TYPE_CHECKING

from .._defaults import DEFAULT_CONFIG_PATH
from ..exceptions import NsprovError

if TYPE_CHECKING:
    from collections.abc import Sequence

PROTOCOLS = ("imap", "pop3")


def postlogin_parser() -> argparse.ArgumentParser:
    """The parser of ``nsprov post-login --print-dovecot-config`` (the login parses its own)."""
    p = argparse.ArgumentParser(
        prog="nsprov post-login",
        description=(
            "Print the Dovecot service blocks that run this installation's nsprov as the "
            "post-login step, with absolute paths. (Without --print-dovecot-config, "
            "'nsprov post-login' is the login step itself: see 'nsprov post-login --help'.)"
        ),
    )
    p.add_argument(
        "--print-dovecot-config", action="store_true", required=True, help="print and exit"
    )
    p.add_argument(
        "--dialect",
        choices=("2.3", "2.4"),
        help="Dovecot version to print for (default: [dovecot] version of --config, else 2.3)",
    )
    p.add_argument(
        "--protocol", choices=("imap", "pop3", "both"), default="both", help="default: both"
    )
    p.add_argument(
        "--config", default=DEFAULT_CONFIG_PATH, help="the nsprov.toml the login line names"
    )
    p.add_argument("--serve", metavar="SOCKET", help="add --serve=SOCKET (the fast path)")
    p.add_argument("--on-error", choices=("continue", "deny"), help="add --on-error=...")
    p.add_argument(
        "--nsprov", metavar="PATH", help="the nsprov command to run (default: this installation's)"
    )
    return p


def installed_nsprov(python: str | None = None) -> str:
    """The absolute path of this installation's ``nsprov`` command.

    The launcher beside the interpreter (a virtual environment's ``bin/``, or
    ``/usr/bin`` for the Debian package), else the one on ``PATH``.
    """
    python = sys.executable if python is None else python
    beside = os.path.join(os.path.dirname(os.path.abspath(python)), "nsprov")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nsprov")
    if found is None:
        raise NsprovError(
            "cannot find this installation's nsprov command; give it with --nsprov=PATH"
        )
    return os.path.abspath(found)


def _token(what: str, value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise NsprovError(
            f"{what} {value!r}: Dovecot splits an executable line on spaces, with no quoting; "
            "use a path without spaces"
        )
    return value


def service_blocks(
    *,
    nsprov: str,
    config: str,
    protocols: Sequence[str] = PROTOCOLS,
    serve: str | None = None,
    on_error: str | None = None,
) -> str:
    """The ``service <proto>`` and ``service <proto>-postlogin`` blocks, the same in 2.3 and 2.4."""
    if not os.path.isabs(nsprov) or not os.path.isabs(config):
        raise NsprovError(
            "the post-login environment has no PATH and no working directory: "
            f"give absolute paths (nsprov {nsprov!r}, config {config!r})"
        )
    options = [f"--config={_token('config', config)}"]
    if serve is not None:
        options.append(f"--serve={_token('socket', serve)}")
    if on_error is not None:
        options.append(f"--on-error={on_error}")
    out = []
    for protocol in protocols:
        line = " ".join(
            [
                "script-login",
                _token("nsprov", nsprov),
                "post-login",
                *options,
                f"--protocol={protocol}",
            ]
        )
        out.append(
            f"service {protocol} {{\n"
            f"  executable = {protocol} {protocol}-postlogin\n"
            "}\n"
            "\n"
            f"service {protocol}-postlogin {{\n"
            f"  executable = {line}\n"
            "  # root: nsprov evaluates permissions for the user and drops to the user itself.\n"
            "  user = root\n"
            f"  unix_listener {protocol}-postlogin {{\n"
            "  }\n"
            "}\n"
        )
    return "\n".join(out)


def separator_block(separator: str) -> str:
    """The private namespace's separator, or "" for ``.`` (Debian's default, nothing to change)."""
    if separator == ".":
        return ""
    return (
        "# The private namespace must use nsprov's separator: Debian's conf.d/10-mail.conf\n"
        "# leaves it at the Maildir default '.', under which the shared prefixes break.\n"
        "namespace inbox {\n"
        f"  separator = {separator}\n"
        "}\n"
    )


def dovecot_config(
    *,
    dialect: str,
    nsprov: str,
    config: str,
    separator: str = "/",
    protocols: Sequence[str] = PROTOCOLS,
    serve: str | None = None,
    on_error: str | None = None,
) -> str:
    """What ``nsprov post-login --print-dovecot-config`` prints."""
    head = [
        f"# nsprov as the post-login step of Dovecot {dialect}, for {' and '.join(protocols)}.",
        "# Paste into a conf.d file of its own (e.g. conf.d/90-nsprov.conf) and reload Dovecot.",
        "# One post-login service per protocol, so that nsprov knows the protocol; every",
        "# program is an absolute path (Dovecot wipes the environment, PATH included).",
    ]
    if dialect == "2.4":
        head.append(f'# {config} must say [dovecot] version = "2.4".')
    text = "\n".join(head) + "\n\n"
    text += service_blocks(
        nsprov=nsprov, config=config, protocols=protocols, serve=serve, on_error=on_error
    )
    sep = separator_block(separator)
    return text + ("\n" + sep if sep else "")


def main(argv: Sequence[str]) -> int:
    """``nsprov post-login --print-dovecot-config ...``: the exit status (0 ok, 1 error, 2 usage)."""
    args = postlogin_parser().parse_args(list(argv))
    config_path = os.path.abspath(args.config)
    dialect, separator = args.dialect, "/"
    try:
        from .._config import load_config  # noqa: PLC0415

        loaded = load_config(config_path)
    except NsprovError:
        loaded = None  # printing the wiring does not need a readable config
    if loaded is not None:
        dialect = dialect or loaded.dialect
        separator = loaded.separator
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    try:
        text = dovecot_config(
            dialect=dialect or "2.3",
            nsprov=args.nsprov or installed_nsprov(),
            config=config_path,
            separator=separator,
            protocols=protocols,
            serve=args.serve,
            on_error=args.on_error,
        )
    except NsprovError as e:
        print(f"nsprov post-login: error: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0
