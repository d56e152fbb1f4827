"""Per-user checks: each user's namespaces as a login would compute them, virtual users, user selection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from .._deadline import DEFAULT_DEADLINE
from .._env import EnvLimits
from .._scan import DEFAULT_FS, Fs
from ..exceptions import NsprovError
from .findings import Finding, _f, _show, _some

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from .._config import Config
    from .._identity import MailUser
    from .._reply import ReplyBudget


#: The IPv6 addresses make ``IP``/``LOCAL_IP`` as long as they get.
_IP = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"


def base_environ(user: MailUser) -> dict[str, str]:
    """A realistic post-login environment for *user*, before nsprov adds anything."""
    ident = user.identity
    return {
        "USER": user.user,
        "UID": str(ident.uid),
        "GID": str(ident.gid),
        "HOME": user.home or "",
        "SYSTEM_GROUPS_USER": user.user,
        "AUTH_MECH": "PLAIN",
        "AUTH_TOKEN": "0" * 40,
        "IP": _IP,
        "LOCAL_IP": _IP,
        "USERDB_KEYS": "UID GID HOME SYSTEM_GROUPS_USER AUTH_MECH AUTH_TOKEN ",
    }


def _var_size(key: str, value: str) -> int:
    return len(key.encode()) + 1 + len(value.encode("utf-8", "surrogateescape")) + 1


@attrs.frozen(kw_only=True)
class UserReport:
    """What one user gets: mailboxes found, namespaces served, sizes against the limits."""

    user: str
    uid: int
    gid: int
    home: str | None
    #: Mailboxes the user may read (before namespace.max and the environment limits).
    found: int
    #: Namespaces nsprov post-login exports.
    served: int
    #: The whole post-login environment after nsprov, in bytes (NAME=value plus NUL each).
    env_bytes: int
    #: The ``USERDB_KEYS`` string, which must stay under 128 KiB.
    userdb_keys_bytes: int
    serve: ReplyBudget | None = None

    @property
    def over(self) -> bool:
        """True when the user does not get every mailboxes it may read."""
        return self.served < self.found

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON object."""
        serve = self.serve
        return {
            "user": self.user,
            "uid": self.uid,
            "gid": self.gid,
            "home": None if self.home is None else _show(self.home),
            "found": self.found,
            "served": self.served,
            "env_bytes": self.env_bytes,
            "userdb_keys_bytes": self.userdb_keys_bytes,
            "serve": None
            if serve is None
            else {
                "fits": serve.fits,
                "total": serve.total,
                "size": serve.size,
                "full_size": serve.full_size,
                "budget": serve.budget,
            },
        }


def check_user(
    config: Config,
    user: MailUser,
    *,
    fs: Fs = DEFAULT_FS,
    limits: EnvLimits = EnvLimits(),
    budget: Callable[[Config, MailUser], ReplyBudget] | None = None,
    serve_mode: bool | None = None,
    deadline: float = DEFAULT_DEADLINE,
) -> tuple[UserReport | None, list[Finding], set[tuple[str, bytes]]]:
    """One user's namespaces against ``namespace.max``, the kernel and the serve budget.

    Returns the report (None when the namespaces cannot be computed, or not
    within *deadline* seconds: a hung spool), the findings, and the
    ``(spool, raw name)`` keys of every mailbox the user may read.
    """
    from .._deadline import run_with_deadline  # noqa: PLC0415
    from .._engine import plan  # noqa: PLC0415

    subject = f"user {user.user}"
    environ = base_environ(user)
    try:
        p = run_with_deadline(
            lambda: plan(config, user, environ, fs=fs, limits=limits),
            deadline,
            what=f"the scan for user {user.user}",
        )
    except (NsprovError, OSError) as e:
        return (
            None,
            [
                _f(
                    "error",
                    "user-error",
                    subject,
                    f"user {user.user}: no namespaces can be computed: {e}",
                    "Fix what the message names (a home for {home} templates, a readable "
                    "spool); nsprov show --user USER --explain shows the same.",
                )
            ],
            set(),
        )
    served = p.discovery.served
    over = [k for k in p.discovery.skipped if k.reason == "over-limit"]
    found = len(served) + len(over)
    env = {**environ, **p.environ}
    report = UserReport(
        user=user.user,
        uid=user.identity.uid,
        gid=user.identity.gid,
        home=user.home,
        found=found,
        served=len(served),
        env_bytes=sum(_var_size(k, v) for k, v in env.items()),
        userdb_keys_bytes=_var_size("USERDB_KEYS", env["USERDB_KEYS"]),
    )
    out = _limit_findings(config, user, found, len(served))
    if budget is not None and served:
        rb = budget(config, user)
        report = attrs.evolve(report, serve=rb)
        if rb.fits < rb.total:
            out.append(_budget_finding(user, rb, serve_mode))
    keys = {(s.spool, s.raw) for s in served} | {(k.spool, k.raw) for k in over}
    return report, out, keys


def _limit_findings(config: Config, user: MailUser, found: int, served: int) -> list[Finding]:
    """``namespace-max`` and ``env-limit``: *found* readable mailboxes, *served* of them fit."""
    from .._env import MAX_ARG_STRLEN  # noqa: PLC0415

    subject = f"user {user.user}"
    out: list[Finding] = []
    if found > config.max_namespaces:
        out.append(
            _f(
                "warning",
                "namespace-max",
                subject,
                f"user {user.user} may read {found} mailboxes, namespace.max = "
                f"{config.max_namespaces}: only the first {config.max_namespaces} in discovery "
                "order are served",
                "Raise max under [namespace] (the kernel limits allow about 1,000 on 2.3 and "
                "500 on 2.4), or exclude mailboxes the user does not need.",
            )
        )
    if served < min(found, config.max_namespaces):
        out.append(
            _f(
                "warning",
                "env-limit",
                subject,
                f"only {served} of user {user.user}'s {min(found, config.max_namespaces)} "
                f"namespaces fit the kernel's environment limits (USERDB_KEYS may be at most "
                f"{MAX_ARG_STRLEN} bytes, one string): the first {served} in discovery "
                "order are served, and each login logs a warning",
                f"Set max = {served} under [namespace] to make the cut deliberate, shorten "
                "the name and index templates (every byte repeats per namespace), or give the "
                "user fewer mailboxes.",
            )
        )
    return out


def _budget_finding(user: MailUser, rb: ReplyBudget, serve_mode: bool | None) -> Finding:
    """``serve-budget``: the serve reply of *user* would be cut."""
    subject = f"user {user.user}"
    return _f(
        "warning" if serve_mode is not False else "info",
        "serve-budget",
        subject,
        f"in serve mode user {user.user} would get {rb.fits} of {rb.total} "
        f"namespaces: the reply needs {rb.full_size} bytes, the budget is "
        f"{rb.budget} (Dovecot's auth worker refuses replies over 8192 bytes)",
        "Serve this user in post-login mode (nsprov post-login), which carries "
        "about 1,000 namespaces."
        + ("" if serve_mode is not False else " Post-login mode is wired: nothing to do."),
    )


def check_virtual(
    config: Config, users: Sequence[MailUser], uid_names: Mapping[int, Sequence[str]]
) -> list[Finding]:
    """Users who share one uid: file system permissions cannot tell them apart."""
    by_uid: dict[int, set[str]] = {}
    for u in users:
        by_uid.setdefault(u.identity.uid, set()).add(u.user)
    out = []
    for uid, checked in sorted(by_uid.items()):
        names = sorted(checked | set(uid_names.get(uid, ())))
        if len(names) < 2 and not config.identity.mail_uid:
            continue
        via = " ([identity] mail_uid)" if config.identity.mail_uid else ""
        out.append(
            _f(
                "warning",
                "virtual-users",
                f"uid {uid}",
                f"users {_some(names)} map to uid {uid}{via}: file system permissions cannot "
                "tell them apart, so they all get the same shared mailboxes",
                "Give each user its own uid where they need different mailboxes; otherwise "
                "grant per user with Dovecot's ACL plugin (dovecot-acl files) and set [dovecot] "
                "acl_plugin = true.",
            )
        )
    return out


def select_users(
    entries: Iterable[tuple[str, int]], *, first_valid_uid: int, last_valid_uid: int, cap: int
) -> tuple[list[str], int]:
    """Login names Dovecot would accept (uid within its range, never root), capped.

    Returns the first *cap* names in uid order and how many there were.
    """
    low = max(first_valid_uid, 1)
    eligible = sorted(
        {
            (uid, name)
            for name, uid in entries
            if uid >= low and (not last_valid_uid or uid <= last_valid_uid)
        }
    )
    return [name for _, name in eligible[:cap]], len(eligible)
