"""Namespaces as plain values, Dovecot's checks on them, and their userdb fields.

The one renderer of namespace fields: :mod:`nsprov._env` (``show``, ``serve``,
the full post-login path) and :mod:`nsprov._lean` (the lean login path) both
call :func:`settings` and :func:`fit`, and :mod:`nsprov._model` and
:mod:`nsprov._location` validate with the checks here.  The functions read
attributes only (``name``, ``prefix``, ``separator``, ``list``, ``location.root``
…), so the attrs classes of the public model (:class:`nsprov.Namespace`,
:class:`nsprov.MailLocation`) and the slotted :class:`Ns` and :class:`Loc`
here are equally their input.

This module imports nothing but :mod:`nsprov.exceptions` and
:mod:`nsprov._userdb`: it is on the login path.
"""

from __future__ import annotations

from ._userdb import USERDB_KEYS, listed_keys, with_keys
from .exceptions import InvalidLocationError, InvalidNamespaceError

TYPE_CHECKING = False  # not typing's: importing typing costs every login ~7 ms
if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence
    from typing import Any

#: Linux MAX_ARG_STRLEN: one ``NAME=value`` string, NUL included.
MAX_ARG_STRLEN = 32 * 4096
#: Budget for everything nsprov adds, far below the usual 2 MiB exec limit.
DEFAULT_ENV_BUDGET = 1024 * 1024
#: ASCII and C1 control characters (what ``has_control`` looks for).
CONTROL = frozenset(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)))
#: The characters of a namespace name (``[a-z0-9_-]+``).
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
#: Location text Dovecot would split or choke on.
_BAD_TEXT = frozenset("\0\n\t\r")
_DRIVER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
LAYOUTS = ("fs", "maildir++", "index", "none")

#: ``KEY=value`` parameters of a 2.3 location, in the order nsprov renders them, with the field.
PARAMS: tuple[tuple[str, str], ...] = (
    ("LAYOUT", "layout"),
    ("INBOX", "inbox"),
    ("INDEX", "index"),
    ("INDEXPVT", "index_private"),
    ("INDEXCACHE", "index_cache"),
    ("CONTROL", "control"),
    ("ALT", "alt"),
    ("SUBSCRIPTIONS", "subscriptions"),
    ("DIRNAME", "dirname"),
    ("FULLDIRNAME", "full_dirname"),
    ("MAILBOXDIR", "mailboxdir"),
    ("VOLATILEDIR", "volatile_dir"),
    ("LISTINDEX", "list_index"),
    ("BROKENCHAR", "broken_char"),
)
#: Flags (no ``=value``) of a 2.3 location, with the field.
FLAGS: tuple[tuple[str, str], ...] = (
    ("UTF-8", "utf8"),
    ("ALTNOCHECK", "alt_nocheck"),
    ("ITERINDEX", "iter_index"),
    ("NO-NOSELECT", "no_noselect"),
    ("NO-FS-VALIDATION", "no_fs_validation"),
)
#: Parameters whose value is a path (Dovecot strips one trailing ``/``).
PATH_PARAMS = frozenset(
    {"inbox", "index", "index_private", "index_cache", "control", "alt", "volatile_dir"}
)
#: 2.4 settings for each 2.3 location parameter (docs 2.4, "2.3 to 2.4"; some inferred).
V24_PATHS: tuple[tuple[str, str], ...] = (
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
#: 2.4 boolean settings for 2.3 location flags: (field, key, value when the flag is set).
V24_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("utf8", "MAILBOX_LIST_UTF8", "yes"),
    ("alt_nocheck", "MAIL_ALT_CHECK", "no"),
    ("iter_index", "MAILBOX_LIST_ITER_FROM_INDEX_DIR", "yes"),
    ("no_noselect", "MAILBOX_LIST_DROP_NOSELECT", "no"),
    ("no_fs_validation", "MAILBOX_LIST_VALIDATE_FS_NAMES", "no"),
)
BOOL_FIELDS = ("inbox", "hidden", "subscriptions", "ignore_on_failure", "disabled")
#: Per-user paths whose directories nsprov creates and Dovecot requires unique.
USER_PATHS = frozenset({"INDEX", "CONTROL", "INDEXPVT"})


def has_control(text: str) -> bool:
    """True if *text* contains an ASCII or C1 control character."""
    return not CONTROL.isdisjoint(text)


def is_utf8(text: str) -> bool:
    """True if *text* encodes to UTF-8 (no lone surrogates from undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def strip_slash(value: str) -> str:
    """One trailing ``/`` removed, as Dovecot does for a path (``/`` itself stays)."""
    if len(value) > 1 and value.endswith("/"):
        return value[:-1]
    return value


# -- checks (the attrs validators of the model call these)


def name_problem(value: str) -> str | None:
    """What is wrong with a namespace name, or None."""
    if not value or not NAME_CHARS.issuperset(value):
        return (
            f"namespace name {value!r} must match [a-z0-9_-]+ "
            "(Dovecot splits names on ',', tab and space)"
        )
    if value.startswith("__"):
        return f"namespace name {value!r} must not start with '__'"
    return None


def separator_problem(value: str) -> str | None:
    """What is wrong with a hierarchy separator, or None."""
    if len(value) != 1:
        return f"separator {value!r}: Dovecot says 'Hierarchy separator must be only one character long'"
    if has_control(value) or value.isspace():
        return f"separator {value!r} is a control or space character"
    return None


def prefix_problem(name: str, value: str, list_mode: str, separator: str) -> str | None:
    """What is wrong with namespace *name*'s prefix, or None."""
    if not value:
        return (
            f"namespace {name}: empty prefix collides with the inbox namespace "
            "('Duplicate namespace prefix')"
        )
    if not is_utf8(value):
        return f"namespace {name}: prefix {value!r}: 'Namespace prefix not valid UTF8'"
    if has_control(value):
        return f"namespace {name}: prefix {value!r} contains a control character"
    if list_mode != "no":
        if not value.endswith(separator):
            return (
                f"namespace {name}: 'list={list_mode} requires prefix={value} "
                f"to end with separator {separator}'"
            )
        if value.startswith(separator):
            return (
                f"namespace {name}: 'list={list_mode} requires prefix={value} "
                "not to start with separator'"
            )
    return None


def text_problem(value: str, what: str) -> str | None:
    """What is wrong with one location element, or None."""
    if not _BAD_TEXT.isdisjoint(value):
        return f"{what} {value!r} contains a control character"
    if not is_utf8(value):
        return f"{what} {value!r} is not valid UTF-8"
    return None


def root_problem(value: str) -> str | None:
    """What is wrong with a location's root directory, or None."""
    if not value:
        return "mail root directory not given"
    if value.startswith("INBOX="):
        return f"mail root {value!r} starts with INBOX=: Dovecot reports 'Mail root directory not given'"
    return text_problem(value, "root")


def param_problem(key: str, field: str, value: str) -> str | None:
    """What is wrong with one location parameter *key* (model field *field*), or None."""
    problem = text_problem(value, key)
    if problem is not None:
        return problem
    if field in PATH_PARAMS and value != "MEMORY" and not value.startswith(("/", "~")):
        return f"{key}={value!r} must be an absolute path or start with ~"
    return None


def params_problem(loc: Any) -> str | None:
    """What is wrong with a location's parameters, or None."""
    for key, field in PARAMS:
        value = getattr(loc, field)
        if value is not None and (problem := param_problem(key, field, value)) is not None:
            return problem
    if loc.layout is not None and loc.layout not in LAYOUTS:
        return f"LAYOUT={loc.layout!r}: Dovecot knows fs, maildir++, index and none"
    return None


#: The parameters a spool's templates set, in :data:`PARAMS` order.
_USER_PARAMS = (
    ("INBOX", "inbox"),
    ("INDEX", "index"),
    ("INDEXPVT", "index_private"),
    ("CONTROL", "control"),
)


def driver_ok(value: str) -> bool:
    """Whether *value* is a location driver name (``[A-Za-z0-9_]+``)."""
    return bool(value) and _DRIVER_CHARS.issuperset(value)


# -- plain values


class Loc:
    """A mail location as plain values (the fields of :class:`nsprov.MailLocation`).

    Every field but the root and the four per-user paths keeps its class default.
    """

    driver = "maildir"
    layout: str | None = None
    index_cache: str | None = None
    alt: str | None = None
    subscriptions: str | None = None
    dirname: str | None = None
    full_dirname: str | None = None
    mailboxdir: str | None = None
    volatile_dir: str | None = None
    list_index: str | None = None
    broken_char: str | None = None
    utf8 = alt_nocheck = iter_index = no_noselect = no_fs_validation = False

    def __init__(
        self,
        root: str,
        index: str | None = None,
        control: str | None = None,
        index_private: str | None = None,
        inbox: str | None = None,
    ) -> None:
        self.root = root
        self.index = index
        self.control = control
        self.index_private = index_private
        self.inbox = inbox

    def paths(self) -> dict[str, str]:
        """The per-user path parameters that are set, by Dovecot key."""
        return paths(self)


class Ns:
    """A public namespace as plain values (the fields of :class:`nsprov.Namespace`)."""

    __slots__ = (
        "disabled",
        "hidden",
        "ignore_on_failure",
        "inbox",
        "list",
        "location",
        "name",
        "order",
        "prefix",
        "separator",
        "subscriptions",
        "type",
    )

    def __init__(
        self,
        name: str,
        prefix: str,
        separator: str,
        list_mode: str,
        subscriptions: bool,
        hidden: bool,
        location: Loc,
    ) -> None:
        self.name = name
        self.type = "public"
        self.prefix = prefix
        self.separator = separator
        self.list = list_mode
        self.subscriptions = subscriptions
        self.hidden = hidden
        self.location = location
        self.inbox = False
        self.ignore_on_failure = False
        self.disabled = False
        self.order = 0

    @property
    def key(self) -> str:
        """The environment key stem, ``NAMESPACE/<NAME>``."""
        return "NAMESPACE/" + self.name.upper()


def make_location(
    root: str,
    index: str | None,
    control: str | None,
    index_private: str | None,
    inbox: str | None,
) -> Loc:
    """A :class:`Loc`, normalised and checked as :class:`nsprov.MailLocation` is.

    Raises:
        InvalidLocationError: Dovecot would refuse it.
    """
    loc = Loc(
        strip_slash(root),
        None if index is None else strip_slash(index),
        None if control is None else strip_slash(control),
        None if index_private is None else strip_slash(index_private),
        None if inbox is None else strip_slash(inbox),
    )
    problem = root_problem(loc.root)
    if problem is None:  # params_problem(loc), for the only parameters a Loc sets
        for key, field in _USER_PARAMS:
            value = getattr(loc, field)
            if value is not None and (problem := param_problem(key, field, value)) is not None:
                break
    if problem is not None:
        raise InvalidLocationError(problem)
    return loc


def make_namespace(
    name: str,
    prefix: str,
    separator: str,
    list_mode: str,
    subscriptions: bool,
    hidden: bool,
    location: Loc,
) -> Ns:
    """An :class:`Ns`, normalised and checked as :class:`nsprov.Namespace` is.

    Raises:
        InvalidNamespaceError: Dovecot would refuse it.
    """
    name = name.lower()
    problem = (
        name_problem(name)
        or separator_problem(separator)
        or prefix_problem(name, prefix, list_mode, separator)
    )
    if problem is not None:
        raise InvalidNamespaceError(problem)
    return Ns(name, prefix, separator, list_mode, subscriptions, hidden, location)


# -- rendering


def escape(value: str) -> str:
    """Escape one location element: every ``:`` is doubled."""
    return value.replace(":", "::")


def render_location(loc: Any) -> str:
    """A location as its 2.3 string, every element escaped."""
    out = [loc.driver, ":", escape(loc.root)]
    for key, field in PARAMS:
        value = getattr(loc, field)
        if value is not None:
            out += [":", key, "=", escape(value)]
    for key, field in FLAGS:
        if getattr(loc, field):
            out += [":", key]
    return "".join(out)


def paths(loc: Any) -> dict[str, str]:
    """The per-user path parameters of *loc* that are set, by Dovecot key."""
    return {
        key: getattr(loc, field)
        for key, field in PARAMS
        if field in PATH_PARAMS and getattr(loc, field) is not None
    }


def location_settings_24(loc: Any) -> list[tuple[str, str]]:
    """A 2.3 location as Dovecot 2.4 settings (``MAIL_DRIVER``, ``MAIL_PATH`` …)."""
    if loc.dirname is not None:
        raise InvalidLocationError(
            "DIRNAME has no exact Dovecot 2.4 equivalent "
            "(mailbox_directory_name with mailbox_directory_name_legacy); use FULLDIRNAME"
        )
    out = [("MAIL_DRIVER", loc.driver), ("MAIL_PATH", loc.root)]
    out += [
        (key, getattr(loc, field)) for field, key in V24_PATHS if getattr(loc, field) is not None
    ]
    out += [(key, value) for field, key, value in V24_FLAGS if getattr(loc, field)]
    return out


def settings(ns: Any, version: str, inherited_driver: str | None = None) -> list[tuple[str, str]]:
    """``(KEY, value)`` pairs for namespace *ns* in Dovecot *version*, defaults left out."""
    head: list[tuple[str, str]] = [("TYPE", ns.type)] if ns.type != "private" else []
    head += [("SEPARATOR", ns.separator), ("PREFIX", ns.prefix)]
    tail: list[tuple[str, str]] = []
    if ns.list != "yes":
        tail.append(("LIST", ns.list))
    for field in BOOL_FIELDS:
        value = getattr(ns, field)
        if value != (field == "subscriptions"):
            tail.append((field.upper(), "yes" if value else "no"))
    if ns.order:
        tail.append(("ORDER", str(ns.order)))
    if version == "2.3":
        return [*head, ("MAIL", render_location(ns.location)), *tail]
    loc = location_settings_24(ns.location)
    if inherited_driver == ns.location.driver:
        loc = [kv for kv in loc if kv[0] != "MAIL_DRIVER"]
    return [*head, *loc, *tail]


# -- the set of namespaces


def namespace_problems(
    namespaces: Sequence[Any],
    *,
    reserved_names: Iterable[str],
    taken_prefixes: Iterable[str] = (),
) -> list[str]:
    """Every problem Dovecot's ``namespaces_check()`` and settings parser would report.

    See :func:`nsprov.namespace_problems`, which wraps this.
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
        for key, path in paths(ns.location).items():
            if key not in USER_PATHS:
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


def user_dirs(namespaces: Iterable[Any]) -> tuple[str, ...]:
    """The per-user index/control directories the namespaces need, sorted."""
    found: set[str] = set()
    for ns in namespaces:
        for key, path in paths(ns.location).items():
            if key in USER_PATHS and path != "MEMORY":
                found.add(path)
    return tuple(sorted(found))


# -- the environment, within the kernel's limits


def _var_size(key: str, value: str) -> int:
    return len(key.encode()) + 1 + len(value.encode()) + 1


#: ``len("USERDB_KEYS=")``: the fixed part of that variable's size.
_KEYS_VAR = len(USERDB_KEYS) + 1


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


def subscribe_settings(ns: Any, private: str) -> list[tuple[str, str]]:
    """Variables that auto-subscribe *ns*'s mailbox through the configured private namespace.

    Verified live on Dovecot 2.3.19.1: mailbox settings inside the public
    namespace are relative to its prefix and cannot name the namespace's own
    mailbox; an entry in the private namespace with the full name can.  The
    public namespace must use ``list=children`` or LIST shows the mailbox twice.
    """
    stem = f"NAMESPACE/{private.upper()}/MAILBOX/{ns.name.upper()}"
    name = ns.prefix.removesuffix(ns.separator)
    return [(f"{stem}/NAME", name), (f"{stem}/AUTO", "subscribe")]


def fit(
    namespaces: Sequence[Any],
    *,
    environ: Mapping[str, str],
    version: str,
    list_key: str,
    inherited_driver: str | None,
    max_var: int,
    budget: int,
    subscribe: Collection[str] = (),
    private_namespace: str = "inbox",
) -> tuple[dict[str, str], int]:
    """The variables for the longest leading run of *namespaces* that fits the limits.

    See :func:`nsprov._env.fit_environ`, which wraps this: returns the
    variables and how many namespaces they carry.
    """
    base_keys, listed = listed_keys(environ)
    names = _ListVar(list_key, environ)
    mailboxes = _ListVar(f"NAMESPACE/{private_namespace.upper()}/MAILBOX", environ)
    new_keys: list[str] = []
    keys_len = len(base_keys.encode())
    if base_keys and not base_keys.endswith(" "):
        keys_len += 1
    out: dict[str, str] = {}
    total = 0
    kept = 0
    for ns in namespaces:
        stem = "NAMESPACE/" + ns.name.upper()
        pairs = [(f"{stem}/{k}", v) for k, v in settings(ns, version, inherited_driver)]
        lists = [(names, ns.name)]
        if ns.name in subscribe:
            if version != "2.3":
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
        sizes = [_var_size(k, v) for k, v in pairs]
        add_total = sum(sizes)
        # The size of USERDB_KEYS=<keys> with its NUL, without building the string.
        fixed = _KEYS_VAR + keys_len + add_keys_len + 1 + sum(list_sizes)
        if (
            _KEYS_VAR + keys_len + add_keys_len + 1 > max_var
            or any(size > max_var for size in list_sizes)
            or any(size > max_var for size in sizes)
            or total + add_total + fixed > budget
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
