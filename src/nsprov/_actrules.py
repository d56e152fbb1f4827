"""The rules of the post-login actions, on plain values: one engine for both login paths.

:mod:`nsprov._actions` (the full path, on a :class:`nsprov._login.Login`) and
:func:`nsprov._lean.run_login` (the lean path, on a compiled profile) call these
functions: which login ``[deny]`` refuses, the ``[[alert]]`` line, the
``acl_groups`` value, the last-login line and file, the ``[[field]]`` effects
and the ``USERDB_KEYS`` bookkeeping, the template values.

What a configuration gives is compiled once (by the full path, at profile time):
CIDR networks to ``(version, network, prefix)`` integers (:func:`compile_network`),
so the login parses its addresses with plain code (:func:`parse_ip`) and never
imports :mod:`ipaddress`; shell globs are matched by :func:`glob_match`, which
imports :mod:`fnmatch` only for a pattern with ``[``.

This module imports only built-in modules and nsprov's standard-library-only
modules: it is on the login path.
"""

from __future__ import annotations

from . import _os as os  # not the os module: see nsprov._os
from ._userdb import USERDB_KEYS, listed_keys, with_keys
from .exceptions import NsprovError

TYPE_CHECKING = False  # not typing's: this module is on the login path
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
    from typing import Any

#: A compiled network: ``(4 or 6, network address as an int, prefix length)``.
Network = tuple[int, int, int]


# -- text


def clean_text(text: str) -> str:
    """Client text with CR, LF and NUL removed (the text is data, never protocol)."""
    return text.replace("\r", "").replace("\n", " ").replace("\0", "")


def alert_line(text: str) -> bytes:
    """The IMAP untagged ``* OK [ALERT]`` line showing *text*."""
    return f"* OK [ALERT] {clean_text(text)}\r\n".encode("utf-8", "replace")


def alert_condition(path: str) -> bool:
    """Whether an alert's ``if_exists`` file exists (``stat``, run as the user; absent: False).

    Any other error (a directory the user may not search …) raises: the
    alert's task fails with one error line, as any task does.
    """
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    return True


def deny_line(message: str, protocol: str | None) -> bytes | None:
    """The one line a denied client gets, by protocol (*message* already cleaned)."""
    if protocol == "imap":
        return f"* BYE [ALERT] {message}\r\n".encode("utf-8", "replace")
    if protocol == "pop3":
        return f"-ERR [SYS/PERM] {message}\r\n".encode("utf-8", "replace")
    return None


def describe_error(e: BaseException) -> str:
    """One line for a failed action or task: the message, the OS error, or the type and message."""
    if isinstance(e, NsprovError | ValueError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return f"{type(e).__name__}: {e}"


# -- globs


def glob_match(name: str, pattern: str) -> bool:
    """:func:`fnmatch.fnmatchcase`: ``*`` any run of characters, ``?`` any one.

    Plain code for patterns of ``*``, ``?`` and literal characters (linear
    backtracking over the last ``*``); a pattern with ``[`` (a character
    class) is matched by :mod:`fnmatch` itself, imported only then.
    """
    if "[" in pattern:
        from fnmatch import fnmatchcase  # noqa: PLC0415 - only for a character class

        return fnmatchcase(name, pattern)
    n, p = len(name), len(pattern)
    i = j = 0
    star = -1
    mark = 0
    while i < n:
        if j < p and (pattern[j] == "?" or (pattern[j] != "*" and pattern[j] == name[i])):
            i += 1
            j += 1
        elif j < p and pattern[j] == "*":
            star = j
            mark = i
            j += 1
        elif star >= 0:
            j = star + 1
            mark += 1
            i = mark
        else:
            return False
    while j < p and pattern[j] == "*":
        j += 1
    return j == p


def any_glob(names: Iterable[str], patterns: Sequence[str]) -> bool:
    """Whether any of *names* matches any of *patterns*."""
    return bool(patterns) and any(glob_match(n, p) for n in names for p in patterns)


# -- addresses


def _ipv4(text: str) -> int | None:
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not part or len(part) > 3 or not part.isascii() or not part.isdigit():
            return None
        if len(part) > 1 and part[0] == "0":
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = (value << 8) | octet
    return value


_HEX = frozenset("0123456789abcdefABCDEF")


def _hextet(text: str) -> int | None:
    if not text or len(text) > 4 or not _HEX.issuperset(text):
        return None
    return int(text, 16)


def _ipv6(text: str) -> int | None:
    """As :class:`ipaddress.IPv6Address` parses (a ``%scope`` suffix ignored)."""
    text, sep, scope = text.partition("%")
    if sep and (not scope or "%" in scope):
        return None
    parts = text.split(":")
    if len(parts) < 3:
        return None
    if "." in parts[-1]:
        v4 = _ipv4(parts.pop())
        if v4 is None:
            return None
        parts += [f"{v4 >> 16:x}", f"{v4 & 0xFFFF:x}"]
    if len(parts) > 9:
        return None
    skip = None
    for i in range(1, len(parts) - 1):
        if not parts[i]:
            if skip is not None:
                return None
            skip = i
    if skip is not None:
        hi, lo = skip, len(parts) - skip - 1
        if not parts[0]:
            hi -= 1
            if hi:
                return None
        if not parts[-1]:
            lo -= 1
            if lo:
                return None
        skipped = 8 - (hi + lo)
        if skipped < 1:
            return None
    else:
        if len(parts) != 8 or not parts[0] or not parts[-1]:
            return None
        hi, lo, skipped = 8, 0, 0
    value = 0
    for g in [*parts[:hi], *(["0"] * skipped), *(parts[len(parts) - lo :] if lo else [])]:
        h = _hextet(g)
        if h is None:
            return None
        value = (value << 16) | h
    return value


def parse_ip(text: str) -> tuple[int, int] | None:
    """``(4 or 6, address)`` of *text* as :func:`ipaddress.ip_address` reads it, None if invalid.

    An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is its IPv4 address, as
    the full path has always matched it.
    """
    if not text:
        return None
    if ":" not in text:
        v4 = _ipv4(text)
        return None if v4 is None else (4, v4)
    v6 = _ipv6(text)
    if v6 is None:
        return None
    if v6 >> 32 == 0xFFFF:
        return 4, v6 & 0xFFFFFFFF
    return 6, v6


def compile_network(cidr: str) -> Network:
    """``(version, network, prefix)`` of *cidr* (host bits cleared, as ``strict=False``).

    At profile time and on the full path: imports :mod:`ipaddress`.

    Raises:
        ValueError: Not a network.
    """
    import ipaddress  # noqa: PLC0415 - only at profile time, never on the lean login path

    net = ipaddress.ip_network(cidr, strict=False)
    return net.version, int(net.network_address), net.prefixlen


def in_networks(address: tuple[int, int] | None, networks: Sequence[Network]) -> bool:
    """Whether the parsed *address* (:func:`parse_ip`) lies in any of *networks*."""
    if address is None:
        return False
    version, value = address
    bits = 32 if version == 4 else 128
    for nv, network, prefix in networks:
        if nv == version and value >> (bits - prefix) == network >> (bits - prefix):
            return True
    return False


# -- groups


def group_names(gid: int, groups: Iterable[int], *, numeric: bool = True) -> list[str]:
    """Names of the mail identity's groups (primary first, then sorted by gid), via NSS.

    A gid without a group entry appears as its number with *numeric*, else not at all.
    """
    import grp  # noqa: PLC0415 - built in

    names = []
    for g in [gid, *sorted(groups)]:
        try:
            names.append(grp.getgrgid(g).gr_name)
        except KeyError:
            if numeric:
                names.append(str(g))
    return names


# -- deny


def compile_deny(
    *,
    users: Sequence[str],
    networks: Sequence[str],
    local_networks: Sequence[str],
    groups: Sequence[str],
    allow_users: Sequence[str],
    allow_networks: Sequence[str],
    allow_local_networks: Sequence[str],
    allow_groups: Sequence[str],
    default: str,
    message: str,
) -> dict[str, object]:
    """``[deny]`` as plain data: its globs as given, its networks compiled."""

    def nets(values: Sequence[str]) -> tuple[Network, ...]:
        return tuple(compile_network(v) for v in values)

    return {
        "users": tuple(users),
        "networks": nets(networks),
        "local_networks": nets(local_networks),
        "groups": tuple(groups),
        "allow_users": tuple(allow_users),
        "allow_networks": nets(allow_networks),
        "allow_local_networks": nets(allow_local_networks),
        "allow_groups": tuple(allow_groups),
        "default": default,
        "message": message,
    }


def deny_verdict(
    rules: Mapping[str, Any],
    *,
    user: str,
    ip: str,
    local_ip: str,
    groups: Callable[[], list[str]],
) -> str | None:
    """The message refusing this login under compiled ``[deny]`` *rules*, None to let it in.

    Allow-lists first: a login matching any ``allow_*`` entry is let in; then
    one matching any deny entry is refused; then ``default`` decides.  *groups*
    gives the mail identity's group names (NSS is asked only if a rule needs them).
    """
    address = parse_ip(ip) if rules["allow_networks"] or rules["networks"] else None
    local = parse_ip(local_ip) if rules["allow_local_networks"] or rules["local_networks"] else None
    names: list[str] | None = None

    def group_match(patterns: Sequence[str]) -> bool:
        nonlocal names
        if not patterns:
            return False
        if names is None:
            names = groups()
        return any_glob(names, patterns)

    if (
        any_glob((user,), rules["allow_users"])
        or in_networks(address, rules["allow_networks"])
        or in_networks(local, rules["allow_local_networks"])
        or group_match(rules["allow_groups"])
    ):
        return None
    if (
        any_glob((user,), rules["users"])
        or in_networks(address, rules["networks"])
        or in_networks(local, rules["local_networks"])
        or group_match(rules["groups"])
        or rules["default"] == "deny"
    ):
        return clean_text(rules["message"])
    return None


# -- acl_groups


def acl_groups_value(names: Sequence[str], dialect: str) -> str:
    """The ``acl_groups`` value: comma-separated; 2.3 doubles ``%`` (plugin settings are expanded)."""
    if dialect == "2.3":
        return ",".join(n.replace("%", "%%") for n in names)
    return ",".join(f'"{n}"' if any(c in n for c in ' ,"') else n for n in names)


def acl_groups(
    names: Sequence[str], include: Sequence[str], exclude: Sequence[str], dialect: str
) -> tuple[str | None, str | None]:
    """``(value, warning)``: the ``acl_groups`` value of group *names* (None: none to export).

    2.3 splits the value on "," with no escape; 2.4's list parser treats '"'
    and '\\' specially even inside quotes.  Such a name would be read as other
    groups' names, or break the whole value: left out, with one warning.
    """
    if include or exclude:
        names = [
            n
            for n in names
            if (not include or any_glob((n,), include)) and not any_glob((n,), exclude)
        ]
    unsafe = "," if dialect == "2.3" else '"\\'
    skipped = [n for n in names if any(c in n for c in unsafe)]
    warning = None
    if skipped:
        names = [n for n in names if n not in skipped]
        warning = f"acl_groups: left out group names Dovecot {dialect} cannot take: " + ", ".join(
            map(repr, skipped)
        )
    return (acl_groups_value(names, dialect) if names else None), warning


# -- last_login (file)


def last_login_line(now: int, protocol: str | None, ip: str) -> str:
    """The last-login file's one line: UTC time, protocol, client address."""
    import time  # noqa: PLC0415 - built in

    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return f"{stamp} {protocol or '-'} {ip or '-'}\n"


def write_file_atomically(path: str, text: str) -> None:
    """Replace *path* by a new file holding *text*, mode 0600, with nsprov's one private writer.

    Run as the user: rename replaces a planted symlink itself and never writes
    through it; the temporary file is created with O_EXCL and O_NOFOLLOW, written
    in full (a write may be short) and removed if anything fails.
    """
    from ._atomic import write_private  # noqa: PLC0415 - only for the file backend, as the user

    directory = os.dirname(path)
    old = os.umask(0o077)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        write_private(path, text.encode())
    finally:
        os.umask(old)


# -- userdb fields


def field_key(name: str) -> str:
    """The variable of userdb field *name*.

    Raises:
        ValueError: Not a name nsprov sets.
    """
    if not name or any(c.isspace() or c == "=" for c in name):
        raise ValueError(f"invalid userdb field name {name!r}")
    key = name.upper()
    if key in {"USER", "USERDB_KEYS"}:
        raise ValueError(f"{key} is not a field nsprov sets")
    return key


def set_field(env: MutableMapping[str, str], name: str, value: str) -> None:
    """Set userdb field *name* in *env* (listed in ``USERDB_KEYS`` once)."""
    key = field_key(name)
    env[key] = value
    keys, listed = listed_keys(env)
    if key not in listed:
        env[USERDB_KEYS] = with_keys(keys, [key])


def append_field(
    env: MutableMapping[str, str], name: str, value: str, separator: str = ","
) -> None:
    """Append *value* to userdb field *name*, or set it if it is unset or empty."""
    old = env.get(field_key(name), "")
    set_field(env, name, f"{old}{separator}{value}" if old else value)


def default_field(env: MutableMapping[str, str], name: str, value: str) -> None:
    """Set userdb field *name* only if userdb did not."""
    if field_key(name) not in env:
        set_field(env, name, value)


def apply_field(
    env: MutableMapping[str, str],
    *,
    name: str,
    value: str,
    mode: str,
    separator: str,
    literal_percent: bool,
    dialect: str,
) -> None:
    """One ``[[field]]`` with its rendered *value* (2.3 doubles ``%`` with *literal_percent*)."""
    if literal_percent and dialect == "2.3":
        value = value.replace("%", "%%")
    if mode == "set":
        set_field(env, name, value)
    elif mode == "append":
        append_field(env, name, value, separator)
    else:
        default_field(env, name, value)


def userdb(env: Mapping[str, str]) -> dict[str, str]:
    """Userdb fields as they stand in *env*, keys lowercase (as Dovecot will see them)."""
    out = {}
    for key in env.get(USERDB_KEYS, "").split(" "):
        if key and key.upper() in env:
            out[key.lower()] = env[key.upper()]
    return out


def template_values(
    env: Mapping[str, str], *, user: str, ip: str, local_ip: str, protocol: str | None
) -> dict[str, str]:
    """Values for ``{field}`` templates: userdb fields, ``user``, ``ip``, ``local_ip``, ``protocol``."""
    return {
        **userdb(env),
        "user": user,
        "ip": ip,
        "local_ip": local_ip,
        "protocol": protocol or "",
    }
