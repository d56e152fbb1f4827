"""``nsprov install-launcher``: write the direct Python launcher (see :mod:`nsprov._launcher`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .._launcher import default_python, describe, install
from ..exceptions import NsprovError
from .errors import report

if TYPE_CHECKING:
    from collections.abc import Sequence


def launcher_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nsprov install-launcher``."""
    parser = argparse.ArgumentParser(
        prog="nsprov install-launcher",
        description="Replace the bash launcher bin/nsprov with a direct one: a '#!PYTHON -IS' "
        "script that starts Python isolated, without a shell (about 2 ms and 115 system calls "
        "less per login).  A pip upgrade puts the bash launcher back: run this again after it.",
    )
    parser.add_argument(
        "--target",
        metavar="PATH",
        help="the file to write (default: nsprov beside the interpreter, a venv's bin/nsprov)",
    )
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="the interpreter on the #! line, as is (default: this one, "
        "not resolved: a venv is found from its bin/python)",
    )
    parser.add_argument(
        "--package-dir",
        metavar="DIR",
        help="the directory holding the nsprov package that post-login imports "
        "(default: this nsprov's)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing: exit 0 if the target is the direct launcher, 1 if not",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """``nsprov install-launcher ARGS``: 0 written or already there, 1 refused, 2 usage."""
    import os  # noqa: PLC0415

    from .._launcher import default_target  # noqa: PLC0415

    args = launcher_parser().parse_args(argv)
    python = default_python() if args.python is None else args.python
    if args.check:
        target = default_target(python) if args.target is None else args.target
        direct, what = describe(os.path.abspath(target))
        print(what)
        return 0 if direct else 1
    try:
        target, changed = install(python=python, package_dir=args.package_dir, target=args.target)
    except NsprovError as e:
        return report(e, prog="nsprov install-launcher")
    if changed:
        print(f"{target}: direct launcher written (#!{python} -IS)")
    else:
        print(f"{target}: already the direct launcher (#!{python} -IS)")
    from .._launcher import default_package_dir  # noqa: PLC0415
    from .._pack import write  # noqa: PLC0415

    try:
        print(f"{write(args.package_dir or default_package_dir())}: login pack written")
    except (OSError, SyntaxError) as e:  # the launcher imports as usual without it
        print(f"no login pack (the login path imports its modules as usual): {e}")
    return 0
