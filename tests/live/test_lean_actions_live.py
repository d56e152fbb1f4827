"""Every lean action under a real Dovecot 2.3: deny, alert, acl_groups, last_login, a field.

The first login after the configuration is written takes the full path, which writes the
login profile; the next ones are served by the lean path (the full worker's witness, the
config cache entry, stays absent, and nsprov's info line names the lean path).  On the lean path: the ALERT reaches the IMAP client, the
last-login file is written as the user, the ``acl_groups`` value lets a group member EXAMINE
the group's mailbox (Dovecot's ACL plugin), a ``[[field]]`` reaches the session (Dovecot logs
the ``imap_logout_format`` it set), and a ``[deny]`` rule that matches refuses the login with
the full path's exact line.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import pytest

from nsprov import _profile

from .harness import wait_login_paths
from .test_actions import SPOOL_CONFIG, World, logged_in, nsprov_lines, refused
from .test_actions import _world as _world  # noqa: PLC0414 - the module-scoped Dovecot world
from .test_profile_live import config_cache, profile_path

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.live

WITNESS = "lean-field-witness"

ACTIONS = f"""\
[deny]
users = ["*-mallory"]
networks = ["192.0.2.0/24"]
groups = ["nomatch-*"]
message = "Closed for you."

[[alert]]
text = "Lean hello {{user}}."

[acl_groups]

[last_login]

[[field]]
name = "imap_logout_format"
value = "{WITNESS} {{user}}"
"""


def _last_login(world: World) -> Path:
    return world.alice.home / ".nsprov" / "last-login"


def _paths(world: World, mark: int, count: int) -> list[tuple[str, str]]:
    """Which path served each login after *mark* (its info line), waiting for *count* of them."""
    return wait_login_paths(world.dovecot.log, count, mark)


def _cold(world: World) -> None:
    """Write the configuration and log in once: the full path writes the profile."""
    world.configure(SPOOL_CONFIG.format(spool=world.spool) + ACTIONS)
    profile_path(world.config).unlink(missing_ok=True)
    with world.dovecot.imap(world.bob):
        pass
    assert _profile.load(str(world.config)) is not None, "the full path wrote no profile"
    config_cache(world.config).unlink()


def test_every_action_served_lean(world: World) -> None:
    """A warm login with deny (not matching), alert, acl_groups, last_login and a field."""
    _cold(world)
    _last_login(world).unlink(missing_ok=True)
    mark = world.mark()

    reply = world.session("imap", world.alice, ["EXAMINE Shared/team"])

    lean = not config_cache(world.config).exists()
    alert = f"* OK [ALERT] Lean hello {world.alice.name}.\r\n".encode()
    assert logged_in(reply), reply
    assert [alert] == reply.login.splitlines(keepends=True)[:-1]
    # acl_groups reached the session: the group's dovecot-acl lets alice (a member) in.
    assert reply.answers[0].splitlines()[-1].startswith(b"c0 OK [READ-ONLY]"), reply.answers
    path = _last_login(world)
    s = path.stat()
    assert (world.alice.uid, 0o600) == (s.st_uid, s.st_mode & 0o777)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ imap 127\.0\.0\.1\n", path.read_text())
    # The field reached the session: Dovecot logs the logout in the format it set.
    assert world.log_since(mark, f"{WITNESS} {world.alice.name}")
    assert lean, "the full path served the warm login"
    assert [(world.alice.name, "lean")] == _paths(world, mark, 1)
    assert [] == nsprov_lines(world, mark)


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_matching_deny_refused_lean(world: World, protocol: str) -> None:
    """A warm login a [deny] rule matches is refused on the lean path, as the full path does."""
    _cold(world)
    mark = world.mark()

    reply = world.session(protocol, world.mallory)  # type: ignore[arg-type]

    assert refused(protocol, "Closed for you.") == reply  # type: ignore[arg-type]
    time.sleep(0.05)
    assert not config_cache(world.config).exists(), "the full path served the warm login"
    assert [(world.mallory.name, "lean")] == _paths(world, mark, 1)
    assert [] == nsprov_lines(world, mark)
