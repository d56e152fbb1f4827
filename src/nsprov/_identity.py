"""The identity the mail process will have, mirroring Dovecot's restrict-access.

Dovecot's mail process sets its gid, then, only when userdb returns
``system_groups_user``, ``initgroups(that user, gid)``; then adds
``mail_access_groups``; then sets its uid (core src/lib/restrict-access.c).
Supplementary groups outside ``first_valid_gid``..``last_valid_gid`` are
dropped.  Without ``system_groups_user`` the process has its primary group and
the access groups only.  Permission checks must use exactly that identity.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import attrs

from . import _plainscan
from ._perms import Identity
from .exceptions import IdentityError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from ._config import IdentityConfig


@attrs.frozen(kw_only=True)
class MailUser:
    """A user logging in: name, home and the mail process identity."""

    user: str
    home: str | None
    identity: Identity
    system_groups_user: str | None = None

    @property
    def uid(self) -> int:
        """The mail process uid."""
        return self.identity.uid


def _uid(value: str, getpwnam: Callable[[str], object]) -> int:
    return _plainscan._uid(value, getpwnam)  # noqa: SLF001 - the one rule


def _gid(value: str, getgrnam: Callable[[str], object]) -> int:
    return _plainscan._gid(value, getgrnam)  # noqa: SLF001 - the one rule


def _groups(
    *,
    gid: int,
    system_groups_user: str | None,
    access_groups: Iterable[str],
    cfg: IdentityConfig,
    getgrouplist: Callable[[str, int], list[int]],
    getgrnam: Callable[[str], object],
) -> frozenset[int]:
    return _plainscan.groups_of(
        gid=gid,
        system_groups_user=system_groups_user,
        access_groups=access_groups,
        first_valid_gid=cfg.first_valid_gid,
        last_valid_gid=cfg.last_valid_gid,
        getgrouplist=getgrouplist,
        getgrnam=getgrnam,
    )


refuse_root = _plainscan.refuse_root
_split_groups = _plainscan.split_groups


def mail_user_from_environ(
    environ: Mapping[str, str],
    cfg: IdentityConfig,
    *,
    getpwnam: Callable[[str], object] | None = None,
    getgrnam: Callable[[str], object] | None = None,
    getgrouplist: Callable[[str, int], list[int]] = os.getgrouplist,
) -> MailUser:
    """The mail user of a post-login environment (``USER``, userdb ``UID``, ``GID`` …).

    The rule is :func:`nsprov._plainscan.identity_from_environ`, the lean path's.
    """
    user, home, uid, gid, groups, sgu = _plainscan.identity_from_environ(
        environ,
        mail_uid=cfg.mail_uid,
        mail_gid=cfg.mail_gid,
        mail_access_groups=cfg.mail_access_groups,
        first_valid_gid=cfg.first_valid_gid,
        last_valid_gid=cfg.last_valid_gid,
        getpwnam=getpwnam,
        getgrnam=getgrnam,
        getgrouplist=getgrouplist,
    )
    return MailUser(
        user=user,
        home=home,
        identity=Identity(uid=uid, gid=gid, groups=groups),
        system_groups_user=sgu,
    )


def mail_user_from_nss(
    user: str,
    cfg: IdentityConfig,
    *,
    uid: int | None = None,
    gid: int | None = None,
    groups: Iterable[int] | None = None,
    home: str | None = None,
    getpwnam: Callable[[str], object] | None = None,
    getgrnam: Callable[[str], object] | None = None,
    getgrouplist: Callable[[str, int], list[int]] = os.getgrouplist,
) -> MailUser:
    """The mail user as ``userdb passwd`` would describe *user*, with explicit overrides.

    Used by ``nsprov show`` when there is no post-login environment.  With no
    passwd entry, *uid* and *gid* must be given.
    """
    import grp  # noqa: PLC0415
    import pwd  # noqa: PLC0415

    getpwnam = getpwnam or pwd.getpwnam
    getgrnam = getgrnam or grp.getgrnam
    try:
        pw = getpwnam(user)
    except KeyError:
        pw = None
    if pw is None:
        if uid is None and cfg.mail_uid:
            uid = _uid(cfg.mail_uid, getpwnam)
        if gid is None and cfg.mail_gid:
            gid = _gid(cfg.mail_gid, getgrnam)
    if pw is None and (uid is None or gid is None):
        raise IdentityError(
            f"unknown user {user!r}: no passwd entry (give --uid and --gid, or set "
            "[identity] mail_uid and mail_gid for virtual users)"
        )
    real_uid = uid if uid is not None else int(pw.pw_uid)  # type: ignore[union-attr]
    real_gid = gid if gid is not None else int(pw.pw_gid)  # type: ignore[union-attr]
    if cfg.mail_uid and uid is None:
        real_uid = _uid(cfg.mail_uid, getpwnam)
    if cfg.mail_gid and gid is None:
        real_gid = _gid(cfg.mail_gid, getgrnam)
    if groups is not None:
        group_set = frozenset(groups) - {real_gid}
    else:
        group_set = _groups(
            gid=real_gid,
            system_groups_user=user if pw is not None else None,
            access_groups=cfg.mail_access_groups,
            cfg=cfg,
            getgrouplist=getgrouplist,
            getgrnam=getgrnam,
        )
    return MailUser(
        user=user,
        home=home if home is not None else (pw.pw_dir if pw is not None else None),  # type: ignore[attr-defined]
        identity=Identity(uid=real_uid, gid=real_gid, groups=group_set),
        system_groups_user=user if pw is not None else None,
    )


# --- the identity ``nsprov serve`` looks up -------------------------------------------

if TYPE_CHECKING:
    from ._config import Config


def _id_of(value: str, lookup: Callable[[str], object], field: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return int(getattr(lookup(value), field))
    except KeyError:
        raise IdentityError(f"unknown name {value!r} in [identity]") from None


def identify(config: Config, user: str, home: str | None) -> MailUser:
    """The mail user for a lookup: NSS as ``userdb passwd`` sees it, *home* from the key if given.

    A user without a passwd entry is served only when ``[identity] mail_uid``
    and ``mail_gid`` are set and the key carried a home (virtual users).
    """
    import grp  # noqa: PLC0415
    import pwd  # noqa: PLC0415

    cfg = config.identity
    try:
        found = mail_user_from_nss(user, cfg, home=home or None)
    except IdentityError:
        if not (cfg.mail_uid and cfg.mail_gid and home):
            raise
        found = mail_user_from_nss(
            user,
            cfg,
            uid=_id_of(cfg.mail_uid, pwd.getpwnam, "pw_uid"),
            gid=_id_of(cfg.mail_gid, grp.getgrnam, "gr_gid"),
            home=home,
        )
    refuse_root(user, found.uid)
    return found


def identify_login(config: Config, environ: Mapping[str, str]) -> MailUser:
    """The mail user of a post-login key: the in-process path's own function, on the login's variables.

    :func:`nsprov._identity.mail_user_from_environ` is what ``nsprov post-login``
    computes the identity with (userdb ``UID``, ``GID``, ``SYSTEM_GROUPS_USER``,
    ``MAIL_ACCESS_GROUPS``, ``HOME``); the key carries exactly the variables it reads.
    """
    return mail_user_from_environ(environ, config.identity)
