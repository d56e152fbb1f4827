"""Settings of the individual post-login actions (``[deny]``, ``[[alert]]`` …).

A module of its own so that a login whose configuration has no action tables
does not pay for creating these classes.
"""

from __future__ import annotations

from typing import Literal

import attrs

from .._template import Template


@attrs.frozen(kw_only=True)
class DenyConfig:
    """``[deny]``: refuse logins by user, client or server network, or UNIX group.

    Precedence: a login matching any ``allow_*`` entry is let in; otherwise
    one matching any deny entry is refused; otherwise ``default`` decides.
    """

    users: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    local_networks: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    allow_users: tuple[str, ...] = ()
    allow_networks: tuple[str, ...] = ()
    allow_local_networks: tuple[str, ...] = ()
    allow_groups: tuple[str, ...] = ()
    default: Literal["allow", "deny"] = "allow"
    message: str = "Access denied."


@attrs.frozen(kw_only=True)
class AlertConfig:
    """One ``[[alert]]``: a message for IMAP clients, optionally only if a file exists."""

    text: Template
    if_exists: Template | None = None


@attrs.frozen(kw_only=True)
class AclGroupsConfig:
    """``[acl_groups]``: export the mail identity's UNIX groups for Dovecot's ACL plugin."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class LastLoginConfig:
    """``[last_login]``: record each login's time, protocol and client address."""

    backend: Literal["file", "sqlite", "postgresql"] = "file"
    path: Template = Template("{home}/.nsprov/last-login")
    database: str = "/var/lib/nsprov/last-login.sqlite"
    dsn: str = ""
    table: str = "last_login"
    timeout: float = 1.0


@attrs.frozen(kw_only=True)
class MailConfig:
    """``[mail]``: override the user's mail location (a 2.3 location string template)."""

    location: Template


@attrs.frozen(kw_only=True)
class FieldConfig:
    """One ``[[field]]``: set, append to, or default a userdb field."""

    name: str
    value: Template
    mode: Literal["set", "append", "default"] = "set"
    separator: str = ","
    literal_percent: bool = False
