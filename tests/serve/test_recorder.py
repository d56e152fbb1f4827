"""Tests for the dependency recorder: what a scan looked at, and when it changed."""

from __future__ import annotations

import os
import shutil
import time
from typing import TYPE_CHECKING, Any

import pytest

from nsprov._identity import MailUser
from nsprov._perms import Identity, PosixAcl
from nsprov._serve.recorder import Recorder

from .helpers import (
    MY_GID,
    ROOT,
    maildir,
    make_config,
)

if TYPE_CHECKING:
    from pathlib import Path


class TestDeps:
    """What invalidates a cached answer: per path, by ctime, and by listing."""

    @staticmethod
    def recorded(spool: Path) -> Any:
        rec = Recorder()
        user = MailUser(
            user="member", home="/h", identity=Identity(uid=70001, gid=70001, groups={MY_GID})
        )
        from nsprov._engine import plan

        plan(make_config(spool), user, {}, fs=rec.fs(), keep_skipped=False)
        return rec.deps()

    def test_unchanged(self, spool: Path) -> None:
        """Nothing changed: still valid."""
        assert None is self.recorded(spool).changed()

    def test_chmod(self, spool: Path) -> None:
        """chmod of one entry invalidates (the spool's mtime does not move)."""
        deps = self.recorded(spool)
        (spool / "sales").chmod(0o700)

        assert os.fsencode(spool / "sales") == deps.changed()

    def test_chown(self, spool: Path) -> None:
        """chown of a cur directory invalidates."""
        if not ROOT:
            pytest.skip("changing a group needs root")
        deps = self.recorded(spool)
        os.chown(spool / "team" / "cur", -1, MY_GID + 1)

        assert os.fsencode(spool / "team" / "cur") == deps.changed()

    def test_setfacl(self, spool: Path) -> None:
        """An ACL change that keeps the mode bits invalidates through the ctime."""
        target = spool / "sales"
        os.setxattr(
            target,
            "system.posix_acl_access",
            PosixAcl(user_obj=7, group_obj=5, other=5, mask=5).to_xattr(),
        )
        deps = self.recorded(spool)
        os.setxattr(
            target,
            "system.posix_acl_access",
            PosixAcl(user_obj=7, group_obj=5, other=5, mask=5, users=[(70002, 5)]).to_xattr(),
        )

        assert os.fsencode(target) == deps.changed()

    def test_delivery_keeps_cache(self, spool: Path) -> None:
        """Mail delivered into cur moves cur's ctime but changes no permission: still valid."""
        deps = self.recorded(spool)
        time.sleep(0.01)
        (spool / "sales" / "cur" / "1.msg:2,").write_text("x")

        assert None is deps.changed()

    def test_new_entry(self, spool: Path) -> None:
        """A new entry changes the spool listing."""
        deps = self.recorded(spool)
        time.sleep(0.01)
        maildir(spool / "new-box")

        assert os.fsencode(spool) == deps.changed()

    def test_replaced_entry(self, spool: Path) -> None:
        """An entry removed and created again is a new inode."""
        deps = self.recorded(spool)
        shutil.rmtree(spool / "sales")
        maildir(spool / "sales")

        assert deps.changed() is not None

    def test_ignore_file(self, spool: Path) -> None:
        """Editing the ignore file invalidates."""
        ignore = spool / ".nsprovignore"
        ignore.write_text("nothing\n")
        deps = self.recorded(spool)
        time.sleep(0.01)
        ignore.write_text("sales\n")

        assert os.fsencode(ignore) == deps.changed()
