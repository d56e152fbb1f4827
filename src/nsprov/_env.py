"""Userdb fields for namespaces, as post-login environment variables.

``to_environ`` returns only the variables nsprov sets, with ``NAMESPACE`` and
``USERDB_KEYS`` already merged with what the environment holds; the final
script-login sends each key listed in ``USERDB_KEYS`` back to the mail process
as ``lowercase(key)=value`` (contract section 3).  Settings equal to Dovecot's
defaults are left out: every byte of ``USERDB_KEYS`` counts against the
kernel's 128 KiB limit for one environment string.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from . import _fields
from ._location import MailLocation
from ._model import Namespace
from .exceptions import InvalidLocationError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

MAX_ARG_STRLEN = _fields.MAX_ARG_STRLEN
DEFAULT_ENV_BUDGET = _fields.DEFAULT_ENV_BUDGET
_BOOL_FIELDS = _fields.BOOL_FIELDS


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _parse_bool(text: str) -> bool:
    # Dovecot: yes, y, 1 are true, no is false (ASCII case-insensitive).
    low = text.lower()
    if low in {"yes", "y", "1"}:
        return True
    if low == "no":
        return False
    raise ValueError(f"Invalid boolean value: {text} (use yes or no)")


_V24_PATHS = _fields.V24_PATHS
_V24_FLAGS = _fields.V24_FLAGS


def location_settings_24(loc: MailLocation) -> list[tuple[str, str]]:
    """A 2.3 location as Dovecot 2.4 settings (``MAIL_DRIVER``, ``MAIL_PATH`` …)."""
    return _fields.location_settings_24(loc)


def _common_kwargs(name: str, settings: Mapping[str, str]) -> dict[str, object]:
    kwargs: dict[str, object] = {
        "name": name,
        "type": settings.get("TYPE", "private"),
        "separator": settings.get("SEPARATOR", ""),
        "prefix": settings.get("PREFIX", ""),
        "list": settings.get("LIST", "yes"),
        "order": int(settings.get("ORDER", "0")),
    }
    for field in _BOOL_FIELDS:
        if field.upper() in settings:
            kwargs[field] = _parse_bool(settings[field.upper()])
    return kwargs


@attrs.frozen
class Dialect:
    """How one Dovecot version takes namespace settings from userdb fields.

    2.3 adds namespaces with ``namespace=`` and takes a ``location`` string
    (``mail`` is its alias, four bytes shorter per namespace); 2.4 adds them
    with ``namespace+=`` and takes ``mail_driver``, ``mail_path`` and one
    setting per location parameter, unescaped.
    """

    version: str
    #: The variable that lists namespace names (``NAMESPACE`` adds in 2.3, ``NAMESPACE+`` in 2.4).
    list_key: str
    #: 2.4: the global ``mail_driver`` of dovecot.conf, which a namespace inherits; a
    #: namespace with this driver leaves ``MAIL_DRIVER`` out (seven keys become six).
    inherited_driver: str | None = None

    def settings(self, ns: Namespace) -> list[tuple[str, str]]:
        """``(KEY, value)`` pairs for *ns*, Dovecot defaults left out."""
        return _fields.settings(ns, self.version, self.inherited_driver)

    def parse(self, name: str, settings: Mapping[str, str]) -> Namespace:
        """Build a namespace from its ``KEY -> value`` settings (keys uppercase)."""
        kwargs = _common_kwargs(name, settings)
        if self.version == "2.3":
            location = (
                settings.get("MAIL") or settings.get("LOCATION") or settings.get("MAIL_LOCATION")
            )
            if location is None:
                raise InvalidLocationError(f"namespace {name}: no location")
            kwargs["location"] = MailLocation.parse(location)
        else:
            if "MAIL_PATH" not in settings:
                raise InvalidLocationError(f"namespace {name}: no mail_path")
            loc: dict[str, object] = {
                "driver": settings.get("MAIL_DRIVER", "maildir"),
                "root": settings["MAIL_PATH"],
            }
            loc.update({field: settings[key] for field, key in _V24_PATHS if key in settings})
            loc.update({field: settings.get(key) == value for field, key, value in _V24_FLAGS})
            kwargs["location"] = MailLocation(**loc)  # type: ignore[arg-type]
        return Namespace(**kwargs)  # type: ignore[arg-type]


V23 = Dialect(version="2.3", list_key="NAMESPACE")
V24 = Dialect(version="2.4", list_key="NAMESPACE+")
DIALECTS = {"2.3": V23, "2.4": V24}


def dialect_for(version: str, *, inherited_driver: str | None = None) -> Dialect:
    """The dialect for a Dovecot version string (``"2.3"`` or ``"2.4"``)."""
    try:
        dialect = DIALECTS[version]
    except KeyError:
        raise ValueError(f"unsupported Dovecot version {version!r}") from None
    if inherited_driver and version == "2.4":
        return attrs.evolve(dialect, inherited_driver=inherited_driver)
    return dialect


@attrs.frozen
class EnvLimits:
    """Size limits for the variables nsprov sets."""

    max_var: int = MAX_ARG_STRLEN
    budget: int = DEFAULT_ENV_BUDGET


def subscribe_settings(ns: Namespace, private: str) -> list[tuple[str, str]]:
    """Variables that auto-subscribe *ns*'s mailbox through the configured private namespace.

    Verified live on Dovecot 2.3.19.1: mailbox settings inside the public
    namespace are relative to its prefix and cannot name the namespace's own
    mailbox; an entry in the private namespace with the full name can.  The
    public namespace must use ``list=children`` or LIST shows the mailbox twice.
    """
    return _fields.subscribe_settings(ns, private)


def fit_environ(
    namespaces: Sequence[Namespace],
    *,
    environ: Mapping[str, str],
    dialect: Dialect = V23,
    limits: EnvLimits = EnvLimits(),
    subscribe: Collection[str] = (),
    private_namespace: str = "inbox",
) -> tuple[dict[str, str], int]:
    """Like :func:`to_environ`, for the longest leading run of *namespaces* that fits *limits*.

    Returns the variables and how many namespaces they carry.  One variable
    over ``max_var`` bytes, or all of them together over ``budget``, would make
    exec fail with E2BIG and deny the login.  Namespaces named in *subscribe*
    are also auto-subscribed through *private_namespace* (Dovecot 2.3 only).
    The one renderer, :func:`nsprov._fields.fit`, does the work.
    """
    return _fields.fit(
        namespaces,
        environ=environ,
        version=dialect.version,
        list_key=dialect.list_key,
        inherited_driver=dialect.inherited_driver,
        max_var=limits.max_var,
        budget=limits.budget,
        subscribe=subscribe,
        private_namespace=private_namespace,
    )


def to_environ(
    namespaces: Sequence[Namespace],
    *,
    environ: Mapping[str, str],
    dialect: Dialect = V23,
) -> dict[str, str]:
    """The variables that add *namespaces*, merged with ``NAMESPACE``/``USERDB_KEYS`` in *environ*.

    Never replaces ``NAMESPACE`` or ``USERDB_KEYS``, never lists a key twice,
    never touches ``USER``.  No size limit applies; see :func:`fit_environ`.
    """
    out, _ = fit_environ(
        namespaces,
        environ=environ,
        dialect=dialect,
        limits=EnvLimits(max_var=1 << 62, budget=1 << 62),
    )
    return out


def from_environ(
    environ: Mapping[str, str], *, dialect: Dialect = V23, names: Iterable[str] | None = None
) -> tuple[Namespace, ...]:
    """Parse the namespaces listed in ``NAMESPACE`` back from *environ*.

    Names without any ``NAMESPACE/<NAME>/…`` variable (configured namespaces
    the userdb merely lists) are left out.
    """
    wanted = (
        list(names)
        if names is not None
        else [
            n
            for n in environ.get(dialect.list_key, "")
            .replace(",", " ")
            .replace("\t", " ")
            .split(" ")
            if n
        ]
    )
    out = []
    for name in wanted:
        stem = "NAMESPACE/" + name.upper() + "/"
        settings = {k[len(stem) :]: v for k, v in environ.items() if k.startswith(stem)}
        if settings:
            out.append(dialect.parse(name, settings))
    return tuple(out)
