"""``nsprov post-login --print-dovecot-config``: the wiring of this installation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nsprov._cli import main
from nsprov._cli.postlogin import dovecot_config, installed_nsprov, separator_block
from nsprov._main import _printing
from nsprov.exceptions import NsprovError

NSPROV = str(Path(sys.executable).with_name("nsprov"))


def test_prints_this_installation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Both protocols' blocks, with the absolute path of the nsprov beside this Python."""
    config = tmp_path / "nsprov.toml"
    config.write_text('[[spool]]\npath = "/srv/s"\nprefix = "S/{name}/"\n')

    assert 0 == main(["post-login", "--print-dovecot-config", f"--config={config}"])

    out = capsys.readouterr().out
    for protocol in ("imap", "pop3"):
        assert f"  executable = {protocol} {protocol}-postlogin\n" in out
        assert (
            f"  executable = script-login {NSPROV} post-login --config={config} "
            f"--protocol={protocol}\n" in out
        )
        assert f"  unix_listener {protocol}-postlogin {{\n" in out
    assert "namespace inbox {\n  separator = /\n}\n" in out
    assert "examples/" not in out


def test_one_protocol_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    """--protocol=pop3 prints pop3 only; --serve and --on-error go onto the line."""
    argv = ["post-login", "--print-dovecot-config", "--protocol=pop3", "--dialect=2.4"]
    argv += ["--config=/etc/n.toml", "--serve=/run/nsprov/s.sock", "--on-error=deny"]

    assert 0 == main(argv)

    out = capsys.readouterr().out
    assert "service imap" not in out
    assert (
        f"script-login {NSPROV} post-login --config=/etc/n.toml --serve=/run/nsprov/s.sock "
        "--on-error=deny --protocol=pop3\n" in out
    )
    assert '[dovecot] version = "2.4"' in out


def test_dialect_from_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --dialect, the config's [dovecot] version; its separator goes into the snippet."""
    config = tmp_path / "nsprov.toml"
    config.write_text(
        '[dovecot]\nversion = "2.4"\n[[spool]]\npath = "/srv/s"\nprefix = "S.{name}."\n'
        'separator = "."\n'
    )

    assert 0 == main(["post-login", "--print-dovecot-config", f"--config={config}"])

    out = capsys.readouterr().out
    assert "Dovecot 2.4" in out
    assert "namespace inbox" not in out  # '.' is Debian's default already


def test_refuses_spaces(capsys: pytest.CaptureFixture[str]) -> None:
    """A path with a space cannot be on an executable line: an error, not a broken config."""
    assert 1 == main(["post-login", "--print-dovecot-config", "--config=/etc/my dir/n.toml"])
    assert "splits an executable line on spaces" in capsys.readouterr().err
    with pytest.raises(NsprovError, match="absolute"):
        dovecot_config(dialect="2.3", nsprov="nsprov", config="/etc/n.toml")


def test_separator_block() -> None:
    """The snippet names the separator, and is empty for Dovecot's '.'."""
    assert "separator = /" in separator_block("/")
    assert "" == separator_block(".")


def test_installed_nsprov(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher beside the interpreter, else the one on PATH, else a clear error."""
    assert NSPROV == installed_nsprov()
    lone = tmp_path / "bin" / "python"
    lone.parent.mkdir()
    lone.touch()
    monkeypatch.setenv("PATH", str(Path(NSPROV).parent))
    assert NSPROV == installed_nsprov(str(lone))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NsprovError, match="--nsprov=PATH"):
        installed_nsprov(str(lone))


def test_hot_path_is_not_intercepted() -> None:
    """Only post-login's own options are looked at: a login never takes the printer's path."""
    assert _printing(["post-login", "--print-dovecot-config"])
    assert not _printing(["post-login", "--config=/x", "/usr/lib/dovecot/script-login"])
    assert not _printing(["post-login", "/bin/next", "--print-dovecot-config"])
    assert not _printing(["post-login", "--", "--print-dovecot-config"])


def test_console_script(tmp_path: Path) -> None:
    """The installed command prints it (through the entry point's interception)."""
    proc = subprocess.run(
        [NSPROV, "post-login", "--print-dovecot-config", "--protocol=imap"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == proc.returncode, proc.stderr
    assert f"executable = script-login {NSPROV} post-login" in proc.stdout
