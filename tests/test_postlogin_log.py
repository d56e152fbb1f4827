"""Post-login's log lines: Dovecot's level marker only when stderr is Dovecot's log."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest

from nsprov import _postlogin
from nsprov._postlogin import (
    T_LOGIN,
    T_OK,
    Options,
    ask_serve,
    frame,
    log,
    log_login,
    main,
    serve_hint,
)
from nsprov._worker import run

from .test_postlogin import collect_frames

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

CODE = (
    "from nsprov._postlogin import log\n"
    "for level in ('debug', 'info', 'warning', 'error'):\n"
    "    log(f'a {level}', level)\n"
    "log('plain')\n"
)


def run_logging(env: dict[str, str], stderr: int | None = subprocess.PIPE) -> bytes:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", CODE], env=env, stderr=stderr, check=True, capture_output=False
    )
    return proc.stderr


def test_marked_under_script_login() -> None:
    """USERDB_KEYS set and stderr a pipe (Dovecot's log): byte 1, level + 1, a space."""
    err = run_logging({"USERDB_KEYS": "HOME "})

    assert [
        b"\x01\x01 nsprov: a debug",
        b"\x01\x02 nsprov: a info",
        b"\x01\x03 nsprov: a warning",
        b"\x01\x04 nsprov: a error",
        b"\x01\x04 nsprov: plain",
    ] == err.splitlines()


def test_plain_by_hand() -> None:
    """Without script-login's USERDB_KEYS, the lines are plain even into a pipe."""
    err = run_logging({})

    assert b"nsprov: a warning\n" in err
    assert b"\x01" not in err


def test_plain_into_a_file(tmp_path: Path) -> None:
    """stderr that is not a pipe (a terminal, a file) gets plain lines, USERDB_KEYS or not."""
    path = tmp_path / "err"
    with path.open("wb") as f:
        run_logging({"USERDB_KEYS": "HOME "}, stderr=f.fileno())

    assert b"\x01" not in path.read_bytes()
    assert b"nsprov: a info\n" in path.read_bytes()


def test_message_never_starts_a_marker(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A message's own control bytes are escaped, marker or not."""
    monkeypatch.setattr(_postlogin, "_TO_DOVECOT", [True])
    log("\x01\x02 forged", "debug")

    assert "\x01\x01 nsprov: \\x01\\x02 forged\n" == capfd.readouterr().err


def test_log_login(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """The login's line: user, served, skipped, whole milliseconds; at Info."""
    import time

    monkeypatch.setattr(_postlogin, "_TO_DOVECOT", [True])
    log_login("alice", b"3 1 lean", time.monotonic() - 0.25)

    err = capfd.readouterr().err
    assert err.startswith("\x01\x02 nsprov: user=alice served=3 skipped=1 ms=")
    assert err.endswith(" path=lean\n")
    assert 250 <= int(err.split("ms=", 1)[1].split(" ")[0]) < 5000
    log_login("bob", b"- -", time.monotonic())  # an older worker's payload: path unknown
    assert capfd.readouterr().err.endswith("served=- skipped=- ms=0 path=-\n")


@pytest.mark.parametrize(("setting", "expected"), [("", [b"- - full"]), ("log_logins = false", [])])
def test_worker_sends_the_login_line(tmp_path: Path, setting: str, expected: list[bytes]) -> None:
    """The worker asks for the info line unless [postlogin] log_logins = false."""
    cfg = tmp_path / "n.toml"
    cfg.write_text(f'[postlogin]\n{setting}\n[[field]]\nname = "x"\nvalue = "1"\n')
    opts = Options()
    opts.config = str(cfg)
    opts.protocol = "imap"

    frames = collect_frames(lambda fd: run(fd, opts, {"USER": "a"}))

    assert expected == [payload for tag, payload in frames if tag == T_LOGIN]


def test_parent_logs_the_line(capfd: pytest.CaptureFixture[str]) -> None:
    """main() logs the worker's counts with the whole time, then execs."""

    def worker(opts: Options, env: Mapping[str, str]) -> Callable[[int], None]:
        def work(fd: int) -> None:
            os.write(fd, frame(T_LOGIN, b"2 5 full") + frame(T_OK, b""))

        return work

    execs: list[str] = []
    main(
        ["--", "/bin/true"],
        environ={"USER": "bob"},
        execve=lambda path, argv, env: execs.append(path),
        worker=worker,
    )

    assert ["/bin/true"] == execs
    assert re.fullmatch(
        r"nsprov: user=bob served=2 skipped=5 ms=\d+ path=full\n", capfd.readouterr().err
    )


def test_log_logins_setting(tmp_path: Path) -> None:
    """[postlogin] log_logins defaults to true and must be a boolean."""
    from nsprov._config import load_config
    from nsprov.exceptions import ConfigError

    cfg = tmp_path / "n.toml"
    cfg.write_text('[[field]]\nname = "x"\nvalue = "1"\n')
    assert load_config(str(cfg)).log_logins
    cfg.write_text('[postlogin]\nlog_logins = false\n[[field]]\nname = "x"\nvalue = "1"\n')
    assert not load_config(str(cfg)).log_logins
    cfg.write_text('[postlogin]\nlog_logins = "no"\n[[field]]\nname = "x"\nvalue = "1"\n')
    with pytest.raises(ConfigError, match="log_logins"):
        load_config(str(cfg))


class TestServeHint:
    """A --serve probe that gets no answer warns, at most once a minute."""

    @pytest.fixture(name="hints")
    def _hints(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        hints = tmp_path / "hints"
        hints.mkdir(mode=0o700)
        monkeypatch.setattr(_postlogin, "HINT_DIR", str(hints))
        return hints

    def test_dead_socket_warns_once(self, hints: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """A socket nobody listens on: None (the login computes in-process) and one warning."""
        dead = str(hints.parent / "dead.sock")

        assert ask_serve(dead, "k", 0.1) is None
        assert ask_serve(dead, "k", 0.1) is None

        err = capfd.readouterr().err.splitlines()
        expected = (
            f"nsprov: nsprov serve at {dead} does not answer (No such file or directory): "
            "logins compute their namespaces in-process, slower; start the server "
            "(nsprov-serve.service) or drop --serve= from the script-login line "
            "(logged at most once a minute)"
        )
        assert [expected] == err

    def test_timeout_names_it(self, hints: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """A server that accepts but never answers: 'timed out'."""
        path = str(hints.parent / "mute.sock")
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path)
            server.listen()
            assert ask_serve(path, "k", 0.05) is None
        assert "does not answer (timed out)" in capfd.readouterr().err

    def test_rate_limit(self, hints: Path) -> None:
        """Again only after a minute; never in an untrusted directory."""
        e = ConnectionRefusedError(111, "Connection refused")
        assert serve_hint("/s", e, now=1000.0)
        assert not serve_hint("/s", e, now=1059.0)
        assert serve_hint("/s", e, now=1060.5)
        hints.chmod(0o755)
        assert not serve_hint("/s", e, now=5000.0)

    def test_own_marker(self, hints: Path) -> None:
        """The serve hint and the deadline hint do not silence each other."""
        e = ConnectionRefusedError(111, "Connection refused")
        assert serve_hint("/s", e, now=1000.0)
        assert _postlogin.deadline_hint(str(hints), now=1000.0)

    def test_no_hint_for_a_nil_answer(self, hints: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """A server that answers 'nothing for this login' is no failure: no warning."""
        path = str(hints.parent / "nil.sock")
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path)
            server.listen()

            def answer() -> None:
                conn, _ = server.accept()
                conn.recv(4096)
                conn.sendall(b"$-1\r\n")
                conn.close()

            thread = threading.Thread(target=answer)
            thread.start()
            assert ask_serve(path, "k", 2.0) is None
            thread.join()
        assert "" == capfd.readouterr().err
