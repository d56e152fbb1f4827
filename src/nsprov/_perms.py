"""Pure POSIX permission evaluation: would *this* identity be allowed?

nsprov usually runs as root, so :func:`os.access` answers for the wrong identity.
Instead, :func:`decide` evaluates the Linux kernel's discretionary access check
(``generic_permission`` and ``posix_acl_permission`` in ``fs/namei.c`` and
``fs/posix_acl.c``) as a pure function of an inode's mode, owner, group and POSIX
access ACL, for an identity without capabilities.  uid 0 is not special here.

Only :func:`read_acl` touches the filesystem, and it takes ``getxattr`` as an
argument so tests can hand it canned bytes.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

import attrs

from . import _access
from ._access import ACL_XATTR, UNDEFINED_ID, named_problems
from .exceptions import InvalidAclError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "R_OK",
    "W_OK",
    "X_OK",
    "Decision",
    "FileFacts",
    "Identity",
    "PosixAcl",
    "allowed",
    "decide",
    "read_acl",
]

#: Read permission bit, as in ``rwx`` and :data:`os.R_OK`.
R_OK = 4
#: Write permission bit, as in ``rwx`` and :data:`os.W_OK`.
W_OK = 2
#: Execute (search, for directories) permission bit, as in ``rwx`` and :data:`os.X_OK`.
X_OK = 1

_UNDEFINED_ID = UNDEFINED_ID
_NO_ACL_ERRNOS = frozenset({errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP})


def _to_gids(value: Iterable[int]) -> frozenset[int]:
    return frozenset(value)


@attrs.frozen
class Identity:
    """The identity a process has for permission checks (no capabilities).

    Args:
        uid: The filesystem (effective) user id.
        gid: The primary (effective, filesystem) group id.
        groups: Supplementary group ids; the primary gid may or may not be among them.

    .. versionadded:: 0.1.0
    """

    uid: int
    gid: int
    groups: frozenset[int] = attrs.field(factory=frozenset, converter=_to_gids)

    def in_group(self, gid: int) -> bool:
        """Tell whether *gid* is the primary group or one of the supplementary groups.

        Args:
            gid: The group id to look for.

        Returns:
            True when the kernel's ``in_group_p`` would be true for *gid*.
        """
        return gid == self.gid or gid in self.groups


def _check_perm(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 7:
        raise InvalidAclError(f"ACL {attribute.name} permission {value!r} is not in 0..7")


def _sorted_entries(value: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple(sorted((int(qid), int(perm)) for qid, perm in value))


def _check_entries(
    _inst: object,
    attribute: attrs.Attribute[tuple[tuple[int, int], ...]],
    value: tuple[tuple[int, int], ...],
) -> None:
    kind = "user" if attribute.name == "users" else "group"
    problems = named_problems(kind, value)
    if problems:
        raise InvalidAclError("invalid POSIX ACL: " + "; ".join(problems))


@attrs.frozen
class PosixAcl:
    """A parsed POSIX access ACL (``system.posix_acl_access``).

    Permissions are ``rwx`` bit sets (0..7).  Named entries are kept sorted by id,
    whatever order they are given in.  An ACL with named entries must have a mask,
    as the kernel requires; a mask without named entries is allowed.

    Args:
        user_obj: Permissions of the owning user (``user::``); equal to the mode's owner bits.
        group_obj: Permissions of the owning group (``group::``); limited by *mask*.
        other: Permissions of everybody else (``other::``); equal to the mode's other bits.
        mask: The upper bound (``mask::``) for named entries and the owning group;
            the mode's group bits show it.  None when the ACL has no mask entry.
        users: ``(uid, perm)`` pairs of named user entries (``user:uid:``).
        groups: ``(gid, perm)`` pairs of named group entries (``group:gid:``).

    Raises:
        InvalidAclError: A permission is not in 0..7, an id is out of range or
            repeated, or named entries come without a mask.

    .. versionadded:: 0.1.0
    """

    user_obj: int = attrs.field(validator=_check_perm)
    group_obj: int = attrs.field(validator=_check_perm)
    other: int = attrs.field(validator=_check_perm)
    mask: int | None = attrs.field(default=None, validator=attrs.validators.optional(_check_perm))
    users: tuple[tuple[int, int], ...] = attrs.field(
        default=(), converter=_sorted_entries, validator=_check_entries
    )
    groups: tuple[tuple[int, int], ...] = attrs.field(
        default=(), converter=_sorted_entries, validator=_check_entries
    )

    def __attrs_post_init__(self) -> None:
        if self.mask is None and (self.users or self.groups):
            raise InvalidAclError(_access.NO_MASK)

    @classmethod
    def from_xattr(cls, data: bytes) -> PosixAcl:
        """Parse the Linux extended attribute form of an access ACL.

        The format is a little-endian ``u32`` version (2) followed by 8-byte entries
        (``u16`` tag, ``u16`` permissions, ``u32`` id).  Entries must come in the
        order the kernel keeps them (owner, named users, owning group, named groups,
        mask, other), as ``posix_acl_valid`` requires; named entries may come in any
        id order.

        Args:
            data: The attribute value, as returned by :func:`os.getxattr`.

        Returns:
            The ACL.

        Raises:
            InvalidAclError: The data is truncated, has another version, an unknown
                tag, a permission outside ``rwx``, a misplaced or repeated entry, a
                missing required entry, or named entries without a mask.  Every
                problem found is named in the message.
        """
        a = _access.parse_acl(data)
        return cls(a.user_obj, a.group_obj, a.other, a.mask, a.users, a.groups)

    def to_xattr(self) -> bytes:
        """Serialise to the Linux extended attribute form (inverse of :meth:`from_xattr`).

        Returns:
            Bytes that :func:`os.setxattr` accepts for ``system.posix_acl_access``,
            entries ordered as the kernel orders them: by tag, then by id.
        """
        entries = [(_access.TAG_USER_OBJ, self.user_obj, _UNDEFINED_ID)]
        entries += [(_access.TAG_USER, perm, uid) for uid, perm in self.users]
        entries.append((_access.TAG_GROUP_OBJ, self.group_obj, _UNDEFINED_ID))
        entries += [(_access.TAG_GROUP, perm, gid) for gid, perm in self.groups]
        if self.mask is not None:
            entries.append((_access.TAG_MASK, self.mask, _UNDEFINED_ID))
        entries.append((_access.TAG_OTHER, self.other, _UNDEFINED_ID))
        return _access.XATTR_VERSION.to_bytes(_access.HEADER_SIZE, "little") + b"".join(
            tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + qid.to_bytes(4, "little")
            for tag, perm, qid in entries
        )

    def is_minimal(self) -> bool:
        """Tell whether the ACL only has the three entries the mode bits can express.

        Returns:
            True when there is no mask and no named entry.  The kernel stores no
            attribute for such an ACL; it only sets the mode.
        """
        return self.mask is None and not self.users and not self.groups


@attrs.frozen
class FileFacts:
    """What permission evaluation needs to know about one inode.

    Args:
        mode: ``st_mode``; only the ``rwx`` bits are used, and only when *acl* is None.
        uid: The owning user id.
        gid: The owning group id.
        acl: The access ACL, or None when the inode has none.  When given, it is
            authoritative for all permission bits (the kernel keeps the mode's
            ``rwx`` bits equal to the owner, mask or owning group, and other entries).

    .. versionadded:: 0.1.0
    """

    mode: int
    uid: int
    gid: int
    acl: PosixAcl | None = None

    @classmethod
    def from_stat(cls, st: os.stat_result, acl: PosixAcl | None = None) -> FileFacts:
        """Take mode and ownership from a stat result.

        Args:
            st: The result of :func:`os.stat` or :func:`os.lstat`.
            acl: The inode's access ACL, typically from :func:`read_acl`.

        Returns:
            The facts.
        """
        return cls(mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, acl=acl)


@attrs.frozen
class Decision:
    """A permission verdict and the class of the ACL or mode that decided it.

    Args:
        allowed: Whether every wanted bit is granted.
        via: ``"owner"``, ``"named-user"``, ``"group"`` or ``"other"``.

    .. versionadded:: 0.1.0
    """

    allowed: bool
    via: str

    def __bool__(self) -> bool:
        """Return :attr:`allowed`, so a Decision can stand in for a bool."""
        return self.allowed


#: One shared Decision per verdict code of :func:`nsprov._access.check`.
_DECISIONS = tuple(
    Decision(allowed=bool(code & _access.ALLOWED), via=via) for code, via in enumerate(_access.VIA)
)


def decide(facts: FileFacts, ident: Identity, want: int) -> Decision:
    """Evaluate the kernel's discretionary access check for *ident* on *facts*.

    The rules, in order (``generic_permission`` and ``posix_acl_permission``):

    1. The owner gets the owner bits (``user::``), whatever the ACL says.
    2. If the mode's group bits (the mask, or ``group::`` without one) are empty,
       the kernel does not consult the ACL at all: the owning group gets those
       empty bits, everybody else the other bits.  A named user or group entry
       then counts for nothing, not even as a denial.
    3. A matching named user entry (``user:uid:``) gets its bits limited by the mask.
    4. If the owning group or any named group entry is one of the identity's
       groups, access is allowed when any one of the matching entries grants all
       wanted bits (limited by the mask), and denied otherwise: there is no fall
       through to other, so joining a group can revoke access.
    5. Everybody else gets the other bits.

    Without an ACL only the mode bits count: owner, owning group, or other.

    Args:
        facts: The inode.
        ident: Whom to evaluate for; uid 0 is not special (no capabilities).
        want: An OR of :data:`R_OK`, :data:`W_OK` and :data:`X_OK`; 0 asks only
            whether the file exists, and is always allowed.

    Returns:
        One of eight shared :class:`Decision` values.

    Raises:
        ValueError: *want* has bits outside ``rwx``.

    .. versionadded:: 0.1.0
    """
    if want & ~7:
        raise ValueError(f"want {want!r} is not a combination of R_OK, W_OK and X_OK")
    return _DECISIONS[_access.check(facts, ident, want)]


def allowed(facts: FileFacts, ident: Identity, want: int) -> bool:
    """Tell whether *ident* may access *facts* for *want*; see :func:`decide`.

    Args:
        facts: The inode.
        ident: Whom to evaluate for.
        want: An OR of :data:`R_OK`, :data:`W_OK` and :data:`X_OK`.

    Returns:
        ``decide(facts, ident, want).allowed``.

    .. versionadded:: 0.1.0
    """
    return decide(facts, ident, want).allowed


def read_acl(
    path: str | bytes,
    *,
    getxattr: Callable[..., bytes] = os.getxattr,
    follow_symlinks: bool = True,
) -> PosixAcl | None:
    """Read and parse a file's access ACL (``system.posix_acl_access``).

    Args:
        path: The file.
        getxattr: Called as ``getxattr(path, name, follow_symlinks=...)``;
            :func:`os.getxattr` unless a test passes something else.
        follow_symlinks: Passed on to *getxattr*.

    Returns:
        The ACL, or None when the file has none (``ENODATA``) or its filesystem
        does not support ACLs (``ENOTSUP``/``EOPNOTSUPP``).

    Raises:
        InvalidAclError: The attribute is malformed.
        OSError: Any other error from *getxattr*, such as ``ENOENT``.

    .. versionadded:: 0.1.0
    """
    try:
        data = getxattr(path, ACL_XATTR, follow_symlinks=follow_symlinks)
    except OSError as exc:
        if exc.errno in _NO_ACL_ERRNOS:
            return None
        raise
    return PosixAcl.from_xattr(data)
