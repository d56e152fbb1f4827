"""One function per TOML table, and :func:`config_from_mapping`, which puts them together.

Every problem is collected and reported at once, each naming the file and the
key path (``spool[2].prefix``), never as a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from .._defaults import ACTION_TABLES, POSTLOGIN_DEADLINE, POSTLOGIN_DEADLINE_MAX
from .._model import DEFAULT_RESERVED_NAMES, NAME_RE
from ..exceptions import ConfigError
from .actions import actions_tables
from .reader import _Reader
from .schema import (
    DEFAULT_SCAN_CACHE_DIR,
    Config,
    IdentityConfig,
    ScanCacheConfig,
    ServeConfig,
)
from .spools import _SPOOL_KEYS, spools_for_dialect, spools_table

if TYPE_CHECKING:
    from collections.abc import Mapping

_TOP_KEYS = frozenset(
    {
        "spool",
        "namespace",
        "dovecot",
        "identity",
        "postlogin",
        "serve",
        "scan_cache",
        "actions",
        *ACTION_TABLES,
    }
)
_DOVECOT_KEYS = frozenset(
    {
        "version",
        "reserved_names",
        "config_prefixes",
        "private_namespace",
        "acl_plugin",
        "global_mail_driver",
    }
)
_IDENTITY_KEYS = frozenset(
    {"mail_uid", "mail_gid", "mail_access_groups", "first_valid_gid", "last_valid_gid"}
)


def _namespace_name(v: str) -> str | None:
    return None if NAME_RE.fullmatch(v.lower()) else "must be a namespace name"


def _driver_name(v: str) -> str | None:
    return None if v.isidentifier() else "must be a mail driver name such as maildir"


def _absolute(v: str) -> str | None:
    return None if v.startswith("/") else "must be absolute"


def _absolute_path(v: str) -> str | None:
    return None if v.startswith("/") and "\0" not in v else "must be an absolute path"


def _octal_mode(v: str) -> str | None:
    if v.isdigit() and set(v) <= set("01234567") and int(v, 8) <= 0o777:
        return None
    return 'must be an octal mode such as "0600"'


def dovecot_table(r: _Reader, data: Mapping[str, Any]) -> dict[str, Any]:
    """``[dovecot]``: the Dovecot version and what its configuration decides for nsprov."""
    t = r.table(data, "dovecot", "dovecot")
    r.unknown(t, _DOVECOT_KEYS, "dovecot")
    dialect = r.one_of(t, "version", "dovecot", ("2.3", "2.4"), "2.3", quoted=True)
    reserved = r.strings(t, "reserved_names", "dovecot")
    prefixes = r.strings(t, "config_prefixes", "dovecot")
    return {
        "dialect": dialect,
        "reserved_names": reserved if reserved is not None else DEFAULT_RESERVED_NAMES,
        "config_prefixes": prefixes or (),
        "private_namespace": r.take(
            t, "private_namespace", "dovecot", str, "inbox", _namespace_name
        ),
        "acl_plugin": r.take(t, "acl_plugin", "dovecot", bool, False),
        "global_mail_driver": r.take(t, "global_mail_driver", "dovecot", str, None, _driver_name)
        or None,
    }


def identity_table(r: _Reader, data: Mapping[str, Any]) -> IdentityConfig:
    """``[identity]``: how to find the identity the mail process will run with."""
    t = r.table(data, "identity", "identity")
    r.unknown(t, _IDENTITY_KEYS, "identity")
    return IdentityConfig(
        mail_uid=str(r.take(t, "mail_uid", "identity", (str, int), "")),
        mail_gid=str(r.take(t, "mail_gid", "identity", (str, int), "")),
        mail_access_groups=r.strings(t, "mail_access_groups", "identity") or (),
        first_valid_gid=r.number(t, "first_valid_gid", "identity", 1, kind=int, at_least=0),
        last_valid_gid=r.number(t, "last_valid_gid", "identity", 0, kind=int, at_least=0),
    )


def postlogin_table(r: _Reader, data: Mapping[str, Any]) -> dict[str, Any]:
    """``[postlogin]``: the deadline and what a failure does."""
    t = r.table(data, "postlogin", "postlogin")
    r.unknown(t, {"deadline", "on_error", "debug_users", "log_logins"}, "postlogin")
    deadline = r.number(
        t,
        "deadline",
        "postlogin",
        POSTLOGIN_DEADLINE,
        above=0,
        at_most=POSTLOGIN_DEADLINE_MAX,
        unit="seconds",
        note="Dovecot waits 60",
    )
    on_error = r.one_of(t, "on_error", "postlogin", ("continue", "deny"), "continue", quoted=True)
    return {
        "deadline": float(deadline),
        "on_error": on_error,
        "debug_users": r.strings(t, "debug_users", "postlogin") or (),
        "log_logins": r.take(t, "log_logins", "postlogin", bool, True),
    }


def serve_table(r: _Reader, data: Mapping[str, Any]) -> ServeConfig:
    """``[serve]``: defaults for ``nsprov serve``."""
    t = r.table(data, "serve", "serve")
    r.unknown(t, {f.name for f in attrs.fields(ServeConfig)}, "serve")
    mode_text = r.take(t, "socket_mode", "serve", str, None, _octal_mode)
    return ServeConfig(
        socket=r.take(t, "socket", "serve", str, None, _absolute),
        socket_mode=int(mode_text, 8) if mode_text is not None else None,
        socket_group=r.take(t, "socket_group", "serve", str, None),
        deadline=r.number(t, "deadline", "serve", None, above=0),
        cache_ttl=r.number(t, "cache_ttl", "serve", None, at_least=0),
        reply_budget=r.number(
            t,
            "reply_budget",
            "serve",
            None,
            kind=int,
            above=0,
            below=8192,
            note="Dovecot's auth reply limit",
        ),
        max_connections=r.number(t, "max_connections", "serve", None, kind=int, above=0),
        idle_timeout=r.number(t, "idle_timeout", "serve", None, above=0),
    )


def scan_cache_table(r: _Reader, data: Mapping[str, Any]) -> ScanCacheConfig | None:
    """``[scan_cache]``: the persistent scan cache, None without the table."""
    if "scan_cache" not in data:
        return None
    t = r.table(data, "scan_cache", "scan_cache")
    r.unknown(t, {"dir", "max_age", "refresh"}, "scan_cache")
    directory = r.take(t, "dir", "scan_cache", str, DEFAULT_SCAN_CACHE_DIR, _absolute_path)
    max_age = r.number(t, "max_age", "scan_cache", 300, above=0, at_most=86400, unit="seconds")
    refresh = r.number(
        t, "refresh", "scan_cache", 60, at_least=0, note="0: nsprov serve does not refresh"
    )
    if 0 < refresh and max_age is not None and refresh >= max_age:
        r.problem(
            "scan_cache.refresh",
            f"{refresh:g}s must be shorter than max_age ({max_age:g}s), or the cache expires "
            "between refreshes and logins scan the whole spool",
        )
    return ScanCacheConfig(
        dir=directory.rstrip("/") or "/", max_age=float(max_age), refresh=float(refresh)
    )


def config_from_mapping(data: Mapping[str, Any], *, source: str = "<config>") -> Config:
    """Validate parsed TOML *data* into a :class:`Config`; raise :class:`ConfigError` listing every problem."""
    problems: list[str] = []
    r = _Reader(source, problems)
    r.unknown(data, _TOP_KEYS, "")
    defaults = r.table(data, "namespace", "namespace")
    r.unknown(defaults, _SPOOL_KEYS | {"max", "create_dirs"}, "namespace")
    spools = spools_table(r, data, defaults)
    dovecot = dovecot_table(r, data)
    spools = spools_for_dialect(r, spools, dovecot["dialect"], acl_plugin=dovecot.pop("acl_plugin"))
    identity = identity_table(r, data)
    post = postlogin_table(r, data)
    max_namespaces = r.number(
        defaults,
        "max",
        "namespace",
        1000,
        kind=int,
        at_least=0,
        at_most=100_000,
        message="must be between 0 and 100000",
    )
    create_dirs = r.take(defaults, "create_dirs", "namespace", bool, True)
    actions = actions_tables(r, data, has_spools=bool(spools))
    serve = serve_table(r, data)
    scan_cache = scan_cache_table(r, data)
    if actions.last_login is not None and actions.last_login.timeout * 2 > post["deadline"]:
        r.problem(
            "last_login.timeout",
            f"{actions.last_login.timeout:g}s leaves too little of postlogin.deadline "
            f"({post['deadline']:g}s) for the other actions: at most half of it",
        )
    if problems:
        raise ConfigError("; ".join(problems), tuple(problems))
    return Config(
        actions=actions,
        serve=serve,
        scan_cache=scan_cache,
        source=source,
        spools=tuple(spools),
        **dovecot,
        max_namespaces=max_namespaces,
        create_dirs=create_dirs,
        identity=identity,
        **post,
    )
