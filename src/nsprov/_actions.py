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

import os
import time
from typing import TYPE_CHECKING

from .exceptions import Denied, NsprovError

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
]


def clean_text(text: str) -> str:
    """Client text with CR, LF and NUL removed (the text is data, never protocol)."""
    return text.replace("\r", "").replace("\n", " ").replace("\0", "")


def _match_user(patterns: tuple[str, ...], user: str) -> bool:
    if not patterns:
        return False
    from fnmatch import fnmatchcase  # noqa: PLC0415

    return any(fnmatchcase(user, p) for p in patterns)


def _match_ip(networks: tuple[str, ...], ip: str) -> bool:
    if not networks or not ip:
        return False
    import ipaddress  # noqa: PLC0415 - only when networks are configured

    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


def group_names(user: MailUser, *, numeric: bool = True) -> list[str]:
    """Names of the mail identity's groups (primary first, then sorted by gid), via NSS.

    A gid without a group entry appears as its number with *numeric*, else not at all.
    """
    import grp  # noqa: PLC0415

    names = []
    for gid in [user.identity.gid, *sorted(user.identity.groups)]:
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            if numeric:
                names.append(str(gid))
    return names


def _match_group(patterns: tuple[str, ...], login: Login) -> bool:
    if not patterns:
        return False
    names = group_names(login.mail_user)
    from fnmatch import fnmatchcase  # noqa: PLC0415

    return any(fnmatchcase(n, p) for n in names for p in patterns)


def action_deny(login: Login, config: Config) -> None:
    """Refuse the login by user, network or group, with allow-lists taking precedence."""
    d = config.actions.deny
    if d is None:
        return
    allowed = (
        _match_user(d.allow_users, login.user)
        or _match_ip(d.allow_networks, login.ip)
        or _match_ip(d.allow_local_networks, login.local_ip)
        or _match_group(d.allow_groups, login)
    )
    if allowed:
        return
    denied = (
        _match_user(d.users, login.user)
        or _match_ip(d.networks, login.ip)
        or _match_ip(d.local_networks, login.local_ip)
        or _match_group(d.groups, login)
        or d.default == "deny"
    )
    if denied:
        login.deny(d.message)


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
            try:
                os.stat(path)
            except FileNotFoundError:
                return
            login._client[slot] = f"* OK [ALERT] {clean_text(text)}\r\n".encode("utf-8", "replace")

        login.as_user(f"alert condition {path}", check)


def acl_groups_value(names: list[str], dialect: str) -> str:
    """The ``acl_groups`` value: comma-separated; 2.3 doubles ``%`` (plugin settings are expanded)."""
    if dialect == "2.3":
        return ",".join(n.replace("%", "%%") for n in names)
    return ",".join(f'"{n}"' if any(c in n for c in ' ,"') else n for n in names)


def action_acl_groups(login: Login, config: Config) -> None:
    """Export the mail identity's UNIX groups as ``acl_groups`` (from NSS, never from ``groups``)."""
    a = config.actions.acl_groups
    names = group_names(login.mail_user, numeric=False)
    if a is not None and (a.include or a.exclude):
        from fnmatch import fnmatchcase  # noqa: PLC0415

        names = [
            n
            for n in names
            if (not a.include or any(fnmatchcase(n, p) for p in a.include))
            and not any(fnmatchcase(n, p) for p in a.exclude)
        ]
    # 2.3 splits the value on "," with no escape; 2.4's list parser treats '"' and '\\'
    # specially even inside quotes.  Such a name would be read as other groups' names, or break
    # the whole value: left out, with one warning.
    unsafe = "," if config.dialect == "2.3" else '"\\'
    skipped = [n for n in names if any(c in n for c in unsafe)]
    if skipped:
        names = [n for n in names if n not in skipped]
        login._warning(
            f"acl_groups: left out group names Dovecot {config.dialect} cannot take: "
            + ", ".join(map(repr, skipped))
        )
    if names:
        login.append_field("acl_groups", acl_groups_value(names, config.dialect))


def action_last_login(login: Login, config: Config) -> None:
    """Record the login time: a file in the home (written as the user), SQLite or PostgreSQL."""
    c = config.actions.last_login
    if c is None:
        return
    now = int(time.time())
    if c.backend == "file":
        path = c.path.render(login.template_values())
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))} {login._protocol or '-'} {login.ip or '-'}\n"
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


def write_file_atomically(path: str, text: str) -> None:
    """Replace *path* by a new file holding *text*, mode 0600, with nsprov's one private writer.

    Run as the user: rename replaces a planted symlink itself and never writes
    through it; the temporary file is created with O_EXCL and O_NOFOLLOW, written
    in full (a write may be short) and removed if anything fails.
    """
    from ._fs import write_private  # noqa: PLC0415 - only for the file backend, as the user

    directory = os.path.dirname(path)
    old = os.umask(0o077)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        write_private(path, text.encode())
    finally:
        os.umask(old)


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
        value = f.value.render(values)
        if f.literal_percent and config.dialect == "2.3":
            value = value.replace("%", "%%")
        if f.mode == "set":
            login.set_field(f.name, value)
        elif f.mode == "append":
            login.append_field(f.name, value, f.separator)
        else:
            login.default_field(f.name, value)


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


def describe_error(e: BaseException) -> str:
    """One line for a failed action or task: the message, the OS error, or the type and message."""
    if isinstance(e, NsprovError | ValueError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return f"{type(e).__name__}: {e}"
