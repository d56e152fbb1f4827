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


def _worker(opts: Options, environ: Mapping[str, str]) -> Callable[..., object] | None:
    """The post-login work, injected into :mod:`nsprov._postlogin`: lean or full, or None.

    :func:`nsprov._profile.dispatch` (standard library only) loads the login profile in
    the parent: warm, the forked worker runs the lean path; a protocol the profile
    configures nothing for returns None (the parent execs at once); otherwise the forked
    worker imports :mod:`nsprov._worker` (the full path, attrs and all) and runs it.
    The parent never loads the full worker, and a login ``nsprov serve`` answers forks none.
    """
    from ._profile import dispatch  # noqa: PLC0415 - stdlib only; after the serve answer

    return dispatch(opts, environ, full=_full)


def _full(fd: int, opts: Options, environ: Mapping[str, str], profile: str) -> None:
    """The full worker (:func:`nsprov._worker.run`), told the profile's state."""
    from ._worker import run  # noqa: PLC0415 - in the worker: the parent stays light

    run(fd, opts, environ, profile=profile)


def post_login(argv: list[str]) -> NoReturn:
    """``nsprov post-login ARGS`` with the worker injected (the console script and ``_fast.py``)."""
    from ._postlogin import entrypoint as post_login  # noqa: PLC0415 - the hot path first

    post_login(argv, worker=_worker)


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
        post_login(argv[1:])
    from ._cli import main  # noqa: PLC0415

    raise SystemExit(main(argv))
