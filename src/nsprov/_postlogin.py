"""``nsprov post-login``: the script-login step, fail-open, with a hard deadline.

This module is on every login's path, so it imports only ``os`` and ``sys``,
and ``select``, ``errno`` and ``gc`` where they are needed (all built in): a
login the server answers needs none of them.  The work (config, NSS, spool scan, directory
creation) happens in a forked worker that first closes the client's file
descriptors; this process waits for the worker's answer until the deadline and
then execs the rest of the chain, with the worker's variables on success and
with the environment untouched on any failure.  A ``stat()`` hung on a dead
NFS server holds up the worker, never the login.

Worker -> parent frames: one tag byte, a 4-byte big-endian length, payload.
"""

from __future__ import annotations

import sys

from . import _os as os  # not the os module: see nsprov._os

# The fast path's key and reply (nsprov serve and the tests import them from here too).
from ._servefields import IDENTITY_VARS as IDENTITY_VARS  # noqa: PLC0414 - re-exported
from ._servefields import SERVE_KEY_VERSION as SERVE_KEY_VERSION  # noqa: PLC0414 - as above
from ._servefields import STAMP_FIELD as STAMP_FIELD  # noqa: PLC0414 - as above
from ._servefields import ask
from ._servefields import config_stamp as config_stamp  # noqa: PLC0414 - as above
from ._servefields import merge_fields as merge_fields  # noqa: PLC0414 - as above
from ._servefields import parse_json_object as parse_json_object  # noqa: PLC0414 - as above
from ._servefields import pct as pct  # noqa: PLC0414 - as above
from ._servefields import serve_key as serve_key  # noqa: PLC0414 - as above

TYPE_CHECKING = False  # not typing's: importing typing costs every login ~7 ms
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, MutableMapping, Sequence
    from typing import NoReturn

# Copies of nsprov._defaults (this module imports only its own reply parser, and its
# caller injects the worker): a test keeps them equal.
DEFAULT_CONFIG = "/etc/nsprov/nsprov.toml"
DEFAULT_DEADLINE = 2.0
DEADLINE_MAX = 50.0
DEFAULT_SERVE_TIMEOUT = 0.1

USAGE = """\
usage: nsprov post-login [--config=PATH] [--protocol=imap|pop3] [--on-error=continue|deny]
                         [--deadline=SECONDS] [--serve=SOCKET [--serve-timeout=SECONDS]]
                         [--] NEXT [ARGS...]
       nsprov post-login --print-dovecot-config [--dialect=2.3|2.4]
                         [--protocol=imap|pop3|both] [--config=PATH] [--serve=SOCKET]
                         [--on-error=deny] [--nsprov=PATH]

The Dovecot script-login step.  Dovecot appends the rest of the chain (NEXT, an
absolute path, and its arguments); nsprov sets the namespace variables and execs it.
--print-dovecot-config prints the Dovecot service blocks that run this installation.
"""

# Frame tags.
T_DEADLINE = b"D"  # the config's deadline, seconds as ASCII
T_POLICY = b"P"  # the config's on_error: "continue" or "deny"
T_ENV = b"E"  # key NUL value (UTF-8, surrogateescape)
T_CLIENT = b"C"  # bytes to write to the client (fd 1) before exec
T_DENY = b"X"  # deny the login after the client writes: exit without exec
T_FAIL = b"F"  # the worker failed; the payload is the one log line
T_OK = b"O"  # the worker finished; apply everything
T_SCAN = b"S"  # a spool scan begins (marker path NUL spool path) or ends (empty payload)
T_LOGIN = b"L"  # the login's info line: b"<served> <skipped> <path>" (ASCII; "-" without a scan)

#: How often the parent logs that the deadline cut a spool's scan (per spool, in seconds).
CUT_LOG_EVERY = 60.0


def os_execve(path: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
    """:func:`os.execve` with the argument types nsprov uses."""
    os.execve(path, list(argv), dict(env))


class Options:
    """Parsed post-login options (a plain class: attrs stays off this path)."""

    __slots__ = (
        "bad",
        "config",
        "deadline",
        "next",
        "on_error",
        "protocol",
        "serve",
        "serve_timeout",
    )

    def __init__(self) -> None:
        self.config = DEFAULT_CONFIG
        self.protocol: str | None = None
        self.on_error: str | None = None
        self.deadline: float | None = None
        self.serve: str | None = None
        self.serve_timeout = DEFAULT_SERVE_TIMEOUT
        self.next: list[str] = []
        #: (option name, problem) for each bad value, which was ignored (its default kept).
        self.bad: list[tuple[str, str]] = []


class UsageError(Exception):
    """The script-login line is malformed.

    Outside nsprov's error hierarchy, as this module imports no nsprov module;
    ``nsprov.exceptions.UsageError`` is its subclass under ``NsprovError``.
    """


def escape(text: str) -> str:
    r"""*text* as one printable line, for a terminal or a log: every human output uses this.

    Names come from spool entries, userdb fields and config files that others
    may write: an ESC sequence would set the terminal's title, a CR overwrite
    the line.  Control characters (C0, DEL, C1) and every other character
    :meth:`str.isprintable` refuses become ``\xNN``, ``\uNNNN`` or
    ``\UNNNNNNNN``; a byte that was not UTF-8 (a surrogate escape) shows as
    ``\xNN``; a backslash is doubled, so that what is shown is unambiguous.

    >>> print(escape("a\x1b]0;title\x07\r\\b é"))
    a\x1b]0;title\x07\x0d\\b é
    """
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif c.isprintable():
            out.append(c)
        else:
            n = ord(c)
            if 0xDC80 <= n <= 0xDCFF:  # os.fsdecode's stand-in for the byte n - 0xDC00
                n -= 0xDC00
            out.append(
                f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
            )
    return "".join(out)


#: Dovecot's log types (``enum log_type``, core src/lib/failures.h) for :func:`log`.
LOG_LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}
#: Whether fd 2 is Dovecot's log pipe, decided once per process by :func:`to_dovecot_log`.
_TO_DOVECOT: list[bool] = []


def to_dovecot_log() -> bool:
    """Whether stderr is Dovecot's log: ``USERDB_KEYS`` is set and fd 2 is a pipe.

    script-login wipes the environment and sets ``USERDB_KEYS`` (no other marker
    survives), and Dovecot's log fd is a pipe; run by hand on a terminal or into
    a file, lines stay plain.  One ``fstat`` per process, and only under script-login.
    """
    if not _TO_DOVECOT:
        fifo = False
        if "USERDB_KEYS" in os.current_environ():
            try:
                fifo = os.fstat(2).st_mode & 0o170000 == 0o010000  # S_ISFIFO
            except OSError:
                pass
        _TO_DOVECOT.append(fifo)
    return _TO_DOVECOT[0]


def log(message: str, level: str = "error") -> None:
    """One printable line to Dovecot's log (fd 2) at *level*: debug, info, warning or error.

    Dovecot logs a raw stderr line at Error; a line that starts with byte 1, then
    the byte log type + 1, then a space carries its level (core src/lib/failures.c
    ``i_failure_parse_line``).  That prefix is written only when stderr is
    Dovecot's log (:func:`to_dovecot_log`).  The message is escaped, so it never
    starts a line with ``\\x01`` itself.
    """
    head = "\x01" + chr(LOG_LEVELS[level] + 1) + " " if to_dovecot_log() else ""
    data = (head + "nsprov: " + escape(message) + "\n").encode("utf-8", "backslashreplace")
    try:
        os.write(2, data)
    except OSError:
        pass


#: The options that take a value (``--name=value``, or ``--name value``).
_VALUED = frozenset({"config", "protocol", "on-error", "deadline", "serve", "serve-timeout"})


def parse_args(
    argv: Sequence[str],
    *,
    unknown: list[str] | None = None,
    error: type[UsageError] | None = None,
) -> Options | None:
    """Parse ``[OPTIONS] NEXT [ARGS...]``; None means ``--help``.

    Leading ``--`` tokens belong to nsprov; ``--`` ends them; the first other
    token is NEXT.  An unknown option is logged once and ignored, so a newer
    script-login line never locks users out of an older nsprov.  With
    *unknown*, unknown options are collected there instead of logged.  A bad
    value is not an error either: the option keeps its default and the
    problem goes to :attr:`Options.bad`, for :func:`main` to log (or to deny
    the login under ``--on-error=deny``).  Only a line without NEXT raises
    :class:`UsageError` (or *error*, a subclass such as
    ``nsprov.exceptions.UsageError``, which is also an ``NsprovError``): there is
    nothing to exec.
    """
    error = error or UsageError
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("--"):
            break
        name, eq, value = arg[2:].partition("=")
        if name == "help":
            return None
        if name in _VALUED and not eq:
            if i + 1 >= len(argv):
                raise error(f"--{name} needs a value")
            value = argv[i + 1]
            i += 1
        if name in _VALUED:
            problem = _set_option(opts, name, value)
            if problem is not None:
                opts.bad.append((name, f"--{name} {problem}, got {value!r}"))
        elif unknown is not None:
            unknown.append(arg)
        else:
            log(f"ignoring unknown option {arg!r}", "warning")
        i += 1
    opts.next = list(argv[i:])
    if not opts.next:
        raise error("no next program: Dovecot's script-login appends the rest of the chain")
    return opts


def _set_option(opts: Options, name: str, value: str) -> str | None:
    """Set option *name* from *value*; what is wrong with the value, or None."""
    if name == "config":
        opts.config = value
    elif name == "protocol":
        if value not in {"imap", "pop3"}:
            return "must be imap or pop3"
        opts.protocol = value
    elif name == "on-error":
        if value not in {"continue", "deny"}:
            return "must be continue or deny"
        opts.on_error = value
    elif name == "serve":
        if not value.startswith("/"):
            return "must be an absolute socket path"
        opts.serve = value
    else:  # deadline, serve-timeout: seconds
        limit = DEADLINE_MAX if name == "deadline" else 5.0
        try:
            seconds = float(value)
        except ValueError:
            return "must be a number"
        if not 0 < seconds <= limit:
            return f"must be > 0 and <= {limit:g} seconds"
        if name == "deadline":
            opts.deadline = seconds
        else:
            opts.serve_timeout = seconds
    return None


def frame(tag: bytes, payload: bytes) -> bytes:
    """Encode one worker -> parent frame."""
    return tag + len(payload).to_bytes(4, "big") + payload


class Result:
    """What the worker said before it finished or the deadline passed."""

    __slots__ = (
        "client",
        "counts",
        "cut",
        "deadline",
        "deny",
        "detached",
        "env",
        "error",
        "ok",
        "policy",
        "scanning",
        "then",
    )

    def __init__(self) -> None:
        self.cut = False  # the deadline, not the worker, ended the login's step
        self.env: dict[str, str] = {}
        self.client: list[bytes] = []
        self.deny = False
        self.ok = False
        self.policy: str | None = None
        self.error: str | None = None
        #: The spool scan in progress (marker path NUL spool path), empty when none.
        self.scanning = b""
        #: ``b"<served> <skipped> <path>"`` when the config logs logins ([postlogin] log_logins).
        self.counts: bytes | None = None
        #: A thread worker's follow-up: a forked worker to run next (:func:`run_thread`).
        self.then: Callable[[int], None] | None = None
        #: The absolute deadline (the clock of the runner) the follow-up must keep.
        self.deadline = 0.0
        #: The deadline cut a thread worker that may still run (:func:`run_thread`).
        self.detached = False


def _decode(buf: bytes, result: Result, deadline: list[float], started: float) -> bytes:
    while len(buf) >= 5:
        size = int.from_bytes(buf[1:5], "big")
        if len(buf) < 5 + size:
            break
        tag, payload, buf = buf[:1], buf[5 : 5 + size], buf[5 + size :]
        if tag == T_ENV:
            key, _, value = payload.partition(b"\0")
            result.env[key.decode("utf-8", "surrogateescape")] = value.decode(
                "utf-8", "surrogateescape"
            )
        elif tag == T_CLIENT:
            result.client.append(payload)
        elif tag == T_DENY:
            result.deny = True
        elif tag == T_POLICY:
            result.policy = payload.decode()
        elif tag == T_DEADLINE:
            deadline[0] = started + float(payload)
        elif tag == T_FAIL:
            result.error = payload.decode("utf-8", "backslashreplace")
        elif tag == T_OK:
            result.ok = True
        elif tag == T_SCAN:
            result.scanning = payload
        elif tag == T_LOGIN:
            result.counts = payload
    return buf


def run_worker(
    work: Callable[[int], None],
    timeout: float,
    *,
    clock: Callable[[], float] | None = None,
    started: float | None = None,
) -> Result:
    """Fork, run ``work(write_fd)`` in the child, collect its frames until *timeout*.

    *started* (default: now) is when the login's step began, on *clock*: a ``T_DEADLINE``
    frame counts from there (a thread worker's follow-up keeps the login's deadline).
    """
    import time  # noqa: PLC0415 - builtin module, cheap

    clock = clock or time.monotonic
    now = clock()
    started = now if started is None else started
    deadline = [now + timeout]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the worker; covered through subprocess tests
        status = 0
        try:
            # A worker lives for one login and leaves with os._exit: the cycle collector
            # would only walk the objects that importing attrs and nsprov creates (~3 ms).
            import gc  # noqa: PLC0415 - built in

            gc.disable()
            os.close(r)
            _isolate(w)
            work(w)
        except BaseException:
            status = 1
        os._exit(status)  # noqa: SLF001 - posix._exit
    os.close(w)
    result = Result()
    buf = b""
    import select  # noqa: PLC0415 - not needed when nsprov serve answers

    poller = select.poll()
    poller.register(r, select.POLLIN)
    try:
        while True:
            remaining = deadline[0] - clock()
            if remaining <= 0:
                result.error = f"deadline of {deadline[0] - started:.1f}s passed"
                result.cut = True
                if result.scanning:
                    result.error += _cut(result.scanning, deadline[0] - started)
                break
            # poll, not select: select refuses descriptors above FD_SETSIZE (1024)
            ready = poller.poll(remaining * 1000)
            if not ready:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf = _decode(buf + chunk, result, deadline, started)
    finally:
        os.close(r)
    if result.ok:
        _reap(pid, block=True)
    else:
        if result.error is None:
            result.error = "worker failed"
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        _reap(pid, block=False)
    return result


def run_thread(
    work: Callable[[Callable[[bytes], None]], object],
    timeout: float,
    *,
    clock: Callable[[], float] | None = None,
) -> Result:
    """Run ``work(send)`` in a thread of this process; collect its frames until *timeout*.

    The lean path's worker: no fork, so none of the copy-on-write faults a forked Python
    takes (about 1.5 ms a login).  *work* sends the frames a forked worker writes to its
    pipe by calling ``send(bytes)``.  Its return value, when not None, is a forked
    worker to run next (``run_worker``) within the same deadline: the full path, or the
    user's tasks, which need a process of their own (``Result.then``).  When the deadline
    passes first, ``Result.detached`` says that the thread may still be in the kernel (a
    hung filesystem): :func:`main` then leaves this process (see :func:`_leave`).
    """
    import _thread  # noqa: PLC0415 - built in
    import time  # noqa: PLC0415 - builtin module, cheap

    clock = clock or time.monotonic
    started = clock()
    deadline = [started + timeout]
    frames: list[bytes] = []
    then: list[object] = []
    # Two wake-ups, no polling: the first frames (the config's deadline, which may move the
    # one given here), then the end.  Each lock is released once, by the worker's thread.
    first = _thread.allocate_lock()
    first.acquire()
    done = _thread.allocate_lock()
    done.acquire()
    sent: list[bool] = []

    def send(data: bytes) -> None:
        frames.append(data)
        if not sent:
            sent.append(True)
            first.release()

    def target() -> None:  # pragma: no cover - covered through the threaded tests
        try:
            follow = work(send)
            if follow is not None:
                then.append(follow)
        except BaseException as e:  # reported as the forked worker's failure is
            frames.append(
                frame(T_FAIL, f"internal error: {type(e).__name__}: {e}".encode("utf-8", "replace"))
            )
        finally:
            if not sent:
                sent.append(True)
                first.release()
            done.release()

    _thread.start_new_thread(target, ())
    result = Result()
    buf = b""
    seen = 0
    finished = False
    for lock in (first, done):
        remaining = deadline[0] - clock()
        woke = remaining > 0 and lock.acquire(timeout=remaining)
        new = frames[seen:]
        seen += len(new)
        buf = _decode(buf + b"".join(new), result, deadline, started)
        finished = woke and lock is done
        if not woke:
            break
    if not finished:
        buf = _decode(
            buf + b"".join(frames[seen:]), result, deadline, started
        )  # the spool it is in
        result.error = f"deadline of {deadline[0] - started:.1f}s passed"
        result.cut = True
        result.detached = True
        if result.scanning:
            result.error += _cut(result.scanning, deadline[0] - started)
        return result
    if then:
        result.then = then[0]  # type: ignore[assignment]
        result.deadline = deadline[0]
    elif not result.ok and result.error is None:
        result.error = "worker failed"
    return result


def _cut(scanning: bytes, seconds: float, *, every: float = CUT_LOG_EVERY) -> str:
    """The deadline cut the scan *scanning* names: mark it for the breaker, log once per *every*.

    The marker (``<base>.cut``, see :mod:`nsprov._breaker`) makes the next
    logins skip the spool instead of sticking another worker in it; a second
    file's mtime (``<base>.logged``) rate-limits the explanation.  Returns the
    words for this login's own line.
    """
    import time  # noqa: PLC0415

    base, _, raw = scanning.partition(b"\0")
    spool = raw.decode("utf-8", "surrogateescape")
    try:
        _touch(base + b".cut")
        logged = base + b".logged"
        try:
            due = not 0 <= time.time() - os.lstat(logged).st_mtime < every
        except FileNotFoundError:
            due = True
        if due:
            _touch(logged)
    except OSError as e:
        due = True
        log(f"spool {spool}: cannot mark it for the next logins: {e.strerror or e}")
    if due:
        log(
            f"spool {spool}: the {seconds:.1f}s post-login deadline cut a scan of it, so that "
            "login got no namespaces; the next logins skip it while that lasts; a spool too "
            "large to scan in time needs [scan_cache], else its filesystem hangs "
            f"(logged at most once per {every:g}s)"
        )
    return f" while scanning spool {spool}"


def _touch(path: bytes) -> None:
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600
    )
    try:
        os.utime(fd)
    finally:
        os.close(fd)


def _reap(pid: int, *, block: bool) -> None:
    """Wait for the worker: fully when it finished, briefly (50 ms) after SIGKILL.

    A worker stuck in the kernel (a dead NFS server) cannot die until the call
    returns; then it stays a zombie of the next program, which is harmless.
    """
    import time  # noqa: PLC0415

    end = time.monotonic() + 0.05
    while True:
        try:
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() > end:
            return
        time.sleep(0.001)


def _isolate(keep: int) -> None:  # pragma: no cover - runs in the worker
    """Give the worker /dev/null for stdin/stdout and close every inherited fd but 2 and *keep*.

    The client connection (fds 0 and 1) and Dovecot's fd 3 must not be held
    open by a worker that is stuck in the kernel after the login went on.
    """
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if null > 2:
        os.close(null)
    if keep > 3:
        os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)


def write_client(data: bytes, *, fd: int = 1, budget: float = 1.0) -> bool:
    """Write *data* to the client on a possibly non-blocking fd; retry EAGAIN within *budget*."""
    import time  # noqa: PLC0415

    end = time.monotonic() + budget
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            import select  # noqa: PLC0415

            writable = select.poll()
            writable.register(fd, select.POLLOUT)
            writable.poll(min(remaining, 0.05) * 1000)
            continue
        except InterruptedError:
            continue
        except OSError:
            return False
        view = view[n:]
    return True


_COERCED = frozenset({"C.UTF-8", "C.utf8", "UTF-8"})


def original_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """*environ* without what nsprov's own start-up added to it.

    script-login wipes the environment and exports only userdb fields, all
    listed in ``USERDB_KEYS``.  An unlisted ``LC_CTYPE`` holding a coercion
    target was put there by Python's PEP 538 locale coercion, and an unlisted
    ``SHLVL`` by the bash of the ``nsprov`` launcher (its ``exec`` exports one);
    neither must travel down the chain.
    """
    env = dict(environ)
    coerced = env.get("LC_CTYPE") in _COERCED
    if coerced or "SHLVL" in env:
        listed = {k.upper() for k in env.get("USERDB_KEYS", "").split(" ")}
        if coerced and "LC_CTYPE" not in listed:
            del env["LC_CTYPE"]
        if "SHLVL" in env and "SHLVL" not in listed:
            del env["SHLVL"]
    return env


def main(
    argv: Sequence[str],
    *,
    environ: MutableMapping[str, str] | None = None,
    execve: Callable[[str, Sequence[str], Mapping[str, str]], object] = os_execve,
    worker: Callable[[Options, Mapping[str, str]], Callable[..., object] | None] | None = None,
) -> int:
    """Run the post-login step; returns only when exec failed or the login is denied.

    *worker* makes the work to fork for a login, ``worker(opts, environ)(fd)``
    (``nsprov._main._worker``): the caller injects it, so that this module
    imports nothing of nsprov.  A worker factory that returns None says the
    login's protocol has nothing configured: the next program is exec'd at once.  Without one, a login the server does not answer
    goes on with its environment untouched (an internal error, logged).

    The status is 0 for a deliberate denial (an action refused the login) and
    non-zero for usage errors, failed execs and errors under ``on_error=deny``.
    """
    import time  # noqa: PLC0415 - builtin module, cheap

    started = time.monotonic()
    env = original_environ(os.current_environ() if environ is None else environ)
    try:
        opts = parse_args(argv)
    except UsageError as e:
        log(f"usage error: {e}")
        sys.stderr.write(USAGE)
        return 2
    if opts is None:
        sys.stderr.write(USAGE)
        return 0
    if opts.bad:
        if opts.on_error == "deny":
            problems = "; ".join(problem for _, problem in opts.bad)
            log(f"user {env.get('USER', '?')}: {problems}; denying the login (on_error=deny)")
            return 1
        for _, problem in opts.bad:
            log(f"ignoring a bad option value: {problem}")
    if opts.serve is not None:
        fields = served_fields(opts, env)
        if fields is not None:
            _exec(execve, opts.next, merge_fields(env, fields), fallback=env)
            return 1
    timeout = opts.deadline if opts.deadline is not None else DEFAULT_DEADLINE
    try:
        if worker is None:
            raise RuntimeError("no post-login worker given")  # noqa: TRY301 - handled below
        work = worker(opts, env)
        if work is None:  # nothing is configured for this protocol: exec at once
            _exec(execve, opts.next, env, fallback=None)
            return 1
        result = _run(work, timeout, started)
    except Exception as e:  # fork or pipe failed: still never break the login
        result = Result()
        result.error = f"internal error: {e}"
    policy = opts.on_error or result.policy or "continue"
    if result.ok:
        if result.counts is not None:
            log_login(env.get("USER", "?"), result.counts, started)
        for data in result.client:
            write_client(data)
        if result.deny:
            return 0  # a refusal is policy, not a crash: no "child returned error" line
        new_env = dict(env)
        new_env.update(result.env)
        _exec(execve, opts.next, new_env, fallback=env)
        return 1
    log(
        f"user {env.get('USER', '?')}: {result.error}; "
        + (
            "denying the login (on_error=deny)"
            if policy == "deny"
            else "continuing with the environment untouched"
        )
    )
    if result.cut and not result.scanning:
        deadline_hint()  # a cut scan was explained, per spool, by _cut
    if result.detached:
        _leave(execve, opts.next, env, deny=policy == "deny")
    if policy == "deny":
        return 1
    _exec(execve, opts.next, env, fallback=None)
    return 1


def _run(work: Callable[..., object], timeout: float, started: float) -> Result:
    """The login's work: forked (:func:`run_worker`) or, when *work* says so, in a thread.

    A thread worker (``work.threaded``, :func:`run_thread`) may hand over to a forked
    worker (``Result.then``: the full path, or the user's tasks), which then runs within
    the same deadline; the frames of both count, the second's last.
    """
    if not getattr(work, "threaded", False):
        return run_worker(work, timeout)  # type: ignore[arg-type]
    first = run_thread(work, timeout)
    if first.then is None:
        return first
    import time  # noqa: PLC0415 - builtin module, cheap

    second = run_worker(first.then, max(first.deadline - time.monotonic(), 0.0), started=started)
    second.env = {**first.env, **second.env}
    second.client = first.client + second.client
    second.deny = first.deny or second.deny
    second.policy = second.policy or first.policy
    second.counts = second.counts or first.counts
    return second


def _leave(
    execve: Callable[[str, Sequence[str], Mapping[str, str]], object],
    argv: list[str],
    env: Mapping[str, str],
    *,
    deny: bool,
) -> None:  # pragma: no cover - the hung-filesystem live test runs it
    """The deadline cut a thread worker that may be stuck in the kernel: leave this process.

    ``execve`` in a process with another thread waits for that thread to die, which a
    thread in an uninterruptible wait (a dead NFS server) does not.  So a child with only
    this thread takes the login on (the next program, environment untouched), and this
    process gives the client's descriptors back and exits; it lingers, holding nothing of
    the client's, until its thread returns.  With ``deny`` nothing goes on: it just exits.
    """
    pid = -1
    if not deny:
        try:
            pid = os.fork()
        except OSError:
            _exec(execve, argv, env, fallback=None)  # the best left: may wait for the thread
            os._exit(1)  # noqa: SLF001 - posix._exit
        if pid == 0:
            _exec(execve, argv, env, fallback=None)
            os._exit(1)  # noqa: SLF001 - posix._exit
    os.closerange(0, 1 << 16)
    os._exit(1 if deny else 0)  # noqa: SLF001 - posix._exit


def log_login(user: str, counts: bytes, started: float) -> None:
    """The login's info line: ``user=<name> served=<n> skipped=<n> ms=<since started> path=<path>``.

    *counts* is the worker's :data:`T_LOGIN` payload, ``b"<served> <skipped> <path>"``
    (*path* ``lean`` or ``full``: which login path served); *started* the
    :func:`time.monotonic` at which ``nsprov post-login`` began.
    """
    import time  # noqa: PLC0415 - builtin module, cheap

    words = counts.decode("ascii", "replace").split(" ")
    served, skipped, path = (*words, "-", "-", "-")[:3]
    ms = round((time.monotonic() - started) * 1000)
    log(f"user={user} served={served} skipped={skipped} ms={ms} path={path}", "info")


#: Where :func:`deadline_hint` keeps its marker: the config cache directory
#: (``nsprov._config.DEFAULT_CACHE_DIR``, not imported: this module stays light).
HINT_DIR = "/run/nsprov"
HINT_FILE = "deadline-hint"
HINT_EVERY = 60.0

DEADLINE_HINT = (
    "the post-login deadline cut a login before its namespaces were set "
    "(logins go on without them); if the spool scan is slow, configure [scan_cache] "
    "(see nsprov check)"
)


def deadline_hint(directory: str | None = None, *, now: float | None = None) -> bool:
    """Log :data:`DEADLINE_HINT` at most once per :data:`HINT_EVERY` seconds; True if logged.

    The rate limit is the mtime of a marker file in *directory* (default
    :data:`HINT_DIR`), which must exist as a directory owned by this user with
    mode 0700: otherwise nothing is created and nothing logged (:func:`_hint_due`).
    Never raises.
    """
    if not _hint_due(HINT_FILE, directory, now):
        return False
    log(DEADLINE_HINT, "warning")
    return True


SERVE_HINT_FILE = "serve-hint"


def serve_hint(
    socket_path: str, error: OSError, directory: str | None = None, *, now: float | None = None
) -> bool:
    """Warn, at most once per :data:`HINT_EVERY` seconds, that ``nsprov serve`` does not answer.

    The ``--serve`` probe then falls back to the in-process path (every login
    still works, slower). Rate-limited like :func:`deadline_hint`, by a marker
    of its own in the same directory. True if logged; never raises.
    """
    if not _hint_due(SERVE_HINT_FILE, directory, now):
        return False
    why = "timed out" if isinstance(error, TimeoutError) else error.strerror or str(error)
    log(
        f"nsprov serve at {socket_path} does not answer ({why}): logins compute their "
        "namespaces in-process, slower; start the server (nsprov-serve.service) or drop "
        "--serve= from the script-login line (logged at most once a minute)",
        "warning",
    )
    return True


def _hint_due(name: str, directory: str | None, now: float | None) -> bool:
    """Whether the rate-limited hint *name* is due; if so, its marker's mtime becomes *now*.

    The marker lives in *directory* (default :data:`HINT_DIR`), which must be a
    directory owned by this user with mode 0700; otherwise nothing is due.
    """
    import time  # noqa: PLC0415 - builtin module, cheap

    now = time.time() if now is None else now
    try:
        dfd = os.open(
            directory or HINT_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        )
    except OSError:
        return False
    try:
        st = os.fstat(dfd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o7777 != 0o700:
            return False
        try:
            mark = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if 0 <= now - mark.st_mtime < HINT_EVERY:
                return False
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
            0o600,
            dir_fd=dfd,
        )
        try:
            os.utime(fd, (now, now))
        finally:
            os.close(fd)
    except OSError:
        return False
    finally:
        os.close(dfd)
    return True


def _exec(
    execve: Callable[[str, Sequence[str], Mapping[str, str]], object],
    argv: list[str],
    env: Mapping[str, str],
    *,
    fallback: Mapping[str, str] | None,
) -> None:
    try:
        execve(argv[0], argv, env)
    except OSError as e:
        import errno  # noqa: PLC0415 - only when an exec failed

        if fallback is not None and e.errno == errno.E2BIG:
            log(f"exec {argv[0]} with namespaces failed: {e.strerror}; continuing without them")
            _exec(execve, argv, fallback, fallback=None)
            return
        log(f"exec {argv[0]} failed: {e.strerror or e}")


# --- the serve fast path: no worker, no attrs, no config -----------------------------------


def installed_version(
    chain: Sequence[str], *, exists: Callable[[str], bool] = os.exists
) -> str | None:
    """``"2.3"`` or ``"2.4"`` from the files beside script-login (the chain's last program).

    Debian's 2.3 packages ship ``director`` in libexecdir; 2.4 removed the
    director and added ``libdovecot-language.so``.  Two stats, no exec.
    """
    if not chain or "/" not in chain[-1]:
        return None
    libexec = os.dirname(chain[-1])
    if exists(f"{libexec}/director"):
        return "2.3"
    if exists(f"{libexec}/libdovecot-language.so"):
        return "2.4"
    return None


def served_fields(opts: Options, env: Mapping[str, str]) -> dict[str, str] | None:
    """The server's fields for this login, or None: then the login computes in-process.

    The answer is used only when the server says it computed it from the configuration
    file the login would read, as it is now (:data:`STAMP_FIELD` equal to
    :func:`config_stamp`), so a rule added to the file, or a server running with another
    file, never decides in the login's place.
    """
    if opts.serve is None:
        return None
    stamp = config_stamp(opts.config)
    if stamp is None:
        return None  # the in-process path reports why the file cannot be read
    key = serve_key(
        opts.protocol,
        env,
        config=opts.config,
        stamp=stamp,
        dovecot=installed_version(opts.next),
    )
    fields = ask_serve(opts.serve, key, opts.serve_timeout)
    if fields is None or fields.pop(STAMP_FIELD, None) != stamp:
        return None
    return fields


def ask_serve(path: str, key: str, timeout: float) -> dict[str, str] | None:
    """Ask ``nsprov serve`` at *path* for *key* (:func:`nsprov._servefields.ask`); None on failure.

    A server that does not answer at all (refused, no socket, timed out) also gets the
    once-a-minute :func:`serve_hint`.
    """
    try:
        return ask(path, key, timeout)
    except OSError as e:
        serve_hint(path, e)
        return None


def entrypoint(
    argv: Sequence[str],
    *,
    worker: Callable[[Options, Mapping[str, str]], Callable[..., object] | None] | None = None,
) -> NoReturn:
    """``nsprov post-login ARGS``: exit only when the login is denied or exec failed."""
    import gc  # noqa: PLC0415 - built in

    # This process execs (or exits) within the deadline: the cycle collector would only walk
    # the objects the imports create, on every login.  Reference counting still frees the rest.
    gc.disable()
    raise SystemExit(main(argv, worker=worker))
