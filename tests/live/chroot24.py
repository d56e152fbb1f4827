"""Dovecot 2.4 for live tests on a Debian 12 host, run from a Debian 13 chroot.

Debian 12 ships Dovecot 2.3; Dovecot 2.4 comes from a ``debootstrap`` root of Debian 13
(trixie) built by ``dev/build-chroot24``.  Everything Dovecot sees lives inside that root:
its config, its users and groups (the root's own ``/etc/passwd`` and ``/etc/group``), the
homes, the spools and the post-login scripts.  Paths are therefore given *inside* the root
(``PurePosixPath``, as Dovecot sees them); :func:`to_outside` and :func:`to_inside` map them
to and from host paths.  The chroot shares the host's network namespace, so a Dovecot
listening on 127.0.0.1 inside is reached by ``imaplib``/``poplib`` outside.

Nothing is mounted into the root: Dovecot, ``useradd``, ``python3 -m venv`` and ``pip`` all
work without ``/proc``, ``/sys`` or a bind-mounted ``/dev`` (debootstrap leaves static
device nodes such as ``/dev/null`` in place).  So there is nothing to unmount, and removing
a test directory can never reach through a mount into the host.  Without ``/proc``, Dovecot
logs harmless debug lines (``open(/proc/self/stat) failed``) and tools that read
``/proc/self/fd`` see nothing.

This module is self-contained (standard library only) and never imports pytest: callers
turn an unavailable root (:func:`chroot24_status`) into a skip themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Self

from .harness import DovecotInstance, error_lines, postlogin_services

if TYPE_CHECKING:
    import imaplib
    import poplib
    from collections.abc import Iterable, Iterator, Mapping, Sequence
    from types import TracebackType

__all__ = [
    "DEFAULT_ROOT",
    "TEST_BASE",
    "VENV",
    "ChrootAccounts",
    "ChrootGroup",
    "ChrootUser",
    "Dovecot24",
    "chroot24_root",
    "chroot24_status",
    "chroot_run",
    "chroot_tempdir",
    "install_wheel",
    "make_maildir",
    "purge_accounts",
    "python_venv",
    "to_inside",
    "to_outside",
    "write_file",
]

#: Where the root lives unless ``$NSPROV_CHROOT24`` says otherwise.
DEFAULT_ROOT = Path("/var/cache/nsprov/chroot24")
#: The script that builds the root (idempotent, fast when the root is current).
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "dev" / "build-chroot24"
#: Inside the root: the 0755 directory holding every test's scratch directory.
TEST_BASE = PurePosixPath("/srv/nsprov-tests")
#: Inside the root: the virtual environment made by :func:`python_venv`.
VENV = PurePosixPath("/opt/nsprov-venv")
#: Prefix of every throwaway user and group created in the root.
ACCOUNT_PREFIX = "nspt4"
#: Range for throwaway uids and gids, far from the host's own users, so that files
#: created in the root by test users are not mistaken for a host user's files.
ID_RANGE = (42000, 42999)

_CHROOT = "/usr/sbin/chroot"
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
_HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_CHROOT_CA_BUNDLE = PurePosixPath("/etc/nsprov-host-ca.crt")
# Dovecot starts with this environment; the canary must never reach a post-login script.
_DOVECOT_ENV = {**_ENV, "TZ": "UTC", "NSPT_CANARY": "leaked"}


# --- the root -------------------------------------------------------------------------


@functools.cache
def chroot24_status() -> tuple[Path | None, str]:
    """Return ``(root, "")`` for a usable root, building it on first use, else ``(None, reason)``."""
    root = Path(os.environ.get("NSPROV_CHROOT24") or DEFAULT_ROOT)
    if os.geteuid() != 0:
        return None, "the Dovecot 2.4 chroot needs root"
    if not Path(_CHROOT).exists():
        return None, f"{_CHROOT} not found"
    if not BUILD_SCRIPT.exists():
        return None, f"{BUILD_SCRIPT} not found"
    proc = subprocess.run(
        [str(BUILD_SCRIPT), str(root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        return None, f"dev/build-chroot24 {root} failed ({proc.returncode}): {tail}"
    if not (root / "usr/sbin/dovecot").exists():
        return None, f"no /usr/sbin/dovecot in {root}"
    return root, ""


def chroot24_root() -> Path | None:
    """Return the Dovecot 2.4 root (built on first use), or None when unavailable."""
    return chroot24_status()[0]


def to_outside(root: Path, inside: str | PurePosixPath) -> Path:
    """Map a path inside the root to the host path of the same file."""
    path = PurePosixPath(inside)
    if not path.is_absolute():
        raise ValueError(f"not an absolute path inside the root: {inside}")
    return root.joinpath(*path.parts[1:])


def to_inside(root: Path, outside: str | os.PathLike[str]) -> PurePosixPath:
    """Map a host path below the root to the path a process in the root sees."""
    return PurePosixPath("/") / Path(outside).relative_to(root).as_posix()


def chroot_run(
    root: Path,
    *argv: str,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a program inside the root with a clean environment and capture its output."""
    proc = subprocess.run(
        [_CHROOT, str(root), *argv],
        env={**_ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"chroot {root} {' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc


@contextlib.contextmanager
def chroot_tempdir(root: Path, prefix: str = "t-") -> Iterator[PurePosixPath]:
    """Yield a fresh 0755 directory inside the root (below :data:`TEST_BASE`), removed afterwards."""
    base = to_outside(root, TEST_BASE)
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    base.chmod(0o755)
    name = f"{prefix}{secrets.token_hex(4)}"
    outside = base / name
    outside.mkdir(mode=0o755)
    outside.chmod(0o755)
    try:
        yield TEST_BASE / name
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def write_file(
    root: Path,
    inside: str | PurePosixPath,
    text: str,
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
) -> PurePosixPath:
    """Write a text file inside the root with the given mode and owner; return its inside path."""
    path = to_outside(root, inside)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    os.chown(path, uid, gid)
    path.chmod(mode)
    return PurePosixPath(inside)


def make_maildir(
    root: Path,
    inside: str | PurePosixPath,
    *,
    messages: int = 0,
    uid: int = 0,
    gid: int = 0,
    dir_mode: int = 0o700,
    file_mode: int = 0o600,
) -> PurePosixPath:
    """Create a maildir (``cur``, ``new``, ``tmp``) holding ``messages`` seen messages in ``cur``."""
    top = to_outside(root, inside)
    top.parent.mkdir(parents=True, exist_ok=True)
    for path in (top, top / "cur", top / "new", top / "tmp"):
        path.mkdir(exist_ok=True)
        os.chown(path, uid, gid)
        path.chmod(dir_mode)
    now = int(time.time())
    for number in range(1, messages + 1):
        message = top / "cur" / f"{now}.M{number}P1.nsprov:2,S"
        message.write_bytes(
            b"From: nsprov <nsprov@example.org>\r\n"
            b"To: test <test@example.org>\r\n"
            b"Subject: message %d\r\n\r\nbody %d\r\n" % (number, number)
        )
        os.chown(message, uid, gid)
        message.chmod(file_mode)
    return PurePosixPath(inside)


# --- accounts -------------------------------------------------------------------------


@dataclass(frozen=True)
class ChrootGroup:
    """A throwaway group in the root's ``/etc/group``."""

    name: str
    gid: int


@dataclass(frozen=True)
class ChrootUser:
    """A throwaway user in the root's ``/etc/passwd``; ``home`` is an inside path."""

    name: str
    uid: int
    gid: int
    home: PurePosixPath
    password: str
    groups: tuple[ChrootGroup, ...] = ()

    @property
    def maildir(self) -> PurePosixPath:
        """The user's private maildir (``mail_path = ~/Maildir``)."""
        return self.home / "Maildir"


def _read_db(root: Path, name: str) -> dict[str, list[str]]:
    """Parse the root's ``/etc/passwd`` or ``/etc/group`` into name -> fields."""
    text = to_outside(root, PurePosixPath("/etc") / name).read_text(encoding="utf-8")
    return {line.split(":")[0]: line.split(":") for line in text.splitlines() if line}


class ChrootAccounts:
    """Create throwaway users and groups inside the root; remove them all on exit.

    Names are ``nspt4`` + a random token per instance + the given name, so parallel
    runs do not collide; uids and gids come from :data:`ID_RANGE`.  Homes live below a
    0755 base directory inside the root, each home 0700 with a ``Maildir``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.token = secrets.token_hex(2)
        self.home_base = TEST_BASE / f"homes-{self.token}"
        self.users: dict[str, ChrootUser] = {}
        self.groups: dict[str, ChrootGroup] = {}

    def __enter__(self) -> Self:
        base = to_outside(self.root, self.home_base)
        base.mkdir(mode=0o755, parents=True, exist_ok=True)
        base.parent.chmod(0o755)
        base.chmod(0o755)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def full_name(self, name: str) -> str:
        """Return the account name used in the root for the short name ``name``."""
        full = f"{ACCOUNT_PREFIX}{self.token}{name}"
        if len(full) > 32 or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"unusable account name: {full!r}")
        return full

    def _shadow_tool(self, *argv: str) -> None:
        """Run useradd/groupadd/… in the root, retrying while another run holds the lock."""
        for attempt in range(20):
            proc = chroot_run(self.root, *argv, check=False)
            if proc.returncode == 0:
                return
            if "lock" not in proc.stderr or attempt == 19:
                raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
            time.sleep(0.2)

    def add_group(self, name: str) -> ChrootGroup:
        """Create the group ``nspt4<token><name>`` in the root."""
        full = self.full_name(name)
        low, high = ID_RANGE
        self._shadow_tool("groupadd", "-K", f"GID_MIN={low}", "-K", f"GID_MAX={high}", full)
        group = ChrootGroup(full, int(_read_db(self.root, "group")[full][2]))
        self.groups[name] = group
        return group

    def add_user(
        self,
        name: str,
        *,
        groups: Iterable[ChrootGroup] = (),
        password: str | None = None,
        messages: int = 0,
    ) -> ChrootUser:
        """Create the user ``nspt4<token><name>`` with its own group, a 0700 home and a Maildir."""
        full = self.full_name(name)
        home = self.home_base / full
        low, high = ID_RANGE
        group_list = tuple(groups)
        group_names = [group.name for group in group_list]
        argv = [
            "useradd",
            "--no-create-home",
            "--user-group",
            "--home-dir",
            str(home),
            "--shell",
            "/usr/sbin/nologin",
            "-K",
            f"UID_MIN={low}",
            "-K",
            f"UID_MAX={high}",
            "-K",
            f"GID_MIN={low}",
            "-K",
            f"GID_MAX={high}",
        ]
        if group_names:
            argv += ["--groups", ",".join(group_names)]
        self._shadow_tool(*argv, full)
        fields = _read_db(self.root, "passwd")[full]
        user = ChrootUser(
            name=full,
            uid=int(fields[2]),
            gid=int(fields[3]),
            home=home,
            password=password or f"pw-{secrets.token_hex(6)}",
            groups=group_list,
        )
        self.users[name] = user
        outside_home = to_outside(self.root, home)
        outside_home.mkdir(mode=0o700)
        os.chown(outside_home, user.uid, user.gid)
        outside_home.chmod(0o700)
        make_maildir(self.root, user.maildir, messages=messages, uid=user.uid, gid=user.gid)
        return user

    def close(self) -> None:
        """Delete every user and group this instance created, and their homes."""
        errors: list[str] = []
        passwd = _read_db(self.root, "passwd")
        for user in self.users.values():
            if user.name in passwd:
                proc = chroot_run(self.root, "userdel", user.name, check=False)
                if proc.returncode != 0:
                    errors.append(proc.stderr)
        group_db = _read_db(self.root, "group")
        for group in self.groups.values():
            if group.name in group_db:
                proc = chroot_run(self.root, "groupdel", group.name, check=False)
                if proc.returncode != 0:
                    errors.append(proc.stderr)
        self.users.clear()
        self.groups.clear()
        shutil.rmtree(to_outside(self.root, self.home_base), ignore_errors=True)
        if errors:
            raise RuntimeError("could not remove chroot accounts: " + "; ".join(errors))


def purge_accounts(root: Path) -> list[str]:
    """Delete every ``nspt4*`` user and group left in the root by crashed runs; return their names."""
    removed: list[str] = []
    for name in _read_db(root, "passwd"):
        if name.startswith(ACCOUNT_PREFIX):
            chroot_run(root, "userdel", name, check=False)
            removed.append(name)
    for name in _read_db(root, "group"):
        if name.startswith(ACCOUNT_PREFIX):
            chroot_run(root, "groupdel", name, check=False)
            removed.append(name)
    return removed


# --- Python inside the root -----------------------------------------------------------


@contextlib.contextmanager
def _locked(root: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock (a file next to the root) for the duration."""
    with (root.parent / f"{root.name}.{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def python_venv(root: Path) -> str:
    """Create the venv at :data:`VENV` inside the root (once) and return its inside path."""
    with _locked(root, "venv"):
        if not to_outside(root, VENV / "bin/python").exists():
            chroot_run(root, "/usr/bin/python3", "-m", "venv", str(VENV))
    return str(VENV)


def _pip_env(root: Path) -> dict[str, str]:
    """Make pip inside the root trust what the host trusts and use the host's index."""
    shutil.copyfile("/etc/resolv.conf", to_outside(root, "/etc/resolv.conf"))
    env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    # pip trusts only its vendored certifi bundle; a host behind a TLS-inspecting proxy
    # trusts more.  The system bundle holds public certificates only.
    bundle = Path(os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or _HOST_CA_BUNDLE)
    if bundle.is_file():
        shutil.copyfile(bundle, to_outside(root, _CHROOT_CA_BUNDLE))
        env["PIP_CERT"] = str(_CHROOT_CA_BUNDLE)
    for name in ("PIP_INDEX_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        if os.environ.get(name, "").startswith(("http://", "https://")):
            env[name] = os.environ[name]
    return env


def install_wheel(
    root: Path,
    wheel_path: str | os.PathLike[str],
    *,
    requirements: Sequence[str] = ("attrs", "pathspec>=1.0"),
) -> None:
    """Install a wheel (and ``requirements``, from PyPI) into the venv inside the root.

    The wheel itself is always reinstalled, so a rebuilt wheel with an unchanged
    version number replaces the old one.
    """
    venv = PurePosixPath(python_venv(root))
    wheel = Path(wheel_path)
    inside = PurePosixPath("/opt/nsprov-wheels") / wheel.name
    to_outside(root, inside.parent).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wheel, to_outside(root, inside))
    pip = (str(venv / "bin/python"), "-m", "pip", "install", "--quiet")
    with _locked(root, "venv"):
        env = _pip_env(root)
        chroot_run(root, *pip, str(inside), *requirements, env=env)
        chroot_run(root, *pip, "--force-reinstall", "--no-deps", str(inside), env=env)


# --- Dovecot --------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _accepts(port: int) -> bool:
    """Tell whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Dovecot24(DovecotInstance):
    """A private Dovecot 2.4 instance inside the root, listening on 127.0.0.1.

    ``workdir`` is a directory inside the root (for example from :func:`chroot_tempdir`);
    the config, log, base_dir and passwd-file go there.  ``users`` log in with their
    passwords (passdb passwd-file, PLAIN) and are looked up in the root's NSS (userdb
    passwd, which returns ``system_groups_user``).  ``postlogin`` maps a protocol
    (``imap``, ``pop3``) to the program part of ``executable = script-login <part>``;
    the part is split on single spaces by Dovecot, so it may hold ``-d`` and arguments.
    """

    label = "Dovecot 2.4"
    client_timeout = 30.0

    def __init__(
        self,
        workdir: str | PurePosixPath,
        users: Iterable[ChrootUser],
        *,
        postlogin: Mapping[str, str] | None = None,
        extra_conf: str = "",
        private_separator: str = "/",
        root: Path | None = None,
    ) -> None:
        if root is None:
            root, reason = chroot24_status()
            if root is None:
                raise RuntimeError(reason)
        super().__init__(
            postlogin=postlogin, extra_conf=extra_conf, private_separator=private_separator
        )
        self.root = root
        self.workdir = PurePosixPath(workdir)
        self.users = {user.name: user for user in users}
        self.conf_path = self.workdir / "dovecot.conf"
        self.log_path = self.workdir / "dovecot.log"

    def outside(self, inside: str | PurePosixPath) -> Path:
        """Map a path inside the root to its host path."""
        return to_outside(self.root, inside)

    def config(self) -> str:
        """Return the dovecot.conf text for the current ports."""
        work = self.workdir
        lines = [
            "dovecot_config_version = 2.4.0",
            "dovecot_storage_version = 2.4.0",
            "protocols = imap pop3",
            "listen = 127.0.0.1",
            f"base_dir = {work}/run",
            f"state_dir = {work}/state",
            f"instance_name = nsprov24-{work.name}",
            f"log_path = {work}/dovecot.log",
            "ssl = no",
            "auth_allow_cleartext = yes",
            "auth_mechanisms = plain",
            "auth_verbose = yes",
            "mail_debug = yes",
            "passdb passwd-file {",
            f"  passwd_file_path = {work}/passwd",
            "  default_password_scheme = PLAIN",
            "}",
            "userdb passwd {",
            "}",
            "mail_driver = maildir",
            "mail_path = ~/Maildir",
            "namespace inbox {",
            "  inbox = yes",
            f"  separator = {self.private_separator}",
            "}",
            "service imap-login {",
            "  inet_listener imap {",
            f"    port = {self.imap_port}",
            "  }",
            "  inet_listener imaps {",
            "    port = 0",
            "  }",
            "}",
            "service pop3-login {",
            "  inet_listener pop3 {",
            f"    port = {self.pop3_port}",
            "  }",
            "  inet_listener pop3s {",
            "    port = 0",
            "  }",
            "}",
        ]
        lines += postlogin_services(self.postlogin)
        return "\n".join(lines) + "\n" + self.extra_conf + "\n"

    def _write_files(self) -> None:
        passwd = "".join(f"{u.name}:{{PLAIN}}{u.password}\n" for u in self.users.values())
        # 2.4 opens the passwd-file in the auth process, which runs as default_internal_user.
        internal_gid = int(_read_db(self.root, "group")["dovecot"][2])
        write_file(self.root, self.workdir / "passwd", passwd, mode=0o640, gid=internal_gid)
        write_file(self.root, self.conf_path, self.config())
        for name in ("run", "state"):
            self.outside(self.workdir / name).mkdir(mode=0o755, exist_ok=True)

    def start(self) -> None:
        """Write the config and start Dovecot in the foreground; return once both ports accept."""
        if self._proc is not None:
            raise RuntimeError("already started")
        failure = ""
        for _ in range(3):
            self.imap_port, self.pop3_port = _free_ports(2)
            self._write_files()
            self.outside(self.log_path).unlink(missing_ok=True)
            with self.outside(self.workdir / "dovecot.stderr").open("wb") as stderr:
                self._proc = subprocess.Popen(
                    [_CHROOT, str(self.root), "/usr/sbin/dovecot", "-F", "-c", str(self.conf_path)],
                    env=_DOVECOT_ENV,
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _accepts(self.imap_port) and _accepts(self.pop3_port):
                    return
                time.sleep(0.05)
            self.stop()
            failure = self.outside(self.workdir / "dovecot.stderr").read_text(errors="replace")
            failure += self.log()
            if "Address already in use" not in failure:
                break
        raise RuntimeError(f"Dovecot 2.4 did not start:\n{failure}")

    def stop(self) -> None:
        """Stop Dovecot (SIGTERM, then SIGKILL after 10 s); safe to call twice."""
        process, self._proc = self._proc, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def log(self, since: int = 0) -> str:
        """Return the Dovecot log so far, or from the offset ``since`` (see :meth:`log_mark`)."""
        try:
            data = self.outside(self.log_path).read_bytes()
        except FileNotFoundError:
            return ""
        return data[since:].decode("utf-8", errors="replace")

    def log_location(self) -> str:
        """The log file's host path."""
        return str(self.outside(self.log_path))

    def errors(self, since: int = 0) -> list[str]:
        """Log lines at Error, Fatal or Panic level (from the offset ``since``)."""
        return error_lines(self.log(since))

    def wait_for_log(self, text: str, *, since: int = 0, timeout: float = 10) -> str:
        """Wait until ``text`` appears in the log after ``since``; return that part of the log.

        Dovecot writes through a log process, so a line can land after the client has
        seen the effect; raises TimeoutError with the log when ``text`` never appears.
        """
        deadline = time.monotonic() + timeout
        while True:
            log = self.log(since)
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not in the Dovecot 2.4 log after {timeout} s:\n{log}")
            time.sleep(0.05)

    def log_mark(self) -> int:
        """Return the current end of the log, to pass to :meth:`log` later."""
        try:
            return self.outside(self.log_path).stat().st_size
        except FileNotFoundError:
            return 0

    def _user(self, user: ChrootUser | str) -> ChrootUser:
        return self.users[user] if isinstance(user, str) else user

    def imap(self, user: ChrootUser | str) -> imaplib.IMAP4:
        """Return an IMAP connection logged in as ``user``."""
        account = self._user(user)
        return self.login_imap(account.name, account.password)

    def pop3(self, user: ChrootUser | str) -> poplib.POP3:
        """Return a POP3 connection logged in as ``user``."""
        account = self._user(user)
        return self.login_pop3(account.name, account.password)

    def doveadm(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``doveadm -c <conf> ARGS`` inside the root and return the finished process."""
        return chroot_run(
            self.root, "/usr/bin/doveadm", "-c", str(self.conf_path), *args, check=check
        )
