"""Helpers shared by the tests of ``nsprov serve`` (and by those of the post-login fast path and the scan cache)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from nsprov._config import config_from_mapping
from nsprov._identity import MailUser
from nsprov._location import MailLocation
from nsprov._model import Namespace
from nsprov._perms import Identity
from nsprov._serve.log import Log
from nsprov._serve.options import ServeOptions
from nsprov._serve.resolver import Answer, Resolver
from nsprov._serve.server import Server
from nsprov.exceptions import IdentityError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from nsprov._config import Config


REPO = Path(__file__).resolve().parents[2]


EXAMPLES = REPO / "examples" / "serve"


NSPROV = str(Path(sys.executable).with_name("nsprov"))


HELLO = b"H3\t2\t0\t\tnsprov\n"


ME, MY_GID = os.getuid(), os.getgid()


ROOT = os.geteuid() == 0


def maildir(path: Path, mode: int = 0o755) -> Path:
    """A maildir with cur, new and tmp, all *mode*."""
    path.mkdir()
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir()
        (path / sub).chmod(mode)
    path.chmod(mode)
    return path


@pytest.fixture(name="base")
def _base() -> Iterator[Path]:
    """A fresh directory whose ancestors everybody may search (unlike pytest's tmp_path)."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nsprov-serve-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(name="spool")
def _spool(base: Path) -> Path:
    """A spool: two world-readable maildirs and one for the test's group only."""
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    maildir(spool / "sales")
    maildir(spool / "Weird Name")
    team = maildir(spool / "team", 0o750)
    for p in (team, team / "cur", team / "new", team / "tmp"):
        os.chown(p, -1, MY_GID)
    return spool


def make_config(spool: Path, **namespace: Any) -> Config:
    """A config serving *spool* under Shared/, without directory creation unless asked."""
    return config_from_mapping(
        {
            "spool": [{"path": str(spool), "prefix": "Shared/{name}/"}],
            "namespace": {"create_dirs": False, **namespace},
        }
    )


class Identities:
    """A stand-in for NSS: user name -> uid, gid, supplementary groups; mutable by tests."""

    def __init__(self) -> None:
        self.users: dict[str, tuple[int, int, set[int]]] = {
            "member": (70001, 70001, {MY_GID}),
            "other": (70002, 70002, set()),
        }
        self.calls = 0

    def __call__(self, config: Config, user: str, home: str | None) -> MailUser:
        self.calls += 1
        if user not in self.users:
            raise IdentityError(f"unknown user {user!r}")
        uid, gid, groups = self.users[user]
        return MailUser(
            user=user,
            home=home or f"/home/{user}",
            identity=Identity(uid=uid, gid=gid, groups=frozenset(groups)),
        )


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def prefixes(answer: Answer) -> set[str]:
    """The namespace prefixes in a found answer."""
    fields = json.loads(answer.value) if answer.value else {}
    return {v for k, v in fields.items() if k.endswith("/prefix")}


def reply_prefixes(line: bytes) -> set[str]:
    """The namespace prefixes in a dict-proxy ``O`` reply line."""
    assert line.startswith(b"O")
    fields = json.loads(line[1:].replace(b"\x01t", b"\t").replace(b"\x01n", b"\n"))
    return {v for k, v in fields.items() if k.endswith("/prefix")}


def ns(name: str, prefix: str | None = None, root: str = "/spool/x") -> Namespace:
    """A public namespace with per-user index and control directories."""
    return Namespace(
        name=name,
        prefix=prefix or f"Shared/{name}/",
        location=MailLocation(
            root=root, index=f"/home/u/.nsprov/{name}", control=f"/home/u/.nsprov/{name}"
        ),
    )


@contextlib.contextmanager
def running(
    config: Config,
    base: Path,
    *,
    resolver: Resolver | None = None,
    stamp: str | None = None,
    **options: Any,
) -> Iterator[tuple[Server, io.StringIO]]:
    """A server in a thread with its own event loop; yields it and its log."""
    out = io.StringIO()
    opts = ServeOptions(socket_path=str(base / "s.sock"), **options)
    server = Server(
        config,
        opts,
        stamp=stamp,
        log=Log("debug", stream=out),
        resolver=resolver
        or Resolver(identify=Identities(), budget=opts.reply_budget, ttl=opts.cache_ttl),
    )
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def target() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_until_complete(server.serve())

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        yield server, out
    finally:
        server.request_stop_threadsafe()
        thread.join(10)
        loop.close()


def connect(server: Server) -> socket.socket:
    """A client socket connected to *server*."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(server.options.socket_path)
    return sock


def read_lines(sock: socket.socket, count: int, sep: bytes = b"\n") -> list[bytes]:
    """Read until *count* lines arrived (or EOF)."""
    data = b""
    while data.count(sep) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(sep)[:count]


def at_eof(sock: socket.socket) -> bool:
    """Whether the server closed the connection (after any pending data)."""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return True


def wait_for(check: Callable[[], bool], timeout: float = 10) -> None:
    """Poll *check* until true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def lookup_nobody(sock: Path) -> set[str]:
    """Ask a running ``nsprov serve`` for the real NSS user nobody (home from the key)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(5)
        c.connect(str(sock))
        c.sendall(HELLO + b"Lshared/userdb/nobody//nonexistent\tnobody\n")
        (reply,) = read_lines(c, 1)
    return reply_prefixes(reply)


def redis_get(key: bytes) -> bytes:
    """A RESP ``GET`` of *key*, as Dovecot's redis dict sends it."""
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
