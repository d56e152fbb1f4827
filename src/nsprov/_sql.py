"""Last-login records in SQL: SQLite built in, PostgreSQL with the ``postgresql`` extra.

Statements are parameterised (the user name is data, never SQL text); the
table name is an identifier checked at config load.  Each call has a hard
time limit: a database that hangs costs the login at most ``timeout``
seconds, then the login goes on.

Schema (created if missing)::

    CREATE TABLE last_login (
        username   TEXT PRIMARY KEY,
        protocol   TEXT NOT NULL,
        ip         TEXT NOT NULL,
        login_time BIGINT NOT NULL      -- seconds since the epoch, UTC
    )
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config.actionconf import LastLoginConfig

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {table} ("
    "username TEXT PRIMARY KEY, protocol TEXT NOT NULL, ip TEXT NOT NULL, login_time BIGINT NOT NULL)"
)
UPSERT = (
    "INSERT INTO {table} (username, protocol, ip, login_time) VALUES ({p}, {p}, {p}, {p}) "
    "ON CONFLICT (username) DO UPDATE SET protocol = excluded.protocol, ip = excluded.ip, "
    "login_time = excluded.login_time"
)


def _sqlite(c: LastLoginConfig, row: tuple[str, str, str, int]) -> None:
    import sqlite3  # noqa: PLC0415 - only for the sqlite backend

    db = sqlite3.connect(c.database, timeout=c.timeout, isolation_level=None)
    try:
        db.execute(SCHEMA.format(table=c.table))
        db.execute(UPSERT.format(table=c.table, p="?"), row)
    finally:
        db.close()


def _postgresql(c: LastLoginConfig, row: tuple[str, str, str, int]) -> None:
    import psycopg  # noqa: PLC0415 - the optional "postgresql" extra

    ms = max(1, int(c.timeout * 1000))
    with psycopg.connect(
        c.dsn,
        connect_timeout=max(2, int(c.timeout + 0.999)),
        options=f"-c statement_timeout={ms} -c lock_timeout={ms}",
        autocommit=True,
    ) as db:
        db.execute(SCHEMA.format(table=c.table).encode())
        db.execute(UPSERT.format(table=c.table, p="%s").encode(), row)


def record_login(
    c: LastLoginConfig,
    *,
    user: str,
    protocol: str,
    ip: str,
    when: int,
    budget: float | None = None,
) -> None:
    """Upsert the user's row; raise ``TimeoutError`` if the database does not answer in time.

    Waits at most ``c.timeout`` (plus half a second for the driver to give
    up by itself), and never more than *budget* seconds: what is left of the
    post-login deadline, so that a hung database costs this action only.
    """
    backend = _sqlite if c.backend == "sqlite" else _postgresql
    row = (user, protocol or "-", ip or "-", when)
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            backend(c, row)
        except BaseException as e:
            outcome.append(e)
        else:
            outcome.append(None)

    thread = threading.Thread(target=work, name="nsprov-last-login", daemon=True)
    thread.start()
    wait = c.timeout + 0.5 if budget is None else max(0.0, min(c.timeout + 0.5, budget))
    thread.join(wait)
    if not outcome:
        raise TimeoutError(f"{c.backend} did not answer within {min(c.timeout, wait):g}s")
    error: Any = outcome[0]
    if error is not None:
        raise error
