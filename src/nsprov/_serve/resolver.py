"""The blocking half of a lookup: :class:`Resolver` validates a cached :class:`Entry` or scans anew.

It runs in a worker thread and returns an :class:`Outcome` (the :class:`Answer`,
a new cache entry, directories to create, lines to log); the event loop owns
the cache.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Literal

import attrs

from .._identity import identify, identify_login
from .._postlogin import STAMP_FIELD, config_stamp
from .._reply import _json, default_reply_budget, fit_reply
from .._scan import DEFAULT_FS, Fs
from ..exceptions import IdentityError, NsprovError
from .codec import PostloginKey, UserdbKey
from .options import DEFAULT_CACHE_TTL
from .recorder import Deps, Recorder

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._config import Config
    from .._identity import MailUser
    from .log import Level

#: Replies to ``nsprov post-login --serve`` are bounded by the kernel's environment limits
#: (:func:`nsprov._engine.plan` against a typical Dovecot environment) rather than by
#: Dovecot's 8 KiB auth reply.
POSTLOGIN_BASE_ENV = {
    "USERDB_KEYS": "SYSTEM_GROUPS_USER UID GID HOME AUTH_MECH AUTH_TOKEN ",
}
#: A lookup: Dovecot's userdb key, or the post-login fast path's.
Key = UserdbKey | PostloginKey


def load_stamped(load: Callable[[str], Config], path: str) -> tuple[Config, str | None]:
    """``load(path)`` and the :func:`nsprov._postlogin.config_stamp` of the file it read.

    The stamp is taken before and after reading; when they differ the file
    changed meanwhile and the stamp is None (no post-login key matches it).
    """
    before = config_stamp(path)
    config = load(path)
    after = config_stamp(path)
    return config, before if before == after else None


@attrs.frozen
class Answer:
    """What a lookup returns: a JSON object, not found, or a failure."""

    kind: Literal["found", "not-found", "fail"]
    value: bytes = b""
    error: str = ""
    fits: int = 0
    total: int = 0
    #: How it was resolved (``hit``/``miss``, empty when not resolved): for the log line.
    how: str = attrs.field(default="", eq=False)

    @classmethod
    def fail(cls, error: str) -> Answer:
        """A failed lookup."""
        return cls("fail", error=error)


@attrs.frozen
class Entry:
    """A cached answer: valid until ``expires`` and while its :class:`Deps` are unchanged."""

    answer: Answer
    deps: Deps
    expires: float
    generation: int


@attrs.frozen
class Outcome:
    """One resolution: the answer, a new cache entry, directories to create, lines to log."""

    answer: Answer
    how: Literal["hit", "miss"]
    entry: Entry | None = None
    #: (uid, gid, supplementary gids) and the missing directories to create as that identity.
    make_dirs: tuple[tuple[int, int, tuple[int, ...]], tuple[str, ...]] | None = None
    logs: tuple[tuple[Level, str, dict[str, object]], ...] = ()
    seconds: float = 0.0


class Resolver:
    """The blocking half of a lookup: validate a cached answer or compute a new one.

    Runs in a worker thread; it only reads the filesystem and NSS and never
    touches shared state, so the event loop owns the cache.
    """

    def __init__(
        self,
        *,
        budget: int | None = None,
        ttl: float = DEFAULT_CACHE_TTL,
        fs: Fs = DEFAULT_FS,
        clock: Callable[[], float] = time.monotonic,
        identify: Callable[[Config, str, str | None], MailUser] = identify,
    ) -> None:
        self.budget = budget
        self.ttl = ttl
        self.fs = fs
        self.clock = clock
        self.identify = identify

    def resolve(
        self,
        config: Config,
        generation: int,
        key: Key,
        entry: Entry | None,
        stamp: str | None = None,
    ) -> Outcome:
        """Answer *key*: from *entry* when it is still valid, else by scanning.

        *stamp* names *config*'s file (:func:`load_stamped`); post-login answers carry it.
        """
        started = self.clock()
        if entry is not None and entry.generation == generation and entry.expires > started:
            changed = entry.deps.changed(self.fs)
            if changed is None:
                return Outcome(entry.answer, "hit", seconds=self.clock() - started)
            why: tuple[tuple[Level, str, dict[str, object]], ...] = (
                ("debug", "invalidated", {"user": key.user, "path": os.fsdecode(changed)}),
            )
        else:
            why = ()
        outcome = self.compute(config, generation, key, started, stamp)
        return attrs.evolve(outcome, seconds=self.clock() - started, logs=why + outcome.logs)

    def compute(
        self, config: Config, generation: int, key: Key, now: float, stamp: str | None = None
    ) -> Outcome:
        """Scan for *key*'s user and build the answer (never raises)."""
        try:
            if isinstance(key, PostloginKey):
                return self._compute_postlogin(config, generation, key, now, stamp)
            return self._compute(config, generation, key, now)
        except NsprovError as e:
            error = str(e)
        except Exception as e:
            error = f"internal error: {type(e).__name__}: {e}"
        return Outcome(
            Answer.fail(error),
            "miss",
            logs=(("error", "lookup-failed", {"user": key.user, "error": error}),),
        )

    def _not_found(self, error: str, now: float, generation: int) -> Outcome:
        """A user nsprov does not serve (one debug line: the lookup line carries *error*)."""
        answer = Answer("not-found", error=error)
        return Outcome(answer, "miss", entry=self._entry(answer, Deps(), now, generation))

    def _recorder(self, config: Config, debug: bool) -> Recorder:
        recorder = Recorder(self.fs)
        if config.scan_cache is not None and not debug:
            from .._scancache import cache_files  # noqa: PLC0415

            # Before the scan reads it: a refresh racing this lookup invalidates the answer.
            for spool in config.spools:
                recorder.note_file(cache_files(config.scan_cache.dir, spool.path_bytes)[0])
        return recorder

    def _compute_postlogin(
        self, config: Config, generation: int, key: PostloginKey, now: float, stamp: str | None
    ) -> Outcome:
        """What the in-process path would export for this login, or not found when it would do more.

        The identity is the in-process path's (:func:`identify_login`); the variables are
        :func:`nsprov._engine.plan`'s, as the namespaces action exports them.  Any other
        action for the protocol, or a Dovecot version other than the configured one (the
        worker then exports nothing and says why), leaves the login to compute in-process.
        """
        from .._engine import plan  # noqa: PLC0415

        if stamp is None or stamp != key.stamp:
            return Outcome(Answer("not-found", error="another configuration"), "miss")
        if config.actions.for_protocol(key.protocol) != ("namespaces",):
            return self._not_found("other actions configured", now, generation)
        if key.dovecot is not None and key.dovecot != config.dialect:
            return self._not_found(f"Dovecot {key.dovecot} is installed", now, generation)
        try:
            user = identify_login(config, key.environ)
        except IdentityError as e:
            return self._not_found(str(e), now, generation)
        debug = user.user in config.debug_users
        recorder = self._recorder(config, debug)
        p = plan(config, user, POSTLOGIN_BASE_ENV, fs=recorder.fs(), keep_skipped=debug)
        fields = {k: v for k, v in p.environ.items() if k != "USERDB_KEYS"}
        fields[STAMP_FIELD] = stamp
        logs: list[tuple[Level, str, dict[str, object]]] = [
            ("warning", "scan-warning", {"user": user.user, "warning": w}) for w in p.warnings
        ]
        if debug:
            from .._engine import explain_lines  # noqa: PLC0415

            logs += [
                ("info", "explain", {"user": user.user, "line": line}) for line in explain_lines(p)
            ]
        served = len(p.discovery.namespaces)
        answer = Answer("found", value=_json(fields), fits=served, total=served)
        return Outcome(
            answer,
            "miss",
            entry=self._entry(answer, recorder.deps(), now, generation),
            make_dirs=self._missing_dirs(config, user, p.dirs),
            logs=tuple(logs),
        )

    @staticmethod
    def _missing_dirs(
        config: Config, user: MailUser, dirs: Sequence[str]
    ) -> tuple[tuple[int, int, tuple[int, ...]], tuple[str, ...]] | None:
        missing = tuple(d for d in dirs if not os.path.isdir(d)) if config.create_dirs else ()
        if not missing:
            return None
        ident = user.identity
        return (ident.uid, ident.gid, tuple(sorted(ident.groups))), missing

    def _compute(self, config: Config, generation: int, key: UserdbKey, now: float) -> Outcome:
        from .._engine import resolve  # noqa: PLC0415
        from .._scan import limit  # noqa: PLC0415

        try:
            user = self.identify(config, key.user, key.home)
        except IdentityError as e:
            return self._not_found(str(e), now, generation)
        debug = user.user in config.debug_users
        recorder = self._recorder(config, debug)
        p = resolve(config, user, fs=recorder.fs(), keep_skipped=debug)
        budget = self.budget if self.budget is not None else default_reply_budget(config.dialect)
        reply = fit_reply(p.discovery.namespaces, config.output_dialect, budget)
        logs: list[tuple[Level, str, dict[str, object]]] = [
            ("warning", "scan-warning", {"user": user.user, "warning": w}) for w in p.warnings
        ]
        if debug:
            from .._engine import explain_lines  # noqa: PLC0415

            logs += [
                ("info", "explain", {"user": user.user, "line": line}) for line in explain_lines(p)
            ]
        if reply.fits < reply.total:
            logs.append(
                (
                    "warning",
                    "over-budget",
                    {
                        "user": user.user,
                        "served": reply.fits,
                        "found": reply.total,
                        "size": reply.size,
                        "needed": reply.full_size,
                        "budget": budget,
                    },
                )
            )
        make_dirs = None
        if reply.fits:
            kept = attrs.evolve(p, discovery=limit(p.discovery, reply.fits, "the reply budget"))
            make_dirs = self._missing_dirs(config, user, kept.dirs)
        answer = Answer("found", value=reply.value, fits=reply.fits, total=reply.total)
        return Outcome(
            answer,
            "miss",
            entry=self._entry(answer, recorder.deps(), now, generation),
            make_dirs=make_dirs,
            logs=tuple(logs),
        )

    def _entry(self, answer: Answer, deps: Deps, now: float, generation: int) -> Entry | None:
        if self.ttl <= 0:
            return None
        return Entry(answer=answer, deps=deps, expires=now + self.ttl, generation=generation)
