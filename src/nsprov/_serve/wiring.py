"""The Dovecot 2.3 wiring ``nsprov serve --print-dovecot-config`` prints (``examples/serve/``)."""

from __future__ import annotations

from typing import Literal

from ..exceptions import NsprovError
from .options import DEFAULT_DEADLINE, DEFAULT_SOCKET

DEFAULT_DICT_FILE = "/etc/dovecot/nsprov-userdb.conf.ext"


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
