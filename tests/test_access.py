"""The plain permission engine is the one every path uses: same verdicts from plain values."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsprov import _access
from nsprov._perms import FileFacts, Identity, PosixAcl, decide
from nsprov.exceptions import InvalidAclError

from .strategies import file_facts, identities, wants


def plain(facts: FileFacts, ident: Identity) -> tuple[_access.Facts, _access.Ident]:
    """*facts* and *ident* as the slotted plain classes the login path builds."""
    acl = facts.acl
    plain_acl = (
        None
        if acl is None
        else _access.Acl(acl.user_obj, acl.group_obj, acl.other, acl.mask, acl.users, acl.groups)
    )
    return (
        _access.Facts(facts.mode, facts.uid, facts.gid, plain_acl),
        _access.Ident(ident.uid, ident.gid, ident.groups),
    )


@given(facts=file_facts(), ident=identities, want=wants)
def test_plain_values_same_verdict(facts: FileFacts, ident: Identity, want: int) -> None:
    """check() on plain slotted values says what decide() says on the attrs model."""
    d = decide(facts, ident, want)
    code = _access.check(*plain(facts, ident), want)

    assert (d.allowed, d.via) == (bool(code & _access.ALLOWED), _access.VIA[code])


@given(facts=file_facts(), ident=identities, want=wants)
def test_decide_is_check(facts: FileFacts, ident: Identity, want: int) -> None:
    """decide() wraps check() on the attrs model itself: one engine."""
    code = _access.check(facts, ident, want)

    assert (bool(code & 1), _access.VIA[code]) == (
        decide(facts, ident, want).allowed,
        decide(facts, ident, want).via,
    )


@given(data=st.binary(max_size=80))
def test_parse_acl_agrees_with_posix_acl(data: bytes) -> None:
    """Arbitrary bytes: parse_acl and PosixAcl.from_xattr accept the same, with the same values."""
    try:
        model = PosixAcl.from_xattr(data)
    except InvalidAclError as e:
        message = str(e)
        with pytest.raises(InvalidAclError) as raised:
            _access.parse_acl(data)
        assert message == str(raised.value)
        return
    acl = _access.parse_acl(data)
    assert (
        model.user_obj,
        model.group_obj,
        model.other,
        model.mask,
        model.users,
        model.groups,
    ) == (
        acl.user_obj,
        acl.group_obj,
        acl.other,
        acl.mask,
        acl.users,
        acl.groups,
    )


def test_named_entries_without_mask_refused() -> None:
    """A named entry without a mask is refused by the plain parser too."""
    data = PosixAcl(user_obj=7, group_obj=5, other=0, mask=5, users=[(3, 7)]).to_xattr()
    no_mask = data[:-16] + data[-8:]  # drop the MASK entry (second to last)

    with pytest.raises(InvalidAclError, match="need a mask"):
        _access.parse_acl(no_mask)


def test_imports_nothing_heavy() -> None:
    """The engine is on the login path: standard-library builtins and nsprov.exceptions only."""
    code = (
        "import sys; before = set(sys.modules); import nsprov._access; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.append({sys.path[-1]!r}); {code}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()

    assert set() == {"attrs", "typing", "re", "pathspec", "tomllib", "collections"} & set(out)
    assert {"nsprov", "nsprov._access", "nsprov.exceptions"} <= set(out)
