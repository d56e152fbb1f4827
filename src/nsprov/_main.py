"""The ``nsprov`` command: dispatch before importing anything heavy.

The installed command is a launcher (``scripts/nsprov`` in the source tree)
that runs ``python -I -c 'from nsprov._main import entrypoint; entrypoint()'``:
isolated, because Dovecot runs it as root with userdb fields in the
environment.  ``python -I -m nsprov`` reaches the same function.
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
