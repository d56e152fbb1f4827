"""The userdb reply budget: which namespaces fit one reply of ``nsprov serve``, and in how many bytes.

Dovecot refuses a userdb reply line over 8 KiB, the first userdb's fields
included; :func:`fit_reply` keeps the longest leading run of namespaces within a
budget.  Nothing here imports asyncio, ssl, subprocess or socket, so
:func:`nsprov.reply_budget` costs no more than the scan it runs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import attrs

from ._identity import identify
from ._scan import DEFAULT_FS, Fs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._config import Config
    from ._env import Dialect
    from ._identity import MailUser
    from ._model import Namespace

#: Bytes of JSON per reply at most: the auth worker's 8192-byte line also carries the other userdb's fields.
DEFAULT_REPLY_BUDGET = 7000
#: The 2.4 dialect's budget: the Lua userdb script's ``max_reply`` default (``nsprov/lua/nsprov-userdb.lua``),
#: which drops a longer reply; Dovecot refuses a userdb reply over 8 KiB, the first userdb's fields included.
LUA_MAX_REPLY = 7680
#: The auth worker's and the mail process's limit for one userdb reply line.
AUTH_REPLY_LIMIT = 8192


def reply_fields(namespaces: Sequence[Namespace], dialect: Dialect) -> list[tuple[str, str]]:
    """The userdb fields for *namespaces*: the list key first, then each namespace's settings.

    Keys are lowercase (Dovecot 2.3 takes them as given); defaults are left out.
    """
    if not namespaces:
        return []
    fields = [(dialect.list_key.lower(), " ".join(ns.name for ns in namespaces))]
    for ns in namespaces:
        fields += [(f"namespace/{ns.name}/{k.lower()}", v) for k, v in dialect.settings(ns)]
    return fields


def _pair_size(key: str, value: str) -> int:
    return len(_json(key)) + 1 + len(_json(value))


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@attrs.frozen
class Reply:
    """A userdb reply: the JSON object, and how many namespaces it carries of how many."""

    value: bytes
    fits: int
    total: int
    #: The JSON size with every namespace in it.
    full_size: int

    @property
    def size(self) -> int:
        """Bytes of JSON actually sent."""
        return len(self.value)


def fit_reply(namespaces: Sequence[Namespace], dialect: Dialect, budget: int) -> Reply:
    """The JSON reply for the longest leading run of *namespaces* within *budget* bytes."""
    list_key = dialect.list_key.lower()
    list_base = len(_json(list_key)) + 1 + 2  # "namespace":"" (the names go inside the quotes)
    size = 2  # {}
    per_ns: list[int] = []
    for ns in namespaces:
        pairs = sum(
            1 + _pair_size(f"namespace/{ns.name}/{k.lower()}", v) for k, v in dialect.settings(ns)
        )
        per_ns.append(pairs + len(ns.name) + (1 if per_ns else 0))
    full = 2 + (list_base + sum(per_ns) if per_ns else 0)
    fits = 0
    for add in per_ns:
        grown = size + add + (list_base if not fits else 0)
        if grown > budget:
            break
        size = grown
        fits += 1
    value = _json(dict(reply_fields(namespaces[:fits], dialect)))
    if len(value) != size:  # pragma: no cover - the arithmetic above is the contract
        raise AssertionError(f"reply size {len(value)} != computed {size}")
    return Reply(value=value, fits=fits, total=len(namespaces), full_size=full)


@attrs.frozen
class ReplyBudget:
    """How a user's reply fits the budget: ``fits`` of ``total`` namespaces in ``size`` bytes.

    .. versionadded:: 0.1.0
    """

    fits: int
    total: int
    size: int
    #: The size every namespace would need.
    full_size: int
    budget: int

    @property
    def over(self) -> bool:
        """True when some namespaces do not fit."""
        return self.fits < self.total


def default_reply_budget(dialect: str) -> int:
    """The reply budget when none is configured: the Lua script's cap for 2.4, else the dict's."""
    return LUA_MAX_REPLY if dialect == "2.4" else DEFAULT_REPLY_BUDGET


def reply_budget(
    config: Config,
    user: str | MailUser,
    *,
    budget: int | None = None,
    fs: Fs = DEFAULT_FS,
) -> ReplyBudget:
    """How *user*'s ``nsprov serve`` reply fits *budget*: ``(fits, total, size, …)``.

    *user* is a login name (identity from NSS and ``[identity]``, as the server
    resolves it) or a :class:`nsprov._identity.MailUser`.  For ``nsprov check``:
    a user is over budget when ``fits < total``.  Without *budget*, the
    dialect's (:func:`default_reply_budget`).
    """
    if budget is None:
        budget = default_reply_budget(config.dialect)
    from ._engine import resolve  # noqa: PLC0415 - the scan only when a budget is asked for
    from ._env import dialect_for  # noqa: PLC0415 - as above: nsprov.reply_budget stays light

    mail_user = identify(config, user, None) if isinstance(user, str) else user
    p = resolve(config, mail_user, fs=fs, keep_skipped=False)
    reply = fit_reply(p.discovery.namespaces, dialect_for(config.dialect), budget)
    return ReplyBudget(
        fits=reply.fits,
        total=reply.total,
        size=reply.size,
        full_size=reply.full_size,
        budget=budget,
    )
