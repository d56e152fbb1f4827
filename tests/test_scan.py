from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsprov import _fs as fs_module
from nsprov import _perms as perms_module
from nsprov._config import config_from_mapping
from nsprov._engine import plan
from nsprov._env import from_environ
from nsprov._identity import MailUser
from nsprov._model import namespace_problems
from nsprov._perms import Identity, PosixAcl
from nsprov._scan import (
    REASONS,
    Discovery,
    Fs,
    SpoolError,
    Step,
    _Matcher,
    anchored_verdict,
    discover,
    display,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

ME = os.getuid()
MY_GID = os.getgid()
OWNER = MailUser(user="owner", home="/home/owner", identity=Identity(uid=ME, gid=MY_GID))
MEMBER = MailUser(
    user="member", home="/home/member", identity=Identity(uid=70001, gid=70001, groups={MY_GID})
)
OTHER = MailUser(user="other", home="/home/other", identity=Identity(uid=70002, gid=70002))


def maildir(path: Path, mode: int = 0o755, sub_mode: int | None = None) -> Path:
    path.mkdir()
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir()
        (path / sub).chmod(mode if sub_mode is None else sub_mode)
    path.chmod(mode)
    return path


def config(spool: Path, **kw: Any) -> Any:
    return config_from_mapping({"spool": [{"path": str(spool), **kw}]})


def verdicts(spool: Path, user: MailUser = OTHER, **kw: Any) -> dict[str, str]:
    d = discover(config(spool, **kw), user)
    out = {s.entry: "served" for s in d.served}
    out.update({k.entry: k.reason for k in d.skipped})
    return out


def traversable_dir() -> Path:
    """A fresh directory whose ancestors everybody may search (unlike pytest's tmp_path)."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nsprov-test-"))
    path.chmod(0o755)
    return path


@pytest.fixture(name="base")
def _base() -> Iterator[Path]:
    path = traversable_dir()
    yield path
    shutil.rmtree(path)


@pytest.fixture(name="spool")
def _spool(base: Path) -> Path:
    spool = base / "spool"
    spool.mkdir(mode=0o755)
    spool.chmod(0o755)
    return spool


class TestReasons:
    """Each entry is served or skipped with a documented reason."""

    def test_every_reason(self, spool: Path) -> None:
        """A spool with one entry per case gets the expected verdict for each."""
        maildir(spool / "sales")
        maildir(spool / ".hidden")
        maildir(spool / "secret", 0o700)
        maildir(spool / "curlocked", 0o755, sub_mode=0o700)
        (spool / "plain").write_text("x")
        (spool / "inbox-mbox").write_text("From someone\n")
        (spool / "empty").mkdir()
        (spool / "empty").chmod(0o755)
        sdbox = spool / "sdbox"
        sdbox.mkdir(mode=0o755)
        (sdbox / "dbox-Mails").mkdir()
        maildir(spool / "archive")
        (spool / "link").symlink_to("sales")
        maildir(spool / "a.b")
        maildir(spool / "tab\there")
        maildir(spool / os.fsdecode(b"bad\xff"))

        assert {
            "sales": "served",
            ".hidden": "dot-entry",
            "secret": "no-access",
            "curlocked": "no-access",
            "plain": "not-a-directory",
            "inbox-mbox": "unsupported-format",
            "empty": "not-a-maildir",
            "sdbox": "unsupported-format",
            "archive": "excluded",
            "link": "symlink",
            "a.b": "unservable-name",
            "tab\there": "unservable-name",
            "bad\\xff": "unservable-name",
        } == verdicts(spool, separator=".", exclude=["arch*/"])

    def test_reasons_documented(self) -> None:
        """The reason list is the documented fixed list."""
        assert (
            "dot-entry",
            "unservable-name",
            "excluded",
            "symlink",
            "not-a-directory",
            "no-access",
            "not-a-maildir",
            "unsupported-format",
            "name-collision",
            "duplicate-prefix",
            "over-limit",
        ) == REASONS

    def test_hostile_names_served(self, spool: Path) -> None:
        """Spaces, commas, colons, %, *, quotes, case twins and long names are all served."""
        names = [
            "Weird Name",
            "a,b",
            "odd:INDEX=evil",
            "pct%u",
            "star*",
            "q\"uote'",
            "Case",
            "case",
            "x" * 200,
        ]
        for n in names:
            maildir(spool / n)

        d = discover(config(spool), OTHER)

        assert sorted(names) == sorted(s.entry for s in d.served)
        assert [] == namespace_problems(d.namespaces)
        odd = next(s for s in d.served if s.entry == "odd:INDEX=evil")
        assert odd.namespace.location.render().startswith(f"maildir:{spool}/odd::INDEX=evil:INDEX=")

    def test_byte_order(self, spool: Path) -> None:
        """Entries are served in byte order of their names."""
        for n in ["b", "B", "a", "_"]:
            maildir(spool / n)

        assert ["B", "_", "a", "b"] == [s.entry for s in discover(config(spool), OTHER).served]


class TestAccess:
    """Access is evaluated for the target identity, never the caller's."""

    def test_group_only(self, spool: Path) -> None:
        """A group-readable mailbox is served to members only."""
        maildir(spool / "team", 0o750)

        assert ("served", "no-access", "served") == (
            verdicts(spool, MEMBER)["team"],
            verdicts(spool, OTHER)["team"],
            verdicts(spool, OWNER)["team"],
        )

    def test_owner_only(self, spool: Path) -> None:
        """A 0700 mailbox is served to its owner only."""
        maildir(spool / "mine", 0o700)

        assert ("served", "no-access") == (
            verdicts(spool, OWNER)["mine"],
            verdicts(spool, MEMBER)["mine"],
        )

    def test_acl_grant(self, spool: Path) -> None:
        """A POSIX ACL entry for a user grants access that the mode bits do not."""
        box = maildir(spool / "acl", 0o700)
        acl = PosixAcl(user_obj=7, group_obj=0, other=0, mask=5, users=[(70002, 5)])
        for p in (box, box / "cur", box / "new"):
            os.setxattr(p, "system.posix_acl_access", acl.to_xattr())

        assert ("served", "no-access") == (
            verdicts(spool, OTHER)["acl"],
            verdicts(spool, MEMBER)["acl"],
        )

    def test_spool_not_traversable(self, spool: Path) -> None:
        """When the spool cannot be searched, nothing in it is served."""
        maildir(spool / "sales")
        spool.chmod(0o700)

        d = discover(config(spool), OTHER)

        assert () == d.served
        assert "spool not reachable" in d.skipped[0].detail

    def test_missing_spool(self, base: Path) -> None:
        """A missing spool is an error (the login continues without namespaces)."""
        with pytest.raises(SpoolError, match="No such file"):
            discover(config(base / "missing"), OTHER)


class TestSelection:
    """Patterns, symlinks, duplicates and limits."""

    def test_ignore_file_and_include(self, spool: Path) -> None:
        """The spool's ignore file excludes, a non-empty include list restricts."""
        for n in ["sales", "support", "old-sales", "hr"]:
            maildir(spool / n)
        (spool / ".nsprovignore").write_text("old-*\n")

        found = verdicts(spool, include=["s*", "old-*"])

        assert {
            "sales": "served",
            "support": "served",
            "old-sales": "excluded",
            "hr": "excluded",
            ".nsprovignore": "dot-entry",
        } == found

    def test_ignore_file_fifo_never_blocks(self, spool: Path) -> None:
        """An ignore file that is a FIFO is not opened for a blocking read."""
        maildir(spool / "sales")
        os.mkfifo(spool / ".nsprovignore")

        assert "served" == verdicts(spool)["sales"]

    def test_symlink_inside(self, spool: Path, base: Path) -> None:
        """With symlinks = "inside", links to mailboxes in the spool are served, others not."""
        maildir(spool / "real")
        (spool / "alias").symlink_to("real")
        outside = maildir(base / "outside")
        (spool / "escape").symlink_to(outside)
        (spool / "dangling").symlink_to("nowhere")

        found = verdicts(spool, symlinks="inside")

        assert ("served", "served", "symlink", "symlink") == (
            found["real"],
            found["alias"],
            found["escape"],
            found["dangling"],
        )

    def test_duplicate_prefix_across_spools(self, base: Path) -> None:
        """Two spools yielding one prefix: the first in order wins."""
        a, b = base / "a", base / "b"
        for s in (a, b):
            s.mkdir(mode=0o755)
            maildir(s / "sales")
        cfg = config_from_mapping({"spool": [{"path": str(a)}, {"path": str(b)}]})

        d = discover(cfg, OTHER)

        assert [str(a)] == [s.spool for s in d.served]
        assert [("sales", "duplicate-prefix")] == [(k.entry, k.reason) for k in d.skipped]

    def test_max(self, spool: Path) -> None:
        """Beyond namespace.max, entries are over-limit, the first ones served."""
        for i in range(5):
            maildir(spool / f"m{i}")
        cfg = config_from_mapping({"namespace": {"max": 3}, "spool": [{"path": str(spool)}]})

        p = plan(cfg, OTHER, {})

        assert ["m0", "m1", "m2"] == [s.entry for s in p.discovery.served]
        assert ["over-limit"] * 2 == [k.reason for k in p.discovery.skipped]
        assert "5 namespaces found, namespace.max=3; the first 3" in p.warnings[0]

    def test_max_stops_scan_early(self, spool: Path) -> None:
        """Without --explain, the scan stops past namespace.max: the rest is not read."""
        for i in range(5):
            maildir(spool / f"m{i}")
        cfg = config_from_mapping({"namespace": {"max": 2}, "spool": [{"path": str(spool)}]})
        seen: list[bytes] = []

        def lstat(path: bytes) -> os.stat_result:
            seen.append(path)
            return os.lstat(path)

        p = plan(cfg, OTHER, {}, fs=Fs(lstat=lstat), keep_skipped=False)

        assert ["m0", "m1"] == [s.entry for s in p.discovery.served]
        assert p.discovery.truncated
        assert not any(b"/m4" in s for s in seen)
        assert "more than 2 namespaces found" in p.warnings[0]

    def test_injected_fs(self, spool: Path) -> None:
        """The scanner makes its filesystem calls through the injected Fs."""
        maildir(spool / "sales")
        calls: list[bytes] = []

        def lstat(path: bytes) -> os.stat_result:
            calls.append(path)
            return os.lstat(path)

        fs = Fs(lstat=lstat, read_text=lambda _p: None)

        assert ["sales"] == [s.entry for s in discover(config(spool), OTHER, fs=fs).served]
        assert os.fsencode(spool / "sales" / "cur") in calls


class TestSwappedByPath:
    """An entry swapped between two of the path-based checks is not offered (issue 16, finding 7)."""

    @pytest.mark.parametrize("swap_back", [False, True])
    @pytest.mark.parametrize("other", ["symlink", "private"])
    def test_swap_between_entry_and_cur_check(
        self, base: Path, spool: Path, other: str, swap_back: bool
    ) -> None:
        """Entry ``a`` (a plain directory) swapped, right at its cur check, for ``b``.

        ``b`` is a link to a maildir outside the spool (``symlinks = "skip"``) or a
        maildir only its owner may read.  Neither ``a`` nor ``b`` is ever a maildir
        the user may serve: checked by path, ``a`` was offered with the cur and
        new of ``b``.
        """
        (spool / "a").mkdir(mode=0o755)
        (spool / "a").chmod(0o755)
        if other == "symlink":
            (spool / "b").symlink_to(maildir(base / "outside"))
        else:
            maildir(spool / "b", mode=0o700, sub_mode=0o755)
        a, b, tmp = (os.fsencode(spool / n) for n in ("a", "b", ".swap"))

        def swap() -> None:
            os.rename(a, tmp)
            os.rename(b, a)
            os.rename(tmp, b)

        before = {a + b"/cur"}  # swap just before the check of a's cur
        after = {a + b"/new"} if swap_back else set()  # and back after that of a's new

        def lstat(path: bytes) -> os.stat_result:
            if path in before:
                before.discard(path)
                swap()
            return os.lstat(path)

        def getxattr(path: bytes, name: str, **kw: bool) -> bytes:
            try:
                return os.getxattr(path, name, **kw)
            finally:
                if path in after:
                    after.discard(path)
                    swap()

        d = discover(config(spool), OTHER, fs=Fs(lstat=lstat, getxattr=getxattr))

        assert [] == [s.entry for s in d.served]
        assert not before  # the checks of a's cur and new ran, with the swaps between
        assert not after
        assert "while it was checked" in {k.entry: k.detail for k in d.skipped}["a"] or (
            "checked by descriptor" in {k.entry: k.detail for k in d.skipped}["a"]
        )

    def test_unopenable_entry(self, spool: Path) -> None:
        """An entry whose re-check by file descriptor fails is skipped with the error."""
        maildir(spool / "sales")

        def anchored(_real: bytes, _parts: object) -> list[Step]:
            raise PermissionError(13, "Permission denied")

        d = discover(config(spool), OTHER, fs=Fs(anchored=anchored))

        assert () == tuple(d.served)
        assert [("sales", "no-access", "cannot be checked by descriptor (Permission denied)")] == [
            (k.entry, k.reason, k.detail) for k in d.skipped
        ]


names = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in {b".", b".."}
)


class TestIgnoreFile:
    """The ignore file follows the trust rule and its caps (issue 16, finding 11)."""

    @staticmethod
    def discovery(spool: Path, user: MailUser = OTHER) -> Discovery:
        return plan(config(spool), user, {}, keep_skipped=False).discovery

    @pytest.mark.skipif(ME != 0, reason="plants a file owned by another user")
    def test_planted_in_writable_spool(self, spool: Path) -> None:
        """A ``*`` ignore file a user planted in a sticky world-writable spool hides nothing.

        Before, it hid every mailbox from everyone.  Now it is not used, with one
        warning naming the file and the rule, which the login logs.
        """
        spool.chmod(0o1777)
        maildir(spool / "sales")
        maildir(spool / "support")
        planted = spool / ".nsprovignore"
        planted.write_text("*\n")
        os.chown(planted, 70002, 70002)

        p = plan(config(spool), OTHER, {}, keep_skipped=False)

        assert ["sales", "support"] == [s.entry for s in p.discovery.served]
        [warning] = p.warnings
        assert warning.startswith(f"spool {spool}: ignore file not used: {planted}: ignore file")
        assert f"{planted} is owned by uid 70002" in warning

    def test_root_file_in_writable_spool(self, spool: Path) -> None:
        """In a 0777 spool even our own ignore file is not used: anybody could replace it."""
        spool.chmod(0o777)
        maildir(spool / "sales")
        (spool / ".nsprovignore").write_text("*\n")

        d = self.discovery(spool)

        assert (["sales"], 1) == ([s.entry for s in d.served], len(d.warnings))
        assert f"{spool} is writable by group or other (mode 0777)" in d.warnings[0]

    def test_absent_in_writable_spool(self, spool: Path) -> None:
        """A writable spool without an ignore file warns of nothing: nothing was planted."""
        spool.chmod(0o775)
        maildir(spool / "sales")

        d = self.discovery(spool)

        assert (["sales"], ()) == ([s.entry for s in d.served], tuple(d.warnings))

    def test_writable_file(self, spool: Path) -> None:
        """A 0666 ignore file is not used."""
        maildir(spool / "sales")
        (spool / ".nsprovignore").write_text("*\n")
        (spool / ".nsprovignore").chmod(0o666)

        d = self.discovery(spool)

        assert ["sales"] == [s.entry for s in d.served]
        assert "(mode 0666)" in d.warnings[0]

    def test_too_large(self, spool: Path) -> None:
        """An ignore file over 64 KiB is not used."""
        maildir(spool / "sales")
        (spool / ".nsprovignore").write_text("sales\n" + "#" * (64 << 10))

        d = self.discovery(spool)

        assert ["sales"] == [s.entry for s in d.served]
        assert "larger than 64 KiB" in d.warnings[0]

    def test_too_many_patterns(self, spool: Path) -> None:
        """More than 1,000 patterns: not used; exactly 1,000 (comments and blanks aside) are."""
        maildir(spool / "sales")
        ignore = spool / ".nsprovignore"
        ignore.write_text("# c\n\nsales\n" + "".join(f"x{i}\n" for i in range(1000)))

        over = self.discovery(spool)
        ignore.write_text("# c\n\nsales\n" + "".join(f"x{i}\n" for i in range(999)))
        at_cap = self.discovery(spool)

        assert ["sales"] == [s.entry for s in over.served]
        assert "has 1001 patterns, more than 1000" in over.warnings[0]
        assert ([], ()) == (list(at_cap.served), at_cap.warnings)

    def test_unreadable(self, spool: Path) -> None:
        """An ignore file that cannot be resolved is a warning too, not a failed scan."""
        maildir(spool / "sales")
        (spool / "f").write_text("x")

        d = discover(config(spool, ignore_file="f/.nsprovignore"), OTHER)

        assert "served" == {s.entry: "served" for s in d.served}["sales"]
        assert "Not a directory" in d.warnings[0]

    def test_patterns_after_permission(self, spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """In post-login, entries the user may not read are never matched against patterns.

        Before, every entry was matched first, so a long ignore file made every scan slow.
        """
        for i in range(20):
            maildir(spool / f"secret{i}", 0o700)
        maildir(spool / "sales")
        (spool / ".nsprovignore").write_text("old-*\n")
        matched: list[str] = []
        original = _Matcher.excluded

        def counting(self: _Matcher, name: str) -> str | None:
            matched.append(name)
            return original(self, name)

        monkeypatch.setattr(_Matcher, "excluded", counting)

        d = self.discovery(spool)

        assert (["sales"], ["sales/"]) == ([s.entry for s in d.served], matched)


class TestProperties:
    """Whatever the directory names, the output passes Dovecot's checks."""

    @settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(names, min_size=1, max_size=8, unique=True))
    def test_arbitrary_names(self, base: Path, raw: list[bytes]) -> None:
        """Served namespaces have unique names (ignoring case) and prefixes, and round-trip."""
        base = Path(tempfile.mkdtemp(dir=base))
        base.chmod(0o755)
        for r in raw:
            maildir(base / os.fsdecode(r))
        cfg = config(base)

        p = plan(cfg, OTHER, {"USERDB_KEYS": "HOME "})

        assert [] == namespace_problems(p.discovery.namespaces)
        assert len(raw) == len(p.discovery.served) + len(p.discovery.skipped)
        assert p.discovery.namespaces == from_environ(p.environ)
        assert {k.reason for k in p.discovery.skipped} <= {"dot-entry", "unservable-name"}


def test_display() -> None:
    """Non-UTF-8 bytes are shown as \\xNN."""
    assert "a\\xff" == display(b"a\xff")


def test_missing_home(spool: Path) -> None:
    """Index paths under {home} need a home."""
    maildir(spool / "sales")
    homeless = MailUser(user="x", home=None, identity=OTHER.identity)

    with pytest.raises(ValueError, match="no home"):
        discover(config(spool), homeless)


@pytest.mark.parametrize("home", ["home/x", "./x", "~x"])
def test_relative_home(spool: Path, home: str) -> None:
    """A relative userdb home is one clear error, not every entry silently unservable."""
    maildir(spool / "sales")
    relative = MailUser(user="x", home=home, identity=OTHER.identity)

    with pytest.raises(ValueError, match="is not absolute"):
        discover(config(spool), relative)


def test_spool_error_is_oserror() -> None:
    """SpoolError is an OSError too."""
    assert issubclass(SpoolError, OSError)


def test_virtual_user_from_identity_config() -> None:
    """A user without a passwd entry takes [identity] mail_uid and mail_gid (virtual users)."""
    from nsprov._config import IdentityConfig
    from nsprov._identity import mail_user_from_nss

    user = mail_user_from_nss(
        "virtual@example.org", IdentityConfig(mail_uid="5000", mail_gid="5000"), home="/srv/vmail/v"
    )

    assert (5000, 5000, frozenset(), "/srv/vmail/v") == (
        user.identity.uid,
        user.identity.gid,
        user.identity.groups,
        user.home,
    )


class TestSwappedEntry:
    """An entry swapped between two checks is judged by what one descriptor walk saw (finding 7)."""

    @staticmethod
    def swapping(entry: Path, replace: Callable[[], None]) -> Fs:
        """The real filesystem, whose first lstat of *entry* is followed by *replace()*."""
        done: list[bool] = []

        def lstat(path: bytes) -> os.stat_result:
            s = os.lstat(path)
            if path == os.fsencode(entry) and not done:
                done.append(True)
                replace()
            return s

        return Fs(lstat=lstat)

    def test_symlink_swapped_in(self, spool: Path, base: Path) -> None:
        """A readable non-maildir swapped for a symlink to a maildir after its lstat is not served."""
        target = maildir(base / "outside")
        box = spool / "box"
        box.mkdir(mode=0o755)

        def replace() -> None:
            box.rename(spool / ".aside")
            box.symlink_to(target)

        found = discover(config(spool), OTHER, fs=self.swapping(box, replace))

        assert ([], ["symlink"]) == (
            [s.entry for s in found.served],
            [k.reason for k in found.skipped if k.entry == "box"],
        )

    def test_private_dir_swapped_in(self, spool: Path) -> None:
        """A 0700 maildir swapped in after the readable entry's lstat is not served."""
        box = spool / "box"
        box.mkdir(mode=0o755)
        private = maildir(spool / ".private", 0o700, sub_mode=0o755)

        def replace() -> None:
            box.rename(spool / ".aside")
            private.rename(box)

        found = discover(config(spool), OTHER, fs=self.swapping(box, replace))

        assert ([], ["no-access"]) == (
            [s.entry for s in found.served],
            [k.reason for k in found.skipped if k.entry == "box"],
        )

    def test_unchanged_entry_served(self, spool: Path) -> None:
        """Without a swap, the descriptor walk agrees with the path-based checks."""
        maildir(spool / "box")

        assert ["box"] == [s.entry for s in discover(config(spool), OTHER).served]

    @pytest.mark.parametrize(
        ("mode", "reason", "detail"),
        [
            (0, "not-a-directory", "removed while it was checked"),
            (0o120777, "symlink", "replaced by a symbolic link while it was checked"),
            (0o100644, "not-a-directory", "replaced by a non-directory while it was checked"),
        ],
    )
    def test_walk_stopped(self, mode: int, reason: str, detail: str) -> None:
        """A walk that stopped at the entry gives the reason of what it found there."""
        assert (reason, detail) == anchored_verdict([(b"box", mode, None)], 1, OTHER.identity)

    def test_acl_read_without_proc(self, spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without /proc, the ACL is read through a real descriptor of the same directory."""
        box = maildir(spool / "box", 0o700, sub_mode=0o755)
        grant = PosixAcl(user_obj=7, group_obj=0, other=0, mask=5, users=[(OTHER.identity.uid, 5)])
        try:
            os.setxattr(box, "system.posix_acl_access", grant.to_xattr())
        except OSError as e:
            pytest.skip(f"no POSIX ACLs here: {e}")
        real_read_acl = perms_module.read_acl

        def no_proc(path: str | bytes, **kw: Any) -> PosixAcl | None:
            if os.fsencode(path).startswith(b"/proc/"):
                raise FileNotFoundError(path)
            return real_read_acl(path, **kw)

        monkeypatch.setattr(fs_module, "read_acl", no_proc)

        assert ["box"] == [s.entry for s in discover(config(spool), OTHER).served]
