"""The login profile file: its key, its trust rule, the atomic write, and the choice of path."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import marshal
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nsprov import _defaults, _lean, _os, _postlogin, _profile
from nsprov._config import DEFAULT_CACHE_DIR
from nsprov._lean import PROFILE_SCHEMA
from nsprov._postlogin import (
    T_CLIENT,
    T_DEADLINE,
    T_DENY,
    T_ENV,
    T_LOGIN,
    T_OK,
    T_POLICY,
    T_SCAN,
    Options,
)
from nsprov._worker import run

from .test_fastpath import ENV, box_toml
from .test_postlogin import Exec, collect_frames

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")

PROFILE = {
    "schema": PROFILE_SCHEMA,
    "source": "x",
    "postlogin": _profile.postlogin_part(
        deadline=2.0,
        on_error="continue",
        dialect="2.3",
        debug_users=(),
        actions=(("namespaces",), (), ("namespaces",)),
    ),
}


@pytest.fixture(name="setup")
def _setup(tmp_path: Path) -> tuple[Path, Path]:
    tmp_path.chmod(0o700)
    config = tmp_path / "nsprov.toml"
    config.write_text("[postlogin]\n")
    config.chmod(0o644)
    state = tmp_path / "state"
    return config, state


def profile_file(config: Path, state: Path) -> Path:
    return state / _profile.file_name(str(config))


class TestKey:
    def test_constants_agree(self) -> None:
        """The version, the bytecode magic and the state directory are the ones nsprov uses."""
        assert importlib.metadata.version("nsprov") == _defaults.VERSION
        assert importlib.util.MAGIC_NUMBER == _profile._magic()
        assert DEFAULT_CACHE_DIR == _defaults.STATE_DIR == _postlogin.HINT_DIR

    def test_key_names_the_file_and_the_interpreter(self, setup: tuple[Path, Path]) -> None:
        config, _ = setup
        s = config.stat()
        assert (
            str(config),
            s.st_dev,
            s.st_ino,
            s.st_size,
            s.st_mtime_ns,
            s.st_ctime_ns,
            _defaults.VERSION,
            sys.implementation.cache_tag,
            importlib.util.MAGIC_NUMBER,
            PROFILE_SCHEMA,
        ) == _profile.config_key(str(config))

    def test_untrusted_config_has_no_key(self, setup: tuple[Path, Path]) -> None:
        config, _ = setup
        config.chmod(0o666)
        assert _profile.config_key(str(config)) is None
        assert _profile.config_key(str(config.parent / "absent.toml")) is None

    def test_file_name_per_path(self) -> None:
        assert _profile.file_name("/a/b.toml") == _profile.file_name("/a/./b.toml")
        assert _profile.file_name("/a/b.toml") != _profile.file_name("/a/c.toml")
        assert _profile.file_name("/a").startswith("profile-")


class TestLoadStore:
    def test_round_trip(self, setup: tuple[Path, Path]) -> None:
        """A stored profile loads warm; the directory is made 0700; the file is 0600."""
        config, state = setup
        assert (None, "missing") == _profile.load_status(str(config), str(state))[:2]
        assert _profile.store(str(config), PROFILE, directory=str(state))

        assert PROFILE == _profile.load(str(config), str(state))
        assert "warm" == _profile.load_status(str(config), str(state))[1]
        assert 0o700 == state.stat().st_mode & 0o777
        assert 0o600 == profile_file(config, state).stat().st_mode & 0o777
        assert [profile_file(config, state).name] == os.listdir(state)

    def test_store_does_not_mkdir_an_existing_directory(
        self, setup: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config, state = setup
        state.mkdir(mode=0o700)

        def no_mkdir(*_args: object, **_kw: object) -> None:
            raise AssertionError("mkdir of a directory that exists")

        monkeypatch.setattr(_os, "mkdir", no_mkdir)  # the login path's os: nsprov._os
        assert _profile.store(str(config), PROFILE, directory=str(state))

    @pytest.mark.parametrize(
        "edit",
        [
            lambda p: p.write_text("[postlogin]\ndeadline = 1\n"),  # size, mtime
            lambda p: p.chmod(0o600),  # ctime
            lambda p: os.utime(p, ns=(1, 1)),  # mtime
        ],
    )
    def test_edit_makes_it_stale(self, setup: tuple[Path, Path], edit: object) -> None:
        config, state = setup
        _profile.store(str(config), PROFILE, directory=str(state))
        edit(config)  # type: ignore[operator]

        assert (None, "stale") == _profile.load_status(str(config), str(state))[:2]

    def test_replaced_file_is_stale(self, setup: tuple[Path, Path]) -> None:
        config, state = setup
        _profile.store(str(config), PROFILE, directory=str(state))
        other = config.with_name("new.toml")
        other.write_text(config.read_text())
        other.replace(config)

        assert (None, "stale") == _profile.load_status(str(config), str(state))[:2]

    def test_other_version_is_stale(
        self, setup: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config, state = setup
        _profile.store(str(config), PROFILE, directory=str(state))
        monkeypatch.setattr(_profile, "VERSION", "0.0.0-other")

        assert (None, "stale") == _profile.load_status(str(config), str(state))[:2]

    def test_key_taken_before_the_read_wins(self, setup: tuple[Path, Path]) -> None:
        """A profile stored under the key of the file as it was read is stale after an edit."""
        config, state = setup
        key = _profile.config_key(str(config))
        config.write_text("[postlogin]\ndeadline = 1\n")
        _profile.store(str(config), PROFILE, key=key, directory=str(state))

        assert (None, "stale") == _profile.load_status(str(config), str(state))[:2]

    @pytest.mark.parametrize(
        "blob",
        [
            b"",
            b"\x00garbage",
            marshal.dumps(("not", "a", "pair")),
            marshal.dumps([1, 2]),
        ],
    )
    def test_corrupt(self, setup: tuple[Path, Path], blob: bytes) -> None:
        config, state = setup
        _profile.store(str(config), PROFILE, directory=str(state))
        profile_file(config, state).write_bytes(blob)

        assert (None, "corrupt") == _profile.load_status(str(config), str(state))[:2]

    @pytest.mark.parametrize(
        "profile",
        [
            {**PROFILE, "schema": PROFILE_SCHEMA + 1},
            {k: v for k, v in PROFILE.items() if k != "postlogin"},
            {**PROFILE, "postlogin": {**PROFILE["postlogin"], "actions": (("namespaces",),)}},  # type: ignore[dict-item]
            {**PROFILE, "postlogin": {**PROFILE["postlogin"], "on_error": "maybe"}},  # type: ignore[dict-item]
            {**PROFILE, "postlogin": {**PROFILE["postlogin"], "deadline": "2"}},  # type: ignore[dict-item]
            ["not a dict"],
        ],
    )
    def test_wrong_schema(self, setup: tuple[Path, Path], profile: object) -> None:
        config, state = setup
        key = _profile.config_key(str(config))
        state.mkdir(mode=0o700)
        profile_file(config, state).write_bytes(marshal.dumps((key, profile)))  # type: ignore[arg-type]
        profile_file(config, state).chmod(0o600)

        assert (None, "corrupt") == _profile.load_status(str(config), str(state))[:2]

    @root_only
    def test_foreign_owned_refused(self, setup: tuple[Path, Path]) -> None:
        config, state = setup
        _profile.store(str(config), PROFILE, directory=str(state))
        os.chown(profile_file(config, state), NOBODY, NOBODY)

        assert (None, "missing") == _profile.load_status(str(config), str(state))[:2]

    @pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
    def test_writable_by_others_refused(self, setup: tuple[Path, Path], mode: int) -> None:
        config, state = setup
        _profile.store(str(config), PROFILE, directory=str(state))
        profile_file(config, state).chmod(mode)

        assert (None, "missing") == _profile.load_status(str(config), str(state))[:2]

    def test_link_refused(self, setup: tuple[Path, Path]) -> None:
        config, state = setup
        _profile.store(str(config), PROFILE, directory=str(state))
        real = state / "real"
        profile_file(config, state).rename(real)
        profile_file(config, state).symlink_to(real)

        assert (None, "missing") == _profile.load_status(str(config), str(state))[:2]

    def test_untrusted_directory(self, setup: tuple[Path, Path]) -> None:
        config, state = setup
        _profile.store(str(config), PROFILE, directory=str(state))
        state.chmod(0o777)

        assert (None, "untrusted profile directory") == _profile.load_status(
            str(config), str(state)
        )[:2]
        assert not _profile.store(str(config), PROFILE, directory=str(state))

    def test_unmarshallable_not_stored(self, setup: tuple[Path, Path]) -> None:
        config, state = setup
        assert not _profile.store(str(config), {**PROFILE, "x": object()}, directory=str(state))
        assert not state.exists()

    def test_only_root_has_a_profile_directory(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(_os, "geteuid", lambda: 1000)
        assert _profile.default_dir() is None
        assert (None, "no profile directory") == _profile.load_status("/x", None)[:2]
        monkeypatch.setattr(_os, "geteuid", lambda: 0)
        assert "/run/nsprov" == _profile.default_dir()


class TestProtocols:
    @pytest.mark.parametrize(
        ("protocol", "expected"),
        [("imap", ("namespaces",)), ("pop3", ()), (None, ("namespaces",))],
    )
    def test_protocol_actions(self, protocol: str | None, expected: tuple[str, ...]) -> None:
        assert expected == _profile.protocol_actions(PROFILE, protocol)


# --- the choice of path: cold (full, stores), warm (lean), nothing configured (exec) ----------


class Paths:
    """Runs a login's worker in-process; records which path served it."""

    def __init__(self, config: Path, state: Path) -> None:
        self.config = config
        self.state = state
        self.full: list[str] = []

    def full_worker(self, fd: int, opts: Options, environ: Mapping[str, str], why: str) -> None:
        self.full.append(why)
        run(fd, opts, environ, profile=why, profile_dir=str(self.state))

    def login(
        self, protocol: str | None = "imap", env: Mapping[str, str] = ENV, next_: str = ""
    ) -> list[tuple[bytes, bytes]] | None:
        opts = Options()
        opts.config = str(self.config)
        opts.protocol = protocol
        opts.next = [next_ or "/nonexistent/script-login"]
        work = _profile.dispatch(opts, env, full=self.full_worker, directory=str(self.state))
        return None if work is None else collect_frames(work)


def env_frames(frames: list[tuple[bytes, bytes]] | None) -> dict[bytes, bytes]:
    assert frames is not None
    assert (T_OK, b"") == frames[-1]
    return dict(p.split(b"\0", 1) for t, p in frames if t == T_ENV)


@pytest.fixture(name="paths")
def _paths(tmp_path: Path) -> Iterator[Paths]:
    base = Path(tempfile.mkdtemp(prefix="nsprov-profile-"))  # /tmp: every user may reach it
    base.chmod(0o755)
    box = base / "fast"
    for name in ("sales", "Weird Name"):
        for sub in ("cur", "new", "tmp"):
            (box / name / sub).mkdir(parents=True)
    for d in (box, *box.rglob("*")):
        d.chmod(0o755)
    config = base / "nsprov.toml"
    config.write_text(box_toml(box, '[actions]\nimap = ["namespaces"]\npop3 = []\n'))
    try:
        yield Paths(config, tmp_path / "state")
    finally:
        shutil.rmtree(base)


class TestDispatch:
    def test_cold_then_warm(self, paths: Paths) -> None:
        """The first login takes the full path and stores the profile; the next one is lean."""
        cold = env_frames(paths.login())
        assert b"NAMESPACE" in cold
        assert ["missing"] == paths.full
        assert _profile.load(str(paths.config), str(paths.state)) is not None
        stored = os.stat(paths.state / _profile.file_name(str(paths.config)))

        warm = env_frames(paths.login())

        assert ["missing"] == paths.full  # the lean path served
        assert b"NAMESPACE" in warm
        assert cold == warm
        again = os.stat(paths.state / _profile.file_name(str(paths.config)))
        assert (stored.st_ino, stored.st_mtime_ns) == (again.st_ino, again.st_mtime_ns)

    def test_nothing_configured_execs_at_once(self, paths: Paths) -> None:
        """A warm profile whose protocol runs no action: no worker at all (None)."""
        paths.login()
        assert paths.login("pop3") is None
        assert ["missing"] == paths.full

    def test_edited_config_rebuilds(self, paths: Paths) -> None:
        paths.login()
        paths.config.write_text(paths.config.read_text() + "\n")
        paths.login()
        paths.login()
        assert ["missing", "stale"] == paths.full

    def test_corrupt_profile_takes_the_full_path(self, paths: Paths) -> None:
        paths.login()
        (paths.state / _profile.file_name(str(paths.config))).write_bytes(b"junk")
        paths.login()
        paths.login()
        assert ["missing", "corrupt"] == paths.full

    @root_only
    def test_foreign_profile_takes_the_full_path(self, paths: Paths) -> None:
        paths.login()
        os.chown(paths.state / _profile.file_name(str(paths.config)), NOBODY, NOBODY)
        paths.login()
        assert ["missing", "missing"] == paths.full
        assert 0 == os.stat(paths.state / _profile.file_name(str(paths.config))).st_uid

    def test_other_actions_store_no_profile(self, paths: Paths) -> None:
        """A config the lean path cannot serve (here [mail]) keeps the full path."""
        text = paths.config.read_text().replace(
            'imap = ["namespaces"]', 'imap = ["namespaces", "mail"]'
        )
        paths.config.write_text(text + '[mail]\nlocation = "maildir:{home}/Other"\n')
        frames = paths.login()
        paths.login()
        assert ["missing", "missing"] == paths.full
        assert env_frames(frames)[b"MAIL"] == b"maildir:/home/other/Other"
        assert not (paths.state / _profile.file_name(str(paths.config))).exists()

    def test_fields_are_served_lean(self, paths: Paths) -> None:
        """A [[field]] runs on the lean path: the same frames as the full path's, profile warm."""
        text = paths.config.read_text().replace(
            'imap = ["namespaces"]', 'imap = ["namespaces", "fields"]'
        )
        paths.config.write_text(text + '[[field]]\nname = "x"\nvalue = "{user}"\n')
        cold = paths.login()
        warm = paths.login()
        assert ["missing"] == paths.full
        assert env_frames(warm)[b"X"] == b"other"
        assert env_frames(cold) == env_frames(warm)

    @pytest.mark.parametrize("user", ["other", "someone"])
    def test_deny_and_alert_frames_lean(self, paths: Paths, user: str) -> None:
        """A warm login sends the full path's client lines and denial (T_CLIENT, T_DENY)."""
        text = paths.config.read_text().replace(
            'imap = ["namespaces"]', 'imap = ["alert", "deny", "namespaces"]'
        )
        paths.config.write_text(
            text + '[[alert]]\ntext = "Hi {user}"\n[deny]\nusers = ["oth*"]\nmessage = "No."\n'
        )
        env = {**ENV, "USER": user}

        def outcome(frames: list[tuple[bytes, bytes]] | None) -> list[tuple[bytes, bytes]]:
            assert frames is not None
            return [(t, p) for t, p in frames if t not in (T_DEADLINE, T_POLICY, T_LOGIN, T_SCAN)]

        cold = outcome(paths.login(env=env))
        warm = outcome(paths.login(env=env))
        assert ["missing"] == paths.full
        assert cold == warm
        if user == "other":
            assert [(T_CLIENT, b"* BYE [ALERT] No.\r\n"), (T_DENY, b""), (T_OK, b"")] == warm
        else:
            assert (T_CLIENT, b"* OK [ALERT] Hi someone\r\n") in warm

    def test_compute_failing_takes_the_full_path(
        self, paths: Paths, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
    ) -> None:
        cold = env_frames(paths.login())

        def broken(*_args: object, **_kw: object) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(_lean, "run_login", broken)
        capfd.readouterr()
        assert cold == env_frames(paths.login())
        assert ["missing", "lean path failed"] == paths.full
        err = capfd.readouterr().err
        assert (
            "the lean login path failed (RuntimeError: boom); this login takes the full path" in err
        )
        assert 1 == err.count("\n")

    def test_debug_user_takes_the_full_path(
        self, paths: Paths, capfd: pytest.CaptureFixture[str]
    ) -> None:
        paths.config.write_text(paths.config.read_text() + '[postlogin]\ndebug_users = ["other"]\n')
        paths.login()
        capfd.readouterr()
        paths.login()
        assert ["missing", "warm; a debug user"] == paths.full
        assert (
            "debug: the full login path served (profile: warm; a debug user)"
            in capfd.readouterr().err
        )

    def test_other_dovecot_installed_takes_the_full_path(
        self, paths: Paths, tmp_path: Path
    ) -> None:
        libexec = tmp_path / "libexec"
        libexec.mkdir()
        (libexec / "libdovecot-language.so").touch()
        paths.login()
        frames = paths.login(next_=str(libexec / "script-login"))
        assert ["missing", "Dovecot 2.4 installed, profile for 2.3"] == paths.full
        assert {} == env_frames(frames)

    def test_deadline_and_policy_first(self, paths: Paths) -> None:
        paths.login()
        frames = paths.login()
        assert frames is not None
        assert [(T_DEADLINE, b"2.0"), (T_POLICY, b"continue")] == frames[:2]


def test_main_execs_when_the_worker_factory_says_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    """main() execs the next program untouched, forking nothing, when the factory gives None."""
    ex = Exec()
    env = {"USER": "a", "USERDB_KEYS": ""}
    _postlogin.main(["/bin/next", "x"], environ=env, execve=ex, worker=lambda _o, _e: None)
    assert [("/bin/next", ["/bin/next", "x"], env)] == ex.calls
    assert "" == capfd.readouterr().err


@root_only
def test_nothing_configured_imports_nothing_more(paths: Paths) -> None:
    """A warm pop3 login with no pop3 action: the parent execs with only these modules loaded."""
    fast = str(Path(_postlogin.__file__).with_name("_fast.py"))
    argv = [sys.executable, "-I", "-S", "-X", "importtime", fast, f"--config={paths.config}"]
    profile = Path(_defaults.STATE_DIR) / _profile.file_name(str(paths.config))
    try:
        cold = subprocess.run(
            [*argv, "--protocol=imap", "/bin/true"], env=ENV, capture_output=True, check=True
        )
        assert profile.exists(), cold.stderr
        warm = subprocess.run(
            [*argv, "--protocol=pop3", "/bin/true"],
            env=ENV,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        profile.unlink(missing_ok=True)
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in warm.stderr.splitlines()
        if line.startswith("import time:") and "imported package" not in line
    }
    nsprov_modules = {m for m in imported if m.split(".")[0] == "nsprov"}
    assert {
        "nsprov",
        "nsprov._defaults",
        "nsprov._main",
        "nsprov._os",
        "nsprov._postlogin",
        "nsprov._profile",
        "nsprov._servefields",
        "nsprov._trust",
        "nsprov.exceptions",
    } == nsprov_modules
    assert (
        set() == {"site", "attrs", "typing", "re", "select", "errno", "importlib.util"} & imported
    )
