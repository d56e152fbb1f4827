"""Creating missing index and control directories as the user, never as root.

:func:`make_dirs_as` forks a child that drops to the user's identity first;
:func:`dir_helper` is the loop of the helper process (``python -m nsprov._serve
--dir-helper``) the server talks to through :class:`DirMaker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .log import Log

#: How long the directory helper gives one user's directories.
DIR_HELPER_TIMEOUT = 5.0


def make_dirs_as(
    uid: int, gid: int, groups: Sequence[int], paths: Sequence[str], timeout: float
) -> dict[str, Any]:
    """Fork a child that becomes *uid*/*gid*/*groups* and creates *paths*; wait up to *timeout*.

    Call only from a single-threaded process (the directory helper).
    """
    if uid == 0:
        return {"error": "refusing to create directories as root"}
    from .._engine import drop_privileges, ensure_dirs  # noqa: PLC0415 - before fork, once
    from .._identity import MailUser  # noqa: PLC0415
    from .._perms import Identity  # noqa: PLC0415

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; covered through the helper tests
        os.close(r)
        status = 0
        try:
            drop_privileges(MailUser(user="", home=None, identity=Identity(uid, gid, groups)))
            result: dict[str, Any] = {"failures": ensure_dirs(paths)}
        except BaseException as e:
            result = {"error": f"{type(e).__name__}: {e}"}
            status = 1
        data = json.dumps(result).encode()
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(w, data) :]
        os._exit(status)
    os.close(w)
    import select  # noqa: PLC0415

    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"error": f"creating directories took longer than {timeout}s"}
            ready, _, _ = select.select([r], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    os.waitpid(pid, 0)
    try:
        parsed: dict[str, Any] = json.loads(b"".join(chunks))
    except ValueError:
        return {"error": "the directory child died"}
    return parsed


def dir_helper(stdin: Any = None, stdout: Any = None, timeout: float = DIR_HELPER_TIMEOUT) -> int:
    """The directory helper's loop: one JSON request per line in, one JSON result per line out."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout.buffer
    for line in stdin:
        try:
            req = json.loads(line)
            result = make_dirs_as(
                int(req["uid"]),
                int(req["gid"]),
                [int(g) for g in req["groups"]],
                [str(p) for p in req["paths"]],
                timeout,
            )
        except (ValueError, KeyError, TypeError) as e:
            result = {"error": f"bad request: {e}"}
        stdout.write(json.dumps(result).encode() + b"\n")
        stdout.flush()
    return 0


class DirMaker:
    """The server's side of the directory helper: started with the server, restarted if it died.

    Starting it is a new Python process (over 100 ms on a small machine), so
    :meth:`Server.start` starts it before the socket exists: no lookup waits on it.
    """

    def __init__(self, log: Log, timeout: float = DIR_HELPER_TIMEOUT) -> None:
        self.log = log
        self.timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the helper now, if it is not running (:meth:`ensure` restarts it if it died)."""
        async with self._lock:
            await self._start()

    async def _start(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-m",
            "nsprov._serve",
            "--dir-helper",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.log("debug", "dir-helper-started", pid=self._proc.pid)
        return self._proc

    async def ensure(
        self, uid: int, gid: int, groups: Sequence[int], paths: Sequence[str]
    ) -> str | None:
        """Create *paths* as the given identity; None on success, else what went wrong."""
        request = json.dumps({"uid": uid, "gid": gid, "groups": list(groups), "paths": list(paths)})
        async with self._lock:
            try:
                stdin, stdout = _pipes(await self._start())
                stdin.write(request.encode() + b"\n")
                await stdin.drain()
                line = await asyncio.wait_for(stdout.readline(), self.timeout + 1)
                if not line:
                    raise ConnectionError("the directory helper exited")
                result = json.loads(line)
            except (OSError, ValueError, TimeoutError) as e:
                await self.close()
                return f"directory helper: {type(e).__name__}: {e}"
        if "error" in result:
            return str(result["error"])
        failures = result.get("failures") or []
        if failures:
            return f"cannot create {len(failures)} directories: {failures[0]}"
        return None

    async def close(self) -> None:
        """Stop the helper (it exits when its stdin closes)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 2)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _pipes(
    proc: asyncio.subprocess.Process,
) -> tuple[asyncio.StreamWriter, asyncio.StreamReader]:
    if proc.stdin is None or proc.stdout is None:  # pragma: no cover - started with PIPE
        raise OSError("the directory helper has no pipes")
    return proc.stdin, proc.stdout
