"""The whole check: :func:`run_checks` over a :class:`~nsprov._check.gather.World`, and its :class:`Report`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from ..exceptions import ConfigError
from .access import check_mailboxes, check_traversal, no_access_findings
from .dovecot import (
    acl_required,
    check_acl_plugin,
    check_conf_namespaces,
    check_identity,
    check_mail_driver,
    check_prefix_overlap,
    check_separator,
    check_version,
)
from .findings import SEVERITIES, Finding, _f
from .marks import changed_spools, spool_marks
from .routes import check_routes, zero_fork_userdbs
from .scancache import check_scan_cache, check_scan_slow
from .stale import _removed, find_stale
from .structure import scan_structure, structure_findings
from .templates import check_templates, config_findings
from .users import UserReport, check_user, check_virtual
from .wiring import check_serve_probes, check_wiring

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .._config import Config
    from .._identity import MailUser
    from .doveconf import DovecotConf
    from .gather import World
    from .structure import SpoolScan


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


def _report(
    base: Mapping[str, Any], findings: Sequence[Finding], users: Sequence[UserReport]
) -> Report:
    ordered = sorted(findings, key=lambda f: _RANK[f.severity])
    return Report(findings=tuple(ordered), users=tuple(users), **base)


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
        findings += check_serve_probes(conf, world.serve_probe)
        findings += _route_findings(world, config, conf)
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
        findings += no_access_findings(
            scans,
            access,
            len(world.users),
            unreachable=unreachable,
            fs=fs,
            users=world.users,
            uid_name=world.uid_name,
            gid_name=world.gid_name,
        )
    findings += user_findings
    findings += check_virtual(config, world.users, world.uid_names)
    findings += _stale_findings(world, config, scans, shown)
    return _report({**base, "dialect": config.dialect}, findings, reports)


def _route_findings(world: World, config: Config, conf: DovecotConf) -> list[Finding]:
    """The zero-fork routes (:func:`check_routes`), against this nsprov's Lua script."""
    from .._serve.options import DEFAULT_DEADLINE  # noqa: PLC0415
    from .._serve.wiring import lua_script  # noqa: PLC0415

    if not world.routes:
        return []
    deadline = config.serve.deadline if config.serve.deadline is not None else DEFAULT_DEADLINE
    return check_routes(
        config, conf, list(world.routes), installed_script=lua_script(), serve_deadline=deadline
    )


def _stale_findings(
    world: World, config: Config, scans: Sequence[SpoolScan], shown: Sequence[MailUser]
) -> list[Finding]:
    """Stale directories of the *shown* users (removed with ``world.clean``); records the marks."""
    fs = world.fs
    out: list[Finding] = []
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
        out += stale_findings
    if world.record_marks is not None:
        # A suspect or empty spool keeps its last good mark (--force accepts the new one).
        world.record_marks({p: m for p, m in marks.items() if p not in suspects and m.count})
    return out


def _check_users(
    world: World, config: Config, conf: DovecotConf | None
) -> tuple[
    list[UserReport], list[Finding], dict[tuple[str, bytes], list[MailUser]], list[MailUser]
]:
    serve_mode = None if conf is None else bool(zero_fork_userdbs(conf))
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
