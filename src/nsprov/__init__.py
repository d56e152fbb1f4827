"""nsprov: permission-true Dovecot public namespaces for a shared mail spool.

Nothing is imported eagerly: ``nsprov post-login`` imports this package on
every login, so public names are served lazily (PEP 562).
"""

from __future__ import annotations

# Not ``typing.TYPE_CHECKING``: importing typing costs the post-login fast path ~7 ms
# (it pulls in re and enum); mypy treats a module-level TYPE_CHECKING = False the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._breaker import SpoolBreaker
    from ._config import (
        ActionsConfig,
        Config,
        IdentityConfig,
        OnError,
        ScanCacheConfig,
        ServeConfig,
        SpoolConfig,
        Symlinks,
        config_from_mapping,
        load_config,
    )
    from ._config.actionconf import (
        AclGroupsConfig,
        AlertConfig,
        DenyConfig,
        FieldConfig,
        LastLoginConfig,
        MailConfig,
    )
    from ._engine import Plan, plan
    from ._env import V23, V24, Dialect, EnvLimits, fit_environ, from_environ, to_environ
    from ._fs import Fs
    from ._hook import run_hook
    from ._identity import MailUser, mail_user_from_environ, mail_user_from_nss
    from ._location import MailLocation
    from ._login import Login
    from ._model import ListMode, Namespace, NamespaceType, check_namespaces, namespace_problems
    from ._perms import Decision, FileFacts, Identity, PosixAcl, decide
    from ._reply import ReplyBudget, reply_budget
    from ._scan import Discovery, Reason, Served, Skipped, discover
    from ._template import Template
    from .exceptions import Denied

_LOCATIONS = {
    "AclGroupsConfig": "_config.actionconf",
    "AlertConfig": "_config.actionconf",
    "DenyConfig": "_config.actionconf",
    "FieldConfig": "_config.actionconf",
    "LastLoginConfig": "_config.actionconf",
    "MailConfig": "_config.actionconf",
    "ActionsConfig": "_config",
    "SpoolBreaker": "_breaker",
    "Config": "_config",
    "IdentityConfig": "_config",
    "OnError": "_config",
    "ScanCacheConfig": "_config",
    "ServeConfig": "_config",
    "SpoolConfig": "_config",
    "Symlinks": "_config",
    "config_from_mapping": "_config",
    "load_config": "_config",
    "Plan": "_engine",
    "plan": "_engine",
    "Dialect": "_env",
    "EnvLimits": "_env",
    "V23": "_env",
    "V24": "_env",
    "fit_environ": "_env",
    "from_environ": "_env",
    "to_environ": "_env",
    "run_hook": "_hook",
    "MailUser": "_identity",
    "mail_user_from_environ": "_identity",
    "mail_user_from_nss": "_identity",
    "MailLocation": "_location",
    "Denied": "exceptions",
    "Login": "_login",
    "ListMode": "_model",
    "Namespace": "_model",
    "NamespaceType": "_model",
    "check_namespaces": "_model",
    "namespace_problems": "_model",
    "Decision": "_perms",
    "FileFacts": "_perms",
    "Identity": "_perms",
    "PosixAcl": "_perms",
    "decide": "_perms",
    "Discovery": "_scan",
    "Fs": "_fs",
    "Reason": "_scan",
    "Served": "_scan",
    "Skipped": "_scan",
    "discover": "_scan",
    "ReplyBudget": "_reply",
    "reply_budget": "_reply",
    "Template": "_template",
}

__all__ = [  # noqa: RUF022 - plainly sorted, as the test checks
    "AclGroupsConfig",
    "ActionsConfig",
    "AlertConfig",
    "Config",
    "Decision",
    "Denied",
    "DenyConfig",
    "Dialect",
    "Discovery",
    "EnvLimits",
    "FieldConfig",
    "FileFacts",
    "Fs",
    "Identity",
    "IdentityConfig",
    "LastLoginConfig",
    "ListMode",
    "Login",
    "MailConfig",
    "MailLocation",
    "MailUser",
    "Namespace",
    "NamespaceType",
    "OnError",
    "Plan",
    "PosixAcl",
    "Reason",
    "ReplyBudget",
    "ScanCacheConfig",
    "ServeConfig",
    "Served",
    "Skipped",
    "SpoolBreaker",
    "SpoolConfig",
    "Symlinks",
    "Template",
    "V23",
    "V24",
    "check_namespaces",
    "config_from_mapping",
    "decide",
    "discover",
    "fit_environ",
    "from_environ",
    "load_config",
    "mail_user_from_environ",
    "mail_user_from_nss",
    "namespace_problems",
    "plan",
    "reply_budget",
    "run_hook",
    "to_environ",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415

        return version("nsprov")
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'nsprov' has no attribute {name!r}")
    from importlib import import_module  # noqa: PLC0415

    value = getattr(import_module(f"nsprov.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
