"""The post-login context, the built-in actions, and the Python hook API.

A :class:`Login` is what an action (built-in or written by an administrator)
works on: the user, the client and server addresses, the protocol, the userdb
fields, and the effects recorded so far.  Effects are applied only when every
action has run: userdb fields become environment variables (with the
``USERDB_KEYS`` bookkeeping done once, right), client lines go to the client,
and a denial ends the login without exec.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from .exceptions import NsprovError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._breaker import SpoolBreaker
    from ._config import Config
    from ._identity import MailUser


class Denied(NsprovError):  # noqa: N818 - control flow, not a failure
    """Raised by :meth:`Login.deny` to stop the remaining actions."""


def clean_text(text: str) -> str:
    """Client text with CR, LF and NUL removed (the text is data, never protocol)."""
    return text.replace("\r", "").replace("\n", " ").replace("\0", "")


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
        self.environ: dict[str, str] = dict(environ)
        self.env: dict[str, str] = dict(environ)
        self.protocol = protocol
        self.config = config
        self.client: list[bytes] = []
        self.denied: str | None = None
        self.user_tasks: list[tuple[str, Callable[[], None]]] = []
        self.warnings: list[str] = []
        self.deadline_at: float | None = None
        #: Post-login's per-spool breaker (set by the worker when it runs as root).
        self.breaker: SpoolBreaker | None = None
        self._mail_user: MailUser | None = None

    # -- context

    @property
    def user(self) -> str:
        """The login name (``USER``); nsprov never changes it."""
        return self.environ.get("USER", "")

    @property
    def ip(self) -> str:
        """The client address (``IP``), empty when unknown."""
        return self.environ.get("IP", "")

    @property
    def local_ip(self) -> str:
        """The server address the client connected to (``LOCAL_IP``)."""
        return self.environ.get("LOCAL_IP", "")

    @property
    def userdb(self) -> dict[str, str]:
        """Userdb fields as they stand now, keys lowercase (as Dovecot will see them)."""
        out = {}
        for key in self.env.get("USERDB_KEYS", "").split(" "):
            if key and key.upper() in self.env:
                out[key.lower()] = self.env[key.upper()]
        return out

    def template_values(self) -> dict[str, str]:
        """Values for ``{field}`` templates: userdb fields, ``user``, ``ip``, ``local_ip``, ``protocol``."""
        return {
            **self.userdb,
            "user": self.user,
            "ip": self.ip,
            "local_ip": self.local_ip,
            "protocol": self.protocol or "",
        }

    @property
    def mail_user(self) -> MailUser:
        """The identity the mail process will have (uid, gid, groups, home)."""
        if self._mail_user is None:
            from ._config import IdentityConfig  # noqa: PLC0415
            from ._identity import mail_user_from_environ  # noqa: PLC0415

            ident = self.config.identity if self.config is not None else IdentityConfig()
            self._mail_user = mail_user_from_environ(self.env, ident)
        return self._mail_user

    def remaining(self, reserve: float = 0.0) -> float | None:
        """Seconds left before the post-login deadline, less *reserve* (None: no deadline)."""
        if self.deadline_at is None:
            return None
        return self.deadline_at - time.monotonic() - reserve

    # -- effects

    def _list_key(self, key: str) -> None:
        keys = self.env.get("USERDB_KEYS", "")
        if key.upper() in {k.upper() for k in keys.split(" ") if k}:
            return
        if keys and not keys.endswith(" "):
            keys += " "
        self.env["USERDB_KEYS"] = keys + key + " "

    def set_field(self, name: str, value: str) -> None:
        """Set userdb field *name* (listed in ``USERDB_KEYS`` once)."""
        key = _field_key(name)
        self.env[key] = value
        self._list_key(key)

    def append_field(self, name: str, value: str, separator: str = ",") -> None:
        """Append *value* to userdb field *name*, or set it if it is unset or empty."""
        key = _field_key(name)
        old = self.env.get(key, "")
        self.set_field(name, f"{old}{separator}{value}" if old else value)

    def default_field(self, name: str, value: str) -> None:
        """Set userdb field *name* only if userdb did not."""
        if _field_key(name) not in self.env:
            self.set_field(name, value)

    def update_environ(self, variables: Mapping[str, str]) -> None:
        """Merge variables already in userdb form (``NAMESPACE``, ``USERDB_KEYS`` included)."""
        self.env.update(variables)

    def alert(self, text: str) -> None:
        """Show *text* to an IMAP client as ``* OK [ALERT]``; POP3 and unknown protocols stay silent."""
        if self.protocol == "imap":
            self.client.append(f"* OK [ALERT] {clean_text(text)}\r\n".encode("utf-8", "replace"))

    def deny(self, text: str = "Access denied.") -> None:
        """Refuse the login with *text*; raises :class:`Denied` to stop the remaining actions."""
        self.denied = clean_text(text)
        raise Denied(self.denied)

    def as_user(self, what: str, task: Callable[[], None]) -> None:
        """Run *task* after every action, in a process that has become the mail user."""
        self.user_tasks.append((what, task))

    def deny_line(self) -> bytes | None:
        """The one line a denied client gets, by protocol."""
        if self.denied is None:
            return None
        if self.protocol == "imap":
            return f"* BYE [ALERT] {self.denied}\r\n".encode("utf-8", "replace")
        if self.protocol == "pop3":
            return f"-ERR [SYS/PERM] {self.denied}\r\n".encode("utf-8", "replace")
        return None

    def changes(self) -> dict[str, str]:
        """The variables to export: those set or changed since the login began."""
        return {k: v for k, v in self.env.items() if self.environ.get(k) != v}

    def warning(self, message: str) -> None:
        """Record a warning (all of a login's warnings share one log line)."""
        self.warnings.append(message)

    # -- built-in actions

    def add_namespaces(self, config: Config | str | None = None) -> None:
        """Run the namespaces action: discover, export, create index directories as the user."""
        cfg = _config(self, config)
        from ._engine import ensure_dirs, plan  # noqa: PLC0415

        user = self.mail_user
        debug = user.user in cfg.debug_users
        p = plan(cfg, user, self.env, keep_skipped=debug, breaker=self.breaker)
        if debug:
            from ._engine import explain_lines  # noqa: PLC0415

            self.warnings += [f"debug: {line}" for line in explain_lines(p)]
        self.warnings += p.warnings
        self.update_environ(p.environ)
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
        cfg = _config(self, config)
        ACTIONS[action](self, cfg)


def _field_key(name: str) -> str:
    if not name or any(c.isspace() or c == "=" for c in name):
        raise ValueError(f"invalid userdb field name {name!r}")
    key = name.upper()
    if key in {"USER", "USERDB_KEYS"}:
        raise ValueError(f"{key} is not a field nsprov sets")
    return key


def _config(login: Login, config: Config | str | None) -> Config:
    if config is None:
        if login.config is None:
            from ._config import load_config  # noqa: PLC0415
            from ._defaults import DEFAULT_CONFIG_PATH  # noqa: PLC0415

            login.config = load_config(DEFAULT_CONFIG_PATH)
        return login.config
    if isinstance(config, str):
        from ._config import load_config  # noqa: PLC0415

        return load_config(config)
    return config


# --- the built-in actions -------------------------------------------------------------------


def _match_user(patterns: tuple[str, ...], user: str) -> bool:
    if not patterns:
        return False
    from fnmatch import fnmatchcase  # noqa: PLC0415

    return any(fnmatchcase(user, p) for p in patterns)


def _match_ip(networks: tuple[str, ...], ip: str) -> bool:
    if not networks or not ip:
        return False
    import ipaddress  # noqa: PLC0415 - only when networks are configured

    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


def group_names(user: MailUser, *, numeric: bool = True) -> list[str]:
    """Names of the mail identity's groups (primary first, then sorted by gid), via NSS.

    A gid without a group entry appears as its number with *numeric*, else not at all.
    """
    import grp  # noqa: PLC0415

    names = []
    for gid in [user.identity.gid, *sorted(user.identity.groups)]:
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            if numeric:
                names.append(str(gid))
    return names


def _match_group(patterns: tuple[str, ...], login: Login) -> bool:
    if not patterns:
        return False
    names = group_names(login.mail_user)
    from fnmatch import fnmatchcase  # noqa: PLC0415

    return any(fnmatchcase(n, p) for n in names for p in patterns)


def action_deny(login: Login, config: Config) -> None:
    """Refuse the login by user, network or group, with allow-lists taking precedence."""
    d = config.actions.deny
    if d is None:
        return
    allowed = (
        _match_user(d.allow_users, login.user)
        or _match_ip(d.allow_networks, login.ip)
        or _match_ip(d.allow_local_networks, login.local_ip)
        or _match_group(d.allow_groups, login)
    )
    if allowed:
        return
    denied = (
        _match_user(d.users, login.user)
        or _match_ip(d.networks, login.ip)
        or _match_ip(d.local_networks, login.local_ip)
        or _match_group(d.groups, login)
        or d.default == "deny"
    )
    if denied:
        login.deny(d.message)


def action_alert(login: Login, config: Config) -> None:
    """Queue the configured alerts (IMAP only); conditional ones are checked as the user."""
    if login.protocol != "imap":
        return
    values = None
    for alert in config.actions.alerts:
        values = values or login.template_values()
        text = alert.text.render(values)
        if alert.if_exists is None:
            login.alert(text)
            continue
        path = alert.if_exists.render(values)
        slot = len(login.client)
        login.client.append(b"")

        def check(path: str = path, text: str = text, slot: int = slot) -> None:
            try:
                os.stat(path)
            except FileNotFoundError:
                return
            login.client[slot] = f"* OK [ALERT] {clean_text(text)}\r\n".encode("utf-8", "replace")

        login.as_user(f"alert condition {path}", check)


def acl_groups_value(names: list[str], dialect: str) -> str:
    """The ``acl_groups`` value: comma-separated; 2.3 doubles ``%`` (plugin settings are expanded)."""
    if dialect == "2.3":
        return ",".join(n.replace("%", "%%") for n in names)
    return ",".join(f'"{n}"' if any(c in n for c in ' ,"') else n for n in names)


def action_acl_groups(login: Login, config: Config) -> None:
    """Export the mail identity's UNIX groups as ``acl_groups`` (from NSS, never from ``groups``)."""
    a = config.actions.acl_groups
    names = group_names(login.mail_user, numeric=False)
    if a is not None and (a.include or a.exclude):
        from fnmatch import fnmatchcase  # noqa: PLC0415

        names = [
            n
            for n in names
            if (not a.include or any(fnmatchcase(n, p) for p in a.include))
            and not any(fnmatchcase(n, p) for p in a.exclude)
        ]
    # 2.3 splits the value on "," with no escape; 2.4's list parser treats '"' and '\\'
    # specially even inside quotes.  Such a name would be read as other groups' names, or break
    # the whole value: left out, with one warning.
    unsafe = "," if config.dialect == "2.3" else '"\\'
    skipped = [n for n in names if any(c in n for c in unsafe)]
    if skipped:
        names = [n for n in names if n not in skipped]
        login.warning(
            f"acl_groups: left out group names Dovecot {config.dialect} cannot take: "
            + ", ".join(map(repr, skipped))
        )
    if names:
        login.append_field("acl_groups", acl_groups_value(names, config.dialect))


def action_last_login(login: Login, config: Config) -> None:
    """Record the login time: a file in the home (written as the user), SQLite or PostgreSQL."""
    c = config.actions.last_login
    if c is None:
        return
    now = int(time.time())
    if c.backend == "file":
        path = c.path.render(login.template_values())
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))} {login.protocol or '-'} {login.ip or '-'}\n"
        login.as_user("last-login file", lambda: write_file_atomically(path, line))
        return
    from ._sql import record_login  # noqa: PLC0415

    record_login(
        c,
        user=login.user,
        protocol=login.protocol or "",
        ip=login.ip,
        when=now,
        budget=login.remaining(reserve=0.3),
    )


def write_file_atomically(path: str, text: str) -> None:
    """Replace *path* by a new file holding *text*: a temporary file, then rename.

    Run as the user: rename replaces a planted symlink itself and never writes
    through it; the temporary file is created with O_EXCL and O_NOFOLLOW.
    """
    directory = os.path.dirname(path)
    old = os.umask(0o077)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        os.umask(old)


def action_mail(login: Login, config: Config) -> None:
    """Override the mail location (2.3: ``MAIL``; 2.4: ``MAIL_DRIVER``, ``MAIL_PATH`` …)."""
    m = config.actions.mail
    if m is None:
        return
    from ._location import MailLocation  # noqa: PLC0415

    location = MailLocation.parse(m.location.render(login.template_values()))
    if config.dialect == "2.3":
        login.set_field("mail", location.render())
        return
    from ._env import location_settings_24  # noqa: PLC0415

    for key, value in location_settings_24(location):
        login.set_field(key.lower(), value)


def action_fields(login: Login, config: Config) -> None:
    """Set, append to, or default arbitrary userdb fields from templates."""
    values = login.template_values()
    for f in config.actions.fields:
        value = f.value.render(values)
        if f.literal_percent and config.dialect == "2.3":
            value = value.replace("%", "%%")
        if f.mode == "set":
            login.set_field(f.name, value)
        elif f.mode == "append":
            login.append_field(f.name, value, f.separator)
        else:
            login.default_field(f.name, value)


def action_namespaces(login: Login, config: Config) -> None:
    """The shared-namespace discovery."""
    login.add_namespaces(config)


ACTIONS: dict[str, Callable[[Login, Config], None]] = {
    "deny": action_deny,
    "alert": action_alert,
    "acl_groups": action_acl_groups,
    "last_login": action_last_login,
    "mail": action_mail,
    "fields": action_fields,
    "namespaces": action_namespaces,
}


def run_actions(login: Login, config: Config) -> list[str]:
    """Run the configured actions for the login's protocol; return one error line per failed action.

    A failed action is logged and skipped (fail-open); with ``on_error =
    "deny"`` the first failure denies the login.  A denial stops the rest.
    """
    errors: list[str] = []
    for name in config.actions.for_protocol(login.protocol):
        try:
            ACTIONS[name](login, config)
        except Denied:
            break
        except Exception as e:
            errors.append(f"{name}: {_describe(e)}")
            if config.on_error == "deny":
                raise
    return errors


def run_user_tasks(login: Login) -> list[str]:
    """Become the mail user (in this throwaway process) and run the queued tasks."""
    if not login.user_tasks:
        return []
    from ._engine import drop_privileges  # noqa: PLC0415

    drop_privileges(login.mail_user)
    errors = []
    for what, task in login.user_tasks:
        try:
            task()
        except Exception as e:
            errors.append(f"{what}: {_describe(e)}")
    return errors


def _describe(e: BaseException) -> str:
    if isinstance(e, NsprovError | ValueError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return f"{type(e).__name__}: {e}"
