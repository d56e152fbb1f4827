"""(c) Scan throughput: nsprov's discovery against bare loops of the same system calls."""

from __future__ import annotations

import errno
import os
import shutil
import statistics
import time
from functools import partial
from typing import TYPE_CHECKING

from .report import ms, say, verdict
from .settings import BIG, KEEP
from .spools import NEW_ENTRY, PRIVATE, PRIVATE_READABLE, SCAN_MAX, Configs, ensure_spool

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from tests.live.harness import User

    from nsprov._config import Config
    from nsprov._identity import MailUser


_ACL = "system.posix_acl_access"


def _acl(path: bytes) -> None:
    try:
        os.getxattr(path, _ACL, follow_symlinks=False)
    except OSError as e:
        if e.errno != errno.ENODATA:
            raise


def bare_scan(root: bytes) -> int:
    """The system calls nsprov makes per entry, with nothing around them."""
    n = 0
    for name in sorted(os.listdir(root)):
        if name.startswith(b"."):
            continue
        path = root + b"/" + name
        os.lstat(path)
        _acl(path)
        for sub in (b"/cur", b"/new"):
            os.lstat(path + sub)
            _acl(path + sub)
        n += 1
    return n


def bare_entry_scan(root: bytes) -> int:
    """The system calls nsprov makes for an entry the user may not read: its lstat and ACL."""
    n = 0
    for name in sorted(os.listdir(root)):
        if name.startswith(b"."):
            continue
        path = root + b"/" + name
        os.lstat(path)
        _acl(path)
        n += 1
    return n


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def scan_throughput(trees: Mapping[int, Configs], user: User) -> None:
    """Full scans with the ``scan`` config (``namespace.max`` high), then the login path's."""
    from nsprov._config import load_config  # noqa: PLC0415 - the snapshot, once on sys.path
    from nsprov._engine import plan  # noqa: PLC0415
    from nsprov._identity import mail_user_from_nss  # noqa: PLC0415
    from nsprov._scan import discover  # noqa: PLC0415

    say()
    say("(c) scan throughput in this process, warm cache; entries/s, and nsprov time / bare time")
    say(f"    [namespace] max = {SCAN_MAX:,}, so that discovery examines every entry")
    say(
        f"  {'entries':>8} {'bare loop':>11} {'discover':>11} {'ratio':>6} {'plan':>11} {'ratio':>6}"
    )
    for size, conf in trees.items():
        config: Config = load_config(str(conf.scan))
        mail_user: MailUser = mail_user_from_nss(user.name, config.identity)
        environ = {"USER": user.name, "USERDB_KEYS": "UID GID HOME SYSTEM_GROUPS_USER "}
        root = os.fsencode(config.spools[0].path)
        found = discover(config, mail_user, keep_skipped=False)
        count = bare_scan(root)
        if len(found.served) != count:
            say(f"  note: nsprov served {len(found.served)} entries, the bare loop saw {count}")
        repeats = 5 if size < BIG else 3
        times: dict[str, list[float]] = {"bare": [], "discover": [], "plan": []}
        for _ in range(repeats):
            times["bare"].append(_timed(partial(bare_scan, root)))
            times["discover"].append(
                _timed(partial(discover, config, mail_user, keep_skipped=False))
            )
            times["plan"].append(
                _timed(partial(plan, config, mail_user, environ, keep_skipped=False))
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        say(
            f"  {size:>8,} {count / med['bare']:>11,.0f} {count / med['discover']:>11,.0f} "
            f"{med['discover'] / med['bare']:>6.2f} {count / med['plan']:>11,.0f} "
            f"{med['plan'] / med['bare']:>6.2f}"
        )
        say(
            f"  {'':>8} ({ms(med['bare'])} ms, {ms(med['discover'])} ms, {ms(med['plan'])} ms "
            f"per scan; median of {repeats}; target discover/bare <= 1.5: "
            f"{verdict(med['discover'] / med['bare'], 1.5)})"
        )
        default = load_config(str(conf.ns))
        login_path = statistics.median(
            _timed(partial(plan, default, mail_user, environ, keep_skipped=False))
            for _ in range(repeats)
        )
        say(
            f"  {'':>8} (the login path, default namespace.max = {default.max_namespaces:,}: "
            f"plan takes {ms(login_path)} ms)"
        )
    restricted_scan(user)


def restricted_scan(user: User) -> None:
    """The large-spool case: the kept 100,000-entry spool where the user may read one entry."""
    from nsprov._config import config_from_mapping  # noqa: PLC0415 - the snapshot's
    from nsprov._identity import mail_user_from_nss  # noqa: PLC0415
    from nsprov._scan import discover  # noqa: PLC0415

    KEEP.mkdir(mode=0o755, exist_ok=True)
    KEEP.chmod(0o755)
    spool = ensure_spool(PRIVATE, BIG, mode=0o750, readable=PRIVATE_READABLE)
    shutil.rmtree(spool / NEW_ENTRY, ignore_errors=True)  # left by an interrupted (f)
    config = config_from_mapping(
        {
            "namespace": {"max": SCAN_MAX},
            "spool": [{"path": str(spool), "prefix": "Shared/{name}/"}],
        }
    )
    mail_user = mail_user_from_nss(user.name, config.identity)
    root = os.fsencode(spool)
    served = len(discover(config, mail_user, keep_skipped=False).served)
    times: dict[str, list[float]] = {"entry": [], "full": [], "discover": []}
    for _ in range(3):
        times["entry"].append(_timed(partial(bare_entry_scan, root)))
        times["full"].append(_timed(partial(bare_scan, root)))
        times["discover"].append(_timed(partial(discover, config, mail_user, keep_skipped=False)))
    med = {k: statistics.median(v) for k, v in times.items()}
    say(
        f"  {PRIVATE.name}: {BIG:,} entries, {served} readable by {user.name}; median of 3: "
        f"discover {ms(med['discover'])} ms; bare loop with nsprov's system calls (lstat and ACL "
        f"of each entry; cur and new only where it may read) {ms(med['entry'])} ms, ratio "
        f"{med['discover'] / med['entry']:.2f} (target <= 1.5: "
        f"{verdict(med['discover'] / med['entry'], 1.5)}); the bare loop above (cur and new "
        f"of every entry too) {ms(med['full'])} ms, ratio {med['discover'] / med['full']:.2f}"
    )
