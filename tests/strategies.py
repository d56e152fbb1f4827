"""Hypothesis strategies shared by the test modules, one section per topic."""

from __future__ import annotations

import os

from hypothesis import strategies as st

from nsprov._perms import FileFacts, Identity, PosixAcl

# --- permissions ---

#: A small pool of uids and gids, so owners, named entries and identities often coincide.
small_ids = st.integers(min_value=0, max_value=5)
#: Any id a named ACL entry may carry (0xFFFFFFFF is ACL_UNDEFINED_ID, never valid).
acl_ids = st.integers(min_value=0, max_value=0xFFFFFFFE)
#: An ``rwx`` permission bit set.
perm_bits = st.integers(min_value=0, max_value=7)
#: An ``st_mode`` permission part, setuid, setgid and sticky bits included.
modes = st.integers(min_value=0, max_value=0o7777)
#: A ``want`` for :func:`nsprov._perms.decide`: any combination of R_OK, W_OK and X_OK.
wants = st.integers(min_value=0, max_value=7)

identities = st.builds(
    Identity, uid=small_ids, gid=small_ids, groups=st.frozensets(small_ids, max_size=4)
)


@st.composite
def posix_acls(draw: st.DrawFn, ids: st.SearchStrategy[int] = small_ids) -> PosixAcl:
    """Valid access ACLs: a mask whenever there are named entries, sometimes without."""
    users = draw(st.dictionaries(ids, perm_bits, max_size=4))
    groups = draw(st.dictionaries(ids, perm_bits, max_size=4))
    mask = draw(perm_bits if users or groups else st.none() | perm_bits)
    return PosixAcl(
        user_obj=draw(perm_bits),
        group_obj=draw(perm_bits),
        other=draw(perm_bits),
        mask=mask,
        users=users.items(),
        groups=groups.items(),
    )


def mode_for(acl: PosixAcl, mode: int = 0) -> int:
    """Return *mode* with its ``rwx`` bits set as the kernel sets them for *acl*."""
    group = acl.group_obj if acl.mask is None else acl.mask
    return (mode & ~0o777) | acl.user_obj << 6 | group << 3 | acl.other


@st.composite
def file_facts(draw: st.DrawFn, acl: st.SearchStrategy[PosixAcl | None] | None = None) -> FileFacts:
    """Inodes with or without an ACL; with one, the mode agrees with it as on a real inode."""
    the_acl = draw((st.none() | posix_acls()) if acl is None else acl)
    mode = draw(modes)
    if the_acl is not None:
        mode = mode_for(the_acl, mode)
    return FileFacts(mode=mode, uid=draw(small_ids), gid=draw(small_ids), acl=the_acl)


#: Entry names an attacker with a writable spool can create: a terminal title sequence, a
#: carriage return that overwrites the line, DEL, a C1 control, a bidi override, bytes that
#: are not UTF-8 (surrogateescape), a backslash.
HOSTILE = [
    "\x1b]0;owned\x07",
    "line\rover",
    "a\x7fb",
    "c1\x85\x9b[2J",
    "bidi\u202egnp",
    "tab\there",
    os.fsdecode(b"bytes\xff\xfe"),
    "back\\slash",
]
