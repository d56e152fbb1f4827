"""(f) Large spools with the scan cache: updates, the step with and without it, live logins."""

from __future__ import annotations

import contextlib
import re
import shutil
import statistics
import subprocess
import time
from typing import TYPE_CHECKING

import attrs
from tests.live.harness import User, make_maildir

from .children import ChildRun, dovecot_env, step_argv, step_runs
from .instances import Live, start_instance
from .report import ms, p90, ratio_cell, say
from .settings import BIG, KEEP, TOOL_ENV
from .spools import NEW_ENTRY, NS_CONF, PRIVATE, PRIVATE_READABLE, ensure_spool
from .subjects import Subject, nsprov_line
from .tables import USER_NAME, added, error_summary, report_latency

if TYPE_CHECKING:
    import argparse
    import random
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from .target import Target


#: (f): ``[scan_cache] max_age``: no case may outlive the cache (a login ignores a stale one).
CACHE_MAX_AGE = 3600


#: (f): cold and warm ``nsprov cache update`` runs per spool.
UPDATE_RUNS = 3


CACHE_CONF = """
[scan_cache]
dir = "{cache}"
max_age = {max_age}
refresh = 0
"""


_UPDATE = re.compile(r": (\d+) entries, (\d+) unchanged since the last update, ([\d.]+)s")


@attrs.frozen(kw_only=True)
class CacheLayout:
    """One spool of (f) and its configs: without ``[scan_cache]``, and with two cache dirs."""

    label: str
    spool: Path
    #: The entries the test user can read (before :data:`NEW_ENTRY` is added).
    readable: int
    plain: Path  # no ``[scan_cache]``
    cached: Path  # ``[scan_cache]`` in ``before``
    before: Path  # updated before :data:`NEW_ENTRY` was added
    rebuilt: Path  # ``[scan_cache]`` in ``after``
    after: Path  # updated (again) after it


@attrs.frozen(kw_only=True)
class Update:
    """One ``nsprov cache update``: wall time and what it printed."""

    wall: float
    seconds: float  # as the command reports it (the update alone, without start-up)
    entries: int
    reused: int
    racy: bool
    ok: bool
    text: str


def cache_layouts(workdir: Path, written: list[Path]) -> list[CacheLayout]:
    """Build (or reuse) the two kept spools; write their configs; drop a leftover new entry."""
    KEEP.mkdir(mode=0o755, exist_ok=True)
    KEEP.chmod(0o755)
    spools = (
        ("world", "(i) all 0755", BIG, KEEP / f"spool-{BIG}", 0o755),
        ("private", "(ii) 1 readable", 1, PRIVATE, 0o750),
    )
    caches = workdir / "scan-cache"
    caches.mkdir(mode=0o700)
    layouts = []
    for key, label, readable, path, mode in spools:
        say(f"  spool {label}: {path} (kept; --clean removes it)")
        spool = ensure_spool(path, BIG, mode=mode, readable=PRIVATE_READABLE)
        shutil.rmtree(spool / NEW_ENTRY, ignore_errors=True)  # left by an interrupted run
        directory = workdir / "conf" / f"cache-{key}"
        directory.mkdir(parents=True)
        base = NS_CONF.format(spool=spool)
        before, after = caches / f"{key}-before", caches / f"{key}-after"
        texts = {
            "plain": base,
            "cached": base + CACHE_CONF.format(cache=before, max_age=CACHE_MAX_AGE),
            "rebuilt": base + CACHE_CONF.format(cache=after, max_age=CACHE_MAX_AGE),
        }
        paths = {}
        for name, text in texts.items():
            conf = paths[name] = directory / f"{name}.toml"
            conf.write_text(text)
            conf.chmod(0o644)
            written.append(conf)
        layouts.append(
            CacheLayout(
                label=label, spool=spool, readable=readable, before=before, after=after, **paths
            )
        )
    return layouts


def cache_update(target: Target, config: Path) -> Update:
    """Run ``nsprov cache update --config=...`` (one spool) and parse its line."""
    started = time.perf_counter()
    proc = subprocess.run(
        [str(target.script), "cache", "update", f"--config={config}"],
        capture_output=True,
        text=True,
        check=False,
        env=TOOL_ENV,
        timeout=600,
    )
    wall = time.perf_counter() - started
    text = (proc.stdout + proc.stderr).strip()
    m = _UPDATE.search(proc.stdout)
    if proc.returncode != 0 or m is None:
        say(f"  FAIL: nsprov cache update --config={config} exits {proc.returncode}: {text[:200]}")
        return Update(wall=wall, seconds=0.0, entries=0, reused=0, racy=False, ok=False, text=text)
    return Update(
        wall=wall,
        seconds=float(m.group(3)),
        entries=int(m.group(1)),
        reused=int(m.group(2)),
        racy="spool changing" in proc.stdout,
        ok=True,
        text=text,
    )


def _clear(directory: Path) -> None:
    if directory.exists():
        for path in directory.iterdir():
            path.unlink()


def _update_cells(updates: Sequence[Update]) -> str:
    """``wall med / reported med, reused`` of some updates, with a loud note when one was racy."""
    if not updates or not all(u.ok for u in updates):
        return f"{'FAILED':>21}"
    wall = statistics.median(u.wall for u in updates)
    reported = statistics.median(u.seconds for u in updates)
    reused = "/".join(sorted({f"{u.reused:,}" for u in updates}))
    racy = " (RACY: logins list the spool)" if any(u.racy for u in updates) else ""
    return f"{ms(wall):>9} {ms(reported):>9}  {reused:>7}{racy}"


def cache_updates(target: Target, layouts: Sequence[CacheLayout]) -> None:
    """Cold and warm updates into each layout's ``before`` directory; the files' sizes."""
    cold: dict[str, list[Update]] = {layout.label: [] for layout in layouts}
    warm: dict[str, list[Update]] = {layout.label: [] for layout in layouts}
    for _ in range(UPDATE_RUNS):
        for layout in layouts:
            _clear(layout.before)
            cold[layout.label].append(cache_update(target, layout.cached))
        for layout in layouts:
            warm[layout.label].append(cache_update(target, layout.cached))
    say()
    say(
        f"  nsprov cache update, median of {UPDATE_RUNS} each (ms; wall: the command, from "
        "exec to exit; nsprov: the time it reports; reused: entries unchanged since the last update)"
    )
    say(
        f"  {'spool':<16} {'cold wall':>9} {'nsprov':>9}  {'reused':>7}   {'warm wall':>9} "
        f"{'nsprov':>9}  {'reused':>7}   {'.idx':>9} {'.names':>9} {'.inos':>9}"
    )
    for layout in layouts:
        sizes = {p.suffix: p.stat().st_size for p in layout.before.iterdir()}
        size_cells = " ".join(
            f"{sizes[suffix] / 1024:>5.0f} KiB" if suffix in sizes else f"{'-':>9}"
            for suffix in (".idx", ".names", ".inos")
        )
        say(
            f"  {layout.label:<16} {_update_cells(cold[layout.label])}   "
            f"{_update_cells(warm[layout.label])}   {size_cells}"
        )
    entries = {u.entries for ups in (*cold.values(), *warm.values()) for u in ups if u.ok}
    say(f"  entries per update: {', '.join(f'{n:,}' for n in sorted(entries))}")


def report_cache_step(
    title: str,
    results: Mapping[str, tuple[list[ChildRun], int | None]],
    groups: Sequence[tuple[CacheLayout, Sequence[str], int]],
) -> None:
    """The cases' table; per layout, the counts' check and the ratios to the first case."""
    say()
    say(title)
    say(
        f"  {'case':<50} {'wall med':>9} {'p90':>7} {'cpu med':>8} {'cpu p90':>8} "
        f"{'namespaces':>10}  notes"
    )
    messages: list[str] = []  # distinct stderr texts (users' names masked), footnotes
    for label, (runs_, exported) in results.items():
        walls = [r.wall for r in runs_]
        cpus = [r.cpu for r in runs_]
        notes = []
        if failed := sum(r.status != 0 for r in runs_):
            notes.append(f"EXIT != 0 in {failed}")
        for text in sorted({USER_NAME.sub("USER", r.stderr.strip()) for r in runs_ if r.stderr}):
            if text not in messages:
                messages.append(text)
            count = sum(USER_NAME.sub("USER", r.stderr.strip()) == text for r in runs_)
            notes.append(f"stderr [{messages.index(text) + 1}] in {count}")
        say(
            f"  {label:<50} {ms(statistics.median(walls)):>9} {ms(p90(walls)):>7} "
            f"{ms(statistics.median(cpus)):>8} {ms(p90(cpus)):>8} {exported!s:>10}  "
            + ", ".join(notes)
        )
    for i, text in enumerate(messages, 1):
        say(f"  [{i}] {text[:300]}")
    for layout, labels, expected in groups:
        base = results[labels[0]][0]
        counts = [results[label][1] for label in labels]
        if len(set(counts)) != 1:
            say(
                f"  FAIL: {layout.label}: namespaces exported differ: "
                + ", ".join(f"{label}: {n}" for label, n in zip(labels, counts, strict=True))
            )
        elif counts[0] != expected:
            say(f"  FAIL: {layout.label}: {counts[0]} namespaces exported, {expected} expected")
        else:
            say(f"  {layout.label}: every case exports {counts[0]} namespaces (as expected): ok")
        for label in labels[1:]:
            runs_ = results[label][0]
            cells = []
            for what, stat in (("median", statistics.median), ("p90", p90)):
                num, den = stat([r.wall for r in runs_]), stat([r.wall for r in base])
                cells.append(f"{what} {num / den:.3f} ({ms(num)}/{ms(den)})")
            say(f"    {label} / {labels[0]}: {', '.join(cells)}")


def cache_live(
    target: Target,
    layout: CacheLayout,
    users: Sequence[User],
    workdir: Path,
    rounds: int,
    rng: random.Random,
) -> None:
    """Interleaved IMAP logins on one spool: no post-login, nsprov without and with the cache."""
    subjects = [
        Subject(name="none"),
        Subject(name="nsprov-full", program=nsprov_line(target, layout.plain), nsprov=True),
        Subject(name="nsprov-cache", program=nsprov_line(target, layout.cached), nsprov=True),
    ]
    lives: dict[str, Live] = {}
    with contextlib.ExitStack() as stack:
        for subject in subjects:
            dovecot, _ = start_instance(stack, workdir / subject.name, subject, users, target)
            lives[subject.name] = Live(subject, dovecot)
        for live in lives.values():  # warm-up: creates nsprov's per-user index directories
            for user in users:
                live.login(user)
        started = time.monotonic()
        for r in range(rounds):
            user = users[r % len(users)]
            order = list(lives.values())
            rng.shuffle(order)
            for live in order:
                live.samples.append(live.login(user))
        say()
        say(
            f"  live IMAP logins on {layout.label}, {rounds} interleaved rounds in "
            f"{time.monotonic() - started:.0f} s (nsprov-full: no [scan_cache]; nsprov-cache: "
            "with it)"
        )
        report_latency(BIG, lives)
        for tail in (False, True):
            what = "p90" if tail else "median"
            cell = ratio_cell(
                added(lives, "nsprov-cache", tail=tail), added(lives, "nsprov-full", tail=tail)
            )
            say(f"    nsprov-cache added / nsprov-full added, {what}: {cell}")
        for name, live in lives.items():
            summary = error_summary(live.dovecot)
            say(f"    Dovecot errors, {name}: {'none' if not summary else '; '.join(summary)}")


def scan_cache_part(
    target: Target,
    users: Sequence[User],
    workdir: Path,
    written: list[Path],
    args: argparse.Namespace,
    rng: random.Random,
) -> None:
    """(f): updates, the step with and without the cache, live logins, a changed spool."""
    from nsprov._config import load_config  # noqa: PLC0415 - the snapshot, once on sys.path

    say()
    say(
        f"(f) large spools with the scan cache: {BIG:,} maildirs; [scan_cache] max_age = "
        f"{CACHE_MAX_AGE} s, dir in the work directory"
    )
    layouts = cache_layouts(workdir, written)
    cache_updates(target, layouts)
    env = dovecot_env(users[0])
    limit_ = load_config(str(layouts[0].plain)).max_namespaces
    cases: list[tuple[str, list[str]]] = []
    groups: list[tuple[CacheLayout, Sequence[str], int]] = []
    for layout in layouts:
        labels: tuple[str, ...] = (
            f"nsprov {layout.label}, no cache",
            f"nsprov {layout.label}, cache",
        )
        cases += [(labels[0], step_argv(target, layout.plain))]
        cases += [(labels[1], step_argv(target, layout.cached))]
        groups.append((layout, labels, min(layout.readable, limit_)))
    started = time.monotonic()
    results = step_runs(cases, env, args.cache_runs)
    report_cache_step(
        f"  the post-login step alone (no Dovecot), like (a): {args.cache_runs} runs each, "
        f"interleaved, in {time.monotonic() - started:.0f} s; ms",
        results,
        groups,
    )
    for layout in layouts:
        status = subprocess.run(
            [str(target.script), "cache", "status", f"--config={layout.cached}"],
            capture_output=True,
            text=True,
            check=False,
            env=TOOL_ENV,
            timeout=60,
        )
        line = (status.stdout + status.stderr).strip()
        verdict_ = "ok" if status.returncode == 0 else "FAIL: the cache was not fresh"
        say(f"  after the runs, nsprov cache status: {line} (exit {status.returncode}): {verdict_}")
    if args.cache_live_rounds > 0:
        cache_live(
            target, layouts[1], users, workdir / "dovecot" / "cache", args.cache_live_rounds, rng
        )
    else:
        say("  live IMAP logins: skipped (--cache-live-rounds 0)")
    with contextlib.ExitStack() as stack:
        for layout in layouts:
            stack.callback(shutil.rmtree, layout.spool / NEW_ENTRY, ignore_errors=True)
            make_maildir(layout.spool / NEW_ENTRY, messages=0, owner=0, group=0, mode=0o755)
        # Past the update's racy window: a spool changed within the last second is listed again.
        time.sleep(1.2)
        rebuilt: dict[str, Update] = {}
        for layout in layouts:
            layout.after.mkdir(mode=0o700)
            for path in layout.before.iterdir():
                shutil.copy2(path, layout.after / path.name)
            rebuilt[layout.label] = cache_update(target, layout.rebuilt)
        say()
        say(f"  {NEW_ENTRY} (0755) added to both spools; the cache files copied and updated again:")
        for label, u in rebuilt.items():
            say(f"    {label}: {ms(u.wall)} ms wall: {u.text}")
        cases = []
        groups = []
        for layout in layouts:
            labels = (
                f"nsprov {layout.label}+1, no cache",
                f"nsprov {layout.label}+1, cache updated after",
                f"nsprov {layout.label}+1, cache, spool changed",
            )
            cases += [(labels[0], step_argv(target, layout.plain))]
            cases += [(labels[1], step_argv(target, layout.rebuilt))]
            cases += [(labels[2], step_argv(target, layout.cached))]
            groups.append((layout, labels, min(layout.readable + 1, limit_)))
        started = time.monotonic()
        results = step_runs(cases, env, args.cache_runs)
        report_cache_step(
            f"  the step again with {NEW_ENTRY}: {args.cache_runs} runs each, interleaved, in "
            f"{time.monotonic() - started:.0f} s; ms (spool changed: the cache was updated before "
            f"{NEW_ENTRY} was added)",
            results,
            groups,
        )
