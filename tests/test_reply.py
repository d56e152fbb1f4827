"""Tests for the userdb reply budget of ``nsprov serve`` (:mod:`nsprov._reply`)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from hypothesis import given
from hypothesis import strategies as st

from nsprov._env import V23, V24
from nsprov._identity import MailUser
from nsprov._perms import Identity
from nsprov._reply import (
    DEFAULT_REPLY_BUDGET,
    ReplyBudget,
    fit_reply,
    reply_budget,
    reply_fields,
)

from .serve.helpers import (  # noqa: F401 - the base and spool fixtures
    MY_GID,
    _base,
    _spool,
    make_config,
    ns,
)

if TYPE_CHECKING:
    from pathlib import Path

    from nsprov._model import Namespace

names = st.from_regex(r"s-[a-z0-9]{1,12}", fullmatch=True)
roots = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
).map(lambda t: "/spool/" + t.replace("/", "_"))


@st.composite
def namespace_lists(draw: st.DrawFn) -> list[Namespace]:
    """Up to 30 namespaces with distinct names, hostile roots and prefixes."""
    chosen = draw(st.lists(names, unique=True, max_size=30))
    return [ns(n, prefix=f"Shared/{n} {draw(roots)[7:]}/", root=draw(roots)) for n in chosen]


class TestFitReply:
    """The JSON reply and its budget."""

    @given(namespace_lists(), st.integers(min_value=2, max_value=6000), st.sampled_from([V23, V24]))
    def test_longest_prefix_within_budget(
        self, namespaces: list[Namespace], budget: int, dialect: Any
    ) -> None:
        """The reply carries the longest leading run that fits, its size is measured exactly, and one more would not fit."""
        reply = fit_reply(namespaces, dialect, budget)
        bigger = fit_reply(namespaces, dialect, 1 << 30)

        assert reply.size <= budget
        assert dict(reply_fields(namespaces[: reply.fits], dialect)) == json.loads(reply.value)
        assert (len(namespaces), bigger.size, bigger.size) == (
            reply.total,
            reply.full_size,
            bigger.full_size,
        )
        if reply.fits < reply.total:
            assert fit_reply(namespaces[: reply.fits + 1], dialect, 1 << 30).size > budget

    def test_fields_2_3(self) -> None:
        """2.3: a namespace= list, lowercase keys, the location as mail=, defaults left out."""
        fields = reply_fields([ns("s-a")], V23)

        assert [
            ("namespace", "s-a"),
            ("namespace/s-a/type", "public"),
            ("namespace/s-a/separator", "/"),
            ("namespace/s-a/prefix", "Shared/s-a/"),
            (
                "namespace/s-a/mail",
                "maildir:/spool/x:INDEX=/home/u/.nsprov/s-a:CONTROL=/home/u/.nsprov/s-a",
            ),
        ] == fields

    def test_fields_2_4(self) -> None:
        """2.4: namespace+= and one setting per location parameter."""
        keys = [k for k, _ in reply_fields([ns("s-a")], V24)]

        assert "namespace+" == keys[0]
        assert {"namespace/s-a/mail_driver", "namespace/s-a/mail_path"} <= set(keys)

    def test_empty(self) -> None:
        """No namespaces: an empty object."""
        assert (b"{}", 0, 0) == (
            fit_reply([], V23, 100).value,
            fit_reply([], V23, 100).fits,
            fit_reply([], V23, 100).total,
        )

    def test_reply_budget(self, spool: Path) -> None:
        """reply_budget says how many of a user's namespaces fit, in how many bytes."""
        user = MailUser(
            user="member", home="/home/m", identity=Identity(uid=70001, gid=70001, groups={MY_GID})
        )
        full = reply_budget(make_config(spool), user)
        tight = reply_budget(make_config(spool), user, budget=full.size - 1)

        assert (3, 3, False, DEFAULT_REPLY_BUDGET) == (
            full.fits,
            full.total,
            full.over,
            full.budget,
        )
        assert (
            ReplyBudget(fits=2, total=3, size=tight.size, full_size=full.size, budget=full.size - 1)
            == tight
        )
        assert tight.over


#: Imported by a server, never by the reply budget (45-70 ms and 68 modules on every call).
SERVER_MODULES = {"asyncio", "ssl", "subprocess", "socket", "nsprov._serve"}

BUDGET_CHILD = """\
import json, sys
import nsprov
from nsprov._config import config_from_mapping

config = config_from_mapping(
    {"spool": [{"path": sys.argv[1], "prefix": "Shared/{name}/"}], "namespace": {"create_dirs": False}}
)
user = nsprov.MailUser(user="member", home="/home/member", identity=nsprov.Identity(70001, 70001, {int(sys.argv[2])}))
b = nsprov.reply_budget(config, user)
print(json.dumps({"fits": b.fits, "total": b.total, "modules": sorted(sys.modules)}))
"""


class TestImportLight:
    """The public reply budget runs without the server's machinery."""

    def test_reply_budget_loads_no_server_modules(self, spool: Path) -> None:
        """``nsprov.reply_budget``, looked up and called, loads neither asyncio, ssl, subprocess, socket nor the server."""
        out = subprocess.run(
            [sys.executable, "-I", "-c", BUDGET_CHILD, str(spool), str(MY_GID)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        result = json.loads(out)

        assert (3, 3, set()) == (
            result["fits"],
            result["total"],
            SERVER_MODULES & set(result["modules"]),
        )
