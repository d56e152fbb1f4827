"""The nsprov TOML configuration: schema, defaults and validation.

Every problem is collected and reported at once, each naming the file and the
key path (``spool[2].prefix``), never as a traceback.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ._actions import ActionsConfig, parse_actions
from ._defaults import (
    ACTION_TABLES,
    DEFAULT_CONFIG_PATH,
    POSTLOGIN_DEADLINE,
    POSTLOGIN_DEADLINE_MAX,
)
from ._model import DEFAULT_RESERVED_NAMES, NAME_RE, has_control
from ._template import Template
from .exceptions import ConfigError, InvalidTemplateError, UntrustedFileError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._env import Dialect


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
        from ._env import dialect_for  # noqa: PLC0415

        return dialect_for(self.dialect, inherited_driver=self.global_mail_driver)

    @property
    def separator(self) -> str:
        """The one hierarchy separator every spool uses."""
        return self.spools[0].separator if self.spools else "/"


class _Reader:
    """Typed access to a TOML table that records problems and unknown keys."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path}: {message}")

    def table(self, data: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem(path, f"expected a table, got {_kind(value)}")
            return {}
        return value

    def take(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        kind: type | tuple[type, ...],
        default: Any,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        if key not in data:
            return default
        value = data[key]
        # bool is an int in Python, but never a valid int or float here.
        if (isinstance(value, bool) and bool not in _as_tuple(kind)) or not isinstance(value, kind):
            self.problem(f"{path}.{key}", f"expected {_kind_name(kind)}, got {_kind(value)}")
            return default
        if check is not None:
            message = check(value)
            if message:
                self.problem(f"{path}.{key}", message)
                return default
        return value

    def strings(self, data: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(f"{path}.{key}", f"expected an array of strings, got {_kind(value)}")
            return None
        return tuple(value)

    def template(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        fields: frozenset[str],
        default: Template | None,
        *,
        optional: bool = False,
    ) -> Template | None:
        text = self.take(data, key, path, str, None)
        if text is None:
            return default
        if optional and text == "":
            return None
        try:
            template = Template(text)
            template.check_fields(fields)
        except InvalidTemplateError as e:
            self.problem(f"{path}.{key}", str(e))
            return default
        return template

    def array(self, data: Mapping[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
        """The tables of ``[[key]]`` with their key paths (``key[1]`` …); other items are problems."""
        items = data.get(key, [])
        if not isinstance(items, list):
            self.problem(key, f"expected an array of tables ([[{key}]])")
            return []
        out = []
        for i, item in enumerate(items, 1):
            if isinstance(item, dict):
                out.append((f"{key}[{i}]", item))
            else:
                self.problem(f"{key}[{i}]", f"expected a table, got {_kind(item)}")
        return out

    def unknown(self, data: Mapping[str, Any], known: set[str], path: str) -> None:
        for key in data:
            if key not in known:
                where = f"{path}.{key}" if path else key
                self.problem(where, "unknown key")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(_kind(k()) for k in _as_tuple(kind))


_SPOOL_KEYS = {
    "prefix",
    "separator",
    "name",
    "index",
    "control",
    "index_private",
    "inbox",
    "list",
    "subscriptions",
    "hidden",
    "subscribe",
    "exclude",
    "include",
    "ignore_file",
    "symlinks",
    "allow_private_overlap",
}


def private_overlap(prefix: Template) -> bool:
    """Whether the first hierarchy level of *prefix* starts with ``{name}`` (no fixed text first).

    Such a level can equal the name of a folder of the private namespace when that has
    an empty prefix (Dovecot's usual ``inbox``): an entry ``Sent`` would take over the
    user's own ``Sent``, and the client's writes to it would land in the spool.
    """
    return bool(prefix.parts) and prefix.parts[0] == ("name", True)


def _check_separator(value: str) -> str | None:
    if len(value) != 1 or has_control(value) or value.isspace():
        return "must be exactly one printable, non-space character"
    return None


def _check_name_template(template: Template) -> str | None:
    sample = template.render({"id": "abc-de2fgh", "slug": "abc", "hash": "de2fgh"})
    if not NAME_RE.fullmatch(sample):
        return f"renders names like {sample!r}, which do not match [a-z0-9_-]+"
    if sample.startswith("__"):
        return "names must not start with '__'"
    if not template.fields & {"id", "hash"}:
        return "must use {id} or {hash}, or two mailboxes could get one name"
    return None


def _check_path_template(template: Template) -> str | None:
    if not template.text.startswith(("{home}", "/")):
        return "must be an absolute path (start with '/' or '{home}')"
    if not template.fields & {"ns", "id", "hash"}:
        return "must use {ns}, {id} or {hash}: each namespace needs its own directory"
    return None


def _spool(
    r: _Reader, raw: Mapping[str, Any], path: str, defaults: Mapping[str, Any]
) -> SpoolConfig | None:
    data = {**defaults, **raw}
    r.unknown(raw, _SPOOL_KEYS | {"path"}, path)
    spool_path = r.take(raw, "path", path, str, None)
    if spool_path is None and "path" not in raw:
        r.problem(f"{path}.path", "required key missing")
    if spool_path is not None and not os.path.isabs(spool_path):
        r.problem(f"{path}.path", f"must be an absolute path, got {spool_path!r}")
    separator = r.take(data, "separator", path, str, "/", _check_separator)
    prefix = r.template(data, "prefix", path, PREFIX_FIELDS, Template("Shared{sep}{name}{sep}"))
    prefix = prefix or Template("Shared{sep}{name}{sep}")
    if "name" not in prefix.fields:
        r.problem(f"{path}.prefix", "must use {name}, or every mailbox would get one prefix")
    allow_overlap = r.take(data, "allow_private_overlap", path, bool, False)
    if private_overlap(prefix) and not allow_overlap:
        r.problem(
            f"{path}.prefix",
            f"{prefix.text!r} starts with {{name}}: with an empty-prefix private namespace "
            "(Dovecot's usual inbox) an entry named like a private folder (Sent, Drafts, Trash) "
            "takes that folder over, and the client's writes land in the spool; start it with "
            'fixed text (e.g. "Shared{sep}{name}{sep}"), or set allow_private_overlap = true '
            "if the private namespace has a prefix of its own",
        )
    name = r.template(data, "name", path, NAME_FIELDS, SpoolConfig.__attrs_attrs__.name.default)
    name = name or Template("s-{id}")
    if (message := _check_name_template(name)) is not None:
        r.problem(f"{path}.name", message)
    index = r.template(data, "index", path, PATH_FIELDS, SpoolConfig.__attrs_attrs__.index.default)
    index = index or Template("{home}/.nsprov/{ns}")
    control = r.template(
        data,
        "control",
        path,
        PATH_FIELDS,
        SpoolConfig.__attrs_attrs__.control.default,
        optional=True,
    )
    index_private = r.template(data, "index_private", path, PATH_FIELDS, None, optional=True)
    inbox = r.template(data, "inbox", path, PATH_FIELDS, None, optional=True)
    for key, template in (
        ("index", index),
        ("control", control),
        ("index_private", index_private),
        ("inbox", inbox),
    ):
        if template is not None and (message := _check_path_template(template)) is not None:
            r.problem(f"{path}.{key}", message)
    list_mode = r.take(
        data,
        "list",
        path,
        str,
        "yes",
        lambda v: None if v in {"yes", "no", "children"} else "must be yes, no or children",
    )
    symlinks = r.take(
        data,
        "symlinks",
        path,
        str,
        "skip",
        lambda v: None if v in {"skip", "inside"} else "must be skip or inside",
    )
    ignore_file = r.take(data, "ignore_file", path, str, ".nsprovignore")
    subscribe = r.take(data, "subscribe", path, bool, False)
    if subscribe and list_mode != "children":
        r.problem(
            f"{path}.subscribe",
            'needs list = "children" (with list = "yes" Dovecot lists each mailbox twice)',
        )
    if spool_path is None:
        return None
    return SpoolConfig(
        path=os.path.normpath(spool_path),
        prefix=prefix,
        separator=separator,
        name=name,
        index=index,
        control=control,
        index_private=index_private,
        inbox=inbox,
        list=list_mode,
        subscriptions=r.take(data, "subscriptions", path, bool, True),
        hidden=r.take(data, "hidden", path, bool, False),
        subscribe=subscribe,
        exclude=r.strings(data, "exclude", path) or (),
        include=r.strings(data, "include", path) or (),
        ignore_file=ignore_file or None,
        symlinks=symlinks,
        allow_private_overlap=allow_overlap,
    )


def _serve_table(r: _Reader, t: Mapping[str, Any]) -> ServeConfig:
    keys = {f.name for f in attrs.fields(ServeConfig)}
    r.unknown(t, keys, "serve")
    positive: Callable[[Any], str | None] = lambda v: None if v > 0 else "must be > 0"  # noqa: E731
    mode_text = r.take(
        t,
        "socket_mode",
        "serve",
        str,
        None,
        lambda v: (
            None
            if v.isdigit() and set(v) <= set("01234567") and int(v, 8) <= 0o777
            else 'must be an octal mode such as "0600"'
        ),
    )
    socket = r.take(
        t, "socket", "serve", str, None, lambda v: None if v.startswith("/") else "must be absolute"
    )
    return ServeConfig(
        socket=socket,
        socket_mode=int(mode_text, 8) if mode_text is not None else None,
        socket_group=r.take(t, "socket_group", "serve", str, None),
        deadline=r.take(t, "deadline", "serve", (int, float), None, positive),
        cache_ttl=r.take(
            t,
            "cache_ttl",
            "serve",
            (int, float),
            None,
            lambda v: None if v >= 0 else "must be >= 0",
        ),
        reply_budget=r.take(
            t,
            "reply_budget",
            "serve",
            int,
            None,
            lambda v: (
                None if 0 < v < 8192 else "must be > 0 and < 8192 (Dovecot's auth reply limit)"
            ),
        ),
        max_connections=r.take(t, "max_connections", "serve", int, None, positive),
        idle_timeout=r.take(t, "idle_timeout", "serve", (int, float), None, positive),
    )


def _scan_cache_table(r: _Reader, data: Mapping[str, Any]) -> ScanCacheConfig | None:
    if "scan_cache" not in data:
        return None
    t = r.table(data, "scan_cache", "scan_cache")
    r.unknown(t, {"dir", "max_age", "refresh"}, "scan_cache")
    directory = r.take(
        t,
        "dir",
        "scan_cache",
        str,
        DEFAULT_SCAN_CACHE_DIR,
        lambda v: None if v.startswith("/") and "\0" not in v else "must be an absolute path",
    )
    max_age = r.take(
        t,
        "max_age",
        "scan_cache",
        (int, float),
        300,
        lambda v: None if 0 < v <= 86400 else "must be > 0 and <= 86400 seconds",
    )
    refresh = r.take(
        t,
        "refresh",
        "scan_cache",
        (int, float),
        60,
        lambda v: None if v >= 0 else "must be >= 0 (0: nsprov serve does not refresh)",
    )
    if 0 < refresh and max_age is not None and refresh >= max_age:
        r.problem(
            "scan_cache.refresh",
            f"{refresh:g}s must be shorter than max_age ({max_age:g}s), or the cache expires "
            "between refreshes and logins scan the whole spool",
        )
    return ScanCacheConfig(
        dir=directory.rstrip("/") or "/", max_age=float(max_age), refresh=float(refresh)
    )


def config_from_mapping(data: Mapping[str, Any], *, source: str = "<config>") -> Config:
    """Validate parsed TOML *data* into a :class:`Config`; raise :class:`ConfigError` listing every problem."""
    problems: list[str] = []
    r = _Reader(source, problems)
    r.unknown(
        data,
        {
            "spool",
            "namespace",
            "dovecot",
            "identity",
            "postlogin",
            "serve",
            "scan_cache",
            "actions",
            *ACTION_TABLES,
        },
        "",
    )
    defaults = r.table(data, "namespace", "namespace")
    r.unknown(defaults, _SPOOL_KEYS | {"max", "create_dirs"}, "namespace")
    spool_defaults = {k: v for k, v in defaults.items() if k in _SPOOL_KEYS}
    spools = [
        s
        for path, raw in r.array(data, "spool")
        if (s := _spool(r, raw, path, spool_defaults)) is not None
    ]
    separators = sorted({s.separator for s in spools})
    if len(separators) > 1:
        r.problem(
            "spool",
            f"all spools must use one separator (Dovecot: 'All list=yes namespaces must use "
            f"the same separator'), got {separators}",
        )
    seen: set[str] = set()
    twice: set[str] = set()
    for s in spools:  # a set, not list.count per spool: 20,000 spools took 8.8 s
        (twice if s.path in seen else seen).add(s.path)
    for p in sorted(twice):
        r.problem("spool", f"spool {p} is listed twice")

    dovecot = r.table(data, "dovecot", "dovecot")
    r.unknown(
        dovecot,
        {
            "version",
            "reserved_names",
            "config_prefixes",
            "private_namespace",
            "acl_plugin",
            "global_mail_driver",
        },
        "dovecot",
    )
    dialect = r.take(
        dovecot,
        "version",
        "dovecot",
        str,
        "2.3",
        lambda v: None if v in {"2.3", "2.4"} else 'must be "2.3" or "2.4"',
    )
    reserved = r.strings(dovecot, "reserved_names", "dovecot")
    prefixes = r.strings(dovecot, "config_prefixes", "dovecot")
    private_namespace = r.take(
        dovecot,
        "private_namespace",
        "dovecot",
        str,
        "inbox",
        lambda v: None if NAME_RE.fullmatch(v.lower()) else "must be a namespace name",
    )
    acl_plugin = r.take(dovecot, "acl_plugin", "dovecot", bool, False)
    global_mail_driver = r.take(
        dovecot,
        "global_mail_driver",
        "dovecot",
        str,
        None,
        lambda v: None if v.isidentifier() else "must be a mail driver name such as maildir",
    )
    if dialect == "2.4" and acl_plugin:
        # Dovecot 2.4's maildir defaults mail_inbox_path to the namespace root, where the
        # ACL plugin then refuses the mailbox's dovecot-acl ("can't have default ACLs with
        # this setup"): point INBOX elsewhere, into the user's directory for the namespace.
        spools = [
            s if s.inbox is not None else attrs.evolve(s, inbox=Template(s.index.text + "/INBOX"))
            for s in spools
        ]
    if dialect == "2.4" and any(s.subscribe for s in spools):
        r.problem(
            "spool",
            "subscribe = true is verified on Dovecot 2.3 only; it is refused for version 2.4",
        )

    ident = r.table(data, "identity", "identity")
    r.unknown(
        ident,
        {"mail_uid", "mail_gid", "mail_access_groups", "first_valid_gid", "last_valid_gid"},
        "identity",
    )
    nonneg: Callable[[Any], str | None] = lambda v: None if v >= 0 else "must be >= 0"  # noqa: E731
    identity = IdentityConfig(
        mail_uid=str(r.take(ident, "mail_uid", "identity", (str, int), "")),
        mail_gid=str(r.take(ident, "mail_gid", "identity", (str, int), "")),
        mail_access_groups=r.strings(ident, "mail_access_groups", "identity") or (),
        first_valid_gid=r.take(ident, "first_valid_gid", "identity", int, 1, nonneg),
        last_valid_gid=r.take(ident, "last_valid_gid", "identity", int, 0, nonneg),
    )

    post = r.table(data, "postlogin", "postlogin")
    r.unknown(post, {"deadline", "on_error", "debug_users"}, "postlogin")
    deadline = r.take(
        post,
        "deadline",
        "postlogin",
        (int, float),
        POSTLOGIN_DEADLINE,
        lambda v: (
            None
            if 0 < v <= POSTLOGIN_DEADLINE_MAX
            else f"must be > 0 and <= {POSTLOGIN_DEADLINE_MAX:g} seconds (Dovecot waits 60)"
        ),
    )
    on_error = r.take(
        post,
        "on_error",
        "postlogin",
        str,
        "continue",
        lambda v: None if v in {"continue", "deny"} else 'must be "continue" or "deny"',
    )
    max_namespaces = r.take(
        defaults,
        "max",
        "namespace",
        int,
        1000,
        lambda v: None if 0 <= v <= 100_000 else "must be between 0 and 100000",
    )
    actions = parse_actions(r, data, has_spools=bool(spools))
    serve = _serve_table(r, r.table(data, "serve", "serve"))
    scan_cache = _scan_cache_table(r, data)
    if actions.last_login is not None and actions.last_login.timeout * 2 > deadline:
        r.problem(
            "last_login.timeout",
            f"{actions.last_login.timeout:g}s leaves too little of postlogin.deadline "
            f"({float(deadline):g}s) for the other actions: at most half of it",
        )
    if problems:
        raise ConfigError("; ".join(problems), tuple(problems))
    return Config(
        actions=actions,
        serve=serve,
        scan_cache=scan_cache,
        source=source,
        spools=tuple(spools),
        dialect=dialect,
        reserved_names=reserved if reserved is not None else DEFAULT_RESERVED_NAMES,
        config_prefixes=prefixes or (),
        private_namespace=private_namespace,
        global_mail_driver=global_mail_driver or None,
        max_namespaces=max_namespaces,
        create_dirs=r.take(defaults, "create_dirs", "namespace", bool, True),
        identity=identity,
        deadline=float(deadline),
        on_error=on_error,
        debug_users=r.strings(post, "debug_users", "postlogin") or (),
    )


#: Where ``nsprov post-login`` running as root caches parsed configurations.
DEFAULT_CACHE_DIR = "/run/nsprov"
_CACHE_VERSION = 1


def _read_toml(fd: int, s: os.stat_result, path: str) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415 - lazy: only when no cached copy is valid

    from ._trust import MAX_FILE_SIZE, read_fd  # noqa: PLC0415

    data = read_fd(fd, s, path=path, what="config file", limit=MAX_FILE_SIZE)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def _cache_file(cache_dir: str, path: str) -> str:
    from ._names import entry_hash  # noqa: PLC0415

    return f"{cache_dir}/config-{entry_hash(b'config', os.fsencode(os.path.abspath(path)), 12)}"


def _trusted(fd: int) -> bool:
    """A cache file is trusted only if this identity owns it and nobody else may write it."""
    st = os.fstat(fd)
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _load_raw(path: str, cache_dir: str | None) -> dict[str, Any]:
    """The parsed TOML of *path*, from a cache keyed by the file's identity when possible.

    The file must pass the trust rule (:mod:`nsprov._trust`): a config that
    someone else may write or replace, or a FIFO or device, raises
    :class:`~nsprov.exceptions.UntrustedFileError` before anything is read.
    The key is (device, inode, size, mtime, ctime) of the config file: any
    edit, replacement or chmod invalidates the cached copy.  The cache holds
    the parsed TOML only (``marshal``); validation runs every time.
    """
    import marshal  # noqa: PLC0415 - builtin, cheap

    from ._trust import open_trusted  # noqa: PLC0415

    try:
        # Checked and opened component by component from /, never following a link
        # nobody trusted put there; a FIFO or a device is refused before it is opened.
        fd, st = open_trusted(path, what="config file")
    except UntrustedFileError:
        raise
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        key = (_CACHE_VERSION, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cache = os.path.basename(_cache_file(cache_dir, path)) if cache_dir else None
        dir_fd = _cache_dir_fd(cache_dir, create=False) if cache_dir else None
        if cache is not None and dir_fd is not None:
            try:
                cfd = os.open(cache, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError:
                pass
            else:
                try:
                    if _trusted(cfd):
                        cached_key, data = marshal.loads(os.read(cfd, 1 << 22))  # noqa: S302 - our own file, owner and mode checked
                        if cached_key == key:
                            return data  # type: ignore[no-any-return]
                except (EOFError, ValueError, TypeError, OSError):
                    pass
                finally:
                    os.close(cfd)
        try:
            data = _read_toml(fd, st, path)
        except UntrustedFileError:
            raise
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
        if dir_fd is not None:
            os.close(dir_fd)
    if cache is not None and cache_dir is not None:
        _store(cache_dir, cache, key, data)
    return data


def _cache_dir_fd(cache_dir: str, *, create: bool) -> int | None:
    """A descriptor of *cache_dir* if it passes the trust rule (made first with *create*), else None.

    A cache directory someone else could write is not used at all: its files
    would decide what root reads as the configuration.
    """
    from ._trust import open_trusted  # noqa: PLC0415

    if create:
        try:
            os.mkdir(cache_dir, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
    try:
        fd, _ = open_trusted(cache_dir, what="cache directory", directory=True)
    except OSError:  # UntrustedFileError too: then there is no cache
        return None
    return fd


def write_private(path: str, blob: bytes, *, dir_fd: int | None = None) -> None:
    """Replace *path* atomically with *blob*, mode 0600: a temporary file, then a rename.

    With *dir_fd*, *path* is a name in that directory (opened under the trust
    rule by the caller), so no path is resolved again.

    Raises:
        OSError: The file could not be written (the temporary file is removed).
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    try:
        try:
            view = memoryview(blob)
            while view:  # a write may be short
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def _store(cache_dir: str, name: str, key: tuple[int, ...], data: dict[str, Any]) -> None:
    import marshal  # noqa: PLC0415

    try:
        blob = marshal.dumps((key, data))
    except ValueError:
        return  # TOML dates and times are not marshallable; no cache then
    dir_fd = _cache_dir_fd(cache_dir, create=True)
    if dir_fd is None:
        return
    try:
        write_private(name, blob, dir_fd=dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load_config(path: str = DEFAULT_CONFIG_PATH, *, cache_dir: str | None = None) -> Config:
    """Read and validate the TOML file at *path*; every failure is a :class:`ConfigError`.

    With *cache_dir*, the parsed TOML is cached there (see :func:`_load_raw`),
    which spares the TOML parser on every login.
    """
    return config_from_mapping(_load_raw(path, cache_dir), source=path)
