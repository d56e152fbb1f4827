"""The IMAP client: one timed login over a raw socket, and many at once."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

import attrs
from tests.live.harness import HOST, User, parse_namespaces, quote

from .settings import CLIENT_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


@attrs.frozen(kw_only=True)
class Sample:
    """One login: its timings and what came back."""

    ok: bool
    connect: float  # seconds: TCP connect and the greeting
    login: float  # seconds: LOGIN sent -> tagged reply (or the connection closed)
    shared: int = 0  # shared namespaces in the NAMESPACE reply
    alert: bool = False  # an untagged [ALERT] arrived with the LOGIN reply
    error: str = ""


def until_tagged(reader: Iterable[bytes], tag: bytes) -> tuple[list[bytes], bytes | None]:
    """Lines up to and including the tagged reply; None when the connection closed first."""
    lines: list[bytes] = []
    for line in reader:
        if line.startswith(tag + b" "):
            return lines, line
        lines.append(line)
    return lines, None


def imap_login(
    port: int, user: User, *, namespace: bool = True, timeout: float = CLIENT_TIMEOUT
) -> Sample:
    """Connect, read the greeting, time LOGIN; then NAMESPACE (untimed) and LOGOUT."""
    started = time.perf_counter()
    connect = login = 0.0
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = sock.makefile("rb")
            greeting = reader.readline()
            sent = time.perf_counter()
            connect = sent - started
            if not greeting.startswith(b"* OK"):
                return Sample(ok=False, connect=connect, login=0.0, error="no greeting")
            sock.sendall(f"a LOGIN {quote(user.name)} {quote(user.password)}\r\n".encode())
            untagged, tagged = until_tagged(reader, b"a")
            login = time.perf_counter() - sent
            alert = any(b"[ALERT]" in line for line in untagged)
            if tagged is None:
                return Sample(ok=False, connect=connect, login=login, error="connection closed")
            if not tagged.startswith(b"a OK"):
                text = tagged.decode(errors="replace").strip()
                return Sample(ok=False, connect=connect, login=login, error=text)
            shared = 0
            if namespace:
                sock.sendall(b"b NAMESPACE\r\n")
                lines, done = until_tagged(reader, b"b")
                if done is None or not done.startswith(b"b OK"):
                    return Sample(ok=False, connect=connect, login=login, error="NAMESPACE failed")
                for line in lines:
                    if line.startswith(b"* NAMESPACE "):
                        parsed = parse_namespaces([line[len(b"* NAMESPACE ") :].rstrip(b"\r\n")])
                        shared = len(parsed["shared"])
            sock.sendall(b"c LOGOUT\r\n")
            for _ in reader:  # until the server closes: its imap process is done
                pass
            return Sample(ok=True, connect=connect, login=login, shared=shared, alert=alert)
    except (OSError, ValueError) as e:
        elapsed = time.perf_counter() - started - connect
        return Sample(ok=False, connect=connect, login=login or elapsed, error=str(e) or repr(e))


def throughput(
    port: int, users: Sequence[User], *, clients: int, seconds: float
) -> tuple[int, int, float, list[float]]:
    """(ok, failed, elapsed, LOGIN times) of ``clients`` threads logging in for ``seconds``."""
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    results: list[Sample] = []

    def client(i: int) -> None:
        user = users[i % len(users)]
        while time.monotonic() < stop:
            sample = imap_login(port, user, namespace=False, timeout=30)
            with lock:
                results.append(sample)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    ok = [s.login for s in results if s.ok]
    return len(ok), len(results) - len(ok), elapsed, ok
