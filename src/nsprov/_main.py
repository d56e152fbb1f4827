"""The ``nsprov`` console script: dispatch before importing anything heavy.

``nsprov post-login`` runs on every login, so it goes straight to
:mod:`nsprov._postlogin` (standard library only); argparse and the rest load
only for the other subcommands.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: see nsprov/__init__.py
if TYPE_CHECKING:
    from typing import NoReturn


def entrypoint() -> NoReturn:
    """Console-script entry point."""
    argv = sys.argv[1:]
    if argv and argv[0] == "post-login":
        from ._postlogin import entrypoint as post_login  # noqa: PLC0415

        post_login(argv[1:])
    from ._cli import main  # noqa: PLC0415

    raise SystemExit(main(argv))
