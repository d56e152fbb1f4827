"""Lazy supplementary groups: the one engine asks NSS only when the verdict depends on it."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsprov import _access

from .strategies import file_facts, identities, wants

if TYPE_CHECKING:
    from nsprov._perms import FileFacts, Identity


class Counting:
    """A group lookup that records how often it ran."""

    def __init__(self, groups: frozenset[int]) -> None:
        self.groups = groups
        self.calls = 0

    def __call__(self) -> frozenset[int]:
        self.calls += 1
        return self.groups


def candidates(facts: FileFacts, ident: Identity) -> list[int]:
    """The gids whose membership the kernel may consult for *facts*, the primary one excepted."""
    named = [] if facts.acl is None else [g for g, _ in facts.acl.groups]
    return sorted({facts.gid, *named} - {ident.gid})


def depends(facts: FileFacts, ident: Identity, want: int) -> bool:
    """Brute force: whether some choice of memberships changes the eager verdict."""
    cands = candidates(facts, ident)
    verdicts = {
        bool(_access.check(facts, _access.Ident(ident.uid, ident.gid, set(chosen)), want) & 1)
        for n in range(len(cands) + 1)
        for chosen in itertools.combinations(cands, n)
    }
    return len(verdicts) > 1


class TestAllows:
    """allows() is check()'s verdict, with the groups looked up only when they matter."""

    @given(facts=file_facts(), ident=identities, want=wants)
    def test_lazy_is_eager(self, facts: FileFacts, ident: Identity, want: int) -> None:
        """For random modes, owners, ACLs (with mask), identities and bits: the same verdict."""
        lookup = Counting(ident.groups)
        lazy = _access.Ident(ident.uid, ident.gid, _access.LazyGroups(lookup))

        got = _access.allows(facts, lazy, want)

        assert bool(_access.check(facts, ident, want) & _access.ALLOWED) == got

    @given(facts=file_facts(), ident=identities, want=wants)
    def test_looked_up_only_when_it_matters(
        self, facts: FileFacts, ident: Identity, want: int
    ) -> None:
        """The lookup runs exactly when some membership would change the verdict, at most once."""
        lookup = Counting(ident.groups)
        groups = _access.LazyGroups(lookup)

        _access.allows(facts, _access.Ident(ident.uid, ident.gid, groups), want)
        _access.allows(facts, _access.Ident(ident.uid, ident.gid, groups), want)

        assert (1 if depends(facts, ident, want) else 0) == lookup.calls

    @pytest.mark.parametrize("want", [4, 1, 5])
    def test_root_0755_never_looks_up(self, want: int) -> None:
        """A root:root 0755 directory: group and other get the same bits, no lookup."""
        lookup = Counting(frozenset({0}))
        facts = _access.Facts(0o40755, 0, 0)

        got = _access.allows(facts, _access.Ident(1000, 1000, _access.LazyGroups(lookup)), want)

        assert (True, 0) == (got, lookup.calls)

    def test_group_only_grant_looks_up(self) -> None:
        """A 0750 directory of another group: membership decides, so the groups are looked up."""
        lookup = Counting(frozenset({8}))
        facts = _access.Facts(0o40750, 0, 8)

        got = _access.allows(facts, _access.Ident(1000, 1000, _access.LazyGroups(lookup)), 5)

        assert (True, 1) == (got, lookup.calls)


class TestLazyGroups:
    """LazyGroups behaves as the collection it looks up."""

    @given(groups=st.frozensets(st.integers(0, 9), max_size=4), probe=st.integers(0, 9))
    def test_collection(self, groups: frozenset[int], probe: int) -> None:
        """Membership, iteration and length are the looked-up set's, one lookup for all."""
        lookup = Counting(groups)
        lazy = _access.LazyGroups(lookup)

        assert not lazy.resolved
        assert (probe in groups, groups, len(groups)) == (probe in lazy, frozenset(lazy), len(lazy))
        assert (True, 1) == (lazy.resolved, lookup.calls)
        assert repr(sorted(groups)) in repr(lazy)

    def test_error_propagates(self) -> None:
        """A failing lookup raises at the first use (the login then takes the full path)."""

        def fail() -> frozenset[int]:
            raise LookupError("getgrouplist failed")

        lazy = _access.LazyGroups(fail)

        with pytest.raises(LookupError):
            3 in lazy  # noqa: B015 - the membership test is the use
        assert "..." in repr(lazy)
