"""Scenarios: the spools of root-owned maildirs and the nsprov config files over them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs
from tests.live.harness import make_maildir

from .report import say
from .settings import BIG, KEEP

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

#: The spool's ``namespace.max`` for the scan-throughput config: every entry is examined.
SCAN_MAX = 100_000


NS_CONF = """\
# nsprov benchmark: namespaces only.
[[spool]]
path = "{spool}"
prefix = "Shared/{{name}}/"
separator = "/"
"""


ALL_CONF = """\
# nsprov benchmark: every post-login action.
[deny]
users = ["no-such-user-*"]
message = "Denied by the benchmark."

[[alert]]
text = "nsprov benchmark alert."

[acl_groups]

[last_login]
backend = "file"

[[field]]
name = "quota_rule"
value = "*:storage=1G"

[[spool]]
path = "{spool}"
prefix = "Shared/{{name}}/"
separator = "/"
"""


def ensure_spool(path: Path, size: int, *, mode: int = 0o755, readable: str = "") -> Path:
    """A spool of ``size`` root-owned maildirs ``box000001``...; reused when complete.

    Every maildir gets ``mode`` (default 0755: world-readable), but ``readable``, which gets 0755.
    The marker (``<path>.complete``) sits next to the spool, not in it: a dot entry would be one
    more entry to scan.  An interrupted build is resumed (``make_maildir`` reuses what exists).
    """
    marker = path.with_name(path.name + ".complete")
    if marker.exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    started = time.monotonic()
    for i in range(1, size + 1):
        name = f"box{i:06d}"
        entry_mode = 0o755 if name == readable else mode
        make_maildir(path / name, messages=0, owner=0, group=0, mode=entry_mode)
        if size >= BIG and i % 20_000 == 0:
            say(f"  ... {i:,} of {size:,} maildirs ({time.monotonic() - started:.0f} s)")
    marker.write_text(f"{size}\n")
    if size >= BIG:
        say(f"  built {path} in {time.monotonic() - started:.0f} s")
    return path


@attrs.frozen(kw_only=True)
class Configs:
    """The nsprov config files for one spool."""

    ns: Path
    all: Path
    #: Namespaces only, with ``namespace.max`` high enough that discovery examines every entry.
    scan: Path
    #: The ns config under another path, for ``--serve``: a config-cache entry for it means
    #: that the in-process worker ran, i.e. the fast path fell back.
    fast: Path
    #: The same again, for ``nsprov-fast-s``.
    fast_s: Path
    #: The ns config under another path, for ``nsprov-ns-base`` (``--baseline``): another
    #: commit's worker must not share (and rewrite) the config-cache entry of the measured one.
    base: Path
    #: The ns config under another path, for ``nsprov-cold``: its login profile is removed
    #: before each login, so that every one takes the full path and stores it again.
    cold: Path
    #: Namespaces for imap, nothing for pop3: a pop3 login with a warm profile execs at once.
    nothing_pop3: Path


def write_configs(directory: Path, spool: Path, written: list[Path]) -> Configs:
    directory.mkdir(parents=True, exist_ok=True)
    texts = {
        "ns": NS_CONF.format(spool=spool),
        "all": ALL_CONF.format(spool=spool),
        "scan": f"[namespace]\nmax = {SCAN_MAX}\n\n" + NS_CONF.format(spool=spool),
        "fast": NS_CONF.format(spool=spool),
        "fast_s": NS_CONF.format(spool=spool),
        "base": NS_CONF.format(spool=spool),
        "cold": NS_CONF.format(spool=spool),
        "nothing_pop3": NS_CONF.format(spool=spool)
        + '\n[actions]\nimap = ["namespaces"]\npop3 = []\n',
    }
    paths = {}
    for name, text in texts.items():
        path = paths[name] = directory / f"{name}.toml"
        path.write_text(text)
        path.chmod(0o644)
        written.append(path)
    return Configs(**paths)


#: (f): the second kept spool: every maildir 0750 root:root but :data:`PRIVATE_READABLE`.
PRIVATE = KEEP / f"spool-{BIG}-private"


#: (f): the one entry of :data:`PRIVATE` the test user can read (0755: as "other").
PRIVATE_READABLE = f"box{BIG // 2:06d}"


#: (f): the maildir added to both spools after the update (0755); removed at the end, and at the
#: start when an interrupted run left it behind.
NEW_ENTRY = f"box{BIG + 1:06d}"


def build_spools(
    sizes: Iterable[int], workdir: Path, written: list[Path]
) -> tuple[dict[int, Path], dict[int, Configs]]:
    """The spools of ``sizes`` and of 10 ((g)), 100 and 1,000 entries, and their configs."""
    spools: dict[int, Path] = {}
    for size in sorted({*sizes, 10, 100, 1_000}):
        base = KEEP if size >= BIG else workdir / "spools"
        if size >= BIG:
            KEEP.mkdir(mode=0o755, exist_ok=True)
            KEEP.chmod(0o755)
            say(f"100,000-entry spool: {KEEP / f'spool-{size}'} (kept; --clean removes it)")
        spools[size] = ensure_spool(base / f"spool-{size}", size)
    configs = {
        size: write_configs(workdir / "conf" / str(size), spool, written)
        for size, spool in spools.items()
    }
    return spools, configs
