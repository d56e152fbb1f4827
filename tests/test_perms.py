"""Pure tests of :mod:`nsprov._perms`: tables, properties, and ACLs written by setfacl."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from nsprov._perms import (
    R_OK,
    W_OK,
    X_OK,
    Decision,
    FileFacts,
    Identity,
    PosixAcl,
    allowed,
    decide,
    read_acl,
)
from nsprov.exceptions import InvalidAclError, NsprovError
from tests.strategies import acl_ids, file_facts, identities, mode_for, modes, posix_acls, wants

if TYPE_CHECKING:
    from pathlib import Path

RWX = R_OK | W_OK | X_OK
# Who is who in the tables.
OWNER = 100  # owns every file
ALICE = 101  # has a named user entry
BOB = 102  # has none
STAFF = 200  # owning group of every file
SALES = 201  # named group, r--
OPS = 202  # named group, --x
NOBODY = 299  # a group nothing mentions


def entry(tag: int, perm: int, qid: int = 0xFFFFFFFF) -> bytes:
    """Return one 8-byte xattr entry: le16 tag, le16 perm, le32 id."""
    return tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + qid.to_bytes(4, "little")


V2 = (2).to_bytes(4, "little")
MINIMAL_XATTR = V2 + entry(0x01, 7) + entry(0x04, 5) + entry(0x20, 4)
#: u::rwx, u:ALICE:rw-, g::r-x, g:SALES:r--, g:OPS:--x, m::rwx, o::---
ACL = PosixAcl(
    user_obj=7, group_obj=5, other=0, mask=7, users=((ALICE, 6),), groups=((SALES, 4), (OPS, 1))
)
ACL_XATTR = (
    V2
    + entry(0x01, 7)
    + entry(0x02, 6, ALICE)
    + entry(0x04, 5)
    + entry(0x08, 4, SALES)
    + entry(0x08, 1, OPS)
    + entry(0x10, 7)
    + entry(0x20, 0)
)
#: What the kernel returned for ``setfacl -m u:1234:rwx,m::r-x`` on a mode 0700 directory.
KERNEL_XATTR = bytes.fromhex(
    "0200000001000700ffffffff02000700d204000004000000ffffffff10000500ffffffff20000000ffffffff"
)


def inode(mode: int = 0, acl: PosixAcl | None = None) -> FileFacts:
    """Return facts for a file owned by OWNER:STAFF, the mode agreeing with *acl* if any."""
    return FileFacts(
        mode=mode if acl is None else mode_for(acl, mode), uid=OWNER, gid=STAFF, acl=acl
    )


def kernel_model(facts: FileFacts, ident: Identity, want: int) -> bool:
    """Transcribe ``acl_permission_check`` and ``posix_acl_permission`` line by line."""
    acl = facts.acl
    mode = facts.mode if acl is None else mode_for(acl, facts.mode)
    mask = want & 7
    if not mask * 0o111 & ~mode and acl is None:
        return True
    if facts.uid == ident.uid:
        return not mask & ~(mode >> 6)
    if acl is not None and mode & 0o070:
        return posix_acl_permission(facts, acl, ident, mask)
    if mask & (mode ^ (mode >> 3)) and ident.in_group(facts.gid):
        mode >>= 3
    return not mask & ~mode


def posix_acl_permission(facts: FileFacts, acl: PosixAcl, ident: Identity, want: int) -> bool:
    """Walk the entries in kernel order, goto and all, as ``fs/posix_acl.c`` does."""
    entries = [("USER_OBJ", acl.user_obj, -1)]
    entries += [("USER", perm, uid) for uid, perm in acl.users]
    entries += [("GROUP_OBJ", acl.group_obj, -1)]
    entries += [("GROUP", perm, gid) for gid, perm in acl.groups]
    entries += [] if acl.mask is None else [("MASK", acl.mask, -1)]
    entries += [("OTHER", acl.other, -1)]
    found = False
    for index, (tag, perm, qid) in enumerate(entries):  # noqa: B007 - used after the loop
        if tag == "USER_OBJ" and facts.uid == ident.uid:
            return perm & want == want
        if tag == "USER" and qid == ident.uid:
            break
        if tag in {"GROUP_OBJ", "GROUP"} and ident.in_group(facts.gid if qid < 0 else qid):
            found = True
            if perm & want == want:
                break
        if tag == "OTHER":
            return not found and perm & want == want
    for later_tag, mask, _ in entries[index + 1 :]:
        if later_tag == "MASK":
            return perm & mask & want == want
    return perm & want == want


def with_more_bits(acl: PosixAcl, data: st.DataObject) -> PosixAcl:
    """Return *acl* with extra permission bits OR-ed into every entry."""
    more = st.integers(0, 7)
    return attrs.evolve(
        acl,
        user_obj=acl.user_obj | data.draw(more),
        group_obj=acl.group_obj | data.draw(more),
        other=acl.other | data.draw(more),
        mask=None if acl.mask is None else acl.mask | data.draw(more),
        users=[(uid, perm | data.draw(more)) for uid, perm in acl.users],
        groups=[(gid, perm | data.draw(more)) for gid, perm in acl.groups],
    )


class TestIdentity:
    """An Identity is a uid, a primary gid and supplementary gids."""

    @pytest.mark.parametrize(
        ("gid", "expected"), [(STAFF, True), (SALES, True), (OPS, True), (NOBODY, False)]
    )
    def test_in_group(self, gid: int, expected: bool) -> None:
        """The primary and every supplementary group count, nothing else."""
        ident = Identity(uid=BOB, gid=STAFF, groups=[SALES, OPS])

        assert expected == ident.in_group(gid)

    def test_groups_become_a_frozenset(self) -> None:
        """Supplementary groups given as any iterable are stored as a frozenset."""
        ident = Identity(uid=BOB, gid=STAFF, groups=[SALES, SALES, OPS])

        assert frozenset({SALES, OPS}) == ident.groups

    def test_groups_default_to_none(self) -> None:
        """Without supplementary groups only the primary group counts."""
        ident = Identity(uid=BOB, gid=STAFF)

        assert (frozenset(), True, False) == (
            ident.groups,
            ident.in_group(STAFF),
            ident.in_group(SALES),
        )


class TestPosixAcl:
    """A PosixAcl is validated on creation and converts to and from the xattr form."""

    def test_named_entries_are_sorted(self) -> None:
        """Named entries given in any order are kept sorted by id."""
        acl = PosixAcl(7, 5, 0, mask=7, users=[(9, 1), (3, 2)], groups=[(8, 4), (2, 1)])
        expected = (((3, 2), (9, 1)), ((2, 1), (8, 4)))

        assert expected == (acl.users, acl.groups)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"user_obj": 8}, "user_obj permission 8 is not in 0..7"),
            ({"group_obj": -1}, "group_obj permission -1 is not in 0..7"),
            ({"other": 9}, "other permission 9 is not in 0..7"),
            ({"mask": 10}, "mask permission 10 is not in 0..7"),
            ({"users": [(ALICE, 8)]}, f"named user {ALICE}: permission 8 is not in 0..7"),
            ({"groups": [(-1, 4)]}, "named group -1: id is not in 0..4294967294"),
            ({"users": [(0xFFFFFFFF, 4)]}, "named user 4294967295: id is not in"),
            ({"users": [(ALICE, 4), (ALICE, 2)]}, f"named user {ALICE} appears more than once"),
            ({"mask": None}, "named user or group entries need a mask entry"),
        ],
    )
    def test_invalid(self, kwargs: dict[str, Any], message: str) -> None:
        """Bad permissions, bad or repeated ids, and named entries without a mask are refused."""
        with pytest.raises(InvalidAclError, match=message) as excinfo:
            attrs.evolve(ACL, **kwargs)

        assert isinstance(excinfo.value, NsprovError)
        assert isinstance(excinfo.value, ValueError)

    @pytest.mark.parametrize(
        ("acl", "expected"),
        [
            (PosixAcl(7, 5, 5), True),
            (PosixAcl(7, 5, 5, mask=5), False),
            (PosixAcl(7, 5, 5, mask=7, users=[(ALICE, 7)]), False),
            (PosixAcl(7, 5, 5, mask=7, groups=[(SALES, 7)]), False),
        ],
    )
    def test_is_minimal(self, acl: PosixAcl, expected: bool) -> None:
        """Only an ACL of owner, owning group and other is minimal; a mask alone is not."""
        assert expected == acl.is_minimal()

    def test_to_xattr(self) -> None:
        """Entries come out by tag then id, with 0xFFFFFFFF as the id of unnamed entries."""
        expected = ACL_XATTR

        assert expected == ACL.to_xattr()

    def test_from_xattr(self) -> None:
        """The kernel's attribute bytes parse into the ACL they describe."""
        expected = ACL

        assert expected == PosixAcl.from_xattr(ACL_XATTR)

    def test_from_kernel_bytes(self) -> None:
        """Bytes the kernel returned for an ACL set by setfacl parse into that ACL."""
        assert PosixAcl(7, 0, 0, mask=5, users=[(1234, 7)]) == PosixAcl.from_xattr(KERNEL_XATTR)

    def test_from_xattr_minimal(self) -> None:
        """Three entries and no mask parse into a minimal ACL."""
        assert PosixAcl(7, 5, 4) == PosixAcl.from_xattr(MINIMAL_XATTR)

    def test_from_xattr_sorts_named_entries(self) -> None:
        """Named entries out of id order are accepted and sorted, as their order has no meaning."""
        data = (
            V2
            + entry(0x01, 7)
            + entry(0x02, 1, 9)
            + entry(0x02, 2, 3)
            + entry(0x04, 0)
            + entry(0x10, 7)
            + entry(0x20, 0)
        )

        assert PosixAcl(7, 0, 0, mask=7, users=[(3, 2), (9, 1)]) == PosixAcl.from_xattr(data)

    def test_from_xattr_ignores_unnamed_ids(self) -> None:
        """Like the kernel, the parser ignores the id field of owner, group, mask and other."""
        data = V2 + entry(0x01, 7, 0) + entry(0x04, 5, 12) + entry(0x10, 1, 5) + entry(0x20, 4, 0)

        assert PosixAcl(7, 5, 4, mask=1) == PosixAcl.from_xattr(data)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            pytest.param(b"", "0 bytes is too short for the version header", id="empty"),
            pytest.param(V2[:3], "3 bytes is too short", id="short-header"),
            pytest.param(
                (1).to_bytes(4, "little") + MINIMAL_XATTR[4:], "version 1, expected 2", id="v1"
            ),
            pytest.param(
                (3).to_bytes(4, "little") + MINIMAL_XATTR[4:], "version 3, expected 2", id="v3"
            ),
            pytest.param(MINIMAL_XATTR[:-1], "truncated, 23 bytes of entries", id="truncated"),
            pytest.param(
                MINIMAL_XATTR + entry(0x40, 7), "entry 3: unknown tag 0x0040", id="unknown-tag"
            ),
            pytest.param(
                V2 + entry(0x01, 7) + entry(0x01, 6) + entry(0x04, 5) + entry(0x20, 4),
                "entry 1: duplicate USER_OBJ",
                id="duplicate-user-obj",
            ),
            pytest.param(
                MINIMAL_XATTR + entry(0x20, 4),
                "entry 3: duplicate OTHER",
                id="duplicate-other",
            ),
            pytest.param(
                V2 + entry(0x01, 7) + entry(0x04, 5) + entry(0x10, 5) + entry(0x10, 4),
                "entry 3: duplicate MASK; missing OTHER entry",
                id="duplicate-mask",
            ),
            pytest.param(
                V2 + entry(0x01, 7) + entry(0x04, 5), "missing OTHER entry", id="missing-other"
            ),
            pytest.param(
                V2 + entry(0x20, 4), "missing USER_OBJ entry; missing GROUP_OBJ", id="only-other"
            ),
            pytest.param(
                V2 + entry(0x04, 5) + entry(0x01, 7) + entry(0x20, 4),
                "entry 1: USER_OBJ comes after GROUP_OBJ",
                id="out-of-order",
            ),
            pytest.param(
                V2 + entry(0x01, 0o17) + entry(0x04, 5) + entry(0x20, 4),
                "entry 0: USER_OBJ permission 0o17 has bits outside rwx",
                id="perm-bits",
            ),
            pytest.param(
                V2 + entry(0x01, 7) + entry(0x02, 7, ALICE) + entry(0x04, 5) + entry(0x20, 4),
                "named user or group entries need a mask entry",
                id="no-mask",
            ),
            pytest.param(
                V2
                + entry(0x01, 7)
                + entry(0x04, 5)
                + entry(0x08, 7, SALES)
                + entry(0x08, 1, SALES)
                + entry(0x10, 7)
                + entry(0x20, 4),
                f"named group {SALES} appears more than once",
                id="duplicate-named-group",
            ),
            pytest.param(
                V2
                + entry(0x01, 7)
                + entry(0x02, 7)
                + entry(0x04, 5)
                + entry(0x10, 7)
                + entry(0x20, 0),
                "named user 4294967295: id is not in",
                id="undefined-named-id",
            ),
        ],
    )
    def test_from_xattr_malformed(self, data: bytes, message: str) -> None:
        """Malformed attributes raise InvalidAclError naming what is wrong."""
        with pytest.raises(InvalidAclError, match=message):
            PosixAcl.from_xattr(data)

    def test_from_xattr_reports_every_problem(self) -> None:
        """All entry problems are reported in one error."""
        data = V2 + entry(0x04, 9) + entry(0x80, 0) + entry(0x01, 7) + entry(0x01, 7)

        with pytest.raises(InvalidAclError) as excinfo:
            PosixAcl.from_xattr(data)

        expected = (
            "invalid POSIX ACL xattr: entry 0: GROUP_OBJ permission 0o11 has bits outside rwx; "
            "entry 1: unknown tag 0x0080; entry 2: USER_OBJ comes after GROUP_OBJ; "
            "entry 3: USER_OBJ comes after GROUP_OBJ; entry 3: duplicate USER_OBJ; "
            "missing OTHER entry"
        )

        assert expected == str(excinfo.value)

    @given(posix_acls(ids=acl_ids))
    def test_xattr_round_trip(self, acl: PosixAcl) -> None:
        """Parsing the serialised form gives back the same ACL."""
        assert acl == PosixAcl.from_xattr(acl.to_xattr())


@pytest.fixture(name="acl_file")
def _acl_file(tmp_path: Path) -> Path:
    """A mode 0640 file that setfacl can write an ACL on, or a skip."""
    if shutil.which("setfacl") is None:
        pytest.skip("setfacl is not installed")
    path = tmp_path / "f"
    path.touch()
    path.chmod(0o640)
    probe = subprocess.run(["setfacl", "-m", "u::rw-", path], capture_output=True, check=False)
    if probe.returncode:
        pytest.skip(f"no ACL support under {tmp_path}: {probe.stderr.decode().strip()}")
    return path


class TestSetfacl:
    """ACLs written by the real setfacl through the real kernel parse as expected."""

    def test_named_entries(self, acl_file: Path) -> None:
        """Named entries written by setfacl come back, with the mask setfacl computed."""
        subprocess.run(["setfacl", "-m", "u:1234:rw-,g:5678:r--,g:42:--x", acl_file], check=True)

        acl = PosixAcl.from_xattr(os.getxattr(acl_file, "system.posix_acl_access"))

        assert PosixAcl(6, 4, 0, mask=7, users=[(1234, 6)], groups=[(42, 1), (5678, 4)]) == acl

    def test_explicit_mask(self, acl_file: Path) -> None:
        """An explicit mask is stored, and read_acl reads it through os.getxattr."""
        subprocess.run(["setfacl", "-n", "-m", "u:1234:rwx,m::---,o::r--", acl_file], check=True)

        expected = (PosixAcl(6, 4, 4, mask=0, users=[(1234, 7)]), 0o100604)

        assert expected == (read_acl(str(acl_file)), acl_file.stat().st_mode)

    def test_no_acl(self, acl_file: Path) -> None:
        """A file whose ACL is minimal has no attribute, and read_acl says None."""
        assert read_acl(str(acl_file)) is None


class TestReadAcl:
    """read_acl reads system.posix_acl_access through an injected getxattr."""

    def test_calls_getxattr(self) -> None:
        """The attribute name and follow_symlinks are passed on, and the bytes are parsed."""
        calls = []

        def getxattr(path: str | bytes, name: str, *, follow_symlinks: bool) -> bytes:
            calls.append((path, name, follow_symlinks))
            return ACL_XATTR

        acl = read_acl(b"/spool/x", getxattr=getxattr, follow_symlinks=False)

        expected = (ACL, [(b"/spool/x", "system.posix_acl_access", False)])

        assert expected == (acl, calls)

    @pytest.mark.parametrize("code", [errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP])
    def test_no_acl(self, code: int) -> None:
        """No attribute, or no ACL support, means no ACL."""

        def getxattr(*_args: object, **_kwargs: object) -> bytes:
            raise OSError(code, os.strerror(code))

        assert read_acl("/spool/x", getxattr=getxattr) is None

    def test_other_errors_propagate(self) -> None:
        """Any other error, such as a missing file, is raised."""

        def getxattr(*_args: object, **_kwargs: object) -> bytes:
            raise FileNotFoundError(errno.ENOENT, "gone")

        with pytest.raises(FileNotFoundError):
            read_acl("/spool/x", getxattr=getxattr)

    def test_malformed(self) -> None:
        """A malformed attribute raises InvalidAclError."""
        with pytest.raises(InvalidAclError, match="version 3"):
            read_acl("/x", getxattr=lambda *_a, **_k: (3).to_bytes(4, "little"))


class TestFileFacts:
    """FileFacts holds what decide() needs about one inode."""

    def test_from_stat(self) -> None:
        """Mode, owner and group come from the stat result, the ACL from the caller."""
        st = os.stat_result((0o40750, 7, 8, 2, OWNER, STAFF, 4096, 0, 0, 0))

        assert FileFacts(mode=0o40750, uid=OWNER, gid=STAFF, acl=ACL) == FileFacts.from_stat(
            st, ACL
        )

    def test_from_stat_without_acl(self) -> None:
        """Without an ACL argument the facts have none."""
        st = os.stat_result((0o100644, 7, 8, 1, OWNER, STAFF, 0, 0, 0, 0))

        assert FileFacts.from_stat(st).acl is None


class TestDecision:
    """A Decision is truthy exactly when access is allowed."""

    @pytest.mark.parametrize("allowed", [True, False])
    def test_bool(self, allowed: bool) -> None:
        """bool() of a Decision is its allowed field."""
        assert allowed is bool(Decision(allowed=allowed, via="other"))


class TestDecideWithoutAcl:
    """Without an ACL the mode bits of exactly one class decide."""

    @pytest.mark.parametrize(
        ("mode", "ident", "want", "expected"),
        [
            pytest.param(0o700, Identity(OWNER, NOBODY), RWX, (True, "owner"), id="owner"),
            pytest.param(
                0o077, Identity(OWNER, STAFF), R_OK, (False, "owner"), id="owner-no-fallthrough"
            ),
            pytest.param(0o540, Identity(OWNER, STAFF), W_OK, (False, "owner"), id="owner-w"),
            pytest.param(0o050, Identity(BOB, STAFF), R_OK | X_OK, (True, "group"), id="primary"),
            pytest.param(
                0o040, Identity(BOB, NOBODY, {STAFF}), R_OK, (True, "group"), id="supplementary"
            ),
            pytest.param(
                0o707, Identity(BOB, STAFF), R_OK, (False, "group"), id="group-no-fallthrough"
            ),
            pytest.param(0o750, Identity(BOB, STAFF), R_OK | W_OK, (False, "group"), id="r|w"),
            pytest.param(0o005, Identity(BOB, NOBODY), R_OK | X_OK, (True, "other"), id="other"),
            pytest.param(0o775, Identity(BOB, NOBODY), W_OK, (False, "other"), id="other-w"),
            pytest.param(0o000, Identity(OWNER, STAFF), 0, (True, "owner"), id="exists-owner"),
            pytest.param(0o000, Identity(BOB, STAFF), 0, (True, "group"), id="exists-group"),
            pytest.param(0o000, Identity(BOB, NOBODY), 0, (True, "other"), id="exists-other"),
            pytest.param(0o7000, Identity(BOB, NOBODY), X_OK, (False, "other"), id="special"),
            pytest.param(0o770, Identity(0, 0), R_OK, (False, "other"), id="uid-0-not-special"),
        ],
    )
    def test_table(self, mode: int, ident: Identity, want: int, expected: tuple[bool, str]) -> None:
        """The owner class, else the owning group class, else other decides."""
        decision = decide(inode(mode), ident, want)

        assert Decision(*expected) == decision

    def test_joining_the_group_can_revoke(self) -> None:
        """Joining the owning group replaces the other bits by the group bits, even fewer."""
        before = decide(inode(0o604), Identity(BOB, NOBODY), R_OK)
        after = decide(inode(0o604), Identity(BOB, NOBODY, {STAFF}), R_OK)

        assert (Decision(True, "other"), Decision(False, "group")) == (before, after)

    @given(st.data(), file_facts(acl=st.none()), identities, wants)
    def test_more_mode_bits_never_revoke(
        self, data: st.DataObject, facts: FileFacts, ident: Identity, want: int
    ) -> None:
        """Granting more mode bits never takes access away."""
        more = attrs.evolve(facts, mode=facts.mode | data.draw(modes))

        assert allowed(more, ident, want) >= allowed(facts, ident, want)


class TestDecideWithAcl:
    """With an ACL, owner, named user, group entries and other decide in that order."""

    @pytest.mark.parametrize(
        ("acl", "ident", "want", "expected"),
        [
            pytest.param(ACL, Identity(OWNER, NOBODY), RWX, (True, "owner"), id="owner"),
            pytest.param(
                attrs.evolve(ACL, user_obj=4, users=[(OWNER, 7)]),
                Identity(OWNER, SALES),
                W_OK,
                (False, "owner"),
                id="owner-beats-named-entry",
            ),
            pytest.param(ACL, Identity(ALICE, NOBODY), R_OK | W_OK, (True, "named-user"), id="u"),
            pytest.param(
                attrs.evolve(ACL, mask=5),
                Identity(ALICE, NOBODY),
                W_OK,
                (False, "named-user"),
                id="named-user-masked",
            ),
            pytest.param(
                attrs.evolve(ACL, mask=5),
                Identity(ALICE, NOBODY),
                R_OK,
                (True, "named-user"),
                id="named-user-unmasked-bit",
            ),
            pytest.param(
                attrs.evolve(ACL, users=[(ALICE, 0)], other=7),
                Identity(ALICE, STAFF),
                R_OK,
                (False, "named-user"),
                id="named-user-no-fallthrough",
            ),
            pytest.param(ACL, Identity(BOB, STAFF), R_OK | X_OK, (True, "group"), id="group-obj"),
            pytest.param(
                attrs.evolve(ACL, group_obj=7, mask=4),
                Identity(BOB, STAFF),
                W_OK,
                (False, "group"),
                id="group-obj-masked",
            ),
            pytest.param(ACL, Identity(BOB, SALES), R_OK, (True, "group"), id="named-group"),
            pytest.param(
                ACL, Identity(BOB, NOBODY, {SALES}), R_OK, (True, "group"), id="named-group-supp"
            ),
            pytest.param(
                attrs.evolve(ACL, mask=1),
                Identity(BOB, SALES),
                R_OK,
                (False, "group"),
                id="named-group-masked",
            ),
            pytest.param(
                ACL, Identity(BOB, SALES, {OPS}), X_OK, (True, "group"), id="second-group-grants"
            ),
            pytest.param(
                ACL,
                Identity(BOB, SALES, {OPS}),
                R_OK | X_OK,
                (False, "group"),
                id="no-union-of-groups",
            ),
            pytest.param(
                ACL,
                Identity(BOB, STAFF, {SALES, OPS}),
                R_OK | X_OK,
                (True, "group"),
                id="group-obj-grants-among-several",
            ),
            pytest.param(
                attrs.evolve(ACL, other=7),
                Identity(BOB, OPS),
                R_OK,
                (False, "group"),
                id="group-no-fallthrough",
            ),
            pytest.param(
                attrs.evolve(ACL, other=5),
                Identity(BOB, NOBODY),
                R_OK | X_OK,
                (True, "other"),
                id="other",
            ),
            pytest.param(ACL, Identity(BOB, NOBODY), R_OK, (False, "other"), id="other-denies"),
            pytest.param(
                PosixAcl(7, 5, 0), Identity(BOB, STAFF), R_OK, (True, "group"), id="no-mask"
            ),
            pytest.param(
                PosixAcl(7, 7, 0, mask=4),
                Identity(BOB, STAFF),
                W_OK,
                (False, "group"),
                id="mask-without-named-entries",
            ),
            pytest.param(
                PosixAcl(0, 0, 0, mask=0, users=[(ALICE, 0)]),
                Identity(ALICE, STAFF),
                0,
                (True, "group"),
                id="exists",
            ),
            pytest.param(ACL, Identity(0, 0), R_OK, (False, "other"), id="uid-0-not-special"),
        ],
    )
    def test_table(
        self, acl: PosixAcl, ident: Identity, want: int, expected: tuple[bool, str]
    ) -> None:
        """The first matching class decides, and group entries are limited by the mask."""
        decision = decide(inode(acl=acl), ident, want)

        assert Decision(*expected) == decision

    @pytest.mark.parametrize(
        ("ident", "expected"),
        [
            pytest.param(Identity(ALICE, NOBODY), (True, "other"), id="named-user"),
            pytest.param(Identity(BOB, SALES), (True, "other"), id="named-group"),
            pytest.param(Identity(BOB, STAFF), (False, "group"), id="owning-group"),
        ],
    )
    def test_empty_mask_skips_the_acl(self, ident: Identity, expected: tuple[bool, str]) -> None:
        """With mask 0 the kernel ignores the ACL, so named entries get the other bits."""
        acl = attrs.evolve(ACL, users=[(ALICE, 0)], mask=0, other=4)

        decision = decide(inode(acl=acl), ident, R_OK)

        assert Decision(*expected) == decision

    def test_raising_an_empty_mask_can_revoke(self) -> None:
        """Raising the mask from 0 makes the kernel consult the ACL, and a --- entry then denies."""
        acl = attrs.evolve(ACL, users=[(ALICE, 0)], mask=0, other=4)
        alice = Identity(ALICE, NOBODY)

        before = decide(inode(acl=acl), alice, R_OK)
        after = decide(inode(acl=attrs.evolve(acl, mask=4)), alice, R_OK)

        assert (Decision(True, "other"), Decision(False, "named-user")) == (before, after)

    def test_joining_a_group_can_revoke(self) -> None:
        """A matching group entry that grants nothing denies; other is never consulted."""
        acl = attrs.evolve(ACL, groups=[(OPS, 0)], other=7)

        before = decide(inode(acl=acl), Identity(BOB, NOBODY), R_OK)
        after = decide(inode(acl=acl), Identity(BOB, NOBODY, {OPS}), R_OK)

        assert (Decision(True, "other"), Decision(False, "group")) == (before, after)

    def test_mode_bits_are_ignored(self) -> None:
        """With an ACL, its entries decide, not the mode's rwx bits."""
        acl = PosixAcl(0, 0, 0)

        decision = decide(FileFacts(mode=0o777, uid=OWNER, gid=STAFF, acl=acl), Identity(BOB, 0), 4)

        assert Decision(False, "other") == decision

    @given(st.data(), posix_acls(), identities, wants)
    def test_more_acl_bits_never_revoke(
        self, data: st.DataObject, acl: PosixAcl, ident: Identity, want: int
    ) -> None:
        """Granting more bits in any entry never takes access away, unless an empty mask fills."""
        more = with_more_bits(acl, data)
        assume(acl.mask != 0 or more.mask == 0)

        assert allowed(inode(acl=more), ident, want) >= allowed(inode(acl=acl), ident, want)


class TestDecide:
    """Properties of decide() whatever the inode."""

    @given(file_facts(), identities, wants)
    def test_matches_kernel_transcription(
        self, facts: FileFacts, ident: Identity, want: int
    ) -> None:
        """decide() agrees with a line-by-line transcription of the kernel's C code."""
        assert kernel_model(facts, ident, want) == decide(facts, ident, want).allowed

    @given(file_facts(), identities)
    def test_existence_is_always_allowed(self, facts: FileFacts, ident: Identity) -> None:
        """want=0 only asks whether the file exists, and is always allowed."""
        assert decide(facts, ident, 0).allowed

    @given(file_facts(), identities, wants)
    def test_allowed_is_decide(self, facts: FileFacts, ident: Identity, want: int) -> None:
        """allowed() is decide().allowed."""
        assert decide(facts, ident, want).allowed == allowed(facts, ident, want)

    @given(file_facts(), identities, wants)
    def test_owner_class(self, facts: FileFacts, ident: Identity, want: int) -> None:
        """The owner is always decided by the owner class, and only the owner."""
        assert (ident.uid == facts.uid) == (decide(facts, ident, want).via == "owner")

    def test_shared_decisions(self) -> None:
        """Equal verdicts are the same object, so decide() allocates nothing."""
        first = decide(inode(0o755), Identity(BOB, NOBODY), R_OK)
        second = decide(inode(acl=ACL), Identity(BOB, NOBODY, {OPS}), X_OK)

        assert (Decision(True, "other"), Decision(True, "group")) == (first, second)
        assert first is decide(inode(0o004), Identity(ALICE, SALES), R_OK)

    @pytest.mark.parametrize("want", [8, -1, 0o400])
    def test_want_out_of_range(self, want: int) -> None:
        """A want with bits outside rwx is a caller bug and raises ValueError."""
        with pytest.raises(ValueError, match="is not a combination of R_OK, W_OK and X_OK"):
            decide(inode(0o777), Identity(OWNER, STAFF), want)
