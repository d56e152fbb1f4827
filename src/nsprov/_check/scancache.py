"""Checks of the scan cache: a configured cache logins would not use, a spool too slow without one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .findings import Finding, _f

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._config import Config
    from .structure import SpoolScan


def check_scan_cache(config: Config, *, now_ns: int | None = None) -> list[Finding]:
    """``scan-cache-stale``: a configured scan cache that logins would not use."""
    cfg = config.scan_cache
    if cfg is None:
        return []
    from .._scancache import status  # noqa: PLC0415

    out = []
    for spool in config.spools:
        s = status(cfg, spool, now_ns=now_ns)
        if not s.fresh:
            out.append(
                _f(
                    "warning",
                    "scan-cache-stale",
                    spool.path,
                    f"the scan cache {s.file} is {s.problem}: every login scans the whole spool",
                    "Run 'nsprov cache update' from a timer more often than max_age "
                    f"({cfg.max_age:g}s), as the user post-login runs as, or run 'nsprov serve' "
                    "with [scan_cache] refresh > 0.",
                )
            )
    return out


def check_scan_slow(config: Config, scans: Sequence[SpoolScan]) -> list[Finding]:
    """``scan-slow``: without a scan cache, a spool whose scan uses over half the deadline.

    Every login scans every spool when no ``[scan_cache]`` is configured; a
    scan that already takes half of ``[postlogin] deadline`` here leaves
    parallel logins (and the other actions) too little: they are cut and go
    on without namespaces.
    """
    if config.scan_cache is not None:
        return []
    limit = config.deadline / 2
    return [
        _f(
            "warning",
            "scan-slow",
            s.spool.path,
            f"scanning the spool ({len(s.names)} entries) took {s.seconds:.2f}s, more than half "
            f"of the post-login deadline ({config.deadline:g}s): logins in parallel miss it "
            "and go on without namespaces",
            "Configure [scan_cache] and refresh it with 'nsprov cache update' from a timer "
            "(or 'nsprov serve' with refresh > 0).",
        )
        for s in scans
        if s.error is None and s.seconds is not None and s.seconds > limit
    ]
