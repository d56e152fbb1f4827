"""``nsprov check``: the doctor, run before enabling nsprov and after changing a spool.

Every check is a function of its inputs: the configuration, the output of
``doveconf -n`` (:class:`DovecotConf`), a :class:`~nsprov._scan.Fs`, resolved
users and NSS answers.  Only :func:`main` (through :func:`gather`) touches the
operating system: it runs ``doveconf`` and ``dovecot --version``, reads NSS,
and, with ``--clean-stale``, forks a process that becomes the user before it
removes anything.

Each :class:`Finding` has a severity (``error``, ``warning``, ``info``), a
stable kebab-case code (the keys of :data:`CODES`, each documented in
``docs/check.md``), a message, a concrete fix and optionally a subject (a path,
a user, a service).  The exit status is 1 when any finding is an error, else 0;
usage errors exit 2.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat as st
import sys
import time
from typing import TYPE_CHECKING, Any, Literal

import attrs

from .._deadline import DEFAULT_DEADLINE
from .._defaults import DEFAULT_CONFIG_PATH
from .._env import EnvLimits
from .._identity import MailUser
from .._model import check_namespaces
from .._names import HASH_LENGTH, NAMING_SCHEME, SLUG_LENGTH, entry_id
from .._perms import FileFacts, Identity
from .._scan import DEFAULT_FS, Fs, Served, Skipped, _Builder, _components, scan_spool
from ..exceptions import ConfigError, NsprovError, UntrustedFileError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import TextIO

    from .._config import Config, SpoolConfig
    from .._serve import ReplyBudget

#: The namespace naming scheme of this nsprov: the BLAKE2b personalisation in
#: :func:`nsprov._names.entry_hash`.  A different scheme names every directory differently.

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

#: Every finding code, with a one-line summary.  docs/check.md documents each one.
CODES: dict[str, str] = {
    # the configuration
    "config-error": "the configuration cannot be read, or has unknown keys, wrong types or bad values",
    "config-does-nothing": "the configuration has no [[spool]] and no action",
    "untrusted-file": "a file root uses for others fails the trust rule (config, ignore file, cache or socket directory)",
    "template-invalid": "a template renders output Dovecot refuses, or a path inside a spool",
    "template-not-per-user": "a per-user path template uses neither {home} nor {user}",
    # the spools
    "spool-missing": "a spool cannot be listed (missing, not a directory, unreadable)",
    "spool-not-traversable": "the spool or a directory above it cannot be searched",
    "spool-writable": "users other than the owner may create entries in the spool",
    "dot-entry": "entries whose names start with '.' are never served",
    "unservable-name": "a name Dovecot cannot serve (not UTF-8, separator, control character)",
    "excluded": "entries excluded by patterns or the ignore file",
    "symlink": "a symbolic link in the spool is not served",
    "not-a-directory": "a file that is not a mailbox",
    "not-a-maildir": "a directory without cur and new",
    "unsupported-format": "an mbox file or an sdbox/mdbox directory",
    "name-collision": "two entries hash to one namespace name",
    "duplicate-prefix": "an entry's prefix is taken by another entry or a configured namespace",
    "case-collision": "prefixes that differ only in case",
    "no-access": "servable entries that none of the checked users may read",
    "dot-file-in-mailbox": "dot files in a mailbox root, listed as folders by Dovecot",
    "chgrp-trap": "group bits differ from other bits while non-members read the mailbox",
    "mailbox-writable": "mailboxes that users other than the owner may write",
    "control-in-spool": 'control = "": Dovecot keeps its uidlist files in the shared tree',
    "scan-cache-stale": "[scan_cache] is set, but a spool's cache is missing, expired or unusable",
    "scan-slow": "without [scan_cache], a spool's scan takes more than half the post-login deadline",
    # Dovecot
    "doveconf-unavailable": "doveconf is not installed: the Dovecot checks were skipped",
    "doveconf-failed": "doveconf failed: Dovecot's configuration is broken",
    "dovecot-version-unknown": "the installed Dovecot version could not be determined",
    "dovecot-version-unsupported": "the installed Dovecot is neither 2.3 nor 2.4",
    "dialect-mismatch": "[dovecot] version does not match the installed Dovecot",
    "separator-mismatch": "a listed Dovecot namespace uses another separator than nsprov",
    "namespace-collision": "a Dovecot namespace has a name or prefix nsprov emits",
    "namespace-nested": "a Dovecot namespace overlaps nsprov's prefixes or spools",
    "private-overlap": "a spool's entries can take over folders of a private Dovecot namespace",
    "private-namespace-missing": "[dovecot] private_namespace names no Dovecot namespace",
    "mail-driver-mismatch": "[dovecot] global_mail_driver differs from dovecot.conf's mail_driver",
    "identity-mismatch": "[identity] differs from Dovecot's group range or mail_access_groups",
    "wiring-missing": "a protocol does not run nsprov post-login",
    "wiring-no-protocol": "the post-login line has no --protocol",
    "wiring-protocol-mismatch": "--protocol names another protocol than the service's",
    "wiring-relative-path": "a program on the post-login line is not an absolute path",
    "wiring-program-missing": "the nsprov program on the post-login line does not exist",
    "wiring-bad-arguments": "nsprov's arguments on the post-login line are malformed",
    "wiring-config-path": "the post-login line reads another configuration file",
    "wiring-service-user": "the post-login service does not run as root",
    "wiring-not-isolated": "a post-login program starts Python without -I",
    "acl-no-grants": "the ACL plugin is on, but no ACL grants lookup on public mailboxes",
    "acl-plugin-setting": "[dovecot] acl_plugin does not match Dovecot's mail_plugins",
    # users
    "no-users": "no user to check",
    "users-capped": "only the first --max-users users were checked",
    "user-unknown": "a --user has no passwd entry",
    "user-error": "a user's namespaces cannot be computed",
    "virtual-users": "several users share one uid",
    "namespace-max": "a user may read more mailboxes than namespace.max",
    "env-limit": "a user's namespaces do not all fit the kernel's environment limits",
    "serve-budget": "a user's namespaces do not all fit a serve-mode userdb reply",
    # per-user directories
    "stale-dir": "a per-user directory of a renamed or removed mailbox",
    "stale-other-scheme": "a per-user directory named by another nsprov naming scheme",
    "stale-unchecked": "a per-user directory parent that was not checked",
    "stale-suspect": "a spool is empty, moved or lost most entries: its stale directories were left",
    "stale-removed": "--clean-stale removed a stale directory",
    "stale-remove-failed": "--clean-stale could not remove a stale directory",
}


def _known_code(_inst: object, _attr: object, value: str) -> None:
    if value not in CODES:
        raise ValueError(f"unknown finding code {value!r}")


@attrs.frozen(kw_only=True)
class Finding:
    """One problem (or note) found, with what to do about it."""

    severity: Severity = attrs.field(validator=attrs.validators.in_(SEVERITIES))
    code: str = attrs.field(validator=_known_code)
    message: str
    fix: str
    subject: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """The finding as a JSON object."""
        return {
            "severity": self.severity,
            "code": self.code,
            "subject": self.subject,
            "message": self.message,
            "fix": self.fix,
        }


def _f(severity: Severity, code: str, subject: str | None, message: str, fix: str) -> Finding:
    return Finding(severity=severity, code=code, subject=subject, message=message, fix=fix)


def _show(path: str | bytes) -> str:
    """A path or name for humans and JSON: undecodable bytes as ``\\xNN``."""
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


def _some(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _rwx(bits: int) -> str:
    return "".join(c if bits & b else "-" for c, b in (("r", 4), ("w", 2), ("x", 1)))


# --- doveconf -----------------------------------------------------------------------------


@attrs.frozen
class ConfSection:
    """One section of ``doveconf -n`` output (the root has kind ``""``)."""

    kind: str
    name: str = ""
    settings: Mapping[str, str] = attrs.field(factory=dict)
    sections: tuple[ConfSection, ...] = ()

    def get(self, key: str, default: str = "") -> str:
        """The value of *key* in this section, or *default*."""
        return self.settings.get(key, default)

    def children(self, kind: str) -> list[ConfSection]:
        """The direct subsections of *kind*, in order."""
        return [s for s in self.sections if s.kind == kind]


class _Open:
    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.settings: dict[str, str] = {}
        self.sections: list[_Open] = []

    def freeze(self) -> ConfSection:
        return ConfSection(
            self.kind, self.name, dict(self.settings), tuple(s.freeze() for s in self.sections)
        )


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _yes(value: str) -> bool:
    return value.strip().lower() in {"yes", "y", "1"}


def _int(value: str, default: int) -> int:
    try:
        return int(value)
    except ValueError:
        return default


_HEADER_RE = re.compile(r"#\s*(\d+\.\d+[0-9.]*)")
_VERSION_RE = re.compile(r"\s*(\d+)\.(\d+)")


def major_minor(text: str) -> str | None:
    """``"2.3"`` from ``"2.3.19.1 (9b53102964)"``; None when *text* names no version."""
    m = _VERSION_RE.match(text)
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else None


@attrs.frozen
class DovecotConf:
    """Parsed ``doveconf -n`` output: settings, sections and the version in its header.

    Settings ``doveconf -n`` leaves out have Dovecot's defaults (``first_valid_uid``
    500, ``maildir_stat_dirs`` no …).
    """

    root: ConfSection
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> DovecotConf:
        """Parse the text ``doveconf -n`` prints (2.3 and 2.4 alike)."""
        first = text.lstrip().split("\n", 1)[0]
        m = _HEADER_RE.match(first)
        stack = [_Open("", "")]
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line == "}":
                if len(stack) > 1:
                    stack.pop()
                continue
            if line.endswith("{"):
                kind, _, name = line[:-1].strip().partition(" ")
                section = _Open(kind, name.strip())
                stack[-1].sections.append(section)
                stack.append(section)
                continue
            key, eq, value = line.partition("=")
            if eq:
                stack[-1].settings[key.strip()] = _unquote(value.strip())
        return cls(stack[0].freeze(), m.group(1) if m else None)

    def setting(self, key: str, default: str = "") -> str:
        """A top-level setting."""
        return self.root.get(key, default)

    @property
    def protocols(self) -> tuple[str, ...]:
        """The enabled protocols (imap and pop3 when ``protocols`` is not set)."""
        return tuple(self.setting("protocols").split()) or ("imap", "pop3")

    @property
    def first_valid_uid(self) -> int:
        """``first_valid_uid`` (default 500)."""
        return _int(self.setting("first_valid_uid", "500"), 500)

    @property
    def last_valid_uid(self) -> int:
        """``last_valid_uid`` (default 0: no upper limit)."""
        return _int(self.setting("last_valid_uid", "0"), 0)

    @property
    def first_valid_gid(self) -> int:
        """``first_valid_gid`` (default 1)."""
        return _int(self.setting("first_valid_gid", "1"), 1)

    @property
    def last_valid_gid(self) -> int:
        """``last_valid_gid`` (default 0: no upper limit)."""
        return _int(self.setting("last_valid_gid", "0"), 0)

    @property
    def mail_access_groups(self) -> tuple[str, ...]:
        """``mail_access_groups`` (default none), split as Dovecot does (commas, spaces)."""
        return tuple(g for g in self.setting("mail_access_groups").replace(",", " ").split())

    @property
    def maildir_stat_dirs(self) -> bool:
        """``maildir_stat_dirs`` (default no)."""
        return _yes(self.setting("maildir_stat_dirs", "no"))

    @property
    def namespaces(self) -> list[ConfSection]:
        """The ``namespace`` sections."""
        return self.root.children("namespace")

    @property
    def services(self) -> dict[str, ConfSection]:
        """The ``service`` sections by name."""
        return {s.name: s for s in self.root.children("service")}

    @property
    def userdb_drivers(self) -> list[str]:
        """Each userdb's driver (2.3 ``driver = …``, 2.4 ``userdb <driver> {``)."""
        return [s.get("driver") or s.name for s in self.root.children("userdb")]

    def plugins(self, protocol: str) -> set[str]:
        """``mail_plugins`` for *protocol*: global ones plus its ``protocol`` section's."""
        sections = [self.root]
        sections += [s for s in self.root.children("protocol") if protocol in s.name.split()]
        out: set[str] = set()
        for section in sections:
            out.update(p for p in section.get("mail_plugins").split() if not p.startswith("$"))
            for boollist in section.children("mail_plugins"):  # 2.4: mail_plugins { acl = yes }
                out.update(k for k, v in boollist.settings.items() if _yes(v))
        return out

    @property
    def acl_global(self) -> str | None:
        """Where global ACLs come from, if configured (2.3 ``acl = vfile:PATH``, 2.4 ``acl_global_path``)."""
        if path := self.setting("acl_global_path"):
            return path
        for plugin in self.root.children("plugin"):
            _, _, rest = plugin.get("acl").partition(":")
            if rest.startswith("/"):
                return rest.split(":", 1)[0]
        return None


# --- the configuration --------------------------------------------------------------------

_PROBLEM_KEY_RE = re.compile(r"[A-Za-z_][\w.\[\]]*")


def _config_fix(subject: str, message: str) -> str:
    if message == "unknown key":
        return f"Remove {subject} or correct its spelling; every key is in docs/configuration.md."
    if message.startswith("expected"):
        return f"Give {subject} the type the configuration reference lists ({message})."
    if message == "required key missing":
        return f"Add {subject}."
    if message.startswith("cannot read"):
        return "Create the file, or name the right one with --config=PATH."
    if message.startswith("invalid TOML"):
        return "Fix the TOML syntax at the line and column named."
    return f"Change {subject}: {message}."


def config_findings(path: str, problems: Sequence[str]) -> list[Finding]:
    """One ``config-error`` per problem :func:`nsprov._config.load_config` reported."""
    out = []
    for problem in problems:
        rest = problem.removeprefix(f"{path}: ")
        key, sep, message = rest.partition(": ")
        if not sep or not _PROBLEM_KEY_RE.fullmatch(key):
            key, message = path, rest
        out.append(_f("error", "config-error", key, message, _config_fix(key, message)))
    return out


_SAMPLE_ENTRIES = (b"sales", b"Sales Team", b"a,b", b"pct%u", b"x")
_SAMPLE_USER = MailUser(user="sample", home="/home/sample", identity=Identity(uid=60000, gid=60000))
_PATH_KEYS = ("index", "control", "index_private", "inbox")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_templates(config: Config) -> list[Finding]:
    """Templates that render output Dovecot refuses, shared paths, paths inside a spool."""
    out: list[Finding] = []
    dialect = config.output_dialect
    for i, spool in enumerate(config.spools, 1):
        where = f"spool[{i}]"
        try:
            builder = _Builder(spool, _SAMPLE_USER)
            namespaces = []
            for raw in _SAMPLE_ENTRIES:
                name = raw.decode()
                ns = builder.build(raw, name, f"{spool.path}/{name}")
                dialect.settings(ns)
                namespaces.append(ns)
            check_namespaces(namespaces, reserved_names=config.reserved_names)
        except NsprovError as e:
            out.append(
                _f(
                    "error",
                    "template-invalid",
                    where,
                    f"spool {spool.path}: its templates give namespaces Dovecot refuses, so "
                    f"no entry is served: {e}",
                    'Fix the prefix (or name) template: with list = "yes" or "children" the '
                    "prefix must end with the separator and must not start with it, e.g. "
                    'prefix = "Shared{sep}{name}{sep}".',
                )
            )
            continue
        for key in _PATH_KEYS:
            template = getattr(spool, key)
            if template is not None and not template.fields & {"home", "user"}:
                out.append(
                    _f(
                        "error",
                        "template-not-per-user",
                        f"{where}.{key}",
                        f"{key} = {template.text!r} is the same directory for every user: "
                        "Dovecot's index and state files of one user would be read and written "
                        "by all, and fail on permissions",
                        f'Use {{home}} or {{user}}, e.g. {key} = "{{home}}/.nsprov/{{ns}}".',
                    )
                )
        inside = next(
            (
                (key, path, other.path)
                for ns in namespaces
                for key, path in ns.location.paths().items()
                for other in config.spools
                if _inside(path, other.path)
            ),
            None,
        )
        if inside is not None:
            key, path, other_path = inside
            out.append(
                _f(
                    "error",
                    "template-invalid",
                    where,
                    f"{key}={path} is inside the spool {other_path}: per-user directories "
                    "would appear there as entries (and be served)",
                    "Keep index, control, index_private and inbox outside every spool, e.g. "
                    '"{home}/.nsprov/{ns}".',
                )
            )
    return out


# --- the spools: structure ----------------------------------------------------------------

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


# --- the spools: permissions --------------------------------------------------------------


def _writers(
    facts: FileFacts, gid_name: Callable[[int], str], uid_name: Callable[[int], str]
) -> list[str]:
    """Who besides the owner may write: the owning group, named ACL entries, everybody."""
    acl = facts.acl
    out = []
    if acl is None or acl.mask is None:
        group = acl.group_obj if acl is not None else (facts.mode >> 3) & 7
        if group & 2:
            out.append(f"group {gid_name(facts.gid)}")
    else:
        mask = acl.mask
        if acl.group_obj & mask & 2:
            out.append(f"group {gid_name(facts.gid)}")
        out += [f"ACL user:{uid_name(u)}" for u, perm in acl.users if perm & mask & 2]
        out += [f"ACL group:{gid_name(g)}" for g, perm in acl.groups if perm & mask & 2]
    if facts.mode & 0o002:
        out.append("everybody (other)")
    return out


def _named_readers(
    facts: FileFacts, gid_name: Callable[[int], str], uid_name: Callable[[int], str]
) -> list[str]:
    acl = facts.acl
    if acl is None or not acl.mask:
        return []
    mask = acl.mask
    out = [f"ACL user:{uid_name(u)}" for u, perm in acl.users if perm & mask & 5 == 5]
    out += [f"ACL group:{gid_name(g)}" for g, perm in acl.groups if perm & mask & 5 == 5]
    return out


def acl_grants(text: str) -> bool:
    """Whether a ``dovecot-acl`` file grants lookup (``l``) to anybody a public namespace has.

    Public namespaces have no owner, so ``owner`` entries grant nothing; negative
    rights (``-l``) grant nothing either.
    """
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        ident, _, rest = line.partition(" ")
        rights = rest.strip().split(":", 1)[0].strip()
        if ident != "owner" and not rights.startswith("-") and "l" in rights:
            return True
    return False


def _user_names(users: Iterable[MailUser]) -> list[str]:
    return sorted(u.user for u in users)


def check_mailboxes(
    scans: Sequence[SpoolScan],
    *,
    fs: Fs = DEFAULT_FS,
    access: Mapping[tuple[str, bytes], Sequence[MailUser]] | None = None,
    stat_dirs: bool | None = None,
    acl_required: bool = False,
    uid_name: Callable[[int], str] = str,
    gid_name: Callable[[int], str] = str,
) -> list[Finding]:
    """Permission findings for every servable mailbox and spool root.

    *access* maps ``(spool, raw name)`` to the checked users who get that
    mailbox (None: no users were checked); *stat_dirs* is Dovecot's
    ``maildir_stat_dirs`` (None: unknown); with *acl_required* (the ACL plugin
    is on and no global ACLs are configured), mailboxes without a
    ``dovecot-acl`` that grants lookup are reported.
    """
    out: list[Finding] = []
    for scan in scans:
        if scan.real is None or scan.error is not None:
            continue
        spool = scan.spool
        try:
            _, facts = fs.facts(scan.real)
        except OSError:
            continue
        if writers := _writers(facts, gid_name, uid_name):
            out.append(
                _f(
                    "warning",
                    "spool-writable",
                    spool.path,
                    f"spool {spool.path} can be written by {', '.join(writers)}: they can create "
                    "mailboxes that other users are then offered, with modes they choose",
                    f"Let only the administrator create mailboxes: chmod go-w {spool.path} and "
                    "remove write ACL entries (setfacl -x …).",
                )
            )
        writable: list[str] = []
        missing_acl: list[str] = []
        for s in scan.served:
            path_b = os.fsencode(s.path)
            path = _show(s.path)
            try:
                stat, facts = fs.facts(path_b)
            except OSError:
                continue
            if who := _writers(facts, gid_name, uid_name):
                writable.append(f"{s.entry} ({', '.join(who)})")
            out += _chgrp_trap(s, path, stat, facts, access, uid_name, gid_name)
            if stat_dirs is not True:
                out += _dot_files(fs, path_b, path, known=stat_dirs is False)
            if acl_required:
                try:
                    text = fs.read_text(path_b + b"/dovecot-acl")
                except OSError:
                    text = None
                if text is None or not acl_grants(text):
                    missing_acl.append(s.entry)
        if writable:
            out.append(
                _f(
                    "warning",
                    "mailbox-writable",
                    spool.path,
                    f"{_n(len(writable), 'mailbox', 'mailboxes')} of {spool.path} can be written by users other "
                    f"than their owner: {_some(writable)}; those users can add folders and "
                    "files every reader sees",
                    "If readers are not meant to change shared mail, remove write access "
                    "(chmod go-w, setfacl -x); if they are, keep per-user index and control "
                    "directories (the defaults) so Dovecot's own files stay out of the spool.",
                )
            )
        if spool.control is None and scan.served:
            out.append(
                _f(
                    "error" if writable else "warning",
                    "control-in-spool",
                    spool.path,
                    f'spool {spool.path} has control = "": Dovecot keeps dovecot-uidlist and '
                    "dovecot-keywords in each mailbox, "
                    + (
                        "and writes them into the shared tree as whichever user logs in"
                        if writable
                        else "and cannot write them into these read-only mailboxes (errors, "
                        "mail that does not show)"
                    ),
                    'Remove control = "" so every user gets CONTROL={home}/.nsprov/{ns} '
                    "(the default).",
                )
            )
        if missing_acl:
            out.append(
                _f(
                    "warning",
                    "acl-no-grants",
                    spool.path,
                    f"Dovecot's ACL plugin is enabled and no global ACLs are configured, but "
                    f"{len(missing_acl)} of {len(scan.served)} mailboxes of {spool.path} have "
                    f"no dovecot-acl granting lookup: {_some(missing_acl)}; users get the "
                    "namespaces but see no mailbox in them",
                    "Put a dovecot-acl file in each mailbox directory, e.g. 'anyone lr' or "
                    "'group=sales lrwstipe' (public namespaces have no owner: 'owner' grants "
                    "nothing), or configure global ACLs; or disable the acl plugin if the file "
                    "system alone decides.",
                )
            )
    return out


def _chgrp_trap(
    s: Served,
    path: str,
    stat: os.stat_result,
    facts: FileFacts,
    access: Mapping[tuple[str, bytes], Sequence[MailUser]] | None,
    uid_name: Callable[[int], str],
    gid_name: Callable[[int], str],
) -> list[Finding]:
    group_bits = (stat.st_mode >> 3) & 7
    other_bits = stat.st_mode & 7
    if group_bits == other_bits:
        return []
    users = access.get((s.spool, s.raw), ()) if access is not None else ()
    trapped = _user_names(u for u in users if not u.identity.in_group(facts.gid))
    readers = [f"{'user' if len(trapped) == 1 else 'users'} {_some(trapped)}"] if trapped else []
    named = _named_readers(facts, gid_name, uid_name)
    readers += named
    if other_bits & 5 == 5 and not trapped:
        readers.append("everybody outside the group (other bits)")
    if not readers:
        return []
    group = gid_name(facts.gid)
    return [
        _f(
            "warning",
            "chgrp-trap",
            path,
            f"{path}: group bits {_rwx(group_bits)} differ from other bits {_rwx(other_bits)} "
            f"(mode {stat.st_mode & 0o7777:04o}, group {group}), and {'; '.join(readers)} read "
            "it without being in that group: Dovecot gives new index files the mailbox's group "
            "and logs 'fchown(…) failed: Operation not permitted … see wiki ChgrpNoPerm'; "
            "nsprov pre-creates each user's index directory, so SELECT works, but the errors "
            "stay",
            (
                "Give the readers a group they all share and make it the directory's group "
                f"(chgrp GROUP {path}), instead of the ACL entries: with ACL entries the group "
                "bits are the ACL mask, and lowering them to the other bits would revoke the "
                "entries."
                if named and other_bits & 5 != 5
                else "Make the group bits equal the other bits (chmod "
                f"g={_rwx(other_bits).replace('-', '')} {path}), or make every reader a member "
                "of the directory's group."
            ),
        )
    ]


def _dot_files(fs: Fs, path_b: bytes, path: str, *, known: bool) -> list[Finding]:
    try:
        names = sorted(fs.listdir(path_b))
    except OSError:
        return []
    dots = []
    for name in names:
        if not name.startswith(b".") or name in {b".", b".."}:
            continue
        try:
            if st.S_ISDIR(fs.lstat(path_b + b"/" + name).st_mode):
                continue
        except OSError:
            continue
        dots.append(_show(name))
    if not dots:
        return []
    condition = "with maildir_stat_dirs = no" if known else "unless maildir_stat_dirs = yes"
    return [
        _f(
            "warning",
            "dot-file-in-mailbox",
            path,
            f"{path} has dot files ({_some(dots)}): {condition}, Dovecot lists each as a folder "
            "that cannot be opened",
            "Remove or move the files, or set maildir_stat_dirs = yes in dovecot.conf (LIST then "
            "shows only real directories).",
        )
    ]


def check_traversal(
    scans: Sequence[SpoolScan], *, fs: Fs = DEFAULT_FS, users: Sequence[MailUser] = ()
) -> list[Finding]:
    """Spools that no checked user (or, without users, nobody outside the groups) can reach."""
    from .._scan import _searchable  # noqa: PLC0415

    out: list[Finding] = []
    for scan in scans:
        if scan.real is None or scan.error is not None:
            continue
        dirs = _components(scan.real)
        try:
            if users:
                why = [_searchable(fs, dirs, u.identity) for u in users]
                if all(w is not None for w in why):
                    out.append(
                        _f(
                            "error",
                            "spool-not-traversable",
                            scan.spool.path,
                            f"none of the {len(users)} checked users can reach spool "
                            f"{scan.spool.path}: {why[0]}",
                            "Grant search (x) on the directory named to the readers: chmod o+x "
                            "DIR, or setfacl -m g:GROUP:x DIR.",
                        )
                    )
            elif (reason := _searchable(fs, dirs, _OTHER)) is not None:
                out.append(
                    _f(
                        "warning",
                        "spool-not-traversable",
                        scan.spool.path,
                        f"users outside the owning groups cannot reach spool {scan.spool.path}: "
                        f"{reason}",
                        "Nothing to do if only members of those groups are meant to read; "
                        "otherwise chmod o+x DIR on the directory named.",
                    )
                )
        except OSError as e:
            out.append(
                _f(
                    "error",
                    "spool-missing",
                    scan.spool.path,
                    f"spool {scan.spool.path}: {e.strerror or e}",
                    "Make the spool and the directories above it exist and be readable.",
                )
            )
    return out


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
    from .._scan import DEFAULT_FS, _ignore_patterns  # noqa: PLC0415
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


def no_access_findings(
    scans: Sequence[SpoolScan],
    access: Mapping[tuple[str, bytes], Sequence[MailUser]],
    checked: int,
    *,
    unreachable: Iterable[str] = (),
) -> list[Finding]:
    """Servable entries none of the *checked* users gets (spools in *unreachable* aside)."""
    out = []
    skip = set(unreachable)
    for scan in scans:
        if scan.spool.path in skip:
            continue
        nobody = [s.entry for s in scan.served if not access.get((s.spool, s.raw))]
        if nobody:
            out.append(
                _f(
                    "info",
                    "no-access",
                    scan.spool.path,
                    f"{_n(len(nobody), 'mailbox', 'mailboxes')} of {scan.spool.path} {'is' if len(nobody) == 1 else 'are'} served to none of the "
                    f"{checked} checked users: {_some(nobody)}",
                    "Nothing to do if intended (nsprov serves what a user's mail process may "
                    "read); otherwise grant read and search on the directory, its cur and new "
                    "(chmod, chgrp, or setfacl -m u:USER:rx).",
                )
            )
    return out


# --- Dovecot ------------------------------------------------------------------------------


def check_version(config: Config, version: str | None, source: str | None) -> list[Finding]:
    """The installed Dovecot version against ``[dovecot] version``."""
    if version is None:
        return [
            _f(
                "info",
                "dovecot-version-unknown",
                None,
                "the installed Dovecot version could not be determined (no dovecot binary, no "
                "doveconf): the dialect was not checked",
                "Pass --dovecot=PATH or --dovecot-version=X.Y.",
            )
        ]
    if version not in {"2.3", "2.4"}:
        return [
            _f(
                "warning",
                "dovecot-version-unsupported",
                None,
                f"Dovecot {version} is installed ({source}); nsprov speaks the 2.3 and 2.4 "
                "userdb dialects only",
                "Run Dovecot 2.3 or 2.4.",
            )
        ]
    if version != config.dialect:
        return [
            _f(
                "error",
                "dialect-mismatch",
                "[dovecot] version",
                f"Dovecot {version} is installed ({source}), but [dovecot] version = "
                f'"{config.dialect}": nsprov post-login then exports no namespaces (the other '
                "dialect would break every session)",
                f'Set version = "{version}" under [dovecot] (names, prefixes and index '
                "directories stay the same).",
            )
        ]
    return []


def _storage_separator(conf: DovecotConf, ns: ConfSection | None) -> str | None:
    """The separator Dovecot uses when a namespace sets none: ``.`` for Maildir++, else ``/``."""
    get = ns.get if ns is not None else (lambda _k, d="": d)
    location = get("location") or get("mail") or conf.setting("mail_location")
    if location:
        driver, _, rest = location.partition(":")
        return "." if driver == "maildir" and "layout=fs" not in rest.lower() else "/"
    driver = get("mail_driver") or conf.setting("mail_driver")
    if driver:
        layout = get("mailbox_list_layout") or conf.setting("mailbox_list_layout")
        return "." if driver == "maildir" and layout in {"", "maildir++"} else "/"
    return None


def check_separator(config: Config, conf: DovecotConf) -> list[Finding]:
    """Every listed Dovecot namespace must use nsprov's separator."""
    if not config.spools or all(s.list == "no" for s in config.spools):
        return []
    out = []
    namespaces: list[ConfSection | None] = [
        ns
        for ns in conf.namespaces
        if ns.get("list", "yes") != "no" and not _yes(ns.get("disabled"))
    ]
    if not conf.namespaces:
        namespaces = [None]  # Dovecot's implicit INBOX namespace
    for ns in namespaces:
        explicit = ns.get("separator") if ns is not None else ""
        separator = explicit or _storage_separator(conf, ns)
        if separator is None or separator == config.separator:
            continue
        name = ns.name if ns is not None else "(implicit)"
        out.append(
            _f(
                "error",
                "separator-mismatch",
                f"namespace {name}",
                f"namespace {name} uses separator {separator!r}"
                + ("" if explicit else " (the mail storage's default)")
                + f", nsprov's spools {config.separator!r}: Dovecot fails every session that "
                "gets a shared namespace ('All list=yes namespaces must use the same separator')",
                f"Set separator = {config.separator} in namespace {name} {{}} of dovecot.conf "
                "(clients then see the folder hierarchy with it), or set separator = "
                f'"{separator}" in nsprov\'s configuration.',
            )
        )
    return out


def _ns_root(ns: ConfSection) -> str | None:
    from .._location import MailLocation  # noqa: PLC0415

    if path := ns.get("mail_path"):
        return os.path.normpath(path)
    location = ns.get("location") or ns.get("mail")
    if not location:
        return None
    try:
        return os.path.normpath(MailLocation.parse(location).root)
    except NsprovError:
        return None


def check_conf_namespaces(
    config: Config, conf: DovecotConf, scans: Sequence[SpoolScan]
) -> list[Finding]:
    """Dovecot namespaces whose names or prefixes collide with, or overlap, nsprov's."""
    served = [s for scan in scans for s in scan.served]
    prefixes = {s.namespace.prefix: s for s in served}
    folded = {p.casefold(): s for p, s in prefixes.items()}
    names = {s.namespace.name.lower(): s for s in served}
    out = []
    for ns in conf.namespaces:
        prefix = ns.get("prefix")
        subject = f"namespace {ns.name}"
        if (hit := names.get(ns.name.lower())) is not None:
            out.append(
                _f(
                    "error",
                    "namespace-collision",
                    subject,
                    f"namespace {ns.name} in dovecot.conf has the name nsprov gives "
                    f"{_show(hit.path)}: on 2.3 nsprov's fields would modify it",
                    f'Rename namespace {ns.name}, or add "{ns.name}" to [dovecot] reserved_names.',
                )
            )
        if (hit := prefixes.get(prefix)) is not None and prefix not in config.config_prefixes:
            out.append(
                _f(
                    "error",
                    "namespace-collision",
                    subject,
                    f"namespace {ns.name} in dovecot.conf has the prefix {prefix!r}, which "
                    f"nsprov gives {_show(hit.path)}: sessions that get it fail with "
                    "'Duplicate namespace prefix'",
                    f'Add "{prefix}" to [dovecot] config_prefixes (nsprov then skips that '
                    "entry), or change one of the prefixes.",
                )
            )
        elif (
            prefix and (hit := folded.get(prefix.casefold())) is not None and prefix not in prefixes
        ):
            out.append(
                _f(
                    "warning",
                    "case-collision",
                    subject,
                    f"namespace {ns.name}'s prefix {prefix!r} and nsprov's {hit.namespace.prefix!r} "
                    "differ only in case",
                    "Change one of the prefixes.",
                )
            )
        inner = [p for p in prefixes if prefix and p != prefix and p.startswith(prefix)]
        if inner:
            out.append(
                _f(
                    "warning",
                    "namespace-nested",
                    subject,
                    f"namespace {ns.name} (prefix {prefix!r}) contains {len(inner)} of nsprov's "
                    f"prefixes, e.g. {inner[0]!r}: its own mailboxes of those names are hidden",
                    f"Remove namespace {ns.name} if nsprov now serves these mailboxes, or give "
                    "nsprov another prefix.",
                )
            )
        root = _ns_root(ns)
        spools = [s.path for s in config.spools if root is not None and _inside(root, s.path)]
        if spools:
            out.append(
                _f(
                    "warning",
                    "namespace-nested",
                    subject,
                    f"namespace {ns.name} already serves {root}, inside nsprov's spool "
                    f"{spools[0]}, to every user: those mailboxes show twice, and to users the "
                    "file system would not give them",
                    f"Remove namespace {ns.name} from dovecot.conf once nsprov serves the spool.",
                )
            )
    if any(s.subscribe for s in config.spools) and not any(
        ns.name == config.private_namespace for ns in conf.namespaces
    ):
        out.append(
            _f(
                "warning",
                "private-namespace-missing",
                "[dovecot] private_namespace",
                f"subscribe = true adds entries to namespace {config.private_namespace!r}, which "
                "dovecot.conf does not define: Dovecot ignores them silently",
                "Set [dovecot] private_namespace to the name of the namespace with inbox = yes.",
            )
        )
    return out


def _lead(spool: SpoolConfig) -> str:
    """The fixed start of *spool*'s prefixes: the template rendered up to its first ``{name}``."""
    out = []
    for value, is_field in spool.prefix.parts:
        if is_field and value == "name":
            break
        out.append(spool.separator if is_field else value)
    return "".join(out)


def check_prefix_overlap(config: Config, conf: DovecotConf) -> list[Finding]:
    """Prefix templates against every Dovecot namespace, whatever entries the spools hold now.

    An entry's prefix is the template's fixed start followed by its name.  When that start
    equals the prefix of a private namespace (an empty-prefix ``inbox`` and ``{name}/``,
    allowed with ``allow_private_overlap``), an entry named like a private folder (``Sent``)
    takes the folder over and the client's writes land in the spool: ``private-overlap``.
    Equal to a public or shared namespace's prefix, or a namespace inside the template's
    own space (``Shared/x/`` under ``Shared/{name}/``): ``namespace-nested``.  Prefixes
    nested under a namespace's are reported per entry by :func:`check_conf_namespaces`.
    """
    sections = [ns for ns in conf.namespaces if not _yes(ns.get("disabled"))]
    namespaces = [(ns.name, ns.get("prefix"), ns.get("type") or "private") for ns in sections]
    if not conf.namespaces:
        namespaces = [("(implicit)", "", "private")]  # Dovecot's implicit INBOX namespace
    out: list[Finding] = []
    for number, spool in enumerate(config.spools, 1):
        lead = _lead(spool)
        text = spool.prefix.text
        for name, prefix, kind in namespaces:
            subject = f"spool[{number}].prefix"
            if lead == prefix and kind == "private":
                where = "at the top level" if not prefix else f"directly under {prefix!r}"
                out.append(
                    _f(
                        "error",
                        "private-overlap",
                        subject,
                        f"spool {spool.path}: prefix {text!r} puts each entry {where} of the "
                        f"private namespace {name} (prefix {prefix!r}): an entry named like one "
                        "of the user's folders (Sent, Drafts, Trash) takes that folder over, and "
                        "the client's writes to it (sent mail, drafts) land in the shared spool",
                        f'Start the prefix with fixed text, e.g. prefix = "Shared{{sep}}{{name}}'
                        '{sep}", and remove allow_private_overlap; or give namespace '
                        f"{name} a prefix of its own (e.g. INBOX{spool.separator}).",
                    )
                )
            elif prefix and (lead == prefix or (prefix.startswith(lead) and prefix != lead)):
                inside = lead != prefix
                out.append(
                    _f(
                        "warning",
                        "namespace-nested",
                        subject,
                        f"spool {spool.path}: prefix {text!r} "
                        + (
                            f"can give an entry the prefix of namespace {name} ({prefix!r}) or "
                            "one above it"
                            if inside
                            else f"puts each entry directly under namespace {name} ({prefix!r})"
                        )
                        + ": an entry of a name that namespace also uses hides or clashes with it",
                        "Give the spool and the namespace prefixes that do not nest, e.g. "
                        'prefix = "Shared{sep}{name}{sep}" and another one for the namespace.',
                    )
                )
    return out


_SERVICE_OPTIONS_WITH_VALUE = frozenset({"-t", "-c", "-i", "-o"})


def _socket_of(executable: str) -> str | None:
    """The post-login socket of ``executable = imap [-t N] imap-postlogin``."""
    tokens = executable.split(" ")
    i = 1
    while i < len(tokens):
        token = tokens[i]
        if not token:
            i += 1
        elif token.startswith("-"):
            i += 2 if token in _SERVICE_OPTIONS_WITH_VALUE else 1
        else:
            return os.path.basename(token)
    return None


def _post_login_service(conf: DovecotConf, socket: str) -> ConfSection | None:
    services = conf.services
    if socket in services:
        return services[socket]
    for service in services.values():
        if any(listener.name == socket for listener in service.children("unix_listener")):
            return service
    return None


def check_wiring(
    config: Config,
    conf: DovecotConf,
    *,
    config_path: str,
    executable: Callable[[str], bool] = lambda p: os.access(p, os.X_OK),
) -> list[Finding]:
    """The post-login services of IMAP and POP3: present, calling nsprov right, as root."""
    out: list[Finding] = []
    serve_wired = "dict" in conf.userdb_drivers
    for protocol in ("imap", "pop3"):
        if protocol not in conf.protocols:
            continue
        actions: tuple[str, ...] = getattr(config.actions, protocol)
        service = conf.services.get(protocol)
        socket = _socket_of(service.get("executable")) if service is not None else None
        example = f"examples/dovecot-{config.dialect}/10-master.conf (docs: Dovecot wiring)"
        if socket is None:
            if actions and not (serve_wired and set(actions) <= {"namespaces"}):
                deny = " (its deny rules do not apply)" if "deny" in actions else ""
                out.append(
                    _f(
                        "error",
                        "wiring-missing",
                        f"service {protocol}",
                        f"{protocol} logins run no post-login script{deny}, but the "
                        f"configuration runs {', '.join(actions)} for {protocol}",
                        f"Add the service {protocol} and service {protocol}-postlogin blocks of "
                        f"{example}.",
                    )
                )
            continue
        post = _post_login_service(conf, socket)
        if post is None:
            out.append(
                _f(
                    "error",
                    "wiring-missing",
                    f"service {protocol}",
                    f"service {protocol} hands logins to the post-login socket {socket}, but no "
                    f"service provides it: every {protocol} login fails",
                    f"Add a service {socket} block as in {example}.",
                )
            )
            continue
        subject = f"service {post.name}"
        tokens = post.get("executable").split(" ")
        if os.path.basename(tokens[0]) != "script-login":
            out.append(
                _f(
                    "warning",
                    "wiring-missing",
                    subject,
                    f"service {post.name} runs {tokens[0]!r}, not script-login: nsprov is not "
                    f"called for {protocol}",
                    f"Use executable = script-login /path/to/nsprov post-login … as in {example}.",
                )
            )
            continue
        programs = tokens[1:]
        while programs and programs[0].startswith("-"):
            programs = programs[1:]  # script-login's own -d
        at = next((i for i in range(len(programs) - 1) if programs[i + 1] == "post-login"), None)
        fast = next(
            (i for i, t in enumerate(programs) if i and t.endswith("/nsprov/_fast.py")), None
        )
        out += _not_isolated(post, programs, fast)
        if at is None and fast is not None:
            # python -I -S /path/to/nsprov/_fast.py --serve=... : the interpreter is the program.
            out += _check_chain(
                protocol, post, programs[0], programs[fast + 1 :], config_path, executable
            )
            out += _check_fast_script(post, programs[fast], programs[fast + 1 :])
        elif at is None:
            out.append(
                _f(
                    "warning",
                    "wiring-missing",
                    subject,
                    f"the post-login chain of {protocol} ({' '.join(programs)}) does not run "
                    "nsprov post-login",
                    f"Add /path/to/nsprov post-login --config={config_path} --protocol={protocol} "
                    "to the executable line (a hook script calling nsprov.run_hook needs no "
                    "change: then ignore this).",
                )
            )
            continue
        else:
            out += _check_chain(
                protocol, post, programs[at], programs[at + 2 :], config_path, executable
            )
        user = post.get("user")
        if user not in {"", "root", "0"}:
            out.append(
                _f(
                    "warning",
                    "wiring-service-user",
                    subject,
                    f"service {post.name} runs as {user}: nsprov then cannot stat spool entries "
                    "that user cannot search, nor become each user to create the index "
                    "directories in their homes",
                    f"Remove the user = line from service {post.name} (the default, root, is "
                    "what nsprov expects; it evaluates permissions for the user itself).",
                )
            )
    return out


def _isolated(flags: Sequence[str]) -> bool:
    """Whether Python's command-line *flags* include ``-I`` (alone or combined, ``-IS``)."""
    return any(f.startswith("-") and not f.startswith("--") and "I" in f for f in flags)


def _not_isolated(post: ConfSection, programs: Sequence[str], fast: int | None) -> list[Finding]:
    """The chain's first program runs Python as root without ``-I``: userdb fields can run code.

    Either an interpreter on the line (``python -S .../_fast.py``) or a script whose
    ``#!`` line names Python without ``-I`` (a hook, or the console script of an nsprov
    from before the launcher).  Unreadable programs are left to the other checks.
    """
    if not programs:
        return []
    program = programs[0]
    if fast is not None:
        flags: Sequence[str] | None = programs[1:fast]
    else:
        try:
            with open(program, "rb") as f:
                first = f.readline(256)
        except OSError:
            return []
        words = first[2:].decode("utf-8", "replace").split() if first.startswith(b"#!") else []
        named = words and "python" in os.path.basename(words[0])
        env_python = len(words) > 1 and words[0].endswith("/env") and "python" in words[-1]
        flags = words[1:] if named else None
        if env_python:
            flags = []
    if flags is None or _isolated(flags):
        return []
    return [
        _f(
            "error",
            "wiring-not-isolated",
            f"service {post.name}",
            f"{program} starts Python without -I, as root with every userdb field in its "
            "environment: a field pythonpath=... (PYTHONPATH) makes it import code from there",
            "Reinstall nsprov (its nsprov command starts python -I), add -I to the "
            "interpreter on the executable line, or to the #! line of the hook script.",
        )
    ]


def _check_fast_script(post: ConfSection, script: str, args: Sequence[str]) -> list[Finding]:
    """The ``_fast.py`` form of the wiring: the script must exist and --serve be given."""
    subject = f"service {post.name}"
    if not os.path.isfile(script):
        return [
            _f(
                "error",
                "wiring-program-missing",
                subject,
                f"{script} does not exist: every login on service {post.name} fails",
                "Give the path that python -c 'import nsprov._fast as m; print(m.__file__)' "
                "prints with the interpreter on the line.",
            )
        ]
    if not any(a == "--serve" or a.startswith("--serve=") for a in args):
        return [
            _f(
                "warning",
                "wiring-bad-arguments",
                subject,
                f"{script} without --serve always re-runs as the full nsprov post-login: "
                "one more interpreter start per login",
                "Add --serve=SOCKET, or call nsprov post-login directly.",
            )
        ]
    return []


def _check_chain(
    protocol: str,
    post: ConfSection,
    program: str,
    args: Sequence[str],
    config_path: str,
    executable: Callable[[str], bool],
) -> list[Finding]:
    from .._postlogin import UsageError, parse_args  # noqa: PLC0415

    out: list[Finding] = []
    subject = f"service {post.name}"
    if not program.startswith("/"):
        out.append(
            _f(
                "error",
                "wiring-relative-path",
                subject,
                f"{program!r} is not an absolute path: script-login looks for it in Dovecot's "
                "libexec directory (the post-login environment has no PATH), and the login fails",
                f"Give the absolute path, e.g. /usr/local/bin/nsprov (found by: command -v {program}).",
            )
        )
    elif not executable(program):
        out.append(
            _f(
                "error",
                "wiring-program-missing",
                subject,
                f"{program} does not exist or is not executable: every {protocol} login fails",
                "Correct the path, or install nsprov there (ln -s /opt/nsprov/bin/nsprov "
                "/usr/local/bin/nsprov).",
            )
        )
    if "" in args:
        out.append(
            _f(
                "error",
                "wiring-bad-arguments",
                subject,
                f"the executable line of service {post.name} has two spaces in a row: Dovecot "
                "passes an empty argument, which nsprov takes for the next program to run",
                "Separate the arguments by single spaces.",
            )
        )
        return out
    unknown: list[str] = []
    script_login = "/usr/lib/dovecot/script-login"
    try:
        parsed = parse_args([*args, script_login], unknown=unknown)
    except UsageError as e:
        refusal: str | None = str(e)
        parsed = None
    else:
        refusal = None if parsed is not None else "--help prints the usage and denies the login"
    if unknown:
        out.append(
            _f(
                "warning",
                "wiring-bad-arguments",
                subject,
                f"nsprov post-login ignores the unknown options {', '.join(unknown)} (and logs "
                "that on every login)",
                "Remove them; nsprov post-login --help lists the options.",
            )
        )
    bad = parsed.bad if parsed is not None else []
    if bad:
        denied = parsed is not None and parsed.on_error == "deny"
        out.append(
            _f(
                "error",
                "wiring-bad-arguments",
                subject,
                f"nsprov post-login ignores a bad value on service {post.name}: "
                + "; ".join(problem for _, problem in bad)
                + (
                    " (with --on-error=deny it denies every login)"
                    if denied
                    else " (it uses the default instead and logs an error on every login)"
                ),
                "Correct the option (one token each, --name=value); nsprov post-login --help "
                "lists the values.",
            )
        )
    rest = parsed.next[:-1] if parsed is not None else []
    if refusal is not None:
        out.append(
            _f(
                "error",
                "wiring-bad-arguments",
                subject,
                f"nsprov post-login refuses its arguments on service {post.name}: {refusal}",
                "Correct the option (one token each, --name=value).",
            )
        )
    for nxt in rest[:1]:
        if not nxt.startswith("/"):
            out.append(
                _f(
                    "error",
                    "wiring-relative-path",
                    subject,
                    f"nsprov execs {nxt!r} after its options without PATH: the login fails",
                    "Give every program of the chain as an absolute path.",
                )
            )
    wired = parsed.protocol if parsed is not None else None
    if refusal is not None or any(name == "protocol" for name, _ in bad):
        pass  # refused, or a bad --protocol reported above
    elif wired is None:
        out.append(
            _f(
                "warning",
                "wiring-no-protocol",
                subject,
                f"service {post.name} calls nsprov without --protocol: nsprov runs the default "
                "action list and writes nothing to the client (no alerts, no deny message)",
                f"Append --protocol={protocol} to the executable line.",
            )
        )
    elif wired != protocol:
        out.append(
            _f(
                "error",
                "wiring-protocol-mismatch",
                subject,
                f"{protocol} logins go through service {post.name}, which calls nsprov with "
                f"--protocol={wired}: {protocol} clients get {wired} lines (a POP3 client "
                "desynchronises on an IMAP alert) and the wrong action list",
                f"Give {protocol} a post-login service of its own with --protocol={protocol}.",
            )
        )
    wired_config = parsed.config if parsed is not None else DEFAULT_CONFIG_PATH
    if os.path.realpath(wired_config) != os.path.realpath(config_path):
        out.append(
            _f(
                "warning",
                "wiring-config-path",
                subject,
                f"service {post.name} runs nsprov with {wired_config}, but this check read "
                f"{config_path}",
                f"Check the wired file (nsprov check --config={wired_config}), or point "
                "--config= on the executable line at this one.",
            )
        )
    return out


def check_mail_driver(config: Config, conf: DovecotConf) -> list[Finding]:
    """``[dovecot] global_mail_driver`` must be dovecot.conf's ``mail_driver`` (2.4)."""
    wanted = config.global_mail_driver
    actual = conf.setting("mail_driver")
    if config.dialect != "2.4" or not wanted or actual == wanted:
        return []
    return [
        _f(
            "error",
            "mail-driver-mismatch",
            "[dovecot] global_mail_driver",
            f'[dovecot] global_mail_driver = "{wanted}" leaves mail_driver out of every '
            f"{wanted} namespace, but dovecot.conf's mail_driver is "
            + (repr(actual) if actual else "not set")
            + f": the shared namespaces would not open as {wanted}",
            "Set global_mail_driver to dovecot.conf's mail_driver, or remove it (each "
            "namespace then names its driver).",
        )
    ]


def check_identity(config: Config, conf: DovecotConf) -> list[Finding]:
    """``[identity]`` must say what Dovecot does about the mail process's groups.

    nsprov computes the mail process's groups from ``first_valid_gid``,
    ``last_valid_gid`` and ``mail_access_groups`` (see :mod:`nsprov._identity`);
    Dovecot takes them from dovecot.conf.  (nsprov has no uid range to drift:
    check reads ``first_valid_uid``/``last_valid_uid`` from doveconf.)
    """
    ident = config.identity
    pairs: list[tuple[str, str, str]] = [
        ("first_valid_gid", str(ident.first_valid_gid), str(conf.first_valid_gid)),
        ("last_valid_gid", str(ident.last_valid_gid), str(conf.last_valid_gid)),
    ]
    ours, theirs = sorted(set(ident.mail_access_groups)), sorted(set(conf.mail_access_groups))
    if ours != theirs:
        pairs.append(("mail_access_groups", repr(ours), repr(theirs)))
    out = []
    for key, mine, dovecot in pairs:
        if mine == dovecot:
            continue
        out.append(
            _f(
                "error",
                "identity-mismatch",
                f"[identity] {key}",
                f"[identity] {key} is {mine}, but Dovecot's {key} is {dovecot}: nsprov "
                "computes other groups than the mail process gets, and offers mailboxes it "
                "cannot open (or leaves out mailboxes it can)",
                f"Set {key} = {dovecot} in [identity] (what doveconf -n prints, or Dovecot's "
                "default when it prints nothing).",
            )
        )
    return out


def check_acl_plugin(config: Config, conf: DovecotConf, *, acl_plugin: bool) -> list[Finding]:
    """``[dovecot] acl_plugin`` against Dovecot's ``mail_plugins`` for IMAP."""
    enabled = "acl" in conf.plugins("imap")
    if enabled and not acl_plugin and config.dialect == "2.4":
        return [
            _f(
                "error",
                "acl-plugin-setting",
                "[dovecot] acl_plugin",
                "Dovecot's ACL plugin is enabled, but [dovecot] acl_plugin = false: on 2.4 the "
                "plugin then refuses every mailbox's own dovecot-acl and every shared mailbox is "
                "NONEXISTENT",
                "Set acl_plugin = true under [dovecot].",
            )
        ]
    if acl_plugin and not enabled:
        return [
            _f(
                "info",
                "acl-plugin-setting",
                "[dovecot] acl_plugin",
                "[dovecot] acl_plugin = true, but the ACL plugin is not in mail_plugins"
                + (
                    ": one more userdb key per namespace for nothing"
                    if config.dialect == "2.4"
                    else ""
                ),
                "Set acl_plugin = false, or enable the plugin.",
            )
        ]
    return []


def acl_required(conf: DovecotConf | None) -> bool:
    """Whether public mailboxes need a ``dovecot-acl`` to be visible at all."""
    return conf is not None and "acl" in conf.plugins("imap") and conf.acl_global is None


# --- users --------------------------------------------------------------------------------

#: The IPv6 addresses make ``IP``/``LOCAL_IP`` as long as they get.
_IP = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"


def base_environ(user: MailUser) -> dict[str, str]:
    """A realistic post-login environment for *user*, before nsprov adds anything."""
    ident = user.identity
    return {
        "USER": user.user,
        "UID": str(ident.uid),
        "GID": str(ident.gid),
        "HOME": user.home or "",
        "SYSTEM_GROUPS_USER": user.user,
        "AUTH_MECH": "PLAIN",
        "AUTH_TOKEN": "0" * 40,
        "IP": _IP,
        "LOCAL_IP": _IP,
        "USERDB_KEYS": "UID GID HOME SYSTEM_GROUPS_USER AUTH_MECH AUTH_TOKEN ",
    }


def _var_size(key: str, value: str) -> int:
    return len(key.encode()) + 1 + len(value.encode("utf-8", "surrogateescape")) + 1


@attrs.frozen(kw_only=True)
class UserReport:
    """What one user gets: mailboxes found, namespaces served, sizes against the limits."""

    user: str
    uid: int
    gid: int
    home: str | None
    #: Mailboxes the user may read (before namespace.max and the environment limits).
    found: int
    #: Namespaces nsprov post-login exports.
    served: int
    #: The whole post-login environment after nsprov, in bytes (NAME=value plus NUL each).
    env_bytes: int
    #: The ``USERDB_KEYS`` string, which must stay under 128 KiB.
    userdb_keys_bytes: int
    serve: ReplyBudget | None = None

    @property
    def over(self) -> bool:
        """True when the user does not get every mailboxes it may read."""
        return self.served < self.found

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON object."""
        serve = self.serve
        return {
            "user": self.user,
            "uid": self.uid,
            "gid": self.gid,
            "home": None if self.home is None else _show(self.home),
            "found": self.found,
            "served": self.served,
            "env_bytes": self.env_bytes,
            "userdb_keys_bytes": self.userdb_keys_bytes,
            "serve": None
            if serve is None
            else {
                "fits": serve.fits,
                "total": serve.total,
                "size": serve.size,
                "full_size": serve.full_size,
                "budget": serve.budget,
            },
        }


def check_user(
    config: Config,
    user: MailUser,
    *,
    fs: Fs = DEFAULT_FS,
    limits: EnvLimits = EnvLimits(),
    budget: Callable[[Config, MailUser], ReplyBudget] | None = None,
    serve_mode: bool | None = None,
    deadline: float = DEFAULT_DEADLINE,
) -> tuple[UserReport | None, list[Finding], set[tuple[str, bytes]]]:
    """One user's namespaces against ``namespace.max``, the kernel and the serve budget.

    Returns the report (None when the namespaces cannot be computed, or not
    within *deadline* seconds: a hung spool), the findings, and the
    ``(spool, raw name)`` keys of every mailbox the user may read.
    """
    from .._deadline import run_with_deadline  # noqa: PLC0415
    from .._engine import plan  # noqa: PLC0415
    from .._env import MAX_ARG_STRLEN  # noqa: PLC0415

    subject = f"user {user.user}"
    environ = base_environ(user)
    try:
        p = run_with_deadline(
            lambda: plan(config, user, environ, fs=fs, limits=limits),
            deadline,
            what=f"the scan for user {user.user}",
        )
    except (NsprovError, OSError) as e:
        return (
            None,
            [
                _f(
                    "error",
                    "user-error",
                    subject,
                    f"user {user.user}: no namespaces can be computed: {e}",
                    "Fix what the message names (a home for {home} templates, a readable "
                    "spool); nsprov show --user USER --explain shows the same.",
                )
            ],
            set(),
        )
    served = p.discovery.served
    over = [k for k in p.discovery.skipped if k.reason == "over-limit"]
    found = len(served) + len(over)
    env = {**environ, **p.environ}
    report = UserReport(
        user=user.user,
        uid=user.identity.uid,
        gid=user.identity.gid,
        home=user.home,
        found=found,
        served=len(served),
        env_bytes=sum(_var_size(k, v) for k, v in env.items()),
        userdb_keys_bytes=_var_size("USERDB_KEYS", env["USERDB_KEYS"]),
    )
    out: list[Finding] = []
    if found > config.max_namespaces:
        out.append(
            _f(
                "warning",
                "namespace-max",
                subject,
                f"user {user.user} may read {found} mailboxes, namespace.max = "
                f"{config.max_namespaces}: only the first {config.max_namespaces} in discovery "
                "order are served",
                "Raise max under [namespace] (the kernel limits allow about 1,000 on 2.3 and "
                "500 on 2.4), or exclude mailboxes the user does not need.",
            )
        )
    if len(served) < min(found, config.max_namespaces):
        out.append(
            _f(
                "warning",
                "env-limit",
                subject,
                f"only {len(served)} of user {user.user}'s {min(found, config.max_namespaces)} "
                f"namespaces fit the kernel's environment limits (USERDB_KEYS may be at most "
                f"{MAX_ARG_STRLEN} bytes, one string): the first {len(served)} in discovery "
                "order are served, and each login logs a warning",
                f"Set max = {len(served)} under [namespace] to make the cut deliberate, shorten "
                "the name and index templates (every byte repeats per namespace), or give the "
                "user fewer mailboxes.",
            )
        )
    if budget is not None and served and config.dialect == "2.3":
        rb = budget(config, user)
        report = attrs.evolve(report, serve=rb)
        if rb.fits < rb.total:
            out.append(
                _f(
                    "warning" if serve_mode is not False else "info",
                    "serve-budget",
                    subject,
                    f"in serve mode user {user.user} would get {rb.fits} of {rb.total} "
                    f"namespaces: the reply needs {rb.full_size} bytes, the budget is "
                    f"{rb.budget} (Dovecot's auth worker refuses replies over 8192 bytes)",
                    "Serve this user in post-login mode (nsprov post-login), which carries "
                    "about 1,000 namespaces."
                    + (
                        ""
                        if serve_mode is not False
                        else " Post-login mode is wired: nothing to do."
                    ),
                )
            )
    keys = {(s.spool, s.raw) for s in served} | {(k.spool, k.raw) for k in over}
    return report, out, keys


def check_virtual(
    config: Config, users: Sequence[MailUser], uid_names: Mapping[int, Sequence[str]]
) -> list[Finding]:
    """Users who share one uid: file system permissions cannot tell them apart."""
    by_uid: dict[int, set[str]] = {}
    for u in users:
        by_uid.setdefault(u.identity.uid, set()).add(u.user)
    out = []
    for uid, checked in sorted(by_uid.items()):
        names = sorted(checked | set(uid_names.get(uid, ())))
        if len(names) < 2 and not config.identity.mail_uid:
            continue
        via = " ([identity] mail_uid)" if config.identity.mail_uid else ""
        out.append(
            _f(
                "warning",
                "virtual-users",
                f"uid {uid}",
                f"users {_some(names)} map to uid {uid}{via}: file system permissions cannot "
                "tell them apart, so they all get the same shared mailboxes",
                "Give each user its own uid where they need different mailboxes; otherwise "
                "grant per user with Dovecot's ACL plugin (dovecot-acl files) and set [dovecot] "
                "acl_plugin = true.",
            )
        )
    return out


def select_users(
    entries: Iterable[tuple[str, int]], *, first_valid_uid: int, last_valid_uid: int, cap: int
) -> tuple[list[str], int]:
    """Login names Dovecot would accept (uid within its range, never root), capped.

    Returns the first *cap* names in uid order and how many there were.
    """
    low = max(first_valid_uid, 1)
    eligible = sorted(
        {
            (uid, name)
            for name, uid in entries
            if uid >= low and (not last_valid_uid or uid <= last_valid_uid)
        }
    )
    return [name for _, name in eligible[:cap]], len(eligible)


# --- stale per-user directories -----------------------------------------------------------

_SENTINELS = {"ns": "\0N\0", "id": "\0I\0", "slug": "\0S\0", "hash": "\0H\0"}
_HASH_RE = f"[a-z2-7]{{{HASH_LENGTH}}}"
_SLUG_RE = (
    f"[a-z0-9](?:[a-z0-9-]{{0,{SLUG_LENGTH - 2}}}[a-z0-9])?" if SLUG_LENGTH > 1 else "[a-z0-9]"
)
_STRICT = {"\0I\0": f"(?:{_SLUG_RE}-)?{_HASH_RE}", "\0S\0": f"(?:{_SLUG_RE})?", "\0H\0": _HASH_RE}
_LOOSE = {"\0I\0": "[a-z0-9_-]+", "\0S\0": "[a-z0-9-]*", "\0H\0": "[a-z0-9]+"}


def _pattern(text: str, fields: Mapping[str, str]) -> str:
    parts = re.split("(\0[A-Z]\0)", text)
    return "".join(fields.get(p, re.escape(p)) for p in parts)


@attrs.frozen
class StaleDir:
    """A directory in a per-user parent that no current spool entry would use."""

    user: str
    path: str
    #: ``"current"``: named by this nsprov's scheme; ``"other"``: looks like another scheme's.
    scheme: Literal["current", "other"]


def _parents(config: Config, user: MailUser) -> dict[str, list[tuple[str, SpoolConfig]]]:
    """Per-user parent directories and the namespace-dependent component below each."""
    home = (user.home or "").rstrip("/") or "/"
    out: dict[str, list[tuple[str, SpoolConfig]]] = {}
    for spool in config.spools:
        for key in _PATH_KEYS:
            template = getattr(spool, key)
            if template is None or ("home" in template.fields and not user.home):
                continue
            rendered = os.path.normpath(
                template.render({"home": home, "user": user.user, **_SENTINELS})
            )
            parts = rendered.split("/")
            at = next((i for i, p in enumerate(parts) if "\0" in p), None)
            if at is None:
                continue
            parent = "/".join(parts[:at]) or "/"
            entry = (parts[at], spool)
            if entry not in out.setdefault(parent, []):
                out[parent].append(entry)
    return out


def _render_component(component: str, spool: SpoolConfig, raw: bytes) -> str:
    ident, slug, digest = entry_id(spool.path_bytes, raw)
    ns = spool.name.render({"id": ident, "slug": slug, "hash": digest})
    for key, value in (("ns", ns), ("id", ident), ("slug", slug), ("hash", digest)):
        component = component.replace(_SENTINELS[key], value)
    return component


def find_stale(
    config: Config,
    user: MailUser,
    *,
    fs: Fs = DEFAULT_FS,
    listings: Mapping[str, Sequence[bytes] | None] | None = None,
    max_remove_fraction: float = 0.5,
    force: bool = False,
    suspects: Mapping[str, str] | None = None,
) -> tuple[list[StaleDir], list[Finding]]:
    """Directories in *user*'s index/control parents that match no spool entry any more.

    The expected names are computed for **every** entry of each spool (the
    user's access does not matter: it may come back).  *listings* maps a spool
    path to its entry names (None: it could not be listed); missing spools are
    listed through *fs*.  A parent shared with an unlistable spool is not checked.
    Unless *force*, neither is a parent whose stale directories belong to an
    empty spool (an unmounted mount point looks like that), to a spool in
    *suspects* (path: why its listing is not trusted, see :func:`changed_spools`),
    or make up more than *max_remove_fraction* of its directories of this naming
    scheme: a ``stale-suspect`` finding instead, and nothing to remove.
    """
    stale: list[StaleDir] = []
    out: list[Finding] = []
    cache: dict[str, Sequence[bytes] | None] = dict(listings or {})

    def listing(spool: SpoolConfig) -> Sequence[bytes] | None:
        if spool.path not in cache:
            try:
                cache[spool.path] = fs.listdir(fs.realpath(spool.path_bytes))
            except OSError:
                cache[spool.path] = None
        return cache[spool.path]

    for parent, components in sorted(_parents(config, user).items()):
        unlisted = [s.path for _, s in components if listing(s) is None]
        if unlisted:
            out.append(
                _f(
                    "info",
                    "stale-unchecked",
                    _show(parent),
                    f"{_show(parent)} (user {user.user}) was not checked for stale directories: "
                    f"spool {unlisted[0]} cannot be listed",
                    "Fix the spool, then run the check again.",
                )
            )
            continue
        parent_b = os.fsencode(parent)
        try:
            if not st.S_ISDIR(fs.lstat(parent_b).st_mode) or fs.realpath(parent_b) != parent_b:
                out.append(
                    _f(
                        "info",
                        "stale-unchecked",
                        _show(parent),
                        f"{_show(parent)} (user {user.user}) is reached through a symbolic link "
                        "or is no directory: not checked",
                        "Nothing to do unless you expected nsprov's directories there.",
                    )
                )
                continue
            names = fs.listdir(parent_b)
        except FileNotFoundError:
            continue
        except OSError as e:
            out.append(
                _f(
                    "info",
                    "stale-unchecked",
                    _show(parent),
                    f"{_show(parent)} (user {user.user}) cannot be listed: {e.strerror or e}",
                    "Nothing to do unless you expected nsprov's directories there.",
                )
            )
            continue
        expected = {
            os.fsencode(_render_component(component, spool, raw))
            for component, spool in components
            for raw in listing(spool) or ()
        }
        strict = []
        loose = []
        for component, spool in components:
            name_template = spool.name.render({"id": "\0I\0", "slug": "\0S\0", "hash": "\0H\0"})
            strict.append(re.compile(_pattern(component.replace("\0N\0", name_template), _STRICT)))
            loose_name = _pattern(name_template, _LOOSE)
            loose.append(re.compile(_pattern(component, {**_LOOSE, "\0N\0": loose_name})))
        found: list[StaleDir] = []
        kept = 0
        for raw in sorted(names):
            if raw in expected:
                kept += 1
                continue
            text = raw.decode("utf-8", "surrogateescape")
            if any(p.fullmatch(text) for p in strict):
                scheme: Literal["current", "other"] = "current"
            elif any(p.fullmatch(text) for p in loose):
                scheme = "other"
            else:
                continue
            path_b = parent_b.rstrip(b"/") + b"/" + raw
            try:
                if not st.S_ISDIR(fs.lstat(path_b).st_mode):
                    continue
            except OSError:
                continue
            found.append(StaleDir(user.user, os.fsdecode(path_b), scheme))
        suspect = (
            None
            if force
            else _suspect(
                parent,
                user,
                components,
                listing,
                found,
                kept,
                max_remove_fraction,
                suspects or {},
            )
        )
        if suspect is not None:
            out.append(suspect)
            found = [d for d in found if d.scheme != "current"]
        stale += found
    for d in stale:
        out.append(stale_finding(d))
    return stale, out


def _suspect(
    parent: str,
    user: MailUser,
    components: Sequence[tuple[str, SpoolConfig]],
    listing: Callable[[SpoolConfig], Sequence[bytes] | None],
    found: Sequence[StaleDir],
    kept: int,
    max_fraction: float,
    suspects: Mapping[str, str],
) -> Finding | None:
    """The ``stale-suspect`` finding when *parent*'s stale directories look like a lost spool."""
    gone = sum(d.scheme == "current" for d in found)
    if not gone:
        return None
    empty = next((s.path for _, s in components if not listing(s)), None)
    changed = next((s.path for _, s in components if s.path in suspects), None)
    if empty is not None:
        why = f"spool {_show(empty)} is empty (an unmounted file system?)"
    elif changed is not None:
        why = f"spool {_show(changed)} {suspects[changed]}"
    elif gone > max_fraction * (gone + kept):
        why = (
            f"{gone} of {gone + kept} of its directories match no spool entry, more than "
            f"--max-remove-fraction {max_fraction:g}"
        )
    else:
        return None
    where = f"{_show(parent)} (user {user.user})"
    return _f(
        "warning",
        "stale-suspect",
        _show(parent),
        f"{where} was not checked for stale directories: {why}; nothing is removed there",
        "Make sure every spool is mounted and complete. If the mailboxes really are gone, "
        "run nsprov check --clean-stale --force (or raise --max-remove-fraction).",
    )


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


def load_marks(path: str) -> dict[str, SpoolMark]:
    """The marks a previous check stored at *path*; empty when absent, untrusted or corrupt.

    The file is used only under the trust rule (:mod:`nsprov._trust`): a regular
    file that it and every directory above it are owned by root (or this user)
    and writable by nobody else.  A malformed entry is skipped.
    """
    out = {}
    for p, m in _load_state(path).items():
        try:
            out[str(p)] = SpoolMark(int(m["dev"]), int(m["ino"]), int(m["count"]))
        except (ValueError, TypeError, KeyError):
            continue
    return out


def store_marks(path: str, marks: Mapping[str, SpoolMark], *, now: float | None = None) -> None:
    """Merge *marks* into the state file at *path* (mode 0600, under the trust rule).

    The directory is made (mode 0700) when missing.  Marks of other spools are
    kept for :data:`STATE_KEEP_SECONDS` after they were last refreshed.  Errors are
    ignored: without a state file only an empty spool is suspected.
    """
    import json  # noqa: PLC0415

    from .._config import write_private  # noqa: PLC0415
    from .._trust import open_trusted  # noqa: PLC0415

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


def stale_finding(d: StaleDir) -> Finding:
    """The finding for one stale directory."""
    path = _show(d.path)
    if d.scheme == "current":
        return _f(
            "info",
            "stale-dir",
            path,
            f"{path} (user {d.user}) matches no entry of any spool any more (the mailbox was "
            "renamed or removed): it holds only that user's index and state of it",
            f"nsprov check --user {d.user} --clean-stale removes it, as the user.",
        )
    return _f(
        "warning",
        "stale-other-scheme",
        path,
        f"{path} (user {d.user}) looks like a namespace directory of another nsprov naming "
        f"scheme (this nsprov uses {NAMING_SCHEME}): left by an older or newer nsprov, whose "
        "index state this one does not use",
        "Once no other nsprov version serves this user, remove it as the user (--clean-stale "
        "leaves it alone).",
    )


def remove_dirs(paths: Sequence[str]) -> list[tuple[str, str | None]]:
    """Remove each directory tree without following symbolic links; ``(path, error or None)``.

    Run it as the user (see :func:`clean_stale_as`): a path the user planted
    then leads only where the user could write anyway.
    """
    import shutil  # noqa: PLC0415

    out: list[tuple[str, str | None]] = []
    for path in paths:
        parent, name = os.path.split(path)
        try:
            fd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if not st.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory, left alone")
                shutil.rmtree(name, dir_fd=fd)
            finally:
                os.close(fd)
        except OSError as e:
            where = f" ({_show(e.filename)})" if isinstance(e.filename, (str, bytes)) else ""
            out.append((path, f"{e.strerror or e}{where}"))
        else:
            out.append((path, None))
    return out


def clean_stale_as(user: MailUser, paths: Sequence[str]) -> list[tuple[str, str | None]]:
    """:func:`remove_dirs` in a forked process that has become *user* first."""
    import json  # noqa: PLC0415

    from .._engine import drop_privileges  # noqa: PLC0415

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; remove_dirs is tested directly
        status = 1
        try:
            os.close(r)
            drop_privileges(user)
            view = memoryview(json.dumps(remove_dirs(paths)).encode())
            while view:
                view = view[os.write(w, view) :]
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    try:
        results = json.loads(data) if status == 0 else None
    except ValueError:
        results = None
    if not isinstance(results, list):
        return [(p, f"the clean-up process could not become user {user.user}") for p in paths]
    return [(str(p), None if e is None else str(e)) for p, e in results]


# --- the whole check ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class World:
    """Everything the checks look at, gathered by :func:`gather` (or built by a test)."""

    config_path: str
    config: Config | None = None
    config_problems: tuple[str, ...] = ()
    #: ``untrusted-file`` findings (:func:`check_trusted_files`).
    trust_findings: tuple[Finding, ...] = ()
    #: ``[dovecot] acl_plugin`` as written (the parsed config applies it and forgets it).
    acl_plugin: bool = False
    doveconf: DovecotConf | None = None
    #: Why there is no doveconf output (``doveconf-unavailable`` or ``doveconf-failed``).
    doveconf_finding: Finding | None = None
    dovecot_version: str | None = None
    version_source: str | None = None
    users: tuple[MailUser, ...] = ()
    user_findings: tuple[Finding, ...] = ()
    #: True when the users were enumerated rather than named with --user.
    enumerated: bool = False
    #: Every passwd login name by uid, for the virtual-users check.
    uid_names: Mapping[int, tuple[str, ...]] = attrs.Factory(dict)
    fs: Fs = DEFAULT_FS
    executable: Callable[[str], bool] = lambda p: os.access(p, os.X_OK)
    budget: Callable[[Config, MailUser], ReplyBudget] | None = None
    #: With --clean-stale: removes directories as a user (:func:`clean_stale_as`).
    clean: Callable[[MailUser, Sequence[str]], list[tuple[str, str | None]]] | None = None
    #: --max-remove-fraction and --force (see :func:`find_stale`).
    max_remove_fraction: float = 0.5
    force: bool = False
    #: What earlier checks (or the scan cache) saw of each spool, by path.
    spool_marks: Mapping[str, SpoolMark] = attrs.Factory(dict)
    #: Stores what this check saw of the spools it trusts (None: nowhere).
    record_marks: Callable[[Mapping[str, SpoolMark]], None] | None = None
    uid_name: Callable[[int], str] = str
    gid_name: Callable[[int], str] = str
    #: Seconds each user's scan may take (--deadline).
    deadline: float = DEFAULT_DEADLINE


_RANK = {"error": 0, "warning": 1, "info": 2}


@attrs.frozen(kw_only=True)
class Report:
    """The outcome of ``nsprov check``."""

    config_path: str
    dialect: str | None = None
    dovecot_version: str | None = None
    version_source: str | None = None
    doveconf: bool = False
    findings: tuple[Finding, ...] = ()
    users: tuple[UserReport, ...] = ()

    @property
    def status(self) -> int:
        """The exit status: 1 when any finding is an error, else 0."""
        return 1 if any(f.severity == "error" for f in self.findings) else 0

    def counts(self) -> dict[str, int]:
        """How many findings of each severity."""
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def codes(self) -> set[tuple[str, str]]:
        """``(code, severity)`` of every finding."""
        return {(f.code, f.severity) for f in self.findings}


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


def run_checks(world: World) -> Report:
    """Run every check on *world*."""
    findings: list[Finding] = []
    base = {
        "config_path": world.config_path,
        "dovecot_version": world.dovecot_version,
        "version_source": world.version_source,
        "doveconf": world.doveconf is not None,
    }
    if world.doveconf_finding is not None:
        findings.append(world.doveconf_finding)
    config = world.config
    if config is None:
        findings = (
            list(world.trust_findings)
            + config_findings(world.config_path, world.config_problems)
            + findings
        )
        return _report(base, findings, [])
    findings += world.trust_findings
    try:
        config.check_does_something()
    except ConfigError as e:
        findings.append(
            _f(
                "error",
                "config-does-nothing",
                world.config_path,
                str(e),
                "Add a [[spool]] table (or an action such as [deny]).",
            )
        )
    template_findings = check_templates(config)
    findings += template_findings
    bad_templates = {f.subject for f in template_findings if f.code == "template-invalid"}
    fs = world.fs
    scans = scan_structure(config, fs=fs, deadline=world.deadline)
    templates_ok = {s.number for s in scans if f"spool[{s.number}]" not in bad_templates}
    findings += structure_findings(scans, templates_ok=templates_ok)
    findings += check_scan_cache(config)
    findings += check_scan_slow(config, scans)
    conf = world.doveconf
    findings += check_version(config, world.dovecot_version, world.version_source)
    if conf is not None:
        findings += check_separator(config, conf)
        findings += check_conf_namespaces(config, conf, scans)
        findings += check_prefix_overlap(config, conf)
        findings += check_wiring(
            config, conf, config_path=world.config_path, executable=world.executable
        )
        findings += check_mail_driver(config, conf)
        findings += check_identity(config, conf)
        findings += check_acl_plugin(config, conf, acl_plugin=world.acl_plugin)
    usable = attrs.evolve(config, spools=tuple(s.spool for s in scans if s.error is None))
    findings += list(world.user_findings)
    reports, user_findings, access, shown = _check_users(world, usable, conf)
    traversal = check_traversal(scans, fs=fs, users=world.users)
    findings += traversal
    findings += check_mailboxes(
        scans,
        fs=fs,
        access=access if world.users else None,
        stat_dirs=conf.maildir_stat_dirs if conf is not None else None,
        acl_required=acl_required(conf),
        uid_name=world.uid_name,
        gid_name=world.gid_name,
    )
    if world.users:
        unreachable = [f.subject or "" for f in traversal if f.severity == "error"]
        findings += no_access_findings(scans, access, len(world.users), unreachable=unreachable)
    findings += user_findings
    findings += check_virtual(config, world.users, world.uid_names)
    listings = {s.spool.path: (s.names if s.error is None else None) for s in scans}
    marks = spool_marks(scans, fs=fs)
    suspects = (
        {}
        if world.force
        else changed_spools(marks, world.spool_marks, max_fraction=world.max_remove_fraction)
    )
    for user in shown:
        stale, stale_findings = find_stale(
            config,
            user,
            fs=fs,
            listings=listings,
            max_remove_fraction=world.max_remove_fraction,
            force=world.force,
            suspects=suspects,
        )
        if world.clean is not None:
            removable = [d.path for d in stale if d.scheme == "current"]
            results = dict(world.clean(user, removable)) if removable else {}
            stale_findings = [f for f in stale_findings if f.code != "stale-dir"] + [
                _removed(user, path, error) for path, error in results.items()
            ]
        findings += stale_findings
    if world.record_marks is not None:
        # A suspect or empty spool keeps its last good mark (--force accepts the new one).
        world.record_marks({p: m for p, m in marks.items() if p not in suspects and m.count})
    return _report({**base, "dialect": config.dialect}, findings, reports)


def _removed(user: MailUser, path: str, error: str | None) -> Finding:
    shown = _show(path)
    if error is None:
        return _f(
            "info",
            "stale-removed",
            shown,
            f"removed {shown} as user {user.user}",
            "Nothing to do.",
        )
    return _f(
        "warning",
        "stale-remove-failed",
        shown,
        f"could not remove {shown} as user {user.user}: {error}",
        "Look at what the user cannot delete there (files another user or root created), and "
        "remove it by hand.",
    )


def _check_users(
    world: World, config: Config, conf: DovecotConf | None
) -> tuple[
    list[UserReport], list[Finding], dict[tuple[str, bytes], list[MailUser]], list[MailUser]
]:
    serve_mode = None if conf is None else "dict" in conf.userdb_drivers
    reports: list[UserReport] = []
    findings: list[Finding] = []
    access: dict[tuple[str, bytes], list[MailUser]] = {}
    shown: list[MailUser] = []
    failures: list[Finding] = []
    for user in world.users:
        report, found, keys = check_user(
            config,
            user,
            fs=world.fs,
            budget=world.budget,
            serve_mode=serve_mode,
            deadline=world.deadline,
        )
        for key in keys:
            access.setdefault(key, []).append(user)
        if report is None:
            failures += found
            continue
        if world.enumerated and not (report.served or report.over):
            continue
        reports.append(report)
        findings += found
        shown.append(user)
    if world.enumerated and failures:
        first = failures[0]
        findings.append(
            _f(
                "warning" if reports else "error",
                "user-error",
                first.subject,
                f"{len(failures)} of {len(world.users)} users could not be checked; the first: "
                f"{first.message}",
                first.fix,
            )
        )
    else:
        findings += failures
        shown += [u for u in world.users if u not in shown and not world.enumerated]
    return reports, findings, access, shown


def _report(
    base: Mapping[str, Any], findings: Sequence[Finding], users: Sequence[UserReport]
) -> Report:
    ordered = sorted(findings, key=lambda f: _RANK[f.severity])
    return Report(findings=tuple(ordered), users=tuple(users), **base)


# --- output -------------------------------------------------------------------------------


def render_json(report: Report) -> str:
    """The report as a JSON document (``--format=json``)."""
    import json  # noqa: PLC0415
    from importlib.metadata import version  # noqa: PLC0415

    doc = {
        "nsprov": version("nsprov"),
        "config": report.config_path,
        "dialect": report.dialect,
        "naming_scheme": NAMING_SCHEME,
        "naming": {"slug_length": SLUG_LENGTH, "hash_length": HASH_LENGTH},
        "dovecot": {
            "version": report.dovecot_version,
            "source": report.version_source,
            "doveconf": report.doveconf,
        },
        "status": report.status,
        "summary": report.counts(),
        "findings": [f.as_dict() for f in report.findings],
        "users": [u.as_dict() for u in report.users],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


_COLOURS = {"error": "\033[1;31m", "warning": "\033[1;33m", "info": "\033[36m"}
_BOLD = "\033[1m"
_RESET = "\033[0m"


def use_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (no-color.org)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and not environ.get("NO_COLOR")


def render_table(report: Report, *, colour: bool = False, width: int = 100) -> str:
    """The report for humans: findings by severity, each with its fix, then the users."""
    import textwrap  # noqa: PLC0415

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if colour else text

    version = (
        f"Dovecot {report.dovecot_version} ({report.version_source})"
        if report.dovecot_version
        else "Dovecot version unknown"
    )
    meta = [f"dialect {report.dialect}" if report.dialect else "", version]
    meta.append(f"naming scheme {NAMING_SCHEME} (slug {SLUG_LENGTH}, hash {HASH_LENGTH})")
    from .._postlogin import escape  # noqa: PLC0415 - the one escaping of human output

    lines = [f"nsprov check: {escape(report.config_path)}"]
    lines += ["  " + "; ".join(m for m in meta if m), ""]

    def wrap(text: str, first: str) -> list[str]:
        return textwrap.wrap(
            text,
            width,
            initial_indent=first,
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        ) or [first]

    for f in report.findings:
        tag = paint(f"{f.severity.upper():<7}", _COLOURS[f.severity])
        head = f"{tag} {paint(f.code, _BOLD)}"
        lines.append(head + (f"  {escape(f.subject)}" if f.subject else ""))
        lines += wrap(escape(f.message), "    ")
        lines += wrap(escape(f.fix), "    fix: ")
        lines.append("")
    if not report.findings:
        lines += ["No problems found.", ""]
    if report.users:
        lines.append(f"Users ({len(report.users)}):")
        name_w = max(4, *(len(escape(u.user)) for u in report.users))
        lines.append(
            f"  {'USER':<{name_w}}  {'UID':>7}  {'NAMESPACES':>10}  {'ENV BYTES':>9}  "
            f"{'USERDB_KEYS':>11}  SERVE REPLY"
        )
        for u in report.users:
            counts = f"{u.served}/{u.found}"
            serve = (
                "-"
                if u.serve is None
                else f"{u.serve.fits}/{u.serve.total} ({u.serve.full_size} B)"
            )
            lines.append(
                f"  {escape(u.user):<{name_w}}  {u.uid:>7}  {counts:>10}  {u.env_bytes:>9}  "
                f"{u.userdb_keys_bytes:>11}  {serve}"
            )
        lines.append("")
    totals = report.counts()
    summary = ", ".join(
        paint(_plural(totals[s], s), _COLOURS[s]) if totals[s] else _plural(0, s)
        for s in SEVERITIES
    )
    lines.append(summary)
    return "\n".join(lines) + "\n"


def _plural(count: int, severity: str) -> str:
    return f"{count} {severity}" + ("s" if count != 1 and severity != "info" else "")


# --- the command --------------------------------------------------------------------------


def _version_arg(text: str) -> str:
    import argparse  # noqa: PLC0415

    if not re.fullmatch(r"\d+\.\d+", text):
        raise argparse.ArgumentTypeError(f"expected X.Y, e.g. 2.3, got {text!r}")
    return text


def _positive(text: str) -> int:
    import argparse  # noqa: PLC0415

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _fraction(text: str) -> float:
    import argparse  # noqa: PLC0415

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    import argparse  # noqa: PLC0415

    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def check_parser() -> Any:
    """The argument parser of ``nsprov check``."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="nsprov check",
        description="Check the configuration, the spools and Dovecot's wiring; exit 1 on errors.",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="nsprov's TOML config")
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="USER",
        help="check this user (repeatable); default: every user Dovecot accepts, capped",
    )
    parser.add_argument(
        "--max-users", type=_positive, default=200, help="cap for the enumerated users"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--doveconf", metavar="PATH", help="the doveconf program")
    parser.add_argument(
        "--dovecot-config", metavar="FILE", help="Dovecot's config file (doveconf -c FILE)"
    )
    parser.add_argument("--dovecot", metavar="PATH", help="the dovecot program (for --version)")
    parser.add_argument(
        "--dovecot-version", type=_version_arg, metavar="X.Y", help="skip version detection"
    )
    parser.add_argument(
        "--deadline",
        type=_seconds,
        default=DEFAULT_DEADLINE,
        metavar="SECONDS",
        help="give up on a user whose scan takes longer (a hung filesystem); default 30",
    )
    parser.add_argument(
        "--clean-stale",
        action="store_true",
        help="remove stale per-user directories of the checked users, as each user",
    )
    parser.add_argument(
        "--max-remove-fraction",
        type=_fraction,
        default=0.5,
        metavar="F",
        help="leave a per-user parent alone when more than this fraction of it is stale",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="remove stale directories even of an empty, moved or shrunk spool or beyond "
        "--max-remove-fraction (and take the spools as they are now as the reference)",
    )
    parser.add_argument(
        "--state",
        default=None,
        metavar="FILE",
        help="where the check records each spool's file system and entry count between runs "
        f"(default {DEFAULT_STATE_FILE})",
    )
    return parser


def _find_program(name: str, given: str | None) -> str | None:
    import shutil  # noqa: PLC0415

    if given:
        return given
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    return shutil.which(name, path=search)


def _run_doveconf(args: Any) -> tuple[DovecotConf | None, Finding | None]:
    import subprocess  # noqa: PLC0415

    program = _find_program("doveconf", args.doveconf)
    if program is None or not os.access(program, os.X_OK):
        where = f" at {program}" if program else ""
        return None, _f(
            "info",
            "doveconf-unavailable",
            program,
            f"doveconf was not found{where}: the Dovecot checks (separator, namespaces, "
            "wiring, ACL plugin) were skipped",
            "Run the check where Dovecot is installed, or pass --doveconf=PATH.",
        )
    argv = [program, "-n"]
    if args.dovecot_config:
        argv += ["-c", args.dovecot_config]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, _doveconf_failed(argv, str(e))
    if proc.returncode != 0:
        return None, _doveconf_failed(argv, proc.stderr.strip() or f"exit status {proc.returncode}")
    return DovecotConf.parse(proc.stdout), None


def _doveconf_failed(argv: Sequence[str], why: str) -> Finding:
    return _f(
        "error",
        "doveconf-failed",
        " ".join(argv),
        f"{' '.join(argv)} failed: {why}; Dovecot itself will not start with this configuration",
        "Fix Dovecot's configuration (the message names the file and line), then run the "
        "check again.",
    )


def _dovecot_version(args: Any, conf: DovecotConf | None) -> tuple[str | None, str | None]:
    import subprocess  # noqa: PLC0415

    from .._worker import installed_version  # noqa: PLC0415

    if args.dovecot_version:
        return args.dovecot_version, "--dovecot-version"
    header = major_minor(conf.version) if conf is not None and conf.version else None
    if header and args.doveconf:
        return header, "doveconf"
    program = _find_program("dovecot", args.dovecot)
    if program is not None:
        try:
            proc = subprocess.run(
                [program, "--version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            proc = None
        if proc is not None and proc.returncode == 0 and (v := major_minor(proc.stdout)):
            return v, f"{program} --version"
    if header:
        return header, "doveconf"
    if detected := installed_version(["/usr/lib/dovecot/script-login"]):
        return detected, "/usr/lib/dovecot"
    return None, None


def _load(path: str) -> tuple[Config | None, tuple[str, ...], bool]:
    from .._config import _load_raw, load_config  # noqa: PLC0415

    try:
        config = load_config(path)
    except ConfigError as e:
        return None, e.problems, False
    except UntrustedFileError:
        return None, (), False  # an untrusted-file finding (check_trusted_files)
    try:
        raw = _load_raw(path, None)
    except NsprovError:  # pragma: no cover - it was just read
        raw = {}
    dovecot = raw.get("dovecot", {})
    return config, (), isinstance(dovecot, dict) and dovecot.get("acl_plugin") is True


def _resolve_users(
    args: Any, config: Config, conf: DovecotConf | None
) -> tuple[list[MailUser], list[Finding], dict[int, tuple[str, ...]]]:
    import pwd  # noqa: PLC0415

    from .._identity import mail_user_from_nss  # noqa: PLC0415
    from ..exceptions import IdentityError  # noqa: PLC0415

    entries = [(p.pw_name, p.pw_uid) for p in pwd.getpwall()]
    uid_names: dict[int, list[str]] = {}
    for name, uid in entries:
        uid_names.setdefault(uid, []).append(name)
    findings: list[Finding] = []
    if args.user:
        names = list(dict.fromkeys(args.user))
    else:
        first = conf.first_valid_uid if conf is not None else 500
        last = conf.last_valid_uid if conf is not None else 0
        names, total = select_users(
            entries, first_valid_uid=first, last_valid_uid=last, cap=args.max_users
        )
        if not total:
            findings.append(
                _f(
                    "info",
                    "no-users",
                    None,
                    f"no passwd user has a uid Dovecot accepts ({first}"
                    + (f"..{last}" if last else " or more")
                    + "): no user was checked",
                    "Name users with --user USER.",
                )
            )
        elif total > len(names):
            findings.append(
                _f(
                    "info",
                    "users-capped",
                    None,
                    f"{total} users have a uid Dovecot accepts; the first {len(names)} by uid "
                    "were checked",
                    "Raise --max-users, or name users with --user USER.",
                )
            )
    users = []
    for name in names:
        try:
            users.append(mail_user_from_nss(name, config.identity))
        except IdentityError as e:
            if args.user:
                findings.append(
                    _f(
                        "error",
                        "user-unknown",
                        f"user {name}",
                        str(e),
                        "Check the spelling, or that NSS (getent passwd USER) knows the user.",
                    )
                )
    return users, findings, {uid: tuple(n) for uid, n in uid_names.items()}


def _uid_name(uid: int) -> str:
    import pwd  # noqa: PLC0415

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _gid_name(gid: int) -> str:
    import grp  # noqa: PLC0415

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def gather(args: Any) -> World:
    """Look at the system: config, doveconf, Dovecot's version, NSS."""
    from .._serve import reply_budget  # noqa: PLC0415

    config, problems, acl_plugin = _load(args.config)
    trust = check_trusted_files(args.config, config, deadline=args.deadline)
    conf, conf_finding = _run_doveconf(args)
    version, source = _dovecot_version(args, conf)
    users: list[MailUser] = []
    user_findings: list[Finding] = []
    uid_names: dict[int, tuple[str, ...]] = {}
    if config is not None:
        users, user_findings, uid_names = _resolve_users(args, config, conf)

    def budget(cfg: Config, user: MailUser) -> ReplyBudget:
        return reply_budget(cfg, user)

    state = args.state or DEFAULT_STATE_FILE

    return World(
        config_path=args.config,
        config=config,
        config_problems=problems,
        trust_findings=tuple(trust),
        acl_plugin=acl_plugin,
        doveconf=conf,
        doveconf_finding=conf_finding,
        dovecot_version=version,
        version_source=source,
        users=tuple(users),
        user_findings=tuple(user_findings),
        enumerated=not args.user,
        uid_names=uid_names,
        budget=budget,
        deadline=args.deadline,
        clean=clean_stale_as if args.clean_stale else None,
        max_remove_fraction=args.max_remove_fraction,
        force=args.force,
        spool_marks={**(cache_marks(config) if config is not None else {}), **load_marks(state)},
        record_marks=lambda marks: store_marks(state, marks),
        uid_name=_uid_name,
        gid_name=_gid_name,
    )


def main(argv: Sequence[str]) -> int:
    """``nsprov check``: print the report; 0 without errors, 1 with errors, 2 on usage errors."""
    args = check_parser().parse_args(list(argv))
    report = run_checks(gather(args))
    if args.format == "json":
        out = render_json(report)
    else:
        out = render_table(report, colour=use_colour(sys.stdout, os.environ))
    sys.stdout.write(out)
    sys.stdout.flush()
    return report.status
