"""Checks of the trust rule on every file nsprov, as root, reads on behalf of others."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from .._deadline import DEFAULT_DEADLINE
from .._scan import DEFAULT_FS
from ..exceptions import UntrustedFileError
from .findings import Finding, _f, _show

if TYPE_CHECKING:
    from .._config import Config, SpoolConfig


def check_trusted_files(
    config_path: str, config: Config | None, *, deadline: float = DEFAULT_DEADLINE
) -> list[Finding]:
    """``untrusted-file``: each file root uses on behalf of others must pass the trust rule.

    The config file; with a config, each spool's ignore file (and its caps),
    the ``[scan_cache]`` directory, the ``[serve]`` socket's directory and the
    post-login config cache directory.  An absent one is not reported here,
    nor one in a spool that does not answer within *deadline* seconds.
    """
    from .._config import DEFAULT_CACHE_DIR  # noqa: PLC0415
    from .._scan import _ignore_patterns  # noqa: PLC0415
    from .._trust import MAX_FILE_SIZE, check_trusted, read_trusted  # noqa: PLC0415

    out: list[Finding] = []

    def found(subject: str, message: str) -> None:
        out.append(
            _f(
                "error",
                "untrusted-file",
                subject,
                message,
                f"Make {subject} and every directory above it owned by root and not writable by "
                "group or other (chown root:, chmod go-w), or use a path that is.",
            )
        )

    try:
        read_trusted(config_path, what="config file", limit=MAX_FILE_SIZE)
    except UntrustedFileError as e:
        found(config_path, str(e))
    except OSError:
        pass  # unreadable: a config-error
    if config is None:
        return out
    from .._deadline import DeadlineError, run_with_deadline  # noqa: PLC0415

    def ignore_file(spool: SpoolConfig) -> tuple[bytes, str | None]:
        real = os.path.realpath(spool.path_bytes)
        return real, _ignore_patterns(DEFAULT_FS, spool, real)[1]

    for spool in config.spools:
        if not spool.ignore_file:
            continue
        try:  # a hung spool: the structural scan reports it
            real, warning = run_with_deadline(
                functools.partial(ignore_file, spool), deadline, what=f"spool {spool.path}"
            )
        except DeadlineError:
            continue
        if warning is not None:
            found(_show(os.path.join(real, os.fsencode(spool.ignore_file))), warning)
    dirs = [(DEFAULT_CACHE_DIR, "cache directory")]
    if config.scan_cache is not None:
        dirs.append((config.scan_cache.dir, "scan cache directory"))
    if config.serve.socket is not None:
        dirs.append((os.path.dirname(config.serve.socket), "socket directory"))
    for directory, what in dirs:
        try:
            check_trusted(directory, what=what, directory=True)
        except UntrustedFileError as e:
            found(directory, str(e))
        except OSError:
            pass  # absent: made when first needed
    return out
