from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsprov._env import (
    V23,
    V24,
    Dialect,
    EnvLimits,
    dialect_for,
    fit_environ,
    from_environ,
    to_environ,
)
from nsprov._location import MailLocation
from nsprov._model import Namespace, namespace_problems

prefix_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/")


@st.composite
def namespace_sets(draw: st.DrawFn) -> list[Namespace]:
    names = draw(
        st.lists(st.from_regex(r"s-[a-z0-9_-]{1,12}", fullmatch=True), unique=True, max_size=8)
    )
    out = []
    for i, name in enumerate(names):
        component = draw(st.text(prefix_chars, min_size=1, max_size=20))
        out.append(
            Namespace(
                name=name,
                prefix=f"Shared/{i}{component}/",
                location=MailLocation(
                    root="/spool/" + draw(st.text(prefix_chars, min_size=1, max_size=20)),
                    index=f"/home/u/.nsprov/{name}",
                    control=f"/home/u/.nsprov/{name}",
                ),
                list=draw(st.sampled_from(["yes", "children"])),
                subscriptions=draw(st.booleans()),
                hidden=draw(st.booleans()),
                order=draw(st.integers(0, 5)),
            )
        )
    return out


SALES = Namespace(
    name="s-sales",
    prefix="Shared/sales/",
    location=MailLocation(root="/spool/sales", index="/h/s-sales", control="/h/s-sales"),
)
SALES_KEYS = [
    "NAMESPACE/S-SALES/TYPE",
    "NAMESPACE/S-SALES/SEPARATOR",
    "NAMESPACE/S-SALES/PREFIX",
    "NAMESPACE/S-SALES/MAIL",
]


class TestToEnviron:
    """Namespaces become userdb variables for script-login."""

    def test_existing_keys_kept_once(self) -> None:
        """Keys already listed stay, and are not added a second time."""
        env = to_environ(
            [SALES], environ={"USER": "alice", "USERDB_KEYS": "HOME UID "}, dialect=V23
        )

        assert ["HOME", "UID", "NAMESPACE", *SALES_KEYS] == env["USERDB_KEYS"].split()

    def test_trailing_space(self) -> None:
        """Every key is followed by one space, as script-login writes them."""
        env = to_environ([SALES], environ={"USERDB_KEYS": "HOME"})

        assert env["USERDB_KEYS"].startswith("HOME NAMESPACE ")
        assert env["USERDB_KEYS"].endswith(" ")

    def test_userdb_namespace_extended(self) -> None:
        """A NAMESPACE from userdb is extended, never replaced; its key is not listed twice."""
        env = to_environ(
            [SALES],
            environ={"NAMESPACE": "work", "USERDB_KEYS": "NAMESPACE namespace/work/prefix "},
        )

        assert "work s-sales" == env["NAMESPACE"]
        assert 1 == env["USERDB_KEYS"].upper().split().count("NAMESPACE")

    def test_user_untouched(self) -> None:
        """USER is never among the variables set."""
        assert "USER" not in to_environ([SALES], environ={"USER": "alice"})

    def test_nothing_to_add(self) -> None:
        """Without namespaces the environment stays as it is."""
        assert {} == to_environ([], environ={"USERDB_KEYS": "HOME "})

    def test_defaults_left_out(self) -> None:
        """Settings equal to Dovecot's defaults are not emitted."""
        env = to_environ([SALES], environ={})

        assert {"TYPE", "SEPARATOR", "PREFIX", "MAIL"} == {
            k.rsplit("/", 1)[1] for k in env if k.startswith("NAMESPACE/")
        }

    @given(
        namespace_sets(),
        st.sampled_from(["", "HOME UID ", "HOME UID", "NAMESPACE "]),
        st.sampled_from([V23, V24]),
    )
    def test_round_trip(self, namespaces: list[Namespace], keys: str, dialect: Dialect) -> None:
        """from_environ(to_environ(x)) == x, for each dialect."""
        env = to_environ(namespaces, environ={"USERDB_KEYS": keys}, dialect=dialect)

        assert tuple(namespaces) == from_environ(env, dialect=dialect)

    @given(namespace_sets())
    def test_keys_listed_once_and_exported(self, namespaces: list[Namespace]) -> None:
        """Every listed key is exported, and none is listed twice."""
        env = to_environ(namespaces, environ={"USERDB_KEYS": "HOME "})
        listed = env["USERDB_KEYS"].split() if env else []

        assert len(listed) == len(set(listed))
        assert all(k in env or k == "HOME" for k in listed)

    @given(namespace_sets())
    def test_emitted_sets_pass_dovecot_checks(self, namespaces: list[Namespace]) -> None:
        """What comes back from the environment passes the set checks."""
        assert [] == namespace_problems(from_environ(to_environ(namespaces, environ={})))


class TestFitEnviron:
    """Kernel limits: one string under MAX_ARG_STRLEN, all under a budget."""

    def many(self, n: int) -> list[Namespace]:
        return [
            Namespace(
                name=f"s-b{i:04d}-abcdef",
                prefix=f"Shared/box{i:05d}/",
                location=MailLocation(
                    root=f"/var/spool/mail/Shared/box{i:05d}",
                    index=f"/home/alice/.nsprov/s-b{i:04d}-abcdef",
                    control=f"/home/alice/.nsprov/s-b{i:04d}-abcdef",
                ),
            )
            for i in range(n)
        ]

    def test_thousand_fit(self) -> None:
        """1,000 namespaces with 14-character names fit the 128 KiB USERDB_KEYS limit."""
        env, kept = fit_environ(
            self.many(1000), environ={"USERDB_KEYS": "UID GID HOME SYSTEM_GROUPS_USER "}
        )

        assert 1000 == kept
        assert len("USERDB_KEYS=" + env["USERDB_KEYS"]) < 128 * 1024

    def test_first_ones_kept(self) -> None:
        """Beyond the limit, the first namespaces in order are kept."""
        env, kept = fit_environ(self.many(50), environ={}, limits=EnvLimits(max_var=2000))

        assert 0 < kept < 50
        assert [f"s-b{i:04d}-abcdef" for i in range(kept)] == env["NAMESPACE"].split()
        assert all(len(k) + len(v) + 2 <= 2000 for k, v in env.items())

    def test_budget(self) -> None:
        """The total size of the variables stays within the budget."""
        env, kept = fit_environ(self.many(50), environ={}, limits=EnvLimits(budget=5000))

        assert 0 < kept < 50
        assert sum(len(k) + len(v) + 2 for k, v in env.items()) <= 5000


class TestDialect24:
    """Dovecot 2.4: namespace+=, mail_driver/mail_path, one setting per parameter."""

    def test_keys(self) -> None:
        """NAMESPACE+ lists the names; the location becomes unescaped path settings."""
        odd = Namespace(
            name="s-odd",
            prefix="Shared/odd:x/",
            location=MailLocation(
                root="/spool/odd:x", index="/h/i", control="/h/c", index_private="/h/p"
            ),
        )

        env = to_environ([odd], environ={"USERDB_KEYS": "HOME "}, dialect=V24)

        assert {
            "NAMESPACE+": "s-odd",
            "NAMESPACE/S-ODD/TYPE": "public",
            "NAMESPACE/S-ODD/SEPARATOR": "/",
            "NAMESPACE/S-ODD/PREFIX": "Shared/odd:x/",
            "NAMESPACE/S-ODD/MAIL_DRIVER": "maildir",
            "NAMESPACE/S-ODD/MAIL_PATH": "/spool/odd:x",
            "NAMESPACE/S-ODD/MAIL_INDEX_PATH": "/h/i",
            "NAMESPACE/S-ODD/MAIL_CONTROL_PATH": "/h/c",
            "NAMESPACE/S-ODD/MAIL_INDEX_PRIVATE_PATH": "/h/p",
        } == {k: v for k, v in env.items() if k != "USERDB_KEYS"}
        assert env["USERDB_KEYS"].startswith("HOME NAMESPACE+ NAMESPACE/S-ODD/TYPE ")

    def test_flags(self) -> None:
        """Location flags map to 2.4 booleans and back."""
        ns = Namespace(
            name="s-f",
            prefix="F/",
            location=MailLocation(
                root="/r", layout="fs", utf8=True, alt_nocheck=True, no_noselect=True
            ),
        )

        env = to_environ([ns], environ={}, dialect=V24)

        assert ("fs", "yes", "no", "no") == (
            env["NAMESPACE/S-F/MAILBOX_LIST_LAYOUT"],
            env["NAMESPACE/S-F/MAILBOX_LIST_UTF8"],
            env["NAMESPACE/S-F/MAIL_ALT_CHECK"],
            env["NAMESPACE/S-F/MAILBOX_LIST_DROP_NOSELECT"],
        )
        assert (ns,) == from_environ(env, dialect=V24)

    def test_dirname_refused(self) -> None:
        """A setting without an exact 2.4 equivalent is refused, never dropped."""
        ns = Namespace(
            name="s-d", prefix="D/", location=MailLocation(root="/r", dirname="dbox-Mails")
        )

        with pytest.raises(ValueError, match="DIRNAME"):
            to_environ([ns], environ={}, dialect=V24)

    def test_userdb_namespace_plus_extended(self) -> None:
        """A NAMESPACE+ from userdb is extended."""
        env = to_environ(
            [SALES], environ={"NAMESPACE+": "work", "USERDB_KEYS": "NAMESPACE+ "}, dialect=V24
        )

        assert "work s-sales" == env["NAMESPACE+"]
        assert 1 == env["USERDB_KEYS"].split().count("NAMESPACE+")


class TestSubscribe:
    """Auto-subscription entries in the private namespace (Dovecot 2.3)."""

    def test_variables(self) -> None:
        """Each subscribed namespace gets a mailbox entry named by its full public name."""
        env = to_environ_subscribed([SALES], ["s-sales"])

        assert "s-sales" == env["NAMESPACE/INBOX/MAILBOX"]
        assert "Shared/sales" == env["NAMESPACE/INBOX/MAILBOX/S-SALES/NAME"]
        assert "subscribe" == env["NAMESPACE/INBOX/MAILBOX/S-SALES/AUTO"]
        assert "NAMESPACE/INBOX/MAILBOX" in env["USERDB_KEYS"].split()

    def test_refused_for_24(self) -> None:
        """Not verified on 2.4: refused, never silently dropped."""
        with pytest.raises(ValueError, match="2.3 only"):
            fit_environ([SALES], environ={}, dialect=V24, subscribe={"s-sales"})

    def test_existing_mailbox_list_extended(self) -> None:
        """A mailbox list from userdb is extended."""
        env = to_environ_subscribed([SALES], ["s-sales"], {"NAMESPACE/INBOX/MAILBOX": "trash"})

        assert "trash s-sales" == env["NAMESPACE/INBOX/MAILBOX"]


def to_environ_subscribed(
    namespaces: list[Namespace], subscribe: list[str], environ: dict[str, str] | None = None
) -> dict[str, str]:
    env, kept = fit_environ(namespaces, environ=environ or {}, subscribe=set(subscribe))
    assert len(namespaces) == kept
    return env


class TestInheritedDriver:
    """2.4: a namespace that inherits dovecot.conf's global mail_driver leaves MAIL_DRIVER out."""

    def test_left_out(self) -> None:
        """With the global driver declared maildir, no MAIL_DRIVER key is emitted; it still parses back."""
        dialect = dialect_for("2.4", inherited_driver="maildir")

        env = to_environ([SALES], environ={}, dialect=dialect)

        assert "NAMESPACE/S-SALES/MAIL_DRIVER" not in env
        assert (SALES,) == from_environ(env, dialect=dialect)

    def test_capacity(self) -> None:
        """Six keys per namespace: 600 namespaces with 14-character names fit on 2.4."""
        many = TestFitEnviron().many(700)
        base = {"USERDB_KEYS": "SYSTEM_GROUPS_USER UID GID HOME AUTH_MECH AUTH_TOKEN "}

        _, plain = fit_environ(many, environ=base, dialect=V24)
        _, inherited = fit_environ(
            many, environ=base, dialect=dialect_for("2.4", inherited_driver="maildir")
        )

        assert plain < 600 <= inherited

    def test_23_unaffected(self) -> None:
        """2.3 has no separate driver key."""
        assert V23 == dialect_for("2.3", inherited_driver="maildir")
