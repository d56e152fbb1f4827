"""The userdb-field actions (``acl_groups``, ``mail``, ``fields``) under a live Dovecot 2.4.1.

The 2.4 side of ``test_actions.py``: Dovecot 2.4.1 runs in the Debian 13 chroot
(``chroot24.py``) with ``/opt/nsprov-venv/bin/nsprov``, built from this working tree, wired
by the shipped ``examples/dovecot-2.4/10-master.conf`` for IMAP and POP3, and every nsprov
configuration says ``[dovecot] version = "2.4"``.  nsprov reads its configuration on every
login, so each test writes the configuration it needs and logs in.

The Dovecot 2.4.1 settings (checked with ``doveconf -a`` in the chroot and its
``/usr/share/doc/dovecot-core/example-config/conf.d/90-acl.conf`` and ``90-quota.conf``):

* ACL: ``mail_plugins { acl = yes }``, ``protocol imap { mail_plugins { imap_acl = yes } }``,
  ``acl_driver = vfile`` (``dovecot-acl`` files in the mailbox directories).  ``acl_groups``
  is a global boollist setting, so the userdb field sets it directly.
* Quota: ``mail_plugins { quota = yes }``, ``protocol imap { mail_plugins { imap_quota = yes } }``
  and a root ``quota "User quota" { driver = count }`` without a limit of its own; the global
  settings ``quota_storage_size``, ``quota_message_count`` and ``quota_exceeded_message``
  then apply to it, and a userdb field of the same name sets them per user.

Dovecot runs with ``mail_debug = yes``, so its log lists every userdb setting a session got
(``Added userdb setting: key=value``): the tests compare those with what 2.4 expects.

The ACL grants that pass today sit on maildir++ subfolders of a spool mailbox
(``Shared/team/board``): Dovecot 2.4 never reads the ``dovecot-acl`` file at the root of a
namespace nsprov exports unless ``[dovecot] acl_plugin = true`` moves ``mail_inbox_path`` away from the namespace root
(``test_acl_file_at_the_spool_mailbox``).

Unlike ``test_scenarios.py``, the configuration has no ``namespace inbox { mail_path }``
trap: a ``mail_driver``/``mail_path`` inside the inbox namespace's filter beats the global
ones a userdb (or nsprov's ``[mail]``) sets, so ``[mail]`` needs them global, as here.
"""

from __future__ import annotations

import contextlib
import re
import socket
from typing import TYPE_CHECKING, ClassVar

import pytest

from .chroot24 import chroot24_status, make_maildir, write_file
from .harness import CLIENT_TIMEOUT, HOST, mailbox_arg, nsprov_problem, select_count
from .test_scenarios import Person, Site24, unavailable, wiring

if TYPE_CHECKING:
    import imaplib
    from collections.abc import Iterator, Sequence
    from pathlib import Path

pytestmark = pytest.mark.live

#: The ACL and quota plugins the Dovecot 2.4 way (module docstring).
PLUGINS_CONF = """\
mail_plugins {
  acl = yes
  quota = yes
}
protocol imap {
  mail_plugins {
    imap_acl = yes
    imap_quota = yes
  }
}
acl_driver = vfile
quota "User quota" {
  driver = count
}
"""

DIALECT = '[dovecot]\nversion = "2.4"\nacl_plugin = true\n'
SPOOL = '[[spool]]\npath = "{spool}"\nprefix = "Shared/{{name}}/"\nseparator = "/"\n'
OTHER_MAIL = '[mail]\nlocation = "maildir:~/OtherMail"\n'
QUOTA_FIELDS = """\
[[field]]
name = "quota_storage_size"
value = "1M"

[[field]]
name = "quota_message_count"
value = "{count}"

[[field]]
name = "quota_exceeded_message"
value = "Mailbox 100% full"
literal_percent = true
"""

#: Messages per mailbox, all different, so a wrong directory cannot pass unnoticed.
INBOX = 1
OTHER_INBOX = 3
TEAM = 4
BOARD = 5
OPEN = 6

_TIMING = re.compile(rb" \((?:[0-9.]+ \+ )+[0-9.]+ secs\)\.$")
_USERDB_SETTING = re.compile(
    r" (imap|pop3)\(([^)\s]+)\)<[^:]*: Debug: Added userdb setting: ([^=]+)=(.*)$"
)


class PlainSite24(Site24):
    """The 2.4 site of ``test_scenarios.py`` without its inbox-namespace driver trap."""

    extra_conf: ClassVar[str] = ""

    def group_name(self, gid: int) -> str:
        """The name of a group this site created."""
        return self._groups[gid].name


class World:
    """Three users, a spool with ``dovecot-acl`` files, and Dovecot 2.4 wired to nsprov.

    alice is in the team group and has a second maildir ``~/OtherMail``; bob is not in the
    group; carol is the quota test's user.  The spool's ``team`` mailbox (root ACL: the team
    group may ``lr``) has two subfolders: ``board`` (the team group may ``lr``) and ``open``
    (``anyone lr``).
    """

    def __init__(self, site: PlainSite24) -> None:
        self.site = site
        team = site.group("team")
        self.team = site.group_name(team)
        self.alice = site.user("alice", groups=[team], messages=INBOX)
        self.bob = site.user("bob", messages=INBOX)
        self.carol = site.user("carol", messages=INBOX)
        root = site.root
        self.other_mail = make_maildir(
            root,
            self.alice.home / "OtherMail",
            messages=OTHER_INBOX,
            uid=self.alice.uid,
            gid=self.alice.gid,
        )
        self.spool = site.base / "spool"
        site.out(self.spool).mkdir(mode=0o755)
        boxes = {"": (TEAM, self.team), ".board": (BOARD, self.team), ".open": (OPEN, None)}
        for sub, (count, group) in boxes.items():
            box = self.spool / "team" / sub if sub else self.spool / "team"
            make_maildir(root, box, messages=count, dir_mode=0o755, file_mode=0o644)
            acl = f"group={group} lr\n" if group else "anyone lr\n"
            write_file(root, box / "dovecot-acl", acl)
        self.config = site.base / "nsprov.toml"
        self.configure("")
        site.start(
            [self.alice, self.bob, self.carol],
            wiring("2.4", site.nsprov, str(self.config)) + PLUGINS_CONF,
        )

    def configure(self, text: str) -> None:
        """Replace the nsprov configuration with the 2.4 dialect plus *text*."""
        path = self.site.out(self.config)
        tmp = path.with_name("nsprov.toml.new")
        tmp.write_text(DIALECT + text, encoding="utf-8")
        tmp.replace(path)

    def spool_config(self) -> str:
        """The ``[[spool]]`` table for the world's spool."""
        return SPOOL.format(spool=self.spool)

    def mark(self) -> int:
        """The current end of the Dovecot log."""
        return self.site.dovecot.log_mark()

    def settle(self, user: Person, logouts: int) -> None:
        """Wait until Dovecot has logged *logouts* ended sessions of *user*."""
        self.site.wait_logouts(user, logouts)

    def userdb_settings(self, mark: int, user: Person, protocol: str) -> dict[str, str]:
        """The userdb settings Dovecot logged for *user*'s *protocol* sessions after *mark*."""
        out = {}
        for line in self.site.dovecot.log(mark).splitlines():
            match = _USERDB_SETTING.search(line)
            if match and match[1] == protocol and match[2] == user.name:
                out[match[3]] = match[4]
        return out

    def new_errors(self, mark: int) -> list[str]:
        """Dovecot's Error, Fatal and Panic lines, and nsprov's lines, after *mark*."""
        log = self.site.dovecot.log(mark).splitlines()
        return [line for line in log if nsprov_problem(line)] + self.site.dovecot.errors(mark)


@pytest.fixture(name="world", scope="module")
def _world() -> Iterator[World]:
    """One world for the module; skips when the Dovecot 2.4 chroot cannot run here."""
    if reason := unavailable("2.4"):
        pytest.skip(reason)
    root, _ = chroot24_status()
    assert root is not None
    with contextlib.ExitStack() as stack:
        yield World(PlainSite24(stack, root))


def examine(imap: imaplib.IMAP4, name: str) -> int | str:
    """The EXISTS count of EXAMINE *name*, or the response type (``NO``) when it fails."""
    typ, data = imap.select(mailbox_arg(name), readonly=True)
    return int(data[-1] or b"-1") if typ == "OK" else typ


# --------------------------------------------------------------------------------------------
# acl_groups


class TestAclGroups:
    """``[acl_groups]`` hands the UNIX groups to Dovecot 2.4's ACL plugin as a boollist."""

    def test_group_acl_grants_only_members(self, world: World) -> None:
        """With acl_groups a member of the group in dovecot-acl may EXAMINE the mailbox, a non-member may not."""
        world.configure(world.spool_config() + "[acl_groups]\n")
        mark = world.mark()
        logouts = world.site.logouts(world.bob)

        with world.site.imap(world.alice) as imap:
            member = examine(imap, "Shared/team/board")
            rights = imap.myrights(mailbox_arg("Shared/team/board"))
        with world.site.imap(world.bob) as imap:
            other = (examine(imap, "Shared/team/board"), examine(imap, "Shared/team/open"))
        world.settle(world.bob, logouts + 1)

        assert BOARD == member
        assert ("OK", [b"Shared/team/board lr"]) == rights
        assert ("NO", OPEN) == other
        assert [] == world.new_errors(mark)

    def test_value_reaches_dovecot_as_a_list(self, world: World) -> None:
        """Dovecot gets acl_groups as the comma-separated list of the user's groups and adds each group."""
        world.configure(world.spool_config() + "[acl_groups]\n")
        mark = world.mark()
        logouts = world.site.logouts(world.alice)

        with world.site.imap(world.alice) as imap:
            examine(imap, "Shared/team/board")
        world.settle(world.alice, logouts + 1)
        log = world.site.dovecot.log(mark)
        added = sorted(set(re.findall(r"acl: group added: (\S+)", log)))

        assert f"{world.alice.name},{world.team}" == world.userdb_settings(
            mark, world.alice, "imap"
        ).get("acl_groups")
        assert sorted([world.alice.name, world.team]) == added

    def test_without_acl_groups_the_member_is_refused(self, world: World) -> None:
        """Without acl_groups Dovecot knows no UNIX group, so even a member cannot EXAMINE (the control)."""
        world.configure(world.spool_config())

        with world.site.imap(world.alice) as imap:
            seen = (examine(imap, "Shared/team/board"), examine(imap, "Shared/team/open"))

        assert ("NO", OPEN) == seen

    def test_acl_file_at_the_spool_mailbox(self, world: World) -> None:
        """A dovecot-acl file in the spool mailbox itself lets a group member EXAMINE it, as on 2.3."""
        world.configure(world.spool_config() + "[acl_groups]\n")

        with world.site.imap(world.alice) as imap:
            member = examine(imap, "Shared/team")
        with world.site.imap(world.bob) as imap:
            other = examine(imap, "Shared/team")

        assert (TEAM, "NO") == (member, other)


# --------------------------------------------------------------------------------------------
# mail


class TestMail:
    """``[mail]`` reaches Dovecot 2.4 as ``mail_driver`` and ``mail_path``."""

    def test_override_opens_the_other_maildir(self, world: World) -> None:
        """With location maildir:~/OtherMail, INBOX holds OtherMail's messages, from mail_driver/mail_path and no mail field."""
        world.configure(OTHER_MAIL)
        mark = world.mark()
        logouts = world.site.logouts(world.alice)

        with world.site.imap(world.alice) as imap:
            inbox = select_count(imap, "INBOX")
        world.settle(world.alice, logouts + 1)
        settings = world.userdb_settings(mark, world.alice, "imap")

        assert OTHER_INBOX == inbox
        assert {"mail_driver": "maildir", "mail_path": "~/OtherMail"} == {
            k: v for k, v in settings.items() if k.startswith("mail")
        }
        assert [] == world.new_errors(mark)

    def test_without_mail_inbox_is_maildir(self, world: World) -> None:
        """Without [mail], INBOX is ~/Maildir (the control)."""
        world.configure("")

        with world.site.imap(world.alice) as imap:
            inbox = select_count(imap, "INBOX")

        assert INBOX == inbox


# --------------------------------------------------------------------------------------------
# fields


def untimed(data: Sequence[object]) -> list[object]:
    """Tagged response texts without the timing Dovecot appends (`` (0.001 + 0.000 + 0.001 secs).``)."""
    return [_TIMING.sub(b"", d) if isinstance(d, bytes) else d for d in data]


class TestFields:
    """``[[field]]`` sets Dovecot 2.4 quota settings per user, ``%`` left alone.

    Quota is observable over IMAP (GETQUOTAROOT shows the limit) and its exceeded message
    reaches the client verbatim, so a literal ``%`` that nsprov wrongly doubled for 2.4
    (which does not %-expand userdb values) would show as ``%%``.
    """

    def test_quota_limits_from_fields(self, world: World) -> None:
        """quota_storage_size and quota_message_count fields become the limits GETQUOTAROOT shows."""
        world.configure(QUOTA_FIELDS.format(count=INBOX + 1))
        mark = world.mark()
        logouts = world.site.logouts(world.carol)

        with world.site.imap(world.carol) as imap:
            typ, data = imap.getquotaroot("INBOX")
        world.settle(world.carol, logouts + 1)

        assert "OK" == typ
        assert [b'INBOX "User quota"'] == data[0]
        assert [b'"User quota" (STORAGE 1 1024 MESSAGE 1 2)'] == data[1]
        assert [] == world.new_errors(mark)

    def test_without_fields_no_limit(self, world: World) -> None:
        """Without the fields no quota root has a limit: GETQUOTAROOT answers "No quota" without QUOTAROOT or QUOTA lines (the control)."""
        world.configure("")

        with world.site.imap(world.carol) as imap:
            typ, data = imap.getquotaroot("INBOX")

        assert ("OK", [[None], [None]]) == (typ, data)

    def test_literal_percent_reaches_the_client_once(self, world: World) -> None:
        """Over quota, APPEND is refused with the field's message, its % not doubled for 2.4."""
        world.configure(QUOTA_FIELDS.format(count=INBOX))

        with world.site.imap(world.carol) as imap:
            typ, data = imap.append("INBOX", None, None, b"Subject: x\r\n\r\nbody\r\n")
            count = select_count(imap, "INBOX")

        assert ("NO", [b"[OVERQUOTA] Mailbox 100% full"], INBOX) == (typ, untimed(data), count)


# --------------------------------------------------------------------------------------------
# POP3


def pop3_exchange(port: int, user: Person, commands: Sequence[str]) -> list[bytes]:
    """Every reply line of a raw POP3 session: greeting, USER, PASS, *commands*, QUIT."""
    with socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT) as sock:
        stream = sock.makefile("rb")
        replies = [stream.readline()]
        for command in (f"USER {user.name}", f"PASS {user.password}", *commands, "QUIT"):
            sock.sendall(f"{command}\r\n".encode())
            replies.append(stream.readline())
        replies.append(stream.read())
        return replies


def maildir_size(path: Path) -> int:
    """The total size of the messages in a maildir's ``cur``."""
    return sum(p.stat().st_size for p in (path / "cur").iterdir())


class TestPop3:
    """A POP3 login through the same wiring and configuration is clean."""

    def test_pop3_with_every_field_action(self, world: World) -> None:
        """With spool, acl_groups, mail and fields configured, POP3 gets +OK, STAT counts OtherMail, nothing logged."""
        world.configure(
            world.spool_config() + "[acl_groups]\n" + OTHER_MAIL + QUOTA_FIELDS.format(count=10)
        )
        mark = world.mark()
        logouts = world.site.logouts(world.alice)

        replies = pop3_exchange(world.site.dovecot.pop3_port, world.alice, ["STAT"])
        world.settle(world.alice, logouts + 1)
        settings = world.userdb_settings(mark, world.alice, "pop3")

        size = maildir_size(world.site.out(world.other_mail))
        assert [
            b"+OK Dovecot ready.\r\n",
            b"+OK\r\n",
            b"+OK Logged in.\r\n",
            f"+OK {OTHER_INBOX} {size}\r\n".encode(),
            b"+OK Logging out.\r\n",
            b"",
        ] == replies
        assert {
            "acl_groups": f"{world.alice.name},{world.team}",
            "mail_driver": "maildir",
            "mail_path": "~/OtherMail",
            "quota_storage_size": "1M",
            "quota_message_count": "10",
            "quota_exceeded_message": "Mailbox 100% full",
        } == {k: v for k, v in settings.items() if not k.startswith(("uid", "gid", "home"))}
        assert [] == world.new_errors(mark)
