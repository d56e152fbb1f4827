"""The spools' structure, access ignored: what is servable at all and what is skipped, and why."""

from __future__ import annotations

import errno
import functools
import os
import time
from typing import TYPE_CHECKING

import attrs

from .._deadline import DEFAULT_DEADLINE
from .._identity import MailUser
from .._perms import Identity
from .._scan import DEFAULT_FS, Fs, Served, Skipped, scan_spool
from ..exceptions import NsprovError
from .findings import Finding, Severity, _f, _n, _show, _some

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._config import Config, SpoolConfig


#: An identity no file belongs to, for checks "for everybody else".
_OTHER = Identity(uid=0xFFFFFFFE, gid=0xFFFFFFFE)
_CHECK_USER = MailUser(user="nsprov-check", home="/nonexistent/nsprov-check", identity=_OTHER)


def _permissive(fs: Fs) -> Fs:
    """*fs* with every entry readable and searchable by all and no ACLs: a scan ignores access."""

    def lstat(path: bytes) -> os.stat_result:
        s = fs.lstat(path)
        return os.stat_result(
            (
                s.st_mode | 0o555,
                s.st_ino,
                s.st_dev,
                s.st_nlink,
                s.st_uid,
                s.st_gid,
                s.st_size,
                int(s.st_atime),
                int(s.st_mtime),
                int(s.st_ctime),
            )
        )

    def getxattr(_path: bytes, _name: str, **_options: object) -> bytes:
        raise OSError(errno.ENODATA, "ACLs are ignored by the structural scan")

    # No descriptor re-check either: it would judge access, which this scan ignores.
    return attrs.evolve(fs, lstat=lstat, getxattr=getxattr, anchored=None)


#: A spool's structural scan, and the prefixes and names taken so far.
_Scanned = tuple["SpoolScan", set[str], set[str]]


@attrs.frozen
class SpoolScan:
    """A spool scanned with access ignored: what is servable at all, and what is skipped why."""

    spool: SpoolConfig
    number: int
    real: bytes | None = None
    names: tuple[bytes, ...] = ()
    served: tuple[Served, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    error: str | None = None
    seconds: float | None = None  # how long scan_spool took on it


def _structure_of(
    spool: SpoolConfig,
    number: int,
    fs: Fs,
    permissive: Fs,
    taken_prefixes: set[str],
    taken_names: set[str],
    clock: Callable[[], float],
) -> _Scanned:
    """One spool's structural scan (see :func:`scan_structure`), and what it took."""
    try:
        real = fs.realpath(spool.path_bytes)
        names = tuple(sorted(fs.listdir(real)))
    except OSError as e:
        return SpoolScan(spool, number, error=e.strerror or str(e)), taken_prefixes, taken_names
    served: list[Served] = []
    skipped: list[Skipped] = []
    started = clock()
    try:
        scan_spool(
            spool,
            _CHECK_USER,
            fs=permissive,
            taken_prefixes=taken_prefixes,
            taken_names=taken_names,
            served=served,
            skipped=skipped,
        )
    except (NsprovError, OSError) as e:
        return SpoolScan(spool, number, real, names, error=str(e)), taken_prefixes, taken_names
    seconds = clock() - started
    scan = SpoolScan(spool, number, real, names, tuple(served), tuple(skipped), seconds=seconds)
    return scan, taken_prefixes, taken_names


def scan_structure(
    config: Config,
    *,
    fs: Fs = DEFAULT_FS,
    deadline: float = DEFAULT_DEADLINE,
    clock: Callable[[], float] = time.monotonic,
) -> list[SpoolScan]:
    """Scan every spool as if every user could read everything (names, shapes, collisions).

    Each spool gets *deadline* seconds (a hung filesystem): past it, the spool
    is reported unscannable and the later checks leave it out.  Each scan is
    timed with *clock* (:attr:`SpoolScan.seconds`, see ``scan-slow``).
    """
    from .._deadline import DeadlineError, run_with_deadline  # noqa: PLC0415

    permissive = _permissive(fs)
    taken_prefixes = set(config.config_prefixes)
    taken_names = {n.lower() for n in config.reserved_names}
    out = []
    for number, spool in enumerate(config.spools, 1):
        one = functools.partial(
            _structure_of, spool, number, fs, permissive, taken_prefixes, taken_names, clock
        )
        try:
            # The scan runs in a child: what it took comes back for the next spool's collisions.
            scan, taken_prefixes, taken_names = run_with_deadline(
                one, deadline, what=f"the scan of spool {spool.path}"
            )
        except DeadlineError as e:
            out.append(SpoolScan(spool, number, error=str(e)))
            continue
        out.append(scan)
    return out


_SCANNER_NAME_DETAILS = ("not valid UTF-8", "contains the separator", "contains a control")

#: Per-entry skip reasons reported one finding per entry: (severity, fix).
_PER_ENTRY: dict[str, tuple[Severity, str]] = {
    "unservable-name": (
        "warning",
        (
            "Rename the directory: valid UTF-8 (convmv converts legacy encodings), without the "
            "separator and without control characters."
        ),
    ),
    "not-a-maildir": (
        "warning",
        (
            "Create cur, new and tmp in it (same owner, group and mode as the directory), or "
            "move it out of the spool."
        ),
    ),
    "unsupported-format": (
        "warning",
        (
            "Convert it to Maildir (doveadm sync -u USER maildir:/new/path), or move it out "
            "of the spool."
        ),
    ),
    "name-collision": ("warning", "Rename one of the two entries."),
    "duplicate-prefix": (
        "warning",
        (
            "Rename the entry, or give the spools different prefix templates; a prefix listed "
            "in [dovecot] config_prefixes belongs to a namespace in dovecot.conf."
        ),
    ),
}
#: Skip reasons reported as one finding per spool: (severity, what, fix).
_GROUPED: dict[str, tuple[Severity, str, str]] = {
    "dot-entry": (
        "info",
        "entries whose names start with '.' are never served",
        "Nothing to do unless one of them is a mailbox to serve: rename it without the '.'.",
    ),
    "excluded": (
        "info",
        "entries excluded by exclude/include patterns or the ignore file are not served",
        "Nothing to do if intended; otherwise change exclude, include or the ignore file.",
    ),
    "not-a-directory": (
        "info",
        "files that are not mailboxes are never served",
        "Move files that are not mailboxes out of the spool.",
    ),
}


def structure_findings(scans: Sequence[SpoolScan], *, templates_ok: set[int]) -> list[Finding]:
    """Findings from the structural scans: missing spools, skipped entries, case collisions."""
    out: list[Finding] = []
    for scan in scans:
        spool = scan.spool
        if scan.error is not None:
            out.append(
                _f(
                    "error",
                    "spool-missing",
                    spool.path,
                    f"spool {spool.path} cannot be listed: {scan.error}; nsprov serves none "
                    "of it (post-login logs this on every login)",
                    "Create the directory (or fix the path in the configuration) and make it "
                    "readable by root.",
                )
            )
            continue
        grouped: dict[str, list[str]] = {}
        for k in scan.skipped:
            path = _show(spool.path_bytes + b"/" + k.raw)
            if (
                k.reason == "dot-entry"
                and spool.ignore_file
                and k.raw == spool.ignore_file.encode()
            ):
                continue
            if k.reason in _GROUPED:
                grouped.setdefault(k.reason, []).append(k.entry)
            elif k.reason == "symlink":
                fix = (
                    'Replace the link by the directory itself, or set symlinks = "inside" '
                    "if its target is inside the spool."
                    if spool.symlinks == "skip"
                    else "Point the link at a mailbox inside the spool, or move the mailbox "
                    "into the spool."
                )
                out.append(_f("warning", "symlink", path, f"{path}: {k.detail}", fix))
            elif k.reason in _PER_ENTRY:
                if (
                    k.reason == "unservable-name"
                    and scan.number not in templates_ok
                    and not k.detail.startswith(_SCANNER_NAME_DETAILS)
                ):
                    continue  # reported once as template-invalid
                severity, fix = _PER_ENTRY[k.reason]
                out.append(_f(severity, k.reason, path, f"{path}: {k.detail}", fix))
        for reason, entries in grouped.items():
            severity, what, fix = _GROUPED[reason]
            out.append(
                _f(
                    severity,
                    reason,
                    spool.path,
                    f"{what}: {_n(len(entries), 'entry', 'entries')} of {spool.path}, {_some(entries)}",
                    fix,
                )
            )
    out += case_collisions(scans)
    return out


def case_collisions(scans: Sequence[SpoolScan]) -> list[Finding]:
    """Served prefixes that differ only in case, or whose first level is INBOX in another case."""
    out: list[Finding] = []
    seen: dict[str, Served] = {}
    for scan in scans:
        for s in scan.served:
            prefix = s.namespace.prefix
            path = _show(s.path)
            if (other := seen.get(prefix.casefold())) is not None:
                out.append(
                    _f(
                        "warning",
                        "case-collision",
                        path,
                        f"prefixes {other.namespace.prefix!r} ({_show(other.path)}) and "
                        f"{prefix!r} ({path}) differ only in case: Dovecot serves both, but "
                        "clients that keep folders on case-insensitive file systems (Outlook, "
                        "Apple Mail, Thunderbird on Windows or macOS) mix them up",
                        "Rename one of the two directories, or exclude one of them.",
                    )
                )
            seen.setdefault(prefix.casefold(), s)
            top = prefix.split(s.namespace.separator, 1)[0]
            if top.casefold() == "inbox":
                out.append(
                    _f(
                        "warning",
                        "case-collision",
                        path,
                        f"prefix {prefix!r} starts with {top!r}: IMAP treats INBOX in any case "
                        "as the user's own INBOX, so clients show these mailboxes inside it",
                        'Use a prefix template that starts with another word, e.g. "Shared/{name}/".',
                    )
                )
    return out
