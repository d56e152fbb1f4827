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
    from collections.abc import Callable, Mapping
    from typing import NoReturn

    from ._postlogin import Options


def _worker(opts: Options, environ: Mapping[str, str]) -> Callable[[int], None]:
    """The post-login worker (:func:`nsprov._worker.run`), injected into :mod:`nsprov._postlogin`.

    :mod:`nsprov._worker` is imported in the forked worker, as before the
    injection: the parent never loads it, and a login ``nsprov serve`` answers forks none.
    """

    def work(fd: int) -> None:
        from ._worker import run  # noqa: PLC0415 - in the worker: the parent stays light

        run(fd, opts, environ)

    return work


def _printing(argv: list[str]) -> bool:
    """Whether ``post-login``'s options ask for ``--print-dovecot-config`` (not a login)."""
    for arg in argv[1:]:
        if arg == "--print-dovecot-config":
            return True
        if not arg.startswith("--") or arg == "--":
            return False  # the chain Dovecot appended: never an nsprov option
    return False


def entrypoint() -> NoReturn:
    """Console-script entry point."""
    argv = sys.argv[1:]
    if argv and argv[0] == "post-login" and not _printing(argv):
        from ._postlogin import entrypoint as post_login  # noqa: PLC0415 - the hot path first

        post_login(argv[1:], worker=_worker)
    from ._cli import main  # noqa: PLC0415

    raise SystemExit(main(argv))
