"""``nsprov serve``: shared namespaces for a Dovecot userdb (dict on 2.3, Lua on 2.3 and 2.4).

The post-login mode runs nsprov once per IMAP/POP3 login and its namespaces
never reach ``doveadm``, LMTP or the indexer.  In this mode one resident
server answers Dovecot's auth process instead: a second userdb of driver
``dict`` asks it for ``userdb/<user>`` and merges the JSON object it gets
back (``namespace``, ``namespace/<name>/<setting>``) into the first userdb's
fields, for every lookup, whoever makes it.  The answers come from the same
core as post-login: identity from NSS (honouring ``[identity]``; for
``nsprov post-login --serve`` keys, from the login's userdb fields, with the
in-process function), the
permission-true scan (:func:`nsprov._engine.plan`), naming, validation and
the output dialect (:meth:`nsprov._env.Dialect.settings`, defaults left out).

Usage::

    nsprov serve [--config=PATH] [--socket=PATH] [--socket-mode=0600] [--socket-group=GROUP]
                 [--deadline=SECONDS] [--cache-ttl=SECONDS] [--reply-budget=BYTES]
                 [--max-connections=N] [--idle-timeout=SECONDS] [--max-line=BYTES] [--workers=N]
                 [--log-level=debug|info|warning|error]
    nsprov serve --print-dovecot-config [--dialect=2.3|2.4] [--client=redis|proxy]
                 [--dict-file=PATH] [--socket=PATH] [--deadline=SECONDS]

``--print-dovecot-config`` prints the Dovecot configuration for the options
given (shipped as ``examples/serve/``) and exits.

Dovecot 2.3 wiring (verified live on 2.3.19.1)
-----------------------------------------------

The existing userdb gets ``result_success = continue-ok``; a second one
follows it::

    userdb {
      driver = passwd
      result_success = continue-ok
    }
    userdb {
      driver = dict
      args = /etc/dovecot/nsprov-userdb.conf.ext
      result_failure = continue
      result_internalfail = continue
    }

and ``/etc/dovecot/nsprov-userdb.conf.ext`` holds::

    uri = redis:path=/run/nsprov/userdb.sock:timeout_msecs=2500
    iterate_disable = yes
    key userdb {
      key = userdb/%u/%{userdb:home}
      format = json
    }
    userdb_objects = userdb

Both dict clients of Dovecot 2.3 work against this one socket; the server
tells them apart by their first byte (:mod:`nsprov._dictproto`):

* ``uri = proxy:<socket>:nsprov`` (dict-proxy), the client the issue started
  from.  Its lookup timeout is hard-coded at 30 s and it retries once after
  reconnecting (core 2.3.19.1 src/lib-dict/dict-client.c,
  ``DICT_CLIENT_REQUEST_TIMEOUT_MSECS``), so a *hung* server holds every
  login for 30 s or more (observed: an IMAP client gave up after 15 s).
* ``uri = redis:path=<socket>:timeout_msecs=<n>`` (src/lib-dict/dict-redis.c,
  built into 2.3's lib-dict, UNIX sockets via ``path=``).  Its lookup timeout
  is configurable, so a hung server costs a login ``n`` ms.  This is the
  recommended wiring.  The socket path must not contain ``:`` (the URI is
  split on it) and ``prefix=``/``db=`` must not be set.

**Fail-open.** ``result_failure = continue`` and ``result_internalfail =
continue`` on the dict userdb (both Dovecot's defaults, written out so nobody
changes them by accident): a lookup that fails or times out counts as an
internal failure, the chain ends there, and since the first userdb already
set ``continue-ok`` the login succeeds with that userdb's fields and no shared
namespaces (core 2.3.19.1 src/auth/auth-request.c
``auth_request_userdb_callback``).  There is no per-userdb timeout in 2.3;
the bound on a hung server is the dict client's own.  Observed on 2.3.19.1
(tests/live/test_serve_live.py):

==================  ==============================  ===============================
server              redis client                    proxy client
==================  ==============================  ===============================
killed (socket      at once (connect refused, no    about 1 s (``connect()`` retried
file left behind)   retry)                          for ``unix_client_connect_msecs``)
stopped (SIGSTOP)   ``timeout_msecs`` (2.5 s)       30 s or more (a client with a
                                                    15 s timeout gave up first)
==================  ==============================  ===============================

nsprov's own per-request ``--deadline`` (default 1.5 s) answers a failure
before the redis client gives up; the printed ``timeout_msecs`` is the
deadline plus 1 s.  With Dovecot's ``auth_cache_size`` set, userdb replies
(nsprov's fields included) are cached by Dovecot too, for ``auth_cache_ttl``.

**The key.** Dovecot prefixes ``shared/`` (proxy only; the redis client
strips it) and %-expands the key, also with the fields of the userdbs before
it: ``userdb/%u/%{userdb:home}`` arrives as ``userdb/alice//home/alice``
(observed), so per-user INDEX/CONTROL directories follow the home the first
userdb returned; ``key = userdb/%u`` works too and takes the home from NSS.
User names containing ``//`` are not supported with the home form; the proxy
client also sends the user separately and a mismatch is refused.

**Who connects.** The ``dict`` userdb is a blocking one: the lookups run in
the ``auth-worker`` processes, which run as root in 2.3 by default (observed:
``SO_PEERCRED`` uid 0, for IMAP, POP3 and ``doveadm`` lookups alike).  So the
default socket, mode 0600 owned by root, is enough.  With ``service
auth-worker { user = dovecot }``, give ``--socket-group=dovecot
--socket-mode=0660``.  The server logs each new peer uid once
(``event=peer``).

**Reply size.** The auth worker refuses a reply line over 8192 bytes ("Auth
worker sent us more than 8192 bytes"), and the user then logs in with none of
the dict userdb's fields; the mail process's own read of the userdb reply is
capped at 8192 bytes too (core 2.3.19.1 src/lib-master/master-login-auth.c).
That line holds the first userdb's fields as well, so the JSON object is kept
under ``--reply-budget`` (default 7000 bytes): the first namespaces in
discovery order that fit, and one warning line naming the user and the
counts.  :func:`reply_budget` tells who is over.

Dovecot 2.4
-----------

The dict wiring cannot work on 2.4: the ``dict`` passdb and userdb drivers were
removed before 2.4.0 (core commit 27ca066716, "auth: Drop passdb/userdb dict
-- Lua driver can be used instead"; ``src/auth/userdb-dict.c`` and
``db-dict.c`` are gone in 2.4.0 through 2.4.4).  Observed on 2.4.1 (Debian
13): a ``userdb`` with ``driver = dict`` makes the auth process die at start
("auth: Fatal: Unknown userdb driver 'dict'") and every IMAP login gets
``* BYE Auth process broken``.  On 2.4 (and 2.3) a Lua userdb asks this
server instead: ``nsprov/lua/nsprov-userdb.lua`` sends the same redis ``GET
userdb/<user>/<home>`` and returns the fields.  With ``[dovecot] version =
"2.4"`` the reply holds exactly the keys ``nsprov show --dialect=2.4
--format=env`` lists (``namespace+``, ``namespace/<name>/mail_path`` …), and
its default budget is the script's ``max_reply`` (:data:`LUA_MAX_REPLY`,
7680 bytes), which it must never exceed.

Server behaviour
----------------

* asyncio, one UNIX socket, many concurrent connections (``--max-connections``;
  at the limit the connection idle the longest is closed for the new one, and a
  new one is refused only while all are waiting for answers), pipelined
  requests answered in order, at most ``--max-line`` bytes per request line.
  A connection with no complete request for ``--idle-timeout`` (default 5 s)
  is closed: idle clients, slow or hostile, cannot lock lookups out.
* Lookups run in a thread pool (``--workers``) with a per-request deadline;
  concurrent lookups for one user share one computation, and beyond 1024
  users in flight (scans piling up on a hung filesystem) a lookup fails at
  once instead of queueing.  Other dict commands get a clean
  failure (iterate, commit) or are ignored (transaction commands, which
  have no reply).
* Cache: each answer remembers every path the scan looked at.  A later lookup
  re-``lstat``\\ s them: a changed inode, mode, owner or group, a changed ACL
  (checked only when the ctime moved, which ``chmod``, ``chown`` and
  ``setfacl`` all do), a directory listing whose mtime moved or a file whose
  content may have changed invalidates the answer at once; mail delivered
  into ``cur``/``new`` does not.  Group membership and NSS changes leave no
  trace in the filesystem, so every answer also expires after
  ``--cache-ttl`` (default 5 s): a revoked permission is gone within it.
* Missing per-user index/control directories are created before the answer
  is sent, by a helper process (``python -m nsprov._serve --dir-helper``)
  that forks a child per user which drops to the user's identity first
  (:func:`nsprov._engine.drop_privileges`, :func:`nsprov._engine.ensure_dirs`):
  nothing follows a user-controlled path as root.  The helper is started
  before the socket is bound, so no lookup waits for a new process; each
  lookup line's ``ms`` is the whole time from the request read to the reply
  written, directory creation included.
* SIGHUP re-reads the config (a bad one is logged and the old one kept);
  SIGTERM/SIGINT stop accepting, let running requests finish briefly, remove
  the socket and exit 0.
* Logs go to stderr, one ``key=value`` line each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import json
import os
import re
import signal
import socket
import stat as st
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, TextIO

import attrs

from ._defaults import DEFAULT_CONFIG_PATH
from ._dictproto import (
    DEFAULT_MAX_LINE,
    Commit,
    Hello,
    Iterate,
    LineBuffer,
    Lookup,
    NoReply,
    PostloginKey,
    ProtocolError,
    RespParser,
    UserdbKey,
    detect,
    dict_commit_fail,
    dict_fail,
    dict_not_found,
    dict_ok,
    parse_dict_line,
    parse_postlogin_key,
    parse_userdb_key,
    resp_bulk,
    resp_error,
    resp_nil,
    resp_simple,
)
from ._postlogin import STAMP_FIELD, config_stamp
from ._scan import DEFAULT_FS, Fs
from .exceptions import IdentityError, NsprovError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from ._config import Config, ServeConfig
    from ._env import Dialect
    from ._identity import MailUser
    from ._model import Namespace

DEFAULT_CONFIG = DEFAULT_CONFIG_PATH
DEFAULT_SOCKET = "/run/nsprov/userdb.sock"
DEFAULT_DICT_FILE = "/etc/dovecot/nsprov-userdb.conf.ext"
DEFAULT_SOCKET_MODE = 0o600
#: Bytes of JSON per reply at most: the auth worker's 8192-byte line also carries the other userdb's fields.
DEFAULT_REPLY_BUDGET = 7000
#: The 2.4 dialect's budget: the Lua userdb script's ``max_reply`` default (``nsprov/lua/nsprov-userdb.lua``),
#: which drops a longer reply; Dovecot refuses a userdb reply over 8 KiB, the first userdb's fields included.
LUA_MAX_REPLY = 7680
#: Replies to ``nsprov post-login --serve`` are bounded by the kernel's environment limits
#: (:func:`nsprov._engine.plan` against a typical Dovecot environment) rather than by
#: Dovecot's 8 KiB auth reply.
POSTLOGIN_BASE_ENV = {
    "USERDB_KEYS": "SYSTEM_GROUPS_USER UID GID HOME AUTH_MECH AUTH_TOKEN ",
}
#: The auth worker's and the mail process's limit for one userdb reply line.
AUTH_REPLY_LIMIT = 8192
DEFAULT_CACHE_TTL = 5.0
DEFAULT_CACHE_SIZE = 10_000
DEFAULT_DEADLINE = 1.5
DEFAULT_MAX_CONNECTIONS = 256
#: Seconds a connection may go without a complete request before it is closed.
DEFAULT_IDLE_TIMEOUT = 5.0
#: Connections the kernel queues before the server accepts them (bind_socket listens with as many).
LISTEN_BACKLOG = 512
DEFAULT_MAX_PIPELINE = 64
DEFAULT_WORKERS = 4
#: How long the directory helper gives one user's directories.
DIR_HELPER_TIMEOUT = 5.0
#: Users being looked up at once at most; beyond, lookups fail at once.
MAX_INFLIGHT = 1024
#: How long a reload may take to read the config.
RELOAD_TIMEOUT = 5.0
_READ_SIZE = 65536
_ACL_XATTR = "system.posix_acl_access"
_NO_ACL = frozenset({errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP})
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_BARE = re.compile(r"[A-Za-z0-9_.:/@+,%-]+")

Level = Literal["debug", "info", "warning", "error"]
#: A lookup: Dovecot's userdb key, or the post-login fast path's.
Key = UserdbKey | PostloginKey
#: A reply to write, and what to do once it is written (the lookup's log line).
_Out = tuple[bytes, "Callable[[], None] | None"]


# --- logging ------------------------------------------------------------------------


def _log_value(value: object) -> str:
    """*value* bare when it is a plain token, else a JSON string that is printable as a whole.

    JSON leaves DEL, C1 controls, bidi overrides and lone surrogates (bytes that
    were not UTF-8) unescaped; with any of them the string is ASCII-escaped.
    """
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=not text.isprintable())


class Log:
    """Structured log lines on a stream: ``ts=… level=… event=… key=value…``, one line each."""

    def __init__(
        self,
        level: Level = "info",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.threshold = _LEVELS[level]
        self.stream = stream
        self.clock = clock

    def enabled(self, level: Level) -> bool:
        """Whether lines at *level* are written."""
        return _LEVELS[level] >= self.threshold

    def __call__(self, level: Level, event: str, **fields: object) -> None:
        """Write one line at *level* (values with spaces or quotes are JSON-quoted)."""
        if not self.enabled(level):
            return
        now = self.clock()
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        )
        parts = [f"ts={stamp}", f"level={level}", f"event={_log_value(event)}"]
        parts += [f"{k}={_log_value(v)}" for k, v in fields.items() if v is not None]
        line = " ".join(parts) + "\n"
        stream = self.stream if self.stream is not None else sys.stderr
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):
            pass


# --- the reply ----------------------------------------------------------------------


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
    from ._engine import plan  # noqa: PLC0415
    from ._env import dialect_for  # noqa: PLC0415

    mail_user = identify(config, user, None) if isinstance(user, str) else user
    p = plan(config, mail_user, {}, fs=fs, keep_skipped=False)
    reply = fit_reply(p.discovery.namespaces, dialect_for(config.dialect), budget)
    return ReplyBudget(
        fits=reply.fits,
        total=reply.total,
        size=reply.size,
        full_size=reply.full_size,
        budget=budget,
    )


def _id_of(value: str, lookup: Callable[[str], Any], field: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return int(getattr(lookup(value), field))
    except KeyError:
        raise IdentityError(f"unknown name {value!r} in [identity]") from None


def identify(config: Config, user: str, home: str | None) -> MailUser:
    """The mail user for a lookup: NSS as ``userdb passwd`` sees it, *home* from the key if given.

    A user without a passwd entry is served only when ``[identity] mail_uid``
    and ``mail_gid`` are set and the key carried a home (virtual users).
    """
    import grp  # noqa: PLC0415
    import pwd  # noqa: PLC0415

    from ._identity import mail_user_from_nss, refuse_root  # noqa: PLC0415

    cfg = config.identity
    try:
        found = mail_user_from_nss(user, cfg, home=home or None)
    except IdentityError:
        if not (cfg.mail_uid and cfg.mail_gid and home):
            raise
        found = mail_user_from_nss(
            user,
            cfg,
            uid=_id_of(cfg.mail_uid, pwd.getpwnam, "pw_uid"),
            gid=_id_of(cfg.mail_gid, grp.getgrnam, "gr_gid"),
            home=home,
        )
    refuse_root(user, found.uid)
    return found


def identify_login(config: Config, environ: Mapping[str, str]) -> MailUser:
    """The mail user of a post-login key: the in-process path's own function, on the login's variables.

    :func:`nsprov._identity.mail_user_from_environ` is what ``nsprov post-login``
    computes the identity with (userdb ``UID``, ``GID``, ``SYSTEM_GROUPS_USER``,
    ``MAIL_ACCESS_GROUPS``, ``HOME``); the key carries exactly the variables it reads.
    """
    from ._identity import mail_user_from_environ  # noqa: PLC0415

    return mail_user_from_environ(environ, config.identity)


def load_stamped(load: Callable[[str], Config], path: str) -> tuple[Config, str | None]:
    """``load(path)`` and the :func:`nsprov._postlogin.config_stamp` of the file it read.

    The stamp is taken before and after reading; when they differ the file
    changed meanwhile and the stamp is None (no post-login key matches it).
    """
    before = config_stamp(path)
    config = load(path)
    after = config_stamp(path)
    return config, before if before == after else None


# --- what a scan looked at ----------------------------------------------------------


def _sig(s: os.stat_result) -> tuple[int, int, int, int, int]:
    return (s.st_dev, s.st_ino, s.st_mode, s.st_uid, s.st_gid)


@attrs.frozen
class _Seen:
    """One path as the scan saw it: identity and permission bits, ctime, ACL if read."""

    sig: tuple[int, int, int, int, int] | None
    ctime: int = 0
    acl: bytes | None = None
    acl_read: bool = False


class Recorder:
    """An :class:`~nsprov._scan.Fs` that records every path a scan looks at, for validation.

    Stat results are recorded before anything is read from the path, so a
    change racing the scan shows up as a change on the next validation.
    """

    def __init__(self, base: Fs = DEFAULT_FS) -> None:
        self.base = base
        self.seen: dict[bytes, _Seen] = {}
        self.listed: dict[bytes, tuple[int, int, int] | None] = {}
        self.read: dict[bytes, tuple[int, ...] | None] = {}

    def fs(self) -> Fs:
        """The recording filesystem to give :func:`nsprov._engine.plan`."""
        return Fs(
            lstat=self._lstat,
            listdir=self._listdir,
            getxattr=self._getxattr,
            realpath=self._realpath,
            read_text=self._read_text,
            read_ignore=self._read_ignore,
            listing=self._listing,
            dir_sig=self._dir_sig,
        )

    def note_file(self, path: str) -> None:
        """Record a file the answer depends on as a whole (the scan cache's index)."""
        self.read[os.fsencode(path)] = _content_sig(self.base, os.fsencode(path))

    def _listing(self, path: bytes) -> list[tuple[bytes, int]]:
        self.listed[path] = _list_sig(self.base, path)
        return self.base.listing(path)

    def _dir_sig(self, path: bytes) -> tuple[int, int, int]:
        sig = self.base.dir_sig(path)
        self.listed[path] = sig
        return sig

    def _lstat(self, path: bytes) -> os.stat_result:
        try:
            s = self.base.lstat(path)
        except FileNotFoundError:
            self.seen.setdefault(path, _Seen(None))
            raise
        old = self.seen.get(path)
        if old is None or old.sig != _sig(s):
            self.seen[path] = _Seen(_sig(s), s.st_ctime_ns)
        return s

    def _getxattr(self, path: bytes, name: str, *, follow_symlinks: bool = True) -> bytes:
        try:
            data = self.base.getxattr(path, name, follow_symlinks=follow_symlinks)
        except OSError as e:
            if name == _ACL_XATTR and e.errno in _NO_ACL:
                self._acl(path, None)
            raise
        if name == _ACL_XATTR:
            self._acl(path, data)
        return data

    def _acl(self, path: bytes, data: bytes | None) -> None:
        seen = self.seen.get(path)
        if seen is not None and seen.sig is not None:
            self.seen[path] = attrs.evolve(seen, acl=data, acl_read=True)

    def _listdir(self, path: bytes) -> list[bytes]:
        self.listed[path] = _list_sig(self.base, path)
        return self.base.listdir(path)

    def _realpath(self, path: bytes) -> bytes:
        self.read[path] = _content_sig(self.base, path)
        return self.base.realpath(path)

    def _read_text(self, path: bytes) -> str | None:
        self.read[path] = _content_sig(self.base, path)
        return self.base.read_text(path)

    def _read_ignore(self, path: bytes) -> str | None:
        self.read[path] = _content_sig(self.base, path)
        return self.base.read_ignore(path)

    def deps(self) -> Deps:
        """Everything recorded, frozen."""
        return Deps(
            seen=tuple(self.seen.items()),
            listed=tuple(self.listed.items()),
            read=tuple(self.read.items()),
        )


def _list_sig(fs: Fs, path: bytes) -> tuple[int, int, int] | None:
    try:
        s = fs.lstat(path)
    except FileNotFoundError:
        return None
    return (s.st_dev, s.st_ino, s.st_mtime_ns)


def _content_sig(fs: Fs, path: bytes) -> tuple[int, ...] | None:
    try:
        s = fs.lstat(path)
    except FileNotFoundError:
        return None
    return (*_sig(s), s.st_ctime_ns, s.st_mtime_ns, s.st_size)


def _read_acl(fs: Fs, path: bytes) -> bytes | None:
    try:
        return fs.getxattr(path, _ACL_XATTR, follow_symlinks=False)
    except OSError as e:
        if e.errno in _NO_ACL:
            return None
        raise


@attrs.frozen
class Deps:
    """The paths one answer depends on, and how they looked."""

    seen: tuple[tuple[bytes, _Seen], ...] = ()
    listed: tuple[tuple[bytes, tuple[int, int, int] | None], ...] = ()
    read: tuple[tuple[bytes, tuple[int, ...] | None], ...] = ()

    def changed(self, fs: Fs = DEFAULT_FS) -> bytes | None:
        """The first path that no longer looks the same, or None if none changed."""
        try:
            for path, seen in self.seen:
                if not _still(fs, path, seen):
                    return path
            for path, listed in self.listed:
                if _list_sig(fs, path) != listed:
                    return path
            for path, read in self.read:
                if _content_sig(fs, path) != read:
                    return path
        except OSError as e:
            return os.fsencode(getattr(e, "filename", None) or "?")
        return None


def _still(fs: Fs, path: bytes, seen: _Seen) -> bool:
    try:
        s = fs.lstat(path)
    except FileNotFoundError:
        return seen.sig is None
    if seen.sig is None or _sig(s) != seen.sig:
        return False
    if s.st_ctime_ns == seen.ctime:
        return True
    # The ctime moved (chmod, chown, setfacl, a link count or content change):
    # only the ACL can have changed what the scan decided.
    return not seen.acl_read or _read_acl(fs, path) == seen.acl


# --- answers and the resolver -------------------------------------------------------


@attrs.frozen
class Answer:
    """What a lookup returns: a JSON object, not found, or a failure."""

    kind: Literal["found", "not-found", "fail"]
    value: bytes = b""
    error: str = ""
    fits: int = 0
    total: int = 0
    #: How it was resolved (``hit``/``miss``, empty when not resolved): for the log line.
    how: str = attrs.field(default="", eq=False)

    @classmethod
    def fail(cls, error: str) -> Answer:
        """A failed lookup."""
        return cls("fail", error=error)


@attrs.frozen
class Entry:
    """A cached answer: valid until ``expires`` and while its :class:`Deps` are unchanged."""

    answer: Answer
    deps: Deps
    expires: float
    generation: int


@attrs.frozen
class Outcome:
    """One resolution: the answer, a new cache entry, directories to create, lines to log."""

    answer: Answer
    how: Literal["hit", "miss"]
    entry: Entry | None = None
    #: (uid, gid, supplementary gids) and the missing directories to create as that identity.
    make_dirs: tuple[tuple[int, int, tuple[int, ...]], tuple[str, ...]] | None = None
    logs: tuple[tuple[Level, str, dict[str, object]], ...] = ()
    seconds: float = 0.0


class Resolver:
    """The blocking half of a lookup: validate a cached answer or compute a new one.

    Runs in a worker thread; it only reads the filesystem and NSS and never
    touches shared state, so the event loop owns the cache.
    """

    def __init__(
        self,
        *,
        budget: int | None = None,
        ttl: float = DEFAULT_CACHE_TTL,
        fs: Fs = DEFAULT_FS,
        clock: Callable[[], float] = time.monotonic,
        identify: Callable[[Config, str, str | None], MailUser] = identify,
    ) -> None:
        self.budget = budget
        self.ttl = ttl
        self.fs = fs
        self.clock = clock
        self.identify = identify

    def resolve(
        self,
        config: Config,
        generation: int,
        key: Key,
        entry: Entry | None,
        stamp: str | None = None,
    ) -> Outcome:
        """Answer *key*: from *entry* when it is still valid, else by scanning.

        *stamp* names *config*'s file (:func:`load_stamped`); post-login answers carry it.
        """
        started = self.clock()
        if entry is not None and entry.generation == generation and entry.expires > started:
            changed = entry.deps.changed(self.fs)
            if changed is None:
                return Outcome(entry.answer, "hit", seconds=self.clock() - started)
            why: tuple[tuple[Level, str, dict[str, object]], ...] = (
                ("debug", "invalidated", {"user": key.user, "path": os.fsdecode(changed)}),
            )
        else:
            why = ()
        outcome = self.compute(config, generation, key, started, stamp)
        return attrs.evolve(outcome, seconds=self.clock() - started, logs=why + outcome.logs)

    def compute(
        self, config: Config, generation: int, key: Key, now: float, stamp: str | None = None
    ) -> Outcome:
        """Scan for *key*'s user and build the answer (never raises)."""
        try:
            if isinstance(key, PostloginKey):
                return self._compute_postlogin(config, generation, key, now, stamp)
            return self._compute(config, generation, key, now)
        except NsprovError as e:
            error = str(e)
        except Exception as e:
            error = f"internal error: {type(e).__name__}: {e}"
        return Outcome(
            Answer.fail(error),
            "miss",
            logs=(("error", "lookup-failed", {"user": key.user, "error": error}),),
        )

    def _not_found(self, error: str, now: float, generation: int) -> Outcome:
        """A user nsprov does not serve (one debug line: the lookup line carries *error*)."""
        answer = Answer("not-found", error=error)
        return Outcome(answer, "miss", entry=self._entry(answer, Deps(), now, generation))

    def _recorder(self, config: Config, debug: bool) -> Recorder:
        recorder = Recorder(self.fs)
        if config.scan_cache is not None and not debug:
            from ._scancache import cache_files  # noqa: PLC0415

            # Before the scan reads it: a refresh racing this lookup invalidates the answer.
            for spool in config.spools:
                recorder.note_file(cache_files(config.scan_cache.dir, spool.path_bytes)[0])
        return recorder

    def _compute_postlogin(
        self, config: Config, generation: int, key: PostloginKey, now: float, stamp: str | None
    ) -> Outcome:
        """What the in-process path would export for this login, or not found when it would do more.

        The identity is the in-process path's (:func:`identify_login`); the variables are
        :func:`nsprov._engine.plan`'s, as the namespaces action exports them.  Any other
        action for the protocol, or a Dovecot version other than the configured one (the
        worker then exports nothing and says why), leaves the login to compute in-process.
        """
        from ._engine import plan  # noqa: PLC0415

        if stamp is None or stamp != key.stamp:
            return Outcome(Answer("not-found", error="another configuration"), "miss")
        if config.actions.for_protocol(key.protocol) != ("namespaces",):
            return self._not_found("other actions configured", now, generation)
        if key.dovecot is not None and key.dovecot != config.dialect:
            return self._not_found(f"Dovecot {key.dovecot} is installed", now, generation)
        try:
            user = identify_login(config, key.environ)
        except IdentityError as e:
            return self._not_found(str(e), now, generation)
        debug = user.user in config.debug_users
        recorder = self._recorder(config, debug)
        p = plan(config, user, POSTLOGIN_BASE_ENV, fs=recorder.fs(), keep_skipped=debug)
        fields = {k: v for k, v in p.environ.items() if k != "USERDB_KEYS"}
        fields[STAMP_FIELD] = stamp
        logs: list[tuple[Level, str, dict[str, object]]] = [
            ("warning", "scan-warning", {"user": user.user, "warning": w}) for w in p.warnings
        ]
        if debug:
            from ._engine import explain_lines  # noqa: PLC0415

            logs += [
                ("info", "explain", {"user": user.user, "line": line}) for line in explain_lines(p)
            ]
        served = len(p.discovery.namespaces)
        answer = Answer("found", value=_json(fields), fits=served, total=served)
        return Outcome(
            answer,
            "miss",
            entry=self._entry(answer, recorder.deps(), now, generation),
            make_dirs=self._missing_dirs(config, user, p.dirs),
            logs=tuple(logs),
        )

    @staticmethod
    def _missing_dirs(
        config: Config, user: MailUser, dirs: Sequence[str]
    ) -> tuple[tuple[int, int, tuple[int, ...]], tuple[str, ...]] | None:
        missing = tuple(d for d in dirs if not os.path.isdir(d)) if config.create_dirs else ()
        if not missing:
            return None
        ident = user.identity
        return (ident.uid, ident.gid, tuple(sorted(ident.groups))), missing

    def _compute(self, config: Config, generation: int, key: UserdbKey, now: float) -> Outcome:
        from ._engine import plan  # noqa: PLC0415
        from ._scan import limit  # noqa: PLC0415

        try:
            user = self.identify(config, key.user, key.home)
        except IdentityError as e:
            return self._not_found(str(e), now, generation)
        debug = user.user in config.debug_users
        recorder = self._recorder(config, debug)
        p = plan(config, user, {}, fs=recorder.fs(), keep_skipped=debug)
        budget = self.budget if self.budget is not None else default_reply_budget(config.dialect)
        reply = fit_reply(p.discovery.namespaces, config.output_dialect, budget)
        logs: list[tuple[Level, str, dict[str, object]]] = [
            ("warning", "scan-warning", {"user": user.user, "warning": w}) for w in p.warnings
        ]
        if debug:
            from ._engine import explain_lines  # noqa: PLC0415

            logs += [
                ("info", "explain", {"user": user.user, "line": line}) for line in explain_lines(p)
            ]
        if reply.fits < reply.total:
            logs.append(
                (
                    "warning",
                    "over-budget",
                    {
                        "user": user.user,
                        "served": reply.fits,
                        "found": reply.total,
                        "size": reply.size,
                        "needed": reply.full_size,
                        "budget": budget,
                    },
                )
            )
        make_dirs = None
        if reply.fits:
            kept = attrs.evolve(p, discovery=limit(p.discovery, reply.fits, "the reply budget"))
            make_dirs = self._missing_dirs(config, user, kept.dirs)
        answer = Answer("found", value=reply.value, fits=reply.fits, total=reply.total)
        return Outcome(
            answer,
            "miss",
            entry=self._entry(answer, recorder.deps(), now, generation),
            make_dirs=make_dirs,
            logs=tuple(logs),
        )

    def _entry(self, answer: Answer, deps: Deps, now: float, generation: int) -> Entry | None:
        if self.ttl <= 0:
            return None
        return Entry(answer=answer, deps=deps, expires=now + self.ttl, generation=generation)


# --- creating index directories as the user -----------------------------------------


def make_dirs_as(
    uid: int, gid: int, groups: Sequence[int], paths: Sequence[str], timeout: float
) -> dict[str, Any]:
    """Fork a child that becomes *uid*/*gid*/*groups* and creates *paths*; wait up to *timeout*.

    Call only from a single-threaded process (the directory helper).
    """
    if uid == 0:
        return {"error": "refusing to create directories as root"}
    from ._engine import drop_privileges, ensure_dirs  # noqa: PLC0415 - before fork, once
    from ._identity import MailUser  # noqa: PLC0415
    from ._perms import Identity  # noqa: PLC0415

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; covered through the helper tests
        os.close(r)
        status = 0
        try:
            drop_privileges(MailUser(user="", home=None, identity=Identity(uid, gid, groups)))
            result: dict[str, Any] = {"failures": ensure_dirs(paths)}
        except BaseException as e:
            result = {"error": f"{type(e).__name__}: {e}"}
            status = 1
        data = json.dumps(result).encode()
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(w, data) :]
        os._exit(status)
    os.close(w)
    import select  # noqa: PLC0415

    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"error": f"creating directories took longer than {timeout}s"}
            ready, _, _ = select.select([r], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    os.waitpid(pid, 0)
    try:
        parsed: dict[str, Any] = json.loads(b"".join(chunks))
    except ValueError:
        return {"error": "the directory child died"}
    return parsed


def dir_helper(stdin: Any = None, stdout: Any = None, timeout: float = DIR_HELPER_TIMEOUT) -> int:
    """The directory helper's loop: one JSON request per line in, one JSON result per line out."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout.buffer
    for line in stdin:
        try:
            req = json.loads(line)
            result = make_dirs_as(
                int(req["uid"]),
                int(req["gid"]),
                [int(g) for g in req["groups"]],
                [str(p) for p in req["paths"]],
                timeout,
            )
        except (ValueError, KeyError, TypeError) as e:
            result = {"error": f"bad request: {e}"}
        stdout.write(json.dumps(result).encode() + b"\n")
        stdout.flush()
    return 0


class DirMaker:
    """The server's side of the directory helper: started with the server, restarted if it died.

    Starting it is a new Python process (over 100 ms on a small machine), so
    :meth:`Server.start` starts it before the socket exists: no lookup waits on it.
    """

    def __init__(self, log: Log, timeout: float = DIR_HELPER_TIMEOUT) -> None:
        self.log = log
        self.timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the helper now, if it is not running (:meth:`ensure` restarts it if it died)."""
        async with self._lock:
            await self._start()

    async def _start(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-m",
            "nsprov._serve",
            "--dir-helper",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.log("debug", "dir-helper-started", pid=self._proc.pid)
        return self._proc

    async def ensure(
        self, uid: int, gid: int, groups: Sequence[int], paths: Sequence[str]
    ) -> str | None:
        """Create *paths* as the given identity; None on success, else what went wrong."""
        request = json.dumps({"uid": uid, "gid": gid, "groups": list(groups), "paths": list(paths)})
        async with self._lock:
            try:
                stdin, stdout = _pipes(await self._start())
                stdin.write(request.encode() + b"\n")
                await stdin.drain()
                line = await asyncio.wait_for(stdout.readline(), self.timeout + 1)
                if not line:
                    raise ConnectionError("the directory helper exited")
                result = json.loads(line)
            except (OSError, ValueError, TimeoutError) as e:
                await self.close()
                return f"directory helper: {type(e).__name__}: {e}"
        if "error" in result:
            return str(result["error"])
        failures = result.get("failures") or []
        if failures:
            return f"cannot create {len(failures)} directories: {failures[0]}"
        return None

    async def close(self) -> None:
        """Stop the helper (it exits when its stdin closes)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 2)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _pipes(
    proc: asyncio.subprocess.Process,
) -> tuple[asyncio.StreamWriter, asyncio.StreamReader]:
    if proc.stdin is None or proc.stdout is None:  # pragma: no cover - started with PIPE
        raise OSError("the directory helper has no pipes")
    return proc.stdin, proc.stdout


# --- the server ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ServeOptions:
    """Everything ``nsprov serve`` takes on its command line."""

    config_path: str = DEFAULT_CONFIG
    socket_path: str = DEFAULT_SOCKET
    socket_mode: int = DEFAULT_SOCKET_MODE
    socket_group: str | None = None
    deadline: float = DEFAULT_DEADLINE
    cache_ttl: float = DEFAULT_CACHE_TTL
    cache_size: int = DEFAULT_CACHE_SIZE
    #: None: the dialect's (:func:`default_reply_budget`).
    reply_budget: int | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_line: int = DEFAULT_MAX_LINE
    max_pipeline: int = DEFAULT_MAX_PIPELINE
    workers: int = DEFAULT_WORKERS
    log_level: Level = "info"


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """``(pid, uid, gid)`` of a UNIX socket's peer, or None."""
    try:
        data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


class SocketInUseError(NsprovError, OSError):
    """Another server is listening on the socket path."""


def bind_socket(path: str, *, mode: int, group: str | None) -> socket.socket:
    """A listening UNIX socket at *path* with *mode* and *group*, never visible with other ones.

    The socket's directory must pass the trust rule (:mod:`nsprov._trust`):
    whoever may write it could swap the socket for their own.  The socket is
    bound under a temporary name with its mode from the umask, given its
    group without following a link, then renamed into place.  A stale socket
    is replaced; a live one is an error.
    """
    from ._trust import check_trusted  # noqa: PLC0415

    gid = -1
    if group is not None:
        import grp  # noqa: PLC0415

        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise NsprovError(f"--socket-group: unknown group {group!r}") from None
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
    check_trusted(parent, what="socket directory", directory=True)
    with contextlib.suppress(FileNotFoundError):
        s = os.lstat(path)
        if not st.S_ISSOCK(s.st_mode):
            raise NsprovError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            pass  # stale: replaced below
        else:
            raise SocketInUseError(f"{path}: another server is listening there")
        finally:
            probe.close()
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bind() creates the file with 0777 & ~umask: the mode is right from the start, and
    # nothing is chmod'ed by name (Linux cannot chmod a link itself; chmod would follow one).
    old = os.umask(~mode & 0o777)
    try:
        sock.bind(tmp)
    finally:
        os.umask(old)
    try:
        os.chown(tmp, -1, gid, follow_symlinks=False)
        sock.listen(512)
        os.rename(tmp, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sock.setblocking(False)
    return sock


class Server:
    """The resident dict server: one socket, a cache, a thread pool and the directory helper."""

    def __init__(
        self,
        config: Config,
        options: ServeOptions,
        *,
        log: Log | None = None,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
        load: Callable[[str], Config] | None = None,
        stamp: str | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.log = log or Log(options.log_level)
        self.clock = clock
        self.resolver = resolver or Resolver(
            budget=options.reply_budget, ttl=options.cache_ttl, clock=clock
        )
        self.load = load
        self.generation = 0
        self.cache: dict[tuple[object, ...], Entry] = {}
        self.inflight: dict[tuple[object, ...], asyncio.Future[Answer]] = {}
        #: The :func:`nsprov._postlogin.config_stamp` of the file ``config`` was read from.
        self.config_stamp = stamp
        self._failed_stamp: str | None = None
        self._recheck: asyncio.Future[None] | None = None
        self._stat_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nsprov-reload-stat")
        self.connections: dict[int, asyncio.Task[None]] = {}
        self.busy: set[int] = set()
        #: When each connection last completed a request (or connected); busy ones are not idle.
        self.idle_since: dict[int, float] = {}
        self.peers: set[int] = set()
        self.stats = {"lookups": 0, "hits": 0, "misses": 0, "failures": 0, "deadlines": 0}
        self.executor = ThreadPoolExecutor(
            max_workers=options.workers, thread_name_prefix="nsprov-scan"
        )
        self.dirs = DirMaker(self.log)
        self._server: asyncio.AbstractServer | None = None
        self._sock: socket.socket | None = None
        self._sock_ino: tuple[int, int] | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = 0
        self._refused_at = 0.0
        self._refresher: asyncio.Task[None] | None = None

    # -- life cycle

    async def start(self) -> None:
        """Bind the socket and start accepting."""
        o = self.options
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # Before the socket exists, so that no lookup pays for them: the
        # directory helper (a new process) and the modules a lookup imports.
        await self.dirs.start()
        _warm_imports()
        self._sock = bind_socket(o.socket_path, mode=o.socket_mode, group=o.socket_group)
        s = os.stat(o.socket_path)
        self._sock_ino = (s.st_dev, s.st_ino)
        # asyncio would listen() again with a backlog of 100: a burst beyond it gets
        # EAGAIN on connect (Dovecot's clients are non-blocking); keep bind_socket's.
        self._server = await asyncio.start_unix_server(
            self._connection, sock=self._sock, backlog=LISTEN_BACKLOG
        )
        self._refresher = asyncio.create_task(self._refresh_scan_cache())
        self.log(
            "info",
            "start",
            socket=o.socket_path,
            mode=f"{o.socket_mode:04o}",
            group=o.socket_group,
            config=self.config.source,
            dialect=self.config.dialect,
            pid=os.getpid(),
        )

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return (from the server's loop: signal handlers)."""
        if self._stopping is not None:
            self._stopping.set()

    def request_stop_threadsafe(self) -> None:
        """Ask :meth:`serve` to return, from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.request_stop)

    async def serve(self) -> None:
        """Run until :meth:`request_stop`, then shut down cleanly."""
        if self._stopping is None:
            raise RuntimeError("start() the server first")
        await self._stopping.wait()
        await self.stop()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let busy connections finish within *grace*, remove the socket."""
        grace = self.options.deadline + 0.5 if grace is None else grace
        if self._server is not None:
            self._server.close()
        self._unlink_socket()
        for cid, task in list(self.connections.items()):
            if cid not in self.busy:
                task.cancel()
        busy = [t for cid, t in self.connections.items() if cid in self.busy]
        if busy:
            _, pending = await asyncio.wait(busy, timeout=grace)
            for task in pending:
                task.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections.values()), timeout=1)
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.dirs.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._stat_pool.shutdown(wait=False, cancel_futures=True)
        self.log("info", "stop", **self.stats)

    def _unlink_socket(self) -> None:
        path = self.options.socket_path
        with contextlib.suppress(OSError):
            s = os.lstat(path)
            if (s.st_dev, s.st_ino) == self._sock_ino:
                os.unlink(path)

    async def _refresh_scan_cache(self) -> None:
        """Rebuild the ``[scan_cache]`` files every ``refresh`` seconds, in a thread of its own."""
        from ._scancache import update  # noqa: PLC0415

        loop = asyncio.get_running_loop()
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nsprov-cache")
        try:
            while True:
                cfg = self.config.scan_cache
                if cfg is None or cfg.refresh <= 0:
                    await asyncio.sleep(5)  # until a reload configures it
                    continue
                for spool in self.config.spools:
                    try:
                        u = await loop.run_in_executor(worker, update, cfg, spool, self.resolver.fs)
                    except Exception as e:  # logged; the next round retries
                        self.log("error", "scan-cache-failed", spool=spool.path, error=str(e))
                    else:
                        self.log(
                            "debug",
                            "scan-cache-updated",
                            spool=u.spool,
                            entries=u.entries,
                            reused=u.reused,
                            seconds=round(u.seconds, 3),
                        )
                await asyncio.sleep(cfg.refresh)
        finally:
            worker.shutdown(wait=False, cancel_futures=True)

    async def reload(self) -> bool:
        """Re-read the config; keep the old one if the new one is bad (logged either way)."""
        if self.load is None:
            from ._config import load_config  # noqa: PLC0415

            self.load = load_config
        path = self.options.config_path
        loop = asyncio.get_running_loop()
        # Its own thread: a read that hangs (a FIFO, a dead NFS server) must hold
        # neither a scan thread nor the default executor, which exit would wait for.
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nsprov-reload")
        try:
            config, stamp = await asyncio.wait_for(
                loop.run_in_executor(reader, load_stamped, self.load, path), RELOAD_TIMEOUT
            )
        except TimeoutError:
            self.log(
                "error", "reload-failed", config=path, error=f"reading took over {RELOAD_TIMEOUT}s"
            )
            return False
        except NsprovError as e:
            self.log("error", "reload-failed", config=path, error=str(e))
            return False
        finally:
            reader.shutdown(wait=False)
        self.config = config
        self.config_stamp = stamp
        self.generation += 1
        self.cache.clear()
        self.log("info", "reload", config=path, spools=len(config.spools), dialect=config.dialect)
        return True

    # -- lookups

    async def lookup(self, key: Key) -> Answer:
        """Answer one lookup within the deadline; concurrent lookups of one key share the work."""
        self.stats["lookups"] += 1
        if isinstance(key, PostloginKey) and (problem := await self._same_config(key)):
            return Answer("not-found", error=problem)
        k = key.cache_key
        fut = self.inflight.get(k)
        if fut is None:
            if len(self.inflight) >= MAX_INFLIGHT:
                # Scans pile up (a hung filesystem): answer at once rather than queue more.
                self.stats["failures"] += 1
                self.log("warning", "overloaded", user=key.user, inflight=len(self.inflight))
                return Answer.fail(f"nsprov: {len(self.inflight)} lookups already in progress")
            fut = asyncio.ensure_future(self._resolve(key))
            self.inflight[k] = fut
            fut.add_done_callback(lambda f: self._done(k, f))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.options.deadline)
        except TimeoutError:
            self.stats["deadlines"] += 1
            self.log("warning", "deadline", user=key.user, deadline=self.options.deadline)
            return Answer.fail(f"nsprov: no answer within {self.options.deadline}s")

    async def _same_config(self, key: PostloginKey) -> str | None:
        """Why the server cannot answer from the configuration *key* names; None when it can.

        A login whose file changed since the server read it (a newer stamp) makes
        the server re-read it first, once for all the lookups that notice.
        """
        if key.config != self.options.config_path:
            return f"the login reads {key.config}, the server {self.options.config_path}"
        if key.stamp != self.config_stamp:
            if self._recheck is None or self._recheck.done():
                self._recheck = asyncio.ensure_future(self._reload_if_changed())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._recheck), self.options.deadline)
        if key.stamp != self.config_stamp:
            return "the configuration file is not the one the server read"
        return None

    async def _reload_if_changed(self) -> None:
        """Reload when the file's stamp is neither the loaded one nor one that failed to load."""
        loop = asyncio.get_running_loop()
        path = self.options.config_path
        on_disk = await loop.run_in_executor(self._stat_pool, config_stamp, path)
        if on_disk is None or on_disk in (self.config_stamp, self._failed_stamp):
            return
        if not await self.reload():
            self._failed_stamp = on_disk

    def _done(self, k: tuple[object, ...], fut: asyncio.Future[Answer]) -> None:
        if self.inflight.get(k) is fut:
            del self.inflight[k]

    async def _resolve(self, key: Key) -> Answer:
        k = key.cache_key
        generation = self.generation
        config = self.config
        stamp = self.config_stamp
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(
                self.executor,
                self.resolver.resolve,
                config,
                generation,
                key,
                self.cache.get(k),
                stamp,
            )
        except RuntimeError as e:  # the executor was shut down
            return Answer.fail(f"nsprov: shutting down ({e})")
        for level, event, fields in outcome.logs:
            self.log(level, event, **fields)
        answer = outcome.answer
        if outcome.how == "hit":
            self.stats["hits"] += 1
        else:
            self.stats["misses"] += 1
        if answer.kind == "fail":
            self.stats["failures"] += 1
        if outcome.entry is not None and generation == self.generation:
            self._store(k, outcome.entry)
        elif outcome.how == "miss":
            self.cache.pop(k, None)
        if outcome.make_dirs is not None:
            (uid, gid, groups), paths = outcome.make_dirs
            problem = await self.dirs.ensure(uid, gid, groups, paths)
            if problem is not None:
                self.log("warning", "index-dirs", user=key.user, error=problem)
        return attrs.evolve(answer, how=outcome.how)

    def _log_lookup(self, key: Key, answer: Answer, received: float) -> None:
        """The lookup line, once the reply is written: ``ms`` is the whole time since the request was read.

        A computed answer is logged at info; a cache hit, and a user nsprov does not
        serve (unknown, uid 0, declined: the line says why), at debug.
        """
        self.log(
            "info" if answer.how == "miss" and answer.kind != "not-found" else "debug",
            "lookup",
            user=key.user,
            home=key.home,
            result=answer.kind,
            error=answer.error if answer.kind == "not-found" else None,
            cache=answer.how or None,
            namespaces=answer.fits,
            size=len(answer.value) if answer.kind == "found" else None,
            ms=f"{(self.clock() - received) * 1000:.2f}",
        )

    def _store(self, k: tuple[object, ...], entry: Entry) -> None:
        self.cache.pop(k, None)
        while len(self.cache) >= self.options.cache_size > 0:
            del self.cache[next(iter(self.cache))]
        if self.options.cache_size > 0:
            self.cache[k] = entry

    # -- connections

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._ids += 1
        cid = self._ids
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - asyncio runs callbacks in tasks
            return
        if len(self.connections) >= self.options.max_connections and not self._evict():
            now = self.clock()
            if now - self._refused_at > 1:
                self._refused_at = now
                self.log("warning", "too-many-connections", limit=self.options.max_connections)
            writer.close()
            return
        self.connections[cid] = task
        self.idle_since[cid] = self.clock()
        sock = writer.get_extra_info("socket")
        cred = peer_credentials(sock) if sock is not None else None
        if cred is not None:
            pid, uid, gid = cred
            if uid not in self.peers:
                self.peers.add(uid)
                self.log("info", "peer", uid=uid, gid=gid, pid=pid, user=_user_name(uid))
            self.log("debug", "connect", conn=cid, pid=pid, uid=uid)
        try:
            first = await self._read(cid, reader)
            protocol = detect(first) if first else None
            if first and protocol is None:
                self.log(
                    "warning",
                    "protocol-error",
                    conn=cid,
                    error=f"unknown protocol, first bytes {first[:16]!r}",
                )
            elif protocol == "dict":
                await self._dict_session(cid, reader, writer, first)
            elif protocol == "redis":
                await self._redis_session(cid, reader, writer, first)
        except ProtocolError as e:
            self.log("warning", "protocol-error", conn=cid, error=str(e))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self.connections.pop(cid, None)
            self.idle_since.pop(cid, None)
            self.busy.discard(cid)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _evict(self) -> bool:
        """Close the connection idle the longest, to make room for a new one; False if all are busy.

        Idle clients (a slowloris, or auth workers that keep their connection)
        never lock out a new one: only connections waiting for an answer count.
        """
        idle = [(since, cid) for cid, since in self.idle_since.items() if cid not in self.busy]
        if not idle:
            return False
        since, cid = min(idle)
        task = self.connections.pop(cid, None)
        self.idle_since.pop(cid, None)
        if task is not None:
            task.cancel()
        self.log("debug", "evicted", conn=cid, idle=f"{self.clock() - since:.1f}")
        return True

    async def _read(self, cid: int, reader: asyncio.StreamReader) -> bytes:
        """The next bytes, or b"" (EOF) once the connection has had no complete request for idle_timeout.

        The clock runs from the last completed request, not the last byte, so a
        request trickled in a byte at a time does not keep a connection open.
        """
        since = self.idle_since.get(cid, self.clock())
        remaining = since + self.options.idle_timeout - self.clock()
        try:
            return await asyncio.wait_for(reader.read(_READ_SIZE), max(remaining, 0.0))
        except TimeoutError:
            self.log("debug", "idle-timeout", conn=cid, timeout=self.options.idle_timeout)
            return b""

    async def _batches(
        self,
        cid: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        data: bytes,
        parse: Callable[[bytes, list[Awaitable[_Out]]], None],
    ) -> None:
        """Read, parse into reply awaitables, write the replies in order; repeat until EOF.

        A protocol error closes the connection after the replies to the
        requests before it.
        """
        while data:
            self.busy.add(cid)
            replies: list[Awaitable[_Out]] = []
            error: ProtocolError | None = None
            try:
                parse(data, replies)
            except ProtocolError as e:
                error = e
            for i in range(0, len(replies), self.options.max_pipeline):
                batch = [
                    asyncio.ensure_future(r) for r in replies[i : i + self.options.max_pipeline]
                ]
                written = []
                for fut in batch:
                    data, after = await fut
                    writer.write(data)
                    if after is not None:
                        written.append(after)
                await writer.drain()
                for after in written:
                    after()
            if error is not None:
                raise error
            if replies:
                self.idle_since[cid] = self.clock()
            self.busy.discard(cid)
            if self._stopping is not None and self._stopping.is_set():
                return
            data = await self._read(cid, reader)

    async def _dict_session(
        self, cid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes
    ) -> None:
        lines = LineBuffer(self.options.max_line)
        state = {"hello": False, "ignored": False}

        def parse(data: bytes, out: list[Awaitable[_Out]]) -> None:
            for line in lines.feed(data):
                req = parse_dict_line(line, hello_seen=state["hello"])
                if isinstance(req, Hello):
                    state["hello"] = True
                    self.log(
                        "debug",
                        "hello",
                        conn=cid,
                        minor=req.minor,
                        dict=req.dict_name.decode("utf-8", "replace"),
                    )
                elif isinstance(req, Lookup):
                    out.append(self._dict_lookup(req, self.clock()))
                elif isinstance(req, Iterate):
                    out.append(_ready(dict_fail("nsprov: iteration is not supported")))
                elif isinstance(req, Commit):
                    out.append(
                        _ready(
                            dict_commit_fail(
                                req.transaction, "nsprov: read-only dict", async_=req.async_
                            )
                        )
                    )
                elif isinstance(req, NoReply) and not state["ignored"]:
                    state["ignored"] = True
                    self.log("warning", "write-ignored", conn=cid, command=req.command)

        await self._batches(cid, reader, writer, first, parse)

    async def _dict_lookup(self, req: Lookup, received: float) -> _Out:
        key = _userdb_key(req.key)
        if key is None:
            self.log("debug", "unknown-key", key=req.key.decode("utf-8", "backslashreplace"))
            return dict_not_found(), None
        if req.user and req.user.decode("utf-8", "replace") != key.user:
            self.log(
                "warning",
                "user-mismatch",
                key_user=key.user,
                user=req.user.decode("utf-8", "replace"),
            )
            return dict_not_found(), None
        answer = await self.lookup(key)
        after = functools.partial(self._log_lookup, key, answer, received)
        if answer.kind == "found":
            return dict_ok(answer.value), after
        if answer.kind == "not-found":
            return dict_not_found(), after
        return dict_fail(answer.error), after

    async def _redis_session(
        self, cid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes
    ) -> None:
        parser = RespParser(max_bulk=self.options.max_line)

        def parse(data: bytes, out: list[Awaitable[_Out]]) -> None:
            for args in parser.feed(data):
                name = args[0].upper()
                if name == b"GET" and len(args) == 2:
                    out.append(self._redis_get(args[1], self.clock()))
                elif name in {b"AUTH", b"SELECT"}:
                    out.append(_ready(resp_simple("OK")))
                elif name == b"PING":
                    out.append(_ready(resp_simple("PONG")))
                else:
                    out.append(_ready(resp_error(f"nsprov: unsupported command {name[:20]!r}")))

        await self._batches(cid, reader, writer, first, parse)

    async def _redis_get(self, raw: bytes, received: float) -> _Out:
        key = _userdb_key(raw)
        if key is None:
            self.log("debug", "unknown-key", key=raw.decode("utf-8", "backslashreplace"))
            return resp_nil(), None
        answer = await self.lookup(key)
        after = functools.partial(self._log_lookup, key, answer, received)
        if answer.kind == "found":
            return resp_bulk(answer.value), after
        if answer.kind == "not-found":
            return resp_nil(), after
        return resp_error(answer.error), after


async def _ready(data: bytes) -> _Out:
    return data, None


def _warm_imports() -> None:
    """Import what the first lookup would, so that its time is the scan's alone."""
    from . import _engine, _env, _identity, _scan  # noqa: F401, PLC0415


def _userdb_key(raw: bytes) -> Key | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return parse_postlogin_key(text) or parse_userdb_key(text)


def _user_name(uid: int) -> str | None:
    import pwd  # noqa: PLC0415

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


# --- Dovecot configuration ----------------------------------------------------------


def dovecot_userdb_conf(*, dict_file: str = DEFAULT_DICT_FILE) -> str:
    """The ``userdb`` blocks for Dovecot 2.3 (``examples/serve/dovecot-2.3-userdb-dict.conf``)."""
    return f"""\
# nsprov serve: shared namespaces from a resident service, as a second userdb (Dovecot 2.3).
#
# Replace the userdb blocks of conf.d/auth-system.conf.ext (or dovecot.conf) with these.
# The first userdb gives uid, gid and home; "continue-ok" lets the dict userdb run next and
# keeps the login successful whatever it answers.  Fields from both are merged.

userdb {{
  driver = passwd
  result_success = continue-ok
}}

userdb {{
  driver = dict
  args = {dict_file}
  # Fail open: a stopped, hung or failing nsprov serve adds no shared namespaces,
  # and the login goes on with the first userdb's fields (both are Dovecot's defaults).
  result_failure = continue
  result_internalfail = continue
}}
"""


def dovecot_dict_file(
    *,
    socket_path: str = DEFAULT_SOCKET,
    client: Literal["redis", "proxy"] = "redis",
    deadline: float = DEFAULT_DEADLINE,
) -> str:
    """The dict userdb's args file (``examples/serve/nsprov-userdb.conf.ext``)."""
    if client == "redis":
        if ":" in socket_path:
            raise NsprovError(
                f"the redis dict URI is split on ':'; socket path {socket_path!r} cannot contain one"
            )
        timeout = round((deadline + 1.0) * 1000)
        uri = f"redis:path={socket_path}:timeout_msecs={timeout}"
        why = (
            "# The redis client gives up after timeout_msecs (nsprov's --deadline + 1 s), so a hung\n"
            "# nsprov serve delays logins by at most that.  (uri = proxy:<socket>:nsprov works too,\n"
            "# but its timeout is a fixed 30 s.)"
        )
    else:
        uri = f"proxy:{socket_path}:nsprov"
        why = (
            "# The dict-proxy client waits a fixed 30 s for a hung server (then retries once);\n"
            "# uri = redis:path=<socket>:timeout_msecs=<n> bounds that."
        )
    return f"""\
# nsprov serve: the dict userdb's settings (Dovecot 2.3).
{why}
uri = {uri}
iterate_disable = yes
# %{{userdb:home}} is the first userdb's home: per-user index directories follow it.
key userdb {{
  key = userdb/%u/%{{userdb:home}}
  format = json
}}
userdb_objects = userdb
"""


def dovecot_config(
    *,
    dialect: str = "2.3",
    socket_path: str = DEFAULT_SOCKET,
    client: Literal["redis", "proxy"] = "redis",
    deadline: float = DEFAULT_DEADLINE,
    dict_file: str = DEFAULT_DICT_FILE,
) -> str:
    """What ``--print-dovecot-config`` prints: both files, each under a header naming it."""
    if dialect == "2.4":
        raise NsprovError(
            "Dovecot 2.4 has no userdb dict driver (removed before 2.4.0, core commit "
            "27ca066716 'auth: Drop passdb/userdb dict'); use 'nsprov post-login' on 2.4"
        )
    return (
        "# ---- dovecot.conf or conf.d/auth-system.conf.ext ----\n"
        + dovecot_userdb_conf(dict_file=dict_file)
        + f"\n# ---- {dict_file} ----\n"
        + dovecot_dict_file(socket_path=socket_path, client=client, deadline=deadline)
    )


# --- command line -------------------------------------------------------------------


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an octal mode, got {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"mode {text} out of range")
    return mode


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return convert


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def serve_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nsprov serve``."""
    p = argparse.ArgumentParser(
        prog="nsprov serve",
        description="Resident Dovecot userdb service (dict on 2.3, Lua on 2.3 and 2.4): shared namespaces without a post-login process.",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help="TOML config path")
    p.add_argument("--socket", help=f"UNIX socket path ([serve] socket, {DEFAULT_SOCKET})")
    p.add_argument(
        "--socket-mode", type=_mode, help="octal socket mode ([serve] socket_mode, 0600)"
    )
    p.add_argument("--socket-group", help="group of the socket (default: the server's)")
    p.add_argument("--deadline", type=_positive(float), help="seconds per lookup")
    p.add_argument("--cache-ttl", type=_non_negative, help="seconds; 0 disables the cache")
    p.add_argument(
        "--cache-size", type=_positive(int), default=DEFAULT_CACHE_SIZE, help="cached users at most"
    )
    p.add_argument("--reply-budget", type=_positive(int), help="bytes of JSON per reply")
    p.add_argument("--max-connections", type=_positive(int))
    p.add_argument(
        "--idle-timeout",
        type=_positive(float),
        help=f"seconds without a request before a connection is closed ({DEFAULT_IDLE_TIMEOUT:g})",
    )
    p.add_argument(
        "--max-line", type=_positive(int), default=DEFAULT_MAX_LINE, help="bytes per request line"
    )
    p.add_argument("--workers", type=_positive(int), default=DEFAULT_WORKERS, help="scan threads")
    p.add_argument("--log-level", choices=tuple(_LEVELS), default="info")
    p.add_argument(
        "--print-dovecot-config", action="store_true", help="print the Dovecot wiring and exit"
    )
    p.add_argument(
        "--dialect", choices=("2.3", "2.4"), default="2.3", help="Dovecot version to print for"
    )
    p.add_argument(
        "--client", choices=("redis", "proxy"), default="redis", help="Dovecot dict client to print"
    )
    p.add_argument(
        "--dict-file", default=DEFAULT_DICT_FILE, help="path of the dict userdb's args file"
    )
    p.add_argument("--dir-helper", action="store_true", help=argparse.SUPPRESS)
    return p


def options_from_args(
    args: argparse.Namespace, defaults: ServeConfig | None = None
) -> ServeOptions:
    """:class:`ServeOptions` from parsed arguments; *defaults* (``[serve]``) fill the gaps."""
    from ._config import ServeConfig  # noqa: PLC0415

    d = defaults or ServeConfig()

    def pick(given: Any, configured: Any, builtin: Any) -> Any:
        return given if given is not None else configured if configured is not None else builtin

    budget = pick(args.reply_budget, d.reply_budget, None)
    if budget is not None and budget >= AUTH_REPLY_LIMIT:
        raise NsprovError(
            f"--reply-budget={budget}: Dovecot refuses userdb replies over {AUTH_REPLY_LIMIT} bytes"
        )
    return ServeOptions(
        config_path=args.config,
        socket_path=pick(args.socket, d.socket, DEFAULT_SOCKET),
        socket_mode=pick(args.socket_mode, d.socket_mode, DEFAULT_SOCKET_MODE),
        socket_group=pick(args.socket_group, d.socket_group, None),
        deadline=pick(args.deadline, d.deadline, DEFAULT_DEADLINE),
        cache_ttl=pick(args.cache_ttl, d.cache_ttl, DEFAULT_CACHE_TTL),
        cache_size=args.cache_size,
        reply_budget=budget,
        max_connections=pick(args.max_connections, d.max_connections, DEFAULT_MAX_CONNECTIONS),
        idle_timeout=pick(args.idle_timeout, d.idle_timeout, DEFAULT_IDLE_TIMEOUT),
        max_line=args.max_line,
        workers=args.workers,
        log_level=args.log_level,
    )


async def run(
    options: ServeOptions, *, log: Log | None = None, ready: Callable[[Server], None] | None = None
) -> int:
    """Load the config, serve until SIGTERM/SIGINT, reload on SIGHUP; the exit status."""
    from ._config import load_config  # noqa: PLC0415

    log = log or Log(options.log_level)
    try:
        config, stamp = load_stamped(load_config, options.config_path)
    except NsprovError as e:
        log("error", "config-error", config=options.config_path, error=str(e))
        return 1
    server = Server(config, options, log=log, load=load_config, stamp=stamp)
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()
    started = False
    hup_early = False

    def on_hup() -> None:
        nonlocal hup_early
        if not started:
            hup_early = True  # during start-up: reload once the socket is up
            return
        task = asyncio.ensure_future(server.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    # Before the socket exists (and before the start line), so that a SIGHUP or SIGTERM
    # sent as soon as the server looks ready never meets the default action.
    loop.add_signal_handler(signal.SIGTERM, server.request_stop)
    loop.add_signal_handler(signal.SIGINT, server.request_stop)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await server.start()
    except (NsprovError, OSError) as e:
        log("error", "socket-error", socket=options.socket_path, error=str(e))
        server.executor.shutdown(wait=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        return 1
    started = True
    if hup_early:
        on_hup()
    if ready is not None:
        ready(server)
    try:
        await server.serve()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    return 0


def main(argv: Sequence[str]) -> int:
    """``nsprov serve ARGS``: the exit status (0 ok, 1 error, 2 usage)."""
    parser = serve_parser()
    args = parser.parse_args(list(argv))
    if args.dir_helper:
        return dir_helper()
    try:
        if args.print_dovecot_config:
            sys.stdout.write(
                dovecot_config(
                    dialect=args.dialect,
                    socket_path=args.socket or DEFAULT_SOCKET,
                    client=args.client,
                    deadline=args.deadline or DEFAULT_DEADLINE,
                    dict_file=args.dict_file,
                )
            )
            return 0
        options = options_from_args(args, _serve_defaults(args.config))
    except NsprovError as e:
        print(f"nsprov serve: error: {e}", file=sys.stderr)
        return 1
    status = asyncio.run(run(options))
    _exit_if_threads_hang(status)
    return status


def _serve_defaults(path: str) -> ServeConfig | None:
    """``[serve]`` of the config at *path*, or None when it cannot be read (``run`` reports that)."""
    from ._config import load_config  # noqa: PLC0415

    try:
        return load_config(path).serve
    except NsprovError:
        return None


def _exit_if_threads_hang(status: int, grace: float = 1.0) -> None:
    """Exit at once if a scan thread is stuck in the kernel (interpreter exit would wait for it)."""
    import threading  # noqa: PLC0415

    end = time.monotonic() + grace
    for t in threading.enumerate():
        if t.name.startswith(("nsprov-scan", "nsprov-reload")):
            t.join(max(0.0, end - time.monotonic()))
            if t.is_alive():
                sys.stderr.flush()
                os._exit(status)


if __name__ == "__main__":  # python -m nsprov._serve --dir-helper
    raise SystemExit(main(sys.argv[1:]))
