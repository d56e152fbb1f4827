"""The Lua userdb route for live tests: Dovecot 2.3 or 2.4 asking ``nsprov serve`` through Lua.

What is wired is what is shipped: the script is the installed package's
``nsprov/lua/nsprov-userdb.lua`` (byte for byte, copied where the Dovecot under test reads
it, as the printer writes it to ``/etc/dovecot/``), and the userdb blocks are
the ones ``docs/serve.md`` documents (:func:`userdb_conf`), in place of the harness's own
``userdb passwd`` block.  No post-login script is configured.

* :class:`LuaDovecot` / :class:`LuaDovecot24`: the harness's Dovecot 2.3 (host) and 2.4
  (Debian 13 chroot) with that wiring.
* :class:`ServeProcess`: ``nsprov serve`` as a subprocess, on the host or inside the
  chroot (2.4 users and paths exist only there).
* :class:`FakeServer`: a server on the socket that misbehaves on purpose (accepts and never
  answers, answers garbage, answers too much), for the failure modes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal, Self

from .chroot24 import Dovecot24, to_outside
from .harness import Dovecot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from .chroot24 import ChrootUser
    from .harness import User

#: The shipped script, as installed with the package under test.
SCRIPT = Path(str(files("nsprov") / "lua" / "nsprov-userdb.lua"))
#: The harness's own userdb blocks, replaced by the Lua wiring.
HARNESS_USERDB_23 = "userdb {\n  driver = passwd\n}\n"
HARNESS_USERDB_24 = "userdb passwd {\n}\n"

Behaviour = Literal["hang", "garbage", "oversized", "uid", "nil", "close"]


def userdb_conf(
    version: str,
    script: str | PurePosixPath,
    *,
    socket_path: str | PurePosixPath | None = None,
    timeout: float | str | None = None,
    max_reply: int | str | None = None,
    extra_settings: Mapping[str, str] | None = None,
) -> str:
    """The documented userdb blocks for *version* (``docs/serve.md``, "The Lua route").

    2.4 takes the script's settings in ``lua_settings``; 2.3 has no such place (its ``args``
    takes only ``file=``, ``blocking=`` and ``cache_key=``), so for 2.3 the settings must be
    None and the script's defaults apply, unless the caller edits its copy (:func:`install_script`).
    """
    if version == "2.3":
        if socket_path is not None or timeout is not None or max_reply is not None:
            raise ValueError("Dovecot 2.3 passes no settings to a Lua userdb: edit DEFAULTS")
        return (
            "userdb {\n"
            "  driver = passwd\n"
            "  result_success = continue-ok\n"
            "}\n"
            "userdb {\n"
            "  driver = lua\n"
            f"  args = file={script} blocking=yes cache_key=\n"
            "  result_failure = continue\n"
            "  result_internalfail = continue\n"
            "}\n"
        )
    settings = {
        "socket": socket_path,
        "timeout": timeout if timeout is None or isinstance(timeout, str) else f"{timeout:g}",
        "max_reply": max_reply if max_reply is None else str(max_reply),
        **(extra_settings or {}),
    }
    lines = [f"    {k} = {v}" for k, v in settings.items() if v is not None]
    return (
        "userdb passwd {\n"
        "  result_success = continue-ok\n"
        "}\n"
        "userdb lua {\n"
        f"  lua_file = {script}\n"
        "  use_worker = yes\n"
        "  result_failure = continue\n"
        "  result_internalfail = continue\n"
        "  lua_settings {\n" + "".join(f"{line}\n" for line in lines) + "  }\n"
        "}\n"
    )


#: Where docs/serve.md installs the script and puts the socket.
DOCUMENTED_SCRIPT = "/etc/dovecot/nsprov-userdb.lua"
DOCUMENTED_SOCKET = "/run/nsprov/userdb.sock"


def documented_userdb(version: str) -> str:
    """The userdb blocks docs/serve.md shows for *version*, with its paths and defaults."""
    if version == "2.3":
        return userdb_conf("2.3", DOCUMENTED_SCRIPT)
    return userdb_conf(
        "2.4", DOCUMENTED_SCRIPT, socket_path=DOCUMENTED_SOCKET, timeout=1, max_reply=7680
    )


def install_script(target: Path, *, defaults: Mapping[str, str] | None = None) -> Path:
    """Copy the shipped script to *target* (root, 0644), optionally with DEFAULTS edited.

    *defaults* maps a DEFAULTS key to the Lua literal that replaces its value (Dovecot
    2.3's only way to configure the script, as documented).
    """
    text = SCRIPT.read_text(encoding="utf-8")
    for key, literal in (defaults or {}).items():
        head, sep, tail = text.partition(f"\n  {key} = ")
        if not sep:
            raise AssertionError(f"no DEFAULTS entry {key!r} in the shipped script")
        _, comma, rest = tail.partition(",\n")
        text = f"{head}{sep}{literal}{comma}{rest}"
    target.write_text(text, encoding="utf-8")
    os.chown(target, 0, 0)
    target.chmod(0o644)
    return target


def _swap_userdb(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise AssertionError(f"expected the harness's {old!r} once in its dovecot.conf")
    return text.replace(old, new)


class LuaDovecot(Dovecot):
    """The harness's Dovecot 2.3 with the Lua userdb wiring instead of its userdb block."""

    def __init__(
        self, workdir: Path, users: Iterable[User], *, userdb: str, extra_conf: str = ""
    ) -> None:
        super().__init__(workdir, users, extra_conf=extra_conf)
        self.userdb = userdb

    def config_text(self) -> str:
        """The harness config with :attr:`userdb` in place of its userdb block."""
        return _swap_userdb(super().config_text(), HARNESS_USERDB_23, self.userdb)


class LuaDovecot24(Dovecot24):
    """The chroot's Dovecot 2.4 with the Lua userdb wiring instead of its ``userdb passwd``."""

    def __init__(
        self,
        workdir: str | PurePosixPath,
        users: Iterable[ChrootUser],
        *,
        userdb: str,
        root: Path,
        extra_conf: str = "",
    ) -> None:
        super().__init__(workdir, users, extra_conf=extra_conf, root=root)
        self.userdb = userdb

    def config(self) -> str:
        """The chroot config with :attr:`userdb` in place of its ``userdb passwd`` block."""
        return _swap_userdb(super().config(), HARNESS_USERDB_24, self.userdb)


class ServeProcess:
    """``nsprov serve`` as a subprocess; *root* (the 2.4 chroot) or ``/`` (the host).

    *nsprov*, *config* and *socket* are paths as the server sees them (inside the root);
    its log is a host file.
    """

    def __init__(
        self,
        nsprov: str,
        config: str | PurePosixPath,
        socket_path: str | PurePosixPath,
        log_path: Path,
        *args: str,
        root: Path | None = None,
    ) -> None:
        self.root = root
        self.socket = PurePosixPath(socket_path)
        self.log_path = log_path
        argv = [nsprov, "serve", f"--config={config}", f"--socket={socket_path}", *args]
        self.argv = ["/usr/sbin/chroot", str(root), *argv] if root is not None else argv
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_outside(self) -> Path:
        """The socket's host path."""
        return to_outside(self.root, self.socket) if self.root is not None else Path(self.socket)

    def start(self) -> None:
        """Start the server and wait for its start line."""
        mark = len(self.log())
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
        with self.log_path.open("a") as err:
            self.proc = subprocess.Popen(
                self.argv, stderr=err, stdout=err, stdin=subprocess.DEVNULL, env=env
            )
        self.wait_log("event=start", mark)

    def stop(self) -> None:
        """SIGCONT, SIGTERM, SIGKILL after 10 s; safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def signal(self, sig: signal.Signals) -> None:
        """Send *sig* to the server (through the chroot binary, which exec'ed it)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def log(self) -> str:
        """Everything the server logged."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, since: int = 0, timeout: float = 20) -> None:
        """Wait until *text* appears in the log after offset *since*."""
        deadline = time.monotonic() + timeout
        while text not in self.log()[since:]:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nsprov serve exited:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not logged:\n{self.log()}")
            time.sleep(0.02)


#: What each misbehaving server answers to any request (None: nothing, ever).
_ANSWERS: dict[str, Callable[[int], bytes | None]] = {
    "hang": lambda _: None,
    "garbage": lambda _: b"+this is not redis\r\n",
    # A bulk string over the script's cap, followed by that many bytes.
    "oversized": lambda cap: b"$%d\r\n" % (cap + 1) + b"{" + b"x" * (cap - 1) + b"}\r\n",
    # A well-formed reply that tries to set a field other than a namespace's.
    "uid": lambda _: b'$11\r\n{"uid":"0"}\r\n',
    "nil": lambda _: b"$-1\r\n",
    "close": lambda _: b"",
}


class FakeServer:
    """A misbehaving server on a UNIX socket at *path* (a host path), in a thread.

    It accepts every connection and answers each with :data:`_ANSWERS` [*behaviour*];
    ``hang`` keeps connections open without a byte until :meth:`close`.
    """

    def __init__(self, path: Path, behaviour: Behaviour, *, cap: int = 7680) -> None:
        self.path = path
        self.answer = _ANSWERS[behaviour](cap)
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock.bind(str(path))
        path.chmod(0o600)
        self._sock.listen(128)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.answer is None:
                self._held.append(conn)
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(self.answer)

    def close(self) -> None:
        """Stop accepting, drop held connections, remove the socket."""
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        for conn in self._held:
            conn.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def park_socket(path: Path) -> Path:
    """Move the socket at *path* aside (the server keeps listening on it); the new path."""
    parked = path.with_name(path.name + ".parked")
    shutil.move(path, parked)
    return parked


def median(values: Sequence[float]) -> float:
    """The median of *values*."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
