"""``nsprov cache``: build or inspect the persistent scan cache of ``[scan_cache]``, or the login profile."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .._defaults import DEFAULT_CONFIG_PATH
from ..exceptions import NsprovError
from .errors import print_error, report

if TYPE_CHECKING:
    from collections.abc import Sequence


def cache_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nsprov cache``."""
    parser = argparse.ArgumentParser(
        prog="nsprov cache",
        description="Build or inspect the persistent scan cache of [scan_cache] (large spools), "
        "or compile the login profile.",
    )
    parser.add_argument(
        "action",
        choices=("update", "status", "profile"),
        help="update: rebuild every spool's cache (run it from a timer, as the user "
        "post-login runs as); status: exit 1 unless every spool's cache is fresh; "
        "profile: compile the configuration's login profile now (as root, which post-login "
        "runs as), so that the first login after an edit takes the lean path too",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="TOML config path")
    return parser


def main(argv: Sequence[str]) -> int:
    """``nsprov cache ARGS``: the exit status (0 ok, 1 error or a stale cache, 2 usage)."""
    from .._config import load_config  # noqa: PLC0415
    from .._scan import DEFAULT_FS  # noqa: PLC0415
    from .._scancache import status, update  # noqa: PLC0415

    args = cache_parser().parse_args(argv)
    if args.action == "profile":
        return compile_now(args.config)
    try:
        config = load_config(args.config)
    except NsprovError as e:
        return report(e)
    cfg = config.scan_cache
    if cfg is None:
        print_error(f"{args.config} has no [scan_cache] table")
        return 1
    rc = 0
    for spool in config.spools:
        if args.action == "update":
            try:
                u = update(cfg, spool, DEFAULT_FS)
            except OSError as e:
                print_error(f"spool {spool.path}: {e}")
                rc = 1
                continue
            print(
                f"{spool.path}: {u.entries} entries, {u.reused} unchanged since the last update, "
                f"{u.seconds:.3f}s" + (" (spool changing: logins will list it)" if u.racy else "")
            )
        else:
            s = status(cfg, spool)
            age = "-" if s.age is None else f"{s.age:.0f}s"
            state = "fresh" if s.fresh else f"NOT USED: {s.problem}"
            print(f"{spool.path}: age {age}, {s.entries} entries indexed, {state} ({s.file})")
            rc |= not s.fresh
    return rc


def compile_now(config_path: str) -> int:
    """``nsprov cache profile``: write the login profile of *config_path*; 0 if written."""
    from .. import _profile  # noqa: PLC0415
    from .._config import load_config  # noqa: PLC0415
    from .._profile_compile import why_full  # noqa: PLC0415
    from .._worker import store_profile  # noqa: PLC0415

    directory = _profile.default_dir()
    if directory is None:
        print_error("login profiles are kept for root only (post-login runs as root)")
        return 1
    key = _profile.config_key(config_path)  # before reading: an edit meanwhile leaves it stale
    if key is None:
        print_error(f"{config_path}: not trusted (see nsprov check); logins take the full path")
        return 1
    try:
        config = load_config(config_path)
    except NsprovError as e:
        return report(e)
    if (why := why_full(config)) is not None:
        print_error(f"{config_path}: no login profile ({why}): logins take the full path")
        return 1
    if not store_profile(config_path, config, key, directory):
        print_error(
            f"{config_path}: no login profile written: a spool's ignore file could not be "
            "read now (see nsprov check)"
        )
        return 1
    print(f"{config_path}: login profile written ({directory}/{_profile.file_name(config_path)})")
    return 0
