"""The lean login path: a compiled profile and a post-login environment in, variables out.

:func:`run_login` runs the profile's actions in order as the full worker does
(``deny``, ``alert``, ``acl_groups``, ``last_login`` to a file, ``fields``
with the rules of :mod:`nsprov._actrules`, and ``namespaces``;
:func:`nsprov._profile_compile.compile_profile` decides which configurations
it serves); :func:`compute` runs the ``namespaces`` action alone.  That
action is the identity, the scan of every spool with the one permission
engine (:mod:`nsprov._access`), the namespace
checks, the fields of the Dovecot dialect within the kernel's limits
(:mod:`nsprov._fields`), and the index/control directories created as the
user.  It imports only built-in and ``os``-level standard library modules
(a test asserts the set) and nsprov's standard-library-only modules.

A spool with include/exclude patterns imports :mod:`re` to match them
(compiled at profile time to the regular expressions pathspec uses); a
spool's ignore file is read at every login under the trust rule, and its
patterns are the profile's when its text is the one the profile compiled.
What it does not do, it refuses with :class:`FullPathNeeded` (a
:class:`~nsprov.exceptions.NsprovError`): the caller then runs the full path
for that login, which reports like any other login.
"""

from __future__ import annotations

import stat as st

from . import _access
from . import _os as os  # not the os module: see nsprov._os
from ._access import allows
from ._fields import DEFAULT_ENV_BUDGET, MAX_ARG_STRLEN, fit, namespace_problems, user_dirs
from ._plainscan import (
    RX,
    X_OK,
    Builder,
    anchored_at,
    anchored_facts,
    anchored_verdict,
    components,
    drop_privileges,
    ensure_dirs,
    identity_from_environ,
    missing_dirs,
    read_acl,
    render,
)
from .exceptions import (
    InvalidLocationError,
    InvalidNamespaceError,
    NsprovError,
    SpoolError,
    UntrustedFileError,
)

TYPE_CHECKING = False  # not typing's: importing typing costs every login ~7 ms
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence
    from typing import Any

#: The version of the profile's layout; a profile carries it as ``"schema"``.
from ._defaults import PROFILE_SCHEMA as PROFILE_SCHEMA  # noqa: E402, PLC0414 - re-exported

#: The cap on a spool's ignore file (:data:`nsprov._fs.IGNORE_MAX_BYTES`).
IGNORE_MAX_BYTES = 64 << 10
#: The cap on its patterns (:data:`nsprov._scan.IGNORE_MAX_PATTERNS`).
IGNORE_MAX_PATTERNS = 1000


def read_ignore_file(path: bytes) -> str | None:
    """A spool's ignore file, or None when absent (:func:`nsprov._fs.read_ignore_file`'s rule).

    Raises:
        UntrustedFileError: It breaks the trust rule or the size cap.
        OSError: It cannot be read.
    """
    from ._trust import read_trusted  # noqa: PLC0415 - only for a spool with an ignore file

    try:
        data = read_trusted(path, what="ignore file", limit=IGNORE_MAX_BYTES)
    except FileNotFoundError:
        return None
    except UntrustedFileError:
        # A spool others may write without an ignore file is no finding: nothing was planted.
        try:
            os.lstat(path)
        except FileNotFoundError:
            return None
        raise
    return data.decode("utf-8", "replace")


class FullPathNeeded(NsprovError):  # noqa: N818 - not a failure: the full path serves this login
    """This login needs the full path (a debug user, an ignore file, a stale profile …)."""


class LeanError(NsprovError, OSError):
    """A filesystem error the lean path does not report itself (the full path does)."""


class _OsFs:
    """The real filesystem, as the lean scan calls it (the attributes of :class:`nsprov._fs.Fs`)."""

    __slots__ = ()
    lstat = staticmethod(os.lstat)
    listdir = staticmethod(os.listdir)
    getxattr = staticmethod(os.getxattr)
    realpath = staticmethod(os.realpath)
    anchored = staticmethod(anchored_facts)


OS_FS = _OsFs()


#: :func:`compute`'s default *protocol*: the caller has checked that the protocol runs namespaces.
CHECKED = "*"


def version_signs(environ: Mapping[str, str], dialect: str) -> str | None:
    """A warning when userdb fields look like the other Dovecot version's."""
    if dialect == "2.3" and any(k in environ for k in ("NAMESPACE+", "MAIL_DRIVER", "MAIL_PATH")):
        return (
            "userdb fields look like Dovecot 2.4 (NAMESPACE+/MAIL_DRIVER/MAIL_PATH) but "
            '[dovecot] version = "2.3": on 2.4 the 2.3 dialect replaces every namespace'
        )
    if dialect == "2.4" and any(k in environ for k in ("MAIL", "MAIL_LOCATION")):
        return 'userdb fields look like Dovecot 2.3 (MAIL) but [dovecot] version = "2.4"'
    return None


class _Scan:
    """One login's scan of every spool: what :func:`nsprov._scan.discover` does without skips.

    It serves exactly the entries the full scan serves, with fewer system
    calls: a skipped entry's reason is never built, so an mbox file is not
    read and no sdbox/mdbox marker looked for (they only name the reason);
    and on the real filesystem every entry is checked in one pass, by the
    descriptor walk alone (``openat`` of the entry, ``fstat``, its ACL, then
    ``fstatat`` and the ACL of ``cur`` and ``new``, ``close``), where the
    full scan first checks it by path too.  Without a concurrent rename both
    see the same inodes; with one, the walk, which sees what is served,
    decides.  Only a symbolic link entry takes the path-based checks of its
    target first (:meth:`follow`).  The spool and its ancestors are checked
    once per spool.
    """

    def __init__(self, fs: Any, ident: _access.Ident, user: str, home: str | None) -> None:
        self.fs = fs
        self.ident = ident
        self.user = user
        self.home = home
        #: ``(spool path, namespace)`` of each served entry, in discovery order.
        self.served: list[tuple[str, Any]] = []
        self.warnings: list[str] = []
        #: The descriptor of the spool being scanned, for the descriptor walks.
        self.real_fd: int | None = None

    def facts(self, path: bytes) -> tuple[os.stat_result, _access.Facts]:
        s = self.fs.lstat(path)
        acl = read_acl(path, self.fs.getxattr)
        return s, _access.Facts(s.st_mode, s.st_uid, s.st_gid, acl)

    def searchable(self, dirs: Sequence[bytes]) -> bool:
        for d in dirs:
            s, facts = self.facts(d)
            if not st.S_ISDIR(s.st_mode) or not allows(facts, self.ident, X_OK):
                return False
        return True

    def follow(self, spool: Mapping[str, Any], real: bytes, path: bytes) -> Any:
        """``(path, stat, facts)`` of a link's target if it may be served, else None."""
        if spool["symlinks"] == "skip":
            return None
        target = self.fs.realpath(path)
        if not target.startswith(real + b"/") or target == real:
            return None
        try:
            s, facts = self.facts(target)
        except FileNotFoundError:
            return None
        if not self.searchable(components(target)[len(components(real)) : -1]):
            return None
        return target, s, facts

    def walk(self, real: bytes, parts: Sequence[bytes]) -> Any:
        """The descriptor walk of *parts* from the spool's descriptor (opened once), None on error."""
        try:
            if self.real_fd is None:
                self.real_fd = os.open(real, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            return anchored_at(self.real_fd, parts)
        except OSError:
            return None

    def verdict(self, real: bytes, prefix: bytes, path: bytes) -> bool:
        """Whether one descriptor walk finds entry *path* a maildir the user may read."""
        parts = path[len(prefix) :].split(b"/")
        anchored: Callable[[bytes, Sequence[bytes]], Any] | None = self.fs.anchored
        if anchored is anchored_facts:  # the real filesystem: the spool's descriptor, opened once
            steps = self.walk(real, parts)
            return steps is not None and self.servable(steps, len(parts))
        if anchored is None:  # a test that fakes the filesystem: the path-based checks
            for child in (b"cur", b"new"):
                try:
                    s, facts = self.facts(path + b"/" + child)
                except FileNotFoundError:
                    return False
                if not st.S_ISDIR(s.st_mode) or not allows(facts, self.ident, RX):
                    return False
            return True
        try:
            return self.servable(anchored(real, parts), len(parts))
        except OSError:
            return False

    def servable(self, steps: Sequence[tuple[bytes, int, Any]], depth: int) -> bool:
        """Whether a descriptor walk of *depth* names found a maildir the user may read."""
        return anchored_verdict(steps, depth, self.ident, explain=False) is None

    def exclude(self, spool: Mapping[str, Any], real: bytes) -> Sequence[tuple[str, int, bool]]:
        """The spool's compiled exclude patterns, with its ignore file's as the full path reads it.

        The ignore file is read under the trust rule, at every login; its
        patterns are the profile's, compiled for this very text.

        Raises:
            FullPathNeeded: The ignore file's text is not the one the profile compiled.
        """
        if not spool["ignore_file"]:
            return spool["exclude"]  # type: ignore[no-any-return]
        path = os.join(real, os.fsencode(spool["ignore_file"]))
        try:
            self.fs.lstat(path)
        except FileNotFoundError:
            return spool["exclude"]  # type: ignore[no-any-return]
        try:
            text = read_ignore_file(path)
        except OSError as e:  # UntrustedFileError names the file and the rule
            reason = str(e) if isinstance(e, NsprovError) else f"{os.fsdecode(path)}: {e.strerror}"
            self.warnings.append(f"spool {spool['path']}: ignore file not used: {reason}")
            return spool["exclude"]  # type: ignore[no-any-return]
        lines = text.splitlines() if text else []
        count = sum(1 for line in lines if line.strip() and not line.startswith("#"))
        if count > IGNORE_MAX_PATTERNS:
            self.warnings.append(
                f"spool {spool['path']}: ignore file not used: {os.fsdecode(path)} has {count} "
                f"patterns, more than {IGNORE_MAX_PATTERNS}"
            )
            return spool["exclude"]  # type: ignore[no-any-return]
        if not lines:
            return spool["exclude"]  # type: ignore[no-any-return]
        compiled = spool["ignore"]
        if compiled is None or compiled[0] != text:
            raise FullPathNeeded(f"spool {spool['path']}: the ignore file is not the profile's")
        return compiled[1]  # type: ignore[no-any-return]

    def spool(
        self,
        spool: Mapping[str, Any],
        taken_names: set[str],
        taken_prefixes: set[str],
        stop_after: int,
    ) -> bool:
        """Scan one spool (see :func:`nsprov._scan.scan_spool`); True when past *stop_after*."""
        fs, ident = self.fs, self.ident
        try:
            real = fs.realpath(os.fsencode(spool["path"]))
            names = sorted(fs.listdir(real))
        except OSError as e:
            raise SpoolError(f"spool {spool['path']}: {e.strerror or e}") from None
        if not self.searchable(components(real)):
            return False
        matcher = _matcher(self.exclude(spool, real), spool["include"])
        builder = Builder(spool, self.user, self.home)
        sep = spool["separator"].encode("utf-8")
        prefix = real + b"/"
        allows = _access.allows
        from ._fields import CONTROL  # noqa: PLC0415 - loaded with the module; no cost

        walk = self.fs.anchored is anchored_facts  # the real filesystem: one pass per entry

        for raw in names:
            if raw.startswith(b".") or sep in raw:
                continue
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if not CONTROL.isdisjoint(name):
                continue
            path = prefix + raw
            if walk:
                # One pass: the descriptor walk reads the entry and its cur/new, and decides.
                if matcher is not None and matcher(name + "/"):
                    continue
                steps = self.walk(real, [raw])
                if steps is None:
                    continue
                if not st.S_ISLNK(steps[0][1]):
                    if self.servable(steps, 1):
                        self.admit(spool, builder, raw, name, path, taken_names, taken_prefixes)
                        if len(self.served) > stop_after:
                            return True
                    continue
            try:
                s, facts = self.facts(path)
            except FileNotFoundError:
                continue
            if st.S_ISLNK(s.st_mode):
                followed = self.follow(spool, real, path)
                if followed is None:
                    continue
                path, s, facts = followed
            if not st.S_ISDIR(s.st_mode) or not allows(facts, ident, RX):
                continue
            # Patterns last: matching a name against a long list costs more than any test above.
            if matcher is not None and matcher(name + "/"):
                continue
            if not self.verdict(real, prefix, path):
                continue
            self.admit(spool, builder, raw, name, path, taken_names, taken_prefixes)
            if len(self.served) > stop_after:
                return True
        return False

    def admit(
        self,
        spool: Mapping[str, Any],
        builder: Builder,
        raw: bytes,
        name: str,
        path: bytes,
        taken_names: set[str],
        taken_prefixes: set[str],
    ) -> None:
        """Serve the servable entry *raw* at *path* unless its namespace is invalid or taken."""
        try:
            ns = builder.build(raw, name, os.fsdecode(path))
        except (InvalidNamespaceError, InvalidLocationError):
            return
        if ns.name in taken_names or ns.prefix in taken_prefixes:
            return
        taken_names.add(ns.name)
        taken_prefixes.add(ns.prefix)
        self.served.append((spool["path"], ns))


def _matcher(
    exclude: Sequence[tuple[str, int, bool]], include: Sequence[tuple[str, int, bool]] | None
) -> Callable[[str], bool] | None:
    """Whether a name is excluded by the compiled patterns (None: no patterns, nothing is)."""
    if not exclude and include is None:
        return None
    import re  # noqa: PLC0415 - only for a spool with patterns

    def compiled(patterns: Sequence[tuple[str, int, bool]]) -> list[tuple[Any, bool]]:
        return [(re.compile(rx, flags).search, inc) for rx, flags, inc in patterns]

    out, into = compiled(exclude), None if include is None else compiled(include)

    def decide(patterns: list[tuple[Any, bool]], name: str) -> bool:
        matched = False
        for search, inc in patterns:
            if search(name) is not None:
                matched = inc
        return matched

    def excluded(name: str) -> bool:
        if into is not None and not decide(into, name):
            return True
        return bool(out) and decide(out, name)

    return excluded


def _discover(profile: Mapping[str, Any], scan: _Scan, breaker: Any) -> bool:
    """Scan every spool in profile order, with the breaker; True when cut at ``namespace.max``."""
    taken_prefixes = set(profile["config_prefixes"])
    taken_names = {n.lower() for n in profile["reserved_names"]}
    stop_after = profile["max_namespaces"]
    for spool in profile["spools"]:
        entered = False
        if breaker is not None:
            try:
                why = breaker.enter(spool["path"])
            except OSError as e:
                scan.warnings.append(f"spool breaker not used: {e}")
                breaker, why = None, None
            if why is not None:
                scan.warnings.append(why)
                continue
            entered = breaker is not None
        try:
            if scan.spool(spool, taken_names, taken_prefixes, stop_after):
                return True
        finally:
            if scan.real_fd is not None:
                os.close(scan.real_fd)
                scan.real_fd = None
            if entered and breaker is not None:
                breaker.leave(spool["path"])
    return False


def compute(
    profile: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    fs: Any = None,
    protocol: str | None = CHECKED,
    installed: str | None = None,
    breaker: Any = None,
    user_tasks: bool = True,
    counts: list[int] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The variables to add or replace for this login, and the lines to log.

    The variables are exactly what the full worker's ``T_ENV`` frames carry for
    the profile's configuration (``NAMESPACE``/``USERDB_KEYS`` merged with
    *environ*, only what changed); the lines are what its one log line joins
    with ``"; "`` after ``user <name>: `` (action errors first, then warnings).

    Args:
        profile: From :func:`nsprov._profile_compile.compile_profile`.
        environ: The post-login environment.
        fs: The filesystem calls (the attributes of :class:`nsprov._fs.Fs`);
            the real filesystem by default.
        protocol: ``--protocol`` (``imap``, ``pop3`` or None), whose action
            list (the profile's ``actions``) says whether namespaces run; by
            default (:data:`CHECKED`) the caller has checked that they do.
        installed: The Dovecot version detected for this login
            (:func:`nsprov._postlogin.installed_version`); a mismatch with the
            profile's dialect exports no namespaces, with a warning.
        breaker: The per-spool breaker (:class:`nsprov._breaker.SpoolBreaker`)
            when running as root; closed here before the user's work.
        user_tasks: Create the index/control directories: the process drops
            to the mail user's identity first, irreversibly (call it in the
            forked worker, as root; False only in tests and dry runs).
        counts: When given, the number of namespaces served is appended (the
            login's info line).

    Raises:
        FullPathNeeded: The profile is of another schema, the user is in
            ``debug_users``, or a spool's ignore file is not the one the
            profile compiled (rebuild the profile).
        NsprovError: A subclass, on input the full path reports as an error
            (no user, a spool that cannot be read, namespaces Dovecot would
            refuse): the caller runs the full path, which reports it.
    """
    if profile.get("schema") != PROFILE_SCHEMA:
        raise FullPathNeeded(f"login profile schema {profile.get('schema')!r}")
    dialect = profile["dialect"]
    warnings: list[str] = []
    if (sign := version_signs(environ, dialect)) is not None:
        warnings.append(sign)
    runs = protocol == CHECKED or "namespaces" in profile["actions"].get(
        protocol if protocol in ("imap", "pop3") else "default", ()
    )
    if installed is not None and installed != dialect:
        warnings.append(
            f"Dovecot {installed} is installed but [dovecot] version = "
            f'"{dialect}": namespaces not exported (they would break every session); '
            f'set version = "{installed}"'
        )
        runs = False
    if not runs:
        if breaker is not None:
            breaker.close()
        return {}, warnings
    try:
        env, dirs, (uid, gid, groups), found, served = _namespaces(
            profile, environ, fs or OS_FS, breaker
        )
    except OSError as e:
        if isinstance(e, NsprovError):
            raise
        raise LeanError(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)) from e
    finally:
        if breaker is not None:
            breaker.close()  # root's state directory stays out of the user's process
    changes = {k: v for k, v in env.items() if environ.get(k) != v}
    if counts is not None:
        counts.append(served)
    errors: list[str] = []
    if user_tasks and profile["create_dirs"] and dirs:
        dirs = tuple(missing_dirs(uid, gid, dirs))  # all there: no drop, no group lookup
    if user_tasks and profile["create_dirs"] and dirs:
        drop_privileges(uid, gid, groups)
        failures = ensure_dirs(dirs)
        if failures:
            errors.append(
                f"index directories: OSError: cannot create {len(failures)} index/control "
                f"directories (Dovecot will try itself): {failures[0]}"
            )
    return changes, [*errors, *warnings, *found]


def _namespaces(
    profile: Mapping[str, Any], environ: Mapping[str, str], fs: Any, breaker: Any
) -> tuple[dict[str, str], tuple[str, ...], tuple[int, int, Collection[int]], list[str], int]:
    """The namespaces action: variables, directories, ``(uid, gid, groups)``, warnings, served."""
    idc = profile["identity"]
    user, home, uid, gid, groups, _sgu = identity_from_environ(
        environ,
        mail_uid=idc["mail_uid"],
        mail_gid=idc["mail_gid"],
        mail_access_groups=idc["mail_access_groups"],
        first_valid_gid=idc["first_valid_gid"],
        last_valid_gid=idc["last_valid_gid"],
        lazy=True,
    )
    if user in profile["debug_users"]:
        raise FullPathNeeded(f"user {user} is in debug_users")
    scan = _Scan(fs, _access.Ident(uid, gid, groups), user, home)
    truncated = _discover(profile, scan, breaker)
    maximum = profile["max_namespaces"]
    served = scan.served
    over = len(served) - maximum
    if over > 0:
        served = served[:maximum]
    namespaces = [ns for _, ns in served]
    problems = namespace_problems(
        namespaces,
        reserved_names=profile["reserved_names"],
        taken_prefixes=profile["config_prefixes"],
    )
    if problems:
        raise InvalidNamespaceError("; ".join(problems), tuple(problems))
    warnings = list(scan.warnings)
    if over > 0:
        count = f"more than {len(served)}" if truncated else str(len(served) + over)
        warnings.append(
            f"{count} namespaces found, namespace.max="
            f"{maximum}; the first {len(served)} in discovery order are served"
        )
    subscribing = {s["path"] for s in profile["spools"] if s["subscribe"]}
    env, kept = fit(
        namespaces,
        environ=environ,
        version=profile["dialect"],
        list_key="NAMESPACE" if profile["dialect"] == "2.3" else "NAMESPACE+",
        inherited_driver=profile["global_mail_driver"] if profile["dialect"] == "2.4" else None,
        max_var=MAX_ARG_STRLEN,
        budget=DEFAULT_ENV_BUDGET,
        subscribe={ns.name for path, ns in served if path in subscribing},
        private_namespace=profile["private_namespace"],
    )
    if kept < len(namespaces):
        cut = (
            f"{len(namespaces)} namespaces found, {kept} fit the kernel's "
            f"environment limits; the first {kept} in discovery order are served"
        )
        warnings = [*scan.warnings, cut]
        namespaces = namespaces[:kept]
    return env, user_dirs(namespaces), (uid, gid, groups), warnings, len(namespaces)


class Outcome:
    """What :func:`run_login` gives: what the full worker's frames and log line carry."""

    __slots__ = (
        "changes",
        "client",
        "denied",
        "deny",
        "dirs",
        "errors",
        "ident",
        "pending",
        "served",
        "slots",
        "warnings",
    )

    def __init__(self) -> None:
        #: The variables to add or replace (``T_ENV``), only what changed.
        self.changes: dict[str, str] = {}
        #: The lines for the client (``T_CLIENT``), in order.
        self.client: list[bytes] = []
        #: Whether an action refused the login (``T_DENY``).
        self.denied = False
        #: The one line a denied client gets (by protocol), None for none.
        self.deny: bytes | None = None
        #: The failed actions' and user tasks' lines (logged at error).
        self.errors: list[str] = []
        #: The warnings (logged at warning).
        self.warnings: list[str] = []
        #: The namespaces served, None when the namespaces action did not run.
        self.served: int | None = None
        #: The index/control directories the namespaces want (created by a user's task).
        self.dirs: tuple[str, ...] = ()
        #: The user's tasks not run yet (``run_login(defer=True)``: :func:`run_tasks` runs them).
        self.pending: list[tuple[str, Callable[[], None]]] = []
        #: ``(uid, gid, groups)`` the tasks run as, once there are tasks.
        self.ident: tuple[int, int, Collection[int]] | None = None
        #: The client lines' slots, which the alert conditions fill (in the tasks).
        self.slots: list[bytes] = []


def run_login(
    profile: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    protocol: str | None,
    fs: Any = None,
    installed: str | None = None,
    breaker: Any = None,
    user_tasks: bool = True,
    defer: bool = False,
) -> Outcome:
    """Run the profile's actions for *protocol* in order, as the full worker runs them.

    The rules are :mod:`nsprov._actrules`', the ones :mod:`nsprov._actions`
    applies on the full path: ``deny`` (a denial stops the rest), ``alert``
    (IMAP only; an ``if_exists`` file is checked as the user), ``acl_groups``,
    ``last_login`` (the file, written as the user), ``fields`` and
    ``namespaces`` (:func:`compute`'s scan).  A failed action gives one error
    line and the next runs.  The user's tasks (alert conditions, the last-login
    file, the index/control directories) run after every action, in the order
    queued, as the mail user: the process drops to that identity first,
    irreversibly (*user_tasks* False: not run, only for tests and dry runs;
    *defer*: left in ``Outcome.pending`` for :func:`run_tasks` in a process of its own).

    Raises:
        FullPathNeeded: The profile is of another schema, the user is in
            ``debug_users``, an ignore file is not the profile's, the
            namespaces action failed (no user, a spool that cannot be read,
            namespaces Dovecot would refuse …), or an action failed under
            ``on_error = "deny"``: the full path serves the login, and reports
            the failure as its own, once.
    """
    if profile.get("schema") != PROFILE_SCHEMA:
        raise FullPathNeeded(f"login profile schema {profile.get('schema')!r}")
    from . import _actrules  # noqa: PLC0415 - stdlib only; not for namespaces-only logins

    dialect = profile["dialect"]
    out = Outcome()
    if (sign := version_signs(environ, dialect)) is not None:
        out.warnings.append(sign)
    names = profile["actions"].get(protocol if protocol in ("imap", "pop3") else "default", ())
    if installed is not None and installed != dialect:
        out.warnings.append(
            f"Dovecot {installed} is installed but [dovecot] version = "
            f'"{dialect}": namespaces not exported (they would break every session); '
            f'set version = "{installed}"'
        )
        names = tuple(n for n in names if n != "namespaces")
    rules = profile["rules"]
    env = dict(environ)
    user, ip, local_ip = environ.get("USER", ""), environ.get("IP", ""), environ.get("LOCAL_IP", "")
    idc = profile["identity"]
    who: list[tuple[int, int, Collection[int]]] = []

    def identity() -> tuple[int, int, Collection[int]]:
        if not who:  # once, when an action first needs it, as Login.mail_user
            _u, _h, uid, gid, groups, _s = identity_from_environ(env, **idc, lazy=True)
            who.append((uid, gid, groups))
        return who[0]

    def values() -> dict[str, str]:
        return _actrules.template_values(
            env, user=user, ip=ip, local_ip=local_ip, protocol=protocol
        )

    tasks: list[tuple[str, Callable[[], None]]] = []
    slots: list[bytes] = []

    def one(name: str) -> bool:
        """Run action *name*; True when it refused the login."""
        if name == "deny":
            if rules["deny"] is None:
                return False

            def groups() -> list[str]:
                _uid, gid, extra = identity()
                return _actrules.group_names(gid, extra)

            message = _actrules.deny_verdict(
                rules["deny"], user=user, ip=ip, local_ip=local_ip, groups=groups
            )
            if message is None:
                return False
            out.deny = _actrules.deny_line(message, protocol)
            return True
        if name == "alert":
            if protocol == "imap":
                _alerts(rules["alerts"], values, slots, tasks)
        elif name == "acl_groups":
            include, exclude = rules["acl_groups"] or ((), ())
            _uid, gid, extra = identity()
            value, warning = _actrules.acl_groups(
                _actrules.group_names(gid, extra, numeric=False), include, exclude, dialect
            )
            if warning is not None:
                out.warnings.append(warning)
            if value is not None:
                _actrules.append_field(env, "acl_groups", value)
        elif name == "last_login" and rules["last_login"] is not None:
            import time  # noqa: PLC0415 - built in

            path = render(rules["last_login"][1], values(), rules["last_login"][0])
            line = _actrules.last_login_line(int(time.time()), protocol, ip)

            def write(path: str = path, line: str = line) -> None:
                _actrules.write_file_atomically(path, line)

            tasks.append(("last-login file", write))
        elif name == "fields":
            current = values()
            for f in rules["fields"]:
                _actrules.apply_field(
                    env,
                    name=f["name"],
                    value=render(f["value"][1], current, f["value"][0]),
                    mode=f["mode"],
                    separator=f["separator"],
                    literal_percent=f["literal_percent"],
                    dialect=dialect,
                )
        return False

    try:
        for name in names:
            if name == "namespaces":
                try:
                    _namespaces_action(profile, env, fs, breaker, out, tasks)
                except FullPathNeeded:
                    raise
                except NsprovError as e:  # the full path reports it, once, as its own
                    raise FullPathNeeded(f"the namespaces action failed: {e}") from e
                continue
            if name not in LEAN_RUNS:
                raise FullPathNeeded(f"action {name} runs on the full path")
            try:
                out.denied = one(name)
            except Exception as e:
                if profile["on_error"] == "deny":
                    raise FullPathNeeded(f"action {name} failed, on_error = deny") from e
                out.errors.append(f"{name}: {_actrules.describe_error(e)}")
            if out.denied:
                return out
    finally:
        if breaker is not None:
            breaker.close()  # root's state directory stays out of the user's process
    out.changes = {k: v for k, v in env.items() if environ.get(k) != v}
    out.slots = slots
    if tasks and (user_tasks or defer):
        try:
            out.ident = identity()
        except NsprovError as e:
            raise FullPathNeeded(f"the user's tasks: {e}") from None
        out.pending = tasks
        if user_tasks and not defer:
            run_tasks(out)
    out.client = [line for line in slots if line]
    return out


def run_tasks(out: Outcome) -> None:
    """Run *out*'s pending user tasks as the mail user; their errors join ``out.errors``.

    When the index directories are the only task and :func:`missing_dirs` sees them
    all, nothing is dropped nor looked up.  Otherwise the process drops to the user,
    irreversibly: call it as root in a process of its own (the forked worker), never
    in a thread of the post-login process.
    """
    from ._actrules import describe_error  # noqa: PLC0415 - loaded by run_login

    tasks, out.pending = out.pending, []
    if not tasks or out.ident is None:
        return
    uid, gid, extra = out.ident
    only_dirs = out.dirs and all(what == DIRS_TASK for what, _ in tasks)
    if only_dirs and not missing_dirs(uid, gid, out.dirs):
        return  # every index directory exists: no drop, no group lookup
    drop_privileges(uid, gid, extra)
    for what, task in tasks:
        try:
            task()
        except Exception as e:
            out.errors.append(f"{what}: {describe_error(e)}")
    out.client = [line for line in out.slots if line]


def dirs_seen(paths: Sequence[str]) -> bool:
    """Whether every one of *paths* is a directory, as root sees it (one ``stat`` each).

    For the thread worker, which may not switch ids: a directory root sees exists,
    so there is nothing to create; anything else (missing, or hidden from root by a
    root-squashing NFS server) is left to :func:`run_tasks` in a forked worker.
    """
    for path in paths:
        try:
            if not st.S_ISDIR(os.stat(path).st_mode):
                return False
        except (OSError, ValueError):
            return False
    return True


#: The user's task that creates the index/control directories (checked first: :func:`missing_dirs`).
DIRS_TASK = "index directories"

#: The actions :func:`run_login` runs besides ``namespaces``.
LEAN_RUNS = frozenset({"deny", "alert", "acl_groups", "last_login", "fields"})


def _alerts(
    alerts: Sequence[Any],
    values: Callable[[], dict[str, str]],
    slots: list[bytes],
    tasks: list[tuple[str, Callable[[], None]]],
) -> None:
    """The alert action: a line per alert, a conditional one filled in by a task as the user."""
    from . import _actrules  # noqa: PLC0415 - loaded by run_login

    current: dict[str, str] | None = None
    for (text, parts), if_exists in alerts:
        current = current or values()
        rendered = render(parts, current, text)
        if if_exists is None:
            slots.append(_actrules.alert_line(rendered))
            continue
        path = render(if_exists[1], current, if_exists[0])
        slot = len(slots)
        slots.append(b"")

        def check(path: str = path, text: str = rendered, slot: int = slot) -> None:
            if _actrules.alert_condition(path):
                slots[slot] = _actrules.alert_line(text)

        tasks.append((f"alert condition {path}", check))


def _namespaces_action(
    profile: Mapping[str, Any],
    env: dict[str, str],
    fs: Any,
    breaker: Any,
    out: Outcome,
    tasks: list[tuple[str, Callable[[], None]]],
) -> None:
    """The namespaces action on *env*: its variables merged, its directories queued as a task."""
    try:
        merged, dirs, _ident, found, served = _namespaces(profile, env, fs or OS_FS, breaker)
    except OSError as e:
        if isinstance(e, NsprovError):
            raise
        raise LeanError(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)) from e
    env.update(merged)
    out.warnings += found
    out.served = served
    if profile["create_dirs"] and dirs:

        def make() -> None:
            failures = ensure_dirs(dirs)
            if failures:
                raise OSError(
                    f"cannot create {len(failures)} index/control directories "
                    f"(Dovecot will try itself): {failures[0]}"
                )

        out.dirs = tuple(dirs)
        tasks.append((DIRS_TASK, make))
