"""Stale per-user directories and their clean-up."""

from __future__ import annotations

import errno
import os
import shutil
from typing import TYPE_CHECKING

import attrs
import pytest

from nsprov._check.stale import clean_stale_as, find_stale, remove_dirs
from nsprov._identity import MailUser
from nsprov._names import HASH_LENGTH, entry_id
from nsprov._perms import Identity
from nsprov._scan import Fs

from .support import ALICE, OTHER, STALE, maildir, make_config

if TYPE_CHECKING:
    from pathlib import Path


class TestStale:
    """Per-user directories that match no spool entry any more."""

    @pytest.fixture(name="home")
    def _home(self, base: Path, spool: Path) -> Path:
        maildir(spool / "sales")
        maildir(spool / "secret", 0o700)
        (spool / "README").write_text("x")
        home = base / "home"
        (home / ".nsprov").mkdir(parents=True)
        return home

    def ns_dir(self, home: Path, spool: Path, raw: bytes) -> Path:
        return home / ".nsprov" / f"s-{entry_id(os.fsencode(str(spool)), raw)[0]}"

    def test_stale(self, home: Path, spool: Path) -> None:
        """Stale and other-scheme directories are found; current ones, others and files are not."""
        nsp = home / ".nsprov"
        for raw in (b"sales", b"secret", b"README"):
            self.ns_dir(home, spool, raw).mkdir()
        (nsp / STALE).mkdir()
        (nsp / OTHER).mkdir()
        (nsp / "notes").mkdir()
        (nsp / "last-login").write_text("x")
        (nsp / ("s-file-" + "a" * HASH_LENGTH)).write_text("x")
        (nsp / ("s-lnk-" + "a" * HASH_LENGTH)).symlink_to(STALE)
        user = attrs.evolve(ALICE, home=str(home))

        stale, findings = find_stale(make_config(spool), user)

        assert [
            (str(nsp / STALE), "current"),
            (str(nsp / OTHER), "other"),
        ] == [(d.path, d.scheme) for d in stale]
        assert [("stale-dir", "info"), ("stale-other-scheme", "warning")] == [
            (f.code, f.severity) for f in findings
        ]

    def test_no_parent(self, base: Path, spool: Path) -> None:
        """A user without the parent directory has nothing stale."""
        user = attrs.evolve(ALICE, home=str(base / "nohome"))

        assert ([], []) == find_stale(make_config(spool), user)

    def test_homeless(self, spool: Path) -> None:
        """{home} templates are skipped for a user without a home."""
        assert ([], []) == find_stale(make_config(spool), attrs.evolve(ALICE, home=None))

    def test_unlisted_spool(self, home: Path, base: Path) -> None:
        """A parent shared with a spool that cannot be listed is not checked."""
        (home / ".nsprov" / STALE).mkdir()
        user = attrs.evolve(ALICE, home=str(home))

        stale, findings = find_stale(make_config(base / "nope"), user)

        assert [] == stale
        assert [("stale-unchecked", "info")] == [(f.code, f.severity) for f in findings]

    def test_symlinked_parent(self, home: Path, base: Path, spool: Path) -> None:
        """A parent reached through a symbolic link is not checked."""
        real = base / "elsewhere"
        real.mkdir()
        (real / STALE).mkdir()
        shutil.rmtree(home / ".nsprov")
        (home / ".nsprov").symlink_to(real)

        stale, findings = find_stale(make_config(spool), attrs.evolve(ALICE, home=str(home)))

        assert [] == stale
        assert ["stale-unchecked"] == [f.code for f in findings]

    def test_unreadable_parent(self, home: Path, spool: Path) -> None:
        """A parent that cannot be listed is not checked."""

        def listdir(path: bytes) -> list[bytes]:
            if path.endswith(b".nsprov"):
                raise PermissionError(errno.EACCES, "denied")
            return os.listdir(path)

        stale, findings = find_stale(
            make_config(spool), attrs.evolve(ALICE, home=str(home)), fs=Fs(listdir=listdir)
        )

        assert [] == stale
        assert ["stale-unchecked"] == [f.code for f in findings]

    def test_user_template(self, base: Path, spool: Path) -> None:
        """A {user} parent outside the home, with {id} names, works the same way."""
        maildir(spool / "sales")
        parent = base / "idx" / "alice"
        parent.mkdir(parents=True)
        ident = entry_id(os.fsencode(str(spool)), b"sales")[0]
        (parent / f"i-{ident}").mkdir()
        (parent / ("i-" + STALE[2:])).mkdir()
        template = f"{base}/idx/{{user}}/i-{{id}}"
        config = make_config(spool, index=template, control=template)

        stale, _ = find_stale(config, ALICE)

        assert [str(parent / ("i-" + STALE[2:]))] == [d.path for d in stale]

    def test_remove_dirs(self, base: Path) -> None:
        """Trees are removed without following links; files and missing paths are errors."""
        outside = base / "outside"
        outside.mkdir()
        (outside / "keep").write_text("x")
        tree = base / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "f").write_text("x")
        (tree / "link").symlink_to(outside)
        (base / "file").write_text("x")

        results = remove_dirs([str(tree), str(base / "file"), str(base / "missing")])

        assert [str(tree), str(base / "file"), str(base / "missing")] == [p for p, _ in results]
        assert results[0][1] is None
        assert "not a directory" in (results[1][1] or "")
        assert "No such file" in (results[2][1] or "")
        assert not tree.exists()
        assert (outside / "keep").exists()
        assert (base / "file").exists()

    def test_clean_stale_as(self, base: Path) -> None:
        """The forked clean-up reports each path; as the current identity it removes them."""
        tree = base / "tree"
        tree.mkdir()
        me = MailUser(
            user="me", home=str(base), identity=Identity(uid=os.getuid(), gid=os.getgid())
        )

        assert [(str(tree), None)] == clean_stale_as(me, [str(tree)])
        assert not tree.exists()

    def test_clean_stale_as_failure(self, base: Path) -> None:
        """A clean-up process that cannot become the user reports every path as failed."""
        ghost = MailUser(user="ghost", home=None, identity=Identity(uid=-5, gid=-5))

        results = clean_stale_as(ghost, [str(base / "x")])

        assert [str(base / "x")] == [p for p, _ in results]
        assert "could not become user ghost" in (results[0][1] or "")
