"""``nsprov show``: the dry run, the namespaces a user would get and why not the rest."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from .._defaults import DEFAULT_CONFIG_PATH

if TYPE_CHECKING:
    from .._config import Config


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


def add_arguments(show: argparse.ArgumentParser) -> None:
    """The options of ``nsprov show``, added to its subparser *show*."""
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


def _uid_owner(uid: int) -> str | None:
    import pwd  # noqa: PLC0415

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _gid_name(gid: int) -> str | None:
    import grp  # noqa: PLC0415

    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return None


def _resolved(config: Config) -> dict[str, str]:
    """Each spool as configured -> its real path (the table shows both where they differ)."""
    return {s.path: os.path.realpath(s.path) for s in config.spools}


def run(args: argparse.Namespace) -> int:
    """Run ``nsprov show`` with the parsed *args*; raises :class:`~nsprov.exceptions.NsprovError`."""
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
        "table": lambda: render_table(
            p, explain=args.explain, gid_name=_gid_name, resolved=_resolved(config)
        ),
        "env": lambda: render_env(p),
        "json": lambda: render_json(p, config.dialect),
        "conf": lambda: render_conf(p, config.dialect),
    }[args.format]()
    sys.stdout.write(out)
    return 0
