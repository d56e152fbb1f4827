"""The namespaces job: config + environment in, variables out.

:func:`plan` is pure but for the filesystem calls of the scan; it is what both
``nsprov post-login`` (in a worker process) and ``nsprov show`` run.  It is two
steps: :func:`resolve` finds and checks the user's namespaces, :func:`fit`
renders them as the environment of one Dovecot dialect, within the kernel's
limits (a caller that needs only the namespaces stops after :func:`resolve`).
:func:`ensure_dirs` is the one side effect: the per-user index and control
directories, created by a process that has dropped to the user's identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from . import _plainscan
from ._env import EnvLimits, fit_environ
from ._fields import user_dirs
from ._model import check_namespaces
from ._scan import DEFAULT_FS, Discovery, Fs, discover, limit, skipped_counts

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ._breaker import SpoolBreaker
    from ._config import Config
    from ._identity import MailUser
    from ._model import Namespace


@attrs.frozen
class Plan:
    """What one login gets: variables to export, and everything that led there."""

    user: MailUser
    discovery: Discovery
    environ: dict[str, str]
    warnings: tuple[str, ...] = ()

    @property
    def dirs(self) -> tuple[str, ...]:
        """The per-user index/control directories the namespaces need, sorted."""
        return _dirs(self.discovery)


def _dirs(discovery: Discovery) -> tuple[str, ...]:
    return user_dirs(discovery.namespaces)


@attrs.frozen
class Resolved:
    """A user's namespaces, found and checked: what :func:`fit` renders for one dialect."""

    config: Config
    user: MailUser
    discovery: Discovery
    #: The scan's warnings, and one when entries were cut at ``namespace.max``.
    warnings: tuple[str, ...] = ()

    @property
    def namespaces(self) -> tuple[Namespace, ...]:
        """The namespaces of the served entries, in discovery order."""
        return self.discovery.namespaces

    @property
    def dirs(self) -> tuple[str, ...]:
        """The per-user index/control directories the namespaces need, sorted."""
        return _dirs(self.discovery)


def resolve(
    config: Config,
    user: MailUser,
    *,
    fs: Fs = DEFAULT_FS,
    keep_skipped: bool = True,
    breaker: SpoolBreaker | None = None,
) -> Resolved:
    """Discover *user*'s namespaces and check them as Dovecot would (no environment yet).

    Raises:
        InvalidNamespaceError: The namespaces would fail Dovecot's own checks.
        SpoolError: A configured spool cannot be scanned at all.
    """
    discovery = discover(config, user, fs=fs, keep_skipped=keep_skipped, breaker=breaker)
    check_namespaces(
        discovery.namespaces,
        reserved_names=config.reserved_names,
        taken_prefixes=config.config_prefixes,
    )
    warnings = list(discovery.warnings)
    over = skipped_counts(discovery.skipped).get("over-limit", 0)
    if over:
        found = (
            f"more than {len(discovery.served)}"
            if discovery.truncated
            else str(len(discovery.served) + over)
        )
        warnings.append(
            f"{found} namespaces found, namespace.max="
            f"{config.max_namespaces}; the first {len(discovery.served)} in discovery order are served"
        )
    return Resolved(config=config, user=user, discovery=discovery, warnings=tuple(warnings))


def fit(resolved: Resolved, environ: Mapping[str, str], *, limits: EnvLimits = EnvLimits()) -> Plan:
    """Render *resolved* for *environ* in the config's dialect, within the kernel's *limits*.

    Namespaces beyond what fits become ``over-limit``, with one warning (which then
    replaces the ``namespace.max`` one of *resolved*).
    """
    config, discovery = resolved.config, resolved.discovery
    namespaces = discovery.namespaces
    subscribing = {s.path for s in config.spools if s.subscribe}
    env, kept = fit_environ(
        namespaces,
        environ=environ,
        dialect=config.output_dialect,
        limits=limits,
        subscribe={s.namespace.name for s in discovery.served if s.spool in subscribing},
        private_namespace=config.private_namespace,
    )
    warnings = resolved.warnings
    if kept < len(namespaces):
        discovery = limit(discovery, kept, "the kernel's environment limits")
        cut = (
            f"{len(namespaces)} namespaces found, {kept} fit the kernel's "
            f"environment limits; the first {kept} in discovery order are served"
        )
        warnings = (*discovery.warnings, cut)
    return Plan(user=resolved.user, discovery=discovery, environ=env, warnings=warnings)


def plan(
    config: Config,
    user: MailUser,
    environ: Mapping[str, str],
    *,
    fs: Fs = DEFAULT_FS,
    limits: EnvLimits = EnvLimits(),
    keep_skipped: bool = True,
    breaker: SpoolBreaker | None = None,
) -> Plan:
    """Discover *user*'s namespaces and render them for *environ*, within *limits*.

    The same as ``fit(resolve(config, user, ...), environ, limits=limits)``.
    """
    resolved = resolve(config, user, fs=fs, keep_skipped=keep_skipped, breaker=breaker)
    return fit(resolved, environ, limits=limits)


def drop_privileges(user: MailUser) -> None:
    """Become the mail process identity (irreversible; call only in a throwaway process)."""
    ident = user.identity
    _plainscan.drop_privileges(ident.uid, ident.gid, ident.groups)


def ensure_dirs(paths: Iterable[str]) -> list[str]:
    """Create missing directories with mode 0700 as the current identity; return failures.

    Call after :func:`drop_privileges`: the home belongs to the user, so only
    the user's own rights may resolve paths there (a planted symlink then
    leads nowhere the user could not already write).  A directory that
    exists costs a ``stat``, no ``mkdir`` (:func:`nsprov._plainscan.ensure_dirs`).
    """
    return _plainscan.ensure_dirs(paths)


def explain_lines(p: Plan | Resolved) -> list[str]:
    """The ``--explain`` listing: every entry with its verdict, one line each."""
    lines = []
    for s in p.discovery.served:
        lines.append(f"serve {s.spool}/{s.entry} -> {s.namespace.name} {s.namespace.prefix}")
    for k in p.discovery.skipped:
        where = f"{k.spool}/{k.entry}" if k.raw else k.spool
        lines.append(f"skip  {where}: {k.reason}: {k.detail}")
    return lines
