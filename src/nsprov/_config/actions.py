"""The action tables (``[deny]``, ``[[alert]]``, ``[acl_groups]``, ``[last_login]``, ``[mail]``,
``[[field]]``) and ``[actions]``, which orders them per protocol.

Without ``[actions]``, IMAP runs every configured action in the order
``deny, alert, acl_groups, last_login, mail, fields, namespaces``; POP3 the
same without ``namespaces`` (POP3 only ever sees INBOX) and without ``alert``
(any line would desynchronise POP3); no protocol, the IMAP list.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs

from .._defaults import ACTION_TABLES
from .._template import Template
from .schema import ActionsConfig

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .actionconf import (
        AclGroupsConfig,
        AlertConfig,
        DenyConfig,
        FieldConfig,
        LastLoginConfig,
        MailConfig,
    )
    from .reader import _Reader

#: The action names ``[actions]`` may list: one per action table (``[[field]]`` runs as
#: ``fields``), then ``namespaces``, the action of the ``[[spool]]`` tables.
ACTION_NAMES = (*(("fields" if t == "field" else t) for t in ACTION_TABLES), "namespaces")
_FIELD_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_/+.-]*")
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _template(
    r: _Reader, data: Mapping[str, Any], key: str, path: str, *, required: bool
) -> Template | None:
    text = r.take(data, key, path, str, None)
    if text is None:
        if required and key not in data:
            r.problem(f"{path}.{key}", "required key missing")
        return None
    try:
        return Template(text)
    except ValueError as e:
        r.problem(f"{path}.{key}", str(e))
        return None


def _networks(r: _Reader, data: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    values = r.strings(data, key, path) or ()
    if values:
        import ipaddress  # noqa: PLC0415 - only when networks are configured

        for v in values:
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError as e:
                r.problem(f"{path}.{key}", f"{v!r}: {e}")
    return values


def deny_table(r: _Reader, data: Mapping[str, Any]) -> DenyConfig | None:
    """``[deny]``: who is refused, who is let in regardless."""
    if "deny" not in data:
        return None
    from .actionconf import DenyConfig  # noqa: PLC0415 - only when actions are configured

    t = r.table(data, "deny", "deny")
    r.unknown(t, {f.name for f in attrs.fields(DenyConfig)}, "deny")
    return DenyConfig(
        users=r.strings(t, "users", "deny") or (),
        networks=_networks(r, t, "networks", "deny"),
        local_networks=_networks(r, t, "local_networks", "deny"),
        groups=r.strings(t, "groups", "deny") or (),
        allow_users=r.strings(t, "allow_users", "deny") or (),
        allow_networks=_networks(r, t, "allow_networks", "deny"),
        allow_local_networks=_networks(r, t, "allow_local_networks", "deny"),
        allow_groups=r.strings(t, "allow_groups", "deny") or (),
        default=r.one_of(t, "default", "deny", ("allow", "deny"), "allow", quoted=True),
        message=r.take(t, "message", "deny", str, "Access denied."),
    )


def alert_tables(r: _Reader, data: Mapping[str, Any]) -> tuple[AlertConfig, ...]:
    """Each ``[[alert]]``: a text, optionally shown only if a file exists."""
    from .actionconf import AlertConfig  # noqa: PLC0415 - only when actions are configured

    alerts = []
    for path, raw in r.array(data, "alert"):
        r.unknown(raw, {"text", "if_exists"}, path)
        text = _template(r, raw, "text", path, required=True)
        if_exists = _template(r, raw, "if_exists", path, required=False)
        if if_exists is not None and not if_exists.text.startswith(("/", "{home}")):
            r.problem(f"{path}.if_exists", "must be an absolute path (start with '/' or '{home}')")
        if text is not None:
            alerts.append(AlertConfig(text=text, if_exists=if_exists))
    return tuple(alerts)


def acl_groups_table(r: _Reader, data: Mapping[str, Any]) -> AclGroupsConfig | None:
    """``[acl_groups]``: which of the mail identity's groups to export."""
    if "acl_groups" not in data:
        return None
    from .actionconf import AclGroupsConfig  # noqa: PLC0415 - only when actions are configured

    t = r.table(data, "acl_groups", "acl_groups")
    r.unknown(t, {"include", "exclude"}, "acl_groups")
    return AclGroupsConfig(
        include=r.strings(t, "include", "acl_groups") or (),
        exclude=r.strings(t, "exclude", "acl_groups") or (),
    )


def _sql_table_name(v: str) -> str | None:
    return None if _TABLE_RE.fullmatch(v) else "must be an SQL identifier [A-Za-z_][A-Za-z0-9_]*"


def last_login_table(r: _Reader, data: Mapping[str, Any]) -> LastLoginConfig | None:
    """``[last_login]``: where each login's time is recorded."""
    if "last_login" not in data:
        return None
    from .actionconf import LastLoginConfig  # noqa: PLC0415 - only when actions are configured

    t = r.table(data, "last_login", "last_login")
    r.unknown(t, {f.name for f in attrs.fields(LastLoginConfig)}, "last_login")
    backend = r.one_of(t, "backend", "last_login", ("file", "sqlite", "postgresql"), "file")
    path_t = _template(r, t, "path", "last_login", required=False) or LastLoginConfig().path
    if not path_t.text.startswith("{home}/"):
        r.problem("last_login.path", "must start with '{home}/': the file lives in the user's home")
    if "/Maildir/" in path_t.text and "/." in path_t.text.split("/Maildir/", 1)[1]:
        r.problem("last_login.path", "a dot-name inside a Maildir would show up as a folder")
    dsn = r.take(t, "dsn", "last_login", str, "")
    if backend == "postgresql" and not dsn:
        r.problem("last_login.dsn", 'required for backend = "postgresql"')
    database = r.take(t, "database", "last_login", str, LastLoginConfig().database)
    if not database.startswith("/"):
        r.problem("last_login.database", "must be an absolute path")
    return LastLoginConfig(
        backend=backend,
        path=path_t,
        database=database,
        dsn=dsn,
        table=r.take(t, "table", "last_login", str, "last_login", _sql_table_name),
        timeout=float(
            r.number(t, "timeout", "last_login", 1.0, above=0, at_most=10, unit="seconds")
        ),
    )


def mail_table(r: _Reader, data: Mapping[str, Any]) -> MailConfig | None:
    """``[mail]``: the mail location override."""
    if "mail" not in data:
        return None
    from .actionconf import MailConfig  # noqa: PLC0415 - only when actions are configured

    t = r.table(data, "mail", "mail")
    r.unknown(t, {"location"}, "mail")
    location = _template(r, t, "location", "mail", required=True)
    return MailConfig(location=location) if location is not None else None


def _field_name(v: str) -> str | None:
    if _FIELD_NAME_RE.fullmatch(v) and v.upper() not in {"USER", "USERDB_KEYS"}:
        return None
    return "must be a userdb field name (letters, digits, _ / + . -; not USER or USERDB_KEYS)"


def field_tables(r: _Reader, data: Mapping[str, Any]) -> tuple[FieldConfig, ...]:
    """Each ``[[field]]``: a userdb field to set, append to or default."""
    from .actionconf import FieldConfig  # noqa: PLC0415 - only when actions are configured

    fields = []
    for path, raw in r.array(data, "field"):
        r.unknown(raw, {"name", "value", "mode", "separator", "literal_percent"}, path)
        name = r.take(raw, "name", path, str, None, _field_name)
        if name is None and "name" not in raw:
            r.problem(f"{path}.name", "required key missing")
        value = _template(r, raw, "value", path, required=True)
        mode = r.one_of(raw, "mode", path, ("set", "append", "default"), "set")
        if name is not None and value is not None:
            fields.append(
                FieldConfig(
                    name=name,
                    value=value,
                    mode=mode,
                    separator=r.take(raw, "separator", path, str, ","),
                    literal_percent=r.take(raw, "literal_percent", path, bool, False),
                )
            )
    return tuple(fields)


def _order_table(
    r: _Reader, data: Mapping[str, Any], configured: list[str]
) -> dict[str, tuple[str, ...]]:
    """``[actions]``: the action list per protocol, each name known and configured."""
    actions = r.table(data, "actions", "actions")
    r.unknown(actions, {"imap", "pop3", "default"}, "actions")
    imap_default = tuple(configured)
    pop3_default = tuple(a for a in configured if a not in {"namespaces", "alert"})
    lists: dict[str, tuple[str, ...]] = {}
    for proto, fallback in (("imap", imap_default), ("pop3", pop3_default), ("default", None)):
        given = r.strings(actions, proto, "actions")
        if given is None:
            lists[proto] = fallback if fallback is not None else lists["imap"]
            continue
        for name in given:
            if name not in ACTION_NAMES:
                r.problem(
                    f"actions.{proto}", f"unknown action {name!r}; known: {', '.join(ACTION_NAMES)}"
                )
            elif name not in configured and name != "acl_groups":
                r.problem(f"actions.{proto}", f"action {name!r} is listed but not configured")
        if len(set(given)) != len(given):
            r.problem(f"actions.{proto}", "an action is listed twice")
        lists[proto] = given
    return lists


def actions_tables(r: _Reader, data: Mapping[str, Any], *, has_spools: bool) -> ActionsConfig:
    """Read ``[actions]`` and the action tables from parsed TOML (without any: namespaces only)."""
    if not any(t in data for t in (*ACTION_TABLES, "actions")):
        namespaces = ("namespaces",) if has_spools else ()
        return ActionsConfig(imap=namespaces, pop3=(), default=namespaces)
    settings: dict[str, Any] = {
        "deny": deny_table(r, data),
        "alerts": alert_tables(r, data),
        "acl_groups": acl_groups_table(r, data),
        "last_login": last_login_table(r, data),
        "mail": mail_table(r, data),
        "fields": field_tables(r, data),
    }
    configured = [
        name
        for name, key in zip(ACTION_NAMES, settings, strict=False)
        if settings[key] not in (None, ())
    ]
    if has_spools:
        configured.append("namespaces")
    lists = _order_table(r, data, configured)
    if settings["acl_groups"] is None and "acl_groups" in {n for v in lists.values() for n in v}:
        from .actionconf import AclGroupsConfig  # noqa: PLC0415 - only when actions are configured

        settings["acl_groups"] = AclGroupsConfig()
    return ActionsConfig(
        imap=lists["imap"], pop3=lists["pop3"], default=lists["default"], **settings
    )
