from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from nsprov._hook import run_hook

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    import nsprov

ENV = {"USER": "alice", "IP": "192.0.2.1", "USERDB_KEYS": "HOME ", "HOME": "/h"}


class Exec:
    """A fake execve that records its call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict[str, str]]] = []

    def __call__(self, path: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.calls.append((path, list(argv), dict(env)))


class TestRunHook:
    """nsprov.run_hook: a custom post-login step with nsprov's guarantees."""

    def test_fields_and_exec(self, capfd: pytest.CaptureFixture[str]) -> None:
        """Fields set by the hook are exported and the chain exec'ed."""
        ex = Exec()

        def hook(login: nsprov.Login) -> None:
            login.set_field("quota_rule", f"*:storage=1G:{login.user}")
            login.alert("hi")

        with pytest.raises(SystemExit):
            run_hook(hook, ["--protocol=imap", "/next", "a"], environ=ENV, execve=ex)

        [(path, argv, env)] = ex.calls
        assert ("/next", ["/next", "a"]) == (path, argv)
        assert "*:storage=1G:alice" == env["QUOTA_RULE"]
        assert "HOME QUOTA_RULE " == env["USERDB_KEYS"]
        assert "* OK [ALERT] hi\r\n" == capfd.readouterr().out

    def test_exception_fails_open(self, capfd: pytest.CaptureFixture[str]) -> None:
        """A hook that raises: one log line, the chain exec'ed with the environment untouched."""
        ex = Exec()

        def hook(login: nsprov.Login) -> None:
            login.set_field("x", "1")
            raise RuntimeError("bug")

        with pytest.raises(SystemExit):
            run_hook(hook, ["/next"], environ=ENV, execve=ex)

        assert [("/next", ["/next"], ENV)] == ex.calls
        assert "internal error: RuntimeError: bug" in capfd.readouterr().err

    @pytest.mark.parametrize(
        ("protocol", "line"),
        [("imap", "* BYE [ALERT] nope\r\n"), ("pop3", "-ERR [SYS/PERM] nope\r\n")],
    )
    def test_deny(self, protocol: str, line: str, capfd: pytest.CaptureFixture[str]) -> None:
        """login.deny writes the protocol's line and exits without exec."""
        ex = Exec()

        def hook(login: nsprov.Login) -> None:
            login.deny("nope")

        with pytest.raises(SystemExit) as info:
            run_hook(hook, [f"--protocol={protocol}", "/next"], environ=ENV, execve=ex)

        assert (0, []) == (info.value.code, ex.calls)
        assert line == capfd.readouterr().out

    def test_add_namespaces_with_config(self, tmp_path: Path) -> None:
        """--config loads the configuration for the hook's built-in actions."""
        cfg = tmp_path / "n.toml"
        cfg.write_text('[[field]]\nname = "x"\nvalue = "{user}"\n')
        ex = Exec()

        with pytest.raises(SystemExit):
            run_hook(
                lambda login: login.run("fields"),
                [f"--config={cfg}", "/next"],
                environ=ENV,
                execve=ex,
            )

        assert "alice" == ex.calls[0][2]["X"]
