"""Tests for the Dovecot configuration ``nsprov serve --print-dovecot-config`` prints."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from nsprov._cli.serve import main, serve_parser
from nsprov._serve.wiring import dovecot_config, dovecot_dict_file, dovecot_userdb_conf

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
            (["--dialect=2.4"], "Dovecot 2.4 has no userdb dict driver"),
            (["--socket=/a:b"], "cannot contain one"),
        ],
    )
    def test_refused(
        self, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """What cannot work is refused with the reason."""
        assert 1 == main(["--print-dovecot-config", *args])
        assert message in capsys.readouterr().err

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
