"""Findings: the codes ``nsprov check`` reports, and the small helpers every check uses to word them."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Sequence


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
    "partial-grant": "a mailbox directory grants read to someone its cur or new refuses",
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
    "wiring-serve-down": "the post-login --serve socket does not answer",
    "wiring-config-path": "the post-login line reads another configuration file",
    "wiring-service-user": "the post-login service does not run as root",
    "wiring-not-isolated": "a post-login program starts Python without -I",
    "wiring-bash-launcher": "the post-login line runs nsprov's bash launcher, not the direct one",
    # the zero-fork routes (a Lua or dict userdb asking nsprov serve)
    "route-socket-down": "the socket a Lua or dict userdb names does not answer a probe lookup",
    "route-timeouts": "nsprov serve's per-lookup deadline is not shorter than the client's timeout",
    "route-double": "a zero-fork route and nsprov post-login both add namespaces",
    "route-actions": "[actions] runs more than namespaces where only a zero-fork route is wired",
    "lua-no-worker": "the Lua userdb runs without the auth worker",
    "lua-cache-key": "Dovecot 2.3 caches the Lua userdb's answer (no empty cache_key=)",
    "lua-script-missing": "the Lua userdb's script cannot be read",
    "lua-script-differs": "the Lua userdb's script differs from this nsprov's (beyond DEFAULTS)",
    "lua-syntax": "luac -p rejects the Lua userdb's script",
    "luac-unavailable": "no luac of Dovecot's Lua version is installed to check the script",
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
    "serve-budget": "a user's namespaces do not all fit a zero-fork route's userdb reply",
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
