"""The configuration schema: the attrs classes a validated configuration is made of.

The per-action settings (``[deny]``, ``[[alert]]`` …) are in :mod:`nsprov._config.actionconf`,
imported only when a configuration has action tables.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

import attrs

from .._defaults import POSTLOGIN_DEADLINE
from .._model import DEFAULT_RESERVED_NAMES
from .._template import Template
from ..exceptions import ConfigError

if TYPE_CHECKING:
    from .._env import Dialect
    from .actionconf import (
        AclGroupsConfig,
        AlertConfig,
        DenyConfig,
        FieldConfig,
        LastLoginConfig,
        MailConfig,
    )


#: Fields each template may use.
PREFIX_FIELDS = frozenset({"name", "sep"})
NAME_FIELDS = frozenset({"id", "slug", "hash"})
PATH_FIELDS = frozenset({"home", "user", "ns", "id", "slug", "hash"})

OnError = Literal["continue", "deny"]
Symlinks = Literal["skip", "inside"]


@attrs.frozen(kw_only=True)
class SpoolConfig:
    """One ``[[spool]]`` table, with the ``[namespace]`` defaults applied."""

    path: str
    prefix: Template
    separator: str = "/"
    name: Template = Template("s-{id}")
    index: Template = Template("{home}/.nsprov/{ns}")
    control: Template | None = Template("{home}/.nsprov/{ns}")
    index_private: Template | None = None
    inbox: Template | None = None
    list: Literal["yes", "no", "children"] = "yes"
    subscriptions: bool = True
    hidden: bool = False
    subscribe: bool = False
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    ignore_file: str | None = ".nsprovignore"
    symlinks: Symlinks = "skip"
    #: The prefix may start with ``{name}``: the private namespace must then have a prefix.
    allow_private_overlap: bool = False

    @property
    def path_bytes(self) -> bytes:
        """The spool path as the filesystem sees it."""
        return os.fsencode(self.path)


@attrs.frozen(kw_only=True)
class IdentityConfig:
    """How to find the identity the mail process will run with (``[identity]``)."""

    mail_uid: str = ""
    mail_gid: str = ""
    mail_access_groups: tuple[str, ...] = ()
    first_valid_gid: int = 1
    last_valid_gid: int = 0


@attrs.frozen(kw_only=True)
class ServeConfig:
    """``[serve]``: defaults for ``nsprov serve`` (its command-line options win); None = built-in default."""

    socket: str | None = None
    socket_mode: int | None = None
    socket_group: str | None = None
    deadline: float | None = None
    cache_ttl: float | None = None
    reply_budget: int | None = None
    max_connections: int | None = None
    idle_timeout: float | None = None


#: Where ``[scan_cache]`` keeps its files unless ``dir`` says otherwise.
DEFAULT_SCAN_CACHE_DIR = "/var/cache/nsprov"


@attrs.frozen(kw_only=True)
class ScanCacheConfig:
    """``[scan_cache]``: the persistent scan cache for large spools (see :mod:`nsprov._scancache`)."""

    dir: str = DEFAULT_SCAN_CACHE_DIR
    #: A cache older than this many seconds is not used: the bound on how late a new grant shows.
    max_age: float = 300.0
    #: How often ``nsprov serve`` rebuilds the cache (seconds); 0 leaves it to ``nsprov cache update``.
    refresh: float = 60.0


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


@attrs.frozen(kw_only=True)
class Config:
    """A validated nsprov configuration."""

    source: str = "<defaults>"
    spools: tuple[SpoolConfig, ...] = ()
    dialect: Literal["2.3", "2.4"] = "2.3"
    reserved_names: tuple[str, ...] = DEFAULT_RESERVED_NAMES
    config_prefixes: tuple[str, ...] = ()
    private_namespace: str = "inbox"
    global_mail_driver: str | None = None
    max_namespaces: int = 1000
    create_dirs: bool = True
    identity: IdentityConfig = IdentityConfig()
    deadline: float = POSTLOGIN_DEADLINE
    on_error: OnError = "continue"
    debug_users: tuple[str, ...] = ()
    #: ``[postlogin] log_logins``: one info line per post-login (user, served, skipped, ms).
    log_logins: bool = True
    actions: ActionsConfig = ActionsConfig()
    serve: ServeConfig = ServeConfig()
    scan_cache: ScanCacheConfig | None = None

    def check_does_something(self) -> None:
        """Raise :class:`ConfigError` when no protocol runs any action (an empty config)."""
        a = self.actions
        if not (a.imap or a.pop3 or a.default):
            raise ConfigError(
                f"{self.source}: the configuration does nothing: no [[spool]] and no action"
            )

    @property
    def output_dialect(self) -> Dialect:
        """The output dialect, with what dovecot.conf lets namespaces inherit."""
        from .._env import dialect_for  # noqa: PLC0415 - _env (the model) sits above the schema

        return dialect_for(self.dialect, inherited_driver=self.global_mail_driver)

    @property
    def separator(self) -> str:
        """The one hierarchy separator every spool uses."""
        return self.spools[0].separator if self.spools else "/"
