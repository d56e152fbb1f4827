"""The namespace model: a Dovecot public namespace and the checks Dovecot applies.

Everything here is pure: no environment, no filesystem, no Dovecot version.
Serialisation lives in :mod:`nsprov._env` (userdb fields) and
:mod:`nsprov._conf` (``dovecot.conf`` blocks).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

import attrs

from . import _fields
from ._location import MailLocation
from .exceptions import InvalidNamespaceError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

NAME_RE = re.compile(r"[a-z0-9_-]+")
NamespaceType = Literal["private", "shared", "public"]
ListMode = Literal["yes", "no", "children"]
_TYPES = ("private", "shared", "public")
_LIST_MODES = ("yes", "no", "children")
#: Names of namespaces a stock Dovecot configuration defines; never emit them.
DEFAULT_RESERVED_NAMES: tuple[str, ...] = ("inbox",)


has_control = _fields.has_control
is_utf8 = _fields.is_utf8


def _lower(value: str) -> str:
    return value.lower()


def _check_name(_inst: object, _attr: object, value: str) -> None:
    problem = _fields.name_problem(value)
    if problem is not None:
        raise InvalidNamespaceError(problem)


def _check_separator(_inst: object, _attr: object, value: str) -> None:
    problem = _fields.separator_problem(value)
    if problem is not None:
        raise InvalidNamespaceError(problem)


def _check_prefix(inst: Namespace, _attr: object, value: str) -> None:
    problem = _fields.prefix_problem(inst.name, value, inst.list, inst.separator)
    if problem is not None:
        raise InvalidNamespaceError(problem)


@attrs.frozen(kw_only=True)
class Namespace:
    """One Dovecot namespace, with every setting Dovecot 2.3 accepts from userdb.

    Defaults are Dovecot's own, except ``type`` (``public``, nsprov's purpose).
    """

    name: str = attrs.field(converter=_lower, validator=_check_name)
    type: NamespaceType = attrs.field(default="public", validator=attrs.validators.in_(_TYPES))
    separator: str = attrs.field(default="/", validator=_check_separator)
    list: ListMode = attrs.field(default="yes", validator=attrs.validators.in_(_LIST_MODES))
    prefix: str = attrs.field(validator=_check_prefix)
    location: MailLocation
    inbox: bool = False
    hidden: bool = False
    subscriptions: bool = True
    ignore_on_failure: bool = False
    disabled: bool = False
    order: int = attrs.field(default=0, validator=attrs.validators.ge(0))

    @property
    def key(self) -> str:
        """The environment key stem, ``NAMESPACE/<NAME>``."""
        return "NAMESPACE/" + self.name.upper()


def namespace_problems(
    namespaces: Sequence[Namespace],
    *,
    reserved_names: Iterable[str] = DEFAULT_RESERVED_NAMES,
    taken_prefixes: Iterable[str] = (),
) -> list[str]:
    """Every problem Dovecot's ``namespaces_check()`` and settings parser would report.

    Each namespace is valid on its own (the class validates); this checks the
    set: unique names (ignoring case, as Dovecot 2.3 does), no reserved name,
    unique prefixes, one separator among listed namespaces, at most one
    ``inbox=yes``, unique per-user index and control paths.
    """
    return _fields.namespace_problems(
        namespaces, reserved_names=reserved_names, taken_prefixes=taken_prefixes
    )


def check_namespaces(
    namespaces: Sequence[Namespace],
    *,
    reserved_names: Iterable[str] = DEFAULT_RESERVED_NAMES,
    taken_prefixes: Iterable[str] = (),
) -> None:
    """Raise :class:`InvalidNamespaceError` listing every problem of the set, if any."""
    problems = namespace_problems(
        namespaces, reserved_names=reserved_names, taken_prefixes=taken_prefixes
    )
    if problems:
        raise InvalidNamespaceError("; ".join(problems), tuple(problems))


__all__ = ["MailLocation", "Namespace", "check_namespaces", "namespace_problems"]
