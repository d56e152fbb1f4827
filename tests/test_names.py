from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from nsprov._model import NAME_RE
from nsprov._names import entry_hash, entry_id, slug

SPOOL = b"/var/spool/mail/Shared"


class TestNames:
    """Deterministic, per-entry namespace ids."""

    def test_stable(self) -> None:
        """The id of an entry is fixed (per-user index directories are named after it)."""
        assert ("sal-wkzjidrw", "sal", "wkzjidrw") == entry_id(SPOOL, b"sales")

    def test_case_twins_differ(self) -> None:
        """``Case`` and ``case`` are two mailboxes with two ids."""
        assert entry_id(SPOOL, b"Case")[0] != entry_id(SPOOL, b"case")[0]

    def test_spools_differ(self) -> None:
        """One entry name in two spools gives two ids."""
        assert entry_hash(b"/a", b"x") != entry_hash(b"/b", b"x")

    def test_slug_empty_for_symbols(self) -> None:
        """A name without letters or digits has only a hash."""
        ident, s, h = entry_id(SPOOL, "日本".encode())

        assert ("", h) == (s, ident)

    @given(st.binary(min_size=1, max_size=300))
    def test_ids_are_valid_names(self, raw: bytes) -> None:
        """Any byte string yields an id that is a valid namespace name after ``s-``."""
        ident, s, _ = entry_id(SPOOL, raw)

        assert NAME_RE.fullmatch("s-" + ident)
        assert len(s) <= 3
        assert len("s-" + ident) <= 14
        assert not ident.startswith("-")
        assert not ident.endswith("-")

    @given(st.binary(), st.binary())
    def test_independent_of_other_entries(self, a: bytes, b: bytes) -> None:
        """An entry's id does not depend on which other entries exist."""
        before = entry_id(SPOOL, a)
        entry_id(SPOOL, b)

        assert before == entry_id(SPOOL, a)

    def test_no_collisions_among_100k(self) -> None:
        """100,000 distinct names (with case twins) get 100,000 distinct ids, ignoring case."""
        rng = random.Random(1)
        names = {f"box{i:06d}".encode() for i in range(50_000)}
        while len(names) < 100_000:
            word = "".join(rng.choice("abcXYZ019 _-.,:%") for _ in range(rng.randint(1, 12)))
            names.add(word.encode())
            names.add(word.swapcase().encode())
        names = set(list(names)[:100_000])

        ids = {entry_id(SPOOL, n)[0].casefold() for n in names}

        assert len(names) == len(ids)

    def test_slug(self) -> None:
        """The slug keeps lowercase letters and digits, folding the rest to single dashes."""
        assert "a-b" == slug(b"A  B__C")


def test_no_collisions_with_one_slug() -> None:
    """100,000 names sharing a long common prefix (one slug) still get distinct ids."""
    names = [f"box{i:06d}".encode() for i in range(100_000)]

    ids = {entry_id(SPOOL, n)[0] for n in names}

    assert len(names) == len(ids)
