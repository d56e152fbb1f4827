"""The post-login context: what an action or a Python hook works on.

A :class:`Login` is what an action (built-in or written by an administrator)
works on: the user, the client and server addresses, the protocol, the userdb
fields, and the effects recorded so far.  Effects are applied only when every
action has run: userdb fields become environment variables (with the
``USERDB_KEYS`` bookkeeping done once, right), client lines go to the client,
and a denial ends the login without exec.

The built-in actions themselves are in :mod:`nsprov._actions`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import _actrules
from ._actions import ACTIONS, clean_text, describe_error, run_actions
from .exceptions import Denied

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._breaker import SpoolBreaker
    from ._config import Config
    from ._identity import MailUser


class Login:
    """One login, as a post-login step sees it, and the effects of the actions so far.

    Args:
        environ: the post-login environment (``USER``, ``IP``, userdb fields …).
        protocol: ``"imap"``, ``"pop3"`` or ``None`` (then nothing is written to the client).
        config: the nsprov configuration, if one was loaded.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        protocol: str | None = None,
        config: Config | None = None,
    ) -> None:
        self._environ: dict[str, str] = dict(environ)
        self._env: dict[str, str] = dict(environ)
        self._protocol = protocol
        self._config = config
        self._client: list[bytes] = []
        self._denied: str | None = None
        self._user_tasks: list[tuple[str, Callable[[], None]]] = []
        self._warnings: list[str] = []
        self._deadline_at: float | None = None
        #: Post-login's per-spool breaker (set by the worker when it runs as root).
        self._breaker: SpoolBreaker | None = None
        self._mail_user: MailUser | None = None
        #: The namespaces action's (served, skipped) entries, for the login's info line.
        self._counts: tuple[int, int] | None = None

    # -- context

    @property
    def user(self) -> str:
        """The login name (``USER``); nsprov never changes it."""
        return self._environ.get("USER", "")

    @property
    def ip(self) -> str:
        """The client address (``IP``), empty when unknown."""
        return self._environ.get("IP", "")

    @property
    def local_ip(self) -> str:
        """The server address the client connected to (``LOCAL_IP``)."""
        return self._environ.get("LOCAL_IP", "")

    @property
    def userdb(self) -> dict[str, str]:
        """Userdb fields as they stand now, keys lowercase (as Dovecot will see them)."""
        return _actrules.userdb(self._env)

    def template_values(self) -> dict[str, str]:
        """Values for ``{field}`` templates: userdb fields, ``user``, ``ip``, ``local_ip``, ``protocol``."""
        return _actrules.template_values(
            self._env, user=self.user, ip=self.ip, local_ip=self.local_ip, protocol=self._protocol
        )

    @property
    def mail_user(self) -> MailUser:
        """The identity the mail process will have (uid, gid, groups, home)."""
        if self._mail_user is None:
            from ._config import IdentityConfig  # noqa: PLC0415 - only for a Login built without one
            from ._identity import mail_user_from_environ  # noqa: PLC0415 - as above

            ident = self._config.identity if self._config is not None else IdentityConfig()
            self._mail_user = mail_user_from_environ(self._env, ident)
        return self._mail_user

    def _remaining(self, reserve: float = 0.0) -> float | None:
        """Seconds left before the post-login deadline, less *reserve* (None: no deadline)."""
        if self._deadline_at is None:
            return None
        return self._deadline_at - time.monotonic() - reserve

    # -- effects

    def set_field(self, name: str, value: str) -> None:
        """Set userdb field *name* (listed in ``USERDB_KEYS`` once)."""
        _actrules.set_field(self._env, name, value)

    def append_field(self, name: str, value: str, separator: str = ",") -> None:
        """Append *value* to userdb field *name*, or set it if it is unset or empty."""
        _actrules.append_field(self._env, name, value, separator)

    def default_field(self, name: str, value: str) -> None:
        """Set userdb field *name* only if userdb did not."""
        _actrules.default_field(self._env, name, value)

    def _update_environ(self, variables: Mapping[str, str]) -> None:
        """Merge variables already in userdb form (``NAMESPACE``, ``USERDB_KEYS`` included)."""
        self._env.update(variables)

    def alert(self, text: str) -> None:
        """Show *text* to an IMAP client as ``* OK [ALERT]``; POP3 and unknown protocols stay silent."""
        if self._protocol == "imap":
            self._client.append(_actrules.alert_line(text))

    def deny(self, text: str = "Access denied.") -> None:
        """Refuse the login with *text*; raises :class:`Denied` to stop the remaining actions."""
        self._denied = clean_text(text)
        raise Denied(self._denied)

    def as_user(self, what: str, task: Callable[[], None]) -> None:
        """Run *task* after every action, in a process that has become the mail user."""
        self._user_tasks.append((what, task))

    def _deny_line(self) -> bytes | None:
        """The one line a denied client gets, by protocol."""
        if self._denied is None:
            return None
        return _actrules.deny_line(self._denied, self._protocol)

    def _changes(self) -> dict[str, str]:
        """The variables to export: those set or changed since the login began."""
        return {k: v for k, v in self._env.items() if self._environ.get(k) != v}

    def _warning(self, message: str) -> None:
        """Record a warning (all of a login's warnings share one log line)."""
        self._warnings.append(message)

    # -- built-in actions

    def add_namespaces(self, config: Config | str | None = None) -> None:
        """Run the namespaces action: discover, export, create index directories as the user."""
        cfg = self._configured(config)
        from ._engine import ensure_dirs, plan  # noqa: PLC0415 - the scan only for the namespaces action

        user = self.mail_user
        debug = user.user in cfg.debug_users
        p = plan(cfg, user, self._env, keep_skipped=debug, breaker=self._breaker)
        if debug:
            from ._engine import explain_lines  # noqa: PLC0415 - only for debug_users

            self._warnings += [f"debug: {line}" for line in explain_lines(p)]
        self._warnings += p.warnings
        self._counts = (len(p.discovery.served), len(p.discovery.skipped))
        self._update_environ(p.environ)
        dirs = p.dirs
        if cfg.create_dirs and dirs:

            def make() -> None:
                failures = ensure_dirs(dirs)
                if failures:
                    raise OSError(
                        f"cannot create {len(failures)} index/control directories "
                        f"(Dovecot will try itself): {failures[0]}"
                    )

            self.as_user("index directories", make)

    def run(self, action: str, config: Config | str | None = None) -> None:
        """Run one built-in action by name (``deny``, ``alert``, ``acl_groups`` …)."""
        cfg = self._configured(config)
        ACTIONS[action](self, cfg)

    # -- nsprov's own use: the worker and the built-in actions (not part of the API)

    def _configured(self, config: Config | str | None) -> Config:
        """*config*, the one given to the constructor, or the one at the default path."""
        if config is None:
            if self._config is None:
                from ._config import load_config  # noqa: PLC0415 - only for hooks without --config
                from ._defaults import DEFAULT_CONFIG_PATH  # noqa: PLC0415 - as above

                self._config = load_config(DEFAULT_CONFIG_PATH)
            return self._config
        if isinstance(config, str):
            from ._config import load_config  # noqa: PLC0415 - only for hooks naming a file

            return load_config(config)
        return config

    def _run_user_tasks(self) -> list[str]:
        """Become the mail user (in this throwaway process) and run the queued tasks."""
        if not self._user_tasks:
            return []
        from ._engine import drop_privileges  # noqa: PLC0415 - only when there are tasks

        drop_privileges(self.mail_user)
        errors = []
        for what, task in self._user_tasks:
            try:
                task()
            except Exception as e:
                errors.append(f"{what}: {describe_error(e)}")
        return errors


def run_user_tasks(login: Login) -> list[str]:
    """Become the mail user (in this throwaway process) and run the queued tasks."""
    return login._run_user_tasks()  # noqa: SLF001 - the worker's entry to the context


__all__ = ["ACTIONS", "Denied", "Login", "clean_text", "run_actions", "run_user_tasks"]
