"""Tests for the identity of a ``nsprov serve`` lookup, from NSS and ``[identity]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from nsprov._config import config_from_mapping
from nsprov._identity import identify
from nsprov.exceptions import IdentityError

from .serve.helpers import (  # noqa: F401 - the base and spool fixtures
    _base,
    _spool,
    make_config,
)

if TYPE_CHECKING:
    from pathlib import Path


class TestIdentify:
    """The identity of a lookup, from NSS and [identity]."""

    def test_nss_user(self, spool: Path) -> None:
        """A passwd user: uid, gid and home from NSS; a home in the key wins."""

        nss = identify(make_config(spool), "nobody", None)
        keyed = identify(make_config(spool), "nobody", "/srv/h")

        assert (65534, "/nonexistent", "/srv/h") == (nss.uid, nss.home, keyed.home)

    def test_unknown_user(self, spool: Path) -> None:
        """No passwd entry and no [identity]: an identity error (the lookup is not found)."""

        with pytest.raises(IdentityError):
            identify(make_config(spool), "no-such-user-nsprov", "/h")

    @pytest.mark.parametrize(("uid", "gid"), [("nobody", "nogroup"), ("65534", "65534")])
    def test_virtual_user(self, spool: Path, uid: str, gid: str) -> None:
        """Virtual users: [identity] mail_uid/mail_gid (names or numbers) and the key's home."""

        config = config_from_mapping(
            {"spool": [{"path": str(spool)}], "identity": {"mail_uid": uid, "mail_gid": gid}}
        )
        user = identify(config, "v@example.org", "/srv/mail/v")

        assert (65534, 65534, "/srv/mail/v") == (user.uid, user.identity.gid, user.home)

    def test_virtual_user_unknown_name(self, spool: Path) -> None:
        """An unknown [identity] name is an identity error."""

        config = config_from_mapping(
            {
                "spool": [{"path": str(spool)}],
                "identity": {"mail_uid": "no-such-nsprov", "mail_gid": "0"},
            }
        )
        with pytest.raises(IdentityError, match="no-such-nsprov"):
            identify(config, "v@example.org", "/srv/mail/v")
