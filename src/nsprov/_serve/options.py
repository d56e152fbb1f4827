"""What ``nsprov serve`` runs with: its built-in defaults and :class:`ServeOptions`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .._defaults import DEFAULT_CONFIG_PATH
from .codec import DEFAULT_MAX_LINE

if TYPE_CHECKING:
    from .log import Level

DEFAULT_CONFIG = DEFAULT_CONFIG_PATH
DEFAULT_SOCKET = "/run/nsprov/userdb.sock"
DEFAULT_SOCKET_MODE = 0o600
DEFAULT_CACHE_TTL = 5.0
DEFAULT_CACHE_SIZE = 10_000
#: Seconds per lookup: shorter than every client's timeout (the Lua script's 1 s, the redis
#: dict client's deadline + 1 s), so that a slow scan's answer, or serve's own failure,
#: reaches the client before it gives up (docs/serve.md, "Timeouts").
DEFAULT_DEADLINE = 0.8
DEFAULT_MAX_CONNECTIONS = 256
#: Seconds a connection may go without a complete request before it is closed.
DEFAULT_IDLE_TIMEOUT = 5.0
#: Connections the kernel queues before the server accepts them (bind_socket listens with as many).
LISTEN_BACKLOG = 512
DEFAULT_MAX_PIPELINE = 64
DEFAULT_WORKERS = 4


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
