"""The resident server: :class:`Server` (start, stop, reload, connections, lookups) and :func:`run`.

:func:`run` loads the configuration, installs the signal handlers (SIGHUP
reloads, SIGTERM and SIGINT stop) and serves until told to stop.  The
protocol sessions (:mod:`nsprov._serve.sessions`) are handed
:meth:`Server.lookup`; the blocking work runs in :class:`~nsprov._serve.resolver.Resolver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import attrs

from .._postlogin import config_stamp
from .._reply import default_reply_budget
from ..exceptions import NsprovError, ProtocolError
from .codec import PostloginKey, detect
from .dirs import DirMaker
from .log import Log
from .options import LISTEN_BACKLOG
from .resolver import Answer, Entry, Key, Resolver, load_stamped
from .sessions import Channel, dict_session, redis_session
from .sockets import bind_socket, peer_credentials

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from .._config import Config
    from .options import ServeOptions

#: Users being looked up at once at most; beyond, lookups fail at once.
MAX_INFLIGHT = 1024
#: How long a reload may take to read the config.
RELOAD_TIMEOUT = 5.0
_READ_SIZE = 65536


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
        self._started = clock()

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
        from .._scancache import update  # noqa: PLC0415

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
            from .._config import load_config  # noqa: PLC0415

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
            elif protocol is not None:
                session = dict_session if protocol == "dict" else redis_session
                await session(
                    self._channel(cid, reader, writer),
                    first,
                    self.lookup,
                    max_line=self.options.max_line,
                )
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

    def _channel(
        self, cid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Channel:
        """Connection *cid* for a session: reads with the idle timeout, busy while answering."""

        def idle(answered: bool) -> None:
            if answered:
                self.idle_since[cid] = self.clock()
            self.busy.discard(cid)

        return Channel(
            conn=cid,
            writer=writer,
            read=functools.partial(self._read, cid, reader),
            log=self.log,
            clock=self.clock,
            max_pipeline=self.options.max_pipeline,
            busy=functools.partial(self.busy.add, cid),
            idle=idle,
            stopping=self._is_stopping,
            status=self.status_json,
        )

    def status_json(self) -> bytes:
        """What redis ``INFO`` answers: health, settings and counters as one JSON object."""
        import json  # noqa: PLC0415

        o = self.options
        status = {
            "nsprov": "serve",
            "pid": os.getpid(),
            "uptime": round(self.clock() - self._started, 3),
            "config": self.config.source,
            "dialect": self.config.dialect,
            "config_reload_failed": self._failed_stamp is not None,
            "deadline": o.deadline,
            "cache_ttl": o.cache_ttl,
            "reply_budget": o.reply_budget or default_reply_budget(self.config.dialect),
            "connections": len(self.connections),
            "max_connections": o.max_connections,
            "cached_users": len(self.cache),
            "lookups_in_flight": len(self.inflight),
            **self.stats,
        }
        return json.dumps(status, separators=(",", ":")).encode()

    def _is_stopping(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()


def _warm_imports() -> None:
    """Import what the first lookup would, so that its time is the scan's alone."""
    from .. import _engine, _env, _identity, _scan  # noqa: F401, PLC0415


def _user_name(uid: int) -> str | None:
    import pwd  # noqa: PLC0415

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


async def run(
    options: ServeOptions, *, log: Log | None = None, ready: Callable[[Server], None] | None = None
) -> int:
    """Load the config, serve until SIGTERM/SIGINT, reload on SIGHUP; the exit status."""
    from .._config import load_config  # noqa: PLC0415

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


def exit_if_threads_hang(status: int, grace: float = 1.0) -> None:
    """Exit at once if a scan thread is stuck in the kernel (interpreter exit would wait for it)."""
    import threading  # noqa: PLC0415

    end = time.monotonic() + grace
    for t in threading.enumerate():
        if t.name.startswith(("nsprov-scan", "nsprov-reload")):
            t.join(max(0.0, end - time.monotonic()))
            if t.is_alive():
                sys.stderr.flush()
                os._exit(status)
