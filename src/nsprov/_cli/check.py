"""``nsprov check``: its command line; the checks are in :mod:`nsprov._check`."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any

from .._check.gather import gather
from .._check.marks import DEFAULT_STATE_FILE
from .._check.render import render_json, render_table, use_colour
from .._check.report import run_checks
from .._deadline import DEFAULT_DEADLINE
from .._defaults import DEFAULT_CONFIG_PATH

if TYPE_CHECKING:
    from collections.abc import Sequence


def _version_arg(text: str) -> str:
    import argparse  # noqa: PLC0415

    if not re.fullmatch(r"\d+\.\d+", text):
        raise argparse.ArgumentTypeError(f"expected X.Y, e.g. 2.3, got {text!r}")
    return text


def _positive(text: str) -> int:
    import argparse  # noqa: PLC0415

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _fraction(text: str) -> float:
    import argparse  # noqa: PLC0415

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    import argparse  # noqa: PLC0415

    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def check_parser() -> Any:
    """The argument parser of ``nsprov check``."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="nsprov check",
        description="Check the configuration, the spools and Dovecot's wiring; exit 1 on errors.",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="nsprov's TOML config")
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="USER",
        help="check this user (repeatable); default: every user Dovecot accepts, capped",
    )
    parser.add_argument(
        "--max-users", type=_positive, default=200, help="cap for the enumerated users"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--doveconf", metavar="PATH", help="the doveconf program")
    parser.add_argument(
        "--dovecot-config", metavar="FILE", help="Dovecot's config file (doveconf -c FILE)"
    )
    parser.add_argument("--dovecot", metavar="PATH", help="the dovecot program (for --version)")
    parser.add_argument(
        "--dovecot-version", type=_version_arg, metavar="X.Y", help="skip version detection"
    )
    parser.add_argument(
        "--deadline",
        type=_seconds,
        default=DEFAULT_DEADLINE,
        metavar="SECONDS",
        help="give up on a user whose scan takes longer (a hung filesystem); default 30",
    )
    parser.add_argument(
        "--clean-stale",
        action="store_true",
        help="remove stale per-user directories of the checked users, as each user",
    )
    parser.add_argument(
        "--max-remove-fraction",
        type=_fraction,
        default=0.5,
        metavar="F",
        help="leave a per-user parent alone when more than this fraction of it is stale",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="remove stale directories even of an empty, moved or shrunk spool or beyond "
        "--max-remove-fraction (and take the spools as they are now as the reference)",
    )
    parser.add_argument(
        "--state",
        default=None,
        metavar="FILE",
        help="where the check records each spool's file system and entry count between runs "
        f"(default {DEFAULT_STATE_FILE})",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """``nsprov check``: print the report; 0 without errors, 1 with errors, 2 on usage errors."""
    args = check_parser().parse_args(list(argv))
    report = run_checks(gather(args))
    if args.format == "json":
        out = render_json(report)
    else:
        out = render_table(report, colour=use_colour(sys.stdout, os.environ))
    sys.stdout.write(out)
    sys.stdout.flush()
    return report.status
