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

from ._location import MailLocation
from ._model import Namespace
from ._userdb import USERDB_KEYS, listed_keys, with_keys
from .exceptions import InvalidLocationError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

#: Linux MAX_ARG_STRLEN: one ``NAME=value`` string, NUL included.
MAX_ARG_STRLEN = 32 * 4096
#: Budget for everything nsprov adds, far below the usual 2 MiB exec limit.
DEFAULT_ENV_BUDGET = 1024 * 1024

_BOOL_FIELDS = ("inbox", "hidden", "subscriptions", "ignore_on_failure", "disabled")


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


#: 2.4 settings for each 2.3 location parameter or flag (docs 2.4, "2.3 to 2.4"; some inferred).
_V24_PATHS: tuple[tuple[str, str], ...] = (
    ("index", "MAIL_INDEX_PATH"),
    ("control", "MAIL_CONTROL_PATH"),
    ("index_private", "MAIL_INDEX_PRIVATE_PATH"),
    ("index_cache", "MAIL_CACHE_PATH"),
    ("inbox", "MAIL_INBOX_PATH"),
    ("alt", "MAIL_ALT_PATH"),
    ("volatile_dir", "MAIL_VOLATILE_PATH"),
    ("layout", "MAILBOX_LIST_LAYOUT"),
    ("list_index", "MAILBOX_LIST_INDEX_PREFIX"),
    ("subscriptions", "MAILBOX_SUBSCRIPTIONS_FILENAME"),
    ("mailboxdir", "MAILBOX_ROOT_DIRECTORY_NAME"),
    ("full_dirname", "MAILBOX_DIRECTORY_NAME"),
    ("broken_char", "MAILBOX_LIST_VISIBLE_ESCAPE_CHAR"),
)
#: 2.4 boolean settings for 2.3 location flags: (model field, key, value when the flag is set).
_V24_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("utf8", "MAILBOX_LIST_UTF8", "yes"),
    ("alt_nocheck", "MAIL_ALT_CHECK", "no"),
    ("iter_index", "MAILBOX_LIST_ITER_FROM_INDEX_DIR", "yes"),
    ("no_noselect", "MAILBOX_LIST_DROP_NOSELECT", "no"),
    ("no_fs_validation", "MAILBOX_LIST_VALIDATE_FS_NAMES", "no"),
)


def location_settings_24(loc: MailLocation) -> list[tuple[str, str]]:
    """A 2.3 location as Dovecot 2.4 settings (``MAIL_DRIVER``, ``MAIL_PATH`` …)."""
    if loc.dirname is not None:
        raise InvalidLocationError(
            "DIRNAME has no exact Dovecot 2.4 equivalent "
            "(mailbox_directory_name with mailbox_directory_name_legacy); use FULLDIRNAME"
        )
    out = [("MAIL_DRIVER", loc.driver), ("MAIL_PATH", loc.root)]
    out += [
        (key, getattr(loc, field)) for field, key in _V24_PATHS if getattr(loc, field) is not None
    ]
    out += [(key, value) for field, key, value in _V24_FLAGS if getattr(loc, field)]
    return out


def _common_settings(ns: Namespace) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Settings both versions share: (leading ones, trailing ones), defaults left out."""
    head: list[tuple[str, str]] = [("TYPE", ns.type)] if ns.type != "private" else []
    head += [("SEPARATOR", ns.separator), ("PREFIX", ns.prefix)]
    tail: list[tuple[str, str]] = []
    if ns.list != "yes":
        tail.append(("LIST", ns.list))
    for field in _BOOL_FIELDS:
        value = getattr(ns, field)
        if value != (field == "subscriptions"):
            tail.append((field.upper(), _yes(value)))
    if ns.order:
        tail.append(("ORDER", str(ns.order)))
    return head, tail


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
        head, tail = _common_settings(ns)
        if self.version == "2.3":
            return [*head, ("MAIL", ns.location.render()), *tail]
        settings = location_settings_24(ns.location)
        if self.inherited_driver == ns.location.driver:
            settings = [kv for kv in settings if kv[0] != "MAIL_DRIVER"]
        return [*head, *settings, *tail]

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


def _var_size(key: str, value: str) -> int:
    return len(key.encode()) + 1 + len(value.encode()) + 1


@attrs.frozen
class EnvLimits:
    """Size limits for the variables nsprov sets."""

    max_var: int = MAX_ARG_STRLEN
    budget: int = DEFAULT_ENV_BUDGET


class _ListVar:
    """A variable holding a space-separated list that nsprov extends (``NAMESPACE`` …)."""

    def __init__(self, key: str, environ: Mapping[str, str]) -> None:
        self.key = key
        old = environ.get(key, "")
        self.items = [n for n in old.replace(",", " ").replace("\t", " ").split(" ") if n]
        self.known = {n.lower() for n in self.items}
        self.size = len(old.encode())
        self.changed = False

    def growth(self, item: str) -> int:
        if item.lower() in self.known:
            return 0
        return len(item.encode()) + (1 if self.size else 0)

    def add(self, item: str) -> None:
        grow = self.growth(item)
        if grow:
            self.items.append(item)
            self.known.add(item.lower())
            self.size += grow
            self.changed = True

    def var_size(self, extra: int = 0) -> int:
        return len(self.key.encode()) + 1 + self.size + extra + 1


def subscribe_settings(ns: Namespace, private: str) -> list[tuple[str, str]]:
    """Variables that auto-subscribe *ns*'s mailbox through the configured private namespace.

    Verified live on Dovecot 2.3.19.1: mailbox settings inside the public
    namespace are relative to its prefix and cannot name the namespace's own
    mailbox; an entry in the private namespace with the full name can.  The
    public namespace must use ``list=children`` or LIST shows the mailbox twice.
    """
    stem = f"NAMESPACE/{private.upper()}/MAILBOX/{ns.name.upper()}"
    name = ns.prefix.removesuffix(ns.separator)
    return [(f"{stem}/NAME", name), (f"{stem}/AUTO", "subscribe")]


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
    """
    base_keys, listed = listed_keys(environ)
    names = _ListVar(dialect.list_key, environ)
    mailboxes = _ListVar(f"NAMESPACE/{private_namespace.upper()}/MAILBOX", environ)
    new_keys: list[str] = []
    keys_len = len(base_keys.encode())
    if base_keys and not base_keys.endswith(" "):
        keys_len += 1
    out: dict[str, str] = {}
    total = 0
    kept = 0
    for ns in namespaces:
        pairs = [(f"{ns.key}/{k}", v) for k, v in dialect.settings(ns)]
        lists = [(names, ns.name)]
        if ns.name in subscribe:
            if dialect.version != "2.3":
                raise InvalidLocationError(
                    "auto-subscribing shared mailboxes is verified on Dovecot 2.3 only"
                )
            pairs += subscribe_settings(ns, private_namespace)
            lists.append((mailboxes, ns.name))
        add_keys = [v.key for v, _ in lists if v.key not in listed]
        add_keys += [k for k, _ in pairs if k not in listed]
        add_keys_len = sum(len(k.encode()) + 1 for k in add_keys)
        growth = {v.key: v.growth(item) for v, item in lists}
        list_sizes = [v.var_size(growth.get(v.key, 0)) for v in (names, mailboxes)]
        add_total = sum(_var_size(k, v) for k, v in pairs)
        fixed = _var_size("USERDB_KEYS", "x" * (keys_len + add_keys_len)) + sum(list_sizes)
        if (
            len("USERDB_KEYS=") + keys_len + add_keys_len + 1 > limits.max_var
            or any(size > limits.max_var for size in list_sizes)
            or any(_var_size(k, v) > limits.max_var for k, v in pairs)
            or total + add_total + fixed > limits.budget
        ):
            break
        out.update(pairs)
        listed.update(add_keys)
        new_keys += add_keys
        keys_len += add_keys_len
        total += add_total
        for v, item in lists:
            v.add(item)
        kept += 1
    if not kept:
        return {}, 0
    for v in (names, mailboxes):
        if v.changed or v.key in out:
            out[v.key] = " ".join(v.items)
    out[USERDB_KEYS] = with_keys(base_keys, new_keys)
    return out, kept


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
