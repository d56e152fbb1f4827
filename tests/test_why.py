"""nsprov._why: the deciding class of an access, in words, for every rule of the kernel's check."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsprov._access import ALLOWED, Acl, Facts, Ident, check
from nsprov._why import explain, rwx

OWNER, MEMBER, NAMED, STRANGER = 1000, 1001, 1002, 1003
GROUP, STAFF = 100, 200


def names(number: int) -> str | None:
    return {1000: "olga", 1002: "nick", 100: "sales", 200: "staff"}.get(number)


@pytest.mark.parametrize(
    ("facts", "ident", "expected"),
    [
        (
            Facts(0o40300, OWNER, GROUP),
            Ident(OWNER, OWNER),
            "owner olga gets -wx (mode 0300); needs r-x",
        ),
        (Facts(0o40705, OWNER, GROUP), Ident(OWNER, OWNER), "owner olga gets rwx (mode 0705)"),
        (
            Facts(0o40705, OWNER, GROUP),
            Ident(MEMBER, GROUP),
            "group sales gets --- (mode 0705); needs r-x",
        ),
        (
            Facts(0o40750, OWNER, GROUP),
            Ident(STRANGER, STRANGER),
            "other bits --- of mode 0750 (not the owner olga, not in group sales); needs r-x",
        ),
        (
            Facts(0o40750, OWNER, GROUP, Acl(7, 5, 0)),
            Ident(MEMBER, GROUP),
            "ACL group::r-x (group sales, mode 0750)",
        ),
        (
            Facts(0o40700, OWNER, GROUP, Acl(7, 5, 0, mask=0, groups=((STAFF, 5),))),
            Ident(MEMBER, MEMBER, {STAFF}),
            "ACL other::--- (mode 0700; not the owner olga, not in group sales); needs r-x",
        ),
        (
            Facts(0o40700, OWNER, GROUP, Acl(7, 5, 0, mask=0, groups=((STAFF, 5),))),
            Ident(MEMBER, GROUP),
            "ACL mask --- (mode 0700): group sales and every ACL entry get nothing; needs r-x",
        ),
        (
            Facts(0o40740, OWNER, GROUP, Acl(7, 5, 0, mask=4, users=((NAMED, 5),))),
            Ident(NAMED, NAMED),
            "ACL entry user:nick:r-x limited by mask r-- gives r--; needs r-x",
        ),
        (
            Facts(0o40750, OWNER, GROUP, Acl(7, 0, 0, mask=5, groups=((STAFF, 5),))),
            Ident(MEMBER, GROUP, {STAFF}),
            "ACL group::--- (group sales), group:staff:r-x limited by mask r-x",
        ),
        (
            Facts(0o40750, OWNER, GROUP, Acl(7, 5, 0, mask=5, groups=((STAFF, 5),))),
            Ident(STRANGER, STRANGER),
            (
                "ACL other::--- (mode 0750; not the owner olga, not in group sales, no ACL "
                "entry names it); needs r-x"
            ),
        ),
    ],
)
def test_explain(facts: Facts, ident: Ident, expected: str) -> None:
    """Each class of the kernel's rules is named with the bits it gave."""
    assert expected == explain(facts, ident, 5, uid_name=names, gid_name=names)


def test_bare_numbers() -> None:
    """Without name lookups, ids are numbers."""
    text = explain(Facts(0o40750, OWNER, GROUP), Ident(STRANGER, STRANGER), 5)
    assert "(not the owner 1000, not in group 100)" in text


perm = st.integers(0, 7)
ids = st.sampled_from([OWNER, MEMBER, NAMED, STRANGER, GROUP, STAFF])


@given(
    mode=st.integers(0, 0o777),
    owner=ids,
    group=ids,
    acl=st.none()
    | st.builds(
        Acl,
        perm,
        perm,
        perm,
        st.none() | perm,
        st.just(((NAMED, 5),)) | st.just(()),
        st.just(((STAFF, 5),)) | st.just(()),
    ),
    uid=ids,
    gid=ids,
    extra=st.frozensets(ids, max_size=2),
    want=st.integers(1, 7),
)
def test_needs_exactly_when_refused(
    mode: int,
    owner: int,
    group: int,
    acl: Acl | None,
    uid: int,
    gid: int,
    extra: frozenset[int],
    want: int,
) -> None:
    """The text ends with '; needs <want>' exactly when the kernel's check refuses."""
    if acl is not None and acl.mask is None and (acl.users or acl.groups):
        acl = Acl(acl.user_obj, acl.group_obj, acl.other, 5, acl.users, acl.groups)
    facts = Facts(0o40000 | mode, owner, group, acl)
    ident = Ident(uid, gid, extra)
    refused = not check(facts, ident, want) & ALLOWED
    assert refused == explain(facts, ident, want).endswith(f"; needs {rwx(want)}")
