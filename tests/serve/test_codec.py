"""Tests for the dict-proxy and RESP codecs of ``nsprov serve`` (:mod:`nsprov._serve.codec`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsprov._serve.codec import (
    Commit,
    Hello,
    Iterate,
    LineBuffer,
    Lookup,
    NoReply,
    PostloginKey,
    RespParser,
    UserdbKey,
    detect,
    dict_commit_fail,
    dict_fail,
    dict_not_found,
    dict_ok,
    parse_dict_line,
    parse_postlogin_key,
    parse_userdb_key,
    resp_bulk,
    resp_error,
    resp_nil,
    resp_simple,
    split_tabescaped,
    tab_escape,
    tab_unescape,
)
from nsprov.exceptions import ProtocolError

HELLO = b"H3\t2\t0\t\tnsprov"
#: Bytes that matter to the escaping, and a few that do not.
escape_bytes = st.binary().map(bytes) | st.lists(
    st.sampled_from([b"\x00", b"\x01", b"\t", b"\n", b"\r", b"a", b"1", b"t", b"\xff"])
).map(b"".join)


class TestTabEscape:
    """Tab escaping as Dovecot's strescape.c does it."""

    @given(escape_bytes)
    def test_round_trip(self, data: bytes) -> None:
        """Unescaping an escaped value gives the value back."""
        assert data == tab_unescape(tab_escape(data))

    @given(escape_bytes)
    def test_escaped_has_no_separators(self, data: bytes) -> None:
        """An escaped value holds no tab, LF, CR or NUL, so it is one field of one line."""
        escaped = tab_escape(data)

        assert [] == [c for c in (b"\t", b"\n", b"\r", b"\x00") if c in escaped]

    @given(st.lists(escape_bytes, min_size=1, max_size=5))
    def test_fields_round_trip(self, fields: list[bytes]) -> None:
        """Escaped fields joined by tabs split back into the same fields."""
        line = b"\t".join(tab_escape(f) for f in fields)

        assert fields == split_tabescaped(line)

    def test_known_escapes(self) -> None:
        """The escape table is Dovecot's: \\001 -> 1, tab -> t, LF -> n, CR -> r, NUL -> 0."""
        assert b"\x011\x01t\x01n\x01r\x010" == tab_escape(b"\x01\t\n\r\x00")

    def test_unknown_and_truncated_escapes(self) -> None:
        """An unknown escape stands for the byte itself; a trailing lone \\001 is dropped."""
        assert b"xq" == tab_unescape(b"x\x01q\x01")


class TestDetect:
    """The first byte tells the two clients apart."""

    @pytest.mark.parametrize(
        ("first", "expected"),
        [(b"H3\t2", "dict"), (b"*2\r\n", "redis"), (b"GET x", None), (b"", None)],
    )
    def test_detect(self, first: bytes, expected: str | None) -> None:
        """H is dict-proxy, * is RESP, anything else neither."""
        assert expected == detect(first)


class TestDictLines:
    """Parsing dict-proxy request lines."""

    def test_hello(self) -> None:
        """The handshake as Dovecot 2.3's client sends it."""
        assert Hello(3, 2, 0, b"", b"nsprov") == parse_dict_line(HELLO, hello_seen=False)

    def test_lookup(self) -> None:
        """A lookup carries the key and the user, both unescaped."""
        req = parse_dict_line(b"Lshared/userdb/a\x01tb\talice", hello_seen=True)

        assert Lookup(b"shared/userdb/a\tb", b"alice") == req

    def test_lookup_without_user(self) -> None:
        """The user field is optional."""
        assert Lookup(b"k", b"") == parse_dict_line(b"Lk", hello_seen=True)

    def test_crlf_tolerated(self) -> None:
        """A trailing CR is not part of the last field."""
        assert Lookup(b"k", b"u") == parse_dict_line(b"Lk\tu\r", hello_seen=True)

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            (b"I0\tshared/", Iterate((b"0", b"shared/"))),
            (b"C7", Commit(b"7", async_=False)),
            (b"D8", Commit(b"8", async_=True)),
            (b"B1\talice", NoReply("B")),
            (b"S1\tk\tv", NoReply("S")),
            (b"T1\t0\t0", NoReply("T")),
        ],
    )
    def test_other_commands(self, line: bytes, expected: object) -> None:
        """Commands nsprov does not serve are still recognised."""
        assert expected == parse_dict_line(line, hello_seen=True)

    @pytest.mark.parametrize(
        ("line", "hello_seen", "message"),
        [
            (b"Lk\tu", False, "handshake"),
            (b"H3\t2", False, "fields"),
            (b"Hx\t2\t0\t\tn", False, "numbers"),
            (b"H2\t0\t0\t\tn", False, "major version 2"),
            (HELLO, True, "second handshake"),
            (b"L\tu", True, "without a key"),
            (b"Zzz", True, "unknown command"),
            (b"", True, "empty"),
        ],
    )
    def test_malformed(self, line: bytes, hello_seen: bool, message: str) -> None:
        """Malformed lines are protocol errors that say what is wrong."""
        with pytest.raises(ProtocolError, match=message):
            parse_dict_line(line, hello_seen=hello_seen)


class TestDictReplies:
    """Encoding dict-proxy replies."""

    def test_ok_escapes_value(self) -> None:
        """A found value is one escaped field on one line."""
        assert b"O{\x01t}\n" == dict_ok(b"{\t}")

    def test_not_found(self) -> None:
        """Not found is N."""
        assert b"N\n" == dict_not_found()

    def test_fail_is_one_line(self) -> None:
        """A failure text never breaks the line."""
        assert b"Fa b\x01tc\n" == dict_fail("a\nb\tc")

    def test_commit_fail(self) -> None:
        """A refused commit names its transaction; an asynchronous one is marked A."""
        assert (b"F7\tno\n", b"AF8\tno\n") == (
            dict_commit_fail(b"7", "no", async_=False),
            dict_commit_fail(b"8", "no", async_=True),
        )


class TestLineBuffer:
    """Splitting a stream into capped lines."""

    @given(
        st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=8),
        st.data(),
    )
    def test_partial_reads(self, lines: list[bytes], data: st.DataObject) -> None:
        """However the stream is cut into reads, the same lines come out."""
        stream = b"".join(line + b"\n" for line in lines)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
        buf = LineBuffer(max_line=64)
        got = []
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            got += list(buf.feed(stream[start:end]))

        assert (lines, 0) == (got, buf.pending)

    def test_pipelined(self) -> None:
        """One read holding many requests yields them all, in order."""
        buf = LineBuffer()

        assert [b"a", b"b", b"c"] == list(buf.feed(b"a\nb\nc\nd"))
        assert 1 == buf.pending

    def test_oversized_after_good_lines(self) -> None:
        """The lines before an oversized one come out; then the error, with the buffer dropped."""
        buf = LineBuffer(max_line=4)
        got: list[bytes] = []

        with pytest.raises(ProtocolError, match="longer than 4"):
            got.extend(buf.feed(b"ok\n" + b"x" * 10 + b"\n"))
        assert ([b"ok"], 0) == (got, buf.pending)

    def test_oversized_unfinished(self) -> None:
        """An unfinished line over the cap is an error at once, without waiting for its end."""
        buf = LineBuffer(max_line=4)

        with pytest.raises(ProtocolError):
            list(buf.feed(b"xxxxxx"))


class TestResp:
    """Parsing RESP commands and encoding replies."""

    def test_get(self) -> None:
        """GET as Dovecot's redis dict sends it."""
        assert [[b"GET", b"userdb/alice"]] == list(
            RespParser().feed(b"*2\r\n$3\r\nGET\r\n$12\r\nuserdb/alice\r\n")
        )

    @given(
        st.lists(st.lists(st.binary(max_size=30), min_size=1, max_size=3), max_size=4), st.data()
    )
    def test_partial_reads(self, commands: list[list[bytes]], data: st.DataObject) -> None:
        """However the stream is cut into reads, the same commands come out."""
        stream = b"".join(
            b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in c)
            for c in commands
        )
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
        parser = RespParser()
        got = []
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            got += list(parser.feed(stream[start:end]))

        assert (commands, 0) == (got, parser.pending)

    @pytest.mark.parametrize(
        ("stream", "message"),
        [
            (b"GET x\r\n", "expected a RESP array"),
            (b"*0\r\n", "array of 0"),
            (b"*99\r\n", "array of 99"),
            (b"*1\r\n+OK\r\n", "bulk string"),
            (b"*1\r\n$x\r\n", "bad RESP length"),
            (b"*1\r\n$99999\r\n", "99999 bytes"),
            (b"*1\r\n$1\r\nab\r\n", "not terminated"),
            (b"*1" + b"1" * 40, "header line too long"),
        ],
    )
    def test_malformed(self, stream: bytes, message: str) -> None:
        """Malformed input is a protocol error."""
        with pytest.raises(ProtocolError, match=message):
            list(RespParser().feed(stream))

    def test_good_command_before_bad_one(self) -> None:
        """A command before a malformed one is still delivered."""
        got: list[list[bytes]] = []

        with pytest.raises(ProtocolError):
            got.extend(RespParser().feed(b"*1\r\n$4\r\nPING\r\nGARBAGE\r\n"))
        assert [[b"PING"]] == got

    def test_replies(self) -> None:
        """Bulk, nil, simple and error replies in RESP syntax."""
        assert [b"$3\r\na\r\n\r\n", b"$-1\r\n", b"+OK\r\n", b"-ERR x y\r\n"] == [
            resp_bulk(b"a\r\n"),
            resp_nil(),
            resp_simple("OK"),
            resp_error("x\ny"),
        ]


class TestUserdbKey:
    """The lookup key: userdb/<user>[/<home>]."""

    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("shared/userdb/alice", UserdbKey("alice")),
            ("userdb/alice", UserdbKey("alice")),
            ("shared/userdb/alice//home/alice", UserdbKey("alice", "/home/alice")),
            ("userdb/alice/", UserdbKey("alice", "")),
            ("userdb/a b@example.org//srv/mail/a b", UserdbKey("a b@example.org", "/srv/mail/a b")),
            ("userdb/a/b", UserdbKey("a/b")),
            ("userdb/a/b//h", UserdbKey("a/b", "/h")),
            ("passdb/alice", None),
            ("userdb/", None),
            ("userdb//home", None),
            ("userdb/a\0b", None),
        ],
    )
    def test_parse(self, key: str, expected: UserdbKey | None) -> None:
        """Users, optional homes, and keys nsprov does not answer."""
        assert expected == parse_userdb_key(key)

    @given(
        st.text(min_size=1).filter(
            lambda u: "//" not in u and u[0] != "/" and u[-1] != "/" and "\0" not in u
        ),
        st.one_of(st.none(), st.just(""), st.text().map(lambda h: "/" + h.replace("\0", ""))),
    )
    def test_round_trip(self, user: str, home: str | None) -> None:
        """A key built as Dovecot expands userdb/%u/%{userdb:home} parses back to its parts."""
        key = f"shared/userdb/{user}" if home is None else f"shared/userdb/{user}/{home}"

        assert UserdbKey(user, home) == parse_userdb_key(key)


GOOD = "postlogin?v=1&proto=imap&cfg=/etc/nsprov.toml&stat=1:2:3:4:5"


class TestPostloginKey:
    """The fast path's key: versioned, strict, %-escaped."""

    def test_parse(self) -> None:
        """Protocol, config, stamp, Dovecot version and identity variables, in canonical order."""
        key = parse_postlogin_key(GOOD + "&dovecot=2.3&UID=1000&USER=al%26ice&HOME=/h%2F%C3%A9")

        assert (
            PostloginKey(
                protocol="imap",
                config="/etc/nsprov.toml",
                stamp="1:2:3:4:5",
                dovecot="2.3",
                identity=(("USER", "al&ice"), ("HOME", "/h/\u00e9"), ("UID", "1000")),
            )
            == key
        )
        assert key is not None
        assert ("al&ice", "/h/\u00e9") == (key.user, key.home)

    def test_no_protocol(self) -> None:
        """``proto=-``: post-login without --protocol."""
        key = parse_postlogin_key(GOOD.replace("imap", "-"))

        assert key is not None
        assert (None, "", None) == (key.protocol, key.user, key.home)

    @pytest.mark.parametrize(
        "key",
        [
            GOOD.replace("v=1", "v=2"),
            GOOD.replace("v=1&", ""),
            GOOD.replace("imap", "IMAP"),
            GOOD.replace("&cfg=/etc/nsprov.toml", ""),
            GOOD.replace("&cfg=/etc/nsprov.toml", "&cfg="),
            GOOD.replace("1:2:3:4:5", "1:2:3:4"),
            GOOD.replace("1:2:3:4:5", "1:2:x:4:5"),
            GOOD + "&dovecot=2.5",
            GOOD + "&UID=1&UID=2",
            GOOD + "&IP=1.2.3.4",
            GOOD + "&UID",
            GOOD + "&USER=a%2",
            GOOD + "&USER=a%zz",
            GOOD + "&USER=a%00b",
            GOOD + "&USER=\u00e9",
            "postlogin/imap/alice/",
            "userdb/alice",
        ],
    )
    def test_refused(self, key: str) -> None:
        """An unknown version or field, a repeated field, a bad escape or stamp: None (in-process then)."""
        assert parse_postlogin_key(key) is None

    def test_not_a_userdb_key(self) -> None:
        """The old ``postlogin/…`` form, which carried no configuration stamp, is answered by nobody."""
        assert parse_userdb_key("postlogin/imap/alice//home/alice") is None
