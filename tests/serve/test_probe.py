"""Tests for asking a running server from outside: redis ``INFO``, the probe lookup, ``--status``."""

from __future__ import annotations

import json
import socket
import threading
from typing import TYPE_CHECKING

import pytest

from nsprov._cli.serve import main
from nsprov._serve.probe import (
    ProbeError,
    _parse,
    probe_lookup,
    redis_request,
    server_status,
)

from .helpers import connect, make_config, read_lines, running

if TYPE_CHECKING:
    from pathlib import Path


def test_info_over_the_socket(spool: Path, base: Path) -> None:
    """INFO answers one JSON object of health, settings and counters, with no user's data."""
    with running(make_config(spool), base, deadline=0.7) as (server, _), connect(server) as c:
        c.sendall(b"*2\r\n$3\r\nGET\r\n$11\r\nuserdb/nemo\r\n*1\r\n$4\r\nINFO\r\n")
        nil, head, value = read_lines(c, 3, b"\r\n")
        body = json.loads(value)

    assert (b"$-1", len(value)) == (nil, int(head[1:]))
    assert {"nsprov": "serve", "dialect": "2.3", "deadline": 0.7, "reply_budget": 7000} == {
        k: body[k] for k in ("nsprov", "dialect", "deadline", "reply_budget")
    }
    assert (1, False) == (body["lookups"], body["config_reload_failed"])
    assert "nemo" not in json.dumps(body)


def test_status_and_probe(spool: Path, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """server_status, probe_lookup and ``nsprov serve --status`` against a running server."""
    with running(make_config(spool), base) as (server, _):
        path = server.options.socket_path
        status = server_status(path)
        took = probe_lookup(path)
        code = main(["--status", f"--socket={path}"])
    out = capsys.readouterr().out

    assert ("serve", True) == (status["nsprov"], 0 <= took < 1)
    assert 0 == code
    assert f"socket: {path}\n" in out
    assert "lookups: " in out
    assert "probe_ms: " in out


def test_status_no_server(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No server on the socket: one error line, exit 1."""
    code = main(["--status", f"--socket={base / 'none.sock'}"])

    assert 1 == code
    assert "cannot ask" in capsys.readouterr().err


def _fake(path: Path, answer: bytes | None) -> threading.Thread:
    """A one-shot server that answers *answer* (None: never) to the first request."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(1)

    def run() -> None:
        conn, _ = sock.accept()
        with conn, sock:
            conn.recv(4096)
            if answer is None:
                conn.recv(4096)  # until the client gives up
            else:
                conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("answer", "call", "message"),
    [
        (None, "status", "no answer"),
        (b"HTTP/1.1 200 OK\r\n", "status", "not a redis reply"),
        (b"-ERR nsprov: unsupported command b'INFO'\r\n", "status", "does not answer INFO"),
        (b"$5\r\nhello\r\n", "status", "no JSON object"),
        (b"$2\r\n{}\r\n", "status", "not as nsprov serve"),
        (b"-ERR spool gone\r\n", "probe", "failed the probe lookup: ERR spool gone"),
        (b"+OK\r\n", "probe", "not a bulk string"),
        (b"$10\r\nshort", "probe", "without a complete answer"),
    ],
)
def test_bad_servers(base: Path, answer: bytes | None, call: str, message: str) -> None:
    """Whatever else listens on the socket is a ProbeError saying what it did."""
    path = base / "fake.sock"
    thread = _fake(path, answer)
    ask = server_status if call == "status" else probe_lookup
    with pytest.raises(ProbeError, match=message):
        ask(str(path), timeout=0.3)
    thread.join(5)


def test_parse() -> None:
    """Partial, nil and malformed replies."""
    assert [("", None, False), ("$", None, True), ("$", b"ab", True), ("+", b"OK", True)] == [
        _parse(b"$2\r\na"),
        _parse(b"$-1\r\n"),
        _parse(b"$2\r\nab\r\n"),
        _parse(b"+OK\r\n"),
    ]
    with pytest.raises(ProbeError):
        _parse(b"$x\r\n")
    with pytest.raises(ProbeError):
        _parse(b"*" * 40)


def test_oversized(base: Path) -> None:
    """A reply longer than 64 KiB is refused."""
    path = base / "big.sock"
    thread = _fake(path, b"$999999\r\n" + b"x" * 70000)
    with pytest.raises(ProbeError, match="more than"):
        redis_request(str(path), b"INFO", timeout=2)
    thread.join(5)
