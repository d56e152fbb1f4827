from __future__ import annotations

import pytest

from nsprov._location import MailLocation
from nsprov._model import Namespace, check_namespaces, namespace_problems
from nsprov.exceptions import InvalidNamespaceError


def ns(name: str = "s-a", prefix: str = "Shared/a/", **kw: object) -> Namespace:
    loc = kw.pop(
        "location", MailLocation(root="/spool/a", index=f"/h/{name}", control=f"/h/{name}")
    )
    return Namespace(name=name, prefix=prefix, location=loc, **kw)  # type: ignore[arg-type]


class TestNamespace:
    """One namespace validates as Dovecot would."""

    def test_defaults(self) -> None:
        """A namespace is public, separator '/', listed, subscriptions yes."""
        n = ns()

        assert ("public", "/", "yes", True) == (n.type, n.separator, n.list, n.subscriptions)

    def test_name_lowercased(self) -> None:
        """Names are case-insensitive in Dovecot 2.3; the model keeps them lowercase."""
        assert "s-abc" == ns(name="S-ABC").name

    @pytest.mark.parametrize("name", ["s a", "s,a", "s/a", "", "__x", "s=a", "s\\a", "sé"])
    def test_bad_names(self, name: str) -> None:
        """Names outside [a-z0-9_-] or starting with __ are refused."""
        with pytest.raises(InvalidNamespaceError):
            ns(name=name)

    @pytest.mark.parametrize(
        ("kw", "message"),
        [
            ({"prefix": ""}, "Duplicate namespace prefix"),
            ({"prefix": "Shared/a"}, "to end with separator"),
            ({"prefix": "/Shared/a/"}, "not to start with separator"),
            ({"prefix": "Shared/\udcff/"}, "not valid UTF8"),
            ({"prefix": "Shared/a\tb/"}, "control"),
            ({"separator": "//"}, "only one character"),
            ({"separator": ""}, "only one character"),
            ({"separator": " "}, "space"),
        ],
    )
    def test_bad_prefix_or_separator(self, kw: dict[str, str], message: str) -> None:
        """Prefix and separator checks carry Dovecot's error meaning."""
        with pytest.raises(InvalidNamespaceError, match=message):
            ns(**kw)

    def test_list_no_allows_any_prefix_end(self) -> None:
        """With list=no the prefix need not end with the separator."""
        assert "Shared/a" == ns(prefix="Shared/a", list="no").prefix

    def test_key(self) -> None:
        """The environment key stem is NAMESPACE/<NAME>."""
        assert "NAMESPACE/S-A" == ns().key


class TestCheckNamespaces:
    """The set-level checks of Dovecot's namespaces_check()."""

    def test_valid_set(self) -> None:
        """Distinct names, prefixes and paths pass."""
        check_namespaces([ns(), ns("s-b", "Shared/b/")])

    def test_all_problems_collected(self) -> None:
        """Every problem is reported at once."""
        shared = MailLocation(root="/x", index="/same")
        problems = namespace_problems(
            [
                ns("s-a", "P/", location=shared),
                ns("S-A", "P/", location=shared),
                ns("inbox", "Q/"),
                ns("s-x", "X/", location=shared),
                ns("s-c", "R.", separator=".", inbox=True),
                ns("s-d", "S/", inbox=True),
            ]
        )

        text = "\n".join(problems)
        assert "given twice" in text
        assert "Duplicate namespace prefix" in text
        assert "reserved" in text
        assert "INDEX=/same" in text
        assert "same separator" in text
        assert "only one namespace with inbox=yes" in text

    def test_taken_prefixes(self) -> None:
        """A prefix of a configured namespace is taken."""
        with pytest.raises(InvalidNamespaceError, match="Duplicate namespace prefix"):
            check_namespaces([ns()], taken_prefixes=["Shared/a/"])

    def test_list_no_ignored_for_separator(self) -> None:
        """Unlisted namespaces may use another separator."""
        check_namespaces([ns(), ns("s-b", "B.", separator=".", list="no")])
