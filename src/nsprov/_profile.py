"""The compiled login profile: its file, and the choice of path a login takes.

What a login needs from the configuration is compiled once
(:func:`nsprov._profile_compile.compile_profile`, by the full path) into plain data that
this module keeps in one file per configuration, ``marshal.dumps((key, profile))``,
and loads with the standard library alone.  The key is the configuration file as
the login finds it (its absolute path, device, inode, size, mtime and ctime), nsprov's
version, the interpreter's bytecode magic and cache tag, and the profile layout
(:data:`nsprov._defaults.PROFILE_SCHEMA`): any edit, replacement or chmod of the file,
an upgrade of nsprov or of Python makes the profile stale.

A profile is used only when it passes the rule of the config cache
(:func:`nsprov._trust.is_private`): a regular file owned by this uid that neither
group nor other may write, in a directory that passes the trust rule, and the
configuration file itself passes the trust rule at every login.  A missing,
stale, corrupt, foreign-owned or group-writable profile is never read as one: the
login takes the full path, which then writes a fresh profile for the next logins
through the one atomic writer (:func:`nsprov._atomic.write_private`; concurrent
first logins may both write it, the last rename wins, both are equal).

The profiles live in :data:`nsprov._defaults.STATE_DIR` (``/run/nsprov``), beside the
config cache, and only for root (no other uid's directory is trusted for logins).
The packaged ``nsprov serve`` unit names that directory ``RuntimeDirectory=`` with
``RuntimeDirectoryPreserve=yes``, so stopping or restarting the server does not
wipe it; a reboot does (``/run`` is a tmpfs), and the first login after it rebuilds.

Standard library only, on every login's path.
"""

from __future__ import annotations

import sys

from . import _os as os  # not the os module: see nsprov._os
from ._defaults import PROFILE_SCHEMA, STATE_DIR, VERSION

TYPE_CHECKING = False  # not typing's: this module is on the login path
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._postlogin import Options

    #: The full path's worker: ``full(fd, opts, environ, why)``, *why* the profile's state.
    Full = Callable[[int, Options, Mapping[str, str], str], None]

#: The largest profile file read.
MAX_PROFILE_SIZE = 1 << 22
#: The key of the profile when it is warm: its state word in :func:`load_status`.
WARM = "warm"


def _magic() -> bytes:
    """The interpreter's bytecode magic (``importlib.util.MAGIC_NUMBER``), without importlib.util."""
    external = sys.modules.get("_frozen_importlib_external")
    magic = getattr(external, "MAGIC_NUMBER", None)
    if isinstance(magic, bytes):
        return magic
    import importlib.util  # noqa: PLC0415 - only where the frozen importlib is absent

    return importlib.util.MAGIC_NUMBER


def file_name(config_path: str) -> str:
    """The profile's file name for *config_path* (FNV-1a of its absolute path; the key has the path)."""
    h = 0xCBF29CE484222325
    for b in os.fsencode(os.abspath(config_path)):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"profile-{h:016x}"


def config_key(config_path: str) -> tuple[object, ...] | None:
    """The key of the profile for *config_path* as it is now, None if it fails the trust rule.

    The configuration file is opened under the trust rule (:func:`nsprov._trust.open_trusted`),
    so a file or a directory above it that someone else may write never keys a profile.
    """
    from ._trust import open_trusted  # noqa: PLC0415 - after the cheap checks

    path = os.abspath(config_path)
    try:
        fd, s = open_trusted(path, what="config file")
    except (OSError, ValueError):  # UntrustedFileError is an OSError: the full path says why
        return None
    os.close(fd)
    return (
        path,
        s.st_dev,
        s.st_ino,
        s.st_size,
        s.st_mtime_ns,
        s.st_ctime_ns,
        VERSION,
        sys.implementation.cache_tag,
        _magic(),
        PROFILE_SCHEMA,
    )


def default_dir() -> str | None:
    """Where profiles live: :data:`~nsprov._defaults.STATE_DIR` for root, none for others."""
    return STATE_DIR if os.geteuid() == 0 else None


def load_status(
    config_path: str, directory: str | None
) -> tuple[dict[str, object] | None, str, tuple[object, ...] | None]:
    """``(profile, state, key)``: the profile when :data:`WARM`, else None and why not.

    *state* is one of ``warm``, ``no profile directory``, ``untrusted profile
    directory``, ``config not trusted``, ``missing`` (or unreadable, foreign-owned,
    writable by others: :func:`nsprov._trust.read_private` refuses those alike),
    ``corrupt``, ``stale``; *key* is the configuration's key now (None when it has none).
    """
    import marshal  # noqa: PLC0415 - built in

    from ._trust import private_dir_fd, read_private  # noqa: PLC0415 - stdlib only

    if directory is None:
        return None, "no profile directory", None
    key = config_key(config_path)
    if key is None:
        return None, "config not trusted", None
    dir_fd = private_dir_fd(directory, create=False, what="profile directory")
    if dir_fd is None:
        state = "untrusted profile directory" if os.lexists(directory) else "missing"
        return None, state, key
    try:
        blob = read_private(dir_fd, file_name(config_path), limit=MAX_PROFILE_SIZE)
    finally:
        os.close(dir_fd)
    if blob is None:
        return None, "missing", key
    try:
        data = marshal.loads(blob)  # noqa: S302 - our own file, owner and mode checked
    except (EOFError, ValueError, TypeError):
        return None, "corrupt", key
    if not isinstance(data, tuple) or len(data) != 2:
        return None, "corrupt", key
    stored_key, profile = data
    if stored_key != key:
        return None, "stale", key
    if not isinstance(profile, dict) or profile.get("schema") != PROFILE_SCHEMA:
        return None, "corrupt", key
    if not _plain_part(profile.get("postlogin")):
        return None, "corrupt", key
    return profile, WARM, key


def _plain_part(part: object) -> bool:
    """Whether *part* has the shape :func:`postlogin_part` gives (the dispatch relies on it)."""
    if not isinstance(part, dict):
        return False
    actions = part.get("actions")
    return (
        isinstance(part.get("deadline"), float)
        and part.get("on_error") in ("continue", "deny")
        and isinstance(part.get("dialect"), str)
        and isinstance(part.get("debug_users"), tuple)
        and isinstance(part.get("log_logins"), bool)
        and isinstance(actions, tuple)
        and len(actions) == 3
        and all(isinstance(a, tuple) and all(isinstance(n, str) for n in a) for a in actions)
    )


def load(config_path: str, directory: str | None = None) -> dict[str, object] | None:
    """The warm profile of *config_path*, None when missing, stale, corrupt or untrusted."""
    return load_status(config_path, directory or default_dir())[0]


def store(
    config_path: str,
    profile: dict[str, object],
    *,
    key: tuple[object, ...] | None = None,
    directory: str | None = None,
) -> bool:
    """Write *profile* for *config_path*, keyed *key* (default: the file as it is now).

    *key* should be the one taken before the configuration was read
    (:func:`config_key`), so that a file edited meanwhile leaves a stale profile,
    never a wrong one.  Through :func:`nsprov._atomic.write_private`; True if written.
    """
    import marshal  # noqa: PLC0415 - built in

    from ._atomic import write_private  # noqa: PLC0415 - only when a profile is written
    from ._trust import private_dir_fd  # noqa: PLC0415 - stdlib only

    directory = directory or default_dir()
    key = key or config_key(config_path)
    if directory is None or key is None:
        return False
    try:
        blob = marshal.dumps((key, profile))  # type: ignore[arg-type] # plain data, checked here
    except ValueError:
        return False  # not plain data: no profile, the full path runs every time
    dir_fd = private_dir_fd(directory, create=True, what="profile directory")
    if dir_fd is None:
        return False
    try:
        write_private(file_name(config_path), blob, dir_fd=dir_fd)
    except OSError:
        return False
    finally:
        os.close(dir_fd)
    return True


def postlogin_part(
    *,
    deadline: float,
    on_error: str,
    dialect: str,
    debug_users: tuple[str, ...],
    actions: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]],
    log_logins: bool = True,
) -> dict[str, object]:
    """The part of a profile the dispatch reads (``profile["postlogin"]``), as plain data.

    *actions* are the action lists of imap, pop3 and a login without ``--protocol``.
    """
    return {
        "deadline": float(deadline),
        "on_error": on_error,
        "dialect": dialect,
        "debug_users": tuple(debug_users),
        "actions": tuple(tuple(a) for a in actions),
        "log_logins": bool(log_logins),
    }


def protocol_actions(profile: Mapping[str, object], protocol: str | None) -> tuple[str, ...]:
    """The actions *profile* runs for *protocol*: as ``ActionsConfig.for_protocol``."""
    part = profile["postlogin"]
    assert isinstance(part, dict)  # noqa: S101 - load_status checked it
    imap, pop3, default = part["actions"]
    return tuple(imap if protocol == "imap" else pop3 if protocol == "pop3" else default)


# --- the choice of path -----------------------------------------------------------------------


def dispatch(
    opts: Options,
    environ: Mapping[str, str],
    *,
    full: Full,
    directory: str | None = None,
) -> Callable[..., object] | None:
    """The work for this login, or None: the protocol has nothing configured.

    Runs in the post-login parent, before the fork, with the standard library only:
    the profile is loaded here (a few ``stat`` and ``open`` calls on local files, like
    the ``--serve`` path's stamp).  With a warm profile whose protocol runs no action,
    None says "exec now" (nothing forked, nothing else imported); with a warm profile,
    a thread of the post-login process runs :func:`lean_login` (no fork unless the full
    path or the user's tasks need one); otherwise ``full(fd, opts, environ, state)``,
    the full worker, which writes the profile for the next logins.
    """
    profile, state, _ = load_status(opts.config, directory or default_dir())
    if profile is None:

        def cold(fd: int) -> None:  # pragma: no cover - runs in the forked worker
            full(fd, opts, environ, state)

        return cold
    if not protocol_actions(profile, opts.protocol):
        return None
    warm = profile

    def lean(send: Callable[[bytes], None]) -> Callable[[int], None] | None:
        return lean_login(send, opts, environ, warm, full=full, threaded=True)

    lean.threaded = True  # type: ignore[attr-defined] # run in a thread: _postlogin.run_thread
    return lean


def run_lean(
    fd: int,
    opts: Options,
    environ: Mapping[str, str],
    profile: dict[str, object],
    *,
    full: Full,
) -> None:
    """The lean login in a forked worker writing frames to *fd* (:func:`lean_login`)."""
    lean_login(lambda data: _send(fd, data), opts, environ, profile, full=full, fd=fd)


def lean_login(
    send: Callable[[bytes], None],
    opts: Options,
    environ: Mapping[str, str],
    profile: dict[str, object],
    *,
    full: Full,
    threaded: bool = False,
    fd: int = -1,
) -> Callable[[int], None] | None:
    """The lean worker: :func:`nsprov._lean.run_login` on *profile*, reported like the full one.

    *send* takes the frames the full worker would write.  The full path serves this
    login instead when the profile cannot (the installed Dovecot is not the profile's
    dialect, the user is in ``debug_users``, whose explanation only the full path
    writes) and when ``run_login`` raises (one log line).

    In a forked worker (*fd*), the full path and the user's tasks run here.  In a thread
    of the post-login process (*threaded*), which must never switch ids, both are handed
    back as a forked worker to run next (:func:`nsprov._postlogin.run_thread`): the full
    path, or the user's tasks (the login's variables are sent first, its client lines,
    log lines and ``T_OK`` after them).  Index directories root sees need no task.
    """
    from ._postlogin import (  # noqa: PLC0415 - loaded by the parent already
        T_CLIENT,
        T_DEADLINE,
        T_DENY,
        T_ENV,
        T_LOGIN,
        T_OK,
        T_POLICY,
        T_SCAN,
        frame,
        installed_version,
        log,
    )

    def fallback(why: str) -> Callable[[int], None] | None:
        if threaded:
            return lambda worker_fd: full(worker_fd, opts, environ, why)
        full(fd, opts, environ, why)
        return None

    part = profile["postlogin"]
    assert isinstance(part, dict)  # noqa: S101 - load_status checked it
    user = environ.get("USER", "")
    installed = installed_version(opts.next)
    if installed is not None and installed != part["dialect"]:
        return fallback(f"Dovecot {installed} installed, profile for {part['dialect']}")
    if user in part["debug_users"]:
        return fallback("warm; a debug user")
    head = b""
    if opts.deadline is None:
        head += frame(T_DEADLINE, str(part["deadline"]).encode())
    head += frame(T_POLICY, str(part["on_error"]).encode())
    send(head)  # the config's deadline holds while the actions run
    try:
        from ._breaker import SpoolBreaker, spool_state_dir  # noqa: PLC0415 - worker only
        from ._lean import FullPathNeeded, dirs_seen, run_login, run_tasks  # noqa: PLC0415 - worker only

        state_dir = spool_state_dir()
        breaker = (
            None
            if state_dir is None
            else SpoolBreaker(state_dir, lambda data: send(frame(T_SCAN, data)))
        )
        outcome = run_login(
            profile, environ, protocol=opts.protocol, breaker=breaker, defer=threaded
        )
    except FullPathNeeded as e:  # not a failure: this login needs what only the full path does
        return fallback(f"warm; {e}")
    except Exception as e:  # the full path decides what the login gets
        log(
            f"user {user or '?'}: the lean login path failed "
            f"({type(e).__name__}: {e}); this login takes the full path"
        )
        return fallback("lean path failed")
    only_dirs = [w for w, _ in outcome.pending] == ["index directories"]
    if threaded and only_dirs and dirs_seen(outcome.dirs):
        outcome.pending = []  # every index directory exists: no task, no fork
    out = []
    if part.get("log_logins", True):
        # The lean scan keeps no skip records: its line says skipped=- (the full path counts them).
        served = outcome.served
        counts = b"%d -" % served if served is not None else b"- -"
        out.append(frame(T_LOGIN, counts + b" lean"))
    if outcome.denied:
        if outcome.deny is not None:
            out.append(frame(T_CLIENT, outcome.deny))
        out.append(frame(T_DENY, b""))
    else:
        out += [
            frame(
                T_ENV,
                k.encode("utf-8", "surrogateescape") + b"\0" + v.encode("utf-8", "surrogateescape"),
            )
            for k, v in outcome.changes.items()
        ]

    def finish(send: Callable[[bytes], None]) -> None:
        # As the full worker (nsprov._worker.finish) logs and sends them.
        if outcome.errors:
            log(f"user {user}: " + "; ".join(outcome.errors))
        if outcome.warnings:
            log(f"user {user}: " + "; ".join(outcome.warnings), "warning")
        tail = [] if outcome.denied else [frame(T_CLIENT, line) for line in outcome.client]
        send(b"".join([*tail, frame(T_OK, b"")]))

    if outcome.pending and not outcome.denied:
        send(b"".join(out))

        def tasks(worker_fd: int) -> None:  # pragma: no cover - runs in the forked worker
            run_tasks(outcome)
            finish(lambda data: _send(worker_fd, data))

        if threaded:
            return tasks
        run_tasks(outcome)
        finish(send)
        return None
    send(b"".join(out))
    finish(send)
    return None


def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
