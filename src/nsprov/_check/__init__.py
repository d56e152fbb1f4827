"""``nsprov check``: the doctor, run before enabling nsprov and after changing a spool.

Every check is a function of its inputs: the configuration, the output of
``doveconf -n`` (:class:`DovecotConf`), a :class:`~nsprov._scan.Fs`, resolved
users and NSS answers.  Only :func:`~nsprov._check.gather.gather` touches the
operating system: it runs ``doveconf`` and ``dovecot --version``, reads NSS,
and, with ``--clean-stale``, forks a process that becomes the user before it
removes anything.  The command line is :mod:`nsprov._cli.check`.

The package: :mod:`~nsprov._check.findings` (the codes), :mod:`~nsprov._check.doveconf`
(the parser), one module per family of checks (``templates``, ``structure``,
``access``, ``scancache``, ``trust``, ``dovecot``, ``wiring``, ``users``, ``stale``
with ``marks``), :mod:`~nsprov._check.report` (:func:`run_checks`),
:mod:`~nsprov._check.render` and :mod:`~nsprov._check.gather`.  This module
re-exports their public names.

Each :class:`Finding` has a severity (``error``, ``warning``, ``info``), a
stable kebab-case code (the keys of :data:`CODES`, each documented in
``docs/check.md``), a message, a concrete fix and optionally a subject (a path,
a user, a service).  The exit status is 1 when any finding is an error, else 0;
usage errors exit 2.
"""

from __future__ import annotations

from .access import acl_grants, check_mailboxes, check_traversal, no_access_findings
from .doveconf import ConfSection, DovecotConf, major_minor
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
from .findings import CODES, SEVERITIES, Finding, Severity
from .gather import World, gather
from .marks import (
    DEFAULT_STATE_FILE,
    STATE_KEEP_SECONDS,
    SpoolMark,
    cache_marks,
    changed_spools,
    load_marks,
    spool_marks,
    store_marks,
)
from .render import render_json, render_table, use_colour
from .report import Report, run_checks
from .scancache import check_scan_cache, check_scan_slow
from .stale import StaleDir, clean_stale_as, find_stale, remove_dirs, stale_finding
from .structure import SpoolScan, case_collisions, scan_structure, structure_findings
from .templates import check_templates, config_findings
from .trust import check_trusted_files
from .users import UserReport, base_environ, check_user, check_virtual, select_users
from .wiring import check_wiring

__all__ = [
    "CODES",
    "DEFAULT_STATE_FILE",
    "SEVERITIES",
    "STATE_KEEP_SECONDS",
    "ConfSection",
    "DovecotConf",
    "Finding",
    "Report",
    "Severity",
    "SpoolMark",
    "SpoolScan",
    "StaleDir",
    "UserReport",
    "World",
    "acl_grants",
    "acl_required",
    "base_environ",
    "cache_marks",
    "case_collisions",
    "changed_spools",
    "check_acl_plugin",
    "check_conf_namespaces",
    "check_identity",
    "check_mail_driver",
    "check_mailboxes",
    "check_prefix_overlap",
    "check_scan_cache",
    "check_scan_slow",
    "check_separator",
    "check_templates",
    "check_traversal",
    "check_trusted_files",
    "check_user",
    "check_version",
    "check_virtual",
    "check_wiring",
    "clean_stale_as",
    "config_findings",
    "find_stale",
    "gather",
    "load_marks",
    "main",
    "major_minor",
    "no_access_findings",
    "remove_dirs",
    "render_json",
    "render_table",
    "run_checks",
    "scan_structure",
    "select_users",
    "spool_marks",
    "stale_finding",
    "store_marks",
    "structure_findings",
    "use_colour",
]
