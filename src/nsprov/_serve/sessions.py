"""The two protocol sessions, dict-proxy and redis, each given a ``lookup`` callable.

A session reads requests from one connection, parses them with the codecs of
:mod:`nsprov._serve.codec`, answers lookups through the ``lookup`` it is given
and writes the replies in request order.  It knows nothing of the server: what
it needs from the connection (reading with the idle timeout, being marked busy
or idle, whether the server is stopping) comes in a :class:`Channel`, so a
session can be driven by any stream and any lookup function.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

import attrs

from ..exceptions import ProtocolError
from .codec import (
    Commit,
    Hello,
    Iterate,
    LineBuffer,
    Lookup,
    NoReply,
    RespParser,
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
from .options import DEFAULT_MAX_PIPELINE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .log import Log
    from .resolver import Answer, Key

#: A reply to write, and what to do once it is written (the lookup's log line).
_Out = tuple[bytes, "Callable[[], None] | None"]


def _never() -> bool:
    return False


def _nothing(*_: object) -> None:
    return None


@attrs.frozen(kw_only=True)
class Channel:
    """One connection as a session sees it: where replies go, and what the server tracks of it."""

    #: The connection's number, for log lines.
    conn: int
    writer: asyncio.StreamWriter
    #: The next bytes from the client; b"" at EOF or when the connection sat idle too long.
    read: Callable[[], Awaitable[bytes]]
    log: Log
    clock: Callable[[], float]
    max_pipeline: int = DEFAULT_MAX_PIPELINE
    #: Called before a batch of requests is answered.
    busy: Callable[[], None] = _nothing
    #: Called after a batch, with whether it held any request.
    idle: Callable[[bool], None] = _nothing
    #: True once the server is stopping: the session returns after the batch it is answering.
    stopping: Callable[[], bool] = _never
    #: The server's health and counters as a JSON object (redis ``INFO``); None: not offered.
    status: Callable[[], bytes] | None = None


async def _batches(
    channel: Channel, data: bytes, parse: Callable[[bytes, list[Awaitable[_Out]]], None]
) -> None:
    """Read, parse into reply awaitables, write the replies in order; repeat until EOF.

    A protocol error closes the connection after the replies to the
    requests before it.
    """
    writer = channel.writer
    while data:
        channel.busy()
        replies: list[Awaitable[_Out]] = []
        error: ProtocolError | None = None
        try:
            parse(data, replies)
        except ProtocolError as e:
            error = e
        for i in range(0, len(replies), channel.max_pipeline):
            batch = [asyncio.ensure_future(r) for r in replies[i : i + channel.max_pipeline]]
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
        channel.idle(bool(replies))
        if channel.stopping():
            return
        data = await channel.read()


async def dict_session(
    channel: Channel,
    first: bytes,
    lookup: Callable[[Key], Awaitable[Answer]],
    *,
    max_line: int,
) -> None:
    """Answer a dict-proxy client, starting with the bytes *first* already read."""
    lines = LineBuffer(max_line)
    state = {"hello": False, "ignored": False}
    log = channel.log

    def parse(data: bytes, out: list[Awaitable[_Out]]) -> None:
        for line in lines.feed(data):
            req = parse_dict_line(line, hello_seen=state["hello"])
            if isinstance(req, Hello):
                state["hello"] = True
                log(
                    "debug",
                    "hello",
                    conn=channel.conn,
                    minor=req.minor,
                    dict=req.dict_name.decode("utf-8", "replace"),
                )
            elif isinstance(req, Lookup):
                out.append(_dict_lookup(channel, lookup, req, channel.clock()))
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
                log("warning", "write-ignored", conn=channel.conn, command=req.command)

    await _batches(channel, first, parse)


async def _dict_lookup(
    channel: Channel,
    lookup: Callable[[Key], Awaitable[Answer]],
    req: Lookup,
    received: float,
) -> _Out:
    key = userdb_key(req.key)
    if key is None:
        channel.log("debug", "unknown-key", key=req.key.decode("utf-8", "backslashreplace"))
        return dict_not_found(), None
    if req.user and req.user.decode("utf-8", "replace") != key.user:
        channel.log(
            "warning",
            "user-mismatch",
            key_user=key.user,
            user=req.user.decode("utf-8", "replace"),
        )
        return dict_not_found(), None
    answer = await lookup(key)
    after = functools.partial(log_lookup, channel.log, channel.clock, key, answer, received)
    if answer.kind == "found":
        return dict_ok(answer.value), after
    if answer.kind == "not-found":
        return dict_not_found(), after
    return dict_fail(answer.error), after


async def redis_session(
    channel: Channel,
    first: bytes,
    lookup: Callable[[Key], Awaitable[Answer]],
    *,
    max_line: int,
) -> None:
    """Answer a redis client (``GET``, ``AUTH``, ``SELECT``, ``PING``, ``INFO``), starting with *first*.

    ``INFO`` answers the server's status (``nsprov serve --status``): a JSON object
    with counters and settings, no user's data.
    """
    parser = RespParser(max_bulk=max_line)

    def parse(data: bytes, out: list[Awaitable[_Out]]) -> None:
        for args in parser.feed(data):
            name = args[0].upper()
            if name == b"GET" and len(args) == 2:
                out.append(_redis_get(channel, lookup, args[1], channel.clock()))
            elif name in {b"AUTH", b"SELECT"}:
                out.append(_ready(resp_simple("OK")))
            elif name == b"PING":
                out.append(_ready(resp_simple("PONG")))
            elif name == b"INFO" and channel.status is not None:
                out.append(_status(channel.status))
            else:
                out.append(_ready(resp_error(f"nsprov: unsupported command {name[:20]!r}")))

    await _batches(channel, first, parse)


async def _redis_get(
    channel: Channel,
    lookup: Callable[[Key], Awaitable[Answer]],
    raw: bytes,
    received: float,
) -> _Out:
    key = userdb_key(raw)
    if key is None:
        channel.log("debug", "unknown-key", key=raw.decode("utf-8", "backslashreplace"))
        return resp_nil(), None
    answer = await lookup(key)
    after = functools.partial(log_lookup, channel.log, channel.clock, key, answer, received)
    if answer.kind == "found":
        return resp_bulk(answer.value), after
    if answer.kind == "not-found":
        return resp_nil(), after
    return resp_error(answer.error), after


def log_lookup(
    log: Log, clock: Callable[[], float], key: Key, answer: Answer, received: float
) -> None:
    """The lookup line, once the reply is written: ``ms`` is the whole time since the request was read.

    A computed answer is logged at info; a cache hit, and a user nsprov does not
    serve (unknown, uid 0, declined: the line says why), at debug.
    """
    log(
        "info" if answer.how == "miss" and answer.kind != "not-found" else "debug",
        "lookup",
        user=key.user,
        home=key.home,
        result=answer.kind,
        error=answer.error if answer.kind == "not-found" else None,
        cache=answer.how or None,
        namespaces=answer.fits,
        size=len(answer.value) if answer.kind == "found" else None,
        ms=f"{(clock() - received) * 1000:.2f}",
    )


async def _status(status: Callable[[], bytes]) -> _Out:
    """``INFO``, computed when its turn comes: it counts the lookups pipelined before it."""
    return resp_bulk(status()), None


async def _ready(data: bytes) -> _Out:
    return data, None


def userdb_key(raw: bytes) -> Key | None:
    """The lookup a raw key asks for (a post-login or a userdb key), or None for any other key."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return parse_postlogin_key(text) or parse_userdb_key(text)
