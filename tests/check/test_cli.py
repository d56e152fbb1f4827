"""The nsprov check command: arguments, doveconf and dovecot programs, exit status."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from nsprov._cli import main as cli_main
from nsprov._cli.check import main

from .support import DOVECONF_OK, line, maildir, script


class TestMain:
    """The command: arguments, doveconf and dovecot programs, exit status."""

    @pytest.fixture(autouse=True)
    def _state(self, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(
            "nsprov._check.marks.DEFAULT_STATE_FILE", str(base / "check-state.json")
        )

    @pytest.fixture(name="setup")
    def _setup(self, base: Path, spool: Path) -> dict[str, str]:
        maildir(spool / "sales")
        cfg = base / "nsprov.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n')
        nsprov = script(base / "nsprov", "exit 0\n")
        text = DOVECONF_OK + line("imap", f"{nsprov} post-login --config={cfg} --protocol=imap")
        (base / "doveconf.out").write_text(text)
        return {
            "config": str(cfg),
            "doveconf": script(base / "doveconf", f"cat {base}/doveconf.out\n"),
            "dovecot": script(base / "dovecot", 'echo "2.3.19.1 (9b53102964)"\n'),
            "base": str(base),
        }

    def args(self, setup: dict[str, str], *extra: str) -> list[str]:
        return [
            f"--config={setup['config']}",
            f"--doveconf={setup['doveconf']}",
            f"--dovecot={setup['dovecot']}",
            *extra,
        ]

    def test_clean(self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        """A good setup exits 0; without --user the users come from doveconf's uid range."""
        status = main(self.args(setup, "--format=json"))

        doc = json.loads(capsys.readouterr().out)
        assert 0 == status
        assert [] == [f for f in doc["findings"] if f["severity"] != "info"]
        assert ["nobody"] == [u["user"] for u in doc["users"]]
        assert ("2.3", True) == (doc["dovecot"]["version"], doc["dovecot"]["doveconf"])

    def test_table_and_dispatch(
        self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """nsprov check is dispatched from the CLI and prints a table without colour off a TTY."""
        status = cli_main(["check", *self.args(setup, "--user=nobody")])

        out = capsys.readouterr().out
        assert 0 == status
        assert "\033[" not in out
        assert out.startswith(f"nsprov check: {setup['config']}\n")

    def test_errors_exit_1(self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown user is an error, and errors exit 1."""
        status = main(self.args(setup, "--user=nsprov-no-such-user", "--format=json"))

        doc = json.loads(capsys.readouterr().out)
        assert 1 == status
        assert [("user-unknown", "error")] == [
            (f["code"], f["severity"]) for f in doc["findings"] if f["severity"] != "info"
        ]

    @pytest.mark.parametrize(
        "bad",
        [
            ["--format=xml"],
            ["--dovecot-version=2"],
            ["--max-users=0"],
            ["--max-remove-fraction=2"],
            ["--max-remove-fraction=x"],
            ["--max-users=x"],
            ["--deadline=0"],
            ["--deadline=x"],
        ],
    )
    def test_usage_exit_2(self, bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        """Usage errors exit 2."""
        with pytest.raises(SystemExit) as info:
            main(bad)

        assert 2 == info.value.code
        assert "usage: nsprov check" in capsys.readouterr().err

    def test_no_doveconf(self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        """Without doveconf the Dovecot checks are skipped with one note."""
        argv = [f"--config={setup['config']}", f"--doveconf={setup['base']}/none"]

        status = main([*argv, "--dovecot-version=2.3", "--user=nobody", "--format=json"])

        doc = json.loads(capsys.readouterr().out)
        assert 0 == status
        assert [("doveconf-unavailable", "info")] == [
            (f["code"], f["severity"]) for f in doc["findings"]
        ]
        assert (False, "--dovecot-version") == (
            doc["dovecot"]["doveconf"],
            doc["dovecot"]["source"],
        )

    def test_doveconf_fails(
        self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A failing doveconf is an error quoting its message."""
        broken = script(Path(setup["base"]) / "broken", "echo 'Fatal: bad line' >&2\nexit 89\n")

        status = main([*self.args(setup), f"--doveconf={broken}", "--user=nobody", "--format=json"])

        doc = json.loads(capsys.readouterr().out)
        assert 1 == status
        assert ("doveconf-failed", True) == (
            doc["findings"][0]["code"],
            "Fatal: bad line" in doc["findings"][0]["message"],
        )

    @pytest.mark.parametrize(
        ("extra", "installed", "expected"),
        [
            (["--doveconf={doveconf}"], None, ("2.3", "doveconf")),
            (
                ["--doveconf={base}/none", "--dovecot={dovecot}"],
                None,
                ("2.3", "{dovecot} --version"),
            ),
            (
                ["--doveconf={base}/none", "--dovecot={base}/silent"],
                "2.4",
                ("2.4", "/usr/lib/dovecot"),
            ),
            (["--doveconf={base}/none", "--dovecot={base}/none"], None, (None, None)),
        ],
    )
    def test_version_sources(
        self,
        setup: dict[str, str],
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        extra: list[str],
        installed: str | None,
        expected: tuple[str | None, str | None],
    ) -> None:
        """Version sources: a given doveconf's header, dovecot --version, then libexecdir."""
        monkeypatch.setattr("nsprov._worker.installed_version", lambda _chain: installed)
        script(Path(setup["base"]) / "silent", "exit 1\n")
        argv = [e.format(**setup) for e in extra]

        main([f"--config={setup['config']}", "--user=nobody", "--format=json", *argv])

        doc = json.loads(capsys.readouterr().out)
        wanted = tuple(None if e is None else e.format(**setup) for e in expected)
        assert wanted == (doc["dovecot"]["version"], doc["dovecot"]["source"])

    def test_bad_config(self, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid configuration is reported and exits 1."""
        cfg = base / "bad.toml"
        cfg.write_text('[[spool]]\npath = "/x"\nbogus = 1\n')

        status = main([f"--config={cfg}", f"--doveconf={base}/none", "--dovecot-version=2.3"])

        out = capsys.readouterr().out
        assert 1 == status
        assert "config-error  spool[1].bogus" in out

    def codes_of(self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> list[Any]:
        status = main([*self.args(setup), "--user=nobody", "--format=json"])
        doc = json.loads(capsys.readouterr().out)
        return [status, *((f["code"], f["subject"], f["message"]) for f in doc["findings"])]

    def test_untrusted_config(
        self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A 0666 config is one untrusted-file error naming it and the rule (before: not reported)."""
        cfg = setup["config"]
        Path(cfg).chmod(0o666)

        status, *found = self.codes_of(setup, capsys)

        assert 1 == status
        [(code, subject, message)] = [f for f in found if f[0] != "acl-plugin-setting"]
        assert ("untrusted-file", cfg) == (code, subject)
        assert message.startswith(f"{cfg}: config file not trusted: {cfg} is writable by group")
        assert "nsprov uses a file only if" in message

    def test_fifo_config(self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        """A FIFO config is reported at once (before: check blocked for ever reading it)."""
        cfg = Path(setup["config"])
        cfg.unlink()
        os.mkfifo(cfg, 0o600)

        status, *found = self.codes_of(setup, capsys)

        assert 1 == status
        assert [("untrusted-file", str(cfg))] == [(c, s) for c, s, _ in found]
        assert "is not a regular file (a FIFO)" in found[0][2]

    def test_untrusted_ignore_file(
        self, setup: dict[str, str], spool: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A spool's ignore file others may write is an untrusted-file error (it is not used)."""
        ignore = spool / ".nsprovignore"
        ignore.write_text("*\n")
        ignore.chmod(0o666)

        status, *found = self.codes_of(setup, capsys)

        assert 1 == status
        [(code, subject, message)] = found
        assert ("untrusted-file", str(ignore)) == (code, subject)
        assert message.startswith(f"spool {spool}: ignore file not used: {ignore}: ignore file")

    def test_acl_plugin_flag(
        self, setup: dict[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The acl_plugin flag is read from the file as written."""
        cfg = Path(setup["config"])
        cfg.write_text(cfg.read_text() + "[dovecot]\nacl_plugin = true\n")

        main([*self.args(setup), "--user=nobody", "--format=json"])

        doc = json.loads(capsys.readouterr().out)
        assert [("acl-plugin-setting", "info")] == [
            (f["code"], f["severity"]) for f in doc["findings"]
        ]
