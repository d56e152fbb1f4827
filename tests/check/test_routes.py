"""The zero-fork routes: a Lua or dict userdb asking ``nsprov serve``."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import pytest

from nsprov._check.doveconf import DovecotConf
from nsprov._check.gather import World, dovecot_lua_version, gather_routes
from nsprov._check.report import run_checks
from nsprov._check.routes import (
    RouteState,
    check_routes,
    lua_defaults,
    post_login_wired,
    route_settings,
    zero_fork_userdbs,
)
from nsprov._serve.wiring import dovecot_config, lua_script, lua_script_with

from ..serve.helpers import make_config as serve_config
from ..serve.helpers import running
from .support import CONFIG, HEADER_23, IMAP_OK, codes, line, make_config, wired

if TYPE_CHECKING:
    from pathlib import Path

    from nsprov._config import Config

HEADER_24 = "# 2.4.1-4 (7d8c0e5759): /etc/dovecot/dovecot.conf\n"

#: The Lua route as ``doveconf -n`` prints the printer's output (2.4.1 and 2.3.19.1).
LUA_24 = """userdb passwd {
  result_success = continue-ok
}
userdb lua {
  lua_file = SCRIPT
  lua_settings {
    max_reply = 7680
    socket = SOCKET
    timeout = 1
  }
  result_failure = continue
  result_internalfail = continue
  use_worker = yes
}
"""
LUA_23 = """userdb {
  driver = passwd
  result_success = continue-ok
}
userdb {
  args = file=SCRIPT blocking=yes cache_key=
  driver = lua
  result_failure = continue
  result_internalfail = continue
}
"""
DICT_23 = """userdb {
  driver = passwd
}
userdb {
  args = SCRIPT
  driver = dict
}
"""


def conf_of(
    text: str, *, version: str = "2.4", protocols: str = "imap", **subst: str
) -> DovecotConf:
    for key, value in subst.items():
        text = text.replace(key.upper(), value)
    header = HEADER_24 if version == "2.4" else HEADER_23
    return DovecotConf.parse(f"{header}protocols = {protocols}\n{text}")


def state(conf: DovecotConf, text: str | None = None, **kw: Any) -> RouteState:
    (route,) = zero_fork_userdbs(conf)
    socket, timeout = route_settings(route, text)
    return RouteState(route=route, text=text, socket=socket, timeout=timeout, **kw)


def findings(
    config: Config, conf: DovecotConf, *states: RouteState, deadline: float = 0.8
) -> set[tuple[str, str]]:
    return codes(
        check_routes(
            config, conf, list(states), installed_script=lua_script(), serve_deadline=deadline
        )
    )


OK = {"luac": "/usr/bin/luac5.4"}


class TestParse:
    """What doveconf -n says of each route."""

    def test_lua_24(self) -> None:
        """lua_file, lua_settings (socket, timeout) and use_worker."""
        conf = conf_of(LUA_24, script="/etc/dovecot/l.lua", socket="/run/x.sock")
        (route,) = zero_fork_userdbs(conf)

        assert ("lua", "/etc/dovecot/l.lua", True) == (route.kind, route.path, route.worker)
        assert ("/run/x.sock", 1.0) == route_settings(route, lua_script())

    def test_lua_23_defaults(self) -> None:
        """2.3: args file= and blocking=; socket and timeout from the script's DEFAULTS."""
        conf = conf_of(LUA_23, version="2.3", script="/etc/dovecot/l.lua")
        (route,) = zero_fork_userdbs(conf)
        text = lua_script_with(socket_path="/run/y.sock", timeout=2.5, max_reply=100)

        assert ("/etc/dovecot/l.lua", True, "") == (route.path, route.worker, route.cache_key)
        assert ("/run/y.sock", 2.5) == route_settings(route, text)
        assert {"socket": "/run/y.sock", "timeout": "2.5"} == lua_defaults(text)
        assert ("/run/nsprov/userdb.sock", 1.0) == route_settings(route, None)

    def test_lua_bad_settings_fall_back(self) -> None:
        """A setting the script would refuse is read as the script reads it: its built-in value."""
        conf = conf_of(
            LUA_24.replace("timeout = 1", "timeout = abc").replace("SOCKET", "rel"), script="/l"
        )
        (route,) = zero_fork_userdbs(conf)

        assert ("/run/nsprov/userdb.sock", 1.0) == route_settings(route, lua_script())

    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("redis:path=/run/s.sock:timeout_msecs=1800", ("/run/s.sock", 1.8)),
            ("redis:path=/run/s.sock", ("/run/s.sock", 30.0)),
            ("redis:path=/s:timeout_msecs=x", ("/s", None)),
            ("proxy:/run/s.sock:nsprov", ("/run/s.sock", 30.0)),
            ("file:/x", (None, None)),
        ],
    )
    def test_dict(self, uri: str, expected: tuple[str | None, float | None]) -> None:
        """The dict userdb's socket and timeout come from the uri of its args file."""
        (route,) = zero_fork_userdbs(conf_of(DICT_23, version="2.3", script="/d.ext"))

        assert expected == route_settings(route, f"# x\nuri = {uri}\n")
        assert (None, None) == route_settings(route, None)
        assert (None, None) == route_settings(route, "iterate_disable = yes\n")

    def test_post_login_wired(self) -> None:
        """Protocols whose logins run nsprov post-login (or its fast path)."""
        assert ["imap", "pop3"] == post_login_wired(wired())
        assert ["imap"] == post_login_wired(wired(example=line("imap", IMAP_OK)))
        assert [] == post_login_wired(wired(example=line("imap", "/usr/local/bin/other")))


class TestCheckRoutes:
    """Each finding of a zero-fork route."""

    @pytest.fixture(name="config")
    def _config(self, spool: Path) -> Config:
        return make_config(spool)

    def test_printed_wiring_is_clean(self, config: Config) -> None:
        """The printer's 2.4 and 2.3 wiring, a server answering, luac passing: no finding."""
        for text, version in ((LUA_24, "2.4"), (LUA_23, "2.3")):
            conf = conf_of(text, version=version, script="/l.lua", socket="/run/nsprov/userdb.sock")
            assert set() == findings(config, conf, state(conf, lua_script(), probed=True, **OK))

    def test_socket_down(self, config: Config) -> None:
        """A probe that failed is a warning naming the socket."""
        conf = conf_of(LUA_24, script="/l.lua", socket="/run/x.sock")
        (f,) = check_routes(
            config,
            conf,
            [
                state(
                    conf,
                    lua_script(),
                    probed=True,
                    probe_error="cannot ask /run/x.sock: No such file",
                    **OK,
                )
            ],
            installed_script=lua_script(),
            serve_deadline=0.8,
        )

        assert ("route-socket-down", "warning", "/run/x.sock") == (f.code, f.severity, f.subject)
        assert "fail open" in f.message

    @pytest.mark.parametrize(
        ("timeout", "configured", "running", "expected"),
        [
            ("1", 0.8, None, set()),
            ("1", 1.5, None, {("route-timeouts", "warning")}),
            ("1", 0.5, 1.0, {("route-timeouts", "warning")}),
            ("2", 1.5, None, set()),
        ],
    )
    def test_timeouts(
        self,
        config: Config,
        timeout: str,
        configured: float,
        running: float | None,
        expected: set[tuple[str, str]],
    ) -> None:
        """The running server's deadline, else [serve]'s, must be below the client's timeout."""
        conf = conf_of(
            LUA_24.replace("timeout = 1", f"timeout = {timeout}"), script="/l", socket="/s"
        )
        st = state(conf, lua_script(), server_deadline=running, **OK)

        assert expected == findings(config, conf, st, deadline=configured)

    def test_redis_timeout(self, config: Config) -> None:
        """The dict route's timeout_msecs against a 2 s deadline."""
        conf = conf_of(DICT_23, version="2.3", script="/d")
        st = state(conf, "uri = redis:path=/s:timeout_msecs=1800\n")

        assert {("route-timeouts", "warning")} == findings(config, conf, st, deadline=2)
        assert set() == findings(config, conf, st, deadline=0.8)

    def test_no_worker(self, config: Config) -> None:
        """use_worker = no (2.4) and blocking=no (2.3) are errors naming the setting."""
        c24 = conf_of(
            LUA_24.replace("use_worker = yes", "use_worker = no"), script="/l", socket="/s"
        )
        c23 = conf_of(LUA_23.replace("blocking=yes", "blocking=no"), version="2.3", script="/l")
        f24 = check_routes(
            config,
            c24,
            [state(c24, lua_script(), **OK)],
            installed_script=lua_script(),
            serve_deadline=0.8,
        )
        f23 = check_routes(
            config,
            c23,
            [state(c23, lua_script(), **OK)],
            installed_script=lua_script(),
            serve_deadline=0.8,
        )

        assert [("lua-no-worker", "error")] * 2 == [(f.code, f.severity) for f in f24 + f23]
        assert ("use_worker = no", "blocking=no") == (
            f24[0].message.split("(")[1].split(")")[0],
            f23[0].message.split("(")[1].split(")")[0],
        )

    def test_cache_key(self, config: Config) -> None:
        """2.3 without cache_key= and with the auth cache on: Dovecot caches nsprov's answer."""
        text = LUA_23.replace(" cache_key=", "")
        on = conf_of("auth_cache_size = 10M\n" + text, version="2.3", script="/l")
        off = conf_of(text, version="2.3", script="/l")
        fixed = conf_of("auth_cache_size = 10M\n" + LUA_23, version="2.3", script="/l")

        assert {("lua-cache-key", "warning")} == findings(config, on, state(on, lua_script(), **OK))
        assert set() == findings(config, off, state(off, lua_script(), **OK))
        assert set() == findings(config, fixed, state(fixed, lua_script(), **OK))

    def test_script(self, config: Config) -> None:
        """Missing, differing (beyond DEFAULTS), syntax error, no luac."""
        conf = conf_of(LUA_24, script="/l.lua", socket="/s")
        edited = lua_script().replace("local MAX_USER = 255", "local MAX_USER = 64")
        defaults_only = lua_script_with(socket_path="/elsewhere", timeout=0.5, max_reply=10)

        assert {("lua-script-missing", "error")} == findings(
            config, conf, state(conf, None, file_error="No such file")
        )
        assert {("lua-script-differs", "warning")} == findings(
            config, conf, state(conf, edited, **OK)
        )
        assert set() == findings(config, conf, state(conf, defaults_only, **OK))
        assert {("lua-syntax", "error")} == findings(
            config,
            conf,
            state(
                conf, lua_script(), luac_status=1, luac_message="luac5.4: x:3: syntax error", **OK
            ),
        )
        assert {("luac-unavailable", "info")} == findings(
            config, conf, state(conf, lua_script(), lua_version="5.4")
        )

    def test_double(self, spool: Path) -> None:
        """Post-login running namespaces next to a Lua route: warning; post-login for actions only: fine."""
        both = make_config(
            spool, {"alert": [{"text": "hi"}], "actions": {"imap": ["namespaces", "alert"]}}
        )
        actions_only = make_config(
            spool, {"alert": [{"text": "hi"}], "actions": {"imap": ["alert"]}}
        )
        conf = conf_of(LUA_24 + line("imap", IMAP_OK), script="/l", socket="/s")
        st = state(conf, lua_script(), **OK)
        (f,) = check_routes(both, conf, [st], installed_script=lua_script(), serve_deadline=0.8)

        assert ("route-double", "warning") == (f.code, f.severity)
        assert "works as intended for actions" in f.fix
        assert set() == findings(actions_only, conf, st)

    def test_actions_without_post_login(self, spool: Path) -> None:
        """Actions beyond namespaces with only a zero-fork route: warning; deny among them: error."""
        alert = make_config(
            spool, {"alert": [{"text": "hi"}], "actions": {"imap": ["namespaces", "alert"]}}
        )
        deny = make_config(spool, {"actions": {"imap": ["deny"]}, "deny": {"users": ["guest"]}})
        conf = conf_of(LUA_24, script="/l", socket="/s")
        st = state(conf, lua_script(), **OK)
        (f,) = check_routes(alert, conf, [st], installed_script=lua_script(), serve_deadline=0.8)

        assert ("route-actions", "warning", "service imap") == (f.code, f.severity, f.subject)
        assert 'imap = ["alert"]' in f.fix
        assert {("route-actions", "error")} == findings(deny, conf, st)
        assert set() == findings(make_config(spool), conf, st)


class TestGather:
    """gather_routes reads the files, probes the socket, runs luac (the OS part)."""

    def test_live_server_and_files(self, spool: Path, base: Path) -> None:
        """The printer's script, a running server: probed, its deadline read, luac run if installed."""
        script = base / "l.lua"
        with running(serve_config(spool), base, deadline=0.6) as (server, _):
            sock = server.options.socket_path
            printed = dovecot_config(dialect="2.4", socket_path=sock, lua_file=str(script))
            script.write_text(printed.split(f"# ---- {script} ----\n")[1])
            conf = conf_of(LUA_24, script=str(script), socket=sock)
            (st,) = gather_routes(conf)

        assert (True, None, 0.6, sock, 1.0) == (
            st.probed,
            st.probe_error,
            st.server_deadline,
            st.socket,
            st.timeout,
        )
        assert st.text == script.read_text()
        if shutil.which("luac5.4"):
            assert ("5.4", 0) == (st.lua_version, st.luac_status)
        assert set() == codes(
            check_routes(
                make_config(spool), conf, [st], installed_script=lua_script(), serve_deadline=0.8
            )
        )

    def test_nothing_listening_and_broken_script(self, base: Path) -> None:
        """No server: probe error; a script with a syntax error: luac says so."""
        if not shutil.which("luac5.4"):
            pytest.skip("luac5.4 not installed (Debian: apt install lua5.4)")
        script = base / "broken.lua"
        script.write_text(lua_script() + "\nthis is not lua\n")
        conf = conf_of(LUA_24, script=str(script), socket=str(base / "none.sock"))
        (st,) = gather_routes(conf)

        assert (True, "cannot ask") == (st.probed, (st.probe_error or "")[:10])
        assert 0 != st.luac_status
        assert "syntax error" in st.luac_message

    def test_untrusted(self, base: Path, spool: Path) -> None:
        """A script others may write is an untrusted-file error, not read; a symlink to a trusted one is read."""
        (base / "real.lua").write_text(lua_script())
        (base / "real.lua").chmod(0o644)
        (base / "link.lua").symlink_to(base / "real.lua")
        (base / "open.lua").write_text(lua_script())
        (base / "open.lua").chmod(0o666)
        (linked,) = gather_routes(
            conf_of(LUA_24, script=str(base / "link.lua"), socket="/s"), probe=False
        )
        conf = conf_of(LUA_24, script=str(base / "open.lua"), socket="/s")
        (st,) = gather_routes(conf, probe=False)
        found = check_routes(
            make_config(spool), conf, [st], installed_script=lua_script(), serve_deadline=0.8
        )

        assert (lua_script(), False) == (linked.text, linked.probed)
        assert (None, None) == (st.text, st.file_error)
        assert [("untrusted-file", "error", str(base / "open.lua"))] == [
            (f.code, f.severity, f.subject) for f in found
        ]
        assert "writable by group or other" in found[0].message

    def test_unreadable(self, base: Path) -> None:
        """A missing script is not read; no doveconf: no routes."""
        states = gather_routes(
            conf_of(LUA_24, script=str(base / "none.lua"), socket="/s"), probe=False
        )

        assert (None, False) == (states[0].text, states[0].probed)
        assert "No such file" in (states[0].file_error or "")
        assert () == gather_routes(None)
        assert (
            "no file given"
            == gather_routes(
                conf_of(LUA_24.replace("  lua_file = SCRIPT\n", ""), socket="/s"), probe=False
            )[0].file_error
        )

    def test_no_luac_of_that_version(self, base: Path) -> None:
        """Dovecot linking a Lua whose luac is not installed: no program, nothing run."""
        from nsprov._check.gather import _luac

        assert (None, 0, "") == _luac(str(base / "x.lua"), "9.9")

    def test_lua_version(self, base: Path) -> None:
        """The liblua a library names; None when no library is there."""
        lib = base / "libdovecot-lua.so.0"
        lib.write_bytes(b"\x7fELF\0\0liblua5.3.so.0\0")

        assert ("5.3", None) == (
            dovecot_lua_version([str(base / "x"), str(lib)]),
            dovecot_lua_version([str(base / "x")]),
        )


class TestReport:
    """run_checks with a Lua route: the routes' findings, and the reply budget for 2.4."""

    def test_routes_and_budget(self, spool: Path) -> None:
        """A 2.4 config with a Lua route and a down socket: route-socket-down, the serve budget reported."""
        config = make_config(spool, {"dovecot": {"version": "2.4"}})
        conf = conf_of(LUA_24, script="/l", socket="/s")
        st = state(conf, lua_script(), probed=True, probe_error="no answer", **OK)
        world = World(
            config_path=CONFIG, config=config, doveconf=conf, dovecot_version="2.4", routes=(st,)
        )
        report = run_checks(world)

        assert ("route-socket-down", "warning") in report.codes()
        assert ("wiring-missing", "error") not in report.codes()

    def test_dict_with_deny(self, spool: Path) -> None:
        """A dict route and [deny] with no post-login: route-actions (error), not wiring-missing."""
        config = make_config(spool, {"deny": {"users": ["guest"]}})
        conf = conf_of(DICT_23, version="2.3", protocols="imap pop3", script="/d")
        st = state(conf, "uri = redis:path=/s:timeout_msecs=1800\n")
        world = World(
            config_path=CONFIG, config=config, doveconf=conf, dovecot_version="2.3", routes=(st,)
        )
        found = [
            (f.code, f.severity, f.subject)
            for f in run_checks(world).findings
            if f.code.startswith(("route", "wiring"))
        ]

        assert [
            ("route-actions", "error", "service imap"),
            ("route-actions", "error", "service pop3"),
        ] == found

    def test_serve_mode_for_24(self, spool: Path) -> None:
        """check_user computes the 2.4 budget (it was 2.3 only) and warns when a route is wired."""
        from nsprov._check.users import check_user
        from nsprov._reply import ReplyBudget

        from .support import ALICE

        config = make_config(spool, {"dovecot": {"version": "2.4"}}, prefix="Shared/{name}/")
        (spool / "box").mkdir()
        for sub in ("cur", "new", "tmp"):
            (spool / "box" / sub).mkdir()
        asked: list[str] = []

        def budget(cfg: Config, _user: object) -> ReplyBudget:
            asked.append(cfg.dialect)
            return ReplyBudget(fits=0, total=1, size=2, full_size=9000, budget=7680)

        report, found, _ = check_user(config, ALICE, budget=budget, serve_mode=True)

        assert ["2.4"] == asked
        assert report is not None
        assert report.serve is not None
        assert [("serve-budget", "warning")] == [(f.code, f.severity) for f in found]
