"""The post-login worker: runs in the forked child of ``nsprov post-login``.

It loads the config, resolves the identity, scans, creates the per-user
directories as the user, and reports frames to the parent.  It never touches
the client connection (the parent closed it here) and reports every failure
as one frame, which the parent logs as one line.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ._postlogin import (
    T_DEADLINE,
    T_ENV,
    T_FAIL,
    T_OK,
    T_POLICY,
    Options,
    frame,
    log,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._config import Config


def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def run(fd: int, opts: Options, environ: Mapping[str, str]) -> None:
    """Do the post-login work and report it on *fd*."""
    from ._config import load_config  # noqa: PLC0415
    from .exceptions import NsprovError  # noqa: PLC0415

    try:
        config = load_config(opts.config)
        if opts.deadline is None:
            _send(fd, frame(T_DEADLINE, str(config.deadline).encode()))
        _send(fd, frame(T_POLICY, config.on_error.encode()))
        out = b"".join(
            frame(
                T_ENV,
                k.encode("utf-8", "surrogateescape") + b"\0" + v.encode("utf-8", "surrogateescape"),
            )
            for k, v in namespaces_job(config, environ).items()
        )
        _send(fd, out + frame(T_OK, b""))
    except NsprovError as e:
        _send(fd, frame(T_FAIL, str(e).encode("utf-8", "backslashreplace")))
    except Exception as e:
        _send(
            fd,
            frame(
                T_FAIL,
                f"internal error: {type(e).__name__}: {e}".encode("utf-8", "backslashreplace"),
            ),
        )


def namespaces_job(config: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """The namespaces action: plan, log, create directories as the user; the variables to set."""
    from ._engine import drop_privileges, ensure_dirs, explain_lines, plan  # noqa: PLC0415
    from ._identity import mail_user_from_environ  # noqa: PLC0415

    cfg = config
    user = mail_user_from_environ(environ, cfg.identity)
    debug = user.user in cfg.debug_users
    p = plan(cfg, user, environ, keep_skipped=debug)
    if debug:
        for line in explain_lines(p):
            log(f"debug user {user.user}: {line}")
    if p.warnings:
        log("; ".join(p.warnings))
    if cfg.create_dirs and p.dirs:
        drop_privileges(user)
        failures = ensure_dirs(p.dirs)
        if failures:
            log(
                f"user {user.user}: cannot create {len(failures)} index/control "
                f"directories (Dovecot will try itself): {failures[0]}"
            )
    return p.environ
