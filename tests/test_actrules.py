"""The action rules on plain values (:mod:`nsprov._actrules`) against the standard library.

The glob matcher is :func:`fnmatch.fnmatchcase`, the address parser and the
network test are :mod:`ipaddress` (IPv4-mapped IPv6 addresses as IPv4), for
random patterns, names, addresses and networks.
"""

from __future__ import annotations

import ipaddress
from fnmatch import fnmatchcase

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from nsprov import _actrules
from nsprov._actrules import compile_network, glob_match, in_networks, parse_ip

GLOB_CHARS = st.sampled_from("ab*?.-/%[]!é")


@given(st.text(GLOB_CHARS, max_size=8), st.text(st.sampled_from("ab.-/%é*?[]"), max_size=10))
@example("a*b*", "axxbyy")
@example("*a", "aaab")
@example("a?", "a")
@example("**", "")
@example("[ab]*", "bx")
@example("[!a]", "b")
def test_glob_is_fnmatchcase(pattern: str, name: str) -> None:
    """For random patterns and names, the matcher answers as fnmatch.fnmatchcase."""
    assert fnmatchcase(name, pattern) == glob_match(name, pattern)


def _reference(text: str) -> tuple[int, int] | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return 4, int(address.ipv4_mapped)
    return address.version, int(address)


addresses = (
    st.ip_addresses().map(str)
    | st.ip_addresses(v=6).map(lambda a: a.exploded)
    | st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}")
    | st.text(st.sampled_from("0123456789abcdefABCDEFg:.%/ "), max_size=20)
    | st.lists(st.text(st.sampled_from("0129af"), max_size=5), min_size=1, max_size=10).map(
        ":".join
    )
    | st.lists(st.text(st.sampled_from("0129"), max_size=4), min_size=1, max_size=5).map(".".join)
)


@given(addresses)
@example("::")
@example("::1")
@example("1::")
@example(":1::")
@example("1::2:")
@example("1:2:3:4:5:6:7::")
@example("::2:3:4:5:6:7:8")
@example("1:2:3:4:5:6:7:8:9")
@example("::1.2.3.4")
@example("::ffff:10.0.0.1")
@example("fe80::1%eth0")
@example("fe80::1%")
@example("01.2.3.4")
@example("1.2.3.256")
@example("")
def test_parse_ip_is_ipaddress(text: str) -> None:
    """For random texts, the address parser reads what ipaddress.ip_address reads."""
    assert _reference(text) == parse_ip(text)


networks = st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=4), st.integers(0, 32)) | st.builds(
    lambda a, p: f"{a}/{p}", st.ip_addresses(v=6), st.integers(0, 128)
)


@given(st.lists(networks, max_size=3), addresses)
def test_in_networks_is_ipaddress(cidrs: list[str], text: str) -> None:
    """Compiled networks contain what ipaddress's networks contain (the full path's old rule)."""
    ref = _reference(text)
    expected = ref is not None and any(
        ipaddress.ip_address(ref[1]) in ipaddress.ip_network(c, strict=False)
        if ref[0] == 4
        else ipaddress.IPv6Address(ref[1]) in ipaddress.ip_network(c, strict=False)
        for c in cidrs
    )
    assert expected == in_networks(parse_ip(text), [compile_network(c) for c in cidrs])


def test_compile_network_rejects() -> None:
    """A bad network is a ValueError, as ipaddress says."""
    with pytest.raises(ValueError, match="does not appear"):
        compile_network("10.0.0.0/33x")


def test_acl_groups_rules() -> None:
    """Include/exclude globs, dialect quoting, unsafe names left out with one warning."""
    names = ["staff", "a,b", 'q"x', "with space", "50%"]
    assert (
        "staff,with space,50%%",
        "acl_groups: left out group names Dovecot 2.3 cannot take: 'a,b'",
    ) == (_actrules.acl_groups(names[:1] + names[1:2] + names[3:], (), (), "2.3"))
    value, warning = _actrules.acl_groups(names, ("*",), ("50*",), "2.4")
    assert 'staff,"a,b","with space"' == value
    assert warning is not None
    assert "'q\"x'" in warning
    assert (None, None) == _actrules.acl_groups(["staff"], ("x*",), (), "2.4")


def test_fields_bookkeeping() -> None:
    """set/append/default keep USERDB_KEYS listing each key once; 2.3 doubles % when literal."""
    env = {"USERDB_KEYS": "HOME ", "HOME": "/h"}
    _actrules.set_field(env, "quota", "1")
    _actrules.append_field(env, "quota", "2", ";")
    _actrules.default_field(env, "quota", "x")
    _actrules.default_field(env, "home", "x")
    kw = {"mode": "set", "separator": ",", "literal_percent": True}
    _actrules.apply_field(env, name="p", value="50%", dialect="2.3", **kw)  # type: ignore[arg-type]
    assert {"USERDB_KEYS": "HOME QUOTA P ", "HOME": "/h", "QUOTA": "1;2", "P": "50%%"} == env
    for bad in ("", "a b", "user", "USERDB_KEYS", "a=b"):
        with pytest.raises(ValueError, match="field"):
            _actrules.field_key(bad)
