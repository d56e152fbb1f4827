"""``nsprov post-login --serve``: namespaces from a running ``nsprov serve``, no worker."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsprov import _postlogin as nsprov_postlogin
from nsprov._config import config_from_mapping, load_config
from nsprov._env import from_environ
from nsprov._login import Login, run_actions
from nsprov._postlogin import (
    STAMP_FIELD,
    T_ENV,
    T_OK,
    ask_serve,
    config_stamp,
    frame,
    main,
    merge_fields,
    parse_json_object,
    serve_key,
)
from nsprov._serve import Resolver, load_stamped
from nsprov._serve.codec import parse_postlogin_key

from .test_postlogin import worker_sending
from .test_serve import Identities, _base, running  # noqa: F401 - _base is the "base" fixture

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from nsprov._postlogin import Options
    from nsprov._serve import Server

ENV = {
    "USER": "other",
    "HOME": "/home/other",
    "USERDB_KEYS": "UID GID HOME ",
    "UID": "70002",
    "GID": "70002",
}


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
        """The key carries the protocol, the configuration, its stamp and the identity variables."""
        assert (
            "postlogin?v=1&proto=imap&cfg=/etc/a%20b.toml&stat=1:2:3:4:5&dovecot=2.3"
            "&USER=other&HOME=/home/other&UID=70002&GID=70002"
        ) == serve_key("imap", ENV, config="/etc/a b.toml", stamp="1:2:3:4:5", dovecot="2.3")
        assert "postlogin?v=1&proto=-&cfg=/c&stat=1:2:3:4:5&USER=x" == serve_key(
            None, {"USER": "x", "IP": "1.2.3.4"}, config="/c", stamp="1:2:3:4:5"
        )

    def test_private_mailbox_list_extended(self) -> None:
        """The private namespace's MAILBOX list (auto-subscribe) is extended like NAMESPACE."""
        env = {"NAMESPACE/INBOX/MAILBOX": "trash", "USERDB_KEYS": "NAMESPACE/INBOX/MAILBOX "}

        out = merge_fields(env, {"NAMESPACE/INBOX/MAILBOX": "s-a trash"})

        assert "trash s-a" == out["NAMESPACE/INBOX/MAILBOX"]


def box_toml(box: Path, extra: str = "") -> str:
    """A config serving *box* under Shared/, no directory creation, plus *extra* TOML."""
    return (
        f'[[spool]]\npath = "{box}"\nprefix = "Shared/{{name}}/"\n'
        f"[namespace]\ncreate_dirs = false\n{extra}"
    )


@contextlib.contextmanager
def serving(base: Path, text: str) -> Iterator[tuple[Server, Path]]:
    """``nsprov serve`` in a thread with the config file *text* (written to base/nsprov.toml)."""
    path = base / "nsprov.toml"
    path.write_text(text)
    config, stamp = load_stamped(load_config, str(path))
    with running(config, base, stamp=stamp, config_path=str(path)) as (server, _):
        yield server, path


def fast(server: Server, path: Path, *extra: str) -> list[str]:
    """The post-login argv asking *server*, reading *path*.

    The longest ``--serve-timeout`` (5 s, not the 0.1 s default): the server runs in a thread
    of this process, and on a loaded machine its first answer can take longer than 0.1 s; these
    tests are about which answer is used, not about speed.
    """
    return [
        f"--serve={server.options.socket_path}",
        "--serve-timeout=5",
        f"--config={path}",
        *extra,
        "/next",
    ]


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
        with serving(base, box_toml(box)) as (server, path):
            main(
                fast(server, path, "--protocol=imap"),
                environ=dict(ENV),
                execve=ex,
                worker=no_worker,
            )

        [(_, _, env)] = ex.calls
        assert ["Shared/Weird Name/", "Shared/sales/"] == [ns.prefix for ns in from_environ(env)]
        assert env["USERDB_KEYS"].startswith("UID GID HOME NAMESPACE")
        assert STAMP_FIELD.upper() not in env

    def test_other_actions_fall_back(
        self, box: Path, base: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A config with other actions for the protocol: the server declines, the worker runs."""
        ex = Exec()
        with serving(base, box_toml(box, '[deny]\nusers = ["nobody-x"]\n')) as (server, path):
            main(
                fast(server, path, "--protocol=imap"),
                environ=dict(ENV),
                execve=ex,
                worker=no_worker,
            )

        assert [("/next", ["/next"], ENV)] == ex.calls
        assert "worker failed" in capfd.readouterr().err

    @pytest.mark.parametrize("how", ["replaced", "appended"])
    def test_deny_added_while_serving(
        self, box: Path, base: Path, capfd: pytest.CaptureFixture[str], how: str
    ) -> None:
        """A [deny] added to the file after the server read it: the server re-reads it and declines."""
        ex = Exec()
        with serving(base, box_toml(box)) as (server, path):
            deny = '[deny]\nusers = ["other"]\n'
            if how == "appended":
                with path.open("a") as f:
                    f.write(deny)
            else:
                tmp = base / "new.toml"
                tmp.write_text(box_toml(box, deny))
                tmp.replace(path)
            main(
                fast(server, path, "--protocol=imap"),
                environ=dict(ENV),
                execve=ex,
                worker=no_worker,
            )
            reloaded = server.config_stamp == config_stamp(str(path))

        assert [("/next", ["/next"], ENV)] == ex.calls
        assert "worker failed" in capfd.readouterr().err
        assert reloaded

    def test_edit_keeps_serving(self, box: Path, base: Path) -> None:
        """An edit that leaves the actions alone: the server re-reads the file and still answers."""
        ex = Exec()
        with serving(base, box_toml(box)) as (server, path):
            with path.open("a") as f:
                f.write("# edited\n")
            main(
                fast(server, path, "--protocol=imap"),
                environ=dict(ENV),
                execve=ex,
                worker=no_worker,
            )

        [(_, _, env)] = ex.calls
        assert 2 == len(from_environ(env))

    def test_other_config_file(
        self, box: Path, base: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A login that reads another file than the server, even an identical one, computes in-process."""
        ex = Exec()
        other = base / "other.toml"
        other.write_text(box_toml(box))
        with serving(base, box_toml(box)) as (server, _):
            main(
                fast(server, other, "--protocol=imap"),
                environ=dict(ENV),
                execve=ex,
                worker=no_worker,
            )

        assert [("/next", ["/next"], ENV)] == ex.calls
        assert "worker failed" in capfd.readouterr().err

    def test_unreadable_config_not_asked(
        self, base: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A config path that cannot be stat'ed: the server is not asked; in-process says why."""
        ex = Exec()
        with serving(base, '[[spool]]\npath = "/x"\n') as (server, _):
            main(
                fast(server, base / "missing.toml"), environ=dict(ENV), execve=ex, worker=no_worker
            )
            lookups = server.stats["lookups"]

        assert (0, [("/next", ["/next"], ENV)]) == (lookups, ex.calls)

    @pytest.mark.parametrize("installed", ["2.4", None])
    def test_other_dovecot_version(self, box: Path, base: Path, installed: str | None) -> None:
        """Dovecot 2.4 beside script-login with version 2.3 configured: the worker decides (it exports nothing)."""
        libexec = base / "libexec"
        libexec.mkdir()
        if installed == "2.4":
            (libexec / "libdovecot-language.so").touch()
        ex = Exec()
        with serving(base, box_toml(box)) as (server, path):
            argv = [*fast(server, path, "--protocol=imap")[:-1], f"{libexec}/script-login"]
            main(argv, environ=dict(ENV), execve=ex, worker=no_worker)

        [(_, _, env)] = ex.calls
        assert (0 if installed else 2) == len(from_environ(env))

    def test_stamp_in_reply_checked(self, box: Path, base: Path) -> None:
        """A reply naming another configuration than the login's is not used."""
        path = base / "nsprov.toml"
        path.write_text(box_toml(box))
        sock = str(base / "fake.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(sock)
        listener.listen(4)

        def answer(stamp: str) -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                body = json.dumps({"namespace": "s-x", STAMP_FIELD: stamp}).encode()
                conn.sendall(b"$%d\r\n%s\r\n" % (len(body), body))

        ex = Exec()
        real = config_stamp(str(path))
        assert real is not None
        try:
            for stamp in ("1:2:3:4:5", real):
                thread = threading.Thread(target=answer, args=(stamp,))
                thread.start()
                main(
                    [f"--serve={sock}", f"--config={path}", "/next"],
                    environ=dict(ENV),
                    execve=ex,
                    worker=no_worker,
                )
                thread.join(5)
        finally:
            listener.close()

        assert [ENV, merge_fields(ENV, {"namespace": "s-x"})] == [env for _, _, env in ex.calls]

    def test_server_down(self, base: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """No server: the worker runs (here a failing one, so the environment stays as it was)."""
        ex = Exec()

        main([f"--serve={base}/none.sock", "/next"], environ=dict(ENV), execve=ex, worker=no_worker)

        assert [("/next", ["/next"], ENV)] == ex.calls
        assert "worker failed" in capfd.readouterr().err

    @pytest.mark.parametrize("uid", ["no-such-user-nsprov", "0"])
    def test_ask_serve_unknown_user(self, box: Path, base: Path, uid: str) -> None:
        """A user the in-process path would not serve (unknown uid name, uid 0) is not found: None."""
        with serving(base, box_toml(box)) as (server, path):
            stamp = config_stamp(str(path))
            assert stamp is not None
            key = serve_key("imap", {**ENV, "UID": uid}, config=str(path), stamp=stamp)
            assert parse_postlogin_key(key) is not None
            assert ask_serve(server.options.socket_path, key, 2) is None

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
            assert ask_serve(path, "postlogin?v=1", 0.2) is None
        finally:
            listener.close()

        assert time.monotonic() - started < 1.5


def test_identities_exported() -> None:
    """The serve test helpers are shared."""
    assert "other" in Identities().users


# --- python -I -S .../nsprov/_fast.py: the fast path without site -----------------------------

FAST = str(Path(nsprov_postlogin.__file__).with_name("_fast.py"))


class TestStandalone:
    """The fast path run as a script: the server's answer, or the same step in-process."""

    def test_answer_from_server(self, box: Path, base: Path) -> None:
        """A served login execs the chain with the namespaces, forking no worker."""
        ex = Exec()
        with serving(base, box_toml(box)) as (server, path):
            main(
                fast(server, path, "--protocol=imap"),
                environ=dict(ENV),
                execve=ex,
                worker=no_worker,
            )

        [(program, _, env)] = ex.calls
        assert "/next" == program
        assert 2 == len(from_environ(env))

    def test_no_answer_computes_in_process(self, base: Path) -> None:
        """No server: the worker runs in this process's child; nothing is re-exec'd."""
        ex = Exec()

        main(
            [f"--serve={base}/none.sock", "--protocol=pop3", "/next"],
            environ=dict(ENV),
            execve=ex,
            worker=worker_sending(frame(T_ENV, b"X\x001"), frame(T_OK, b"")),
        )

        [(path, argv, env)] = ex.calls
        assert ("/next", ["/next"]) == (path, argv)
        assert "1" == env["X"]

    def test_script(self, box: Path, base: Path) -> None:
        """``python -I -S _fast.py`` for real: no site, no attrs, no select: the post-login module."""
        probe = base / "probe.py"
        probe.write_text(
            "import os, sys\n"
            "print(os.environ.get('NAMESPACE', ''))\n"
            "print(' '.join(sorted(sys.modules)))\n"
        )
        with serving(base, box_toml(box)) as (server, path):
            out = subprocess.run(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-X",
                    "importtime",
                    FAST,
                    f"--serve={server.options.socket_path}",
                    f"--config={path}",
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
        assert "nsprov._postlogin" in imported
        assert set() == {"site", "attrs", "typing", "re", "select", "errno"} & imported

    def test_script_fallback(self, box: Path, base: Path) -> None:
        """``_fast.py`` with no server: the step runs in-process (site in the worker) and exports the namespaces."""
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

    @pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
    def test_script_fallback_does_not_reexec(self, box: Path, base: Path) -> None:
        """No server: two execs in all (the step, then the next program), not a third interpreter."""
        config = base / "fast.toml"
        config.write_text(f'[[spool]]\npath = "{box}"\n[namespace]\ncreate_dirs = false\n')
        trace = base / "trace"
        out = subprocess.run(
            [
                "strace",
                "-f",
                "-qq",
                "-e",
                "trace=execve",
                "-o",
                str(trace),
                sys.executable,
                "-I",
                "-S",
                FAST,
                f"--serve={base}/none.sock",
                f"--config={config}",
                "--protocol=imap",
                "/bin/true",
            ],
            env={**ENV, "GID": "70002"},
            capture_output=True,
            text=True,
            check=False,
        )
        execs = [line for line in trace.read_text().splitlines() if "execve(" in line]
        assert 0 == out.returncode, out.stderr
        assert 2 == len(execs), execs
        assert "/bin/true" in execs[-1]


# --- the server computes what the in-process path computes (issue 16, finding 4) -------------

#: Values each identity variable may take, absent included: numbers and names NSS knows and
#: does not know, uid 0, hostile characters (%-escaping), empty values.
IDENTITY_FIELDS = {
    "USER": st.sampled_from(["", "alice", "al ice&UID=0%25"]),
    "HOME": st.sampled_from(["", "/home/alice", "/h/sp ace&x"]),
    "UID": st.sampled_from(
        ["", "0", "1", "8", "65534", "70001", "nobody", "mail", "no-such-nsprov"]
    ),
    "GID": st.sampled_from(
        ["", "0", "1", "8", "65534", "70001", "nogroup", "mail", "no-such-nsprov"]
    ),
    "SYSTEM_GROUPS_USER": st.sampled_from(["", "daemon", "mail", "nobody", "no-such-nsprov"]),
    "MAIL_ACCESS_GROUPS": st.sampled_from(["", "mail", "daemon,mail", "1 8", "no-such-nsprov"]),
}
identity_envs = st.fixed_dictionaries(
    {"USERDB_KEYS": st.just("UID GID HOME ")},
    optional={**IDENTITY_FIELDS, "IP": st.just("192.0.2.1"), "NAMESPACE": st.just("work")},
)
identity_tables = st.fixed_dictionaries(
    {},
    optional={
        "mail_uid": st.sampled_from(["65534", "mail"]),
        "mail_gid": st.sampled_from(["8", "nogroup"]),
        "mail_access_groups": st.sampled_from([["daemon"], ["mail", "nogroup"]]),
        "first_valid_gid": st.sampled_from([2, 9]),
    },
)


def _keys_as_set(env: Mapping[str, str]) -> dict[str, object]:
    out: dict[str, object] = dict(env)
    out["USERDB_KEYS"] = sorted(env.get("USERDB_KEYS", "").split())
    return out


def test_server_identity_is_the_in_process_identity(base: Path) -> None:
    """Over random userdb field sets, the server's answer merged by the client is the worker's environment.

    The spool holds one entry per group of the identities drawn (mail, daemon, nogroup, and
    one owned by nobody), so a different uid, gid or group list changes what is served.  A
    lookup the server does not answer (or fails) is one the in-process path refuses, with the
    same error.
    """
    if os.geteuid() != 0:
        pytest.skip("the spool's owners and groups need root")
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    for name, owner, group, mode in (
        ("pub", 0, 0, 0o755),
        ("mailgrp", 0, 8, 0o750),
        ("daemongrp", 0, 1, 0o750),
        ("nogroupgrp", 0, 65534, 0o750),
        ("nobodys", 65534, 65534, 0o700),
    ):
        for sub in ("", "cur", "new", "tmp"):
            (spool / name / sub).mkdir(exist_ok=True)
            os.chown(spool / name / sub, owner, group)
            (spool / name / sub).chmod(mode)
    stamp = "1:2:3:4:5"

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(identity_envs, identity_tables)
    def check(env: dict[str, str], identity: dict[str, object]) -> None:
        config = config_from_mapping(
            {
                "spool": [{"path": str(spool), "prefix": "Shared/{name}/"}],
                "namespace": {"create_dirs": False},
                "identity": identity,
            }
        )
        login = Login(env, protocol="imap", config=config)
        errors = run_actions(login, config)
        in_process = {**env, **login._changes()}
        key = parse_postlogin_key(serve_key("imap", env, config="/c.toml", stamp=stamp))
        assert key is not None
        out = Resolver().compute(config, 0, key, 0.0, stamp)

        if out.answer.kind == "found":
            fields = parse_json_object(out.answer.value)
            assert stamp == fields.pop(STAMP_FIELD)
            assert _keys_as_set(in_process) == _keys_as_set(merge_fields(env, fields))
            assert [] == errors
        else:
            assert [f"namespaces: {out.answer.error}"] == errors
            assert env == in_process

    check()


#: What an environment value or a path can hold: any bytes but NUL, decoded as os.environ does.
env_values = st.binary().map(
    lambda b: b.replace(b"\0", b"").decode("utf-8", "surrogateescape")
) | st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]))


@given(st.fixed_dictionaries({}, optional=dict.fromkeys(IDENTITY_FIELDS, env_values)), env_values)
def test_key_round_trip(env: dict[str, str], config: str) -> None:
    """Every identity variable and the config path survive the key, whatever they hold."""
    key = parse_postlogin_key(serve_key("pop3", env, config=config, stamp="9:8:7:6:5"))

    assert key is not None or not config
    if key is not None:
        assert (env, config, "pop3", "9:8:7:6:5") == (
            key.environ,
            key.config,
            key.protocol,
            key.stamp,
        )
