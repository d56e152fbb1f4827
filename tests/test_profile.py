"""The login profile file: its key, its trust rule, the atomic write, and the choice of path."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import marshal
import os
import sys
from typing import TYPE_CHECKING

import pytest

from nsprov import _defaults, _postlogin, _profile
from nsprov._config import DEFAULT_CACHE_DIR
from nsprov._lean import PROFILE_SCHEMA

if TYPE_CHECKING:
    from pathlib import Path

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

        monkeypatch.setattr(os, "mkdir", no_mkdir)
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
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
        assert _profile.default_dir() is None
        assert (None, "no profile directory") == _profile.load_status("/x", None)[:2]
        monkeypatch.setattr(os, "geteuid", lambda: 0)
        assert "/run/nsprov" == _profile.default_dir()


class TestProtocols:
    @pytest.mark.parametrize(
        ("protocol", "expected"),
        [("imap", ("namespaces",)), ("pop3", ()), (None, ("namespaces",))],
    )
    def test_protocol_actions(self, protocol: str | None, expected: tuple[str, ...]) -> None:
        assert expected == _profile.protocol_actions(PROFILE, protocol)
