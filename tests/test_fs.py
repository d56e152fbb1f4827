"""The filesystem seam (nsprov._fs): the descriptor walk, the safe readers, the private writer."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import pytest

from nsprov import _fs as fs_module
from nsprov import _scan, _trust
from nsprov._fs import (
    DEFAULT_FS,
    IGNORE_MAX_BYTES,
    Fs,
    anchored_facts,
    dir_sig,
    listing,
    look,
    read_ignore_file,
    read_regular_file,
    write_private,
)
from nsprov.exceptions import UntrustedFileError

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(name="base")
def _base(tmp_path: Path) -> Path:
    """A 0755 directory only we may write, under directories that pass the trust rule."""
    base = tmp_path / "base"
    base.mkdir()
    base.chmod(0o755)
    return base


class TestReexports:
    """The names that moved here stay importable from where they were."""

    def test_scan_and_trust_names(self) -> None:
        """_scan re-exports the seam, _fs re-exports the trust rule's readers."""
        assert (Fs, DEFAULT_FS, IGNORE_MAX_BYTES, _trust.read_trusted, _trust.read_fd) == (
            _scan.Fs,
            _scan.DEFAULT_FS,
            _scan.IGNORE_MAX_BYTES,
            fs_module.read_trusted,
            fs_module.read_fd,
        )


class TestDescriptorWalk:
    """anchored_facts opens each name by descriptor, never through a symbolic link."""

    def test_maildir(self, base: Path) -> None:
        """A maildir two levels down gives its parts, then cur and new, each with facts."""
        for sub in ("cur", "new"):
            (base / "a" / "box" / sub).mkdir(parents=True)

        steps = anchored_facts(os.fsencode(base), [b"a", b"box"])

        assert [b"a", b"box", b"cur", b"new"] == [name for name, _, _ in steps]
        assert all(facts is not None and facts.uid == os.getuid() for _, _, facts in steps)

    def test_stops_at_symlink(self, base: Path) -> None:
        """A symbolic link on the way ends the walk with its mode and no facts."""
        (base / "real").mkdir()
        (base / "link").symlink_to(base / "real")

        steps = anchored_facts(os.fsencode(base), [b"link"])

        assert 1 == len(steps)
        assert stat.S_ISLNK(steps[0][1])
        assert steps[0][2] is None

    def test_absent(self, base: Path) -> None:
        """An absent name is mode 0, no descriptor."""
        fd = os.open(base, os.O_PATH | os.O_DIRECTORY)
        try:
            assert (None, (b"gone", 0, None)) == look(fd, b"gone")
        finally:
            os.close(fd)

    def test_listing_and_sig(self, base: Path) -> None:
        """listing gives names with inode numbers; dir_sig moves when an entry is added."""
        (base / "x").mkdir()
        before = dir_sig(os.fsencode(base))
        os.utime(base, ns=(1, 1))

        assert [(b"x", (base / "x").stat().st_ino)] == listing(os.fsencode(base))
        assert before != dir_sig(os.fsencode(base))


class TestReaders:
    """The readers are bounded, never follow a link and never block on a FIFO."""

    def test_regular_file(self, base: Path) -> None:
        """A small file's text; absent is None."""
        (base / "f").write_text("From x\n")

        assert ("From x\n", None) == (
            read_regular_file(os.fsencode(base / "f")),
            read_regular_file(os.fsencode(base / "absent")),
        )

    def test_fifo_not_read(self, base: Path) -> None:
        """A FIFO is opened non-blocking and not read: None."""
        os.mkfifo(base / "pipe")

        assert read_regular_file(os.fsencode(base / "pipe")) is None

    def test_symlink_refused(self, base: Path) -> None:
        """A symbolic link is not followed."""
        (base / "f").write_text("x")
        (base / "link").symlink_to(base / "f")

        with pytest.raises(OSError, match="Too many levels"):
            read_regular_file(os.fsencode(base / "link"))

    def test_ignore_file(self, base: Path) -> None:
        """An ignore file that passes the trust rule is read; an absent one is None."""
        (base / ".nsprov-ignore").write_text("tmp*\n")
        (base / ".nsprov-ignore").chmod(0o644)

        assert ("tmp*\n", None) == (
            read_ignore_file(os.fsencode(base / ".nsprov-ignore")),
            read_ignore_file(os.fsencode(base / "absent")),
        )

    def test_ignore_file_untrusted(self, base: Path) -> None:
        """A group-writable ignore file is refused, naming the rule."""
        (base / "ign").write_text("x\n")
        (base / "ign").chmod(0o664)

        with pytest.raises(UntrustedFileError, match="writable by group or other"):
            read_ignore_file(os.fsencode(base / "ign"))

    def test_ignore_file_in_writable_spool_absent(self, base: Path) -> None:
        """In a spool others may write, an absent ignore file is no finding: None."""
        base.chmod(0o777)

        assert read_ignore_file(os.fsencode(base / "absent")) is None


class TestWritePrivate:
    """write_private replaces a file atomically, mode 0600, and leaves no temporary file."""

    def test_replaces(self, base: Path) -> None:
        """The new contents replace the old, mode 0600."""
        (base / "f").write_bytes(b"old")

        write_private(str(base / "f"), b"new" * 100000)

        assert (b"new" * 100000, 0o600, ["f"]) == (
            (base / "f").read_bytes(),
            stat.S_IMODE((base / "f").stat().st_mode),
            os.listdir(base),
        )

    def test_in_dir_fd(self, base: Path) -> None:
        """With dir_fd the name is resolved in that directory."""
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        try:
            write_private("f", b"data", dir_fd=fd)
        finally:
            os.close(fd)

        assert b"data" == (base / "f").read_bytes()

    def test_failure_cleans_up(self, base: Path) -> None:
        """A rename that fails removes the temporary file and raises."""
        (base / "f").mkdir()
        (base / "f" / "x").write_text("keep")

        with pytest.raises(OSError, match="directory"):
            write_private(str(base / "f"), b"data")

        assert ["f"] == os.listdir(base)

    def test_short_writes(self, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A short write is continued until every byte is written."""
        real_write = os.write

        def short(fd: int, data: bytes | memoryview) -> int:
            return real_write(fd, bytes(data[:3]))

        from nsprov import _os

        monkeypatch.setattr(_os, "write", short)
        write_private(str(base / "f"), b"0123456789")
        monkeypatch.undo()

        assert b"0123456789" == (base / "f").read_bytes()


def test_default_fs_facts(base: Path) -> None:
    """Fs.facts gives the lstat result and the facts decide() reads."""
    s, facts = Fs().facts(os.fsencode(base))

    assert (s.st_mode, s.st_uid, s.st_gid) == (facts.mode, facts.uid, facts.gid)
