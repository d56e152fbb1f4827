"""The namespace model: a Dovecot public namespace and the checks Dovecot applies.

Everything here is pure: no environment, no filesystem, no Dovecot version.
Serialisation lives in :mod:`nsprov._env` (userdb fields) and
:mod:`nsprov._conf` (``dovecot.conf`` blocks).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

import attrs

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


_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")


def has_control(text: str) -> bool:
    """True if *text* contains an ASCII or C1 control character."""
    return _CONTROL_RE.search(text) is not None


def is_utf8(text: str) -> bool:
    """True if *text* encodes to UTF-8 (no lone surrogates from undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lower(value: str) -> str:
    return value.lower()


def _check_name(_inst: object, _attr: object, value: str) -> None:
    if not NAME_RE.fullmatch(value):
        raise InvalidNamespaceError(
            f"namespace name {value!r} must match [a-z0-9_-]+ "
            "(Dovecot splits names on ',', tab and space)"
        )
    if value.startswith("__"):
        raise InvalidNamespaceError(f"namespace name {value!r} must not start with '__'")


def _check_separator(_inst: object, _attr: object, value: str) -> None:
    if len(value) != 1:
        raise InvalidNamespaceError(
            f"separator {value!r}: Dovecot says 'Hierarchy separator must be only one character long'"
        )
    if has_control(value) or value.isspace():
        raise InvalidNamespaceError(f"separator {value!r} is a control or space character")


def _check_prefix(inst: Namespace, _attr: object, value: str) -> None:
    if not value:
        raise InvalidNamespaceError(
            f"namespace {inst.name}: empty prefix collides with the inbox namespace "
            "('Duplicate namespace prefix')"
        )
    if not is_utf8(value):
        raise InvalidNamespaceError(
            f"namespace {inst.name}: prefix {value!r}: 'Namespace prefix not valid UTF8'"
        )
    if has_control(value):
        raise InvalidNamespaceError(
            f"namespace {inst.name}: prefix {value!r} contains a control character"
        )
    if inst.list != "no":
        if not value.endswith(inst.separator):
            raise InvalidNamespaceError(
                f"namespace {inst.name}: 'list={inst.list} requires prefix={value} "
                f"to end with separator {inst.separator}'"
            )
        if value.startswith(inst.separator):
            raise InvalidNamespaceError(
                f"namespace {inst.name}: 'list={inst.list} requires prefix={value} "
                "not to start with separator'"
            )


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
    problems: list[str] = []
    reserved = {r.lower() for r in reserved_names}
    seen_names: dict[str, str] = {}
    seen_prefixes: dict[str, str] = dict.fromkeys(taken_prefixes, "(configuration)")
    seen_paths: dict[str, str] = {}
    separators: dict[str, str] = {}
    inboxes: list[str] = []
    for ns in namespaces:
        folded = ns.name.casefold()
        if folded in reserved:
            problems.append(f"namespace name {ns.name!r} is reserved for a configured namespace")
        if folded in seen_names:
            problems.append(f"namespace name {ns.name!r} given twice (names ignore case)")
        seen_names.setdefault(folded, ns.name)
        if ns.prefix in seen_prefixes:
            problems.append(
                f'namespace {ns.name}: Duplicate namespace prefix: "{ns.prefix}" '
                f"(also {seen_prefixes[ns.prefix]})"
            )
        seen_prefixes.setdefault(ns.prefix, ns.name)
        if ns.list != "no":
            separators.setdefault(ns.separator, ns.name)
        if ns.inbox:
            inboxes.append(ns.name)
        for key, path in ns.location.paths().items():
            if key not in {"INDEX", "CONTROL", "INDEXPVT"}:
                continue
            owner = seen_paths.get(path)
            if owner is not None and owner != ns.name:
                problems.append(
                    f"namespace {ns.name}: {key}={path} is also used by namespace {owner}; "
                    "'the CONTROL/INDEX path must be different for each namespace'"
                )
            seen_paths.setdefault(path, ns.name)
    if len(separators) > 1:
        problems.append(
            "All list=yes namespaces must use the same separator: "
            + ", ".join(f"{name} uses {sep!r}" for sep, name in separators.items())
        )
    if len(inboxes) > 1:
        problems.append("There can be only one namespace with inbox=yes: " + ", ".join(inboxes))
    return problems


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
