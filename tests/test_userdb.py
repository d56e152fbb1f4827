"""The one ``USERDB_KEYS`` helper, and the stdlib-only parent's copy of it, agree."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nsprov._env import to_environ
from nsprov._location import MailLocation
from nsprov._login import Login
from nsprov._model import Namespace
from nsprov._postlogin import merge_fields
from nsprov._userdb import USERDB_KEYS, listed_keys, with_keys

NAMES = st.text("abcQUOTAhome_0", min_size=1, max_size=6).filter(
    lambda n: n.upper() not in {"USER", "USERDB_KEYS"}
)
SALES = Namespace(
    name="s-sales",
    prefix="Shared/sales/",
    location=MailLocation(root="/spool/sales", index="/h/s-sales", control="/h/s-sales"),
)
#: USERDB_KEYS as Dovecot writes it, or as a sloppy userdb might (no trailing space, lowercase).
KEYS = st.lists(NAMES, max_size=4).flatmap(
    lambda names: st.sampled_from([" ".join(names), "".join(n + " " for n in names)])
)


def expected(keys: str, fields: dict[str, str]) -> str:
    """What the helper says ``USERDB_KEYS`` becomes when *fields* are set."""
    _, listed = listed_keys({USERDB_KEYS: keys})
    added: list[str] = []
    for name in fields:
        if name.upper() not in listed:
            listed.add(name.upper())
            added.append(name.upper())
    return with_keys(keys, added) if added else keys


@given(KEYS, st.dictionaries(NAMES, st.text("xyz", max_size=3), max_size=4))
def test_postlogin_copy_agrees(keys: str, fields: dict[str, str]) -> None:
    """The parent's merge_fields lists the same keys, in the same order, as the helper."""
    env = {"USER": "alice", USERDB_KEYS: keys}

    assert expected(keys, fields) == merge_fields(env, fields).get(USERDB_KEYS, "")


@given(KEYS, st.dictionaries(NAMES, st.text("xyz", max_size=3), max_size=4))
def test_login_agrees_with_postlogin(keys: str, fields: dict[str, str]) -> None:
    """Login.set_field (through the helper) and the parent's merge_fields agree on USERDB_KEYS."""
    login = Login({"USER": "alice", USERDB_KEYS: keys})
    for name, value in fields.items():
        login.set_field(name, value)

    env = {"USER": "alice", USERDB_KEYS: keys}
    assert merge_fields(env, fields).get(USERDB_KEYS, "") == login._env.get(USERDB_KEYS, "")


@given(KEYS)
def test_env_agrees_with_postlogin(keys: str) -> None:
    """The namespace variables list their keys as the parent would when it merges them."""
    env = {"USER": "alice", USERDB_KEYS: keys}
    out = to_environ([SALES], environ=env)
    fields = {k: v for k, v in out.items() if k != USERDB_KEYS}

    merged = merge_fields(env, fields)[USERDB_KEYS]

    # The order of the new keys is the order of the variables; the set and the prefix agree.
    assert sorted(merged.split(" ")) == sorted(out[USERDB_KEYS].split(" "))
    assert merged.startswith(with_keys(keys, []))
    assert out[USERDB_KEYS].startswith(with_keys(keys, []))
