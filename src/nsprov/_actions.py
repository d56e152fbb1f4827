"""The classic post-login actions: configuration and behaviour.

Actions run in the order the configuration lists them for the login's
protocol.  Each one works on a :class:`nsprov._login.Login`: it reads the
post-login context and records effects (userdb fields, client lines, a
denial, work to do as the user); nothing reaches the client or the
environment until every action has run.

Configuration (TOML)::

    [actions]                   # optional; defaults below
    imap = ["deny", "alert", "acl_groups", "last_login", "namespaces"]
    pop3 = ["deny", "last_login"]
    default = ["namespaces"]    # without --protocol

Without ``[actions]``, IMAP runs every configured action in the order
``deny, alert, acl_groups, last_login, mail, fields, namespaces``; POP3 the
same without ``namespaces`` (POP3 only ever sees INBOX) and without ``alert``
(any line would desynchronise POP3); no protocol, the IMAP list.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs

from ._template import Template

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._actionconf import (
        AclGroupsConfig,
        AlertConfig,
        DenyConfig,
        FieldConfig,
        LastLoginConfig,
        MailConfig,
    )
    from ._config import _Reader

ACTION_NAMES = ("deny", "alert", "acl_groups", "last_login", "mail", "fields", "namespaces")
_FIELD_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_/+.-]*")
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@attrs.frozen(kw_only=True)
class ActionsConfig:
    """Which actions run, in which order, per protocol, and their settings."""

    imap: tuple[str, ...] = ()
    pop3: tuple[str, ...] = ()
    default: tuple[str, ...] = ()
    deny: DenyConfig | None = None
    alerts: tuple[AlertConfig, ...] = ()
    acl_groups: AclGroupsConfig | None = None
    last_login: LastLoginConfig | None = None
    mail: MailConfig | None = None
    fields: tuple[FieldConfig, ...] = ()

    def for_protocol(self, protocol: str | None) -> tuple[str, ...]:
        """The actions to run for *protocol* (``None``: not given on the script-login line)."""
        if protocol == "imap":
            return self.imap
        if protocol == "pop3":
            return self.pop3
        return self.default


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


_TABLES = ("deny", "alert", "acl_groups", "last_login", "mail", "field")


def parse_actions(r: _Reader, data: Mapping[str, Any], *, has_spools: bool) -> ActionsConfig:
    """Read ``[actions]`` and the action tables from parsed TOML."""
    if not any(t in data for t in (*_TABLES, "actions")):
        namespaces = ("namespaces",) if has_spools else ()
        return ActionsConfig(imap=namespaces, pop3=(), default=namespaces)
    from ._actionconf import (  # noqa: PLC0415 - only when actions are configured
        AclGroupsConfig,
        AlertConfig,
        DenyConfig,
        FieldConfig,
        LastLoginConfig,
        MailConfig,
    )

    configured: list[str] = []
    deny = None
    if "deny" in data:
        t = r.table(data, "deny", "deny")
        keys = {f.name for f in attrs.fields(DenyConfig)}
        r.unknown(t, keys, "deny")
        deny = DenyConfig(
            users=r.strings(t, "users", "deny") or (),
            networks=_networks(r, t, "networks", "deny"),
            local_networks=_networks(r, t, "local_networks", "deny"),
            groups=r.strings(t, "groups", "deny") or (),
            allow_users=r.strings(t, "allow_users", "deny") or (),
            allow_networks=_networks(r, t, "allow_networks", "deny"),
            allow_local_networks=_networks(r, t, "allow_local_networks", "deny"),
            allow_groups=r.strings(t, "allow_groups", "deny") or (),
            default=r.take(
                t,
                "default",
                "deny",
                str,
                "allow",
                lambda v: None if v in {"allow", "deny"} else 'must be "allow" or "deny"',
            ),
            message=r.take(t, "message", "deny", str, "Access denied."),
        )
        configured.append("deny")
    alerts = []
    for path, raw in r.array(data, "alert"):
        r.unknown(raw, {"text", "if_exists"}, path)
        text = _template(r, raw, "text", path, required=True)
        if_exists = _template(r, raw, "if_exists", path, required=False)
        if if_exists is not None and not if_exists.text.startswith(("/", "{home}")):
            r.problem(f"{path}.if_exists", "must be an absolute path (start with '/' or '{home}')")
        if text is not None:
            alerts.append(AlertConfig(text=text, if_exists=if_exists))
    if alerts:
        configured.append("alert")
    acl_groups = None
    if "acl_groups" in data:
        t = r.table(data, "acl_groups", "acl_groups")
        r.unknown(t, {"include", "exclude"}, "acl_groups")
        acl_groups = AclGroupsConfig(
            include=r.strings(t, "include", "acl_groups") or (),
            exclude=r.strings(t, "exclude", "acl_groups") or (),
        )
        configured.append("acl_groups")
    last_login = None
    if "last_login" in data:
        t = r.table(data, "last_login", "last_login")
        r.unknown(t, {f.name for f in attrs.fields(LastLoginConfig)}, "last_login")
        backend = r.take(
            t,
            "backend",
            "last_login",
            str,
            "file",
            lambda v: (
                None
                if v in {"file", "sqlite", "postgresql"}
                else "must be file, sqlite or postgresql"
            ),
        )
        path_t = _template(r, t, "path", "last_login", required=False) or LastLoginConfig().path
        if not path_t.text.startswith("{home}/"):
            r.problem(
                "last_login.path", "must start with '{home}/': the file lives in the user's home"
            )
        if "/Maildir/" in path_t.text and "/." in path_t.text.split("/Maildir/", 1)[1]:
            r.problem("last_login.path", "a dot-name inside a Maildir would show up as a folder")
        dsn = r.take(t, "dsn", "last_login", str, "")
        if backend == "postgresql" and not dsn:
            r.problem("last_login.dsn", 'required for backend = "postgresql"')
        database = r.take(t, "database", "last_login", str, LastLoginConfig().database)
        if not database.startswith("/"):
            r.problem("last_login.database", "must be an absolute path")
        last_login = LastLoginConfig(
            backend=backend,
            path=path_t,
            database=database,
            dsn=dsn,
            table=r.take(
                t,
                "table",
                "last_login",
                str,
                "last_login",
                lambda v: (
                    None
                    if _TABLE_RE.fullmatch(v)
                    else "must be an SQL identifier [A-Za-z_][A-Za-z0-9_]*"
                ),
            ),
            timeout=float(
                r.take(
                    t,
                    "timeout",
                    "last_login",
                    (int, float),
                    1.0,
                    lambda v: None if 0 < v <= 10 else "must be > 0 and <= 10 seconds",
                )
            ),
        )
        configured.append("last_login")
    mail = None
    if "mail" in data:
        t = r.table(data, "mail", "mail")
        r.unknown(t, {"location"}, "mail")
        location = _template(r, t, "location", "mail", required=True)
        if location is not None:
            mail = MailConfig(location=location)
            configured.append("mail")
    fields = []
    for path, raw in r.array(data, "field"):
        r.unknown(raw, {"name", "value", "mode", "separator", "literal_percent"}, path)
        name = r.take(
            raw,
            "name",
            path,
            str,
            None,
            lambda v: (
                None
                if _FIELD_NAME_RE.fullmatch(v) and v.upper() not in {"USER", "USERDB_KEYS"}
                else "must be a userdb field name (letters, digits, _ / + . -; not USER or USERDB_KEYS)"
            ),
        )
        if name is None and "name" not in raw:
            r.problem(f"{path}.name", "required key missing")
        value = _template(r, raw, "value", path, required=True)
        mode = r.take(
            raw,
            "mode",
            path,
            str,
            "set",
            lambda v: (
                None if v in {"set", "append", "default"} else "must be set, append or default"
            ),
        )
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
    if fields:
        configured.append("fields")
    if has_spools:
        configured.append("namespaces")

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
    if (
        "acl_groups" in set(lists["imap"]) | set(lists["pop3"]) | set(lists["default"])
        and acl_groups is None
    ):
        acl_groups = AclGroupsConfig()
    return ActionsConfig(
        imap=lists["imap"],
        pop3=lists["pop3"],
        default=lists["default"],
        deny=deny,
        alerts=tuple(alerts),
        acl_groups=acl_groups,
        last_login=last_login,
        mail=mail,
        fields=tuple(fields),
    )
