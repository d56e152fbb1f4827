"""Tests for the ``nsprov serve`` command line, also as a process."""

from __future__ import annotations

import signal
import subprocess
from typing import TYPE_CHECKING

import attrs
import pytest

from nsprov._cli.serve import main, options_from_args, serve_parser
from nsprov._config import config_from_mapping
from nsprov._serve.options import ServeOptions

from ..serve.helpers import (  # noqa: F401 - the base and spool fixtures
    NSPROV,
    _base,
    _spool,
    lookup_nobody,
    wait_for,
)

if TYPE_CHECKING:
    from pathlib import Path


class TestMain:
    """``nsprov serve`` as a process: start, reload on SIGHUP, stop on SIGTERM."""

    def test_budget_option_checked(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A reply budget Dovecot would refuse is an error."""
        assert 1 == main(["--reply-budget=8192"])
        assert "8192" in capsys.readouterr().err

    def test_bad_config(self, base: Path) -> None:
        """An unreadable config at start is exit 1 with one log line."""
        proc = subprocess.run(
            [NSPROV, "serve", f"--config={base}/missing.toml", f"--socket={base}/s.sock"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )

        assert (1, "") == (proc.returncode, proc.stdout)
        assert "event=config-error" in proc.stderr

    def test_lifecycle(self, spool: Path, base: Path) -> None:
        """Serve, reload a good and a bad config on SIGHUP, exit 0 on SIGTERM and remove the socket."""
        conf = base / "nsprov.toml"
        conf.write_text(
            f'[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\n[namespace]\ncreate_dirs = false\n'
        )
        sock = base / "s.sock"
        log = base / "serve.log"
        with log.open("w") as err:
            proc = subprocess.Popen(
                [NSPROV, "serve", f"--config={conf}", f"--socket={sock}"], stderr=err
            )
        try:
            wait_for(lambda: "event=start" in log.read_text())
            first = lookup_nobody(sock)
            conf.write_text(conf.read_text().replace("Shared/{name}/", "Public/{name}/"))
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "event=reload " in log.read_text())
            second = lookup_nobody(sock)
            conf.write_text("[[spool]\n")
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "event=reload-failed" in log.read_text())
            third = lookup_nobody(sock)
            proc.send_signal(signal.SIGTERM)
            status = proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

        assert {"Shared/sales/", "Shared/Weird Name/"} == first
        assert {"Public/sales/", "Public/Weird Name/"} == second == third
        assert (0, False) == (status, sock.exists())
        assert "event=stop" in log.read_text()


def test_options_roundtrip() -> None:
    """Every option reaches ServeOptions."""

    args = serve_parser().parse_args(
        [
            "--config=/c",
            "--socket=/s",
            "--socket-mode=0660",
            "--socket-group=mail",
            "--deadline=0.5",
            "--cache-ttl=0",
            "--cache-size=5",
            "--reply-budget=4000",
            "--max-connections=3",
            "--idle-timeout=2.5",
            "--max-line=99",
            "--workers=2",
            "--log-level=debug",
        ]
    )

    assert ServeOptions(
        config_path="/c",
        socket_path="/s",
        socket_mode=0o660,
        socket_group="mail",
        deadline=0.5,
        cache_ttl=0.0,
        cache_size=5,
        reply_budget=4000,
        max_connections=3,
        idle_timeout=2.5,
        max_line=99,
        workers=2,
        log_level="debug",
    ) == attrs.evolve(options_from_args(args))


def test_idle_timeout_from_config() -> None:
    """[serve] idle_timeout is the default of --idle-timeout; it must be > 0."""
    from nsprov.exceptions import ConfigError

    config = config_from_mapping({"spool": [{"path": "/s"}], "serve": {"idle_timeout": 1.5}})
    args = serve_parser().parse_args([])

    assert 1.5 == options_from_args(args, config.serve).idle_timeout
    assert 5.0 == options_from_args(args).idle_timeout
    with pytest.raises(ConfigError, match="idle_timeout"):
        config_from_mapping({"spool": [{"path": "/s"}], "serve": {"idle_timeout": 0}})
