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

    from ._config import Config, load_config
    from ._engine import Plan, plan
    from ._env import V23, V24, Dialect, EnvLimits, fit_environ, from_environ, to_environ
    from ._hook import run_hook
    from ._identity import MailUser, mail_user_from_environ, mail_user_from_nss
    from ._location import MailLocation
    from ._login import Denied, Login
    from ._model import Namespace, check_namespaces, namespace_problems
    from ._perms import Decision, FileFacts, Identity, PosixAcl, decide
    from ._reply import ReplyBudget, reply_budget
    from ._scan import Discovery, Served, Skipped, discover
    from ._template import Template

_LOCATIONS = {
    "Config": "_config",
    "load_config": "_config",
    "Plan": "_engine",
    "plan": "_engine",
    "V23": "_env",
    "V24": "_env",
    "Dialect": "_env",
    "EnvLimits": "_env",
    "fit_environ": "_env",
    "from_environ": "_env",
    "to_environ": "_env",
    "MailUser": "_identity",
    "mail_user_from_environ": "_identity",
    "mail_user_from_nss": "_identity",
    "MailLocation": "_location",
    "Denied": "_login",
    "Login": "_login",
    "run_hook": "_hook",
    "Namespace": "_model",
    "check_namespaces": "_model",
    "namespace_problems": "_model",
    "Decision": "_perms",
    "FileFacts": "_perms",
    "Identity": "_perms",
    "PosixAcl": "_perms",
    "decide": "_perms",
    "Discovery": "_scan",
    "Served": "_scan",
    "Skipped": "_scan",
    "discover": "_scan",
    "ReplyBudget": "_reply",
    "reply_budget": "_reply",
    "Template": "_template",
}

__all__ = [  # noqa: RUF022 - plainly sorted, as the test checks
    "Config",
    "Decision",
    "Denied",
    "Dialect",
    "Discovery",
    "EnvLimits",
    "FileFacts",
    "Identity",
    "Login",
    "MailLocation",
    "MailUser",
    "Namespace",
    "Plan",
    "PosixAcl",
    "ReplyBudget",
    "Served",
    "Skipped",
    "Template",
    "V23",
    "V24",
    "check_namespaces",
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
