"""Spool discovery: which spool entries become namespaces for one user, and why not.

The scanner is pure apart from the filesystem calls it is given (:class:`Fs`):
stat results, ACLs and the user's identity go in, verdicts come out.  Root
running this code changes nothing: access is evaluated for the target
identity by :func:`nsprov._perms.decide`, never with ``os.access``.

Reason codes, in the order they are tested for each entry:

``dot-entry``
    the name starts with ``.``
``unservable-name``
    not valid UTF-8, contains the separator or a control character, or the
    prefix template renders an invalid prefix
``symlink``
    a symbolic link (with ``symlinks = "inside"``: one whose target is
    outside the spool, or dangling)
``not-a-directory``
    not a directory (and not an mbox file)
``excluded``
    matched by an ``exclude`` pattern or the spool's ignore file, or not
    matched by a non-empty ``include`` list (gitignore semantics).  Patterns
    are matched only after the cheap tests above (and, in post-login, after
    the test that the user may read the entry at all): a pattern list costs
    far more per entry than a ``stat``
``no-access``
    the user may not read and search the directory, its ``cur`` or ``new``,
    or search every directory above it
``not-a-maildir``
    no ``cur`` and ``new`` subdirectories
``unsupported-format``
    an mbox file, or an sdbox/mdbox directory: a per-user INDEX is not safe there
``name-collision``
    two entries hash to one namespace name (the first in order wins)
``duplicate-prefix``
    the prefix is already taken by an earlier entry or a configured namespace
``over-limit``
    beyond ``namespace.max``, or beyond what fits the kernel's environment limits
"""

from __future__ import annotations

import os
import stat as st
from typing import TYPE_CHECKING, Literal

import attrs

from . import _plainscan

# Fs, DEFAULT_FS, Step and the readers live in nsprov._fs; importable from here as before.
from ._fs import DEFAULT_FS as DEFAULT_FS  # noqa: PLC0414 - re-exported
from ._fs import IGNORE_MAX_BYTES as IGNORE_MAX_BYTES  # noqa: PLC0414 - re-exported
from ._fs import Fs as Fs  # noqa: PLC0414 - re-exported
from ._fs import Step as Step  # noqa: PLC0414 - re-exported
from ._location import MailLocation
from ._model import Namespace, has_control
from ._perms import R_OK, X_OK, FileFacts, decide
from ._profile_compile import path_spec, spool_templates
from .exceptions import InvalidLocationError, InvalidNamespaceError, NsprovError
from .exceptions import SpoolError as SpoolError  # noqa: PLC0414 - re-exported (it lived here)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ._breaker import SpoolBreaker
    from ._config import Config, ScanCacheConfig, SpoolConfig
    from ._identity import MailUser
    from ._perms import Identity

Reason = Literal[
    "dot-entry",
    "unservable-name",
    "excluded",
    "symlink",
    "not-a-directory",
    "no-access",
    "not-a-maildir",
    "unsupported-format",
    "name-collision",
    "duplicate-prefix",
    "over-limit",
]
REASONS: tuple[str, ...] = Reason.__args__  # type: ignore[attr-defined]
_RX = R_OK | X_OK


def display(raw: bytes) -> str:
    r"""An entry name for humans and JSON: UTF-8, other bytes as ``\xNN``.

    >>> display(b"caf\xc3\xa9 \xff")
    'café \\xff'
    """
    return raw.decode("utf-8", "backslashreplace")


@attrs.frozen
class Served:
    """A spool entry served to the user as a namespace."""

    spool: str
    raw: bytes
    path: str
    namespace: Namespace

    @property
    def entry(self) -> str:
        """The entry name for display."""
        return display(self.raw)


@attrs.frozen
class Skipped:
    """A spool entry not served, with a reason code and a human-readable detail."""

    spool: str
    raw: bytes
    reason: Reason
    detail: str

    @property
    def entry(self) -> str:
        """The entry name for display."""
        return display(self.raw)


@attrs.frozen
class Discovery:
    """Everything one scan found for one user, in discovery order."""

    served: tuple[Served, ...]
    skipped: tuple[Skipped, ...]
    #: True when the scan stopped early, past ``namespace.max`` (post-login, without --explain).
    truncated: bool = False
    #: Problems that did not stop the scan (an ignore file that was not used).
    warnings: tuple[str, ...] = ()

    @property
    def namespaces(self) -> tuple[Namespace, ...]:
        """The namespaces of the served entries."""
        return tuple(s.namespace for s in self.served)


#: The cap on the patterns of a spool's ignore file; beyond it, the file is not used (one warning).
IGNORE_MAX_PATTERNS = 1000


def anchored_verdict(
    steps: Sequence[Step], depth: int, ident: Identity
) -> tuple[Reason, str] | None:
    """Pure: the verdict on an anchored walk (:func:`nsprov._fs.anchored_facts`) of *depth* names, then cur/new.

    Every name but the last must be a directory *ident* may search, the last
    (the entry) one it may read and search, and its ``cur`` and ``new``
    directories it may read and search.  None means servable.  The rule is
    :func:`nsprov._plainscan.anchored_verdict`, the lean path's.
    """
    return _plainscan.anchored_verdict(steps, depth, ident)  # type: ignore[return-value]


_components = _plainscan.components


def _searchable(fs: Fs, dirs: Iterable[bytes], ident: Identity) -> str | None:
    """None if *ident* may search every directory in *dirs*, else why not."""
    for d in dirs:
        s, facts = fs.facts(d)
        if not st.S_ISDIR(s.st_mode):
            return f"{os.fsdecode(d)} is not a directory"
        if not decide(facts, ident, X_OK):
            return f"{os.fsdecode(d)} is not searchable (mode {s.st_mode & 0o7777:04o})"
    return None


@attrs.frozen
class _Matcher:
    spec: object | None
    include: object | None

    def excluded(self, name: str) -> str | None:
        if self.include is not None and not self.include.match_file(name):  # type: ignore[attr-defined]
            return "not matched by any include pattern"
        if self.spec is not None and self.spec.match_file(name):  # type: ignore[attr-defined]
            return "matched an exclude pattern"
        return None


def _ignore_patterns(fs: Fs, spool: SpoolConfig, real: bytes) -> tuple[list[str], str | None]:
    """The patterns of *spool*'s ignore file, and a warning when the file is not used."""
    if not spool.ignore_file:
        return [], None
    path = os.path.join(real, os.fsencode(spool.ignore_file))
    try:
        text = fs.read_ignore(path)
    except OSError as e:  # UntrustedFileError names the file and the rule
        reason = str(e) if isinstance(e, NsprovError) else f"{os.fsdecode(path)}: {e.strerror}"
        return [], f"spool {spool.path}: ignore file not used: {reason}"
    lines = text.splitlines() if text else []
    count = sum(1 for line in lines if line.strip() and not line.startswith("#"))
    if count > IGNORE_MAX_PATTERNS:
        return [], (
            f"spool {spool.path}: ignore file not used: {os.fsdecode(path)} has {count} "
            f"patterns, more than {IGNORE_MAX_PATTERNS}"
        )
    return lines, None


def _matcher(
    fs: Fs, spool: SpoolConfig, real: bytes, warnings: list[str] | None = None
) -> _Matcher:
    patterns = list(spool.exclude)
    ignored, warning = _ignore_patterns(fs, spool, real)
    patterns += ignored
    if warning is not None and warnings is not None:
        warnings.append(warning)
    if not patterns and not spool.include:
        return _Matcher(None, None)
    return _Matcher(
        path_spec(patterns) if patterns else None,
        path_spec(spool.include) if spool.include else None,
    )


class _Builder:
    """Turns a served entry into a :class:`Namespace`: the plain builder, then the model."""

    def __init__(self, spool: SpoolConfig, user: MailUser) -> None:
        self.spool = spool
        self.plain = _plainscan.Builder(spool_templates(spool), user.user, user.home)

    def build(self, raw: bytes, name: str, path: str) -> Namespace:
        ns = self.plain.build(raw, name, path)
        loc = ns.location
        return Namespace(
            name=ns.name,
            prefix=ns.prefix,
            separator=ns.separator,
            list=ns.list,  # type: ignore[arg-type]
            subscriptions=ns.subscriptions,
            hidden=ns.hidden,
            location=MailLocation(
                root=loc.root,
                index=loc.index,
                control=loc.control,
                index_private=loc.index_private,
                inbox=loc.inbox,
            ),
        )


def _classify_dir(
    fs: Fs, path: bytes, facts: FileFacts, ident: Identity
) -> tuple[Reason, str] | None:
    """Check a directory entry: access to it, then maildir shape, then access to cur/new."""
    d = decide(facts, ident, _RX)
    if not d:
        return "no-access", f"directory not readable and searchable ({d.via})"
    sub: dict[bytes, FileFacts] = {}
    for child in (b"cur", b"new"):
        try:
            s, child_facts = fs.facts(path + b"/" + child)
        except FileNotFoundError:
            break
        if not st.S_ISDIR(s.st_mode):
            break
        sub[child] = child_facts
    if len(sub) < 2:
        for marker, what in ((b"dbox-Mails", "sdbox"), (b"storage", "mdbox")):
            try:
                fs.lstat(path + b"/" + marker)
            except FileNotFoundError:
                continue
            return "unsupported-format", f"looks like {what}; only maildir is served"
        return "not-a-maildir", "no cur and new subdirectories"
    for child, child_facts in sub.items():
        d = decide(child_facts, ident, _RX)
        if not d:
            return "no-access", f"{child.decode()} not readable and searchable ({d.via})"
    return None


def _is_mbox(fs: Fs, path: bytes) -> bool:
    try:
        text = fs.read_text(path)
    except OSError:
        return False
    return text is not None and text.startswith("From ")


class _Skip(Exception):  # noqa: N818 - not an error: an entry's verdict
    """An entry is not served: its reason code and detail (raised by the helpers of :func:`scan_spool`)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason: Reason = reason
        self.detail = detail


def _spool_names(
    fs: Fs, spool: SpoolConfig, ident: Identity, scan_cache: ScanCacheConfig | None
) -> tuple[bytes, Iterable[bytes]]:
    """The spool's real path and the names to look at: the cache's candidates, or all, sorted.

    Raises:
        SpoolError: The spool cannot be resolved or listed.
    """
    try:
        real = fs.realpath(spool.path_bytes)
        names: Iterable[bytes] | None = None
        if scan_cache is not None:
            from ._scancache import candidates  # noqa: PLC0415 - only when configured

            names = candidates(scan_cache, spool, real, ident, fs)
        if names is None:
            names = sorted(fs.listdir(real))
    except OSError as e:
        raise SpoolError(f"spool {spool.path}: {e.strerror or e}") from None
    return real, names


def _follow_link(
    fs: Fs, spool: SpoolConfig, real: bytes, path: bytes, ident: Identity
) -> tuple[bytes, os.stat_result, FileFacts]:
    """The target of the symbolic link *path*, its stat and facts, if it may be served.

    Raises:
        _Skip: Links are not followed, or this one leads outside the spool, nowhere,
            or through a directory *ident* may not search.
    """
    if spool.symlinks == "skip":
        raise _Skip("symlink", 'symbolic links are not followed (symlinks = "skip")')
    target = fs.realpath(path)
    if not target.startswith(real + b"/") or target == real:
        raise _Skip("symlink", "target is outside the spool")
    try:
        s, facts = fs.facts(target)
    except FileNotFoundError:
        raise _Skip("symlink", "dangling link") from None
    why = _searchable(fs, _components(target)[len(_components(real)) : -1], ident)
    if why is not None:
        raise _Skip("no-access", f"link target not reachable: {why}")
    return target, s, facts


def _dir_verdict(
    fs: Fs, real: bytes, prefix: bytes, path: bytes, facts: FileFacts, ident: Identity
) -> tuple[Reason, str] | None:
    """The path-based checks of a directory entry, then what one descriptor walk saw."""
    verdict = _classify_dir(fs, path, facts, ident)
    if verdict is None and fs.anchored is not None:
        # The path-based checks may each have seen another inode (an entry swapped
        # between two calls): only what one descriptor walk saw decides.
        parts = path[len(prefix) :].split(b"/")
        try:
            verdict = anchored_verdict(fs.anchored(real, parts), len(parts), ident)
        except OSError as e:
            verdict = "no-access", f"cannot be checked by descriptor ({e.strerror or e})"
    return verdict


def _admit(
    builder: _Builder,
    raw: bytes,
    name: str,
    path: bytes,
    taken_names: set[str],
    taken_prefixes: set[str],
) -> Served:
    """The servable entry as a namespace, its name and prefix taken.

    Raises:
        _Skip: The namespace is invalid, or its name or prefix is taken.
    """
    try:
        namespace = builder.build(raw, name, os.fsdecode(path))
    except (InvalidNamespaceError, InvalidLocationError) as e:
        raise _Skip("unservable-name", str(e)) from None
    if namespace.name in taken_names:
        raise _Skip(
            "name-collision", f"namespace name {namespace.name} is taken by an earlier entry"
        )
    if namespace.prefix in taken_prefixes:
        raise _Skip("duplicate-prefix", f"prefix {namespace.prefix!r} is taken")
    taken_names.add(namespace.name)
    taken_prefixes.add(namespace.prefix)
    return Served(builder.spool.path, raw, os.fsdecode(path), namespace)


def scan_spool(
    spool: SpoolConfig,
    user: MailUser,
    *,
    fs: Fs = DEFAULT_FS,
    taken_prefixes: set[str],
    taken_names: set[str],
    served: list[Served],
    skipped: list[Skipped],
    keep_skipped: bool = True,
    stop_after: int | None = None,
    scan_cache: ScanCacheConfig | None = None,
    warnings: list[str] | None = None,
) -> bool:
    """Scan one spool, appending to *served* and *skipped* (pure but for *fs*).

    With *stop_after*, stop as soon as more than that many entries are served
    and return True (the rest of the spool is not read: on a large spool a
    login pays only for the entries it can use).  With *scan_cache*, a fresh
    cache narrows the scan to the entries the user could read (see
    :mod:`nsprov._scancache`); entries left out are not reported as skipped.
    An ignore file that is not used (untrusted, too large) adds one line to
    *warnings*: the spool is scanned without it.
    """
    ident = user.identity
    real, names = _spool_names(fs, spool, ident, scan_cache)
    why = _searchable(fs, _components(real), ident)
    if why is not None:
        skipped.append(Skipped(spool.path, b"", "no-access", f"spool not reachable: {why}"))
        return False
    matcher = _matcher(fs, spool, real, warnings)
    builder = _Builder(spool, user)
    sep = spool.separator.encode("utf-8")

    def skip(raw: bytes, reason: Reason, detail: str) -> None:
        if keep_skipped:
            skipped.append(Skipped(spool.path, raw, reason, detail))

    # The loop below runs once per spool entry: on a large spool, most entries are ones
    # the user may not read, so that case is kept to the system calls and one decide(),
    # inline; the helpers run only for links and for entries the user may read.
    facts_of, prefix = fs.facts, real + b"/"
    for raw in names:
        if raw.startswith(b"."):
            skip(raw, "dot-entry", "names starting with '.' are never served")
            continue
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            skip(
                raw,
                "unservable-name",
                "not valid UTF-8 (Dovecot: 'Namespace prefix not valid UTF8')",
            )
            continue
        if sep in raw:
            skip(raw, "unservable-name", f"contains the separator {spool.separator!r}")
            continue
        if has_control(name):
            skip(raw, "unservable-name", "contains a control character")
            continue
        path = prefix + raw
        try:
            s, facts = facts_of(path)
        except FileNotFoundError:
            continue  # removed while we looked
        if st.S_ISLNK(s.st_mode):
            try:
                path, s, facts = _follow_link(fs, spool, real, path, ident)
            except _Skip as e:
                skip(raw, e.reason, e.detail)
                continue
        if not st.S_ISDIR(s.st_mode):
            if st.S_ISREG(s.st_mode) and _is_mbox(fs, path):
                skip(raw, "unsupported-format", "an mbox file; only maildir is served")
            else:
                skip(raw, "not-a-directory", "not a directory")
            continue
        if not keep_skipped and not decide(facts, ident, _RX).allowed:
            continue  # the common case on a large spool, without building its reason
        # Patterns last: matching a name against a long list costs more than any test above.
        if matcher.spec is not None or matcher.include is not None:
            excluded = matcher.excluded(name + "/")
            if excluded is not None:
                skip(raw, "excluded", excluded)
                continue
        verdict = _dir_verdict(fs, real, prefix, path, facts, ident)
        if verdict is not None:
            skip(raw, *verdict)
            continue
        try:
            served.append(_admit(builder, raw, name, path, taken_names, taken_prefixes))
        except _Skip as e:
            skip(raw, e.reason, e.detail)
            continue
        if stop_after is not None and len(served) > stop_after:
            return True
    return False


def discover(
    config: Config,
    user: MailUser,
    *,
    fs: Fs = DEFAULT_FS,
    keep_skipped: bool = True,
    breaker: SpoolBreaker | None = None,
) -> Discovery:
    """Scan every spool in config order for *user*; cap at ``namespace.max``.

    Without *keep_skipped* (post-login), scanning stops once more than
    ``namespace.max`` entries are served; the result is then ``truncated``;
    and a configured, fresh ``[scan_cache]`` narrows the scan.  With
    *breaker* (post-login as root), a spool whose last scan the deadline cut
    is skipped with a warning (:mod:`nsprov._breaker`).
    """
    served: list[Served] = []
    skipped: list[Skipped] = []
    taken_prefixes = set(config.config_prefixes)
    taken_names = {n.lower() for n in config.reserved_names}
    stop_after = None if keep_skipped else config.max_namespaces
    truncated = False
    warnings: list[str] = []
    for spool in config.spools:
        entered = False
        if breaker is not None:
            try:
                why = breaker.enter(spool.path)
            except OSError as e:  # an untrusted state directory names itself and the rule
                warnings.append(f"spool breaker not used: {e}")
                breaker, why = None, None
            if why is not None:
                warnings.append(why)
                continue
            entered = breaker is not None
        try:
            truncated = scan_spool(
                spool,
                user,
                fs=fs,
                taken_prefixes=taken_prefixes,
                taken_names=taken_names,
                served=served,
                skipped=skipped,
                keep_skipped=keep_skipped,
                stop_after=stop_after,
                scan_cache=None if keep_skipped else config.scan_cache,
                warnings=warnings,
            )
        finally:
            if entered and breaker is not None:
                breaker.leave(spool.path)
        if truncated:
            break
    found = Discovery(tuple(served), tuple(skipped), truncated=truncated, warnings=tuple(warnings))
    return limit(found, config.max_namespaces, "namespace.max")


def limit(discovery: Discovery, keep: int, why: str) -> Discovery:
    """Keep the first *keep* served entries; the rest become ``over-limit``."""
    if len(discovery.served) <= keep:
        return discovery
    over = [
        Skipped(s.spool, s.raw, "over-limit", f"beyond {why} ({keep})")
        for s in discovery.served[keep:]
    ]
    return Discovery(
        discovery.served[:keep],
        (*discovery.skipped, *over),
        truncated=discovery.truncated,
        warnings=discovery.warnings,
    )


def skipped_counts(skipped: Sequence[Skipped]) -> dict[str, int]:
    """How many entries were skipped for each reason."""
    counts: dict[str, int] = {}
    for s in skipped:
        counts[s.reason] = counts.get(s.reason, 0) + 1
    return counts
