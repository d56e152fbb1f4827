"""Tests for creating index directories as the user, and the directory helper."""

from __future__ import annotations

import asyncio
import io
import json
import os
import runpy
import stat
import sys
from typing import TYPE_CHECKING

import pytest

from nsprov._serve.dirs import DirMaker, dir_helper, make_dirs_as
from nsprov._serve.log import Log

from .helpers import (
    HELLO,
    ROOT,
    connect,
    make_config,
    read_lines,
    reply_prefixes,
    running,
)

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.skipif(not ROOT, reason="dropping to another user needs root")
class TestDirs:
    """Index directories are created by a child that has become the user."""

    def test_created_as_user(self, spool: Path, base: Path) -> None:
        """Missing index directories exist after the lookup, owned by the user, mode 0700."""
        home = base / "home"
        home.mkdir(mode=0o700)
        os.chown(home, 70002, 70002)
        config = make_config(spool, create_dirs=True)
        with running(config, base) as (server, _), connect(server) as c:
            c.sendall(HELLO + f"Lshared/userdb/other/{home}\tother\n".encode())
            read_lines(c, 1)

        made = sorted((home / ".nsprov").iterdir())
        assert [(70002, 0o700)] * 2 == [
            (p.stat().st_uid, stat.S_IMODE(p.stat().st_mode)) for p in made
        ]

    def test_planted_symlink(self, spool: Path, base: Path) -> None:
        """A link the user planted to a root-owned directory leads nowhere: nothing is created there."""
        home = base / "home"
        home.mkdir(mode=0o700)
        victim = base / "victim"
        victim.mkdir(mode=0o755)
        (home / ".nsprov").symlink_to(victim)
        os.chown(home, 70002, 70002)
        os.lchown(home / ".nsprov", 70002, 70002)
        with (
            running(make_config(spool, create_dirs=True), base) as (server, log),
            connect(server) as c,
        ):
            c.sendall(HELLO + f"Lshared/userdb/other/{home}\tother\n".encode())
            (reply,) = read_lines(c, 1)

        assert ([], 2) == (list(victim.iterdir()), len(reply_prefixes(reply)))
        assert "event=index-dirs" in log.getvalue()

    def test_refuses_root(self) -> None:
        """The helper never creates directories as root."""
        assert {"error": "refusing to create directories as root"} == make_dirs_as(
            0, 0, [], ["/x"], 1
        )


class TestDirHelper:
    """The directory helper's line protocol."""

    def test_requests(self) -> None:
        """Bad requests and root requests get an error line each; the loop ends at EOF."""

        out = io.BytesIO()
        status = dir_helper(
            io.BytesIO(
                b"not json\n"
                + json.dumps({"uid": 0, "gid": 0, "groups": [], "paths": ["/x"]}).encode()
                + b"\n"
            ),
            out,
        )

        assert 0 == status
        assert [
            {"error": "bad request: Expecting value: line 1 column 1 (char 0)"},
            {"error": "refusing to create directories as root"},
        ] == [json.loads(line) for line in out.getvalue().splitlines()]

    def test_dirmaker_reports_errors(self) -> None:
        """DirMaker turns the helper's errors into one message."""

        async def ask() -> str | None:
            maker = DirMaker(Log(stream=io.StringIO()))
            try:
                return await maker.ensure(0, 0, [], ["/x"])
            finally:
                await maker.close()

        assert "refusing to create directories as root" == asyncio.run(ask())

    def test_module_entry_point(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``python -m nsprov._serve --dir-helper`` runs the helper loop; other arguments are a usage error."""
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{}\n")))
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO()))
        statuses = []
        for argv in (["--dir-helper"], ["--socket=/run/x.sock"]):
            monkeypatch.setattr(sys, "argv", ["nsprov._serve", *argv])
            with pytest.raises(SystemExit) as info:
                runpy.run_module("nsprov._serve", run_name="__main__")
            statuses.append(info.value.code)

        assert [0, 2] == statuses
        assert "nsprov serve" in capsys.readouterr().err
