"""Tests for the dict-proxy and redis sessions, over a real UNIX socket."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import socket
import threading
import time
from typing import TYPE_CHECKING

from nsprov._serve.log import Log
from nsprov._serve.resolver import Answer, Resolver
from nsprov._serve.sessions import Channel, dict_session, redis_session

from .helpers import (
    HELLO,
    Identities,
    at_eof,
    connect,
    make_config,
    read_lines,
    redis_get,
    reply_prefixes,
    running,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from nsprov._config import Config
    from nsprov._identity import MailUser
    from nsprov._serve.resolver import Key


class TestDictProxy:
    """The dict-proxy protocol against a running server."""

    def test_lookup(self, spool: Path, base: Path) -> None:
        """A lookup of userdb/<user> returns the user's namespaces as tab-escaped JSON."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(HELLO + b"Lshared/userdb/member\tmember\nLshared/userdb/other\tother\n")
            member, other = read_lines(c, 2)

        assert {"Shared/sales/", "Shared/Weird Name/", "Shared/team/"} == reply_prefixes(member)
        assert {"Shared/sales/", "Shared/Weird Name/"} == reply_prefixes(other)

    def test_pipelined_in_order(self, spool: Path, base: Path) -> None:
        """Two hundred pipelined lookups in one write get two hundred replies, in request order."""
        users = [b"member", b"other", b"nosuch"] * 67
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(HELLO + b"".join(b"Lshared/userdb/%s\t%s\n" % (u, u) for u in users))
            replies = read_lines(c, len(users))

        kinds = {b"member": 3, b"other": 2, b"nosuch": 0}
        assert [kinds[u] for u in users] == [
            len(reply_prefixes(r)) if r != b"N" else 0 for r in replies
        ]

    def test_partial_reads(self, spool: Path, base: Path) -> None:
        """A request sent one byte at a time is answered once complete."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            for byte in HELLO + b"Lshared/userdb/other\tother\n":
                c.send(bytes((byte,)))
            (reply,) = read_lines(c, 1)

        assert 2 == len(reply_prefixes(reply))

    def test_other_commands(self, spool: Path, base: Path) -> None:
        """Unknown keys are not found, iterate and commit fail cleanly, transaction commands get no reply."""
        with running(make_config(spool), base) as (server, log), connect(server) as c:
            c.sendall(
                HELLO
                + b"Lshared/passdb/x\tx\nI0\tshared/\nB1\tx\nS1\tk\tv\nC1\nD2\nLshared/userdb/other\tother\n"
            )
            replies = read_lines(c, 5)

        assert [
            b"N",
            b"Fnsprov: iteration is not supported",
            b"F1\tnsprov: read-only dict",
            b"AF2\tnsprov: read-only dict",
        ] == replies[:4]
        assert 2 == len(reply_prefixes(replies[4]))
        assert 1 == log.getvalue().count("event=write-ignored")

    def test_user_mismatch(self, spool: Path, base: Path) -> None:
        """A key whose user differs from the lookup's user is refused (home-form ambiguity)."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(HELLO + b"Lshared/userdb/other//x\tother//x\n")
            (reply,) = read_lines(c, 1)

        assert b"N" == reply

    def test_malformed_closes_after_earlier_replies(self, spool: Path, base: Path) -> None:
        """A malformed line closes the connection, after the replies to the requests before it."""
        with running(make_config(spool), base) as (server, log), connect(server) as c:
            c.sendall(HELLO + b"Lshared/userdb/other\tother\nZbad\n")
            (reply,) = read_lines(c, 1)
            closed = at_eof(c)

        assert (2, True) == (len(reply_prefixes(reply)), closed)
        assert "unknown command" in log.getvalue()

    def test_no_hello(self, spool: Path, base: Path) -> None:
        """A lookup before the handshake is a protocol error."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(b"Hx\n")
            assert at_eof(c)

    def test_oversized_line(self, spool: Path, base: Path) -> None:
        """A line over --max-line closes the connection without buffering it all."""
        with running(make_config(spool), base, max_line=128) as (server, log), connect(server) as c:
            c.sendall(HELLO + b"L" + b"x" * 1000)
            assert at_eof(c)

        assert "longer than 128" in log.getvalue()

    def test_deadline(self, spool: Path, base: Path) -> None:
        """A lookup that takes too long fails at the deadline; the next one waits for the same work."""
        gate = threading.Event()
        ids = Identities()

        def slow(config: Config, user: str, home: str | None) -> MailUser:
            gate.wait(5)
            return ids(config, user, home)

        resolver = Resolver(identify=slow)
        with (
            running(make_config(spool), base, resolver=resolver, deadline=0.2) as (server, log),
            connect(server) as c,
        ):
            started = time.monotonic()
            c.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            (first,) = read_lines(c, 1)
            elapsed = time.monotonic() - started
            gate.set()
            time.sleep(0.1)
            c.sendall(b"Lshared/userdb/other\tother\n")
            (second,) = read_lines(c, 1)

        assert first.startswith(b"Fnsprov: no answer within 0.2s")
        assert 0.15 < elapsed < 2
        assert 2 == len(reply_prefixes(second))
        assert "event=deadline" in log.getvalue()

    def test_single_flight(self, spool: Path, base: Path) -> None:
        """Concurrent lookups for one user share one scan."""
        ids = Identities()
        gate = threading.Event()

        def slow(config: Config, user: str, home: str | None) -> MailUser:
            gate.wait(5)
            return ids(config, user, home)

        socks = []
        with running(make_config(spool), base, resolver=Resolver(identify=slow)) as (server, _):
            for _ in range(10):
                s = connect(server)
                s.sendall(HELLO + b"Lshared/userdb/member\tmember\n")
                socks.append(s)
            time.sleep(0.2)
            gate.set()
            replies = [read_lines(s, 1)[0] for s in socks]
            for s in socks:
                s.close()

        assert [3] * 10 == [len(reply_prefixes(r)) for r in replies]
        assert 1 == ids.calls


class TestRedis:
    """The RESP subset Dovecot's redis dict speaks."""

    @staticmethod
    def get(key: bytes) -> bytes:
        return redis_get(key)

    def test_get(self, spool: Path, base: Path) -> None:
        """GET userdb/<user> returns the JSON as a bulk string; unknown users and keys are nil."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(
                self.get(b"userdb/other") + self.get(b"userdb/nosuch") + self.get(b"other/key")
            )
            data = b""
            while data.count(b"$-1\r\n") < 2:
                data += c.recv(65536)

        head, _, rest = data.partition(b"\r\n")
        value = rest[: int(head[1:])]
        assert {"Shared/sales/", "Shared/Weird Name/"} == {
            v for k, v in json.loads(value).items() if k.endswith("/prefix")
        }
        assert rest[int(head[1:]) :] == b"\r\n$-1\r\n$-1\r\n"

    def test_auth_select_ping_and_others(self, spool: Path, base: Path) -> None:
        """AUTH and SELECT are accepted, PING answered, anything else an error."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(
                b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*1\r\n$4\r\nPING\r\n"
                b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
            )
            replies = read_lines(c, 4, b"\r\n")

        assert [b"+OK", b"+OK", b"+PONG", b"-ERR nsprov: unsupported command b'SET'"] == replies

    def test_failure_is_an_error(self, base: Path) -> None:
        """A failed lookup is a RESP error, which Dovecot's client counts as a failure."""
        with running(make_config(base / "missing"), base) as (server, _), connect(server) as c:
            c.sendall(self.get(b"userdb/other"))
            (reply,) = read_lines(c, 1, b"\r\n")

        assert reply.startswith(b"-ERR spool ")

    def test_malformed(self, spool: Path, base: Path) -> None:
        """Inline commands close the connection."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(b"*1\r\n$4\r\nPING\r\nGET x\r\n")
            (reply,) = read_lines(c, 1, b"\r\n")
            assert at_eof(c)

        assert b"+PONG" == reply


async def _fake_lookup(key: Key) -> Answer:
    """Answers by user name alone: member is found, broken fails, anyone else is not found."""
    if key.user == "member":
        return Answer(
            "found",
            value=json.dumps({"user": key.user}, separators=(",", ":")).encode(),
            fits=1,
            how="miss",
        )
    if key.user == "broken":
        return Answer.fail("boom")
    return Answer("not-found", error="unknown user", how="miss")


def talk(
    session: Callable[..., Awaitable[None]],
    request: bytes,
    *,
    stopping: bool = False,
) -> tuple[bytes, str, list[str]]:
    """Run *session* on one end of a socket pair with the fake lookup; send *request*, then EOF.

    Returns what the client read, the log, and the busy/idle calls the session made.
    """
    log = io.StringIO()
    calls: list[str] = []

    async def main() -> bytes:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        channel = Channel(
            conn=7,
            writer=writer,
            read=functools.partial(reader.read, 65536),
            log=Log("debug", log),
            clock=time.monotonic,
            busy=lambda: calls.append("busy"),
            idle=lambda answered: calls.append(f"idle {answered}"),
            stopping=lambda: stopping,
        )
        client_reader, client_writer = await asyncio.open_unix_connection(sock=theirs)
        client_writer.write(request)
        await client_writer.drain()
        first = await reader.read(65536)
        if not stopping:
            client_writer.write_eof()
        await session(channel, first, _fake_lookup, max_line=1024)
        writer.close()
        data = await client_reader.read()
        client_writer.close()
        return data

    return asyncio.run(main()), log.getvalue(), calls


class TestSessionsAlone:
    """A session needs a Channel and a lookup callable, not a Server."""

    def test_dict_session(self) -> None:
        """Found, not found and failed answers become O, N and F lines in request order, each lookup logged."""
        data, log, calls = talk(
            dict_session,
            HELLO
            + b"Lshared/userdb/member\tmember\nLshared/userdb/nosuch\tnosuch\nLshared/userdb/broken\tbroken\n",
        )

        assert [b'O{"user":"member"}', b"N", b"Fboom"] == data.split(b"\n")[:-1]
        assert ["busy", "idle True"] == calls
        assert 3 == log.count("event=lookup ")
        assert "user=member" in log

    def test_redis_session(self) -> None:
        """GET answers a bulk string, nil or an error; PING is answered without a lookup."""
        data, _, _ = talk(
            redis_session,
            redis_get(b"userdb/member")
            + redis_get(b"userdb/nosuch")
            + redis_get(b"userdb/broken")
            + b"*1\r\n$4\r\nPING\r\n",
        )

        assert b'$17\r\n{"user":"member"}\r\n$-1\r\n-ERR boom\r\n+PONG\r\n' == data

    def test_stopping_ends_after_the_batch(self) -> None:
        """Once the server is stopping, the session answers what it has read and returns without reading on."""
        data, _, calls = talk(redis_session, redis_get(b"userdb/member"), stopping=True)

        assert (b'$17\r\n{"user":"member"}\r\n', ["busy", "idle True"]) == (data, calls)
