"""The login's rules on plain values: identity, templates, entry verdicts, the user's directories.

These are the rules :mod:`nsprov._scan`, :mod:`nsprov._identity`,
:mod:`nsprov._template` and :mod:`nsprov._engine` apply, written once over
plain values so that the lean login path (:mod:`nsprov._lean`) and the attrs
model share them: the attrs code calls these functions.

This module imports only built-in modules and nsprov's standard-library-only
modules: it is on the login path.
"""

from __future__ import annotations

import errno
import stat as st

from . import _access
from . import _os as os  # not the os module: see nsprov._os
from ._access import Facts, Ident, parse_acl
from ._fields import Ns, make_location, make_namespace
from ._names import entry_id
from .exceptions import IdentityError, InvalidNamespaceError, InvalidTemplateError

TYPE_CHECKING = False  # not typing's: importing typing costs every login ~7 ms
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
    from typing import Any

R_OK = 4
X_OK = 1
RX = R_OK | X_OK
#: getxattr errors that mean "no ACL" (ENODATA, ENOTSUP/EOPNOTSUPP).
NO_ACL_ERRNOS = frozenset({errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP})
ACL_XATTR = _access.ACL_XATTR
#: How :func:`anchored_facts` opens each directory: by descriptor, never through a symbolic link.
ANCHOR = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


# -- templates


def render(parts: Sequence[tuple[str, bool]], values: Mapping[str, str], text: str) -> str:
    """Substitute *values* into the parsed template *parts* (of template *text*)."""
    out: list[str] = []
    for value, is_field in parts:
        if not is_field:
            out.append(value)
            continue
        try:
            out.append(values[value])
        except KeyError:
            raise InvalidTemplateError(f"no value for field {{{value}}} in {text!r}") from None
    return "".join(out)


def template_fields(parts: Sequence[tuple[str, bool]]) -> frozenset[str]:
    """The field names a parsed template uses."""
    return frozenset(value for value, is_field in parts if is_field)


def normalise_path(text: str) -> str:
    """A rendered index/control path, with ``//``, ``.`` and ``..`` resolved (lexically)."""
    if "//" in text or "/./" in text or "/../" in text or text.endswith(("/", "/.", "/..")):
        return os.normpath(text)
    return text


# -- identity


def split_groups(value: str) -> list[str]:
    """A ``mail_access_groups`` value as names (comma or space separated)."""
    return [g for g in value.replace(",", " ").split() if g]


def _uid(value: str, getpwnam: Callable[[str], Any]) -> int:
    if value.isdigit():
        return int(value)
    try:
        return int(getpwnam(value).pw_uid)
    except KeyError:
        raise IdentityError(f"unknown user name {value!r} for the mail uid") from None


def _gid(value: str, getgrnam: Callable[[str], Any]) -> int:
    if value.isdigit():
        return int(value)
    try:
        return int(getgrnam(value).gr_gid)
    except KeyError:
        raise IdentityError(f"unknown group name {value!r}") from None


def groups_of(
    *,
    gid: int,
    system_groups_user: str | None,
    access_groups: Iterable[str],
    first_valid_gid: int,
    last_valid_gid: int,
    getgrouplist: Callable[[str, int], list[int]],
    getgrnam: Callable[[str], Any],
) -> frozenset[int]:
    """The supplementary groups of the mail process, as Dovecot's restrict-access sets them."""
    groups: set[int] = set()
    if system_groups_user:
        try:
            listed = getgrouplist(system_groups_user, gid)
        except OSError as e:
            raise IdentityError(
                f"getgrouplist({system_groups_user!r}) failed: {e.strerror or e}"
            ) from None
        groups.update(
            g
            for g in listed
            if g >= first_valid_gid and (last_valid_gid == 0 or g <= last_valid_gid)
        )
    groups.update(_gid(name, getgrnam) for name in access_groups if name)
    groups.discard(gid)
    return frozenset(groups)


def refuse_root(user: str, uid: int) -> None:
    """Raise :class:`IdentityError` for uid 0: Dovecot never runs a mail process as root."""
    if uid == 0:
        raise IdentityError(f"user {user}: uid 0; Dovecot does not run mail processes as root")


def identity_from_environ(
    environ: Mapping[str, str],
    *,
    mail_uid: str,
    mail_gid: str,
    mail_access_groups: Sequence[str],
    first_valid_gid: int,
    last_valid_gid: int,
    getpwnam: Callable[[str], Any] | None = None,
    getgrnam: Callable[[str], Any] | None = None,
    getgrouplist: Callable[[str, int], list[int]] = os.getgrouplist,
    lazy: bool = False,
) -> tuple[str, str | None, int, int, Collection[int], str | None]:
    """``(user, home, uid, gid, groups, system_groups_user)`` of a post-login environment.

    With *lazy*, ``system_groups_user``'s groups are a :class:`nsprov._access.LazyGroups`:
    ``getgrouplist`` (NSS) runs only when a permission verdict or the privilege drop
    needs them, and its error is raised then.  Group names in ``mail_access_groups``
    are resolved now either way, so an unknown one is an error of every login.

    Raises:
        IdentityError: No user, no uid or gid, an unknown name, or uid 0.
    """
    user = environ.get("USER", "")
    if not user:
        raise IdentityError("USER is not set: not called by Dovecot's script-login")
    uid_text = environ.get("UID") or mail_uid
    if not uid_text:
        raise IdentityError(f"user {user}: userdb returned no uid and identity.mail_uid is not set")
    gid_text = environ.get("GID") or mail_gid
    if not gid_text:
        raise IdentityError(f"user {user}: userdb returned no gid and identity.mail_gid is not set")
    if getpwnam is None and not uid_text.isdigit():
        import pwd  # noqa: PLC0415 - a built-in module, only for a uid given by name

        getpwnam = pwd.getpwnam
    sgu = environ.get("SYSTEM_GROUPS_USER") or None
    access = environ.get("MAIL_ACCESS_GROUPS")
    access_groups = split_groups(access) if access is not None else mail_access_groups
    if getgrnam is None and (not gid_text.isdigit() or any(not g.isdigit() for g in access_groups)):
        import grp  # noqa: PLC0415 - a built-in module, only for groups given by name

        getgrnam = grp.getgrnam
    uid = _uid(uid_text, getpwnam)  # type: ignore[arg-type]
    gid = _gid(gid_text, getgrnam)  # type: ignore[arg-type]
    refuse_root(user, uid)
    home = environ.get("HOME") or None
    if lazy and sgu:
        named = [str(_gid(name, getgrnam)) for name in access_groups if name]  # type: ignore[arg-type]

        def lookup() -> frozenset[int]:
            return groups_of(
                gid=gid,
                system_groups_user=sgu,
                access_groups=named,
                first_valid_gid=first_valid_gid,
                last_valid_gid=last_valid_gid,
                getgrouplist=getgrouplist,
                getgrnam=getgrnam,  # type: ignore[arg-type]
            )

        return user, home, uid, gid, _access.LazyGroups(lookup), sgu
    groups = groups_of(
        gid=gid,
        system_groups_user=sgu,
        access_groups=access_groups,
        first_valid_gid=first_valid_gid,
        last_valid_gid=last_valid_gid,
        getgrouplist=getgrouplist,
        getgrnam=getgrnam,  # type: ignore[arg-type]
    )
    return user, home, uid, gid, groups, sgu


# -- the filesystem


def read_acl(
    path: bytes | str, getxattr: Callable[..., bytes] = os.getxattr, *, follow: bool = False
) -> _access.Acl | None:
    """The access ACL of *path* as plain values, None without one.

    Raises:
        InvalidAclError: The attribute is malformed.
        OSError: Any other error of *getxattr*.
    """
    try:
        data = getxattr(path, ACL_XATTR, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in NO_ACL_ERRNOS:
            return None
        raise
    return parse_acl(data)


def fd_acl(fd: int) -> _access.Acl | None:
    """The access ACL of the inode open on *fd* (an ``O_PATH`` descriptor)."""
    try:
        # fgetxattr refuses O_PATH descriptors; the /proc magic link is that same inode.
        return read_acl(f"/proc/self/fd/{fd}", follow=True)
    except FileNotFoundError:  # no /proc (a chroot): a real descriptor of the same directory
        rfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        try:
            return read_acl(b"", lambda _path, name, **_kw: os.getxattr(rfd, name))
        finally:
            os.close(rfd)


def look(dir_fd: int, name: bytes) -> tuple[int | None, tuple[bytes, int, Facts | None]]:
    """Open *name* in the directory *dir_fd* without following it; a descriptor only for a directory."""
    try:
        fd = os.open(name, ANCHOR, dir_fd=dir_fd)
    except FileNotFoundError:
        return None, (name, 0, None)
    try:
        s = os.fstat(fd)
        if not st.S_ISDIR(s.st_mode):
            os.close(fd)
            return None, (name, s.st_mode, None)
        return fd, (name, s.st_mode, Facts(s.st_mode, s.st_uid, s.st_gid, fd_acl(fd)))
    except BaseException:
        os.close(fd)
        raise


def child_step(dir_fd: int, name: bytes) -> tuple[bytes, int, Facts | None]:
    """:func:`look` for ``cur`` or ``new`` of the entry open on *dir_fd*, in two calls, no descriptor.

    ``fstatat(dir_fd, name, AT_SYMLINK_NOFOLLOW)``, then for a directory its ACL by
    ``lgetxattr("/proc/self/fd/<dir_fd>/<name>")``: both resolve *name* in the pinned
    entry, never through a symbolic link.  Mode and ACL are two lookups of the name,
    so swapping it between them takes write access to the entry itself, and whoever
    has that decides what ``cur`` and ``new`` are anyway (they could put any
    directory there): the entry's own facts, the ones a swap of spool entries
    could forge, still come from one descriptor (see :func:`anchored_facts`).
    """
    try:
        s = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return name, 0, None
    if not st.S_ISDIR(s.st_mode):
        return name, s.st_mode, None
    try:
        acl = read_acl(b"/proc/self/fd/%d/%s" % (dir_fd, name))
    except FileNotFoundError:  # no /proc (a chroot), or removed since: a descriptor of it
        fd = os.open(name, ANCHOR, dir_fd=dir_fd)
        try:
            acl = fd_acl(fd)
        finally:
            os.close(fd)
    return name, s.st_mode, Facts(s.st_mode, s.st_uid, s.st_gid, acl)


def anchored_facts(real: bytes, parts: Sequence[bytes]) -> list[tuple[bytes, int, Facts | None]]:
    """What the directories *real*/*parts*... and the last one's ``cur`` and ``new`` are, race-free.

    Each name is opened with ``O_PATH | O_NOFOLLOW`` relative to the descriptor
    of the directory before it, and its mode, owner and ACL are read from that
    descriptor: renaming or swapping an entry between two calls cannot make one
    inode's facts pass for another's, nor lead through a symbolic link.  The
    walk stops at the first name that is no directory.  ``cur`` and ``new``
    are read in the last directory without a descriptor of their own
    (:func:`child_step`: two calls each, not four).
    """
    fd = os.open(real, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return anchored_at(fd, parts)
    finally:
        os.close(fd)


def anchored_at(real_fd: int, parts: Sequence[bytes]) -> list[tuple[bytes, int, Facts | None]]:
    """:func:`anchored_facts` from a descriptor of the spool (a scan opens it once per spool)."""
    steps: list[tuple[bytes, int, Facts | None]] = []
    fds = [real_fd]
    try:
        for name in parts:
            fd, step = look(fds[-1], name)
            steps.append(step)
            if fd is None:
                return steps
            fds.append(fd)
        entry = fds[-1]
        steps.extend(child_step(entry, child) for child in (b"cur", b"new"))
        return steps
    finally:
        for fd in fds[1:]:
            os.close(fd)


def anchored_verdict(
    steps: Sequence[tuple[bytes, int, Any]], depth: int, ident: Any, *, explain: bool = True
) -> tuple[str, str] | None:
    """Pure: the verdict on an anchored walk of *depth* names, then cur/new (None: servable).

    Every name but the last must be a directory *ident* may search, the last
    (the entry) one it may read and search, and its ``cur`` and ``new``
    directories it may read and search.  Without *explain* (the lean login,
    which never shows a reason) access is decided by :func:`nsprov._access.allows`,
    which looks lazy supplementary groups up only when they decide, and a
    refusal says only ``no-access``.
    """
    if len(steps) < depth + 2:
        _, mode, _ = steps[-1]
        if mode == 0:
            return "not-a-directory", "removed while it was checked"
        if st.S_ISLNK(mode):
            return "symlink", "replaced by a symbolic link while it was checked"
        return "not-a-directory", "replaced by a non-directory while it was checked"
    check = _access.check
    for i, (name, _mode, facts) in enumerate(steps):
        if facts is None:  # only cur or new: the walk went through every part
            return "not-a-maildir", f"no {name.decode()} subdirectory (when checked by descriptor)"
        want = X_OK if i < depth - 1 else RX
        if not explain:
            if not _access.allows(facts, ident, want):
                return "no-access", "not readable and searchable (checked by descriptor)"
            continue
        code = check(facts, ident, want)
        if not code & _access.ALLOWED:
            what = "directory" if i < depth else name.decode()
            return (
                "no-access",
                f"{what} not readable and searchable ({_access.VIA[code]}, checked by descriptor)",
            )
    return None


def components(path: bytes) -> list[bytes]:
    """``/a/b`` -> ``[/, /a, /a/b]``."""
    out = [b"/"]
    cur = b""
    for part in path.split(b"/"):
        if part:
            cur += b"/" + part
            out.append(cur)
    return out


# -- the user's directories


def safe_component(value: str, what: str) -> str:
    """*value* if it can be one path component, else :class:`InvalidNamespaceError`."""
    if not value or "/" in value or value in {".", ".."} or "\0" in value:
        raise InvalidNamespaceError(f"{what} {value!r} cannot be used in a path")
    return value


#: The path templates of a spool, by profile key.
PATH_TEMPLATES = ("index", "control", "index_private", "inbox")


class Builder:
    """Turns a servable entry of one spool into a namespace (templates, location).

    *spool* is the spool's profile form (:func:`nsprov._profile_compile.spool_profile`):
    each template a ``(text, parts)`` pair or None.

    Raises:
        InvalidNamespaceError: The templates need a home the user lacks, or a
            user name that cannot be a path component.
    """

    __slots__ = ("base", "spool", "spool_bytes")

    def __init__(self, spool: Mapping[str, Any], user: str, home: str | None) -> None:
        self.spool = spool
        self.spool_bytes = os.fsencode(spool["path"])
        used: set[str] = set()
        for key in PATH_TEMPLATES:
            t = spool[key]
            if t is not None:
                used |= template_fields(t[1])
        if "home" in used and not home:
            raise InvalidNamespaceError(
                f"user {user} has no home (userdb home): HOME is not set, "
                "but index/control paths use {home}"
            )
        if "home" in used and not (home or "").startswith("/"):
            raise InvalidNamespaceError(
                f"user {user}: HOME {home} is not absolute (userdb home), "
                "but index/control paths use {home}"
            )
        self.base = {
            "home": (home or "").rstrip("/") or "/",
            "user": user,
            "sep": spool["separator"],
        }
        if "user" in used:
            safe_component(user, "user name")

    def build(self, raw: bytes, name: str, path: str) -> Ns:
        """The namespace of entry *raw* (decoded: *name*) at *path*.

        Raises:
            InvalidNamespaceError: The rendered name or prefix is invalid.
            InvalidLocationError: A rendered path is invalid.
        """
        sp = self.spool
        ident, slug, digest = entry_id(self.spool_bytes, raw)
        values = {**self.base, "id": ident, "slug": slug, "hash": digest, "name": name}
        text, parts = sp["name"]
        ns_name = render(parts, values, text)
        values["ns"] = ns_name
        rendered: dict[str, str] = {}
        out: list[str | None] = []
        for key in PATH_TEMPLATES:
            t = sp[key]
            if t is None:
                out.append(None)
                continue
            value = rendered.get(t[0])
            if value is None:  # index and control usually share one template: render once
                value = rendered[t[0]] = normalise_path(render(t[1], values, t[0]))
            out.append(value)
        location = make_location(path, out[0], out[1], out[2], out[3])
        text, parts = sp["prefix"]
        return make_namespace(
            ns_name,
            render(parts, values, text),
            sp["separator"],
            sp["list"],
            sp["subscriptions"],
            sp["hidden"],
            location,
        )


def drop_privileges(uid: int, gid: int, groups: Iterable[int]) -> None:
    """Become the mail process identity (irreversible; call only in a throwaway process)."""
    if os.geteuid() != 0:
        return
    os.setgroups(sorted({*groups, gid}))
    os.setgid(gid)
    os.setuid(uid)


def missing_dirs(uid: int, gid: int, paths: Sequence[str]) -> list[str]:
    """The *paths* not seen as directories by *uid* with only its primary group *gid*.

    As root: the effective ids become the user's for one ``stat`` per path, with
    the primary group alone (no ``getgrouplist``), and root's are restored.  A
    directory seen so exists, whatever groups the mail process will have: nothing
    to create, so the privileges need not be dropped nor the groups looked up.
    What is not seen (missing, or hidden by a directory only the supplementary
    groups may search) is left to :func:`ensure_dirs` with the full identity.
    Only ``stat`` runs with the user's effective ids; real and saved ids stay
    root's throughout, so the user can neither signal nor trace the process.
    Not root: every path (:func:`ensure_dirs` checks them as this identity).

    Call it only where :func:`drop_privileges` may be called, in a process of its
    own (the forked worker): the C library switches the ids of every thread, so in
    a thread of the post-login process itself the main thread would run as the
    user meanwhile.
    """
    if os.geteuid() != 0:
        return list(paths)
    saved_groups = os.getgroups()
    saved_gid = os.getegid()
    os.setgroups([gid])
    try:
        os.setegid(gid)
        try:
            os.seteuid(uid)
            try:
                left = []
                for path in paths:
                    try:
                        if st.S_ISDIR(os.stat(path).st_mode):
                            continue
                    except OSError:
                        pass
                    left.append(path)
            finally:
                os.seteuid(0)
        finally:
            os.setegid(saved_gid)
    finally:
        os.setgroups(saved_groups)
    return left


def ensure_dirs(paths: Iterable[str]) -> list[str]:
    """Create missing directories with mode 0700 as the current identity; return failures.

    A directory that exists costs one ``stat`` and no ``mkdir``.  Call after
    :func:`drop_privileges`: the home belongs to the user, so only the user's
    own rights may resolve paths there (a planted symlink then leads nowhere
    the user could not already write).
    """
    old = os.umask(0o077)
    failures: list[str] = []
    try:
        for path in paths:
            try:
                if st.S_ISDIR(os.stat(path).st_mode):
                    continue
            except OSError:
                pass
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
            except OSError as e:
                failures.append(f"{path}: {e.strerror or e}")
    finally:
        os.umask(old)
    return failures


__all__ = ["Facts", "Ident"]
