"""The kernel's discretionary access check as plain functions over plain values.

One permission engine for every path: the login path (standard library only),
``show``, ``check`` and ``serve``.  :func:`check` evaluates Linux's
``generic_permission`` and ``posix_acl_permission`` (``fs/namei.c``,
``fs/posix_acl.c``) for an identity without capabilities, from an inode's mode,
owner, group and POSIX access ACL.  It reads attributes only (``mode``, ``uid``,
``gid``, ``acl``; ``uid``, ``gid``, ``groups``; ``user_obj``, ``group_obj``,
``other``, ``mask``, ``users``, ``groups``), so the attrs classes of the public
model (:class:`nsprov.FileFacts`, :class:`nsprov.Identity`,
:class:`nsprov.PosixAcl`) and the slotted classes here are equally its input:
:func:`nsprov.decide` is a thin wrapper.

This module imports nothing but :mod:`nsprov.exceptions`: it is on the login path.
"""

from __future__ import annotations

import itertools

from .exceptions import InvalidAclError

TYPE_CHECKING = False  # not typing's: importing typing costs every login ~7 ms
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Sequence
    from typing import Protocol

    class AclLike(Protocol):
        """A POSIX access ACL: :class:`Acl` or :class:`nsprov.PosixAcl`."""

        @property
        def user_obj(self) -> int: ...
        @property
        def group_obj(self) -> int: ...
        @property
        def other(self) -> int: ...
        @property
        def mask(self) -> int | None: ...
        @property
        def users(self) -> Sequence[tuple[int, int]]: ...
        @property
        def groups(self) -> Sequence[tuple[int, int]]: ...

    class FactsLike(Protocol):
        """One inode: :class:`Facts` or :class:`nsprov.FileFacts`."""

        @property
        def mode(self) -> int: ...
        @property
        def uid(self) -> int: ...
        @property
        def gid(self) -> int: ...
        @property
        def acl(self) -> AclLike | None: ...

    class IdentLike(Protocol):
        """Whom to evaluate for: :class:`Ident` or :class:`nsprov.Identity`."""

        @property
        def uid(self) -> int: ...
        @property
        def gid(self) -> int: ...
        @property
        def groups(self) -> Collection[int]: ...


#: Verdict codes of :func:`check`: the class that decided, OR :data:`ALLOWED` when granted.
OWNER = 0
NAMED_USER = 2
GROUP = 4
OTHER = 6
ALLOWED = 1
#: The name of each verdict code's deciding class (``VIA[code]``).
VIA = ("owner", "owner", "named-user", "named-user", "group", "group", "other", "other")

#: Name of the extended attribute holding a file's POSIX access ACL.
ACL_XATTR = "system.posix_acl_access"

# Linux ``posix_acl_xattr`` format (include/uapi/linux/posix_acl_xattr.h).
XATTR_VERSION = 2
HEADER_SIZE = 4  # le32 version
ENTRY_SIZE = 8  # le16 tag, le16 perm, le32 id
TAG_USER_OBJ = 0x01
TAG_USER = 0x02
TAG_GROUP_OBJ = 0x04
TAG_GROUP = 0x08
TAG_MASK = 0x10
TAG_OTHER = 0x20
TAG_NAMES = {
    TAG_USER_OBJ: "USER_OBJ",
    TAG_USER: "USER",
    TAG_GROUP_OBJ: "GROUP_OBJ",
    TAG_GROUP: "GROUP",
    TAG_MASK: "MASK",
    TAG_OTHER: "OTHER",
}


class Acl:
    """A parsed access ACL as plain values (what :func:`parse_acl` returns)."""

    __slots__ = ("group_obj", "groups", "mask", "other", "user_obj", "users")

    def __init__(
        self,
        user_obj: int,
        group_obj: int,
        other: int,
        mask: int | None = None,
        users: tuple[tuple[int, int], ...] = (),
        groups: tuple[tuple[int, int], ...] = (),
    ) -> None:
        self.user_obj = user_obj
        self.group_obj = group_obj
        self.other = other
        self.mask = mask
        self.users = users
        self.groups = groups


class Facts:
    """One inode as plain values: ``st_mode``, owner, group and access ACL (or None)."""

    __slots__ = ("acl", "gid", "mode", "uid")

    def __init__(self, mode: int, uid: int, gid: int, acl: AclLike | None = None) -> None:
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.acl = acl


class LazyGroups:
    """Supplementary gids looked up on first use: a membership test, iteration or ``len``.

    *lookup* runs at most once (``getgrouplist`` through NSS costs every login
    about a hundred system calls with ``group: files systemd``); :func:`allows`
    tests membership only when the verdict depends on it.  An error of *lookup*
    propagates from the first use, every time.
    """

    __slots__ = ("_lookup", "_value")

    def __init__(self, lookup: Callable[[], Collection[int]]) -> None:
        self._lookup = lookup
        self._value: frozenset[int] | None = None

    @property
    def resolved(self) -> bool:
        """Whether the lookup has run."""
        return self._value is not None

    def get(self) -> frozenset[int]:
        """The gids (looked up now if not yet)."""
        if self._value is None:
            self._value = frozenset(self._lookup())
        return self._value

    def __contains__(self, gid: object) -> bool:
        return gid in self.get()

    def __iter__(self) -> Iterator[int]:
        return iter(self.get())

    def __len__(self) -> int:
        return len(self.get())

    def __repr__(self) -> str:
        return f"LazyGroups({sorted(self._value) if self._value is not None else '...'})"


class Ident:
    """A process identity as plain values: uid, primary gid, supplementary gids.

    *groups* may be a :class:`LazyGroups`: :func:`allows` then looks them up
    only for a verdict that depends on them; :func:`check` whenever the
    deciding class depends on them.
    """

    __slots__ = ("gid", "groups", "uid")

    def __init__(self, uid: int, gid: int, groups: Collection[int] = frozenset()) -> None:
        self.uid = uid
        self.gid = gid
        self.groups = groups


def check(facts: FactsLike, ident: IdentLike, want: int) -> int:
    """The kernel's verdict for *ident* on *facts*: a code, ``VIA[code]`` and ``code & ALLOWED``.

    The rules, in order (``generic_permission`` and ``posix_acl_permission``):

    1. The owner gets the owner bits (``user::``), whatever the ACL says.
    2. If the mode's group bits (the mask, or ``group::`` without one) are empty,
       the kernel does not consult the ACL at all: the owning group gets those
       empty bits, everybody else the other bits.
    3. A matching named user entry gets its bits limited by the mask.
    4. If the owning group or any named group entry is one of the identity's
       groups, access is allowed when any one of them grants all wanted bits
       (limited by the mask), and denied otherwise: no fall through to other.
    5. Everybody else gets the other bits.

    Without an ACL only the mode bits count.  *want* is an OR of 4 (read),
    2 (write) and 1 (execute/search); the caller checks its range.
    """
    acl = facts.acl
    if acl is None:
        mode = facts.mode
        if ident.uid == facts.uid:
            return OWNER | ((mode >> 6) & want == want)
        gid = facts.gid
        if gid == ident.gid or gid in ident.groups:
            return GROUP | ((mode >> 3) & want == want)
        return OTHER | (mode & want == want)

    if ident.uid == facts.uid:
        return OWNER | (acl.user_obj & want == want)
    mask = acl.mask
    gid = facts.gid
    groups = ident.groups
    if mask is None:
        # A minimal ACL: no named entries, so only the owning group can match.
        if gid == ident.gid or gid in groups:
            return GROUP | (acl.group_obj & want == want)
        return OTHER | (acl.other & want == want)
    if not mask:
        # generic_permission() skips check_acl() when the mode's group bits are 0.
        if gid == ident.gid or gid in groups:
            return GROUP | (not want)
        return OTHER | (acl.other & want == want)

    uid = ident.uid
    for named_uid, perm in acl.users:
        if named_uid == uid:
            return NAMED_USER | (perm & mask & want == want)
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
        return GROUP | (granted and mask & want == want)
    return OTHER | (acl.other & want == want)


def allows(facts: FactsLike, ident: IdentLike, want: int) -> bool:
    """``check(facts, ident, want) & ALLOWED``, testing group membership only when it matters.

    The same rules as :func:`check`, but a verdict that comes out the same
    whether or not the identity is in the file's group (or a named group of its
    ACL) is given without asking ``ident.groups``: a ``root:root 0755``
    directory grants the same ``r-x`` to group and other, so a lazy
    :class:`LazyGroups` is never looked up for it.  Membership of the primary
    gid is known without a lookup.  Only when some membership changes the
    answer is ``ident.groups`` consulted, once per candidate group.
    """
    acl = facts.acl
    if ident.uid == facts.uid:
        return ((facts.mode >> 6) if acl is None else acl.user_obj) & want == want
    gid = facts.gid
    mask = None if acl is None else acl.mask
    if not mask:
        if acl is None:
            granted = (facts.mode >> 3) & want == want
            other = facts.mode & want == want
        else:
            other = acl.other & want == want
            # A minimal ACL: group_obj; a mask of 0: the kernel skips the ACL.
            granted = acl.group_obj & want == want if mask is None else not want
        if gid == ident.gid or granted == other:
            return granted
        return granted if gid in ident.groups else other
    assert acl is not None  # noqa: S101 - a mask comes only with an ACL
    uid = ident.uid
    for named_uid, perm in acl.users:
        if named_uid == uid:
            return perm & mask & want == want
    other = acl.other & want == want
    mask_ok = mask & want == want
    primary = ident.gid
    # The group-class candidates: the owning group, then the named groups.
    found = known = False
    unknown: dict[int, bool] = {}  # gid: whether one of its entries grants *want*
    for cand, perm in ((gid, acl.group_obj), *acl.groups):
        grant = perm & want == want
        if cand == primary:
            found = True
            known = known or grant
        else:
            unknown[cand] = unknown.get(cand, False) or grant
    # With S the unknown gids the identity is in: found or S gives
    # mask_ok and (known or any grant in S), else other.  Every such S gives
    # the value of the empty set or of one member, so those decide if they agree.
    none = (mask_ok and known) if found else other
    if all((mask_ok and (known or grant)) == none for grant in unknown.values()):
        return none
    groups = ident.groups
    member = [grant for cand, grant in unknown.items() if cand in groups]
    if found or member:
        return mask_ok and (known or any(member))
    return other


def parse_acl(data: bytes) -> Acl:
    """Parse the Linux extended attribute form of an access ACL into plain values.

    The format is a little-endian ``u32`` version (2) followed by 8-byte entries
    (``u16`` tag, ``u16`` permissions, ``u32`` id), in the order the kernel keeps
    them (owner, named users, owning group, named groups, mask, other); named
    entries may come in any id order.  Named entries come back sorted by id.

    Raises:
        InvalidAclError: truncated data, another version, an unknown tag, a
            permission outside ``rwx``, a misplaced or repeated entry, or a
            missing required entry; every problem found is named.
    """
    if len(data) < HEADER_SIZE:
        raise InvalidAclError(
            f"invalid POSIX ACL xattr: {len(data)} bytes is too short for the version header"
        )
    version = int.from_bytes(data[:HEADER_SIZE], "little")
    if version != XATTR_VERSION:
        raise InvalidAclError(
            f"invalid POSIX ACL xattr: version {version}, expected {XATTR_VERSION}"
        )
    body = len(data) - HEADER_SIZE
    if body % ENTRY_SIZE:
        raise InvalidAclError(
            f"invalid POSIX ACL xattr: truncated, {body} bytes of entries "
            f"is not a multiple of {ENTRY_SIZE}"
        )
    problems: list[str] = []
    single: dict[int, int] = {}
    users: list[tuple[int, int]] = []
    groups: list[tuple[int, int]] = []
    last_tag = 0
    for index, offset in enumerate(range(HEADER_SIZE, len(data), ENTRY_SIZE)):
        tag = int.from_bytes(data[offset : offset + 2], "little")
        perm = int.from_bytes(data[offset + 2 : offset + 4], "little")
        qid = int.from_bytes(data[offset + 4 : offset + 8], "little")
        name = TAG_NAMES.get(tag)
        if name is None:
            problems.append(f"entry {index}: unknown tag {tag:#06x}")
            continue
        if perm & ~7:
            problems.append(f"entry {index}: {name} permission {perm:#o} has bits outside rwx")
        if tag < last_tag:
            problems.append(f"entry {index}: {name} comes after {TAG_NAMES[last_tag]}")
        last_tag = max(last_tag, tag)
        if tag == TAG_USER:
            users.append((qid, perm & 7))
        elif tag == TAG_GROUP:
            groups.append((qid, perm & 7))
        elif tag in single:
            problems.append(f"entry {index}: duplicate {name}")
        else:
            single[tag] = perm & 7
    problems += [
        f"missing {TAG_NAMES[tag]} entry"
        for tag in (TAG_USER_OBJ, TAG_GROUP_OBJ, TAG_OTHER)
        if tag not in single
    ]
    if problems:
        raise InvalidAclError("invalid POSIX ACL xattr: " + "; ".join(problems))
    acl = Acl(
        single[TAG_USER_OBJ],
        single[TAG_GROUP_OBJ],
        single[TAG_OTHER],
        single.get(TAG_MASK),
        tuple(sorted(users)),
        tuple(sorted(groups)),
    )
    problems = named_problems("user", acl.users) + named_problems("group", acl.groups)
    if problems:
        raise InvalidAclError("invalid POSIX ACL: " + "; ".join(problems))
    if acl.mask is None and (acl.users or acl.groups):
        raise InvalidAclError(NO_MASK)
    return acl


#: The id stored for entries that carry none (``ACL_UNDEFINED_ID``); never a valid uid or gid.
UNDEFINED_ID = 0xFFFFFFFF
NO_MASK = "invalid POSIX ACL: named user or group entries need a mask entry"


def named_problems(kind: str, entries: Sequence[tuple[int, int]]) -> list[str]:
    """What is wrong with sorted named *entries* (``(id, perm)``) of *kind* ``user``/``group``."""
    problems = [
        f"named {kind} {qid}: id is not in 0..{UNDEFINED_ID - 1}"
        for qid, _ in entries
        if not 0 <= qid < UNDEFINED_ID
    ]
    problems += [
        f"named {kind} {qid}: permission {perm!r} is not in 0..7"
        for qid, perm in entries
        if not 0 <= perm <= 7
    ]
    problems += [
        f"named {kind} {qid} appears more than once"
        for (qid, _), (next_qid, _) in itertools.pairwise(entries)
        if qid == next_qid
    ]
    return problems
