"""The trust rule (nsprov._trust), checked against the real filesystem.

Most cases change owners, so they need root (CI runs as root); a normal user
runs the cases that only change modes.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import pytest

from nsprov._trust import MAX_LINKS, check_trusted, open_trusted, read_trusted, rule
from nsprov.exceptions import NsprovError, UntrustedFileError

if TYPE_CHECKING:
    from pathlib import Path

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changes owners: needs root")


@pytest.fixture(name="base")
def _base(tmp_path: Path) -> Path:
    """A 0755 directory only we may write, under directories that pass the rule."""
    base = tmp_path / "base"
    base.mkdir()
    base.chmod(0o755)
    return base


def _file(path: Path, text: str = "x = 1\n", mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def refusal(path: Path | str, **kwargs: object) -> UntrustedFileError:
    with pytest.raises(UntrustedFileError) as info:
        read_trusted(str(path), what="config file", **kwargs)  # type: ignore[arg-type]
    return info.value


class TestRule:
    """Files and the directories above them: owners, modes and types."""

    def test_trusted_file_is_read(self, base: Path) -> None:
        """A file of ours, mode 0644, under directories of ours, is read in full."""
        path = _file(base / "nsprov.toml", "a = 1\n" * 1000)

        assert b"a = 1\n" * 1000 == read_trusted(str(path))

    def test_error_is_a_permission_error(self) -> None:
        """UntrustedFileError is an NsprovError and a PermissionError."""
        assert issubclass(UntrustedFileError, NsprovError)
        assert issubclass(UntrustedFileError, PermissionError)

    def test_world_writable_file(self, base: Path) -> None:
        """A 0666 file is refused; the message names the file, its mode and the rule."""
        path = _file(base / "nsprov.toml", mode=0o666)

        e = refusal(path)

        assert str(e).startswith(f"{path}: config file not trusted: {path} is writable")
        assert "(mode 0666)" in str(e)
        assert rule() in str(e)
        assert (str(path), str(path)) == (e.path, e.component)

    def test_group_writable_file(self, base: Path) -> None:
        """A 0664 file is refused too: every member of its group could rewrite it."""
        path = _file(base / "nsprov.toml", mode=0o664)

        assert "(mode 0664)" in str(refusal(path))

    def test_writable_parent(self, base: Path) -> None:
        """A file of ours in a 0777 directory is refused: anybody could replace it."""
        (base / "d").mkdir()
        (base / "d").chmod(0o777)
        path = _file(base / "d" / "nsprov.toml")

        e = refusal(path)

        assert f"{base / 'd'} is writable by group or other (mode 0777)" in str(e)
        assert str(base / "d") == e.component

    def test_sticky_parent(self, base: Path) -> None:
        """A sticky world-writable directory (like /tmp) above a file of ours is fine."""
        (base / "t").mkdir()
        (base / "t").chmod(0o1777)
        path = _file(base / "t" / "nsprov.toml")

        assert b"x = 1\n" == read_trusted(str(path))

    def test_sticky_final_directory(self, base: Path) -> None:
        """A sticky world-writable directory is no cache or socket directory."""
        (base / "t").mkdir()
        (base / "t").chmod(0o1777)

        with pytest.raises(UntrustedFileError, match="mode 1777"):
            check_trusted(str(base / "t"), what="cache directory", directory=True)

    def test_directory(self, base: Path) -> None:
        """A directory of ours passes as a directory; its descriptor can be used."""
        fd, s = open_trusted(str(base), directory=True)
        try:
            names = os.listdir(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

        assert (True, []) == (s.st_ino == base.stat().st_ino, names)

    def test_not_a_directory(self, base: Path) -> None:
        """A file where a directory is needed, on the way or at the end, is an OSError."""
        path = _file(base / "f")

        with pytest.raises(NotADirectoryError):
            read_trusted(str(path / "x"))
        with pytest.raises(NotADirectoryError):
            check_trusted(str(path), directory=True)

    def test_missing(self, base: Path) -> None:
        """An absent file is a FileNotFoundError, not a refusal."""
        with pytest.raises(FileNotFoundError):
            read_trusted(str(base / "absent.toml"))

    def test_fifo_refused_without_blocking(self, base: Path) -> None:
        """A FIFO is refused at once (before, reading it blocked for ever)."""
        fifo = base / "nsprov.toml"
        os.mkfifo(fifo, 0o600)
        result: list[BaseException] = []
        reader = threading.Thread(
            target=lambda: result.append(refusal(fifo)), daemon=True, name="fifo-reader"
        )

        reader.start()
        reader.join(5)

        assert not reader.is_alive()
        assert "is not a regular file (a FIFO)" in str(result[0])

    def test_device_refused(self) -> None:
        """/dev/zero is refused as a character device (before, it was read for ever)."""
        assert "is not a regular file (a character device)" in str(refusal("/dev/zero"))

    def test_directory_is_no_file(self, base: Path) -> None:
        """A directory where a file is needed is refused."""
        assert "(a directory)" in str(refusal(base))
        assert "(a directory)" in str(refusal("/"))

    def test_size_cap(self, base: Path) -> None:
        """A file over the cap is refused, naming the cap."""
        path = _file(base / "big.toml", "#" * 2048)

        assert "larger than 1 KiB" in str(refusal(path, limit=1024))
        assert 2048 == len(read_trusted(str(path), limit=2048))

    def test_relative_path_and_dots(self, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A relative path is walked from the working directory; ``.`` and ``..`` resolve."""
        (base / "d").mkdir()
        _file(base / "n.toml")
        monkeypatch.chdir(base / "d")

        assert b"x = 1\n" == read_trusted("./../d/../n.toml")
        assert b"x = 1\n" == read_trusted("/../" + str(base / "n.toml"))


class TestLinks:
    """Symbolic links are followed only when trusted, and their targets walked by the rule."""

    def test_trusted_link(self, base: Path) -> None:
        """A link of ours to a trusted file, relative or absolute, is followed."""
        (base / "real").mkdir()
        target = _file(base / "real" / "n.toml")
        (base / "rel.toml").symlink_to("real/n.toml")
        (base / "abs.toml").symlink_to(target)
        (base / "dir").symlink_to("real")

        assert b"x = 1\n" == read_trusted(str(base / "rel.toml"))
        assert b"x = 1\n" == read_trusted(str(base / "abs.toml"))
        assert b"x = 1\n" == read_trusted(str(base / "dir" / "n.toml"))

    def test_link_to_untrusted_target(self, base: Path) -> None:
        """The target is walked by the rule: a link to a 0666 file is refused, naming the target."""
        target = _file(base / "n.toml", mode=0o666)
        (base / "link.toml").symlink_to(target)

        e = refusal(base / "link.toml")

        assert (str(base / "link.toml"), str(target)) == (e.path, e.component)

    def test_link_into_writable_directory(self, base: Path) -> None:
        """A link through a 0777 directory is refused at that directory."""
        (base / "w").mkdir()
        (base / "w").chmod(0o777)
        _file(base / "w" / "n.toml")
        (base / "link").symlink_to("w")

        assert str(base / "w") == refusal(base / "link" / "n.toml").component

    def test_loop(self, base: Path) -> None:
        """A link loop ends after MAX_LINKS links with ELOOP."""
        (base / "a").symlink_to("b")
        (base / "b").symlink_to("a")

        with pytest.raises(OSError, match="Too many levels") as info:
            read_trusted(str(base / "a"))

        assert 40 == MAX_LINKS
        assert 40 == info.value.errno

    @needs_root
    def test_foreign_link_in_sticky_directory(self, base: Path) -> None:
        """In a sticky directory, a link someone else planted is refused (the attack on /tmp)."""
        (base / "t").mkdir()
        (base / "t").chmod(0o1777)
        target = _file(base / "n.toml")
        link = base / "t" / "cache"
        link.symlink_to(target)
        os.chown(link, NOBODY, NOBODY, follow_symlinks=False)

        e = refusal(link)

        assert f"{link} is owned by uid {NOBODY}" in str(e)


@needs_root
class TestOwners:
    """Owners other than root and the running uid."""

    def test_file_of_another_user(self, base: Path) -> None:
        """A 0644 file owned by another user is refused (that user could rewrite it)."""
        path = _file(base / "nsprov.toml")
        os.chown(path, NOBODY, NOBODY)

        assert f"{path} is owned by uid {NOBODY}" in str(refusal(path))

    def test_directory_of_another_user(self, base: Path) -> None:
        """A root file in a directory owned by another user is refused at that directory."""
        (base / "u").mkdir()
        os.chown(base / "u", NOBODY, NOBODY)
        path = _file(base / "u" / "nsprov.toml")

        assert str(base / "u") == refusal(path).component

    def test_foreign_file_in_sticky_directory(self, base: Path) -> None:
        """A file someone else made in a sticky directory is refused."""
        (base / "t").mkdir()
        (base / "t").chmod(0o1777)
        path = _file(base / "t" / "nsprov.toml")
        os.chown(path, NOBODY, NOBODY)

        assert f"is owned by uid {NOBODY}" in str(refusal(path))

    def test_trusted_uids(self, base: Path) -> None:
        """*uids* names the trusted owners: another user's file passes when that uid is trusted."""
        path = _file(base / "nsprov.toml")
        os.chown(path, NOBODY, NOBODY)

        assert b"x = 1\n" == read_trusted(str(path), uids={0, NOBODY})
