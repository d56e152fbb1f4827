"""The built-in post-login actions: what ``deny``, ``alert``, ``acl_groups``, ``last_login``,
``mail``, ``fields`` and ``namespaces`` do.

Actions run in the order the configuration lists them for the login's protocol
(read by :mod:`nsprov._config.actions`).  Each one works on a
:class:`nsprov._login.Login`: it reads the post-login context and records effects
(userdb fields, client lines, a denial, work to do as the user); nothing reaches
the client or the environment until every action has run.

This module imports neither the configuration nor the login context at run time
(only for type checking): :class:`~nsprov._login.Login` dispatches to it.
"""

# ruff: noqa: SLF001 - the built-in actions work on the private state of their own context
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import _actrules
from ._actrules import acl_groups_value, clean_text, describe_error, write_file_atomically
from .exceptions import Denied

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._config import Config
    from ._identity import MailUser
    from ._login import Login

__all__ = [
    "ACTIONS",
    "acl_groups_value",
    "clean_text",
    "describe_error",
    "group_names",
    "run_actions",
    "write_file_atomically",
]


def group_names(user: MailUser, *, numeric: bool = True) -> list[str]:
    """Names of the mail identity's groups (:func:`nsprov._actrules.group_names`)."""
    return _actrules.group_names(user.identity.gid, user.identity.groups, numeric=numeric)


def action_deny(login: Login, config: Config) -> None:
    """Refuse the login by user, network or group, with allow-lists taking precedence."""
    d = config.actions.deny
    if d is None:
        return
    rules = _actrules.compile_deny(
        users=d.users,
        networks=d.networks,
        local_networks=d.local_networks,
        groups=d.groups,
        allow_users=d.allow_users,
        allow_networks=d.allow_networks,
        allow_local_networks=d.allow_local_networks,
        allow_groups=d.allow_groups,
        default=d.default,
        message=d.message,
    )
    message = _actrules.deny_verdict(
        rules,
        user=login.user,
        ip=login.ip,
        local_ip=login.local_ip,
        groups=lambda: group_names(login.mail_user),
    )
    if message is not None:
        login.deny(message)


def action_alert(login: Login, config: Config) -> None:
    """Queue the configured alerts (IMAP only); conditional ones are checked as the user."""
    if login._protocol != "imap":
        return
    values = None
    for alert in config.actions.alerts:
        values = values or login.template_values()
        text = alert.text.render(values)
        if alert.if_exists is None:
            login.alert(text)
            continue
        path = alert.if_exists.render(values)
        slot = len(login._client)
        login._client.append(b"")

        def check(path: str = path, text: str = text, slot: int = slot) -> None:
            if _actrules.alert_condition(path):
                login._client[slot] = _actrules.alert_line(text)

        login.as_user(f"alert condition {path}", check)


def action_acl_groups(login: Login, config: Config) -> None:
    """Export the mail identity's UNIX groups as ``acl_groups`` (from NSS, never from ``groups``)."""
    a = config.actions.acl_groups
    value, warning = _actrules.acl_groups(
        group_names(login.mail_user, numeric=False),
        a.include if a is not None else (),
        a.exclude if a is not None else (),
        config.dialect,
    )
    if warning is not None:
        login._warning(warning)
    if value is not None:
        login.append_field("acl_groups", value)


def action_last_login(login: Login, config: Config) -> None:
    """Record the login time: a file in the home (written as the user), SQLite or PostgreSQL."""
    c = config.actions.last_login
    if c is None:
        return
    now = int(time.time())
    if c.backend == "file":
        path = c.path.render(login.template_values())
        line = _actrules.last_login_line(now, login._protocol, login.ip)
        login.as_user("last-login file", lambda: write_file_atomically(path, line))
        return
    from ._sql import record_login  # noqa: PLC0415 - sqlite3/psycopg only for the sql backend

    record_login(
        c,
        user=login.user,
        protocol=login._protocol or "",
        ip=login.ip,
        when=now,
        budget=login._remaining(reserve=0.3),
    )


def action_mail(login: Login, config: Config) -> None:
    """Override the mail location (2.3: ``MAIL``; 2.4: ``MAIL_DRIVER``, ``MAIL_PATH`` …)."""
    m = config.actions.mail
    if m is None:
        return
    from ._location import MailLocation  # noqa: PLC0415 - only logins with a [mail] action

    location = MailLocation.parse(m.location.render(login.template_values()))
    if config.dialect == "2.3":
        login.set_field("mail", location.render())
        return
    from ._env import location_settings_24  # noqa: PLC0415 - only [mail] on Dovecot 2.4

    for key, value in location_settings_24(location):
        login.set_field(key.lower(), value)


def action_fields(login: Login, config: Config) -> None:
    """Set, append to, or default arbitrary userdb fields from templates."""
    values = login.template_values()
    for f in config.actions.fields:
        _actrules.apply_field(
            login._env,
            name=f.name,
            value=f.value.render(values),
            mode=f.mode,
            separator=f.separator,
            literal_percent=f.literal_percent,
            dialect=config.dialect,
        )


def action_namespaces(login: Login, config: Config) -> None:
    """The shared-namespace discovery."""
    login.add_namespaces(config)


ACTIONS: dict[str, Callable[[Login, Config], None]] = {
    "deny": action_deny,
    "alert": action_alert,
    "acl_groups": action_acl_groups,
    "last_login": action_last_login,
    "mail": action_mail,
    "fields": action_fields,
    "namespaces": action_namespaces,
}


def run_actions(login: Login, config: Config) -> list[str]:
    """Run the configured actions for the login's protocol; return one error line per failed action.

    A failed action is logged and skipped (fail-open); with ``on_error =
    "deny"`` the first failure denies the login.  A denial stops the rest.
    """
    errors: list[str] = []
    for name in config.actions.for_protocol(login._protocol):
        try:
            ACTIONS[name](login, config)
        except Denied:
            break
        except Exception as e:
            errors.append(f"{name}: {describe_error(e)}")
            if config.on_error == "deny":
                raise
    return errors
