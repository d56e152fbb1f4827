"""The post-login worker: runs in the forked child of ``nsprov post-login``.

It loads the config, runs the configured actions for the protocol, runs the
work that must be done as the user after dropping to the user's identity,
and reports everything to the parent as frames.  It never touches the client
connection (the parent closed it here); the parent writes client lines and
execs.  Every failure is reported in one frame, logged by the parent as one
line.
"""

# ruff: noqa: SLF001 - the worker drives the private state of the Login it creates

from __future__ import annotations

import os
import sys
import time

from ._lean import version_signs as version_signs  # noqa: PLC0414 - re-exported
from ._postlogin import (
    T_CLIENT,
    T_DEADLINE,
    T_DENY,
    T_ENV,
    T_FAIL,
    T_LOGIN,
    T_OK,
    T_POLICY,
    T_SCAN,
    frame,
    log,
)
from ._postlogin import installed_version as installed_version  # noqa: PLC0414 - re-exported (check)

TYPE_CHECKING = False  # not typing's: the parent imports this module to pass work() on
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._breaker import SpoolBreaker
    from ._config import Config
    from ._login import Login
    from ._postlogin import Options


def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _env_frame(key: str, value: str) -> bytes:
    return frame(
        T_ENV,
        key.encode("utf-8", "surrogateescape") + b"\0" + value.encode("utf-8", "surrogateescape"),
    )


def _failure(e: BaseException) -> bytes:
    from .exceptions import NsprovError  # noqa: PLC0415 - only on failure

    text = str(e) if isinstance(e, NsprovError) else f"internal error: {type(e).__name__}: {e}"
    return frame(T_FAIL, text.encode("utf-8", "backslashreplace"))


def finish(fd: int, login: Login, errors: list[str]) -> None:
    """Run the user's tasks (as the user), log one line, send the effects and OK."""
    from ._login import run_user_tasks  # noqa: PLC0415 - loaded by run() already; no cost

    if login._breaker is not None:
        login._breaker.close()  # root's state directory stays out of the user's process
    if login._denied is None:
        errors = errors + run_user_tasks(login)
    warnings = [w for w in login._warnings if not w.startswith("debug: ")]
    for line in (w for w in login._warnings if w.startswith("debug: ")):
        log(f"user {login.user}: {line}", "debug")
    if errors:
        log(f"user {login.user}: " + "; ".join(errors))
    if warnings:
        log(f"user {login.user}: " + "; ".join(warnings), "warning")
    out = []
    if login._config is None or login._config.log_logins:
        counts = login._counts
        words = b"%d %d" % counts if counts is not None else b"- -"
        out.append(frame(T_LOGIN, words + b" full"))
    deny = login._deny_line()
    if login._denied is not None:
        if deny is not None:
            out.append(frame(T_CLIENT, deny))
        out.append(frame(T_DENY, b""))
    else:
        out += [_env_frame(k, v) for k, v in login._changes().items()]
        out += [frame(T_CLIENT, line) for line in login._client if line]
    out.append(frame(T_OK, b""))
    _send(fd, b"".join(out))


def without_namespaces(config: Config) -> Config:
    """*config* with the namespaces action removed from every protocol's list."""
    import attrs  # noqa: PLC0415

    a = config.actions

    def drop(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(n for n in names if n != "namespaces")

    return attrs.evolve(
        config,
        actions=attrs.evolve(a, imap=drop(a.imap), pop3=drop(a.pop3), default=drop(a.default)),
    )


def cache_dir() -> str | None:
    """The config cache directory: only for root, whose /run/nsprov nobody else can write."""
    from ._config import DEFAULT_CACHE_DIR  # noqa: PLC0415 - loaded by run() already

    return DEFAULT_CACHE_DIR if os.geteuid() == 0 else None


def run(
    fd: int,
    opts: Options,
    environ: Mapping[str, str],
    *,
    state_dir: str | None = None,
    profile: str | None = None,
    profile_dir: str | None = None,
) -> None:
    """``nsprov post-login``: the configured actions, reported on *fd*.

    *state_dir* holds the per-spool breaker's markers (:mod:`nsprov._breaker`);
    by default root's :data:`~nsprov._breaker.SPOOL_STATE_DIR`, none for others.
    *profile* is the state of the login profile that sent this login here
    (:func:`nsprov._profile.load_status`): unless ``warm``, the profile is compiled
    from the configuration just read and written to *profile_dir* (default
    :func:`nsprov._profile.default_dir`) for the next logins.
    """
    started = time.monotonic()
    try:
        _site()
        from ._config import load_config  # noqa: PLC0415 - inside the try: an import error fails open
        from ._login import Login, run_actions  # noqa: PLC0415 - as above
        from ._profile import config_key  # noqa: PLC0415 - as above

        key = config_key(opts.config) if profile not in (None, "warm") else None
        config = load_config(opts.config, cache_dir=cache_dir())
        config.check_does_something()
        if opts.deadline is None:
            _send(fd, frame(T_DEADLINE, str(config.deadline).encode()))
        _send(fd, frame(T_POLICY, config.on_error.encode()))
        login = Login(environ, protocol=opts.protocol, config=config)
        login._deadline_at = started + (opts.deadline or config.deadline)
        from ._breaker import SpoolBreaker, spool_state_dir  # noqa: PLC0415 - as above

        state_dir = state_dir or spool_state_dir()
        if state_dir is not None:
            login._breaker = SpoolBreaker(state_dir, lambda data: _send(fd, frame(T_SCAN, data)))
        if (sign := version_signs(environ, config.dialect)) is not None:
            login._warning(sign)
        if profile is not None and login.user in config.debug_users:
            login._warning(f"debug: the full login path served (profile: {profile})")
        if key is not None:
            store_profile(opts.config, config, key, profile_dir, breaker=login._breaker)
        installed = installed_version(opts.next)
        if installed is not None and installed != config.dialect:
            login._warning(
                f"Dovecot {installed} is installed but [dovecot] version = "
                f'"{config.dialect}": namespaces not exported (they would break every session); '
                f'set version = "{installed}"'
            )
            config = without_namespaces(config)
            login._config = config
        errors = run_actions(login, config)
        finish(fd, login, errors)
    except Exception as e:
        _send(fd, _failure(e))


def _site() -> None:
    """Under ``python -I -S`` (the fast-path script), add the site directories the full path needs.

    The parent started without ``site`` to spare every login its work; the full path
    imports attrs, which lives in site-packages: the forked worker adds them itself
    (``site.main()``: with ``-I``, no user site and no environment variable count).
    """
    if sys.flags.no_site:
        import site  # noqa: PLC0415 - only in a worker started with -S

        site.main()


def store_profile(
    config_path: str,
    config: Config,
    key: tuple[object, ...],
    directory: str | None,
    *,
    breaker: SpoolBreaker | None = None,
) -> bool:
    """Compile *config* into a login profile and write it keyed *key*; True if written.

    Nothing is written for a configuration the lean path cannot serve
    (:func:`nsprov._profile_compile.compile_profile` gives None); then every login
    takes the full path.  Compiling reads the spools' ignore files: with *breaker*,
    under each spool's breaker as a scan is (a hung spool holds this worker as it
    would the scan, and a spool the breaker skips gets no profile written now).
    """
    from ._profile import postlogin_part, store  # noqa: PLC0415 - loaded by the caller
    from ._profile_compile import compile_profile  # noqa: PLC0415 - only when a profile is due

    entered: list[str] = []
    try:
        if breaker is not None:
            for spool in config.spools:
                if not spool.ignore_file:
                    continue
                if breaker.enter(spool.path) is not None:
                    return False  # skipped: its ignore file is not read now
                entered.append(spool.path)
        compiled = compile_profile(config)
    except OSError:
        return False
    finally:
        for path in entered:
            breaker.leave(path)  # type: ignore[union-attr]
    if compiled is None:
        return False
    a = config.actions
    compiled["postlogin"] = postlogin_part(
        deadline=config.deadline,
        on_error=config.on_error,
        dialect=config.dialect,
        debug_users=config.debug_users,
        actions=(a.imap, a.pop3, a.default),
        log_logins=config.log_logins,
    )
    return store(config_path, compiled, key=key, directory=directory)


def work(opts: Options, environ: Mapping[str, str]) -> Callable[[int], None]:
    """The worker :func:`nsprov._postlogin.main` forks: :func:`run` on the frame pipe it is given.

    The post-login parent does not import this module: its caller (``nsprov``'s
    dispatch) passes this function in, so the parent stays standard library only.
    """

    def child(fd: int) -> None:  # pragma: no cover - runs in the forked worker
        run(fd, opts, environ)

    return child


def run_hook(
    fd: int,
    opts: Options,
    environ: Mapping[str, str],
    hook: Callable[[Login], None],
    *,
    config_given: bool,
) -> None:
    """A Python hook script's worker: call *hook*, then report like post-login."""
    try:
        from ._login import Denied, Login  # noqa: PLC0415 - inside the try: an import error fails open

        config = None
        if config_given:
            from ._config import load_config  # noqa: PLC0415 - only for hooks given --config

            config = load_config(opts.config)
            if opts.deadline is None:
                _send(fd, frame(T_DEADLINE, str(config.deadline).encode()))
            _send(fd, frame(T_POLICY, config.on_error.encode()))
        login = Login(environ, protocol=opts.protocol, config=config)
        try:
            hook(login)
        except Denied:
            pass
        finish(fd, login, [])
    except Exception as e:
        _send(fd, _failure(e))
