"""Tests for the resolver: cached answers, new scans, and the lookups it refuses."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import attrs
import pytest

from nsprov._cli import main as cli_main
from nsprov._config import config_from_mapping
from nsprov._identity import MailUser
from nsprov._perms import Identity
from nsprov._reply import (
    DEFAULT_REPLY_BUDGET,
    LUA_MAX_REPLY,
    default_reply_budget,
    reply_budget,
)
from nsprov._serve.codec import UserdbKey
from nsprov._serve.recorder import Recorder
from nsprov._serve.resolver import Resolver
from nsprov.exceptions import IdentityError

from .helpers import (
    FakeClock,
    Identities,
    connect,
    make_config,
    prefixes,
    running,
    wait_for,
)

if TYPE_CHECKING:
    from pathlib import Path

    from nsprov._config import Config


class TestResolver:
    """Validating a cached answer or computing a new one."""

    @pytest.fixture(name="resolver")
    def _resolver(self) -> Resolver:
        return Resolver(ttl=5.0, clock=FakeClock(), identify=Identities())

    def test_hit_miss_and_ttl(self, resolver: Resolver, spool: Path) -> None:
        """A valid entry is a hit until the TTL, then the scan runs again."""
        config = make_config(spool)
        key = UserdbKey("member")
        first = resolver.resolve(config, 0, key, None)
        second = resolver.resolve(config, 0, key, first.entry)
        clock = resolver.clock
        assert isinstance(clock, FakeClock)
        clock.now += 5.0
        third = resolver.resolve(config, 0, key, first.entry)

        assert ("miss", "hit", "miss") == (first.how, second.how, third.how)
        assert {"Shared/sales/", "Shared/Weird Name/", "Shared/team/"} == prefixes(second.answer)

    def test_generation(self, resolver: Resolver, spool: Path) -> None:
        """An entry from before a reload is not used."""
        first = resolver.resolve(make_config(spool), 0, UserdbKey("member"), None)

        assert (
            "miss" == resolver.resolve(make_config(spool), 1, UserdbKey("member"), first.entry).how
        )

    def test_unknown_user(self, resolver: Resolver, spool: Path) -> None:
        """A user NSS does not know: not found, cached for the TTL."""
        out = resolver.resolve(make_config(spool), 0, UserdbKey("nobody-here"), None)

        assert ("not-found", True) == (out.answer.kind, out.entry is not None)

    def test_failure_not_cached(self, resolver: Resolver, base: Path) -> None:
        """A missing spool fails the lookup, logs it, and is not cached."""
        out = resolver.resolve(make_config(base / "missing"), 0, UserdbKey("member"), None)

        assert ("fail", None) == (out.answer.kind, out.entry)
        assert "missing" in out.answer.error
        assert ["lookup-failed"] == [event for _, event, _ in out.logs]

    def test_internal_error(self, spool: Path) -> None:
        """An unexpected exception becomes a failure, never a crash."""

        def broken(config: Config, user: str, home: str | None) -> MailUser:
            raise ZeroDivisionError("boom")

        out = Resolver(identify=broken).resolve(make_config(spool), 0, UserdbKey("x"), None)

        assert "internal error: ZeroDivisionError: boom" == out.answer.error

    def test_over_budget(self, spool: Path) -> None:
        """Over budget: the first namespaces in discovery order and one warning with the counts."""
        resolver = Resolver(budget=700, identify=Identities())
        out = resolver.resolve(make_config(spool), 0, UserdbKey("member"), None)
        warnings = [fields for level, _, fields in out.logs if level == "warning"]

        assert {"Shared/Weird Name/", "Shared/sales/"} == prefixes(out.answer)
        assert 1 == len(warnings)
        assert {"user": "member", "served": 2, "found": 3, "budget": 700} == {
            k: warnings[0][k] for k in ("user", "served", "found", "budget")
        }

    def test_budget_follows_the_dialect(self, spool: Path) -> None:
        """Without a configured budget, a 2.4 reply may use the Lua userdb's 7680 bytes, a 2.3 one 7000."""
        member = Identities()(make_config(spool), "member", None)
        budgets = {
            version: reply_budget(attrs.evolve(make_config(spool), dialect=version), member).budget
            for version in ("2.3", "2.4")
        }

        assert {"2.3": 7000, "2.4": 7680} == budgets
        assert (DEFAULT_REPLY_BUDGET, LUA_MAX_REPLY) == (7000, default_reply_budget("2.4"))

    def test_over_budget_24(self, spool: Path) -> None:
        """2.4 over the budget: the first namespaces and one warning naming that budget."""
        config = attrs.evolve(make_config(spool), dialect="2.4")
        full = Resolver(identify=Identities()).resolve(config, 0, UserdbKey("member"), None)
        size = len(full.answer.value or b"")
        out = Resolver(budget=size - 1, identify=Identities()).resolve(
            config, 0, UserdbKey("member"), None
        )
        warnings = [fields for level, _, fields in out.logs if level == "warning"]

        assert (3, 3) == (full.answer.fits, full.answer.total)
        assert (2, 3) == (out.answer.fits, out.answer.total)
        assert [size - 1] == [w["budget"] for w in warnings]

    def test_reply_keys_24_are_shows(self, spool: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A 2.4 reply has exactly the keys ``nsprov show --dialect=2.4 --format=env`` lists, lowercased."""
        config_path = spool.parent / "c.toml"
        config_path.write_text(
            f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n'
            "[namespace]\ncreate_dirs = false\n"
        )
        uid, gid, groups = Identities().users["member"]
        assert 0 == cli_main(
            [
                "show",
                "--user=member",
                f"--config={config_path}",
                "--dialect=2.4",
                "--format=env",
                f"--uid={uid}",
                f"--gid={gid}",
                "--groups=" + ",".join(map(str, groups)),
                "--home=/home/member",
            ]
        )
        env = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
        config = attrs.evolve(make_config(spool), dialect="2.4")
        out = Resolver(identify=Identities()).resolve(config, 0, UserdbKey("member"), None)

        shown = {k.lower(): v for k, v in env.items() if k.startswith("NAMESPACE")}
        assert shown == json.loads(out.answer.value or b"")
        assert 3 == out.answer.fits

    def test_no_ttl_no_cache(self, spool: Path) -> None:
        """--cache-ttl=0 disables the cache."""
        out = Resolver(ttl=0, identify=Identities()).resolve(
            make_config(spool), 0, UserdbKey("member"), None
        )

        assert None is out.entry

    def test_missing_dirs_listed(self, spool: Path, base: Path) -> None:
        """With create_dirs, the directories that do not exist yet are handed out with the identity."""
        out = Resolver(identify=Identities()).resolve(
            make_config(spool, create_dirs=True), 0, UserdbKey("other", str(base / "home")), None
        )

        assert out.make_dirs is not None
        (uid, gid, groups), paths = out.make_dirs
        assert (70002, 70002, (), 2) == (uid, gid, groups, len(paths))
        assert all(p.startswith(str(base / "home" / ".nsprov")) for p in paths)


class TestMoreResolver:
    """Corners of the resolver and the recorder."""

    def test_new_cur_makes_a_maildir(self, spool: Path) -> None:
        """An entry that was no maildir becomes one when cur and new appear: the cache notices."""
        (spool / "later").mkdir(mode=0o755)
        resolver = Resolver(identify=Identities())
        first = resolver.resolve(make_config(spool), 0, UserdbKey("other"), None)
        for sub in ("cur", "new"):
            (spool / "later" / sub).mkdir(mode=0o755)
        second = resolver.resolve(make_config(spool), 0, UserdbKey("other"), first.entry)

        assert ("miss", {"Shared/later/", "Shared/sales/", "Shared/Weird Name/"}) == (
            second.how,
            prefixes(second.answer),
        )

    def test_unreadable_path_invalidates(self, spool: Path) -> None:
        """A path that cannot be looked at any more counts as changed."""
        from nsprov._scan import DEFAULT_FS

        rec = Recorder()
        user = MailUser(user="o", home="/h", identity=Identity(uid=70002, gid=70002))
        from nsprov._engine import plan

        plan(make_config(spool), user, {}, fs=rec.fs(), keep_skipped=False)

        def denied(path: bytes) -> os.stat_result:
            raise PermissionError(13, "denied", os.fsdecode(path))

        assert rec.deps().changed(attrs.evolve(DEFAULT_FS, lstat=denied)) is not None

    def test_debug_user_explained(self, spool: Path) -> None:
        """A user in [postlogin] debug_users gets the --explain listing in the log."""
        config = config_from_mapping(
            {
                "spool": [{"path": str(spool)}],
                "postlogin": {"debug_users": ["other"]},
                "namespace": {"create_dirs": False},
            }
        )
        out = Resolver(identify=Identities()).resolve(config, 0, UserdbKey("other"), None)
        lines = [fields["line"] for _, event, fields in out.logs if event == "explain"]

        assert any(str(line).startswith("skip  ") and "team" in str(line) for line in lines)


class TestRefusals:
    """Lookups serve refuses exactly as post-login does, and what they log (issue 16, finding 14)."""

    @staticmethod
    def get(key: bytes) -> bytes:
        return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)

    def test_uid_0_refused_like_postlogin(self, spool: Path) -> None:
        """root (uid 0 from NSS) is not served: post-login refuses uid 0 with the same words."""
        from nsprov._identity import mail_user_from_environ

        out = Resolver().resolve(make_config(spool), 0, UserdbKey("root", "/root"), None)
        with pytest.raises(IdentityError) as postlogin:
            mail_user_from_environ(
                {"USER": "root", "UID": "0", "GID": "0"}, make_config(spool).identity
            )

        assert ("not-found", str(postlogin.value)) == (out.answer.kind, out.answer.error)

    def test_virtual_uid_0_refused(self, spool: Path) -> None:
        """[identity] mail_uid = 0 for users without a passwd entry: refused too."""
        config = config_from_mapping(
            {"spool": [{"path": str(spool)}], "identity": {"mail_uid": "0", "mail_gid": "0"}}
        )

        out = Resolver().resolve(config, 0, UserdbKey("virtual-nsprov-x", "/h"), None)

        assert "not-found" == out.answer.kind
        assert "uid 0" in out.answer.error

    def test_unknown_user_one_debug_line(self, spool: Path, base: Path) -> None:
        """An unknown user's lookup writes one line, at debug level, saying why."""
        with running(make_config(spool), base) as (server, log), connect(server) as c:
            c.sendall(self.get(b"userdb/nosuch-nsprov"))
            assert c.recv(65536) == b"$-1\r\n"
            wait_for(lambda: "event=lookup" in log.getvalue())

        lines = [line for line in log.getvalue().splitlines() if "nosuch-nsprov" in line]
        assert 1 == len(lines), lines
        assert "level=debug event=lookup user=nosuch-nsprov" in lines[0]
        assert "result=not-found" in lines[0]
        assert "error=" in lines[0]
