"""The persistent scan cache: which spool entries a user could possibly read.

On a spool of 100,000 entries a login that scans everything pays 100,000
``lstat`` and ``getxattr`` calls, even when the user can read one entry.  The
scan cache is an index from *principal* to entry names, built out of band by
``nsprov cache update`` (or by ``nsprov serve``): for every entry, the users and
groups whose permission class on the entry itself grants read and search, and
whether "other" does.  A login looks up its own principals (its uid, its
primary and supplementary gids, and "other"), and scans only those entries,
live.

What the cache decides, and what it never decides:

- It only narrows which entries a login looks at.  Every entry the login does
  look at is checked live, exactly as without the cache (``lstat``, ACL,
  ``cur``/``new``, symlink target, excludes).  A stale or forged cache can hide
  an entry from a user, never show one the user cannot read now.
- Revocations take effect at once: a user's candidates are re-checked live.
- Added, removed and renamed entries take effect at once: when the spool
  directory's mtime differs from the cached one, the login lists the spool
  (names and inode numbers only, no ``stat``) and scans what the cache does
  not know, or knows under another inode number.  (A directory removed and
  made again under its old name may get its old inode number back: that is
  a permission change on an existing entry, below.)  When the user's
  candidates are over half the spool, a changed spool is simply listed and
  scanned as without a cache, which is cheaper then.
- A new *grant* on an existing entry (``chmod``, ``chown``, ``setfacl`` on an
  entry the user could not read when the cache was built) shows up after the
  next update.  That is the cache's freshness bound: a cache older than
  ``max_age`` seconds is not used at all (the login scans the whole spool).

An update re-reads an entry's ACL only when its inode number or ctime changed
since the previous update (``chmod``, ``chown`` and ``setfacl`` all move the
ctime); entries whose ctime is within a second of the previous update are read
again anyway, as the kernel's timestamps are coarser than a nanosecond.

Files, per spool, in the cache directory (mode 0700, owned by whoever runs the
update; the directory must pass the trust rule of :mod:`nsprov._trust`, and is
opened through it, never by a path that a link could redirect; a login trusts
only files owned by root or by itself and writable by nobody else):

``scan-<hash>.idx``
    ``marshal``: the version, the spool path and its real path, the build
    time, the spool directory's ``(dev, ino, mtime)`` (None when it was
    changing during the build), and the index ``{principal: sorted names}``,
    each list stored as one ``/``-joined bytes string (no name holds a ``/``),
    so a login splits only the lists of its own principals.
``scan-<hash>.inos``
    ``marshal``: the build time and ``{name: ino}``, read by logins that found
    the spool directory changed since the build.
``scan-<hash>.names``
    ``marshal``: the build time and ``{name: (ino, ctime_ns, principals)}``,
    read only by updates.

Principals are ints: a uid as itself, a gid ``g`` as ``~g`` (negative), and
"other" as :data:`OTHER`.
"""

from __future__ import annotations

import heapq
import os
import stat as st
import time
from typing import TYPE_CHECKING, Any

import attrs

from ._fs import write_private
from ._perms import FileFacts, read_acl

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from ._config import ScanCacheConfig, SpoolConfig
    from ._fs import Fs
    from ._perms import Identity

VERSION = 1
#: The principal "everybody else": other bits grant read and search.
OTHER = -(1 << 40)
#: Timestamps closer than this to an update's start are not trusted to have settled.
RACY_NS = 1_000_000_000
#: A cache built this far in the future (the clock stepped back) is not used.
FUTURE_SLACK_NS = 5_000_000_000
_RX = 5


def principals(facts: FileFacts) -> tuple[int, ...]:
    """The principals whose own class on *facts* grants read and search, sorted.

    Anyone :func:`nsprov._perms.decide` allows ``R_OK | X_OK`` holds one of these:
    the owner class is decided by the owner bits, the group class by a matching
    group entry that grants (limited by the mask), a named user by its entry
    (limited by the mask), everybody else by the other bits.  With an empty or
    partial mask no group-class entry grants; with an empty mask the kernel
    does not even consult the named entries (their users fall to "other").
    """
    out: set[int] = set()
    acl = facts.acl
    if acl is None:
        mode = facts.mode
        if (mode >> 6) & _RX == _RX:
            out.add(facts.uid)
        if (mode >> 3) & _RX == _RX:
            out.add(~facts.gid)
        if mode & _RX == _RX:
            out.add(OTHER)
        return tuple(sorted(out))
    if acl.user_obj & _RX == _RX:
        out.add(facts.uid)
    mask = acl.mask
    if mask is None:
        if acl.group_obj & _RX == _RX:
            out.add(~facts.gid)
    elif mask & _RX == _RX:
        out.update(uid for uid, perm in acl.users if perm & _RX == _RX)
        if acl.group_obj & _RX == _RX:
            out.add(~facts.gid)
        out.update(~gid for gid, perm in acl.groups if perm & _RX == _RX)
    if acl.other & _RX == _RX:
        out.add(OTHER)
    return tuple(sorted(out))


def keys_of(ident: Identity) -> tuple[int, ...]:
    """The principals *ident* holds: its uid, every group, and "other"."""
    return (ident.uid, ~ident.gid, *(~g for g in ident.groups if g != ident.gid), OTHER)


def cache_files(directory: str, spool: bytes) -> tuple[str, str, str]:
    """The index, names and inode files of *spool* in *directory*."""
    from ._names import entry_hash  # noqa: PLC0415 - hashlib only when a cache is used

    base = f"{directory}/scan-{entry_hash(b'scan-cache', spool, 12)}"
    return base + ".idx", base + ".names", base + ".inos"


def cache_dir_fd(directory: str, *, create: bool = False) -> int:
    """A descriptor of the cache *directory*, opened under the trust rule (made first with *create*).

    Raises:
        UntrustedFileError: The directory, or one above it, fails the trust rule.
        OSError: It cannot be made or opened.
    """
    from ._trust import open_trusted  # noqa: PLC0415 - only when a cache is used

    if create:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
    fd, _ = open_trusted(directory, what="scan cache directory", directory=True)
    return fd


def _load(path: str, dir_fd: int | None = None) -> Any:
    """A marshalled cache file, or None when absent, untrusted or corrupt.

    With *dir_fd*, *path* is resolved in that directory (its base name is used).
    """
    import marshal  # noqa: PLC0415 - builtin

    name = path if dir_fd is None else os.path.basename(path)
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd
        )
    except OSError:
        return None
    try:
        s = os.fstat(fd)
        if not st.S_ISREG(s.st_mode) or s.st_uid not in {0, os.geteuid()} or s.st_mode & 0o022:
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return marshal.loads(b"".join(chunks))  # noqa: S302 - our own file, owner and mode checked
    except (OSError, EOFError, ValueError, TypeError):
        return None
    finally:
        os.close(fd)


@attrs.frozen
class Index:
    """A loaded ``.idx`` file."""

    spool: bytes
    real: bytes
    built: int
    dir_sig: tuple[int, int, int] | None
    index: dict[int, bytes]
    path: str
    #: How many entries the spool had at the build.
    count: int = 0

    @classmethod
    def load(cls, path: str, dir_fd: int | None = None) -> Index | None:
        """Read and validate the index at *path* (in *dir_fd*); None when it is unusable."""
        data = _load(path, dir_fd)
        if not isinstance(data, dict) or data.get("v") != VERSION:
            return None
        index, sig = data.get("index"), data.get("dir")
        if not isinstance(index, dict) or not (sig is None or isinstance(sig, tuple)):
            return None
        try:
            return cls(
                spool=data["spool"],
                real=data["real"],
                built=int(data["built"]),
                dir_sig=sig,
                index=index,
                path=path,
                count=int(data.get("count", 0)),
            )
        except (TypeError, KeyError, ValueError):
            return None

    def count_for(self, keys: Iterable[int]) -> int:
        """How many names are listed under *keys* (a name under two keys counts twice)."""
        return sum(v.count(b"/") + 1 for k in keys if (v := self.index.get(k)))

    def names_for(self, keys: Iterable[int]) -> Iterator[bytes]:
        """The sorted names listed under any of *keys*, each once."""
        lists = [v.split(b"/") for k in keys if (v := self.index.get(k))]
        if len(lists) == 1:
            return iter(lists[0])
        return _unique(heapq.merge(*lists))


def _unique(names: Iterable[bytes]) -> Iterator[bytes]:
    last = None
    for n in names:
        if n != last:
            yield n
            last = n


def candidates(
    cfg: ScanCacheConfig,
    spool: SpoolConfig,
    real: bytes,
    ident: Identity,
    fs: Fs,
    *,
    now_ns: int | None = None,
) -> Iterator[bytes] | None:
    """The sorted entry names of *spool* that *ident* could read, or None without a fresh cache.

    None sends the caller back to listing the whole spool.
    """
    idx_path, _, inos_path = cache_files(cfg.dir, spool.path_bytes)
    try:
        dir_fd = cache_dir_fd(cfg.dir)
    except OSError:  # missing, or not trusted: scan the spool as without a cache
        return None
    try:
        return _candidates(cfg, spool, real, ident, fs, dir_fd, idx_path, inos_path, now_ns)
    finally:
        os.close(dir_fd)


def _candidates(
    cfg: ScanCacheConfig,
    spool: SpoolConfig,
    real: bytes,
    ident: Identity,
    fs: Fs,
    dir_fd: int,
    idx_path: str,
    inos_path: str,
    now_ns: int | None,
) -> Iterator[bytes] | None:
    idx = Index.load(idx_path, dir_fd)
    if idx is None or idx.spool != spool.path_bytes or idx.real != real:
        return None
    now = time.time_ns() if now_ns is None else now_ns
    if now - idx.built > cfg.max_age * 1e9 or idx.built - now > FUTURE_SLACK_NS:
        return None
    keys = keys_of(ident)
    if idx.dir_sig is not None and fs.dir_sig(real) == idx.dir_sig:
        return idx.names_for(keys)
    if idx.count_for(keys) * 2 > idx.count:
        # The user may read most of the spool: comparing the listing with the
        # cache would cost more than scanning the listing.
        return None
    base = idx.names_for(keys)
    # The spool changed since the build: names the cache does not know, or knows
    # under another inode, are scanned too; names gone from the spool are dropped.
    inos = _load(inos_path, dir_fd)
    if not isinstance(inos, dict) or inos.get("built") != idx.built:
        return None
    known = inos.get("inos")
    if not isinstance(known, dict):
        return None
    live = dict(fs.listing(real))
    unknown = sorted(name for name, ino in live.items() if known.get(name) != ino)
    return _unique(heapq.merge((n for n in base if n in live), unknown))


@attrs.frozen
class UpdateStats:
    """What one update did."""

    spool: str
    entries: int
    reused: int
    seconds: float
    racy: bool


def _write(path: str, data: dict[str, Any], dir_fd: int) -> None:
    import marshal  # noqa: PLC0415

    write_private(os.path.basename(path), marshal.dumps(data), dir_fd=dir_fd)


def update(
    cfg: ScanCacheConfig,
    spool: SpoolConfig,
    fs: Fs,
    *,
    clock: Any = time.time_ns,
    sleep: Any = time.sleep,
) -> UpdateStats:
    """Rebuild *spool*'s cache files, reusing entries whose inode and ctime did not change.

    Raises:
        UntrustedFileError: The cache directory fails the trust rule (nothing is written).
        OSError: The spool cannot be listed, or the cache directory cannot be written.
    """
    dir_fd = cache_dir_fd(cfg.dir, create=True)
    try:
        return _update(cfg, spool, fs, dir_fd, clock=clock, sleep=sleep)
    finally:
        os.close(dir_fd)


def _update(
    cfg: ScanCacheConfig, spool: SpoolConfig, fs: Fs, dir_fd: int, *, clock: Any, sleep: Any
) -> UpdateStats:
    started = time.monotonic()
    spool_b = spool.path_bytes
    real = fs.realpath(spool_b)
    idx_path, names_path, inos_path = cache_files(cfg.dir, spool_b)
    previous = _load(names_path, dir_fd)
    prev: dict[bytes, tuple[int, int, tuple[int, ...]]] = {}
    prev_built = 0
    if (
        isinstance(previous, dict)
        and previous.get("v") == VERSION
        and isinstance(previous.get("entries"), dict)
        and isinstance(previous.get("built"), int)
    ):
        prev, prev_built = previous["entries"], previous["built"]
    for attempt in range(3):
        built = clock()
        before = fs.dir_sig(real)
        entries: dict[bytes, tuple[int, int, tuple[int, ...]]] = {}
        reused = 0
        for name, _ in fs.listing(real):
            path = real + b"/" + name
            try:
                s = fs.lstat(path)
                old = prev.get(name)
                if (
                    type(old) is tuple
                    and len(old) == 3  # (ino, ctime, principals)
                    and type(old[2]) is tuple
                    and old[0] == s.st_ino
                    and old[1] == s.st_ctime_ns
                    and s.st_ctime_ns < prev_built - RACY_NS
                ):
                    entries[name] = old
                    reused += 1
                    continue
                if st.S_ISDIR(s.st_mode):
                    acl = read_acl(path, getxattr=fs.getxattr, follow_symlinks=False)
                    who = principals(FileFacts.from_stat(s, acl))
                elif st.S_ISLNK(s.st_mode):
                    who = (OTHER,)  # checked live: the target decides
                else:
                    who = ()  # never served: not a directory
            except FileNotFoundError:
                continue  # removed while we looked: the spool's mtime moved
            entries[name] = (s.st_ino, s.st_ctime_ns, who)
        after = fs.dir_sig(real)
        racy = before != after or built - after[2] < RACY_NS
        if not racy or attempt == 2:
            break
        # The spool changed during the listing, or so recently that a change in the
        # same clock tick would not move its mtime: wait the tick out and list again.
        sleep(max(0.0, (RACY_NS - (built - after[2])) / 1e9) + 0.01 if before == after else 0.05)
    index: dict[int, list[bytes]] = {}
    for name in sorted(entries):
        for principal in entries[name][2]:
            index.setdefault(principal, []).append(name)
    _write(names_path, {"v": VERSION, "built": built, "entries": entries}, dir_fd)
    _write(
        inos_path,
        {"v": VERSION, "built": built, "inos": {n: e[0] for n, e in entries.items()}},
        dir_fd,
    )
    _write(
        idx_path,
        {
            "v": VERSION,
            "spool": spool_b,
            "real": real,
            "built": built,
            "dir": None if racy else after,
            "count": len(entries),
            "index": {k: b"/".join(v) for k, v in index.items()},
        },
        dir_fd,
    )
    return UpdateStats(
        spool=spool.path,
        entries=len(entries),
        reused=reused,
        seconds=time.monotonic() - started,
        racy=racy,
    )


@attrs.frozen
class Status:
    """How a spool's cache looks now (for ``nsprov cache status`` and ``nsprov check``)."""

    spool: str
    file: str
    age: float | None
    fresh: bool
    entries: int
    problem: str | None = None


def status(cfg: ScanCacheConfig, spool: SpoolConfig, *, now_ns: int | None = None) -> Status:
    """Describe *spool*'s cache: its age, whether a login would use it, and why not."""
    idx_path = cache_files(cfg.dir, spool.path_bytes)[0]
    try:
        dir_fd = cache_dir_fd(cfg.dir)
    except FileNotFoundError:
        return Status(spool.path, idx_path, None, fresh=False, entries=0, problem="missing")
    except OSError as e:  # UntrustedFileError names the directory and the rule
        return Status(spool.path, idx_path, None, fresh=False, entries=0, problem=str(e))
    try:
        idx = Index.load(idx_path, dir_fd)
        present = idx is not None or _lexists(os.path.basename(idx_path), dir_fd)
    finally:
        os.close(dir_fd)
    if idx is None:
        unusable = (
            "missing"
            if not present
            else "unusable (corrupt, another version, or owned by another user or writable by others)"
        )
        return Status(spool.path, idx_path, None, fresh=False, entries=0, problem=unusable)
    now = time.time_ns() if now_ns is None else now_ns
    age = (now - idx.built) / 1e9
    entries = len({n for names in idx.index.values() for n in names.split(b"/")})
    problem: str | None = None
    if idx.spool != spool.path_bytes:
        problem = "built for another spool path"
    elif age > cfg.max_age:
        problem = f"older than max_age ({cfg.max_age:g}s)"
    elif age < -FUTURE_SLACK_NS / 1e9:
        problem = "built in the future (the clock went back)"
    return Status(
        spool.path, idx_path, age, fresh=problem is None, entries=entries, problem=problem
    )


def _lexists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
