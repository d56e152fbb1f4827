"""A throwaway PostgreSQL 15 cluster for live tests, always stopped and removed.

:class:`PostgresCluster` runs ``initdb`` as the ``postgres`` system user into a fresh directory,
starts ``postgres`` itself as a child process (not through ``pg_ctl``, so the postmaster's pid is
known and it can be paused with SIGSTOP to play a hanging server), listening on a private UNIX
socket directory and on ``127.0.0.1`` at a free port, and creates one database. Authentication is
``trust``: the cluster serves only this machine's tests and is gone afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from .harness import HOST, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def pg_available() -> str | None:
    """Return ``None`` when a throwaway cluster can be made here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "a throwaway PostgreSQL cluster needs root"
    for program in ("initdb", "postgres"):
        if not (PG_BIN / program).exists():
            return f"PostgreSQL 15 is not installed ({PG_BIN / program} missing)"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no {PG_USER!r} system user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    return None


class PostgresCluster:
    """A private PostgreSQL cluster: ``initdb``, ``postgres`` as a child, one database. Context manager."""

    def __init__(self, base: Path | None = None, *, dbname: str = "nsprov") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="nsprov-pg-", dir=base or "/var/tmp"))
        self.dbname = dbname
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        owner = pwd.getpwnam(PG_USER)
        self._uid, self._gid = owner.pw_uid, owner.pw_gid
        self.root.chmod(0o755)
        os.chown(self.root, self._uid, self._gid)
        for sub in (self.sockdir, self.logdir):
            sub.mkdir(mode=0o700)
            os.chown(sub, self._uid, self._gid)

    @property
    def datadir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        """The directory holding the server's UNIX socket."""
        return self.root / "sock"

    @property
    def logdir(self) -> Path:
        """Where the server's output goes."""
        return self.root / "log"

    @property
    def pid(self) -> int:
        """The postmaster's pid (the server must be running)."""
        if self._proc is None:
            raise RuntimeError("the cluster is not running")
        return self._proc.pid

    @property
    def dsn(self) -> str:
        """A libpq DSN for the database over the UNIX socket."""
        return f"host={self.sockdir} port={self.port} dbname={self.dbname} user={PG_USER}"

    @property
    def tcp_dsn(self) -> str:
        """A libpq DSN for the database over TCP on 127.0.0.1."""
        return f"host={HOST} port={self.port} dbname={self.dbname} user={PG_USER}"

    # -- life cycle

    def __enter__(self) -> Self:
        try:
            self.init()
            self.start()
            self.create_database()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _as_postgres(self, argv: list[str]) -> None:
        subprocess.run(
            argv,
            user=self._uid,
            group=self._gid,
            extra_groups=[],
            cwd=self.root,
            env={"PATH": "/usr/bin:/bin", "LANG": "C"},
            capture_output=True,
            check=True,
            timeout=120,
        )

    def init(self) -> None:
        """Create the cluster (``initdb``, trust authentication, no fsync)."""
        self._as_postgres(
            [
                str(PG_BIN / "initdb"),
                "--pgdata",
                str(self.datadir),
                "--username",
                PG_USER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ]
        )

    def start(self) -> None:
        """Start ``postgres`` on a free port and wait until it accepts connections."""
        if self._proc is not None:
            raise RuntimeError("the cluster is already running")
        self.port = self.port or free_port()
        with (self.logdir / "postgres.log").open("ab") as out:
            self._proc = subprocess.Popen(
                [
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-k",
                    str(self.sockdir),
                    "-p",
                    str(self.port),
                    "-c",
                    f"listen_addresses={HOST}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "synchronous_commit=off",
                ],
                user=self._uid,
                group=self._gid,
                extra_groups=[],
                cwd=self.root,
                env={"PATH": "/usr/bin:/bin", "LANG": "C"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        dsn = f"host={self.sockdir} port={self.port} dbname=postgres user={PG_USER}"
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._proc.returncode}:\n{self.log()}")
            try:
                with psycopg.connect(dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres not ready after {START_TIMEOUT} s:\n{self.log()}"
                    ) from None
                time.sleep(0.05)

    def create_database(self) -> None:
        """Create the test database."""
        self.execute(f'CREATE DATABASE "{self.dbname}"', dbname="postgres")

    def stop(self) -> None:
        """Fast shutdown (SIGINT, after SIGCONT in case it is paused); SIGKILL its group if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Stop the server for the ``with`` block, then start it again on the same port."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the postmaster for the ``with`` block: connections queue and are never answered."""
        pid = self.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove every file of the cluster."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- observation

    def execute(self, sql: str, params: tuple[Any, ...] = (), *, dbname: str | None = None) -> None:
        """Run one statement (autocommit) as the superuser."""
        import psycopg

        dsn = f"host={self.sockdir} port={self.port} dbname={dbname or self.dbname} user={PG_USER}"
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as db:
            db.execute(sql.encode(), params)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query in the test database."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as db:
            return list(db.execute(sql.encode(), params).fetchall())

    def log(self) -> str:
        """The server's output so far."""
        try:
            return (self.logdir / "postgres.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
