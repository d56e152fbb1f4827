"""The Dovecot wiring ``nsprov serve --print-dovecot-config`` prints (``examples/serve/``).

Two zero-fork routes: the dict userdb (Dovecot 2.3 only; ``--client=redis`` or
``proxy``) and the Lua userdb (2.3 and 2.4; ``--client=lua``), which runs the
shipped ``nsprov/lua/nsprov-userdb.lua``.  Each client's timeout is derived from
serve's per-lookup deadline so that the two nest (:func:`client_timeout`).
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Literal

from .._reply import LUA_MAX_REPLY
from ..exceptions import NsprovError
from .options import DEFAULT_DEADLINE, DEFAULT_SOCKET

DEFAULT_DICT_FILE = "/etc/dovecot/nsprov-userdb.conf.ext"
#: Where the printer puts the Lua script: a configuration file (on 2.3 its DEFAULTS are the
#: only settings), never a path inside site-packages, which changes with the Python version.
DEFAULT_LUA_FILE = "/etc/dovecot/nsprov-userdb.lua"
#: The Lua script's own default timeout (seconds), its ``DEFAULTS.timeout``.
DEFAULT_LUA_TIMEOUT = 1.0
#: How much longer than serve's deadline each client waits: the answer (or serve's own
#: failure) must reach the client before the client gives up.
LUA_MARGIN = 0.2
REDIS_MARGIN = 1.0

Client = Literal["redis", "proxy", "lua"]


def client_timeout(client: str, deadline: float = DEFAULT_DEADLINE) -> float:
    """Seconds *client* waits for serve when serve's per-lookup deadline is *deadline*.

    The Lua script waits its default 1 s unless the deadline needs more; the redis
    dict client waits the deadline + 1 s; the proxy client's 30 s is Dovecot's own.
    """
    if client == "lua":
        return max(DEFAULT_LUA_TIMEOUT, round(deadline + LUA_MARGIN, 3))
    if client == "redis":
        return deadline + REDIS_MARGIN
    return 30.0


def lua_script() -> str:
    """The text of the shipped Lua userdb script."""
    return (files("nsprov") / "lua" / "nsprov-userdb.lua").read_text(encoding="utf-8")


_DEFAULTS_RE = re.compile(r"^local DEFAULTS = \{\n.*?^\}\n", re.MULTILINE | re.DOTALL)


def lua_defaults_block(text: str) -> str | None:
    """The ``local DEFAULTS = { … }`` table of a script's *text*, or None."""
    m = _DEFAULTS_RE.search(text)
    return m.group(0) if m else None


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _escape_repl(text: str) -> str:
    return text.replace("\\", "\\\\")


def lua_script_with(*, socket_path: str, timeout: float, max_reply: int) -> str:
    """The shipped script with its DEFAULTS set to these values (Dovecot 2.3's only settings)."""
    text = lua_script()
    block = lua_defaults_block(text)
    if block is None:  # pragma: no cover - the shipped script has one
        raise AssertionError("the shipped Lua script has no DEFAULTS table")
    values = {
        "socket": _lua_string(socket_path),
        "timeout": f"{timeout:g}",
        "max_reply": str(max_reply),
    }
    new = block
    for key, literal in values.items():
        new = re.sub(
            rf"^(  {key} = ).*?,$", rf"\g<1>{_escape_repl(literal)},", new, flags=re.MULTILINE
        )
    return text.replace(block, new)


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
        timeout = round(client_timeout("redis", deadline) * 1000)
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


def lua_userdb_conf(
    *,
    dialect: str,
    lua_file: str = DEFAULT_LUA_FILE,
    socket_path: str = DEFAULT_SOCKET,
    timeout: float = DEFAULT_LUA_TIMEOUT,
    max_reply: int = LUA_MAX_REPLY,
) -> str:
    """The ``userdb`` blocks of the Lua route for *dialect* (``examples/serve/dovecot-*-userdb-lua.conf``)."""
    head = f"""\
# nsprov serve: shared namespaces from a resident service, through a Lua userdb (Dovecot {dialect}).
#
# Replace the userdb blocks of conf.d/auth-system.conf.ext (or dovecot.conf) with these.
# The first userdb gives uid, gid and home; "continue-ok" lets the Lua userdb run next and
# keeps the login successful whatever it answers.  Fields from both are merged.
# Needs Dovecot's Lua auth module and lua-socket (Debian: apt install dovecot-auth-lua lua-socket).
# Fail open: a stopped, hung or failing nsprov serve adds no shared namespaces, after at most
# the script's timeout; "result_failure = continue" keeps the first userdb's fields.
# The lookup runs in the auth workers (as root, one login each): keep them on.
# nsprov's answer is never put in Dovecot's auth cache: serve has its own, invalidated cache.
# nsprov.toml needs [dovecot] version = "{dialect}": serve answers in that version's dialect.
"""
    if dialect == "2.3":
        return (
            head
            + f"""\
# Dovecot 2.3 passes no settings to a Lua userdb: socket, timeout ({timeout:g} s) and reply
# cap ({max_reply} bytes) are the DEFAULTS at the top of {lua_file}.
# The empty cache_key= turns off the Lua userdb's default cache key (%u).

userdb {{
  driver = passwd
  result_success = continue-ok
}}

userdb {{
  driver = lua
  args = file={lua_file} blocking=yes cache_key=
  result_failure = continue
  result_internalfail = continue
}}
"""
        )
    return (
        head
        + f"""\
# A 2.4 Lua userdb has no cache key unless the script defines one (this one does not).

userdb passwd {{
  result_success = continue-ok
}}

userdb lua {{
  lua_file = {lua_file}
  use_worker = yes
  result_failure = continue
  result_internalfail = continue
  lua_settings {{
    socket = {socket_path}
    timeout = {timeout:g}
    max_reply = {max_reply}
  }}
}}
"""
    )


def dovecot_config(
    *,
    dialect: str = "2.3",
    socket_path: str = DEFAULT_SOCKET,
    client: Client | None = None,
    deadline: float = DEFAULT_DEADLINE,
    dict_file: str = DEFAULT_DICT_FILE,
    lua_file: str = DEFAULT_LUA_FILE,
    max_reply: int = LUA_MAX_REPLY,
) -> str:
    """What ``--print-dovecot-config`` prints: both files, each under a header naming it.

    *client* None: ``lua`` for 2.4 (its only route), ``redis`` for 2.3.
    """
    if client is None:
        client = "lua" if dialect == "2.4" else "redis"
    if client == "lua":
        if not socket_path.startswith("/"):
            raise NsprovError(f"the Lua script needs an absolute socket path, got {socket_path!r}")
        timeout = client_timeout("lua", deadline)
        return (
            "# ---- dovecot.conf or conf.d/auth-system.conf.ext ----\n"
            + lua_userdb_conf(
                dialect=dialect,
                lua_file=lua_file,
                socket_path=socket_path,
                timeout=timeout,
                max_reply=max_reply,
            )
            + f"\n# ---- {lua_file} ----\n"
            + lua_script_with(socket_path=socket_path, timeout=timeout, max_reply=max_reply)
        )
    if dialect == "2.4":
        raise NsprovError(
            "Dovecot 2.4 has no userdb dict driver (removed before 2.4.0, core commit "
            "27ca066716 'auth: Drop passdb/userdb dict'); use --client=lua on 2.4 "
            "(or 'nsprov post-login')"
        )
    return (
        "# ---- dovecot.conf or conf.d/auth-system.conf.ext ----\n"
        + dovecot_userdb_conf(dict_file=dict_file)
        + f"\n# ---- {dict_file} ----\n"
        + dovecot_dict_file(socket_path=socket_path, client=client, deadline=deadline)
    )
