"""Tests for the Dovecot configuration ``nsprov serve --print-dovecot-config`` prints."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from nsprov._cli.serve import main, serve_parser
from nsprov._serve.wiring import (
    DEFAULT_LUA_FILE,
    client_timeout,
    dovecot_config,
    dovecot_dict_file,
    dovecot_userdb_conf,
    lua_defaults_block,
    lua_script,
    lua_userdb_conf,
)

from .helpers import (
    EXAMPLES,
    NSPROV,
)


class TestDovecotConfig:
    """--print-dovecot-config and the shipped examples."""

    def test_examples_match(self) -> None:
        """The shipped files are what the defaults print."""
        assert (dovecot_userdb_conf(), dovecot_dict_file()) == (
            (EXAMPLES / "dovecot-2.3-userdb-dict.conf").read_text(),
            (EXAMPLES / "nsprov-userdb.conf.ext").read_text(),
        )

    def test_print(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The printed config holds both files and follows the options."""
        status = main(
            [
                "--print-dovecot-config",
                "--socket=/run/x.sock",
                "--deadline=2",
                "--dict-file=/etc/d.ext",
            ]
        )
        out = capsys.readouterr().out

        assert 0 == status
        assert out == dovecot_config(socket_path="/run/x.sock", deadline=2, dict_file="/etc/d.ext")
        assert "uri = redis:path=/run/x.sock:timeout_msecs=3000\n" in out
        assert "args = /etc/d.ext\n" in out

    def test_proxy(self) -> None:
        """The proxy client's URI."""
        assert "uri = proxy:/s:nsprov\n" in dovecot_dict_file(socket_path="/s", client="proxy")

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--dialect=2.4", "--client=redis"], "Dovecot 2.4 has no userdb dict driver"),
            (["--dialect=2.4", "--client=proxy"], "use --client=lua on 2.4"),
            (["--socket=/a:b"], "cannot contain one"),
            (["--client=lua", "--socket=run/x.sock"], "absolute socket path"),
        ],
    )
    def test_refused(
        self, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """What cannot work is refused with the reason."""
        assert 1 == main(["--print-dovecot-config", *args])
        assert message in capsys.readouterr().err

    def test_lua_examples_match(self) -> None:
        """The shipped Lua userdb blocks are what the defaults print, for each version."""
        assert [lua_userdb_conf(dialect=d) for d in ("2.3", "2.4")] == [
            (EXAMPLES / f"dovecot-{d}-userdb-lua.conf").read_text() for d in ("2.3", "2.4")
        ]

    @pytest.mark.parametrize("args", [["--dialect=2.4"], ["--dialect=2.4", "--client=lua"]])
    def test_lua_24(self, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        """--dialect=2.4 prints the Lua route: one userdb lua block after the first, then the script."""
        assert 0 == main(["--print-dovecot-config", "--socket=/run/x.sock", *args])
        out = capsys.readouterr().out
        conf, script = out.split(f"# ---- {DEFAULT_LUA_FILE} ----\n")

        assert conf.startswith("# ---- dovecot.conf or conf.d/auth-system.conf.ext ----\n")
        assert conf.index("userdb passwd {") < conf.index("userdb lua {")
        assert 1 == conf.count("userdb lua {")
        assert "  lua_file = /etc/dovecot/nsprov-userdb.lua\n  use_worker = yes\n" in conf
        assert "    socket = /run/x.sock\n    timeout = 1\n    max_reply = 7680\n" in conf
        assert "driver = dict" not in conf
        assert 'socket = "/run/x.sock",' in lua_defaults_block(script)  # type: ignore[operator]
        assert lua_defaults_block(script) is not None
        assert script.replace(lua_defaults_block(script) or "", "") == lua_script().replace(
            lua_defaults_block(lua_script()) or "", ""
        )

    def test_lua_23(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--client=lua on 2.3: driver = lua with blocking=yes cache_key=, settings in the script's DEFAULTS."""
        assert 0 == main(
            ["--print-dovecot-config", "--client=lua", "--lua-file=/srv/l.lua", "--deadline=2"]
        )
        out = capsys.readouterr().out
        conf, script = out.split("# ---- /srv/l.lua ----\n")

        assert "  driver = lua\n  args = file=/srv/l.lua blocking=yes cache_key=\n" in conf
        assert "lua_settings" not in conf
        assert "  timeout = 2.2,\n" in (lua_defaults_block(script) or "")
        assert 'local BUILTIN = { socket = "/run/nsprov/userdb.sock", timeout = 1,' in script

    def test_lua_script_quotes_socket(self) -> None:
        """A socket path with a quote or a backslash stays one Lua string."""
        out = dovecot_config(client="lua", socket_path='/run/a"b\\c.sock')
        assert 'socket = "/run/a\\"b\\\\c.sock",' in out

    def test_timeouts_nest(self) -> None:
        """Every client waits longer than serve's deadline, for the default and a longer one."""
        from nsprov._serve.options import DEFAULT_DEADLINE

        for deadline in (DEFAULT_DEADLINE, 0.1, 1.5, 5):
            assert all(client_timeout(c, deadline) > deadline for c in ("lua", "redis", "proxy"))
        assert (1.0, 1.8) == (client_timeout("lua"), client_timeout("redis"))

    def test_unit_file(self) -> None:
        """The systemd unit's ExecStart parses, and systemd-analyze accepts the unit."""
        unit = (EXAMPLES / "nsprov-serve.service").read_text()
        (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
        argv = exec_start.removeprefix("ExecStart=").split()
        args = serve_parser().parse_args(argv[2:])

        assert (["/usr/local/bin/nsprov", "serve"], "/run/nsprov/userdb.sock") == (
            argv[:2],
            args.socket,
        )
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "nsprov-serve.service")
            path.write_text(unit.replace("/usr/local/bin/nsprov", NSPROV))
            proc = subprocess.run(
                [analyze, "verify", str(path)],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
        assert (0, "") == (proc.returncode, proc.stderr)
