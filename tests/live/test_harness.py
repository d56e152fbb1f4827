"""The live harness against a real Dovecot 2.3, plus its pure IMAP helpers."""

from __future__ import annotations

import imaplib
import json
import subprocess
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .harness import (
    SCRIPT_LOGIN,
    Dovecot,
    SystemAccounts,
    decode_mutf7,
    encode_mutf7,
    list_mailboxes,
    mailbox_arg,
    make_maildir,
    namespaces,
    parse_list,
    parse_namespaces,
    quote,
    select_count,
    write_script,
)

if TYPE_CHECKING:
    from pathlib import Path

# Dumps what Dovecot hands a post-login program, then execs the chain. It owns its first two
# arguments (so the configured line carries options the way nsprov's does); the rest is the chain.
DUMP_SCRIPT = """\
import fcntl, json, os, sys
fds = {}
for name in os.listdir("/proc/self/fd"):
    fd = int(name)
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        continue  # the descriptor listdir used, already closed
    fds[fd] = {"target": target, "nonblock": bool(flags & os.O_NONBLOCK)}
with open(os.path.join(OUT, sys.argv[1].removeprefix("--tag=") + ".json"), "w") as f:
    json.dump(
        {
            "environ": [e.decode() for e in open("/proc/self/environ", "rb").read().split(b"\\0") if e],
            "argv": sys.argv,
            "uid": os.getuid(),
            "gid": os.getgid(),
            "groups": sorted(os.getgroups()),
            "fds": fds,
        },
        f,
    )
os.execv(sys.argv[3], sys.argv[3:])
"""

# World-executable (the venv interpreter may live under /root), for post-login services run as non-root.
SYSTEM_PYTHON = "/usr/bin/python3"
PASS_THROUGH = 'exec "$@"\n'


def _environ(entries: list[str]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in entries)


class TestLive:
    """A private Dovecot with real accounts: logins, post-login wiring, namespaces, clean-up."""

    @pytest.mark.live
    def test_plain_login(self, live_base: Path, accounts: SystemAccounts) -> None:
        """Without post-login, IMAP and POP3 logins see exactly the messages in the Maildir."""
        alice = accounts.user("alice")
        make_maildir(
            alice.home / "Maildir", messages=4, owner=alice.uid, group=alice.gid, mode=0o700
        )

        with Dovecot(live_base / "dovecot", [alice]) as dovecot:
            with dovecot.imap(alice) as imap:
                count = select_count(imap, "INBOX")
                names = list_mailboxes(imap)
                spaces = namespaces(imap)
            pop3 = dovecot.pop3(alice)
            messages, _ = pop3.stat()
            pop3.quit()
            listed = dovecot.doveadm("mailbox", "list", "-u", alice.name)

        assert (4, 4) == (count, messages)
        assert ["INBOX"] == names
        assert {"personal": [("", "/")], "other": [], "shared": []} == spaces
        assert (0, "INBOX\n") == (listed.returncode, listed.stdout)
        assert [] == dovecot.errors()

    @pytest.mark.live
    def test_hostile_mailbox_names(self, live_base: Path, accounts: SystemAccounts) -> None:
        """Names with spaces, quotes, backslashes, wildcards, `&` and non-ASCII survive CREATE, LIST and EXAMINE."""
        alice = accounts.user("alice")
        names = ['a "b\\c', "pct % star *", "Grüße & co", "Top/Sub ☺"]

        with Dovecot(live_base / "dovecot", [alice]) as dovecot, dovecot.imap(alice) as imap:
            for name in names:
                assert imap.create(mailbox_arg(name))[0] == "OK"
                assert (
                    imap.append(mailbox_arg(name), "", None, b"Subject: x\r\n\r\nx\r\n")[0] == "OK"
                )
            listed = list_mailboxes(imap)
            counts = [select_count(imap, name) for name in names]
            starred = list_mailboxes(imap, "pct % star *")
        on_disk = {p.name for p in (alice.home / "Maildir").iterdir() if p.name.startswith(".")}

        assert {*names, "INBOX", "Top"} == set(listed)
        assert [1, 1, 1, 1] == counts
        assert ["pct % star *"] == starred
        assert {"." + encode_mutf7(n).replace("/", ".") for n in names} == on_disk

    @pytest.mark.live
    def test_pass_through_post_login(self, live_base: Path, accounts: SystemAccounts) -> None:
        """A `/bin/sh` post-login script that only execs its arguments lets IMAP and POP3 logins through."""
        alice = accounts.user("alice")
        make_maildir(
            alice.home / "Maildir", messages=2, owner=alice.uid, group=alice.gid, mode=0o700
        )
        script = write_script(live_base / "pass.sh", PASS_THROUGH)
        postlogin = {"imap": str(script), "pop3": str(script)}

        with Dovecot(live_base / "dovecot", [alice], postlogin=postlogin) as dovecot:
            with dovecot.imap(alice) as imap:
                count = select_count(imap, "INBOX")
            pop3 = dovecot.pop3(alice)
            messages, _ = pop3.stat()
            pop3.quit()
            config = dovecot.conf_path.read_text()

        assert (2, 2) == (count, messages)
        assert f"executable = script-login {script}\n" in config
        assert "executable = imap imap-postlogin\n" in config
        assert "executable = pop3 pop3-postlogin\n" in config
        assert [] == dovecot.errors()

    @pytest.mark.live
    def test_post_login_receives(self, live_base: Path, accounts: SystemAccounts) -> None:
        """A post-login program runs as root with a wiped environment of userdb fields, its configured arguments plus script-login, and the client on fds 0 and 1."""
        staff = accounts.group("staff")
        alice = accounts.user("alice", groups=[staff])
        out = live_base / "dump"
        out.mkdir()
        script = write_script(
            live_base / "dump.py", f"OUT = {str(out)!r}\n" + DUMP_SCRIPT, interpreter=SYSTEM_PYTHON
        )
        postlogin = {p: f"{script} --tag={p} second-token" for p in ("imap", "pop3")}

        with Dovecot(live_base / "dovecot", [alice], postlogin=postlogin) as dovecot:
            dovecot.imap(alice).logout()
            dovecot.pop3(alice).quit()
        imap = json.loads((out / "imap.json").read_text())
        pop3 = json.loads((out / "pop3.json").read_text())
        common = {
            "USER": alice.name,
            "IP": "127.0.0.1",
            "LOCAL_IP": "127.0.0.1",
            "HOME": str(alice.home),
            "UID": str(alice.uid),
            "GID": str(alice.gid),
            "SYSTEM_GROUPS_USER": alice.name,
            "AUTH_MECH": "PLAIN",
        }
        imap_env = _environ(imap["environ"])

        assert len(imap_env.pop("AUTH_TOKEN")) == 40
        assert {
            **common,
            "USERDB_KEYS": "SYSTEM_GROUPS_USER UID GID HOME AUTH_MECH AUTH_TOKEN ",
        } == imap_env
        assert {**common, "USERDB_KEYS": "SYSTEM_GROUPS_USER UID GID HOME AUTH_MECH "} == _environ(
            pop3["environ"]
        )
        assert [str(script), "--tag=imap", "second-token", str(SCRIPT_LOGIN)] == imap["argv"]
        assert [str(script), "--tag=pop3", "second-token", str(SCRIPT_LOGIN)] == pop3["argv"]
        for seen in (imap, pop3):
            fds = seen["fds"]
            assert (0, 0, [0]) == (seen["uid"], seen["gid"], seen["groups"])
            assert fds["0"]["target"].startswith("socket:")
            assert fds["0"] == fds["1"]
            assert fds["0"]["nonblock"]
            assert fds["2"]["target"].startswith("pipe:")
            assert fds["3"]["target"].startswith("socket:")

    @pytest.mark.live
    def test_extra_conf_sets_post_login_user(
        self, live_base: Path, accounts: SystemAccounts
    ) -> None:
        """`extra_conf` merges into the generated post-login service, here running it as `dovecot`."""
        alice = accounts.user("alice")
        out = live_base / "dump"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        script = write_script(
            live_base / "dump.py", f"OUT = {str(out)!r}\n" + DUMP_SCRIPT, interpreter=SYSTEM_PYTHON
        )
        extra = "service imap-postlogin {\n  user = dovecot\n}\n"

        with Dovecot(
            live_base / "dovecot",
            [alice],
            postlogin={"imap": f"{script} --tag=imap x"},
            extra_conf=extra,
        ) as dovecot:
            dovecot.imap(alice).logout()
        seen = json.loads((out / "imap.json").read_text())
        dovecot_uid = int(subprocess.check_output(["id", "-u", "dovecot"], text=True))

        assert dovecot_uid == seen["uid"]

    @pytest.mark.live
    def test_public_namespace_by_hand(self, live_base: Path, accounts: SystemAccounts) -> None:
        """A post-login script exporting NAMESPACE fields via `env` adds a public `Shared/sales/` namespace with the spool's messages."""
        alice = accounts.user("alice")
        spool = live_base / "spool"
        spool.mkdir(mode=0o755)
        make_maildir(spool / "sales", messages=3, owner=0, group=0, mode=0o755)
        ns = "NAMESPACE/S-SALES"
        location = f"maildir:{spool}/sales:INDEX=$HOME/idx/s-sales:CONTROL=$HOME/idx/s-sales"
        script = write_script(
            live_base / "sales.sh",
            f"exec /usr/bin/env 'NAMESPACE=s-sales' '{ns}/TYPE=public' '{ns}/SEPARATOR=/' "
            f"'{ns}/PREFIX=Shared/sales/' \"{ns}/LOCATION={location}\" "
            f'"USERDB_KEYS=$USERDB_KEYS NAMESPACE {ns}/TYPE {ns}/SEPARATOR {ns}/PREFIX {ns}/LOCATION" '
            '"$@"\n',
        )

        with (
            Dovecot(live_base / "dovecot", [alice], postlogin={"imap": str(script)}) as dovecot,
            dovecot.imap(alice) as imap,
        ):
            spaces = namespaces(imap)
            names = list_mailboxes(imap)
            count = select_count(imap, "Shared/sales")

        assert ("Shared/sales/", "/") in spaces["shared"]
        assert [("", "/")] == spaces["personal"]
        assert "Shared/sales" in names
        assert 3 == count
        assert (alice.home / "idx" / "s-sales").is_dir()
        assert [] == dovecot.errors()

    @pytest.mark.live
    def test_two_instances_and_clean_up(self, live_base: Path) -> None:
        """Two instances serve their own users at the same time, and the accounts are gone afterwards."""
        with SystemAccounts(live_base) as accounts:
            group = accounts.group("shared")
            alice = accounts.user("alice", groups=[group])
            bob = accounts.user("bob", primary=group, home=False)
            make_maildir(
                alice.home / "Maildir", messages=1, owner=alice.uid, group=alice.gid, mode=0o700
            )
            with (
                Dovecot(live_base / "one", [alice]) as one,
                Dovecot(live_base / "two", [alice, bob]) as two,
                one.imap(alice) as on_one,
                two.imap(alice) as on_two,
            ):
                counts = (select_count(on_one, "INBOX"), select_count(on_two, "INBOX"))
                ports = {one.imap_port, one.pop3_port, two.imap_port, two.pop3_port}
                with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                    one.imap(bob)
            created = [alice.name, bob.name]
            created_groups = [g.name for g in accounts.groups]
            assert not bob.home.exists()
        left = subprocess.run(["getent", "passwd", *created], capture_output=True, check=False)
        left_groups = subprocess.run(
            ["getent", "group", *created_groups], capture_output=True, check=False
        )

        assert (1, 1) == counts
        assert 4 == len(ports)
        assert ((group,), (), group.gid) == (alice.groups, bob.groups, bob.gid)
        assert (2, b"") == (left.returncode, left.stdout)
        assert (2, b"") == (left_groups.returncode, left_groups.stdout)
        assert not alice.home.exists()


class TestModifiedUtf7:
    """IMAP modified UTF-7 (RFC 3501 5.1.3)."""

    @pytest.mark.parametrize(
        ("decoded", "encoded"),
        [
            ("INBOX", "INBOX"),
            ("&", "&-"),
            ("a&b", "a&-b"),
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("☺!", "&Jjo-!"),
            ("Grüße", "Gr&APwA3w-e"),
            ("\U0001f600", "&2D3eAA-"),
            ("tab\there", "tab&AAk-here"),
        ],
    )
    def test_known_vectors(self, decoded: str, encoded: str) -> None:
        """Known names encode and decode as RFC 3501 and Dovecot spell them."""
        assert (encoded, decoded) == (encode_mutf7(decoded), decode_mutf7(encoded))

    @given(st.text(st.characters(codec="utf-8")))
    def test_round_trip(self, text: str) -> None:
        """Decoding an encoded name returns it, and the encoding is printable ASCII."""
        encoded = encode_mutf7(text)

        assert text == decode_mutf7(encoded)
        assert all(0x20 <= ord(c) <= 0x7E for c in encoded)

    @pytest.mark.parametrize("bad", ["&", "a&Jjo", "&Jj!-", "&A-"])
    def test_malformed(self, bad: str) -> None:
        """Unterminated or invalid BASE64 runs are rejected."""
        with pytest.raises(ValueError, match="&|BASE64|UTF-16|length"):
            decode_mutf7(bad)


class TestQuoting:
    """Mailbox arguments are encoded, then quoted."""

    def test_specials(self) -> None:
        """Quotes and backslashes are escaped; wildcards and spaces stay inside the quotes."""
        assert '"a \\"b\\\\c %*"' == quote('a "b\\c %*')

    def test_mailbox_arg(self) -> None:
        """Non-ASCII names are encoded before quoting."""
        assert '"Gr&APwA3w-e &- co"' == mailbox_arg("Grüße & co")

    def test_rejects_line_breaks(self) -> None:
        """CR, LF and NUL cannot go into a quoted string."""
        with pytest.raises(ValueError, match="quoted"):
            quote("a\r\nb")


class TestParsing:
    """NAMESPACE and LIST responses as imaplib returns them."""

    def test_namespaces(self) -> None:
        """Personal, other and shared namespaces come back as (prefix, separator) lists."""
        data = [b'(("" "/")) NIL (("Shared/sales/" "/" "X-EXT" ("a")) ("Gr&APw-/" NIL))']

        assert {
            "personal": [("", "/")],
            "other": [],
            "shared": [("Shared/sales/", "/"), ("Grü/", None)],
        } == parse_namespaces(data)

    def test_namespace_literal(self) -> None:
        """A prefix sent as a literal is read from imaplib's tuple."""
        data = [(b'(("" "/")) NIL (({8}', b"Shared/x"), b' "/"))']

        assert [("Shared/x", "/")] == parse_namespaces(data)["shared"]

    def test_list(self) -> None:
        """LIST lines give flags, separator and the decoded name, escapes and literals included."""
        data = [
            b'(\\HasNoChildren) "/" INBOX',
            b'(\\Noselect \\HasChildren) "/" "a \\"b\\\\c"',
            (b'(\\HasNoChildren) "/" {11}', b"Gr&APwA3w-e"),
            b"",
            b'() NIL "flat"',
        ]

        assert [
            (["\\HasNoChildren"], "/", "INBOX"),
            (["\\Noselect", "\\HasChildren"], "/", 'a "b\\c'),
            (["\\HasNoChildren"], "/", "Grüße"),
            ([], None, "flat"),
        ] == parse_list(data)

    @pytest.mark.parametrize("bad", [b"((", b"))", b'"unterminated'])
    def test_malformed(self, bad: bytes) -> None:
        """Unbalanced or unparsable responses raise ValueError."""
        with pytest.raises(ValueError, match="unbalanced|cannot parse"):
            parse_list([bad])
