"""Loading the configuration file: the trust rule and the cache of the parsed TOML."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from nsprov._config import load_config
from nsprov.exceptions import ConfigError, UntrustedFileError

if TYPE_CHECKING:
    from pathlib import Path


class TestTrust:
    """The config file must pass the trust rule (issue 16, findings 2 and 14)."""

    def test_world_writable_config_refused(self, tmp_path: Path) -> None:
        """A 0666 config is refused, naming the file and the rule (before: it was read)."""
        path = tmp_path / "nsprov.toml"
        path.write_text('[[spool]]\npath = "/a"\n')
        path.chmod(0o666)

        with pytest.raises(UntrustedFileError, match=r"nsprov\.toml is writable by group or other"):
            load_config(str(path))

    def test_fifo_config_refused(self, tmp_path: Path) -> None:
        """A FIFO config is refused at once (before: the read blocked for ever)."""
        path = tmp_path / "nsprov.toml"
        os.mkfifo(path, 0o600)

        with pytest.raises(UntrustedFileError, match=r"not a regular file \(a FIFO\)"):
            load_config(str(path))

    def test_device_config_refused(self) -> None:
        """/dev/zero as the config is refused (before: read until memory ran out)."""
        with pytest.raises(UntrustedFileError, match="a character device"):
            load_config("/dev/zero")

    def test_oversized_config_refused(self, tmp_path: Path) -> None:
        """A config over 1 MiB is refused."""
        path = tmp_path / "nsprov.toml"
        path.write_text("#" * ((1 << 20) + 1))

        with pytest.raises(UntrustedFileError, match="larger than 1 MiB"):
            load_config(str(path))

    def test_untrusted_cache_directory_unused(self, tmp_path: Path) -> None:
        """A cache directory others may write is neither read nor written."""
        path = tmp_path / "n.toml"
        path.write_text('[[spool]]\npath = "/a"\n')
        cache = tmp_path / "cache"
        cache.mkdir()
        cache.chmod(0o777)

        assert "/a" == load_config(str(path), cache_dir=str(cache)).spools[0].path
        assert [] == list(cache.iterdir())


class TestConfigCache:
    """The parsed-TOML cache used by post-login when running as root."""

    def test_hit_and_invalidation(self, tmp_path: Path) -> None:
        """A cached copy is used until the file changes; then it is refreshed."""
        path = tmp_path / "n.toml"
        cache = tmp_path / "cache"
        path.write_text('[[spool]]\npath = "/a"\n')

        first = load_config(str(path), cache_dir=str(cache))
        [entry] = list(cache.iterdir())
        second = load_config(str(path), cache_dir=str(cache))
        path.write_text('[[spool]]\npath = "/b"\n')
        third = load_config(str(path), cache_dir=str(cache))

        assert first == second
        assert ("/a", "/b") == (second.spools[0].path, third.spools[0].path)
        assert 0o600 == entry.stat().st_mode & 0o777
        assert 0o700 == cache.stat().st_mode & 0o777

    def test_cache_is_not_the_truth(self, tmp_path: Path) -> None:
        """A tampered cache file (not ours to trust, or garbage) is ignored."""
        path = tmp_path / "n.toml"
        cache = tmp_path / "cache"
        path.write_text('[[spool]]\npath = "/a"\n')
        load_config(str(path), cache_dir=str(cache))
        [entry] = list(cache.iterdir())

        entry.chmod(0o622)
        assert "/a" == load_config(str(path), cache_dir=str(cache)).spools[0].path
        entry.write_bytes(b"garbage")
        entry.chmod(0o600)
        assert "/a" == load_config(str(path), cache_dir=str(cache)).spools[0].path

    def test_unmarshallable(self, tmp_path: Path) -> None:
        """TOML with a date is parsed but not cached (and is then a config error here)."""
        path = tmp_path / "n.toml"
        cache = tmp_path / "cache"
        path.write_text("when = 2026-01-01\n")

        with pytest.raises(ConfigError, match="unknown key"):
            load_config(str(path), cache_dir=str(cache))
        assert not cache.exists()
