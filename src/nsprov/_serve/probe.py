"""Asking a running ``nsprov serve`` from outside: ``nsprov serve --status`` and ``nsprov check``.

One redis request per connection, with a timeout for the whole exchange, as
Dovecot's clients send them: ``INFO`` (the server's status) or ``GET`` of a
userdb key (the probe lookup ``nsprov check`` makes).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from ..exceptions import NsprovError

#: The key of the probe lookup: a user name no system has (the server answers nil, logged at debug).
PROBE_KEY = "userdb/nsprov-check-probe"
#: Bytes of one reply at most.
MAX_REPLY = 1 << 16


class ProbeError(NsprovError):
    """The server could not be asked, or answered something else than redis."""


def _command(*args: bytes) -> bytes:
    out = b"*%d\r\n" % len(args)
    for arg in args:
        out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    return out


def redis_request(path: str, *args: bytes, timeout: float = 1.0) -> tuple[str, bytes | None]:
    """Send one command to the socket at *path*; the reply's kind (``+ - $``) and value.

    A nil bulk string is ``("$", None)``.  Raises :class:`ProbeError` when the
    server cannot be reached, does not answer within *timeout* seconds, or
    answers something else.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:

        def left() -> float:
            t = deadline - time.monotonic()
            if t <= 0:
                raise ProbeError(f"no answer from {path} within {timeout:g} s")
            return t

        try:
            sock.settimeout(left())
            sock.connect(path)
            sock.settimeout(left())
            sock.sendall(_command(*args))
            data = b""
            while True:
                kind, value, done = _parse(data)
                if done:
                    return kind, value
                if len(data) > MAX_REPLY:
                    raise ProbeError(f"{path} answered more than {MAX_REPLY} bytes")
                sock.settimeout(left())
                chunk = sock.recv(65536)
                if not chunk:
                    raise ProbeError(f"{path} closed the connection without a complete answer")
                data += chunk
        except TimeoutError:
            raise ProbeError(f"no answer from {path} within {timeout:g} s") from None
        except OSError as e:
            raise ProbeError(f"cannot ask {path}: {e.strerror or e}") from None


def _parse(data: bytes) -> tuple[str, bytes | None, bool]:
    """One RESP reply from *data*: kind, value, whether it is complete."""
    head, sep, rest = data.partition(b"\r\n")
    if not sep:
        if len(head) > 32 or (head and head[:1] not in b"+-$"):
            raise ProbeError(f"not a redis reply: {head[:32]!r}")
        return "", None, False
    kind = head[:1].decode("ascii", "replace")
    if kind in "+-" and kind:
        return kind, head[1:], True
    if kind != "$":
        raise ProbeError(f"not a redis reply: {head[:32]!r}")
    try:
        size = int(head[1:])
    except ValueError:
        raise ProbeError(f"not a redis reply: {head[:32]!r}") from None
    if size < 0:
        return "$", None, True
    if len(rest) < size + 2:
        return "", None, False
    return "$", rest[:size], True


def server_status(path: str, *, timeout: float = 1.0) -> dict[str, Any]:
    """The status of the server on *path* (its ``INFO`` answer), or :class:`ProbeError`."""
    kind, value = redis_request(path, b"INFO", timeout=timeout)
    if kind != "$" or value is None:
        text = (value or b"").decode("utf-8", "replace")
        raise ProbeError(f"{path} does not answer INFO like nsprov serve: {kind}{text}")
    try:
        status = json.loads(value)
    except ValueError:
        raise ProbeError(f"{path} answered INFO with no JSON object") from None
    if not isinstance(status, dict) or status.get("nsprov") != "serve":
        raise ProbeError(f"{path} answered INFO, but not as nsprov serve")
    return status


def probe_lookup(path: str, *, timeout: float = 1.0) -> float:
    """Seconds a probe lookup (:data:`PROBE_KEY`) took on *path*; :class:`ProbeError` if it failed."""
    started = time.monotonic()
    kind, value = redis_request(path, b"GET", PROBE_KEY.encode(), timeout=timeout)
    if kind == "-":
        text = (value or b"").decode("utf-8", "replace")
        raise ProbeError(f"{path} failed the probe lookup: {text}")
    if kind != "$":
        raise ProbeError(f"{path} answered the probe lookup with {kind!r}, not a bulk string")
    return time.monotonic() - started


def format_status(status: dict[str, Any]) -> str:
    """The status as ``key: value`` lines, for people."""
    return "".join(f"{key}: {value}\n" for key, value in status.items())
