"""Tests for the server's life cycle, connections, reloads and revocation, over a real UNIX socket.

No Dovecot here (see ``tests/live/test_serve_live.py``): the server runs in a thread with
its own event loop, and plain sockets talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from nsprov._cli.serve import main
from nsprov._config import config_from_mapping
from nsprov._serve.codec import UserdbKey
from nsprov._serve.log import Log
from nsprov._serve.options import ServeOptions
from nsprov._serve.resolver import Answer, Outcome, Resolver
from nsprov._serve.server import Server, run
from nsprov._serve.sockets import bind_socket
from nsprov.exceptions import NsprovError

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
    wait_for,
)

if TYPE_CHECKING:
    from nsprov._config import Config
    from nsprov._identity import MailUser


class TestConnections:
    """Connection handling: unknown protocols, the connection cap, peers."""

    def test_unknown_protocol(self, spool: Path, base: Path) -> None:
        """A connection that starts with neither H nor * is closed."""
        with running(make_config(spool), base) as (server, log), connect(server) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert at_eof(c)

        assert "unknown protocol" in log.getvalue()

    def test_connection_cap_evicts_the_longest_idle(self, spool: Path, base: Path) -> None:
        """Beyond --max-connections the connection idle the longest is closed for the new one."""
        with running(make_config(spool), base, max_connections=2) as (server, log):
            first = connect(server)
            first.sendall(HELLO)
            time.sleep(0.05)
            second = connect(server)
            second.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            read_lines(second, 1)
            third = connect(server)
            third.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            (reply,) = read_lines(third, 1)
            evicted = at_eof(first)
            second.sendall(b"Lshared/userdb/other\tother\n")
            (again,) = read_lines(second, 1)
            for s in (first, second, third):
                s.close()

        assert (True, 2, 2) == (evicted, len(reply_prefixes(reply)), len(reply_prefixes(again)))
        assert "event=evicted" in log.getvalue()

    def test_connection_cap_all_busy(self, spool: Path, base: Path) -> None:
        """When every connection is waiting for an answer, a new one is closed at once."""
        gate = threading.Event()
        ids = Identities()

        def slow(config: Config, user: str, home: str | None) -> MailUser:
            gate.wait(5)
            return ids(config, user, home)

        resolver = Resolver(identify=slow)
        with running(make_config(spool), base, resolver=resolver, max_connections=2) as (
            server,
            log,
        ):
            busy = [connect(server) for _ in range(2)]
            for s in busy:
                s.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            time.sleep(0.2)
            third = connect(server)
            refused = at_eof(third)
            gate.set()
            replies = [read_lines(s, 1)[0] for s in busy]
            for s in (*busy, third):
                s.close()

        assert (True, [2, 2]) == (refused, [len(reply_prefixes(r)) for r in replies])
        assert "too-many-connections" in log.getvalue()

    @pytest.mark.parametrize("partial", [b"", b"*2\r\n$3\r\nGET\r\n"])
    def test_idle_timeout(self, spool: Path, base: Path, partial: bytes) -> None:
        """A connection without a complete request for idle_timeout is closed (a trickle does not count)."""
        with running(make_config(spool), base, idle_timeout=0.3) as (server, log):
            c = connect(server)
            started = time.monotonic()
            for byte in partial:  # slowloris: one byte at a time, never a whole request
                c.sendall(bytes([byte]))
                time.sleep(0.02)
            closed = at_eof(c)
            elapsed = time.monotonic() - started
            c.close()

        assert closed
        assert 0.25 < elapsed < 3
        assert "event=idle-timeout" in log.getvalue()

    def test_idle_timeout_counts_from_the_last_request(self, spool: Path, base: Path) -> None:
        """A connection that keeps asking stays open past the timeout."""
        with (
            running(make_config(spool), base, idle_timeout=0.4) as (server, _),
            connect(server) as c,
        ):
            c.sendall(HELLO)
            replies = []
            for _ in range(4):
                time.sleep(0.2)
                c.sendall(b"Lshared/userdb/other\tother\n")
                replies += read_lines(c, 1)

        assert [2] * 4 == [len(reply_prefixes(r)) for r in replies]

    def test_slowloris(self, spool: Path, base: Path) -> None:
        """256 idle connections (the default max_connections) lock nobody out: every lookup is answered."""
        with running(make_config(spool), base) as (server, _):
            assert 256 == server.options.max_connections
            idle = [connect(server) for _ in range(256)]
            for i, s in enumerate(idle):
                if i % 2:
                    s.sendall(b"*2\r\n$3\r\n")  # half of them with a request begun
            time.sleep(0.2)
            answered = 0
            for _ in range(20):
                with connect(server) as c:
                    c.sendall(redis_get(b"userdb/other"))
                    head = c.recv(65536)
                    answered += head.startswith(b"$") and not head.startswith(b"$-1")
            for s in idle:
                s.close()

        assert 20 == answered

    def test_peer_logged_once(self, spool: Path, base: Path) -> None:
        """Each new peer uid is logged once, with its user name."""
        with running(make_config(spool), base) as (server, log):
            for _ in range(3):
                with connect(server) as c:
                    c.sendall(HELLO + b"Lshared/userdb/other\tother\n")
                    read_lines(c, 1)

        assert 1 == log.getvalue().count(f"event=peer uid={os.geteuid()} ")


class TestRevocation:
    """Permission changes reach the answers: at once by ctime, group changes within the TTL."""

    def test_chmod_revokes_at_once(self, spool: Path, base: Path) -> None:
        """chmod o-rx on a mailbox: the next lookup no longer has it."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            before = read_lines(c, 1)[0]
            (spool / "sales").chmod(0o750)
            c.sendall(b"Lshared/userdb/other\tother\n")
            after = read_lines(c, 1)[0]

        assert {"Shared/sales/", "Shared/Weird Name/"} == reply_prefixes(before)
        assert {"Shared/Weird Name/"} == reply_prefixes(after)

    def test_group_removal_within_ttl(self, spool: Path, base: Path) -> None:
        """Leaving a group (no filesystem change) takes effect once the TTL has passed."""
        ids = Identities()
        with (
            running(make_config(spool), base, resolver=Resolver(identify=ids, ttl=0.5)) as (
                server,
                _,
            ),
            connect(server) as c,
        ):
            c.sendall(HELLO + b"Lshared/userdb/member\tmember\n")
            before = read_lines(c, 1)[0]
            ids.users["member"][2].clear()
            c.sendall(b"Lshared/userdb/member\tmember\n")
            cached = read_lines(c, 1)[0]
            time.sleep(0.6)
            c.sendall(b"Lshared/userdb/member\tmember\n")
            after = read_lines(c, 1)[0]

        assert (3, 3, 2) == (
            len(reply_prefixes(before)),
            len(reply_prefixes(cached)),
            len(reply_prefixes(after)),
        )
        assert "Shared/team/" not in reply_prefixes(after)


class TestReload:
    """SIGHUP's reload, in process."""

    def test_good_and_bad(self, spool: Path, base: Path) -> None:
        """A good config replaces the old one and empties the cache; a bad one is logged and ignored."""
        configs = iter([make_config(spool, list="children")])

        def load(path: str) -> Config:
            for config in configs:
                return config
            raise NsprovError("broken.toml: invalid TOML")

        server = Server(
            make_config(spool),
            ServeOptions(socket_path=str(base / "s.sock")),
            log=Log("error", stream=io.StringIO()),
            load=load,
        )
        server.cache[("x", None, None)] = object()  # type: ignore[assignment]

        async def both() -> tuple[bool, bool]:
            return await server.reload(), await server.reload()

        good, bad = asyncio.run(both())
        server.executor.shutdown()

        assert (True, False, "children", 1, {}) == (
            good,
            bad,
            server.config.spools[0].list,
            server.generation,
            server.cache,
        )
        assert "reload-failed" in server.log.stream.getvalue()  # type: ignore[union-attr]

    def test_fifo_config_leaks_no_thread(
        self, spool: Path, base: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each SIGHUP with a FIFO config is refused at once and leaves no reader thread behind."""
        import nsprov._serve.server as serve_mod

        monkeypatch.setattr(serve_mod, "RELOAD_TIMEOUT", 0.2)
        fifo = base / "nsprov.toml"
        os.mkfifo(fifo, 0o600)
        out = io.StringIO()
        server = Server(
            make_config(spool),
            ServeOptions(config_path=str(fifo), socket_path=str(base / "s")),
            log=Log(stream=out),
        )
        try:
            results = [asyncio.run(server.reload()) for _ in range(3)]
            time.sleep(0.1)
            readers = [t for t in threading.enumerate() if t.name.startswith("nsprov-reload")]
        finally:
            with contextlib.suppress(OSError):  # before the fix: release blocked readers
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            server.executor.shutdown()

        assert ([False] * 3, []) == (results, readers)
        assert 3 == out.getvalue().count("not a regular file (a FIFO)")


class TestImports:
    """``nsprov serve`` stays off the post-login path."""

    def test_postlogin_does_not_import_serve(self) -> None:
        """Importing the post-login modules loads neither _serve, its codec nor asyncio."""
        code = "import sys, nsprov._main, nsprov._postlogin, nsprov._worker; print(' '.join(sorted(sys.modules)))"
        out = subprocess.run(
            [sys.executable, "-I", "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout

        assert set() == {"nsprov._serve", "nsprov._serve.codec", "asyncio"} & set(out.split())


class TestServerCorners:
    """Start, stop, reload and cache corners of the server."""

    def test_dialect_24_served_without_warning(self, spool: Path, base: Path) -> None:
        """The 2.4 dialect is served to the Lua userdb: no warning at start."""
        config = config_from_mapping(
            {"spool": [{"path": str(spool)}], "dovecot": {"version": "2.4"}}
        )
        with running(config, base) as (_, log):
            pass

        lines = log.getvalue().splitlines()
        assert [] == [line for line in lines if "warning" in line]
        assert 1 == sum("event=start" in line and "dialect=2.4" in line for line in lines)

    def test_serve_before_start(self, base: Path) -> None:
        """serve() needs start()."""
        server = Server(make_config(base), ServeOptions(socket_path=str(base / "s.sock")))

        with pytest.raises(RuntimeError, match="start"):
            asyncio.run(server.serve())
        server.executor.shutdown()

    def test_stop_finishes_running_requests(self, spool: Path, base: Path) -> None:
        """SIGTERM's stop lets a lookup in progress answer before the connection closes."""
        gate = threading.Event()
        ids = Identities()

        def slow(config: Config, user: str, home: str | None) -> MailUser:
            gate.wait(5)
            return ids(config, user, home)

        with running(make_config(spool), base, resolver=Resolver(identify=slow), deadline=3) as (
            server,
            _,
        ):
            c = connect(server)
            c.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            time.sleep(0.2)
            threading.Timer(0.3, gate.set).start()
            server.request_stop_threadsafe()
            (reply,) = read_lines(c, 1)
            closed = at_eof(c)
            c.close()

        assert (2, True, False) == (
            len(reply_prefixes(reply)),
            closed,
            Path(server.options.socket_path).exists(),
        )

    def test_reload_default_loader_and_timeout(
        self, spool: Path, base: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a loader the real config file is read; a read that hangs is given up after the timeout."""
        import nsprov._serve.server as serve_mod

        conf = base / "nsprov.toml"
        conf.write_text(f'[[spool]]\npath = "{spool}"\n')
        out = io.StringIO()
        server = Server(
            make_config(spool),
            ServeOptions(config_path=str(conf), socket_path=str(base / "s")),
            log=Log(stream=out),
        )
        good = asyncio.run(server.reload())
        monkeypatch.setattr(serve_mod, "RELOAD_TIMEOUT", 0.1)
        gate = threading.Event()
        server.load = lambda path: (gate.wait(5), make_config(spool))[1]
        slow = asyncio.run(server.reload())
        gate.set()
        server.executor.shutdown()

        assert (True, False) == (good, slow)
        assert "reading took over 0.1s" in out.getvalue()

    def test_lookup_after_shutdown(self, spool: Path, base: Path) -> None:
        """A lookup after the thread pool shut down fails cleanly."""
        server = Server(
            make_config(spool),
            ServeOptions(socket_path=str(base / "s")),
            log=Log(stream=io.StringIO()),
        )
        server.executor.shutdown()

        answer = asyncio.run(server.lookup(UserdbKey("other")))

        assert ("fail", True) == (answer.kind, "shutting down" in answer.error)

    def test_cache_bounded(self, spool: Path, base: Path) -> None:
        """The cache holds at most --cache-size users, dropping the oldest."""
        server = Server(
            make_config(spool),
            ServeOptions(socket_path=str(base / "s"), cache_size=2),
            log=Log(stream=io.StringIO()),
            resolver=Resolver(identify=Identities()),
        )

        async def three() -> None:
            for user in ("member", "other", "nosuch"):
                await server.lookup(UserdbKey(user))

        asyncio.run(three())
        server.executor.shutdown()

        assert [("userdb", "other", None), ("userdb", "nosuch", None)] == list(server.cache)

    def test_overloaded(self, spool: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With too many users in flight, a new one fails at once instead of queueing."""
        import nsprov._serve.server as serve_mod

        monkeypatch.setattr(serve_mod, "MAX_INFLIGHT", 1)
        gate = threading.Event()
        ids = Identities()

        def slow(config: Config, user: str, home: str | None) -> MailUser:
            gate.wait(5)
            return ids(config, user, home)

        with running(make_config(spool), base, resolver=Resolver(identify=slow)) as (server, log):
            first, second = connect(server), connect(server)
            first.sendall(HELLO + b"Lshared/userdb/member\tmember\n")
            time.sleep(0.1)
            second.sendall(HELLO + b"Lshared/userdb/other\tother\n")
            (refused,) = read_lines(second, 1)
            gate.set()
            (served,) = read_lines(first, 1)
            first.close()
            second.close()

        assert (b"Fnsprov: 1 lookups already in progress", 3) == (
            refused,
            len(reply_prefixes(served)),
        )
        assert "event=overloaded" in log.getvalue()

    def test_non_utf8_key(self, spool: Path, base: Path) -> None:
        """A key that is not UTF-8 is not found."""
        with running(make_config(spool), base) as (server, _), connect(server) as c:
            c.sendall(HELLO + b"Lshared/userdb/\xff\t\xff\n")
            (reply,) = read_lines(c, 1)

        assert b"N" == reply


class TestRun:
    """run() and main() in process: signals, exit statuses."""

    def test_signals(self, spool: Path, base: Path) -> None:
        """SIGHUP reloads, SIGTERM stops with status 0."""
        conf = base / "nsprov.toml"
        conf.write_text(f'[[spool]]\npath = "{spool}"\n')
        out = io.StringIO()

        def ready(server: Server) -> None:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, os.kill, os.getpid(), signal.SIGHUP)
            loop.call_later(0.3, os.kill, os.getpid(), signal.SIGTERM)

        status = asyncio.run(
            run(
                ServeOptions(config_path=str(conf), socket_path=str(base / "s.sock")),
                log=Log(stream=out),
                ready=ready,
            )
        )

        assert 0 == status
        assert ["start", "reload", "stop"] == re.findall(
            r"event=(start|reload|stop)\b", out.getvalue()
        )

    def test_socket_in_use(self, spool: Path, base: Path) -> None:
        """A socket another server listens on: status 1."""
        conf = base / "nsprov.toml"
        conf.write_text(f'[[spool]]\npath = "{spool}"\n')

        live = bind_socket(str(base / "s.sock"), mode=0o600, group=None)
        try:
            status = asyncio.run(
                run(
                    ServeOptions(config_path=str(conf), socket_path=str(base / "s.sock")),
                    log=Log(stream=io.StringIO()),
                )
            )
        finally:
            live.close()

        assert 1 == status

    def test_main_bad_config(self, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """main() with a missing config returns 1 and logs why."""
        assert 1 == main([f"--config={base}/missing.toml", f"--socket={base}/s.sock"])
        assert "event=config-error" in capsys.readouterr().err

    def test_main_untrusted_config(self, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """main() refuses a config others may write, with the loader's message, and binds nothing."""
        conf = base / "nsprov.toml"
        conf.write_text(f'[[spool]]\npath = "{base}"\n')
        conf.chmod(0o666)

        assert 1 == main([f"--config={conf}", f"--socket={base}/s.sock"])
        err = capsys.readouterr().err
        assert "event=config-error" in err
        assert f"config file not trusted: {conf} is writable by group or other" in err
        assert not (base / "s.sock").exists()

    @pytest.mark.parametrize(
        "arg",
        [
            "--socket-mode=999",
            "--socket-mode=x",
            "--deadline=0",
            "--deadline=x",
            "--cache-ttl=-1",
            "--cache-ttl=x",
        ],
    )
    def test_usage_errors(self, arg: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Bad option values are usage errors (exit 2)."""
        with pytest.raises(SystemExit) as e:
            main([arg])

        assert 2 == e.value.code


class TestFreshStart:
    """Issue 15 part 1: the first lookup after start waits on nothing but its own scan."""

    def test_dir_helper_started_before_the_socket(self, spool: Path, base: Path) -> None:
        """The directory helper (a new process) runs before the socket accepts anything."""
        with running(make_config(spool), base) as (server, _):
            proc = server.dirs._proc

            assert proc is not None
            assert proc.returncode is None

    def test_logged_ms_is_the_whole_time(self, spool: Path, base: Path) -> None:
        """The lookup line's ``ms`` counts from the request read to the reply written, dirs included."""

        class SlowDirs:
            async def start(self) -> None:
                pass

            async def ensure(self, *_: object) -> str | None:
                await asyncio.sleep(0.3)
                return None

            async def close(self) -> None:
                pass

        class NeedsDirs(Resolver):
            def resolve(self, *_: Any) -> Any:

                return Outcome(
                    Answer("found", value=b"{}"), "miss", make_dirs=((1, 1, ()), ("/x",))
                )

        with running(make_config(spool), base, resolver=NeedsDirs()) as (server, log):
            server.dirs = SlowDirs()  # type: ignore[assignment]
            with connect(server) as sock:
                sock.sendall(b"*2\r\n$3\r\nGET\r\n$12\r\nuserdb/alice\r\n")
                read_lines(sock, 2, b"\r\n")
            wait_for(lambda: "event=lookup" in log.getvalue())
            ms = float(re.findall(r"event=lookup .*ms=([0-9.]+)", log.getvalue())[0])

        assert ms >= 300
