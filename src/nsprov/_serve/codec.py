"""The wire protocols ``nsprov serve`` speaks, as pure sans-I/O codecs.

Two Dovecot 2.3 dict clients can reach the server, and both live in the auth
worker, which runs the (blocking) ``userdb dict`` lookups:

``proxy:<socket>:<name>`` (dict-proxy, core 2.3.19.1 src/lib-dict/dict-client.[ch])
    Line based.  The client opens with ``H<major>\\t<minor>\\t<value type>\\t
    <user>\\t<dict name>`` (major 3, minor 2 in 2.3), then sends commands:
    ``L<key>\\t<user>`` looks a key up (the key carries the ``shared/``
    prefix).  Replies are ``O<value>`` (found), ``N`` (not found) and
    ``F<error>`` (failure), answered in request order.  Every field is
    tab-escaped: ``\\001`` -> ``\\0011``, tab -> ``\\001t``, LF -> ``\\001n``,
    CR -> ``\\001r`` (NUL -> ``\\0010``; core src/lib/strescape.c).
    Transaction commands ``B R S U A T`` have no reply; ``C``/``D`` (commit)
    and ``I`` (iterate) do.  The client waits 30 s for a reply, hard-coded
    (``DICT_CLIENT_REQUEST_TIMEOUT_MSECS``), then reconnects and retries once.

``redis:path=<socket>:timeout_msecs=<n>`` (core 2.3.19.1 src/lib-dict/dict-redis.c)
    A subset of RESP: ``GET <key>`` as an array of bulk strings, the key
    without ``shared/``; the reply is a bulk string (``$<n>\\r\\n<bytes>\\r\\n``)
    or the null bulk string ``$-1``.  ``AUTH``/``SELECT`` are sent only when
    ``password=``/``db=`` are configured and expect ``+OK``.  Unlike the proxy
    client, this one has a configurable per-lookup timeout, which is what lets
    logins go on when the server hangs.

The first byte of a connection tells them apart (``H`` or ``*``).
Everything here works on bytes and keeps no I/O state beyond its buffer, so
partial reads, pipelined requests and oversized lines are all plain data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

from ..exceptions import ProtocolError

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The dict-proxy protocol major version Dovecot 2.3 speaks.
DICT_MAJOR_VERSION = 3
#: Longest request line (or RESP bulk string) accepted; Dovecot's own limit is 64 KiB.
DEFAULT_MAX_LINE = 16 * 1024
#: Most arguments in one RESP command (``GET key`` needs two).
MAX_RESP_ARGS = 16
#: The prefix Dovecot's auth puts before every userdb dict key (``DICT_PATH_SHARED``).
SHARED_PREFIX = "shared/"
#: The key nsprov answers: ``userdb/<user>`` or ``userdb/<user>/<home>``.
USERDB_KEY_PREFIX = "userdb/"
#: The key ``nsprov post-login --serve`` asks: ``postlogin?v=1&proto=…&cfg=…&stat=…&USER=…``.
POSTLOGIN_KEY_PREFIX = "postlogin?"
#: The identity variables a post-login key may carry (``nsprov._postlogin.IDENTITY_VARS``).
POSTLOGIN_IDENTITY = ("USER", "HOME", "UID", "GID", "SYSTEM_GROUPS_USER", "MAIL_ACCESS_GROUPS")

Protocol = Literal["dict", "redis"]

_ESCAPES = {0x00: b"\x010", 0x01: b"\x011", 0x09: b"\x01t", 0x0A: b"\x01n", 0x0D: b"\x01r"}
_UNESCAPES = {ord("0"): 0x00, ord("1"): 0x01, ord("t"): 0x09, ord("n"): 0x0A, ord("r"): 0x0D}
_NO_REPLY_COMMANDS = frozenset(b"BRSUAT")


def tab_escape(data: bytes) -> bytes:
    r"""Escape one field the way Dovecot's ``str_append_tabescaped_n`` does.

    >>> tab_escape(b"a\tb\x01c\nd")
    b'a\x01tb\x011c\x01nd'
    """
    if not any(b in data for b in (b"\x00", b"\x01", b"\t", b"\n", b"\r")):
        return data
    return b"".join(_ESCAPES.get(c, bytes((c,))) for c in data)


def tab_unescape(data: bytes) -> bytes:
    r"""Undo :func:`tab_escape` like Dovecot's ``str_tabunescape``.

    An unknown escape stands for the byte itself; a trailing lone ``\001`` is dropped.

    >>> tab_unescape(b"a\x01tb\x011c")
    b'a\tb\x01c'
    """
    if b"\x01" not in data:
        return data
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c != 0x01:
            out.append(c)
            i += 1
            continue
        if i + 1 < n:
            nxt = data[i + 1]
            out.append(_UNESCAPES.get(nxt, nxt))
        i += 2
    return bytes(out)


def split_tabescaped(line: bytes) -> list[bytes]:
    """Split a line on tabs and unescape each field (``t_strsplit_tabescaped``)."""
    return [tab_unescape(part) for part in line.split(b"\t")]


def detect(first: bytes) -> Protocol | None:
    """The protocol a connection speaks, from its first byte (None: neither)."""
    if first[:1] == b"H":
        return "dict"
    if first[:1] == b"*":
        return "redis"
    return None


# --- dict-proxy ---------------------------------------------------------------------


@attrs.frozen
class Hello:
    """``H``: the handshake; nothing is sent back."""

    major: int
    minor: int
    value_type: int
    user: bytes
    dict_name: bytes


@attrs.frozen
class Lookup:
    """``L<key>\\t<user>``: look one key up."""

    key: bytes
    user: bytes


@attrs.frozen
class Iterate:
    """``I<flags>\\t<path>…``: iterate; nsprov answers with a failure."""

    args: tuple[bytes, ...]


@attrs.frozen
class Commit:
    """``C<id>`` or ``D<id>`` (``async_``): commit a transaction; nsprov answers with a failure."""

    transaction: bytes
    async_: bool


@attrs.frozen
class NoReply:
    """A transaction command (``B R S U A T``) the client expects no reply to."""

    command: str


DictRequest = Hello | Lookup | Iterate | Commit | NoReply


def parse_dict_line(line: bytes, *, hello_seen: bool) -> DictRequest:
    """Parse one dict-proxy request line (without its LF).

    The first line must be the handshake, and only the first.
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line:
        raise ProtocolError("empty command line")
    cmd = line[:1]
    if not hello_seen:
        if cmd != b"H":
            raise ProtocolError(f"expected the handshake (H...), got command {cmd!r}")
        args = split_tabescaped(line[1:])
        if len(args) < 5:
            raise ProtocolError(f"handshake has {len(args)} fields, expected 5")
        try:
            major, minor, value_type = int(args[0]), int(args[1]), int(args[2])
        except ValueError:
            raise ProtocolError("handshake versions and value type must be numbers") from None
        if major != DICT_MAJOR_VERSION:
            raise ProtocolError(f"unsupported dict protocol major version {major}")
        return Hello(major, minor, value_type, args[3], args[4])
    args = split_tabescaped(line[1:])
    if cmd == b"H":
        raise ProtocolError("a second handshake")
    if cmd == b"L":
        if not args[0]:
            raise ProtocolError("lookup without a key")
        return Lookup(args[0], args[1] if len(args) > 1 else b"")
    if cmd == b"I":
        return Iterate(tuple(args))
    if cmd in {b"C", b"D"}:
        return Commit(args[0], async_=cmd == b"D")
    if cmd[0] in _NO_REPLY_COMMANDS:
        return NoReply(cmd.decode())
    raise ProtocolError(f"unknown command {cmd!r}")


def dict_ok(value: bytes) -> bytes:
    """The reply line for a found key."""
    return b"O" + tab_escape(value) + b"\n"


def dict_not_found() -> bytes:
    """The reply line for a missing key."""
    return b"N\n"


def dict_fail(error: str) -> bytes:
    """The reply line for a failed lookup or iteration."""
    return b"F" + tab_escape(_one_line(error)) + b"\n"


def dict_commit_fail(transaction: bytes, error: str, *, async_: bool) -> bytes:
    """The reply line for a refused commit (``F<id>\\t<error>``, ``AF…`` when asynchronous)."""
    head = b"AF" if async_ else b"F"
    return head + tab_escape(transaction) + b"\t" + tab_escape(_one_line(error)) + b"\n"


def _one_line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8", "backslashreplace")


class LineBuffer:
    """Split a byte stream into LF-terminated lines, each at most *max_line* bytes.

    :meth:`feed` is a generator: it yields the lines a chunk completes, and
    raises :class:`ProtocolError` where a line turns out too long, after the
    lines before it, without buffering the rest of that line.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Add *data*; yield the complete lines it finished, without their LF."""
        self._buf += data
        while (end := self._buf.find(b"\n")) != -1:
            if end > self.max_line:
                self._buf.clear()
                raise ProtocolError(f"line longer than {self.max_line} bytes")
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            yield line
        if len(self._buf) > self.max_line:
            self._buf.clear()
            raise ProtocolError(f"line longer than {self.max_line} bytes")

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held."""
        return len(self._buf)


# --- RESP (redis) ---------------------------------------------------------------------


class RespParser:
    """Parse RESP commands (arrays of bulk strings) from a byte stream.

    Inline commands, nested arrays and other types are protocol errors: the
    Dovecot redis dict never sends them.  Bulk strings and the array size
    are capped.
    """

    def __init__(self, max_bulk: int = DEFAULT_MAX_LINE, max_args: int = MAX_RESP_ARGS) -> None:
        self.max_bulk = max_bulk
        self.max_args = max_args
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[list[bytes]]:
        """Add *data*; yield the complete commands it finished (a generator, like :class:`LineBuffer`)."""
        self._buf += data
        while True:
            try:
                parsed = self._parse_one()
            except ProtocolError:
                self._buf.clear()
                raise
            if parsed is None:
                return
            command, used = parsed
            del self._buf[:used]
            yield command

    def _line(self, pos: int) -> tuple[bytes, int] | None:
        end = self._buf.find(b"\r\n", pos)
        if end == -1:
            if len(self._buf) - pos > 32:
                raise ProtocolError("RESP header line too long")
            return None
        return bytes(self._buf[pos:end]), end + 2

    def _parse_one(self) -> tuple[list[bytes], int] | None:
        if not self._buf:
            return None
        got = self._line(0)
        if got is None:
            return None
        header, pos = got
        if header[:1] != b"*":
            raise ProtocolError(f"expected a RESP array, got {header[:20]!r}")
        count = _resp_int(header[1:])
        if not 1 <= count <= self.max_args:
            raise ProtocolError(f"RESP array of {count} elements")
        args = []
        for _ in range(count):
            got = self._line(pos)
            if got is None:
                return None
            header, pos = got
            if header[:1] != b"$":
                raise ProtocolError(f"expected a RESP bulk string, got {header[:20]!r}")
            size = _resp_int(header[1:])
            if not 0 <= size <= self.max_bulk:
                raise ProtocolError(f"RESP bulk string of {size} bytes")
            if len(self._buf) < pos + size + 2:
                return None
            if self._buf[pos + size : pos + size + 2] != b"\r\n":
                raise ProtocolError("RESP bulk string not terminated by CRLF")
            args.append(bytes(self._buf[pos : pos + size]))
            pos += size + 2
        return args, pos

    @property
    def pending(self) -> int:
        """Bytes of an unfinished command held."""
        return len(self._buf)


def _resp_int(text: bytes) -> int:
    if not text or not (text.isdigit() or (text[:1] == b"-" and text[1:].isdigit())):
        raise ProtocolError(f"bad RESP length {text[:20]!r}")
    return int(text)


def resp_bulk(value: bytes) -> bytes:
    """A RESP bulk string reply."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def resp_nil() -> bytes:
    """The RESP null bulk string: the key does not exist."""
    return b"$-1\r\n"


def resp_simple(text: str) -> bytes:
    """A RESP simple string (``+OK``)."""
    return b"+" + _one_line(text) + b"\r\n"


def resp_error(text: str) -> bytes:
    """A RESP error (``-ERR …``); Dovecot's redis dict fails the lookup on it."""
    return b"-ERR " + _one_line(text) + b"\r\n"


# --- the userdb key -------------------------------------------------------------------


@attrs.frozen
class UserdbKey:
    """What a ``userdb/<user>[/<home>]`` key asks for."""

    user: str
    #: The home the primary userdb returned (``%{userdb:home}``), None when not in the key.
    home: str | None = None

    @property
    def cache_key(self) -> tuple[object, ...]:
        """What answers to this key depend on besides the configuration."""
        return ("userdb", self.user, self.home)


def parse_userdb_key(key: str) -> UserdbKey | None:
    """Parse a lookup key; None if it is no userdb key nsprov answers.

    ``key = userdb/%u`` gives ``userdb/alice``; ``key = userdb/%u/%{userdb:home}``
    gives ``userdb/alice//home/alice`` (the home is absolute, so it starts
    with ``/``), or ``userdb/alice/`` when the primary userdb returned no home.
    The user name ends at the first ``//`` or at a trailing ``/``: a user name
    containing ``//``, or starting or ending with ``/``, cannot be told apart
    and is refused.
    The ``shared/`` prefix of the dict-proxy protocol is optional.

    >>> parse_userdb_key("shared/userdb/alice//home/alice")
    UserdbKey(user='alice', home='/home/alice')
    >>> parse_userdb_key("userdb/bob") is not None
    True
    """
    key = key.removeprefix(SHARED_PREFIX)
    if not key.startswith(USERDB_KEY_PREFIX):
        return None
    rest = key[len(USERDB_KEY_PREFIX) :]
    home: str | None = None
    cut = rest.find("//")
    if cut != -1:
        rest, home = rest[:cut], rest[cut + 1 :]
    elif rest.endswith("/"):
        rest, home = rest[:-1], ""
    if not rest or rest[0] == "/" or rest[-1] == "/" or "\0" in rest or "\0" in (home or ""):
        return None
    return UserdbKey(rest, home)


@attrs.frozen
class PostloginKey:
    """What ``nsprov post-login --serve`` asks: the answer for one login, from one configuration.

    .. versionadded:: 0.1.0
    """

    #: ``imap``, ``pop3`` or None (no ``--protocol``).
    protocol: str | None
    #: The configuration path the login reads, and its ``dev:ino:size:mtime_ns:ctime_ns``.
    config: str
    stamp: str
    #: The Dovecot version installed beside script-login, None when not detected.
    dovecot: str | None
    #: The identity variables the login's environment holds, in :data:`POSTLOGIN_IDENTITY` order.
    identity: tuple[tuple[str, str], ...]

    @property
    def environ(self) -> dict[str, str]:
        """The identity variables as an environment (for the in-process identity function)."""
        return dict(self.identity)

    @property
    def user(self) -> str:
        """``USER``, empty when the login had none."""
        return self.environ.get("USER", "")

    @property
    def home(self) -> str | None:
        """``HOME``, None when the login had none."""
        return self.environ.get("HOME")

    @property
    def cache_key(self) -> tuple[object, ...]:
        """What answers to this key depend on (the stamp names the configuration)."""
        return ("postlogin", self.stamp, self.protocol, self.dovecot, self.identity)


def _pct_decode(text: str) -> str | None:
    if "%" not in text:
        return text
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "%":
            out += c.encode("ascii")
            i += 1
            continue
        pair = text[i + 1 : i + 3]
        if len(pair) != 2 or not all(h in "0123456789ABCDEFabcdef" for h in pair):
            return None
        out.append(int(pair, 16))
        i += 3
    return out.decode("utf-8", "surrogateescape")


_STAMP_PARTS = 5
_POSTLOGIN_FIELDS = frozenset({"v", "proto", "cfg", "stat", "dovecot", *POSTLOGIN_IDENTITY})


def parse_postlogin_key(key: str) -> PostloginKey | None:
    """Parse a ``postlogin?…`` key (``nsprov._postlogin.serve_key``); None for anything else.

    Strict: an unknown version or field, a field given twice, a bad escape or a
    malformed stamp is None, and the login then computes in-process.

    >>> k = parse_postlogin_key("postlogin?v=1&proto=imap&cfg=/etc/n.toml&stat=1:2:3:4:5&USER=al%20ice&UID=1000")
    >>> (k.protocol, k.config, k.user, k.environ["UID"])
    ('imap', '/etc/n.toml', 'al ice', '1000')
    """
    if not key.startswith(POSTLOGIN_KEY_PREFIX) or not key.isascii():
        return None
    fields: dict[str, str] = {}
    for part in key[len(POSTLOGIN_KEY_PREFIX) :].split("&"):
        name, eq, raw = part.partition("=")
        value = _pct_decode(raw)
        if not eq or name not in _POSTLOGIN_FIELDS or name in fields or value is None:
            return None
        if "\0" in value:
            return None
        fields[name] = value
    if fields.get("v") != "1" or fields.get("proto") not in {"imap", "pop3", "-"}:
        return None
    config, stamp = fields.get("cfg", ""), fields.get("stat", "")
    parts = stamp.split(":")
    if not config or len(parts) != _STAMP_PARTS or not all(p.isdigit() for p in parts):
        return None
    dovecot = fields.get("dovecot")
    if dovecot is not None and dovecot not in {"2.3", "2.4"}:
        return None
    protocol = fields["proto"]
    return PostloginKey(
        protocol=None if protocol == "-" else protocol,
        config=config,
        stamp=stamp,
        dovecot=dovecot,
        identity=tuple((k, fields[k]) for k in POSTLOGIN_IDENTITY if k in fields),
    )
