from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nsprov._login as login_module
from nsprov import _postlogin as pl
from nsprov._main import entrypoint
from nsprov._postlogin import (
    T_CLIENT,
    T_DEADLINE,
    T_DENY,
    T_ENV,
    T_FAIL,
    T_LOGIN,
    T_OK,
    T_POLICY,
    Options,
    UsageError,
    escape,
    frame,
    log,
    main,
    original_environ,
    parse_args,
    run_worker,
    write_client,
)
from nsprov._worker import installed_version, run, run_hook, version_signs

from .strategies import HOSTILE

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from nsprov._login import Login

NEXT = ["/usr/lib/dovecot/script-login"]


class Exec:
    """A fake execve that records its call."""

    def __init__(self, fail: OSError | None = None) -> None:
        self.calls: list[tuple[str, list[str], dict[str, str]]] = []
        self.fail = fail

    def __call__(self, path: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.calls.append((path, list(argv), dict(env)))
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail


def worker_sending(
    *frames: bytes, sleep: float = 0
) -> Callable[[Options, Mapping[str, str]], Callable[[int], None]]:
    def make(_opts: Options, _env: Mapping[str, str]) -> Callable[[int], None]:
        def work(fd: int) -> None:
            for f in frames:
                os.write(fd, f)
            time.sleep(sleep)

        return work

    return make


def no_worker(_opts: Options, _env: Mapping[str, str]) -> Callable[[int], None]:
    """The worker factory of a login that must not start one."""
    raise AssertionError("worker started")


def collect_frames(work: Callable[..., object]) -> list[tuple[bytes, bytes]]:
    """Run *work* in-process and decode the frames it wrote.

    A forked worker's work writes to a pipe; a thread worker's (``work.threaded``) calls
    ``send``, and the forked worker it may hand over to writes to a pipe after it.
    """
    data = b""
    if getattr(work, "threaded", False):
        sent: list[bytes] = []
        follow = work(sent.append)
        data = b"".join(sent)
        if follow is None:
            return _decode_frames(data)
        assert callable(follow)
        work = follow
    r, w = os.pipe()
    try:
        work(w)
    finally:
        os.close(w)
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    return _decode_frames(data)


def _decode_frames(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    while data:
        size = int.from_bytes(data[1:5], "big")
        out.append((data[:1], data[5 : 5 + size]))
        data = data[5 + size :]
    return out


class TestParseArgs:
    """The script-login line grammar."""

    def test_documented_line(self) -> None:
        """Dovecot passes the options, then the rest of the chain."""
        opts = parse_args(["--config=/etc/n.toml", "--protocol=imap", *NEXT])

        assert opts is not None
        assert ("/etc/n.toml", "imap", NEXT) == (opts.config, opts.protocol, opts.next)

    def test_two_token_form(self) -> None:
        """``--config PATH`` works as well."""
        opts = parse_args(["--config", "/x.toml", "--on-error", "deny", "/next", "a"])

        assert opts is not None
        assert ("/x.toml", "deny", ["/next", "a"]) == (opts.config, opts.on_error, opts.next)

    def test_double_dash(self) -> None:
        """``--`` ends the options; what follows is the chain even if it starts with --."""
        opts = parse_args(["--deadline=1", "--", "--weird", "x"])

        assert opts is not None
        assert (1.0, ["--weird", "x"]) == (opts.deadline, opts.next)

    def test_chain_options_untouched(self) -> None:
        """Options after NEXT belong to NEXT."""
        opts = parse_args(["/next", "--config=/other"])

        assert opts is not None
        assert ("/etc/nsprov/nsprov.toml", ["/next", "--config=/other"]) == (opts.config, opts.next)

    def test_unknown_option_ignored(self, capfd: pytest.CaptureFixture[str]) -> None:
        """An unknown option is logged on one line and ignored."""
        opts = parse_args(["--future=1", "/next"])

        assert opts is not None
        assert ["/next"] == opts.next
        assert "nsprov: ignoring unknown option '--future=1'\n" == capfd.readouterr().err

    def test_help(self) -> None:
        """--help returns None."""
        assert parse_args(["--help", "/next"]) is None

    @pytest.mark.parametrize("argv", [[], ["--config=/x"], ["--config"], ["--deadline", "3"]])
    def test_usage_errors(self, argv: list[str]) -> None:
        """A line without NEXT is a usage error: there is nothing to exec."""
        with pytest.raises(UsageError):
            parse_args(argv)

    @pytest.mark.parametrize(
        ("arg", "problem"),
        [
            ("--protocol=smtp", "--protocol must be imap or pop3, got 'smtp'"),
            ("--protocol=IMAP", "--protocol must be imap or pop3, got 'IMAP'"),
            ("--on-error=maybe", "--on-error must be continue or deny, got 'maybe'"),
            ("--deadline=x", "--deadline must be a number, got 'x'"),
            ("--deadline=0", "--deadline must be > 0 and <= 50 seconds, got '0'"),
            ("--deadline=60", "--deadline must be > 0 and <= 50 seconds, got '60'"),
            (
                "--serve=relative.sock",
                "--serve must be an absolute socket path, got 'relative.sock'",
            ),
            ("--serve-timeout=9", "--serve-timeout must be > 0 and <= 5 seconds, got '9'"),
            ("--serve-timeout=abc", "--serve-timeout must be a number, got 'abc'"),
        ],
    )
    def test_bad_values_keep_defaults(self, arg: str, problem: str) -> None:
        """A bad value is recorded with its option and the default kept, like an unknown option."""
        opts = parse_args([arg, "/n"])

        assert opts is not None
        defaults = Options()
        assert ([(arg[2:].partition("=")[0], problem)], ["/n"]) == (opts.bad, opts.next)
        assert (defaults.protocol, defaults.on_error, defaults.deadline) == (
            opts.protocol,
            opts.on_error,
            opts.deadline,
        )
        assert (defaults.serve, defaults.serve_timeout) == (opts.serve, opts.serve_timeout)

    def test_valid_values_set(self) -> None:
        """Valid values of every option are taken."""
        opts = parse_args(
            [
                "--protocol=pop3",
                "--on-error=deny",
                "--deadline=3",
                "--serve=/s",
                "--serve-timeout=1",
                "/n",
            ]
        )

        assert opts is not None
        assert ([], "pop3", "deny", 3.0, "/s", 1.0) == (
            opts.bad,
            opts.protocol,
            opts.on_error,
            opts.deadline,
            opts.serve,
            opts.serve_timeout,
        )

    @given(
        st.lists(
            st.sampled_from(
                ["--config=/c", "--protocol=pop3", "--on-error=deny", "--deadline=3", "--x"]
            )
        ),
        st.lists(st.text(min_size=1), min_size=1).filter(lambda a: not a[0].startswith("--")),
    )
    def test_chain_preserved(self, options: list[str], chain: list[str]) -> None:
        """Whatever the options, the chain after them is exec'ed unchanged."""
        opts = parse_args([*options, *chain])

        assert opts is not None
        assert chain == opts.next


class TestMain:
    """Fail-open: every failure execs NEXT with the environment untouched."""

    env = {"USER": "alice", "USERDB_KEYS": "HOME ", "HOME": "/h"}

    def test_success_sets_variables(self) -> None:
        """The worker's variables are exported and NEXT exec'ed with its arguments."""
        ex = Exec()
        worker = worker_sending(frame(T_ENV, b"NAMESPACE\0s-a"), frame(T_OK, b""))

        main(["--config=/c", *NEXT, "x"], environ=dict(self.env), execve=ex, worker=worker)

        assert [(NEXT[0], [*NEXT, "x"], {**self.env, "NAMESPACE": "s-a"})] == ex.calls

    def test_failure_is_fail_open(self, capfd: pytest.CaptureFixture[str]) -> None:
        """A failing worker: one log line, NEXT exec'ed with the environment as it was."""
        ex = Exec()
        worker = worker_sending(frame(T_ENV, b"NAMESPACE\0s-a"), frame(T_FAIL, b"boom"))

        main(NEXT, environ=dict(self.env), execve=ex, worker=worker)

        assert [(NEXT[0], NEXT, self.env)] == ex.calls
        assert (
            "nsprov: user alice: boom; continuing with the environment untouched\n"
            == capfd.readouterr().err
        )

    @pytest.mark.parametrize(
        "bad",
        [
            "--deadline=60",
            "--deadline=abc",
            "--protocol=IMAP",
            "--on-error=maybe",
            "--serve=relative.sock",
            "--serve-timeout=9",
        ],
    )
    def test_bad_value_fails_open(self, bad: str, capfd: pytest.CaptureFixture[str]) -> None:
        """A bad option value: one error line naming it, then the step runs with the default."""
        ex = Exec()
        worker = worker_sending(frame(T_ENV, b"NAMESPACE\0s-a"), frame(T_OK, b""))

        main([bad, *NEXT], environ=dict(self.env), execve=ex, worker=worker)

        assert [(NEXT[0], NEXT, {**self.env, "NAMESPACE": "s-a"})] == ex.calls
        err = capfd.readouterr().err
        assert 1 == err.count("\n")
        assert err.startswith(f"nsprov: ignoring a bad option value: {bad.partition('=')[0]} ")

    @pytest.mark.parametrize("order", ["before", "after"])
    def test_bad_value_with_on_error_deny(
        self, order: str, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Beside a valid --on-error=deny, wherever it stands, a bad value denies: no worker, no exec."""
        ex = Exec()
        opts = ["--deadline=abc", "--on-error=deny"]

        status = main(
            [*(opts if order == "before" else opts[::-1]), *NEXT],
            environ=dict(self.env),
            execve=ex,
            worker=no_worker,
        )

        assert (1, []) == (status, ex.calls)
        assert (
            "nsprov: user alice: --deadline must be a number, got 'abc'; "
            "denying the login (on_error=deny)\n"
        ) == capfd.readouterr().err

    def test_crash_is_fail_open(self) -> None:
        """A worker that dies without a word still lets the login through."""
        ex = Exec()

        def make(_o: Options, _e: Mapping[str, str]) -> Callable[[int], None]:
            def work(_fd: int) -> None:
                raise RuntimeError

            return work

        main(NEXT, environ=dict(self.env), execve=ex, worker=make)

        assert [(NEXT[0], NEXT, self.env)] == ex.calls

    def test_deadline(self, capfd: pytest.CaptureFixture[str]) -> None:
        """A worker that hangs past the deadline is abandoned; the login goes on."""
        ex = Exec()
        started = time.monotonic()

        main(
            ["--deadline=0.3", *NEXT],
            environ=dict(self.env),
            execve=ex,
            worker=worker_sending(sleep=30),
        )

        assert time.monotonic() - started < 5
        assert [(NEXT[0], NEXT, self.env)] == ex.calls
        assert "deadline of 0.3s passed" in capfd.readouterr().err

    def test_deadline_hint_rate_limited(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Two logins cut by the deadline: one line naming the deadline and [scan_cache], not two."""
        hint_dir = tmp_path / "run"
        hint_dir.mkdir(mode=0o700)
        monkeypatch.setattr(pl, "HINT_DIR", str(hint_dir), raising=False)
        ex = Exec()

        for _ in range(2):
            main(
                ["--deadline=0.2", *NEXT],
                environ=dict(self.env),
                execve=ex,
                worker=worker_sending(sleep=30),
            )

        assert [(NEXT[0], NEXT, self.env)] * 2 == ex.calls  # both logins still go on
        lines = capfd.readouterr().err.splitlines()
        hints = [line for line in lines if "[scan_cache]" in line]
        assert 1 == len(hints)
        assert "deadline cut a login" in hints[0]
        assert 2 == sum("deadline of 0.2s passed" in line for line in lines)
        assert ["deadline-hint"] == [p.name for p in hint_dir.iterdir()]

    def test_deadline_hint_again_after_a_minute(self, tmp_path: Path) -> None:
        """The marker's mtime is the rate limit: 60 s later the hint is logged again."""
        os.chmod(tmp_path, 0o700)

        assert pl.deadline_hint(str(tmp_path), now=1000.0)
        assert not pl.deadline_hint(str(tmp_path), now=1059.0)
        assert pl.deadline_hint(str(tmp_path), now=1060.5)
        assert 1060.5 == (tmp_path / pl.HINT_FILE).stat().st_mtime

    @pytest.mark.parametrize("mode", [0o750, 0o1777])
    def test_deadline_hint_untrusted_dir(self, tmp_path: Path, mode: int) -> None:
        """A directory others could read or write gets no marker, and no line is logged."""
        os.chmod(tmp_path, mode)

        assert not pl.deadline_hint(str(tmp_path))
        assert not pl.deadline_hint(str(tmp_path / "missing"))
        assert [] == list(tmp_path.iterdir())

    def test_deadline_hint_symlinked_marker(self, tmp_path: Path) -> None:
        """A marker that is a symlink is not followed: no file appears at its target."""
        os.chmod(tmp_path, 0o700)
        (tmp_path / pl.HINT_FILE).symlink_to(tmp_path / "target")

        assert not pl.deadline_hint(str(tmp_path), now=time.time() + 3600)
        assert not (tmp_path / "target").exists()

    def test_config_deadline(self) -> None:
        """The worker can shorten the deadline to the config's."""
        ex = Exec()
        started = time.monotonic()

        main(
            NEXT,
            environ=dict(self.env),
            execve=ex,
            worker=worker_sending(frame(T_DEADLINE, b"0.2"), sleep=30),
        )

        assert time.monotonic() - started < 1.5
        assert 1 == len(ex.calls)

    @pytest.mark.parametrize("where", ["cli", "config"])
    def test_deny_on_error(self, where: str) -> None:
        """on_error=deny (CLI or config) turns a failure into a denial: no exec."""
        ex = Exec()
        frames = [frame(T_FAIL, b"bad")]
        argv = NEXT
        if where == "cli":
            argv = ["--on-error=deny", *NEXT]
        else:
            frames.insert(0, frame(T_POLICY, b"deny"))

        assert 1 == main(argv, environ=dict(self.env), execve=ex, worker=worker_sending(*frames))
        assert [] == ex.calls

    def test_cli_continue_overrides_config(self) -> None:
        """--on-error=continue on the script-login line wins over the config."""
        ex = Exec()
        worker = worker_sending(frame(T_POLICY, b"deny"), frame(T_FAIL, b"bad"))

        main(["--on-error=continue", *NEXT], environ=dict(self.env), execve=ex, worker=worker)

        assert 1 == len(ex.calls)

    def test_client_lines_and_deny(self, capfd: pytest.CaptureFixture[str]) -> None:
        """Client frames go to fd 1 before a denial; nothing is exec'ed."""
        ex = Exec()
        worker = worker_sending(
            frame(T_CLIENT, b"* BYE [ALERT] no\r\n"), frame(T_DENY, b""), frame(T_OK, b"")
        )

        assert 0 == main(NEXT, environ=dict(self.env), execve=ex, worker=worker)
        assert "* BYE [ALERT] no\r\n" == capfd.readouterr().out
        assert [] == ex.calls

    def test_e2big_falls_back(self, capfd: pytest.CaptureFixture[str]) -> None:
        """If exec with the new variables fails with E2BIG, exec without them."""
        ex = Exec(fail=OSError(7, "Argument list too long"))
        worker = worker_sending(frame(T_ENV, b"NAMESPACE\0s-a"), frame(T_OK, b""))

        main(NEXT, environ=dict(self.env), execve=ex, worker=worker)

        assert self.env == ex.calls[-1][2]
        assert "Argument list too long" in capfd.readouterr().err

    def test_exec_failure_logged(self, capfd: pytest.CaptureFixture[str]) -> None:
        """A NEXT that cannot be exec'ed is logged; main returns 1."""
        ex = Exec(fail=OSError(2, "No such file or directory"))

        assert 1 == main(
            NEXT, environ=dict(self.env), execve=ex, worker=worker_sending(frame(T_OK, b""))
        )
        assert "exec /usr/lib/dovecot/script-login failed" in capfd.readouterr().err

    def test_usage(self, capfd: pytest.CaptureFixture[str]) -> None:
        """No NEXT: usage on stderr, exit 2, nothing on stdout."""
        assert 2 == main([], environ={}, execve=Exec())
        out, err = capfd.readouterr()
        assert "" == out
        assert "usage: nsprov post-login" in err

    def test_help(self, capfd: pytest.CaptureFixture[str]) -> None:
        """--help prints usage on stderr (stdout is the client) and exits 0."""
        assert 0 == main(["--help"], environ={}, execve=Exec())
        assert "" == capfd.readouterr().out

    def test_fork_failure(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Even if fork fails, the login goes on."""
        ex = Exec()

        def broken(*_a: object, **_k: object) -> object:
            raise OSError(11, "Resource temporarily unavailable")

        monkeypatch.setattr(pl, "run_worker", broken)
        main(NEXT, environ=dict(self.env), execve=ex)

        assert [(NEXT[0], NEXT, self.env)] == ex.calls


class TestOriginalEnviron:
    """What nsprov's own start-up adds (locale coercion, the launcher's SHLVL) must not leak down the chain."""

    def test_coerced_removed(self) -> None:
        """An unlisted LC_CTYPE=C.UTF-8 is the interpreter's and is dropped."""
        assert {"USER": "a"} == original_environ({"USER": "a", "LC_CTYPE": "C.UTF-8"})

    def test_userdb_lc_ctype_kept(self) -> None:
        """An LC_CTYPE that userdb sent stays."""
        env = {"LC_CTYPE": "C.UTF-8", "USERDB_KEYS": "LC_CTYPE "}

        assert env == original_environ(env)

    def test_launcher_shlvl_removed(self) -> None:
        """An unlisted SHLVL is the launcher's bash's (its exec exports one) and is dropped."""
        assert {"USER": "a"} == original_environ({"USER": "a", "SHLVL": "0"})

    def test_userdb_shlvl_kept(self) -> None:
        """A SHLVL that userdb sent stays."""
        env = {"SHLVL": "0", "USERDB_KEYS": "SHLVL "}

        assert env == original_environ(env)


class TestWriteClient:
    """Client writes on a non-blocking socket."""

    def test_nonblocking_full_pipe(self) -> None:
        """Bytes that do not fit are retried until the budget runs out, then given up."""
        r, w = os.pipe()
        os.set_blocking(w, False)
        try:
            assert write_client(b"x" * 10, fd=w)
            assert not write_client(b"y" * (1 << 20), fd=w, budget=0.1)
            assert b"x" * 10 == os.read(r, 10)
        finally:
            os.close(r)
            os.close(w)

    def test_closed_fd(self) -> None:
        """A broken client connection is not an error for the login."""
        r, w = os.pipe()
        os.close(r)
        try:
            assert not write_client(b"x", fd=w)
        finally:
            os.close(w)


class TestWorker:
    """The worker, run in-process on a pipe."""

    def frames(self, opts: Options, env: dict[str, str]) -> list[tuple[bytes, bytes]]:
        return collect_frames(lambda fd: run(fd, opts, env))

    def test_missing_config(self) -> None:
        """An unreadable config is one failure frame."""
        opts = Options()
        opts.config = "/nonexistent/nsprov.toml"

        [(tag, payload)] = self.frames(opts, {"USER": "a"})

        assert T_FAIL == tag
        assert b"cannot read" in payload

    def test_untrusted_config(self, tmp_path: Path) -> None:
        """A config others may write is one failure frame naming it and the rule, sent before the policy."""
        cfg = tmp_path / "n.toml"
        cfg.write_text('[[spool]]\npath = "/x"\n[postlogin]\non_error = "deny"\n')
        cfg.chmod(0o666)
        opts = Options()
        opts.config = str(cfg)

        [(tag, payload)] = self.frames(opts, {"USER": "a"})

        assert T_FAIL == tag
        assert payload.startswith(f"{cfg}: config file not trusted: {cfg} is writable".encode())

    def test_namespaces(self, tmp_path: Path) -> None:
        """A working config yields deadline, policy, variables and OK."""
        base = Path(tempfile.mkdtemp(dir="/var/tmp"))
        base.chmod(0o755)
        spool = base / "spool"
        (spool / "sales" / "cur").mkdir(parents=True)
        (spool / "sales" / "new").mkdir()
        for p in (spool, spool / "sales", spool / "sales" / "cur", spool / "sales" / "new"):
            p.chmod(0o755)
        cfg = tmp_path / "n.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n[namespace]\ncreate_dirs = false\n')
        opts = Options()
        opts.config = str(cfg)

        frames = self.frames(
            opts, {"USER": "a", "UID": str(os.getuid() or 1), "GID": "0", "HOME": "/h"}
        )

        tags = [t for t, _ in frames]
        assert [T_DEADLINE, T_POLICY] == tags[:2]
        assert T_OK == tags[-1]
        shutil.rmtree(base)
        assert any(p.startswith(b"NAMESPACE\0s-sal-") for t, p in frames if t == T_ENV)

    @pytest.mark.parametrize("home", ["rel/home\x1b]0;t\x07", None])
    def test_relative_or_missing_home_logged(
        self, home: str | None, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A relative or missing HOME is one escaped error line naming user and HOME; login goes on."""
        base = Path(tempfile.mkdtemp(dir="/var/tmp"))
        base.chmod(0o755)
        spool = base / "spool"
        (spool / "sales" / "cur").mkdir(parents=True)
        (spool / "sales" / "new").mkdir()
        for p in (spool, spool / "sales", spool / "sales" / "cur", spool / "sales" / "new"):
            p.chmod(0o755)
        cfg = tmp_path / "n.toml"
        cfg.write_text(f'[[spool]]\npath = "{spool}"\n[namespace]\ncreate_dirs = false\n')
        opts = Options()
        opts.config = str(cfg)
        env = {"USER": "a", "UID": str(os.getuid() or 1), "GID": "0"}
        if home is not None:
            env["HOME"] = home

        try:
            frames = self.frames(opts, env)
        finally:
            shutil.rmtree(base)

        assert (T_OK, b"") == frames[-1]
        assert not any(t == T_ENV for t, _ in frames)
        err = capfd.readouterr().err
        assert 1 == err.count("\n")
        assert err.startswith("nsprov: user a: ")
        shown = "HOME is not set" if home is None else f"HOME {escape(home)!s} is not absolute"
        assert shown in err
        assert "\x1b" not in err

    def test_failed_action_is_skipped(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """An action that raises is logged on one line and skipped; the login goes on."""
        cfg = tmp_path / "n.toml"
        cfg.write_text('[[spool]]\npath = "/x"\n')
        opts = Options()
        opts.config = str(cfg)
        opts.protocol = "imap"

        def boom(*_a: object) -> None:
            raise KeyError("x")

        monkeypatch.setitem(login_module.ACTIONS, "namespaces", boom)

        frames = self.frames(opts, {"USER": "a"})

        assert (T_OK, b"") == frames[-1]
        assert "nsprov: user a: namespaces: KeyError: 'x'\n" == capfd.readouterr().err

    def test_internal_error(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """An unexpected exception outside the actions is one failure frame, not raised."""
        cfg = tmp_path / "n.toml"
        cfg.write_text('[[spool]]\npath = "/x"\n')
        opts = Options()
        opts.config = str(cfg)

        def boom(*_a: object, **_k: object) -> None:
            raise KeyError("x")

        monkeypatch.setattr(login_module, "run_actions", boom)

        frames = self.frames(opts, {"USER": "a"})

        assert (T_FAIL, b"internal error: KeyError: 'x'") == frames[-1]


def test_run_worker_reaps() -> None:
    """A worker that finishes is waited for (no zombie left for the next program)."""

    def work(fd: int) -> None:
        os.write(fd, frame(T_OK, b""))

    # Children other tests left (a show/check child killed while stuck in a hung
    # filesystem exits later) are not this test's: reap them first.
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    result = run_worker(work, 5)

    assert result.ok
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pid = 0
    assert 0 == pid


class TestWorkerFrames:
    """The worker's frames for denials, hooks and version warnings, in-process."""

    def frames(self, work: Callable[[int], None]) -> list[tuple[bytes, bytes]]:
        return collect_frames(work)

    def test_denied_login(self, tmp_path: Path) -> None:
        """A denial sends the protocol's line and the deny frame, and no variables."""
        cfg = tmp_path / "n.toml"
        cfg.write_text(
            '[deny]\nusers = ["a"]\nmessage = "no"\n[[field]]\nname = "x"\nvalue = "1"\n'
        )
        opts = Options()
        opts.config = str(cfg)
        opts.protocol = "pop3"

        frames = self.frames(lambda fd: run(fd, opts, {"USER": "a"}))

        assert [
            (T_LOGIN, b"- - full"),
            (T_CLIENT, b"-ERR [SYS/PERM] no\r\n"),
            (T_DENY, b""),
            (T_OK, b""),
        ] == frames[2:]

    def test_hook_without_config(self) -> None:
        """A hook without --config runs without loading any configuration."""
        opts = Options()
        opts.config = "/nonexistent"

        def hook(login: Login) -> None:
            login.set_field("x", "1")

        frames = self.frames(lambda fd: run_hook(fd, opts, {"USER": "a"}, hook, config_given=False))

        assert (T_ENV, b"X\x001") in frames
        assert (T_OK, b"") == frames[-1]

    def test_hook_denies(self) -> None:
        """A hook's deny() ends in a deny frame."""
        opts = Options()
        opts.protocol = "imap"

        def hook(login: Login) -> None:
            login.deny("x")

        frames = self.frames(lambda fd: run_hook(fd, opts, {"USER": "a"}, hook, config_given=False))

        assert [
            (T_LOGIN, b"- - full"),
            (T_CLIENT, b"* BYE [ALERT] x\r\n"),
            (T_DENY, b""),
            (T_OK, b""),
        ] == frames

    def test_hook_config_error(self) -> None:
        """A hook whose --config cannot be read fails as a whole (fail-open in the parent)."""
        opts = Options()
        opts.config = "/nonexistent/n.toml"

        frames = self.frames(
            lambda fd: run_hook(fd, opts, {"USER": "a"}, lambda _l: None, config_given=True)
        )

        assert T_FAIL == frames[-1][0]

    def test_hook_with_config(self, tmp_path: Path) -> None:
        """With --config, the hook's worker reports the config's deadline and policy."""
        cfg = tmp_path / "n.toml"
        cfg.write_text('[postlogin]\ndeadline = 3\non_error = "deny"\n')
        opts = Options()
        opts.config = str(cfg)

        frames = self.frames(
            lambda fd: run_hook(fd, opts, {"USER": "a"}, lambda _l: None, config_given=True)
        )

        assert [
            (T_DEADLINE, b"3.0"),
            (T_POLICY, b"deny"),
            (T_LOGIN, b"- - full"),
            (T_OK, b""),
        ] == frames

    @pytest.mark.parametrize(
        ("env", "dialect", "expected"),
        [
            ({"NAMESPACE+": "x"}, "2.3", "look like Dovecot 2.4"),
            ({"MAIL_PATH": "x"}, "2.3", "look like Dovecot 2.4"),
            ({"MAIL": "maildir:~"}, "2.4", "look like Dovecot 2.3"),
            ({"MAIL": "maildir:~"}, "2.3", None),
            ({}, "2.4", None),
        ],
    )
    def test_version_signs(self, env: dict[str, str], dialect: str, expected: str | None) -> None:
        """Userdb fields of the other version give a warning."""
        sign = version_signs(env, dialect)

        assert (expected is None) == (sign is None)
        assert expected is None or expected in str(sign)

    def test_warning_logged_once(self, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """A login's errors share one log line, and its warnings another."""
        cfg = tmp_path / "n.toml"
        cfg.write_text('[dovecot]\nversion = "2.3"\n[[field]]\nname = "q"\nvalue = "{nope}"\n')
        opts = Options()
        opts.config = str(cfg)
        opts.protocol = "imap"

        self.frames(lambda fd: run(fd, opts, {"USER": "a", "NAMESPACE+": "x"}))

        err = capfd.readouterr().err.splitlines()
        assert 2 == len(err)
        assert "fields: no value for field {nope}" in err[0]
        assert "look like Dovecot 2.4" in err[1]


class TestEntrypoint:
    """The console script dispatches before importing anything heavy."""

    def test_post_login_usage(
        self, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """``nsprov post-login`` with no chain is a usage error (exit 2)."""
        monkeypatch.setattr(sys, "argv", ["nsprov", "post-login"])

        with pytest.raises(SystemExit) as info:
            entrypoint()

        assert 2 == info.value.code
        assert "usage: nsprov post-login" in capfd.readouterr().err

    def test_other_commands(
        self, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Other commands go to the argparse CLI."""
        monkeypatch.setattr(sys, "argv", ["nsprov", "--version"])

        with pytest.raises(SystemExit) as info:
            entrypoint()

        assert 0 == info.value.code
        assert capfd.readouterr().out.startswith("nsprov ")


class TestInstalledVersion:
    """The installed Dovecot version, from the files beside script-login."""

    @pytest.mark.parametrize(
        ("files", "expected"),
        [
            ({"/usr/lib/dovecot/director"}, "2.3"),
            ({"/usr/lib/dovecot/libdovecot-language.so"}, "2.4"),
            (set(), None),
        ],
    )
    def test_markers(self, files: set[str], expected: str | None) -> None:
        """director means 2.3, libdovecot-language.so means 2.4, neither means unknown."""
        assert expected == installed_version(
            ["/usr/lib/dovecot/script-login"], exists=files.__contains__
        )

    def test_no_chain(self) -> None:
        """Without an absolute last program nothing is known."""
        assert installed_version(["script-login"]) is None

    def test_mismatch_skips_namespaces(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A 2.3 dialect on this machine's Dovecot 2.3 runs namespaces; a 2.4 dialect skips them with one warning."""
        libexec = tmp_path / "libexec"
        libexec.mkdir()
        (libexec / "director").touch()
        cfg = tmp_path / "n.toml"
        cfg.write_text('[dovecot]\nversion = "2.4"\n[[spool]]\npath = "/nonexistent"\n')
        opts = Options()
        opts.config = str(cfg)
        opts.protocol = "imap"
        opts.next = [str(libexec / "script-login")]

        frames = TestWorkerFrames().frames(lambda fd: run(fd, opts, {"USER": "a"}))

        assert (T_OK, b"") == frames[-1]
        err = capfd.readouterr().err
        assert 'Dovecot 2.3 is installed but [dovecot] version = "2.4"' in err
        assert "/nonexistent" not in err


def printable(text: str) -> bool:
    """Whether *text* is one line of printable characters (what a terminal shows as is)."""
    return text.isprintable()


class TestEscape:
    """One escaping for every human output and log line."""

    @pytest.mark.parametrize(
        ("raw", "shown"),
        [
            ("plain name é", "plain name é"),
            ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),
            ("line\rover\n", "line\\x0dover\\x0a"),
            ("a\x7fb\x85", "a\\x7fb\\x85"),
            ("bidi\u202e", "bidi\\u202e"),
            ("\U000e0001tag", "\\U000e0001tag"),
            (os.fsdecode(b"x\xff"), "x\\xff"),
            ("back\\slash", "back\\\\slash"),
        ],
    )
    def test_examples(self, raw: str, shown: str) -> None:
        """Controls (C0, DEL, C1) and other non-printables become \\xNN/\\uNNNN, a backslash doubles."""
        assert shown == escape(raw)

    @given(st.text())
    def test_always_printable(self, text: str) -> None:
        """Whatever the input, the output is printable and unchanged where it was already."""
        shown = escape(text)

        assert printable(shown)
        if text.isprintable() and "\\" not in text:
            assert text == shown

    @given(st.lists(st.sampled_from(HOSTILE), min_size=1).map("".join))
    def test_log_one_printable_line(self, message: str) -> None:
        """log() writes one printable line, whatever names the message carries."""
        r, w = os.pipe()
        saved = os.dup(2)
        try:
            os.dup2(w, 2)
            log(message)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(w)
        with os.fdopen(r, "rb") as pipe:
            line = pipe.read().decode()

        assert line.endswith("\n")
        assert printable(line[:-1])


def _nsprov_imports(module: str) -> list[str]:
    """Every import of nsprov in *module*'s source, at any depth (function level too)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").split(".")[0] == "nsprov"
        ):
            if node.module:
                found.append("." * node.level + node.module)
            else:  # from . import _os
                found += ["." * node.level + a.name for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "nsprov"]
    return found


class TestInjectedWorker:
    """The post-login parent imports no nsprov module: its caller injects the worker."""

    @pytest.mark.parametrize(
        ("module", "expected"),
        [
            ("nsprov._postlogin", ["._os", "._servefields"]),
            ("nsprov._breaker", ["._names", "._os", "._trust"]),
        ],
    )
    def test_nsprov_imports(self, module: str, expected: list[str]) -> None:
        """The parent imports only its ``os``, fast-path reply parser, the breaker names and trust (no circle)."""
        imports = sorted(set(_nsprov_imports(module)))

        assert expected == imports

    def test_no_worker_fails_open(self, capfd: pytest.CaptureFixture[str]) -> None:
        """Without an injected worker the login goes on with its environment untouched."""
        ex = Exec()
        env = {"USER": "alice", "USERDB_KEYS": ""}

        main(NEXT, environ=dict(env), execve=ex)

        assert [(NEXT[0], NEXT, env)] == ex.calls
        assert (
            "nsprov: user alice: internal error: no post-login worker given; "
            "continuing with the environment untouched\n"
        ) == capfd.readouterr().err

    def test_command_injects_the_worker(self) -> None:
        """The nsprov command's worker runs nsprov._worker.run: a missing config is its failure."""
        from nsprov._main import _worker

        opts = Options()
        opts.config = "/nonexistent/nsprov.toml"

        work = _worker(opts, {"USER": "a"})
        assert work is not None

        [(tag, payload)] = collect_frames(work)

        assert (T_FAIL, True) == (tag, b"cannot read" in payload)

    def test_parent_does_not_load_the_worker(self) -> None:
        """Making the command's worker loads nsprov._worker only in the forked child."""
        import subprocess

        code = (
            "import sys; from nsprov._main import _worker; from nsprov._postlogin import Options; "
            "_worker(Options(), {}); print('nsprov._worker' in sys.modules)"
        )
        out = subprocess.run(
            [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
        )

        assert "False\n" == out.stdout

    def test_cli_dispatch_injects_the_worker(self, capfd: pytest.CaptureFixture[str]) -> None:
        """nsprov.main(["post-login", ...]) forks the real worker: its failure is logged."""
        from nsprov._cli import main as cli_main

        ex = Exec()
        env = {"USER": "alice", "USERDB_KEYS": ""}

        cli_main(["post-login", "--config=/nonexistent/nsprov.toml", *NEXT], environ=env, execve=ex)

        assert [(NEXT[0], NEXT, env)] == ex.calls
        assert "cannot read" in capfd.readouterr().err


class TestErrors:
    """The post-login parent's UsageError and the scanner's SpoolError are under NsprovError."""

    def test_usage_error_mapped(self) -> None:
        """nsprov.exceptions.UsageError is an NsprovError and the parent's UsageError."""
        from nsprov import exceptions

        assert (True, True, True) == (
            issubclass(exceptions.UsageError, exceptions.NsprovError),
            issubclass(exceptions.UsageError, UsageError),
            "UsageError" in exceptions.__all__,
        )

    def test_parse_args_raises_the_public_error(self) -> None:
        """Given error=, parse_args raises nsprov.exceptions.UsageError, an NsprovError."""
        from nsprov import exceptions

        with pytest.raises(exceptions.NsprovError, match="no next program") as info:
            parse_args(["--config=/c"], error=exceptions.UsageError)

        assert exceptions.UsageError is type(info.value)

    def test_spool_error_moved(self) -> None:
        """SpoolError lives in nsprov.exceptions and stays importable from nsprov._scan."""
        from nsprov import _scan, exceptions

        assert (True, True, True) == (
            _scan.SpoolError is exceptions.SpoolError,
            issubclass(exceptions.SpoolError, exceptions.NsprovError),
            "SpoolError" in exceptions.__all__,
        )
