from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsprov._location import MailLocation, escape, split
from nsprov.exceptions import InvalidLocationError

paths = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
).map(lambda s: "/" + s.rstrip("/") if s.rstrip("/") else "/x")


class TestEscaping:
    """``::`` is a literal ``:`` in Dovecot location strings."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("a::b", ["a:b"]),
            ("a:::b", ["a:", "b"]),
            ("a:b", ["a", "b"]),
            ("a::", ["a:"]),
            ("", [""]),
        ],
    )
    def test_split(self, text: str, expected: list[str]) -> None:
        """split() follows Dovecot's split_next_arg()."""
        assert expected == split(text)

    @given(
        st.lists(
            st.text(min_size=1).filter(lambda p: not p.startswith(":")), min_size=1, max_size=5
        )
    )
    def test_round_trip(self, parts: list[str]) -> None:
        """Escaped non-empty elements not starting with ':' split back to themselves.

        Dovecot's grammar is ambiguous for the others; rendered elements start
        with '/' or 'KEY=', so they never occur.
        """
        text = ":".join(escape(p) for p in parts)

        assert parts == split(text)


class TestMailLocation:
    """The 2.3 location value type."""

    def test_render(self) -> None:
        """Every path is escaped and the driver is explicit."""
        loc = MailLocation(root="/spool/odd:INDEX=/evil", index="/h/i", control="/h/c")

        assert "maildir:/spool/odd::INDEX=/evil:INDEX=/h/i:CONTROL=/h/c" == loc.render()

    def test_trailing_slash_stripped(self) -> None:
        """Dovecot drops one trailing '/' from each path; so does the model."""
        assert MailLocation(root="/a/", index="/i/") == MailLocation(root="/a", index="/i")

    def test_flags_and_params(self) -> None:
        """Flags and every parameter render and parse back."""
        loc = MailLocation(
            root="/r",
            layout="fs",
            index_private="/p",
            list_index="x.idx",
            utf8=True,
            no_noselect=True,
        )

        assert loc == MailLocation.parse(loc.render())
        assert "maildir:/r:LAYOUT=fs:INDEXPVT=/p:LISTINDEX=x.idx:UTF-8:NO-NOSELECT" == loc.render()

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("/no/driver", "no driver"),
            ("maildir:/r:BOGUS=1", "Unknown setting: BOGUS"),
            ("maildir:/r:NOPE", "Unknown setting: NOPE"),
            ("maildir:/r:INDEX=/a:INDEX=/b", "twice"),
            ("maildir:INBOX=/x", "root directory not given"),
            ("maildir:", "root directory not given"),
            ("maildir:/r:INDEX=relative", "absolute"),
            ("maildir:/r:LAYOUT=weird", "LAYOUT"),
        ],
    )
    def test_invalid(self, text: str, message: str) -> None:
        """Strings Dovecot would reject are rejected with Dovecot's meaning."""
        with pytest.raises(InvalidLocationError, match=message):
            MailLocation.parse(text)

    def test_control_characters(self) -> None:
        """A newline in a path is refused."""
        with pytest.raises(InvalidLocationError, match="control"):
            MailLocation(root="/a\nb")

    def test_paths(self) -> None:
        """paths() lists the per-user path parameters that are set."""
        assert {"INDEX": "/i", "CONTROL": "/c"} == MailLocation(
            root="/r", index="/i", control="/c"
        ).paths()

    @given(paths, paths, paths)
    def test_parse_render_round_trip(self, root: str, index: str, control: str) -> None:
        """Parsing a rendered location gives the original value, whatever the paths hold."""
        loc = MailLocation(root=root, index=index, control=control)

        assert loc == MailLocation.parse(loc.render())
