"""A harness for tests against a real Dovecot 2.3 with real UNIX accounts.

Three pieces, all cleaned up even when a test fails:

* :class:`SystemAccounts` creates throwaway users and groups (``useradd``/``groupadd``) and removes
  them again, killing whatever those users still run.
* :class:`Dovecot` writes a standalone ``dovecot.conf`` into a work directory and runs
  ``dovecot -F`` as a child process on free loopback ports, optionally wiring a post-login
  program per protocol as described in the Dovecot contract, section 1.  Its base
  :class:`DovecotInstance` (clients, error lines, life cycle) is shared with the Dovecot 2.4
  of the chroot (``chroot24.Dovecot24``).
* Small IMAP helpers (NAMESPACE and LIST parsing, modified UTF-7, quoting) and file helpers
  (:func:`make_maildir`, :func:`write_script`).

Everything here needs root; :func:`live_available` says why not when it cannot run.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import imaplib
import itertools
import os
import poplib
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from types import TracebackType

DOVECOT = Path("/usr/sbin/dovecot")
DOVEADM = Path("/usr/bin/doveadm")
SCRIPT_LOGIN = Path("/usr/lib/dovecot/script-login")
USERADD = "/usr/sbin/useradd"
USERDEL = "/usr/sbin/userdel"
GROUPADD = "/usr/sbin/groupadd"
GROUPDEL = "/usr/sbin/groupdel"
HOST = "127.0.0.1"
START_TIMEOUT = 15.0
CLIENT_TIMEOUT = 15.0
PROTOCOLS = ("imap", "pop3")

#: The environment the Dovecot master starts with. ``TZ`` is in Dovecot's default
#: ``import_environment``; ``NSPT_CANARY`` is not, so it must never reach a child process.
DOVECOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TZ": "UTC", "NSPT_CANARY": "leaked"}

_NAME_RE = re.compile(r"[a-z0-9_-]+")
_MAX_NAME = 32


def live_available() -> str | None:
    """Return ``None`` when live tests can run here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "live tests need root"
    for needed in (DOVECOT, SCRIPT_LOGIN, DOVEADM, Path(USERADD)):
        if not needed.exists():
            return f"live tests need {needed}"
    return None


# --------------------------------------------------------------------------------------------
# System accounts


@attrs.frozen(kw_only=True)
class Group:
    """A UNIX group created for a test."""

    name: str
    gid: int


@attrs.frozen(kw_only=True)
class User:
    """A UNIX user created for a test, with its Dovecot password."""

    name: str
    gid: int
    uid: int
    home: Path
    password: str
    #: Supplementary groups given to :meth:`SystemAccounts.user` (the primary group excluded).
    groups: tuple[Group, ...] = ()


def _run(argv: list[str], *, attempts: int = 20) -> subprocess.CompletedProcess[str]:
    """Run an account tool, retrying while another process holds the passwd/group lock."""
    for attempt in range(attempts):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode == 0:
            return proc
        if "lock" not in proc.stderr.lower() or attempt == attempts - 1:
            break
        time.sleep(0.05 * (attempt + 1))
    raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


def _pids_of(uids: set[int]) -> list[int]:
    """Pids of live (not zombie) processes with a real, effective, saved or fs uid in ``uids``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").split()[:1] == ["Z"]:
            continue
        if uids.intersection(int(uid) for uid in fields.get("Uid", "").split()):
            pids.append(int(entry.name))
    return pids


def kill_user_processes(uids: Iterable[int], *, timeout: float = 5.0) -> None:
    """SIGKILL every live process running as one of ``uids`` (each by pid) until none is left."""
    wanted = set(uids)
    if not wanted:
        return
    deadline = time.monotonic() + timeout
    while pids := _pids_of(wanted):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of uids {sorted(wanted)} survive SIGKILL: {pids}")
        time.sleep(0.01)


class SystemAccounts:
    """Throwaway UNIX users and groups, always removed. Context manager.

    Real names look like ``nspt3fa2c1-alice``: the prefix, a random token per instance, a
    counter, then the label, cut to 32 characters. Homes are ``<base>/<real name>``.
    """

    def __init__(self, base: Path, prefix: str = "nspt") -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]*", prefix):
            raise ValueError(f"bad account prefix {prefix!r}")
        self.base = base
        self.prefix = prefix
        self.users: list[User] = []
        self.groups: list[Group] = []
        self._token = secrets.token_hex(3)
        self._counter = itertools.count(1)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _real_name(self, label: str) -> str:
        if not _NAME_RE.fullmatch(label):
            raise ValueError(f"account label {label!r} must match [a-z0-9_-]+")
        name = f"{self.prefix}{self._token}{next(self._counter):x}-{label}"
        return name[:_MAX_NAME]

    def group(self, name: str) -> Group:
        """Create a group whose real name is unique and derived from ``name``."""
        real = self._real_name(name)
        _run([GROUPADD, real])
        group = Group(name=real, gid=_gid_of(real))
        self.groups.append(group)
        return group

    def user(
        self,
        name: str,
        *,
        password: str = "secret",
        primary: Group | None = None,
        groups: Iterable[Group] = (),
        home: bool = True,
    ) -> User:
        """Create a user (primary group: a fresh one unless given) with a 0700 home and Maildir."""
        if any(c in password for c in ":\n\r\t"):
            raise ValueError("password must not contain ':', tabs or line breaks")
        if primary is None:
            primary = self.group(name)
        real = self._real_name(name)
        home_dir = self.base / real
        argv = [USERADD, "--no-create-home", "--no-user-group", "--home-dir", str(home_dir)]
        argv += ["--gid", str(primary.gid), "--shell", "/usr/sbin/nologin"]
        supplementary = tuple(groups)
        if supplementary:
            argv += ["--groups", ",".join(g.name for g in supplementary)]
        _run([*argv, real])
        uid = _uid_of(real)
        user = User(
            name=real,
            gid=primary.gid,
            uid=uid,
            home=home_dir,
            password=password,
            groups=supplementary,
        )
        self.users.append(user)
        if home:
            home_dir.mkdir(mode=0o700)
            os.chown(home_dir, uid, primary.gid)
            home_dir.chmod(0o700)
            make_maildir(home_dir / "Maildir", messages=0, owner=uid, group=primary.gid, mode=0o700)
        return user

    def close(self) -> None:
        """Kill the users' processes, delete users, then groups; report every failure at once."""
        problems: list[str] = []
        try:
            kill_user_processes(u.uid for u in self.users)
        except RuntimeError as e:
            problems.append(str(e))
        for user in reversed(self.users):
            try:
                # -f: zombies of the user, which init reaps in its own time, would block userdel.
                _run([USERDEL, "--force", user.name])
            except RuntimeError as e:
                problems.append(str(e))
            shutil.rmtree(user.home, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                Path("/var/mail", user.name).unlink()
        for group in reversed(self.groups):
            try:
                _run([GROUPDEL, group.name])
            except RuntimeError as e:
                problems.append(str(e))
        self.users.clear()
        self.groups.clear()
        if problems:
            raise RuntimeError("account clean-up failed: " + "; ".join(problems))


def _getent(database: str, key: str) -> list[str]:
    proc = subprocess.run(
        ["getent", database, key], capture_output=True, text=True, check=True, timeout=30
    )
    return proc.stdout.strip().split(":")


def _uid_of(name: str) -> int:
    return int(_getent("passwd", name)[2])


def _gid_of(name: str) -> int:
    return int(_getent("group", name)[2])


# --------------------------------------------------------------------------------------------
# Files


def make_maildir(path: Path, *, messages: int, owner: int, group: int, mode: int) -> Path:
    """Create a Maildir (``cur``, ``new``, ``tmp``) holding ``messages`` messages in ``cur``.

    ``path`` and its three subdirectories, and every message file, get ``owner``, ``group`` and
    ``mode``. An existing maildir is reused and gets more messages.
    """
    path.mkdir(parents=True, exist_ok=True)
    subdirs = [path / sub for sub in ("cur", "new", "tmp")]
    for directory in (path, *subdirs):
        directory.mkdir(exist_ok=True)
        os.chown(directory, owner, group)
        directory.chmod(mode)
    stamp = int(time.time())
    for i in range(messages):
        unique = f"{stamp}.M{i}P{os.getpid()}R{secrets.token_hex(4)}.nsprov-test"
        message = path / "cur" / f"{unique}:2,"
        message.write_bytes(
            b"From: sender@example.org\r\n"
            b"To: rcpt@example.org\r\n"
            + f"Subject: test message {i}\r\n".encode()
            + b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            + f"Message-ID: <{unique}@nsprov.test>\r\n".encode()
            + b"\r\nbody\r\n"
        )
        os.chown(message, owner, group)
        message.chmod(mode)
    return path


def write_script(path: Path, body: str, interpreter: str = "/bin/sh") -> Path:
    """Write an executable script (``#!interpreter`` + ``body``), root-owned, mode 0755."""
    path.write_text(f"#!{interpreter}\n{body}")
    os.chown(path, 0, 0)
    path.chmod(0o755)
    return path


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------------------------
# Dovecot


def _traversable(path: Path) -> bool:
    """Whether every directory from ``/`` down to ``path`` can be searched by anybody."""
    return all(p.stat().st_mode & 0o001 for p in (path, *path.parents))


_ERROR_RE = re.compile(r"\b(Error|Fatal|Panic):")


def postlogin_services(postlogin: Mapping[str, str]) -> list[str]:
    """dovecot.conf lines wiring one post-login service per protocol (contract section 1)."""
    lines: list[str] = []
    for protocol, program in postlogin.items():
        lines += [
            f"service {protocol} {{",
            f"  executable = {protocol} {protocol}-postlogin",
            "}",
            f"service {protocol}-postlogin {{",
            f"  executable = script-login {program}",
            f"  unix_listener {protocol}-postlogin {{",
            "  }",
            "}",
        ]
    return lines


class DovecotStartError(RuntimeError):
    """Dovecot did not start listening in time."""


class DovecotInstance:
    """What every live Dovecot shares: 2.3 on the host (:class:`Dovecot`), 2.4 in the chroot.

    A private instance listening on loopback (:data:`HOST`), with an IMAP and a POP3 port,
    an optional post-login program per protocol (contract section 1), started as a child
    process by :meth:`start` and stopped by :meth:`stop` (or a ``with`` block).  Subclasses
    write the config, start and stop the process and read the log; the clients, the error
    lines and the life cycle are here.
    """

    #: How a client failure's note names the instance.
    label = "Dovecot"
    #: Socket timeout of the IMAP and POP3 clients (seconds).
    client_timeout = CLIENT_TIMEOUT

    def __init__(
        self,
        *,
        postlogin: Mapping[str, str] | None = None,
        extra_conf: str = "",
        private_separator: str = "/",
    ) -> None:
        self.postlogin = dict(postlogin or {})
        if unknown := set(self.postlogin) - set(PROTOCOLS):
            raise ValueError(f"post-login only for {PROTOCOLS}, not {sorted(unknown)}")
        if any("\n" in program for program in self.postlogin.values()):
            raise ValueError("a post-login program line cannot contain a newline")
        self.extra_conf = extra_conf
        self.private_separator = private_separator
        self.imap_port = 0
        self.pop3_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what a subclass provides

    def start(self) -> None:
        """Write the config and start Dovecot; return once both ports answer."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop Dovecot; safe to call twice."""
        raise NotImplementedError

    def log(self) -> str:
        """Everything Dovecot logged so far."""
        raise NotImplementedError

    def log_location(self) -> str:
        """Where the log is, as a host path (for the notes of a failed login)."""
        raise NotImplementedError

    # -- life cycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for _, path in self.login_paths():
                PATHS_SEEN[path] = PATHS_SEEN.get(path, 0) + 1
        finally:
            self.stop()

    @property
    def running(self) -> bool:
        """Whether the master process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- observation

    def errors(self) -> list[str]:
        """Log lines at Error, Fatal or Panic level."""
        return error_lines(self.log())

    def login_paths(self) -> list[tuple[str, str]]:
        """``(user, path)`` per nsprov post-login so far: ``lean`` or ``full`` (:func:`login_paths`)."""
        try:
            return login_paths(self.log())
        except OSError:
            return []

    # -- clients

    def _note(self, e: Exception) -> None:
        e.add_note(f"{self.label} log ({self.log_location()}):\n{self.log()}")

    def login_imap(self, name: str, password: str) -> imaplib.IMAP4:
        """An IMAP client logged in as *name* with LOGIN; raises (the log in a note) on failure."""
        client = imaplib.IMAP4(HOST, self.imap_port, timeout=self.client_timeout)
        try:
            client.login(name, password)
        except Exception as e:
            with contextlib.suppress(Exception):
                client.shutdown()
            self._note(e)
            raise
        return client

    def login_pop3(self, name: str, password: str) -> poplib.POP3:
        """A POP3 client logged in as *name* with USER/PASS; raises (the log in a note) on failure."""
        client = poplib.POP3(HOST, self.pop3_port, timeout=self.client_timeout)
        try:
            client.user(name)
            client.pass_(password)
        except Exception as e:
            with contextlib.suppress(Exception):
                client.close()
            self._note(e)
            raise
        return client


#: nsprov's one Info line per post-login (``[postlogin] log_logins``): not a problem to report.
LOGIN_LINE_RE = re.compile(
    r"Info: nsprov: user=\S* served=\S+ skipped=\S+ ms=\d+ path=(?P<path>lean|full|-)$"
)


def login_paths(log: str) -> list[tuple[str, str]]:
    """``(user, path)`` of each nsprov info line in a Dovecot *log*: which login path served it."""
    found = []
    for line in log.splitlines():
        if (m := LOGIN_LINE_RE.search(line)) is not None:
            user = line.split("nsprov: user=", 1)[1].split(" ", 1)[0]
            found.append((user, m.group("path")))
    return found


def wait_login_paths(log: Callable[[], str], count: int, mark: int = 0) -> list[tuple[str, str]]:
    """:func:`login_paths` of ``log()[mark:]``, waiting up to 5 s for *count* info lines.

    Dovecot's log process writes a post-login's line shortly after the login completes.
    """
    deadline = time.monotonic() + 5
    while len(found := login_paths(log()[mark:])) < count:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return found


#: Every live login's path, over the whole run (``tests/live/conftest.py`` prints the tally).
PATHS_SEEN: dict[str, int] = {}


def warm_profiles(programs: Iterable[str]) -> list[str]:
    """``nsprov cache profile --config=X`` for each nsprov post-login line of *programs*.

    The login profile is then warm before the first login, as on a server after the first
    login: every login of the test takes the lean path unless its configuration needs the
    full one (``nsprov cache profile`` says why, and writes nothing).  A line that is not
    ``<nsprov> post-login ... --config=PATH`` is left alone.  Returns the config paths.
    """
    warmed = []
    for program in programs:
        words = program.split()
        if len(words) < 2 or words[1] != "post-login" or not words[0].endswith("/nsprov"):
            continue
        configs = [w.split("=", 1)[1] for w in words if w.startswith("--config=")]
        for config in configs:
            subprocess.run(
                [words[0], "cache", "profile", f"--config={config}"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
                timeout=60,
            )
            warmed.append(config)
    return warmed


def forget_profiles(configs: Iterable[str]) -> None:
    """Remove the login profiles of *configs* (the state directory holds one per config path)."""
    from nsprov._defaults import STATE_DIR
    from nsprov._profile import file_name

    for config in configs:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(STATE_DIR, file_name(config)))


def nsprov_problem(line: str) -> bool:
    """Whether a Dovecot log *line* is one nsprov wrote, other than its per-login Info line."""
    return "nsprov: " in line and not LOGIN_LINE_RE.search(line)


def error_lines(log: str) -> list[str]:
    """The lines of a Dovecot *log* at Error, Fatal or Panic level."""
    return [line for line in log.splitlines() if _ERROR_RE.search(line)]


class Dovecot(DovecotInstance):
    """A private Dovecot 2.3 instance on loopback, started in the foreground as a child process."""

    def __init__(
        self,
        workdir: Path,
        users: Iterable[User],
        *,
        postlogin: Mapping[str, str] | None = None,
        extra_conf: str = "",
        private_separator: str = "/",
        warm_profiles: bool = True,
    ) -> None:
        super().__init__(
            postlogin=postlogin, extra_conf=extra_conf, private_separator=private_separator
        )
        #: Compile each post-login line's login profile before the first login
        #: (:func:`warm_profiles`), so that every login takes the lean path; False for a
        #: test of the cold path.
        self.warm_profiles = warm_profiles
        #: The configs whose profiles :meth:`start` compiled: removed again by :meth:`stop`.
        self._warmed: list[str] = []
        self.workdir = workdir
        self.users = list(users)
        self.conf_path = workdir / "dovecot.conf"
        self.passwd_path = workdir / "passwd"
        self.log_path = workdir / "log" / "dovecot.log"
        self.output_path = workdir / "log" / "master.out"

    # -- configuration

    def config_text(self) -> str:
        """The complete ``dovecot.conf`` for the current ports."""
        w = self.workdir
        lines = [
            "# Written by tests/live/harness.py; standalone, nothing from /etc/dovecot.",
            f"instance_name = nspt-{self.imap_port}",
            f"base_dir = {w}/run",
            f"state_dir = {w}/state",
            f"log_path = {self.log_path}",
            f"info_log_path = {self.log_path}",
            f"debug_log_path = {self.log_path}",
            "auth_verbose = yes",
            "mail_debug = no",
            f"listen = {HOST}",
            "protocols = imap pop3",
            "ssl = no",
            "disable_plaintext_auth = no",
            "auth_mechanisms = plain login",
            "auth_failure_delay = 0",
            "default_login_user = dovenull",
            "default_internal_user = dovecot",
            "default_internal_group = dovecot",
            "first_valid_uid = 100",
            "mail_location = maildir:~/Maildir",
            "maildir_stat_dirs = yes",
            "passdb {",
            "  driver = passwd-file",
            f"  args = {self.passwd_path}",
            "}",
            "userdb {",
            "  driver = passwd",
            "}",
            "namespace inbox {",
            "  inbox = yes",
            "  prefix = ",
            f"  separator = {self.private_separator}",
            "}",
            "service imap-login {",
            "  inet_listener imap {",
            f"    address = {HOST}",
            f"    port = {self.imap_port}",
            "  }",
            "  inet_listener imaps {",
            "    port = 0",
            "  }",
            "}",
            "service pop3-login {",
            "  inet_listener pop3 {",
            f"    address = {HOST}",
            f"    port = {self.pop3_port}",
            "  }",
            "  inet_listener pop3s {",
            "    port = 0",
            "  }",
            "}",
        ]
        lines += postlogin_services(self.postlogin)
        return "\n".join(lines) + "\n" + self.extra_conf + "\n"

    def passwd_text(self) -> str:
        """The passwd-file for the passdb: ``name:{PLAIN}password`` per user."""
        return "".join(f"{u.name}:{{PLAIN}}{u.password}\n" for u in self.users)

    # -- life cycle

    def start(self, *, attempts: int = 3) -> None:
        """Start Dovecot on fresh ports and wait until both greet; retry if a port was taken."""
        if self._proc is not None:
            raise RuntimeError("Dovecot already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not _traversable(self.workdir):
            raise ValueError(f"{self.workdir} must be traversable by Dovecot's unprivileged users")
        self.log_path.parent.mkdir(exist_ok=True)
        if self.warm_profiles:
            self._warmed = warm_profiles(self.postlogin.values())
        self.passwd_path.write_text(self.passwd_text())
        self.passwd_path.chmod(0o644)
        for attempt in range(attempts):
            self.imap_port, self.pop3_port = _two_free_ports()
            self.conf_path.write_text(self.config_text())
            with self.output_path.open("ab") as out:
                self._proc = subprocess.Popen(
                    [str(DOVECOT), "-F", "-c", str(self.conf_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=DOVECOT_ENV,
                    cwd=self.workdir,
                    start_new_session=True,
                )
            try:
                self._wait_ready()
            except DovecotStartError:
                self.stop()
                if attempt == attempts - 1 or "Address already in use" not in self.log():
                    raise
            except BaseException:
                self.stop()
                raise
            else:
                return

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        pending = {self.imap_port: b"* OK", self.pop3_port: b"+OK"}
        while pending:
            if self._proc.poll() is not None:
                raise DovecotStartError(
                    f"dovecot exited with {self._proc.returncode}; log:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise DovecotStartError(
                    f"ports {sorted(pending)} not ready after {START_TIMEOUT} s; log:\n{self.log()}"
                )
            for port, greeting in list(pending.items()):
                if _greets(port, greeting, deadline):
                    del pending[port]
            if pending:
                time.sleep(0.01)

    def stop(self) -> None:
        """Shut Dovecot down: SIGTERM to the master, then SIGKILL to its process group.

        On SIGTERM the master stops every child except the log process, then idles about 1 s
        before exiting, and the log process lingers longer still. So once every other child has
        exited (zombies are left to init) and the log process sits idle with nothing left to
        read, the group is killed. After 10 s it is killed regardless. A client still logged in
        keeps its imap/pop3 process alive until the master exits on its own (about 1 s later).
        """
        forget_profiles(self._warmed)
        self._warmed = []
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the master leads its own group
        proc.terminate()
        deadline = time.monotonic() + 10
        drained_once = False
        while proc.poll() is None and time.monotonic() < deadline:
            drained = all(
                _log_drained(pid) if comm == "log" else state == "Z"
                for pid, (state, comm) in _children(proc.pid).items()
            )
            if drained and drained_once:
                break
            drained_once = drained
            time.sleep(0.005)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)

    # -- observation

    def log(self) -> str:
        """Everything Dovecot logged so far (one file for error, info and debug), then its output."""
        parts = []
        for path in (self.log_path, self.output_path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_bytes().decode("utf-8", "replace"))
        return "".join(parts)

    def log_location(self) -> str:
        """The log file (its master's output is in ``log/master.out`` beside it)."""
        return str(self.log_path)

    # -- clients

    def imap(self, user: User) -> imaplib.IMAP4:
        """An IMAP client logged in as ``user`` with LOGIN; raises on failure."""
        return self.login_imap(user.name, user.password)

    def pop3(self, user: User) -> poplib.POP3:
        """A POP3 client logged in as ``user`` with USER/PASS; raises on failure."""
        return self.login_pop3(user.name, user.password)

    def doveadm(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``doveadm -c <conf> ARGS`` and return the finished process (no check)."""
        return subprocess.run(
            [str(DOVEADM), "-c", str(self.conf_path), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=DOVECOT_ENV,
        )


def _children(ppid: int) -> dict[int, tuple[str, str]]:
    """Child processes of ``ppid`` as ``{pid: (state letter, command name)}``."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm_end = stat.rindex(")")
        fields = stat[comm_end + 2 :].split()
        if int(fields[1]) == ppid:
            children[int(entry.name)] = (fields[0], stat[stat.index("(") + 1 : comm_end])
    return children


def _log_drained(pid: int) -> bool:
    """Whether Dovecot's log process ``pid`` sleeps with every pipe it holds empty."""
    try:
        if _proc_state(pid) != "S":
            return False
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            if not os.readlink(fd).startswith("pipe:"):
                continue
            pipe = os.open(fd, os.O_RDONLY | os.O_NONBLOCK)
            try:
                queued = struct.unpack("i", fcntl.ioctl(pipe, termios.FIONREAD, b"\0" * 4))[0]
            finally:
                os.close(pipe)
            if queued:
                return False
    except OSError:
        return False  # gone or going: the caller looks again
    return True


def _proc_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()[0]


def _two_free_ports() -> tuple[int, int]:
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


def _greets(port: int, greeting: bytes, deadline: float) -> bool:
    """Whether ``port`` accepts a connection and sends a line starting with ``greeting``."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as conn:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            data = b""
            while b"\n" not in data:
                chunk = conn.recv(1024)
                if not chunk:
                    return False
                data += chunk
            return data.startswith(greeting)
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# IMAP: modified UTF-7 (RFC 3501 5.1.3), quoting, response parsing


def encode_mutf7(text: str) -> str:
    """Encode a mailbox name in IMAP modified UTF-7."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            raw = "".join(run).encode("utf-16-be", "surrogatepass")
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append(f"&{b64}-")
            run.clear()

    for char in text:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


def decode_mutf7(text: str) -> str:
    """Decode an IMAP modified UTF-7 mailbox name; raise ``ValueError`` when malformed."""
    out: list[str] = []
    pos = 0
    while (amp := text.find("&", pos)) != -1:
        out.append(text[pos:amp])
        end = text.find("-", amp + 1)
        if end == -1:
            raise ValueError(f"unterminated '&' sequence in {text!r}")
        chunk = text[amp + 1 : end]
        if not chunk:
            out.append("&")
        else:
            if not re.fullmatch(r"[A-Za-z0-9+,]+", chunk):
                raise ValueError(f"bad modified BASE64 {chunk!r} in {text!r}")
            b64 = chunk.replace(",", "/")
            try:
                raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
            except binascii.Error as e:
                raise ValueError(f"bad modified BASE64 {chunk!r} in {text!r}") from e
            if len(raw) % 2:
                raise ValueError(f"odd UTF-16 length in {text!r}")
            out.append(raw.decode("utf-16-be", "surrogatepass"))
        pos = end + 1
    out.append(text[pos:])
    return "".join(out)


def quote(text: str) -> str:
    """Quote an (already ASCII) IMAP string: ``"`` and ``\\`` escaped, always in quotes."""
    if any(c in text for c in "\r\n\0") or not text.isascii():
        raise ValueError(f"cannot send {text!r} as a quoted string")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox_arg(name: str) -> str:
    """A mailbox name (or LIST pattern) as a command argument: modified UTF-7, then quoted."""
    return quote(encode_mutf7(name))


_Item = bytes | None | list["_Item"]
_OPEN, _CLOSE = object(), object()
_TOKEN_RE = re.compile(rb'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))', re.DOTALL)
_LITERAL_END = re.compile(rb"~?\{(\d+)\+?\}\s*$")


def _tokens(raw: bytes) -> Iterator[object]:
    """Tokens of response text: ``_OPEN``/``_CLOSE``, ``None`` for NIL, else string bytes."""
    pos = 0
    raw = raw.rstrip()
    while pos < len(raw):
        m = _TOKEN_RE.match(raw, pos)
        if m is None:
            raise ValueError(f"cannot parse IMAP response at {raw[pos:]!r}")
        pos = m.end()
        if m.group(1):
            yield _OPEN
        elif m.group(2):
            yield _CLOSE
        elif m.group(3) is not None:
            yield re.sub(rb"\\(.)", rb"\1", m.group(3))
        elif m.group(4).upper() == b"NIL":
            yield None
        else:
            yield m.group(4)


def parse_response(parts: Iterable[bytes | tuple[bytes, bytes]]) -> list[_Item]:
    """Parse one untagged response's data, as imaplib keeps it, into nested lists.

    imaplib stores a response with literals as ``(text ending in {n}, literal)`` tuples followed
    by the rest of the line as bytes. Strings and atoms become ``bytes``, ``NIL`` becomes ``None``,
    parenthesised lists become lists.
    """
    stream: list[object] = []
    for part in parts:
        if isinstance(part, tuple):
            text, literal = part
            m = _LITERAL_END.search(text)
            if m is None:
                raise ValueError(f"literal without a {{n}} marker: {text!r}")
            stream.extend(_tokens(text[: m.start()]))
            stream.append(literal)
        else:
            stream.extend(_tokens(part))
    root: list[_Item] = []
    stack = [root]
    for token in stream:
        if token is _OPEN:
            child: list[_Item] = []
            stack[-1].append(child)
            stack.append(child)
        elif token is _CLOSE:
            if len(stack) == 1:
                raise ValueError("unbalanced ')' in IMAP response")
            stack.pop()
        else:
            assert token is None or isinstance(token, bytes)
            stack[-1].append(token)
    if len(stack) != 1:
        raise ValueError("unbalanced '(' in IMAP response")
    return root


def split_responses(data: Iterable[Any]) -> list[list[bytes | tuple[bytes, bytes]]]:
    """Group imaplib's flat untagged data: literal tuples belong to the next bytes element."""
    groups: list[list[bytes | tuple[bytes, bytes]]] = []
    current: list[bytes | tuple[bytes, bytes]] = []
    for item in data:
        if item is None:
            continue
        current.append(item)
        if not isinstance(item, tuple):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def _check(result: tuple[str, list[Any]], what: str) -> list[Any]:
    typ, data = result
    if typ != "OK":
        raise imaplib.IMAP4.error(f"{what} failed: {typ} {data!r}")
    return data


NamespaceList = list[tuple[str, str | None]]


def parse_namespaces(data: Iterable[Any]) -> dict[str, NamespaceList]:
    """Parse NAMESPACE data into personal/other/shared lists of (prefix, separator)."""
    groups = split_responses(data)
    if len(groups) != 1:
        raise ValueError(f"expected one NAMESPACE response, got {len(groups)}")
    items = parse_response(groups[0])
    if len(items) != 3:
        raise ValueError(f"NAMESPACE needs three parts, got {items!r}")
    result: dict[str, NamespaceList] = {}
    for kind, part in zip(("personal", "other", "shared"), items, strict=True):
        entries: NamespaceList = []
        if part is not None:
            if not isinstance(part, list):
                raise ValueError(f"bad NAMESPACE part {part!r}")
            for entry in part:
                if not isinstance(entry, list) or len(entry) < 2:
                    raise ValueError(f"bad NAMESPACE entry {entry!r}")
                prefix, sep = entry[0], entry[1]
                if not isinstance(prefix, bytes) or isinstance(sep, list):
                    raise ValueError(f"bad NAMESPACE entry {entry!r}")
                entries.append(
                    (decode_mutf7(prefix.decode("ascii")), None if sep is None else sep.decode())
                )
        result[kind] = entries
    return result


def parse_list(data: Iterable[Any]) -> list[tuple[list[str], str | None, str]]:
    """Parse LIST data into (flags, separator, decoded name) triples."""
    result = []
    for group in split_responses(data):
        items = parse_response(group)
        if len(items) < 3 or not isinstance(items[0], list):
            raise ValueError(f"bad LIST response {group!r}")
        flags, sep, name = items[0], items[1], items[2]
        if not isinstance(name, bytes) or isinstance(sep, list):
            raise ValueError(f"bad LIST response {group!r}")
        result.append(
            (
                [f.decode() for f in flags if isinstance(f, bytes)],
                None if sep is None else sep.decode(),
                decode_mutf7(name.decode("ascii")),
            )
        )
    return result


def namespaces(imap: imaplib.IMAP4) -> dict[str, NamespaceList]:
    """The server's NAMESPACE reply as personal/other/shared lists of (prefix, separator)."""
    return parse_namespaces(_check(imap.namespace(), "NAMESPACE"))


def list_mailboxes(imap: imaplib.IMAP4, pattern: str = "*") -> list[str]:
    """Decoded names of the mailboxes matching ``pattern`` (LIST "" pattern), in server order."""
    data = _check(imap.list('""', mailbox_arg(pattern)), "LIST")
    return [name for _, _, name in parse_list(data)]


def select_count(imap: imaplib.IMAP4, mailbox: str) -> int:
    """EXAMINE ``mailbox`` (any name: encoded and quoted here) and return its EXISTS count."""
    data = _check(imap.select(mailbox_arg(mailbox), readonly=True), f"EXAMINE {mailbox!r}")
    return int(data[-1])
