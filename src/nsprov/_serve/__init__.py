"""``nsprov serve``: shared namespaces for a Dovecot userdb (dict on 2.3, Lua on 2.3 and 2.4).

One resident server answers Dovecot's userdb lookups (and ``nsprov post-login
--serve``) from the same core as post-login.  The operator's manual is
``docs/serve.md``; one concept per module here:

- :mod:`~nsprov._serve.server`: :class:`Server` (start, stop, reload, signals, connections) and :func:`run`
- :mod:`~nsprov._serve.sessions`: the dict-proxy and redis sessions, given a ``lookup`` callable
- :mod:`~nsprov._serve.resolver`: :class:`Resolver`, :class:`Answer`, :class:`Entry`, :class:`Outcome`
- :mod:`~nsprov._serve.recorder`: :class:`Recorder` and :class:`Deps`, what a scan looked at
- :mod:`~nsprov._serve.dirs`: creating index directories as the user (:func:`make_dirs_as`, :class:`DirMaker`)
- :mod:`~nsprov._serve.codec`: the sans-I/O dict-proxy and RESP codecs and the lookup keys
- :mod:`~nsprov._serve.sockets`: :func:`bind_socket`, :func:`peer_credentials`
- :mod:`~nsprov._serve.log`: :class:`Log`, one ``key=value`` line per event
- :mod:`~nsprov._serve.wiring`: the Dovecot configuration ``--print-dovecot-config`` prints
- :mod:`~nsprov._serve.options`: :class:`ServeOptions` and the built-in defaults

The reply budget is :mod:`nsprov._reply`, the NSS identity :mod:`nsprov._identity`
and the command line :mod:`nsprov._cli.serve`.  The names below stay importable
from here, each loaded when first asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._identity import (
        identify as identify,
    )
    from .._identity import (
        identify_login as identify_login,
    )
    from .._reply import (
        AUTH_REPLY_LIMIT as AUTH_REPLY_LIMIT,
    )
    from .._reply import (
        DEFAULT_REPLY_BUDGET as DEFAULT_REPLY_BUDGET,
    )
    from .._reply import (
        LUA_MAX_REPLY as LUA_MAX_REPLY,
    )
    from .._reply import (
        Reply as Reply,
    )
    from .._reply import (
        ReplyBudget as ReplyBudget,
    )
    from .._reply import (
        default_reply_budget as default_reply_budget,
    )
    from .._reply import (
        fit_reply as fit_reply,
    )
    from .._reply import (
        reply_budget as reply_budget,
    )
    from .._reply import (
        reply_fields as reply_fields,
    )
    from ..exceptions import (
        ProtocolError as ProtocolError,
    )
    from ..exceptions import (
        SocketInUseError as SocketInUseError,
    )
    from .dirs import (
        DIR_HELPER_TIMEOUT as DIR_HELPER_TIMEOUT,
    )
    from .dirs import (
        DirMaker as DirMaker,
    )
    from .dirs import (
        dir_helper as dir_helper,
    )
    from .dirs import (
        make_dirs_as as make_dirs_as,
    )
    from .log import (
        Level as Level,
    )
    from .log import (
        Log as Log,
    )
    from .options import (
        DEFAULT_CACHE_SIZE as DEFAULT_CACHE_SIZE,
    )
    from .options import (
        DEFAULT_CACHE_TTL as DEFAULT_CACHE_TTL,
    )
    from .options import (
        DEFAULT_CONFIG as DEFAULT_CONFIG,
    )
    from .options import (
        DEFAULT_DEADLINE as DEFAULT_DEADLINE,
    )
    from .options import (
        DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT,
    )
    from .options import (
        DEFAULT_MAX_CONNECTIONS as DEFAULT_MAX_CONNECTIONS,
    )
    from .options import (
        DEFAULT_MAX_PIPELINE as DEFAULT_MAX_PIPELINE,
    )
    from .options import (
        DEFAULT_SOCKET as DEFAULT_SOCKET,
    )
    from .options import (
        DEFAULT_SOCKET_MODE as DEFAULT_SOCKET_MODE,
    )
    from .options import (
        DEFAULT_WORKERS as DEFAULT_WORKERS,
    )
    from .options import (
        LISTEN_BACKLOG as LISTEN_BACKLOG,
    )
    from .options import (
        ServeOptions as ServeOptions,
    )
    from .recorder import (
        Deps as Deps,
    )
    from .recorder import (
        Recorder as Recorder,
    )
    from .resolver import (
        POSTLOGIN_BASE_ENV as POSTLOGIN_BASE_ENV,
    )
    from .resolver import (
        Answer as Answer,
    )
    from .resolver import (
        Entry as Entry,
    )
    from .resolver import (
        Key as Key,
    )
    from .resolver import (
        Outcome as Outcome,
    )
    from .resolver import (
        Resolver as Resolver,
    )
    from .resolver import (
        load_stamped as load_stamped,
    )
    from .server import (
        MAX_INFLIGHT as MAX_INFLIGHT,
    )
    from .server import (
        RELOAD_TIMEOUT as RELOAD_TIMEOUT,
    )
    from .server import (
        Server as Server,
    )
    from .server import (
        run as run,
    )
    from .sockets import (
        bind_socket as bind_socket,
    )
    from .sockets import (
        peer_credentials as peer_credentials,
    )
    from .wiring import (
        DEFAULT_DICT_FILE as DEFAULT_DICT_FILE,
    )
    from .wiring import (
        dovecot_config as dovecot_config,
    )
    from .wiring import (
        dovecot_dict_file as dovecot_dict_file,
    )
    from .wiring import (
        dovecot_userdb_conf as dovecot_userdb_conf,
    )

_WHERE = {
    **dict.fromkeys(("identify", "identify_login"), "nsprov._identity"),
    **dict.fromkeys(
        (
            "AUTH_REPLY_LIMIT",
            "DEFAULT_REPLY_BUDGET",
            "LUA_MAX_REPLY",
            "Reply",
            "ReplyBudget",
            "default_reply_budget",
            "fit_reply",
            "reply_budget",
            "reply_fields",
        ),
        "nsprov._reply",
    ),
    **dict.fromkeys(("ProtocolError", "SocketInUseError"), "nsprov.exceptions"),
    **dict.fromkeys(
        ("DIR_HELPER_TIMEOUT", "DirMaker", "dir_helper", "make_dirs_as"), "nsprov._serve.dirs"
    ),
    **dict.fromkeys(("Level", "Log"), "nsprov._serve.log"),
    **dict.fromkeys(
        (
            "DEFAULT_CACHE_SIZE",
            "DEFAULT_CACHE_TTL",
            "DEFAULT_CONFIG",
            "DEFAULT_DEADLINE",
            "DEFAULT_IDLE_TIMEOUT",
            "DEFAULT_MAX_CONNECTIONS",
            "DEFAULT_MAX_PIPELINE",
            "DEFAULT_SOCKET",
            "DEFAULT_SOCKET_MODE",
            "DEFAULT_WORKERS",
            "LISTEN_BACKLOG",
            "ServeOptions",
        ),
        "nsprov._serve.options",
    ),
    **dict.fromkeys(("Deps", "Recorder"), "nsprov._serve.recorder"),
    **dict.fromkeys(
        ("POSTLOGIN_BASE_ENV", "Answer", "Entry", "Key", "Outcome", "Resolver", "load_stamped"),
        "nsprov._serve.resolver",
    ),
    **dict.fromkeys(("MAX_INFLIGHT", "RELOAD_TIMEOUT", "Server", "run"), "nsprov._serve.server"),
    **dict.fromkeys(("bind_socket", "peer_credentials"), "nsprov._serve.sockets"),
    **dict.fromkeys(
        ("DEFAULT_DICT_FILE", "dovecot_config", "dovecot_dict_file", "dovecot_userdb_conf"),
        "nsprov._serve.wiring",
    ),
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(_WHERE)
