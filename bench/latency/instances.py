"""Dovecot instances and their wiring, the ``nsprov serve`` processes, and a running subject."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import subprocess
import time
from typing import TYPE_CHECKING

import attrs
from tests.live.harness import Dovecot, User

from .imap import Sample, imap_login
from .report import p90, say
from .settings import CLIENT_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from .subjects import Subject
    from .target import Target


#: The dict file of the ``nsprov-serve`` subject, as docs/serve.md ships it.
DICT_CONF = """\
uri = redis:path={socket}:timeout_msecs=1800
iterate_disable = yes
key userdb {{
  key = userdb/%u/%{{userdb:home}}
  format = json
}}
userdb_objects = userdb
"""


#: Appended to every instance's dovecot.conf: 32 clients share a few users from one address.
EXTRA_CONF = "mail_max_userip_connections = 1000\n"


class DictUserdbDovecot(Dovecot):
    """The harness's Dovecot with a second userdb, the dict userdb of ``nsprov serve``."""

    USERDB_BLOCK = "userdb {\n  driver = passwd\n}\n"

    def __init__(self, workdir: Path, users: Iterable[User], *, dict_conf: Path) -> None:
        super().__init__(workdir, users, extra_conf=EXTRA_CONF)
        self.dict_conf = dict_conf

    def config_text(self) -> str:
        text = super().config_text()
        if self.USERDB_BLOCK not in text:
            raise RuntimeError("the harness's userdb block changed; cannot add the dict userdb")
        return text.replace(self.USERDB_BLOCK, userdb_blocks(self.dict_conf))


def userdb_blocks(dict_conf: Path) -> str:
    """The two userdb blocks of docs/serve.md, the second one reading ``dict_conf``."""
    return (
        "userdb {\n  driver = passwd\n  result_success = continue-ok\n}\n"
        f"userdb {{\n  driver = dict\n  args = {dict_conf}\n"
        "  result_failure = continue\n  result_internalfail = continue\n}\n"
    )


def wiring_differences(target: Target, socket_path: Path, dict_conf: Path) -> list[str]:
    """The benchmark's wiring lines that ``nsprov serve --print-dovecot-config`` does not print."""
    printed = subprocess.run(
        [
            str(target.script),
            "serve",
            "--print-dovecot-config",
            f"--socket={socket_path}",
            f"--dict-file={dict_conf}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stdout
    theirs = {line.strip() for line in printed.splitlines()}
    ours = userdb_blocks(dict_conf) + DICT_CONF.format(socket=socket_path)
    return [line.strip() for line in ours.splitlines() if line.strip() not in theirs]


_STOP = re.compile(r"event=stop ((?:\w+=\d+ ?)+)")


_MISS = re.compile(r"event=lookup .*cache=miss .*ms=([\d.]+)")


class ServeProcess:
    """``nsprov serve`` as a child in its own session; stopped by its process group id."""

    def __init__(self, workdir: Path, argv: Sequence[str]) -> None:
        self.socket = workdir / "serve.sock"
        self.log_path = workdir / "serve.log"
        argv = [a.replace("{socket}", str(self.socket)) for a in argv]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while "event=start" not in self.log():  # logged once the socket accepts
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{' '.join(argv)} did not start: " + self.log().strip()[-300:])
            time.sleep(0.02)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stats(self) -> dict[str, int] | None:
        """The counters of the ``event=stop`` line (after :meth:`stop`), None when missing."""
        m = _STOP.search(self.log())
        if m is None:
            return None
        return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}

    def miss_times(self) -> list[float]:
        """Seconds the server spent on each cache miss (``event=lookup … cache=miss … ms=``)."""
        return [float(m) / 1000 for m in _MISS.findall(self.log())]

    def problems(self) -> list[str]:
        """The server's warning and error lines."""
        return [
            line
            for line in self.log().splitlines()
            if "level=warning" in line or "level=error" in line
        ]

    def stop(self) -> None:
        """SIGTERM to the server (it logs its counters and stops its directory helper)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def start_instance(
    stack: contextlib.ExitStack,
    workdir: Path,
    subject: Subject,
    users: Sequence[User],
    target: Target,
) -> tuple[Dovecot, ServeProcess | None]:
    """Start (and register the stop of) the Dovecot, and the server, of one subject."""
    workdir.mkdir(parents=True, exist_ok=True)
    serve = None
    if subject.serve_argv is not None:
        serve = ServeProcess(workdir, subject.serve_argv)
        stack.callback(serve.stop)
    dovecot: Dovecot
    if subject.dict_userdb:
        if serve is None:
            raise RuntimeError(f"{subject.name}: a dict userdb needs a server")
        dict_conf = workdir / "nsprov-userdb.conf.ext"
        dict_conf.write_text(DICT_CONF.format(socket=serve.socket))
        dict_conf.chmod(0o644)
        for line in wiring_differences(target, serve.socket, dict_conf):
            say(f"  note: {subject.name}: not in `nsprov serve --print-dovecot-config`: {line!r}")
        dovecot = DictUserdbDovecot(workdir, users, dict_conf=dict_conf)
    else:
        program = subject.program
        if program is not None and serve is not None:
            program = program.replace("{socket}", str(serve.socket))
        postlogin = {"imap": program} if program else None
        dovecot = Dovecot(workdir, users, postlogin=postlogin, extra_conf=EXTRA_CONF)
    stack.enter_context(dovecot)
    return dovecot, serve


@attrs.define
class Live:
    """A running subject and its samples."""

    subject: Subject
    dovecot: Dovecot
    serve: ServeProcess | None = None
    samples: list[Sample] = attrs.Factory(list)
    #: Every login sent to this instance (warm-up, check, rounds, throughput).
    logins: int = 0

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    def median(self) -> float | None:
        ok = self.ok
        return statistics.median(s.login for s in ok) if ok else None

    def p90(self) -> float | None:
        ok = self.ok
        return p90([s.login for s in ok]) if ok else None

    def login(self, user: User, *, timeout: float = CLIENT_TIMEOUT) -> Sample:
        self.logins += 1
        return imap_login(self.dovecot.imap_port, user, timeout=timeout)
