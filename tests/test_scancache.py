"""The persistent scan cache: the principal index, its freshness rules, update, status, CLI, serve."""

from __future__ import annotations

import marshal
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsprov._check import check_scan_cache
from nsprov._cli import main as cli_main
from nsprov._config import ScanCacheConfig, config_from_mapping
from nsprov._engine import plan
from nsprov._fs import DEFAULT_FS, Fs
from nsprov._identity import MailUser
from nsprov._perms import R_OK, X_OK, FileFacts, Identity, PosixAcl, decide
from nsprov._scancache import (
    OTHER,
    RACY_NS,
    Index,
    cache_files,
    candidates,
    keys_of,
    principals,
    status,
    update,
)
from nsprov._serve import Resolver
from nsprov._serve.codec import UserdbKey
from nsprov.exceptions import ConfigError, UntrustedFileError

from .strategies import file_facts, identities
from .test_scan import MEMBER, MY_GID, OWNER, maildir, traversable_dir
from .test_scan import OTHER as OTHER_USER
from .test_serve import Identities, running

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from nsprov._config import Config

ACL = "system.posix_acl_access"
NAMED = MailUser(user="named", home="/home/named", identity=Identity(uid=70003, gid=70003))
USERS = (OWNER, MEMBER, OTHER_USER, NAMED)
#: A build time a few seconds ahead: entries created by the test count as settled (not racy).
AHEAD = 3 * 10**9


def ahead() -> int:
    return time.time_ns() + AHEAD


@pytest.fixture(name="base")
def _base() -> Iterator[Path]:
    path = traversable_dir()
    yield path
    shutil.rmtree(path)


@pytest.fixture(name="spool")
def _spool(base: Path) -> Path:
    spool = base / "spool"
    spool.mkdir()
    spool.chmod(0o755)
    return spool


def make_config(spool: Path, cache: Path | None, **scan_cache: Any) -> Config:
    data: dict[str, Any] = {"spool": [{"path": str(spool), "prefix": "Shared/{name}/"}]}
    if cache is not None:
        data["scan_cache"] = {"dir": str(cache), **scan_cache}
    return config_from_mapping(data)


def served(config: Config, user: MailUser, fs: Fs = DEFAULT_FS) -> list[str]:
    """What a login gets (post-login mode: no --explain, so the cache is used)."""
    return [s.entry for s in plan(config, user, {}, fs=fs, keep_skipped=False).discovery.served]


def build(config: Config, *, clock: Any = ahead) -> None:
    assert config.scan_cache is not None
    for spool in config.spools:
        update(config.scan_cache, spool, DEFAULT_FS, clock=clock)


def settle(path: Path) -> None:
    """Date *path*'s mtime ten seconds back, so an update with the real clock finds it settled."""
    then = time.time_ns() - 10 * 10**9
    os.utime(path, ns=(then, then))


def set_acl(path: Path, acl: PosixAcl) -> None:
    os.setxattr(path, ACL, acl.to_xattr())


class CountingFs:
    """A filesystem that counts lstat calls per entry name."""

    def __init__(self) -> None:
        self.lstats: list[bytes] = []
        self.listed = 0

    def fs(self) -> Fs:
        def lstat(path: bytes) -> os.stat_result:
            self.lstats.append(path)
            return os.lstat(path)

        def listdir(path: bytes) -> list[bytes]:
            self.listed += 1
            return os.listdir(path)

        return Fs(lstat=lstat, listdir=listdir)


# --- the principal index ------------------------------------------------------------


class TestPrincipals:
    """Anyone the kernel lets read and search an entry holds one of its principals."""

    @settings(max_examples=3000)
    @given(file_facts(), identities)
    def test_superset_of_decide(self, facts: FileFacts, ident: Identity) -> None:
        """The index never leaves out an identity that decide() allows R|X."""
        if decide(facts, ident, R_OK | X_OK):
            assert set(principals(facts)) & set(keys_of(ident))

    def test_examples(self) -> None:
        """Mode bits, an ACL with named entries, a mask that cuts them, an empty mask."""
        assert (1, ~2, OTHER) == tuple(sorted(principals(FileFacts(0o755, 1, 2)), reverse=True))
        assert (1,) == principals(FileFacts(0o750 & 0o700, 1, 2))
        assert () == principals(FileFacts(0o000, 1, 2))
        acl = PosixAcl(user_obj=7, group_obj=0, other=0, mask=5, users=[(9, 5)], groups=[(8, 7)])
        assert {1, 9, ~8} == set(principals(FileFacts(0o750, 1, 2, acl)))
        cut = PosixAcl(user_obj=7, group_obj=5, other=0, mask=4, users=[(9, 5)])
        assert {1} == set(principals(FileFacts(0o740, 1, 2, cut)))
        empty = PosixAcl(user_obj=0, group_obj=5, other=5, mask=0, users=[(9, 5)])
        assert {OTHER} == set(principals(FileFacts(0o005, 1, 2, empty)))

    def test_keys(self) -> None:
        """An identity's keys: uid, primary and supplementary groups (once), other."""
        assert (5, ~6, ~7, OTHER) == keys_of(Identity(uid=5, gid=6, groups={6, 7}))

    def test_merge_unique_sorted(self) -> None:
        """Names listed under several of a user's principals come once, in byte order."""
        idx = Index(b"/s", b"/s", 0, None, {1: b"a/c", ~2: b"b/c/d", OTHER: b"a"}, "x")
        assert [b"a", b"b", b"c", b"d"] == list(idx.names_for((1, ~2, OTHER)))
        assert [b"b", b"c", b"d"] == list(idx.names_for((~2,)))
        assert [] == list(idx.names_for((3,)))


# --- the cache gives what a full scan gives ------------------------------------------


def _populate(spool: Path, layout: list[tuple[int, int | None]]) -> None:
    """Maildirs e000..: a mode, and optionally a named-user ACL entry for NAMED's uid."""
    for i, (mode, named) in enumerate(layout):
        path = maildir(spool / f"e{i:03d}", 0o755)
        if named is not None:
            set_acl(
                path,
                PosixAcl(
                    user_obj=7,
                    group_obj=(mode >> 3) & 7,
                    other=mode & 7,
                    mask=7,
                    users=[(NAMED.identity.uid, named)],
                ),
            )
        else:
            path.chmod(mode)


layouts = st.lists(
    st.tuples(
        st.sampled_from([0o700, 0o750, 0o755, 0o705, 0o711, 0o000, 0o570, 0o007]),
        st.none() | st.sampled_from([0, 5, 7]),
    ),
    min_size=1,
    max_size=12,
)


class TestEquivalence:
    """With a fresh cache, every user gets exactly what a full scan gives."""

    @settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(layouts)
    def test_random_spools(self, base: Path, layout: list[tuple[int, int | None]]) -> None:
        """Random modes and named-user ACLs: the cached scan serves the same entries."""
        root = Path(os.fsdecode(os.path.realpath(base)))
        work = root / f"w{time.monotonic_ns()}"
        work.mkdir()
        work.chmod(0o755)
        spool = work / "spool"
        spool.mkdir()
        spool.chmod(0o755)
        _populate(spool, layout)
        live, cached = make_config(spool, None), make_config(spool, work / "cache")
        build(cached)

        for user in USERS:
            assert served(live, user) == served(cached, user), user.user

    def test_reads_only_candidates(self, spool: Path, base: Path) -> None:
        """A fresh cache with an unchanged spool: no listing, and only candidate entries looked at."""
        for i in range(20):
            maildir(spool / f"closed{i:02d}", 0o700)
        maildir(spool / "open", 0o755)
        config = make_config(spool, base / "cache")
        build(config)
        counting = CountingFs()

        assert ["open"] == served(config, OTHER_USER, counting.fs())
        assert 0 == counting.listed
        assert not [p for p in counting.lstats if b"closed" in p]

    def test_show_ignores_cache(self, spool: Path, base: Path) -> None:
        """nsprov show (keep_skipped) always scans everything: it explains every entry."""
        maildir(spool / "closed", 0o700)
        config = make_config(spool, base / "cache")
        build(config)

        p = plan(config, OTHER_USER, {})

        assert ["closed"] == [k.entry for k in p.discovery.skipped]


# --- freshness -------------------------------------------------------------------------


class TestFreshness:
    """What takes effect at once, and what waits for the next update."""

    @pytest.fixture(name="config")
    def _config(self, spool: Path, base: Path) -> Config:
        maildir(spool / "open", 0o755)
        maildir(spool / "closed", 0o750, 0o755)
        config = make_config(spool, base / "cache")
        build(config)
        return config

    def test_revocation_is_immediate(self, config: Config, spool: Path) -> None:
        """An entry made unreadable disappears at the next login, without an update."""
        (spool / "open").chmod(0o700)
        assert [] == served(config, OTHER_USER)

    def test_new_entry_is_immediate(self, config: Config, spool: Path) -> None:
        """A new entry changes the spool's mtime; the login lists names and scans the new one."""
        time.sleep(0.01)
        maildir(spool / "added", 0o755)
        counting = CountingFs()

        assert ["added", "open"] == served(config, OTHER_USER, counting.fs())
        assert not [p for p in counting.lstats if p.endswith(b"/closed")]

    def test_changed_spool_mostly_readable(self, spool: Path, base: Path) -> None:
        """A changed spool the user may mostly read is listed as without a cache (it is cheaper)."""
        for name in ("a", "b", "c"):
            maildir(spool / name, 0o755)
        maildir(spool / "closed", 0o750, 0o755)
        config = make_config(spool, base / "cache")
        build(config)
        assert config.scan_cache is not None
        real = os.fsencode(spool)
        ident = OTHER_USER.identity
        assert [b"a", b"b", b"c"] == list(
            candidates(config.scan_cache, config.spools[0], real, ident, Fs()) or []
        )
        time.sleep(0.01)
        maildir(spool / "d", 0o755)

        assert None is candidates(config.scan_cache, config.spools[0], real, ident, Fs())
        assert ["a", "b", "c", "d"] == served(config, OTHER_USER)

    def test_removed_entry(self, config: Config, spool: Path) -> None:
        """A removed entry is simply gone."""
        shutil.rmtree(spool / "open")
        assert [] == served(config, OTHER_USER)

    def test_replaced_entry(self, config: Config, spool: Path) -> None:
        """An entry replaced by another inode under the same name is scanned live.

        (A directory removed and made again may get its old inode number back: that
        case is a permission change on an existing entry, bounded by the next update.)
        """
        time.sleep(0.01)
        maildir(spool / "staging", 0o755)
        shutil.rmtree(spool / "closed")
        (spool / "staging").rename(spool / "closed")
        assert ["closed", "open"] == served(config, OTHER_USER)

    def test_grant_waits_for_update(self, config: Config, spool: Path) -> None:
        """A new grant on an existing entry shows after the next update (the freshness bound)."""
        (spool / "closed").chmod(0o755)

        assert ["open"] == served(config, OTHER_USER)
        build(config)
        assert ["closed", "open"] == served(config, OTHER_USER)

    def test_expired_cache_not_used(self, spool: Path, base: Path) -> None:
        """Past max_age the login scans the whole spool (the grant shows)."""
        maildir(spool / "closed", 0o750, 0o755)
        settle(spool)
        config = make_config(spool, base / "cache", max_age=1, refresh=0)
        assert config.scan_cache is not None
        update(
            config.scan_cache, config.spools[0], DEFAULT_FS, clock=lambda: time.time_ns() - AHEAD
        )
        (spool / "closed").chmod(0o755)

        assert ["closed"] == served(config, OTHER_USER)

    def test_future_cache_not_used(self, spool: Path, base: Path) -> None:
        """A cache built far in the future (the clock went back) is not used."""
        maildir(spool / "closed", 0o750, 0o755)
        config = make_config(spool, base / "cache")
        build(config, clock=lambda: time.time_ns() + 60 * 10**9)
        (spool / "closed").chmod(0o755)

        assert ["closed"] == served(config, OTHER_USER)

    @pytest.mark.parametrize("damage", ["group-writable", "corrupt", "symlink", "other-spool"])
    def test_untrusted_or_broken_cache_not_used(
        self, config: Config, spool: Path, base: Path, damage: str
    ) -> None:
        """A cache writable by others, corrupt, a symlink or for another spool: full scan."""
        idx = cache_files(str(base / "cache"), os.fsencode(spool))[0]
        if damage == "group-writable":
            Path(idx).chmod(0o620)
        elif damage == "corrupt":
            Path(idx).write_bytes(b"\x00garbage")
        elif damage == "symlink":
            Path(idx).rename(idx + ".real")
            Path(idx).symlink_to(idx + ".real")
        else:
            other = base / "other"
            other.mkdir()
            other_config = make_config(other, base / "cache")
            build(other_config)
            Path(cache_files(str(base / "cache"), os.fsencode(other))[0]).replace(idx)
        (spool / "closed").chmod(0o755)

        assert ["closed", "open"] == served(config, OTHER_USER)

    def test_inode_file_of_another_build(self, config: Config, spool: Path, base: Path) -> None:
        """An index paired with an inode file of another build is not used once the spool changed."""
        inos = cache_files(str(base / "cache"), os.fsencode(spool))[2]
        saved = Path(inos).read_bytes()
        build(config)
        Path(inos).write_bytes(saved)
        time.sleep(0.01)
        maildir(spool / "added", 0o700)
        (spool / "closed").chmod(0o755)

        assert ["closed", "open"] == served(config, OTHER_USER)


# --- update ------------------------------------------------------------------------------


class TestUpdate:
    """Rebuilding reuses what did not change, and waits out a spool that is changing."""

    def test_reuse_by_ctime(self, spool: Path, base: Path) -> None:
        """Only entries whose ctime moved have their ACL read again."""
        for i in range(5):
            maildir(spool / f"m{i}", 0o755)
        config = make_config(spool, base / "cache")
        cfg = config.scan_cache
        assert cfg is not None
        first = update(cfg, config.spools[0], DEFAULT_FS, clock=ahead)
        (spool / "m2").chmod(0o700)
        xattrs: list[bytes] = []

        def getxattr(path: bytes, name: str, *, follow_symlinks: bool = True) -> bytes:
            xattrs.append(path)
            return os.getxattr(path, name, follow_symlinks=follow_symlinks)

        second = update(cfg, config.spools[0], Fs(getxattr=getxattr), clock=ahead)

        assert (5, 0) == (first.entries, first.reused)
        assert (5, 4) == (second.entries, second.reused)
        assert [os.fsencode(spool / "m2")] == xattrs
        assert ["m0", "m1", "m3", "m4"] == served(config, OTHER_USER)

    def test_malformed_previous_build(self, spool: Path, base: Path) -> None:
        """A names file of the right version but the wrong shape is read as no previous build."""
        maildir(spool / "m", 0o755)
        config = make_config(spool, base / "cache")
        cfg = config.scan_cache
        assert cfg is not None
        build(config)
        names = Path(cache_files(cfg.dir, os.fsencode(spool))[1])
        for junk in (
            {"v": 1, "built": 0},
            {"v": 1, "built": 0, "entries": {b"m": "junk"}},
            {"v": 1, "built": 0, "entries": {b"m": (1, 2, "who")}},
        ):
            names.write_bytes(marshal.dumps(junk))
            u = update(cfg, config.spools[0], DEFAULT_FS, clock=ahead)
            assert (1, 0) == (u.entries, u.reused)
        assert ["m"] == served(config, OTHER_USER)

    def test_racy_spool(self, spool: Path, base: Path) -> None:
        """A spool modified within the clock's resolution: retried, then indexed without a signature."""
        maildir(spool / "m", 0o755)
        config = make_config(spool, base / "cache")
        cfg = config.scan_cache
        assert cfg is not None
        naps: list[float] = []

        u = update(cfg, config.spools[0], DEFAULT_FS, sleep=naps.append)

        assert u.racy
        assert 2 == len(naps)
        assert all(0 < n <= RACY_NS / 1e9 + 0.01 for n in naps)
        idx = Index.load(cache_files(cfg.dir, os.fsencode(spool))[0])
        assert idx is not None
        assert idx.dir_sig is None
        counting = CountingFs()
        assert ["m"] == served(config, OTHER_USER, counting.fs())

    def test_non_directories_and_links(self, spool: Path, base: Path) -> None:
        """Plain files are never candidates; symbolic links always are (their target decides)."""
        (spool / "file").write_text("From x\n")
        (spool / "link").symlink_to("/")
        config = make_config(spool, base / "cache")
        build(config)
        cfg = config.scan_cache
        assert cfg is not None
        idx = Index.load(cache_files(cfg.dir, os.fsencode(spool))[0])

        assert idx is not None
        assert {OTHER: b"link"} == idx.index

    def test_unlistable_spool(self, base: Path) -> None:
        """A missing spool is an OSError for the caller (the CLI reports it)."""
        config = make_config(base / "missing", base / "cache")
        assert config.scan_cache is not None
        with pytest.raises(OSError, match="missing"):
            update(config.scan_cache, config.spools[0], DEFAULT_FS)

    def test_files_private(self, spool: Path, base: Path) -> None:
        """The directory is 0700 and the files 0600: entry names of a 0711 spool stay private."""
        config = make_config(spool, base / "cache")
        build(config)

        assert 0o700 == (base / "cache").stat().st_mode & 0o777
        assert {0o600} == {p.stat().st_mode & 0o777 for p in (base / "cache").iterdir()}


class TestTrust:
    """The cache directory follows the trust rule (issue 16, finding 14)."""

    @pytest.mark.skipif(os.geteuid() != 0, reason="plants a link owned by another user")
    def test_planted_link_not_followed(self, spool: Path, base: Path) -> None:
        """A ``dir`` that another user made a link in a sticky world-writable parent is refused.

        Before, root followed the link and wrote its cache files wherever it pointed.
        """
        sticky = base / "tmp"
        sticky.mkdir()
        sticky.chmod(0o1777)
        victim = base / "victim"
        victim.mkdir()
        link = sticky / "nsprov-cache"
        link.symlink_to(victim)
        os.chown(link, 65534, 65534, follow_symlinks=False)
        config = make_config(spool, link)
        assert config.scan_cache is not None

        with pytest.raises(UntrustedFileError, match=f"{link} is owned by uid 65534"):
            update(config.scan_cache, config.spools[0], DEFAULT_FS)
        assert [] == list(victim.iterdir())

    def test_untrusted_directory_not_used(self, spool: Path, base: Path) -> None:
        """A cache in a directory others may write is not used by logins, and status says why."""
        maildir(spool / "m", 0o755)
        config = make_config(spool, base / "cache")
        build(config)
        assert config.scan_cache is not None
        (base / "cache").chmod(0o777)
        sp = config.spools[0]

        assert None is candidates(config.scan_cache, sp, os.fsencode(spool), OWNER.identity, Fs())
        assert "writable by group or other (mode 0777)" in str(
            status(config.scan_cache, sp).problem
        )
        with pytest.raises(UntrustedFileError):
            update(config.scan_cache, sp, DEFAULT_FS)


def test_candidates_none_without_cache(spool: Path, base: Path) -> None:
    """No cache files: None, which sends the scan back to listing the spool."""
    cfg = ScanCacheConfig(dir=str(base / "nothing"))
    config = make_config(spool, None)
    assert None is candidates(cfg, config.spools[0], os.fsencode(spool), OWNER.identity, Fs())


# --- status, config and CLI --------------------------------------------------------------


class TestStatus:
    def test_states(self, spool: Path, base: Path) -> None:
        """Missing, fresh, expired, unusable."""
        config = make_config(spool, base / "cache", max_age=10, refresh=1)
        cfg = config.scan_cache
        assert cfg is not None
        sp = config.spools[0]
        assert "missing" == status(cfg, sp).problem
        maildir(spool / "m", 0o755)
        build(config)
        fresh = status(cfg, sp)
        assert fresh.fresh
        assert 1 == fresh.entries
        later = status(cfg, sp, now_ns=time.time_ns() + 20 * 10**9)
        assert not later.fresh
        assert "older than max_age" in str(later.problem)
        Path(fresh.file).chmod(0o666)
        assert "unusable" in str(status(cfg, sp).problem)


class TestConfig:
    def test_defaults(self, spool: Path) -> None:
        """An empty [scan_cache] table enables the cache with the defaults."""
        config = config_from_mapping({"spool": [{"path": str(spool)}], "scan_cache": {}})
        assert ScanCacheConfig() == config.scan_cache
        assert None is make_config(spool, None).scan_cache

    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ({"dir": "relative"}, "scan_cache.dir: must be an absolute path"),
            ({"max_age": 0}, "scan_cache.max_age: must be > 0"),
            ({"refresh": -1}, "scan_cache.refresh: must be >= 0"),
            ({"max_age": 60, "refresh": 60}, "must be shorter than max_age"),
            ({"ttl": 1}, "scan_cache.ttl"),
        ],
    )
    def test_problems(self, spool: Path, table: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            config_from_mapping({"spool": [{"path": str(spool)}], "scan_cache": table})


class TestCli:
    def write(self, base: Path, spool: Path, cache: bool = True) -> str:
        path = base / "nsprov.toml"
        text = f'[[spool]]\npath = "{spool}"\n'
        if cache:
            text += f'[scan_cache]\ndir = "{base / "cache"}"\n'
        path.write_text(text)
        return str(path)

    def test_update_then_status(
        self, spool: Path, base: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """status fails before the first update and passes after it."""
        maildir(spool / "m", 0o755)
        settle(spool)
        config = self.write(base, spool)

        assert 1 == cli_main(["cache", "status", f"--config={config}"])
        assert "NOT USED: missing" in capsys.readouterr().out
        assert 0 == cli_main(["cache", "update", f"--config={config}"])
        assert f"{spool}: 1 entries, 0 unchanged" in capsys.readouterr().out
        assert 0 == cli_main(["cache", "status", f"--config={config}"])
        assert "fresh" in capsys.readouterr().out

    def test_errors(self, spool: Path, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """No [scan_cache], a bad config, a missing spool: exit 1 with one clear line."""
        assert 1 == cli_main(["cache", "update", f"--config={self.write(base, spool, False)}"])
        assert "has no [scan_cache] table" in capsys.readouterr().err
        assert 1 == cli_main(["cache", "update", f"--config={base / 'absent.toml'}"])
        assert "cannot read" in capsys.readouterr().err
        assert 1 == cli_main(["cache", "update", f"--config={self.write(base, base / 'gone')}"])
        assert "gone" in capsys.readouterr().err


# --- serve ------------------------------------------------------------------------------------


class TestServe:
    def test_answer_depends_on_index(self, spool: Path, base: Path) -> None:
        """A cached serve answer is invalidated when the index is rebuilt (a grant may show)."""
        maildir(spool / "closed", 0o750, 0o755)
        config = make_config(spool, base / "cache")
        build(config)
        resolver = Resolver(identify=Identities())
        first = resolver.resolve(config, 0, UserdbKey("other"), None)
        assert first.entry is not None
        assert None is first.entry.deps.changed()
        (spool / "closed").chmod(0o755)
        assert None is first.entry.deps.changed()  # the cache hides the grant: bounded by max_age

        build(config)

        assert first.entry.deps.changed() is not None
        again = resolver.resolve(config, 0, UserdbKey("other"), first.entry)
        assert "miss" == again.how
        assert b"closed" in again.answer.value

    def test_server_refreshes(self, spool: Path, base: Path) -> None:
        """nsprov serve builds the cache at start and every refresh seconds."""
        maildir(spool / "m", 0o755)
        settle(spool)
        config = make_config(spool, base / "cache", refresh=0.2, max_age=5)
        idx = Path(cache_files(str(base / "cache"), os.fsencode(spool))[0])
        with running(config, base) as (_, log):
            deadline = time.monotonic() + 10
            while not idx.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            first = idx.stat().st_mtime_ns
            while idx.stat().st_mtime_ns == first and time.monotonic() < deadline:
                time.sleep(0.05)
            assert idx.stat().st_mtime_ns != first
        assert "event=scan-cache-updated" in log.getvalue()

    def test_server_logs_failures(self, base: Path) -> None:
        """An update that fails is logged, and the server keeps serving."""
        config = make_config(base / "missing", base / "cache", refresh=0.2, max_age=5)
        with running(config, base) as (_, log):
            deadline = time.monotonic() + 10
            while "scan-cache-failed" not in log.getvalue() and time.monotonic() < deadline:
                time.sleep(0.05)
        assert "event=scan-cache-failed" in log.getvalue()


def test_member_group_candidate(spool: Path, base: Path) -> None:
    """A group-only entry reaches a member through the group principal, not other."""
    path = maildir(spool / "team", 0o750)
    os.chown(path, -1, MY_GID)
    config = make_config(spool, base / "cache")
    build(config)

    assert ["team"] == served(config, MEMBER)
    assert [] == served(config, OTHER_USER)


def test_check_finding(spool: Path, base: Path) -> None:
    """nsprov check warns about a configured cache that logins would not use, not a fresh one."""
    config = make_config(spool, base / "cache")
    assert [] == check_scan_cache(make_config(spool, None))
    [finding] = check_scan_cache(config)
    assert ("warning", "scan-cache-stale", str(spool)) == (
        finding.severity,
        finding.code,
        finding.subject,
    )
    assert "is missing: every login scans the whole spool" in finding.message
    build(config)
    assert [] == check_scan_cache(config)
