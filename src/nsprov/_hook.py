"""The Python hook API: a custom post-login script in a few lines.

::

    #!/opt/nsprov/bin/python3 -I
    import nsprov

    def hook(login: nsprov.Login) -> None:
        login.set_field("quota_rule", "*:storage=1G")
        login.add_namespaces()

    nsprov.run_hook(hook)

Wire it like ``nsprov post-login`` (absolute interpreter path: the post-login
environment has no ``PATH``)::

    executable = script-login /usr/local/bin/my-hook --config=/etc/nsprov/nsprov.toml --protocol=imap

The hook runs in a worker process under the same deadline and fail-open
rules as ``nsprov post-login``: an exception, or a hook that runs past the
deadline, is logged on one line and the next program is exec'ed with the
environment untouched (unless ``--on-error=deny``).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ._login import Login


def run_hook(
    hook: Callable[[Login], None],
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    execve: Callable[[str, Sequence[str], Mapping[str, str]], object] | None = None,
) -> NoReturn:
    """Run *hook* as a script-login step, then exec the rest of the chain.

    *argv* defaults to ``sys.argv[1:]``: nsprov's options (``--config``,
    ``--protocol``, ``--on-error``, ``--deadline``), then the chain.  The
    configuration is loaded only when ``--config`` is given; the built-in
    actions that need it (``login.add_namespaces()``, ``login.run(...)``)
    load the default path otherwise.

    .. versionadded:: 0.1.0
    """
    from ._postlogin import Options, main, os_execve  # noqa: PLC0415 - importing nsprov stays light

    args = list(sys.argv[1:] if argv is None else argv)
    config_given = any(a == "--config" or a.startswith("--config=") for a in args)

    def worker(opts: Options, env: Mapping[str, str]) -> Callable[[int], None]:
        def work(fd: int) -> None:  # pragma: no cover - runs in the worker
            from ._worker import run_hook as run  # noqa: PLC0415 - in the forked child only

            run(fd, opts, env, hook, config_given=config_given)

        return work

    raise SystemExit(
        main(
            args,
            environ=dict(os.environ if environ is None else environ),
            execve=execve or os_execve,
            worker=worker,
        )
    )
