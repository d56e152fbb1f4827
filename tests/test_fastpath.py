"""``nsprov post-login --serve``: namespaces from a running ``nsprov serve``, no worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsprov import _postlogin as nsprov_postlogin
from nsprov._config import config_from_mapping
from nsprov._env import from_environ
from nsprov._postlogin import (
    ask_serve,
    fallback_argv,
    main,
    merge_fields,
    parse_json_object,
    serve_key,
)

from .test_serve import Identities, _base, make_config, running  # noqa: F401 - _base is the "base" fixture

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from nsprov._postlogin import Options

ENV = {"USER": "other", "HOME": "/home/other", "USERDB_KEYS": "UID GID HOME ", "UID": "70002"}


class Exec:
    """A fake execve that records its call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict[str, str]]] = []

    def __call__(self, path: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.calls.append((path, list(argv), dict(env)))


def no_worker(_opts: Options, _env: Mapping[str, str]) -> Callable[[int], None]:
    """A worker that must not be needed: it fails, so the test sees the fallback."""

    def work(_fd: int) -> None:
        raise RuntimeError("worker used")

    return work


class TestParseJson:
    """The json-free parser of the server's replies."""

    @given(st.dictionaries(st.text(), st.text()), st.booleans())
    def test_agrees_with_json(self, data: dict[str, str], ascii_only: bool) -> None:
        """Any flat object of strings parses as json.loads parses it."""
        text = json.dumps(data, ensure_ascii=ascii_only)

        assert data == parse_json_object(text.encode("utf-8", "surrogatepass"))

    @pytest.mark.parametrize(
        "text",
        [
            b"",
            b"[]",
            b'{"a":1}',
            b'{"a":"b"',
            b'{"a" "b"}',
            b'{"a":"\\x"}',
            b'{"a":"b"} x',
            b'{"a":"\x01"}',
        ],
    )
    def test_rejects(self, text: bytes) -> None:
        """Anything but a flat object of strings is refused (the caller falls back)."""
        with pytest.raises(ValueError):
            parse_json_object(text)


class TestMergeFields:
    """Server fields become post-login variables."""

    def test_merge(self) -> None:
        """Keys are uppercased and listed once; an existing NAMESPACE is extended."""
        env = {"NAMESPACE": "work", "USERDB_KEYS": "HOME NAMESPACE"}

        out = merge_fields(env, {"namespace": "s-a work", "namespace/s-a/prefix": "Shared/a/"})

        assert "work s-a" == out["NAMESPACE"]
        assert "Shared/a/" == out["NAMESPACE/S-A/PREFIX"]
        assert "HOME NAMESPACE NAMESPACE/S-A/PREFIX " == out["USERDB_KEYS"]

    def test_nothing(self) -> None:
        """No fields: the environment as it was."""
        assert ENV == merge_fields(ENV, {})

    def test_key(self) -> None:
        """The key carries protocol, user and home."""
        assert "postlogin/imap/other//home/other" == serve_key("imap", ENV)
        assert "postlogin/-/x/" == serve_key(None, {"USER": "x"})


@pytest.fixture(name="box")
def _box(base: Path) -> Path:
    spool = base / "fast"
    spool.mkdir(mode=0o755)
    for name in ("sales", "Weird Name"):
        for sub in ("cur", "new", "tmp"):
            (spool / name / sub).mkdir(parents=True)
            (spool / name / sub).chmod(0o755)
        (spool / name).chmod(0o755)
    return spool


class TestFastPath:
    """post-login asks the server first, and computes in-process when it cannot answer."""

    def test_answer_from_server(self, box: Path, base: Path) -> None:
        """With a running server and a namespaces-only config, the worker is never started."""
        ex = Exec()
        with running(make_config(box), base) as (server, _):
            main(
                [f"--serve={server.options.socket_path}", "--protocol=imap", "/next"],
                environ=dict(ENV),
                execve=ex,
                worker=no_worker,
            )

        [(_, _, env)] = ex.calls
        assert ["Shared/Weird Name/", "Shared/sales/"] == [ns.prefix for ns in from_environ(env)]
        assert env["USERDB_KEYS"].startswith("UID GID HOME NAMESPACE ")

    def test_other_actions_fall_back(
        self, box: Path, base: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A config with other actions for the protocol: the server declines, the worker runs."""
        config = config_from_mapping(
            {
                "spool": [{"path": str(box)}],
                "deny": {"users": ["nobody-x"]},
                "namespace": {"create_dirs": False},
            }
        )
        ex = Exec()
        with running(config, base, resolver=None) as (server, _):
            main(
                [f"--serve={server.options.socket_path}", "--protocol=imap", "/next"],
                environ=dict(ENV),
                execve=ex,
                worker=no_worker,
            )

        assert [("/next", ["/next"], ENV)] == ex.calls
        assert "worker failed" in capfd.readouterr().err

    def test_server_down(self, base: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """No server: the worker runs (here a failing one, so the environment stays as it was)."""
        ex = Exec()

        main([f"--serve={base}/none.sock", "/next"], environ=dict(ENV), execve=ex, worker=no_worker)

        assert [("/next", ["/next"], ENV)] == ex.calls
        assert "worker failed" in capfd.readouterr().err

    def test_ask_serve_unknown_user(self, box: Path, base: Path) -> None:
        """A user the server does not know is not found: None."""
        with running(make_config(box), base) as (server, _):
            assert ask_serve(server.options.socket_path, "postlogin/imap/nosuch/", 2) is None

    def test_silent_server(self, base: Path) -> None:
        """A server that accepts and never answers costs at most the timeout."""
        import socket
        import time

        path = str(base / "silent.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        started = time.monotonic()
        try:
            assert ask_serve(path, "postlogin/imap/x/", 0.2) is None
        finally:
            listener.close()

        assert time.monotonic() - started < 1.5


def test_identities_exported() -> None:
    """The serve test helpers are shared."""
    assert "other" in Identities().users


# --- python -I -S .../nsprov/_fast.py: the fast path without site -----------------------------

FAST = str(Path(nsprov_postlogin.__file__).with_name("_fast.py"))


class TestStandalone:
    """The fast path run as a script: the server's answer, or the full step re-exec'd."""

    def test_fallback_argv(self) -> None:
        """--serve and --serve-timeout go (either spelling); every other option and the chain stay."""
        argv = [
            "--serve=/s",
            "--config",
            "/c.toml",
            "--serve",
            "/t",
            "--serve-timeout=0.2",
            "--protocol=imap",
            "--deadline",
            "3",
            "--",
            "/next",
            "--serve=/x",
        ]
        assert [
            "/py",
            "-I",
            "-m",
            "nsprov",
            "post-login",
            "--config",
            "/c.toml",
            "--protocol=imap",
            "--deadline",
            "3",
            "--",
            "/next",
            "--serve=/x",
        ] == fallback_argv("/py", argv)

    def test_answer_from_server(self, box: Path, base: Path) -> None:
        """Standalone, a served login execs the chain with the namespaces, as the console script does."""
        ex = Exec()
        with running(make_config(box), base) as (server, _):
            main(
                [f"--serve={server.options.socket_path}", "--protocol=imap", "/next"],
                environ=dict(ENV),
                execve=ex,
                worker=no_worker,
                standalone=True,
            )

        [(path, _, env)] = ex.calls
        assert "/next" == path
        assert 2 == len(from_environ(env))

    def test_no_answer_reexecs_full_step(self, base: Path) -> None:
        """No server: the full step with the same interpreter, --serve dropped, env untouched."""
        ex = Exec()

        main(
            [f"--serve={base}/none.sock", "--protocol=pop3", "/next"],
            environ=dict(ENV),
            execve=ex,
            worker=no_worker,
            standalone=True,
        )

        (path, argv, env), _ = ex.calls  # a real exec does not return: no second call then
        assert sys.executable == path
        assert [
            sys.executable,
            "-I",
            "-m",
            "nsprov",
            "post-login",
            "--protocol=pop3",
            "/next",
        ] == argv
        assert ENV == env

    def test_bad_values_logged_once(self, base: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """Bad values are logged by the fast path and left out of the full step, which would log them again."""
        ex = Exec()

        main(
            [f"--serve={base}/none.sock", "--deadline=abc", "--serve-timeout=9", "/next"],
            environ=dict(ENV),
            execve=ex,
            worker=no_worker,
            standalone=True,
        )

        (_, argv, _), _ = ex.calls
        assert [sys.executable, "-I", "-m", "nsprov", "post-login", "/next"] == argv
        assert [
            "nsprov: ignoring a bad option value: --deadline must be a number, got 'abc'",
            "nsprov: ignoring a bad option value: --serve-timeout must be > 0 and <= 5 seconds, got '9'",
        ] == capfd.readouterr().err.splitlines()[:2]

    def test_reexec_fails(self, base: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """If even that exec fails, the chain goes on with the environment untouched."""
        calls: list[str] = []

        def execve(path: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
            calls.append(path)
            if path != "/next":
                raise OSError(2, "No such file or directory")
            assert ENV == dict(env)

        main(
            [f"--serve={base}/none.sock", "/next"],
            environ=dict(ENV),
            execve=execve,
            standalone=True,
        )

        assert [sys.executable, "/next"] == calls
        err = capfd.readouterr().err
        assert "failed: No such file or directory" in err
        assert "continuing with the environment untouched" in err

    def test_script(self, box: Path, base: Path) -> None:
        """``python -I -S _fast.py`` for real: no site, no package, no select: _postlogin alone."""
        probe = base / "probe.py"
        probe.write_text(
            "import os, sys\n"
            "print(os.environ.get('NAMESPACE', ''))\n"
            "print(' '.join(sorted(sys.modules)))\n"
        )
        with running(make_config(box), base) as (server, _):
            out = subprocess.run(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-X",
                    "importtime",
                    FAST,
                    f"--serve={server.options.socket_path}",
                    "--protocol=imap",
                    sys.executable,
                    "-I",
                    "-S",
                    str(probe),
                ],
                env=dict(ENV),
                capture_output=True,
                text=True,
                check=True,
            )
        namespaces = out.stdout.splitlines()[0].split()
        imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()}
        assert 2 == len(namespaces)
        assert "_postlogin" in imported
        assert set() == {"site", "nsprov", "attrs", "typing", "re", "select", "errno"} & imported

    def test_script_fallback(self, box: Path, base: Path) -> None:
        """``_fast.py`` with no server: the full step runs (with site) and exports the namespaces."""
        config = base / "fast.toml"
        config.write_text(f'[[spool]]\npath = "{box}"\n[namespace]\ncreate_dirs = false\n')
        probe = base / "probe.py"
        probe.write_text("import os\nprint(os.environ.get('NAMESPACE', ''))\n")
        out = subprocess.run(
            [
                sys.executable,
                "-I",
                "-S",
                FAST,
                f"--serve={base}/none.sock",
                f"--config={config}",
                "--protocol=imap",
                sys.executable,
                "-I",
                "-S",
                str(probe),
            ],
            env={**ENV, "GID": "70002"},
            capture_output=True,
            text=True,
            check=True,
        )
        assert 2 == len(out.stdout.split()), out.stderr

    def test_reexec_fails_on_error_deny(
        self, base: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """With --on-error=deny, a failed re-exec refuses the login instead of going on."""
        calls: list[str] = []

        def execve(path: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
            calls.append(path)
            raise OSError(2, "No such file or directory")

        status = main(
            [f"--serve={base}/none.sock", "--on-error=deny", "/next"],
            environ=dict(ENV),
            execve=execve,
            standalone=True,
        )

        assert 1 == status
        assert [sys.executable] == calls
        assert "denying the login (on_error=deny)" in capfd.readouterr().err
