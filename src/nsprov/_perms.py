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
import itertools
import os
from typing import TYPE_CHECKING

import attrs

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

#: Name of the extended attribute holding a file's POSIX access ACL.
ACL_XATTR = "system.posix_acl_access"

# Linux ``posix_acl_xattr`` format (include/uapi/linux/posix_acl_xattr.h).
_XATTR_VERSION = 2
_HEADER_SIZE = 4  # le32 version
_ENTRY_SIZE = 8  # le16 tag, le16 perm, le32 id
_TAG_USER_OBJ = 0x01
_TAG_USER = 0x02
_TAG_GROUP_OBJ = 0x04
_TAG_GROUP = 0x08
_TAG_MASK = 0x10
_TAG_OTHER = 0x20
_TAG_NAMES = {
    _TAG_USER_OBJ: "USER_OBJ",
    _TAG_USER: "USER",
    _TAG_GROUP_OBJ: "GROUP_OBJ",
    _TAG_GROUP: "GROUP",
    _TAG_MASK: "MASK",
    _TAG_OTHER: "OTHER",
}
#: The id stored for entries that carry none (``ACL_UNDEFINED_ID``); never a valid uid or gid.
_UNDEFINED_ID = 0xFFFFFFFF
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
    problems = [
        f"named {kind} {qid}: id is not in 0..{_UNDEFINED_ID - 1}"
        for qid, _ in value
        if not 0 <= qid < _UNDEFINED_ID
    ]
    problems += [
        f"named {kind} {qid}: permission {perm!r} is not in 0..7"
        for qid, perm in value
        if not 0 <= perm <= 7
    ]
    problems += [
        f"named {kind} {qid} appears more than once"
        for (qid, _), (next_qid, _) in itertools.pairwise(value)
        if qid == next_qid
    ]
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
            raise InvalidAclError(
                "invalid POSIX ACL: named user or group entries need a mask entry"
            )

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
        if len(data) < _HEADER_SIZE:
            raise InvalidAclError(
                f"invalid POSIX ACL xattr: {len(data)} bytes is too short for the version header"
            )
        version = int.from_bytes(data[:_HEADER_SIZE], "little")
        if version != _XATTR_VERSION:
            raise InvalidAclError(
                f"invalid POSIX ACL xattr: version {version}, expected {_XATTR_VERSION}"
            )
        body = len(data) - _HEADER_SIZE
        if body % _ENTRY_SIZE:
            raise InvalidAclError(
                f"invalid POSIX ACL xattr: truncated, {body} bytes of entries "
                f"is not a multiple of {_ENTRY_SIZE}"
            )
        problems: list[str] = []
        single: dict[int, int] = {}
        users: list[tuple[int, int]] = []
        groups: list[tuple[int, int]] = []
        last_tag = 0
        for index, offset in enumerate(range(_HEADER_SIZE, len(data), _ENTRY_SIZE)):
            tag = int.from_bytes(data[offset : offset + 2], "little")
            perm = int.from_bytes(data[offset + 2 : offset + 4], "little")
            qid = int.from_bytes(data[offset + 4 : offset + 8], "little")
            name = _TAG_NAMES.get(tag)
            if name is None:
                problems.append(f"entry {index}: unknown tag {tag:#06x}")
                continue
            if perm & ~7:
                problems.append(f"entry {index}: {name} permission {perm:#o} has bits outside rwx")
            if tag < last_tag:
                problems.append(f"entry {index}: {name} comes after {_TAG_NAMES[last_tag]}")
            last_tag = max(last_tag, tag)
            if tag == _TAG_USER:
                users.append((qid, perm & 7))
            elif tag == _TAG_GROUP:
                groups.append((qid, perm & 7))
            elif tag in single:
                problems.append(f"entry {index}: duplicate {name}")
            else:
                single[tag] = perm & 7
        problems += [
            f"missing {_TAG_NAMES[tag]} entry"
            for tag in (_TAG_USER_OBJ, _TAG_GROUP_OBJ, _TAG_OTHER)
            if tag not in single
        ]
        if problems:
            raise InvalidAclError("invalid POSIX ACL xattr: " + "; ".join(problems))
        return cls(
            user_obj=single[_TAG_USER_OBJ],
            group_obj=single[_TAG_GROUP_OBJ],
            other=single[_TAG_OTHER],
            mask=single.get(_TAG_MASK),
            users=users,
            groups=groups,
        )

    def to_xattr(self) -> bytes:
        """Serialise to the Linux extended attribute form (inverse of :meth:`from_xattr`).

        Returns:
            Bytes that :func:`os.setxattr` accepts for ``system.posix_acl_access``,
            entries ordered as the kernel orders them: by tag, then by id.
        """
        entries = [(_TAG_USER_OBJ, self.user_obj, _UNDEFINED_ID)]
        entries += [(_TAG_USER, perm, uid) for uid, perm in self.users]
        entries.append((_TAG_GROUP_OBJ, self.group_obj, _UNDEFINED_ID))
        entries += [(_TAG_GROUP, perm, gid) for gid, perm in self.groups]
        if self.mask is not None:
            entries.append((_TAG_MASK, self.mask, _UNDEFINED_ID))
        entries.append((_TAG_OTHER, self.other, _UNDEFINED_ID))
        return _XATTR_VERSION.to_bytes(_HEADER_SIZE, "little") + b"".join(
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


_OWNER = (Decision(allowed=False, via="owner"), Decision(allowed=True, via="owner"))
_NAMED_USER = (Decision(allowed=False, via="named-user"), Decision(allowed=True, via="named-user"))
_GROUP = (Decision(allowed=False, via="group"), Decision(allowed=True, via="group"))
_OTHER = (Decision(allowed=False, via="other"), Decision(allowed=True, via="other"))


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
    acl = facts.acl
    if acl is None:
        mode = facts.mode
        if ident.uid == facts.uid:
            return _OWNER[(mode >> 6) & want == want]
        gid = facts.gid
        if gid == ident.gid or gid in ident.groups:
            return _GROUP[(mode >> 3) & want == want]
        return _OTHER[mode & want == want]

    if ident.uid == facts.uid:
        return _OWNER[acl.user_obj & want == want]
    mask = acl.mask
    gid = facts.gid
    groups = ident.groups
    if mask is None:
        # A minimal ACL: no named entries, so only the owning group can match.
        if gid == ident.gid or gid in groups:
            return _GROUP[acl.group_obj & want == want]
        return _OTHER[acl.other & want == want]
    if not mask:
        # generic_permission() skips check_acl() when the mode's group bits are 0.
        if gid == ident.gid or gid in groups:
            return _GROUP[not want]
        return _OTHER[acl.other & want == want]

    uid = ident.uid
    for named_uid, perm in acl.users:
        if named_uid == uid:
            return _NAMED_USER[perm & mask & want == want]
    found = granted = False
    if gid == ident.gid or gid in groups:
        found = True
        granted = acl.group_obj & want == want
    if not granted:
        primary = ident.gid
        for named_gid, perm in acl.groups:
            if named_gid == primary or named_gid in groups:
                found = True
                if perm & want == want:
                    granted = True
                    break
    if found:
        return _GROUP[granted and mask & want == want]
    return _OTHER[acl.other & want == want]


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
