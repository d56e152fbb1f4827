"""Live latency: interleaved IMAP logins across the subjects, and (d) throughput."""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import TYPE_CHECKING

from tests.live.harness import User, namespaces

from .imap import throughput
from .instances import Live, start_instance
from .report import ms, p90, say
from .settings import SOLO_TIMEOUT
from .tables import error_summary, report_fallbacks, report_latency, report_ratios, report_servers
from .target import Target, config_cached

if TYPE_CHECKING:
    import argparse
    import random
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

    from .subjects import Subject


def live_latency(
    *,
    size: int,
    subjects: Sequence[Subject],
    users: Sequence[User],
    workdir: Path,
    rounds: int,
    rng: random.Random,
    solo: frozenset[str],
    target: Target,
    control: Path | None = None,
    while_up: Callable[[dict[str, Live]], None] | None = None,
) -> dict[str, Live]:
    """Warm up, run the interleaved rounds (solo subjects once each, afterwards), report.

    ``while_up`` runs after the report, while the instances are still up.  ``control``: a
    config the in-process post-login caches, to show that the fallback witness works.
    """
    lives: dict[str, Live] = {}
    with contextlib.ExitStack() as stack:
        for subject in subjects:
            try:
                dovecot, serve = start_instance(
                    stack, workdir / subject.name, subject, users, target
                )
            except Exception as e:
                say(f"  note: {subject.name} skipped: {e}")
                continue
            lives[subject.name] = Live(subject, dovecot, serve)
        say(f"  {len(lives)} Dovecot instances up; warm-up (one login per subject and user)")
        for name, live in lives.items():
            if name in solo:
                continue
            for user in users:
                live.login(user)
        check_serve_subjects(lives, users[0], size, control)
        interleaved = [live for name, live in lives.items() if name not in solo]
        started = time.monotonic()
        for r in range(rounds):
            user = users[r % len(users)]
            order = list(interleaved)
            rng.shuffle(order)
            for live in order:
                live.samples.append(live.login(user))
        say(f"  {rounds} interleaved rounds in {time.monotonic() - started:.0f} s")
        for name in sorted(solo & set(lives)):
            say(f"  {name}: one login on its own (it would hold a CPU for minutes)")
            lives[name].samples.append(lives[name].login(users[0], timeout=SOLO_TIMEOUT))
        report_latency(size, lives)
        report_ratios(size, lives)
        say()
        say("  Dovecot errors per subject (distinct messages, numbers as N):")
        for name, live in lives.items():
            summary = error_summary(live.dovecot)
            say(f"    {name}: {'none' if not summary else summary[0]}")
            for line in summary[1:]:
                say(f"    {' ' * len(name)}  {line}")
        report_fallbacks(lives, "after the rounds")
        if while_up is not None:
            while_up(lives)
            report_fallbacks(lives, "after (d)")
    report_servers(lives)
    return lives


def check_serve_subjects(
    lives: Mapping[str, Live], user: User, size: int, control: Path | None
) -> None:
    """Once per spool: the NAMESPACE reply of one login per serve subject, and the witnesses."""
    for name, live in lives.items():
        if live.serve is None:
            continue
        live.logins += 1
        try:
            client = live.dovecot.imap(user)
        except Exception as e:
            say(f"  check: {name}: LOGIN failed: {str(e).splitlines()[0]}")
            continue
        try:
            shared = namespaces(client)["shared"]
        finally:
            with contextlib.suppress(Exception):
                client.logout()
        prefixes = ", ".join(prefix for prefix, _ in shared[:2]) + (", ..." if shared[2:] else "")
        verdict_ = "ok" if shared else "NO SHARED NAMESPACES"
        say(
            f"  check: {name}: NAMESPACE after LOGIN as {user.name} lists {len(shared)} shared "
            f"namespaces of {size:,} entries ({prefixes}): {verdict_}"
        )
    if control is not None and any(live.subject.witness for live in lives.values()):
        ran = config_cached(control)
        say(
            f"  check: fallback witness: the root worker cached the ns config: {ran} (control: "
            + ("the witness works)" if ran else "NO: a fallback would go unnoticed)")
        )
        report_fallbacks(lives, "after the warm-up and the check")


def report_throughput(
    lives: Mapping[str, Live], users: Sequence[User], args: argparse.Namespace
) -> None:
    say()
    say(
        f"(d) logins/s, {args.clients} concurrent IMAP clients (connect, LOGIN, LOGOUT), "
        f"~{args.seconds:.0f} s each, 10-entry spool"
    )
    say(f"  {'subject':<13} {'logins/s':>9} {'ok':>6} {'failed':>6} {'LOGIN med':>10} {'p90':>8}")
    for name in (
        "none",
        "python-attrs",
        "nsprov-ns",
        "nsprov-serve",
        "nsprov-fast",
        "nsprov-fast-s",
    ):
        if name not in lives:
            continue
        ok, failed, elapsed, times = throughput(
            lives[name].dovecot.imap_port, users, clients=args.clients, seconds=args.seconds
        )
        lives[name].logins += ok + failed
        med = ms(statistics.median(times)) if times else "-"
        tail = ms(p90(times)) if times else "-"
        say(f"  {name:<13} {ok / elapsed:>9.1f} {ok:>6} {failed:>6} {med:>10} {tail:>8}")
