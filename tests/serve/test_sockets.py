"""Tests for binding the server's socket."""

from __future__ import annotations

import os
import socket
import stat
from typing import TYPE_CHECKING, Any

import pytest

from nsprov._serve.sockets import bind_socket
from nsprov.exceptions import NsprovError, SocketInUseError, UntrustedFileError

from .helpers import (
    MY_GID,
)

if TYPE_CHECKING:
    from pathlib import Path


class TestSocket:
    """The listening socket: mode, group, stale and live sockets."""

    def test_mode_and_group(self, base: Path) -> None:
        """The socket gets the mode and group asked for."""
        sock = bind_socket(str(base / "a.sock"), mode=0o660, group=str(MY_GID))
        st_ = os.stat(base / "a.sock")
        sock.close()

        assert (0o660, MY_GID, True) == (
            stat.S_IMODE(st_.st_mode),
            st_.st_gid,
            stat.S_ISSOCK(st_.st_mode),
        )

    def test_default_mode_and_parent(self, base: Path) -> None:
        """Default 0600; a missing parent directory is created."""
        path = base / "run" / "nsprov" / "s.sock"
        bind_socket(str(path), mode=0o600, group=None).close()

        assert 0o600 == stat.S_IMODE(path.stat().st_mode)

    def test_stale_replaced_live_refused(self, base: Path) -> None:
        """A stale socket is replaced; a socket someone listens on is an error."""
        path = str(base / "s.sock")
        bind_socket(path, mode=0o600, group=None).close()
        live = bind_socket(path, mode=0o600, group=None)
        try:
            with pytest.raises(SocketInUseError):
                bind_socket(path, mode=0o600, group=None)
        finally:
            live.close()

    def test_not_a_socket(self, base: Path) -> None:
        """A regular file at the path is never removed."""
        (base / "f").write_text("keep")

        with pytest.raises(NsprovError, match="not a socket"):
            bind_socket(str(base / "f"), mode=0o600, group=None)
        assert "keep" == (base / "f").read_text()

    def test_untrusted_directory(self, base: Path) -> None:
        """A socket directory others may write is refused (they could swap the socket)."""
        (base / "w").mkdir()
        (base / "w").chmod(0o777)

        with pytest.raises(UntrustedFileError, match="socket directory not trusted"):
            bind_socket(str(base / "w" / "s.sock"), mode=0o600, group=None)
        assert [] == list((base / "w").iterdir())

    def test_no_link_followed(self, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A link swapped in for the temporary socket is not followed: its target keeps mode and group."""
        victim = base / "victim"
        victim.write_text("x")
        victim.chmod(0o600)
        before = victim.stat()

        class Swapped(socket.socket):
            def bind(self, address: Any, /) -> None:
                super().bind(address)
                os.rename(address, f"{address}.moved")
                os.symlink(victim, address)

        monkeypatch.setattr(socket, "socket", Swapped)
        bind_socket(str(base / "s.sock"), mode=0o666, group=str(MY_GID or 1)).close()

        after = victim.stat()
        assert (0o600, before.st_gid) == (stat.S_IMODE(after.st_mode), after.st_gid)

    def test_unknown_group(self, base: Path) -> None:
        """An unknown --socket-group is an error."""
        with pytest.raises(NsprovError, match="unknown group"):
            bind_socket(str(base / "s.sock"), mode=0o600, group="no-such-group-nsprov")
