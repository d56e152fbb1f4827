"""What each check saw of a spool (its file system, inode, entry count), kept for the next one.

``--clean-stale`` trusts a spool's listing only when it still looks like what the
last check (or the scan cache) saw: see :func:`changed_spools`."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import attrs

from .._scan import DEFAULT_FS, Fs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .._config import Config
    from .structure import SpoolScan


@attrs.frozen
class SpoolMark:
    """What a check saw of a spool directory: its filesystem, inode and entry count."""

    dev: int
    ino: int
    count: int


def spool_marks(scans: Sequence[SpoolScan], *, fs: Fs = DEFAULT_FS) -> dict[str, SpoolMark]:
    """The :class:`SpoolMark` of every spool that could be listed, by configured path."""
    out = {}
    for scan in scans:
        if scan.real is None or scan.error is not None:
            continue
        try:
            s = fs.lstat(scan.real)
        except OSError:
            continue
        out[scan.spool.path] = SpoolMark(s.st_dev, s.st_ino, len(scan.names))
    return out


def changed_spools(
    now: Mapping[str, SpoolMark], before: Mapping[str, SpoolMark], *, max_fraction: float
) -> dict[str, str]:
    """Spools whose listing cannot tell a removed mailbox from an outage: path -> why.

    One on another filesystem (``st_dev``) than at the last check (an unmounted
    mount point, or another file system mounted over it), and one that lost more
    than *max_fraction* of the entries it had then.  An empty spool is left to
    :func:`find_stale`, which suspects it without any earlier mark.
    """
    out = {}
    for path, mark in sorted(now.items()):
        last = before.get(path)
        if last is None or mark.count == 0:
            continue
        if mark.dev != last.dev:
            out[path] = (
                f"is on another file system (device {mark.dev}) than at the last check "
                f"(device {last.dev}): unmounted, or another file system mounted over it?"
            )
        elif last.count - mark.count > max_fraction * last.count:
            out[path] = (
                f"has {mark.count} entries, {last.count} at the last check: more than "
                f"--max-remove-fraction {max_fraction:g} of them are gone"
            )
    return out


_STATE_VERSION = 1
#: Where ``nsprov check`` keeps the :class:`SpoolMark` of each spool between runs (--state).
DEFAULT_STATE_FILE = "/var/cache/nsprov/check-state.json"
#: A mark no check has refreshed for this long is dropped (its spool left the configuration).
STATE_KEEP_SECONDS = 90 * 86400
_STATE_LIMIT = 1 << 22


def _load_state(path: str) -> dict[str, Any]:
    """The spools of the state file at *path*, raw; empty when absent, untrusted or corrupt."""
    import json  # noqa: PLC0415

    from .._trust import read_trusted  # noqa: PLC0415

    try:
        data = json.loads(read_trusted(path, what="check state file", limit=_STATE_LIMIT))
    except (OSError, ValueError):
        return {}
    spools = (
        data.get("spools") if isinstance(data, dict) and data.get("v") == _STATE_VERSION else None
    )
    return spools if isinstance(spools, dict) else {}


def load_marks(path: str | None = None) -> dict[str, SpoolMark]:
    """The marks a previous check stored at *path*; empty when absent, untrusted or corrupt.

    *path* defaults to :data:`DEFAULT_STATE_FILE`.

    The file is used only under the trust rule (:mod:`nsprov._trust`): a regular
    file, owned like every directory above it by root (or this user) and
    writable by nobody else.  A malformed entry is skipped.
    """
    out = {}
    for p, m in _load_state(DEFAULT_STATE_FILE if path is None else path).items():
        try:
            out[str(p)] = SpoolMark(int(m["dev"]), int(m["ino"]), int(m["count"]))
        except (ValueError, TypeError, KeyError):
            continue
    return out


def store_marks(
    path: str | None, marks: Mapping[str, SpoolMark], *, now: float | None = None
) -> None:
    """Merge *marks* into the state file at *path* (mode 0600, under the trust rule).

    *path* None is :data:`DEFAULT_STATE_FILE`.

    The directory is made (mode 0700) when missing.  Marks of other spools are
    kept for :data:`STATE_KEEP_SECONDS` after they were last refreshed.  Errors are
    ignored: without a state file only an empty spool is suspected.
    """
    import json  # noqa: PLC0415

    from .._fs import write_private  # noqa: PLC0415
    from .._trust import open_trusted  # noqa: PLC0415

    path = DEFAULT_STATE_FILE if path is None else path
    stamp = int(time.time() if now is None else now)
    kept = {
        p: m
        for p, m in _load_state(path).items()
        if isinstance(m, dict)
        and isinstance(m.get("seen"), int)
        and stamp - m["seen"] < STATE_KEEP_SECONDS
    }
    merged = {**kept, **{p: {**attrs.asdict(m), "seen": stamp} for p, m in marks.items()}}
    blob = json.dumps({"v": _STATE_VERSION, "spools": dict(sorted(merged.items()))}).encode()
    directory, name = os.path.split(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, _ = open_trusted(directory, what="check state directory", directory=True)
    except OSError:
        return
    try:
        write_private(name, blob, dir_fd=fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def cache_marks(config: Config) -> dict[str, SpoolMark]:
    """Marks from the ``[scan_cache]`` indexes: their spool's device, inode and entry count."""
    if config.scan_cache is None:
        return {}
    from .._scancache import Index, cache_dir_fd, cache_files  # noqa: PLC0415

    try:
        fd = cache_dir_fd(config.scan_cache.dir)
    except OSError:
        return {}
    out = {}
    try:
        for spool in config.spools:
            index = Index.load(cache_files(config.scan_cache.dir, spool.path_bytes)[0], fd)
            if index is not None and index.dir_sig is not None and index.count:
                out[spool.path] = SpoolMark(index.dir_sig[0], index.dir_sig[1], index.count)
    finally:
        os.close(fd)
    return out
