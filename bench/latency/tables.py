"""The live-latency tables: LOGIN round trips, ratios, errors, fallbacks and server counters."""

from __future__ import annotations

import re
import statistics
from typing import TYPE_CHECKING

from .report import ms, p90, ratio, ratio_cell, say, verdict
from .target import config_cached

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tests.live.harness import Dovecot

    from .instances import Live


USER_NAME = re.compile(r"nspb[0-9a-f]+-u\d+")


_NOISE = re.compile(r"\d{3,}|session=[^,]*|<[^>]*>")


def error_summary(dovecot: Dovecot, limit: int = 3) -> list[str]:
    """The distinct Error/Fatal/Panic lines of an instance's log, with their counts."""
    counts: dict[str, int] = {}
    for line in dovecot.errors():
        text = line[16:] if re.match(r"\w{3} [ \d]\d \d\d:\d\d:\d\d ", line) else line
        text = _NOISE.sub("N", USER_NAME.sub("USER", text))
        text = text if len(text) <= 200 else text[:197] + "..."
        counts[text] = counts.get(text, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    return [f"{n} x {text}" for text, n in ordered[:limit]]


def report_fallbacks(lives: Mapping[str, Live], when: str) -> None:
    """Whether a fast-path subject's worker has run (its config was cached) so far."""
    for name, live in lives.items():
        if live.subject.witness is None:
            continue
        fell_back = config_cached(live.subject.witness)
        say(
            f"  check: {name}: {live.logins} logins {when}; the worker "
            + (
                "RAN (a fallback: its config was cached)"
                if fell_back
                else "never ran (no config-cache entry): no fallback"
            )
        )


def report_servers(lives: Mapping[str, Live]) -> None:
    """After the stop: each server's counters next to the logins sent to its instance."""
    for name, live in lives.items():
        if live.serve is None:
            continue
        stats = live.serve.stats()
        counters = (
            ", ".join(f"{k} {v}" for k, v in stats.items()) if stats else "no event=stop line"
        )
        problems = live.serve.problems()
        misses = live.serve.miss_times()
        say(f"  {name} server: {counters}; {live.logins} logins sent")
        if misses:
            say(
                f"    a miss (scan) took {ms(statistics.median(misses))} ms median, "
                f"{ms(max(misses))} ms max, in the server ({len(misses)} misses); "
                "hits are not logged"
            )
        say(
            f"    {len(problems)} warning/error lines"
            + (f", first: {problems[0][:160]}" if problems else "")
        )


def report_latency(size: int, lives: Mapping[str, Live]) -> None:
    base = lives["none"].median() if "none" in lives else None
    base90 = lives["none"].p90() if "none" in lives else None
    say()
    say(
        f"  LOGIN round trip, {size:,}-entry spool (ms; added = median - none's median, "
        "+p90 = p90 - none's p90)"
    )
    header = (
        f"  {'subject':<13} {'ok':>7} {'connect':>8} {'median':>8} {'p90':>8} {'added':>8}"
        f" {'+p90':>7}  shared namespaces / notes"
    )
    say(header)
    for name, live in lives.items():
        ok = live.ok
        n = f"{len(ok)}/{len(live.samples)}"
        notes = []
        if ok:
            logins = [s.login for s in ok]
            med = statistics.median(logins)
            tail = p90(logins)
            cells = (
                f"{ms(statistics.median(s.connect for s in ok)):>8} {ms(med):>8} "
                f"{ms(tail):>8} "
                + (f"{ms(med - base):>8}" if base is not None else f"{'-':>8}")
                + (f" {ms(tail - base90):>7}" if base90 is not None else f" {'-':>7}")
            )
            shared = sorted({s.shared for s in ok})
            notes.append(
                "shared " + "/".join(str(c) for c in shared)
                if len(shared) <= 3
                else f"shared {shared[0]}..{shared[-1]}"
            )
            if live.subject.nsprov and not any(s.shared for s in ok):
                notes.append("NO NAMESPACES ARRIVED")
            if alerts := sum(s.alert for s in ok):
                notes.append(f"ALERT in {alerts}")
        else:
            cells = f"{'-':>8} {'-':>8} {'-':>8} {'-':>8} {'-':>7}"
        failed = [s for s in live.samples if not s.ok]
        if failed:
            errors = sorted({s.error for s in failed})
            notes.append(
                f"{len(failed)} failed after {ms(statistics.median(s.login for s in failed))} ms"
                f" (median): {'; '.join(errors)[:120]}"
            )
        say(f"  {name:<13} {n:>7} {cells}  {', '.join(notes)}")


def added(lives: Mapping[str, Live], name: str, *, tail: bool = False) -> float | None:
    """The subject's median (``tail``: p90) LOGIN time minus that of ``none``."""
    if name not in lives or "none" not in lives:
        return None
    if tail:
        subject, base = lives[name].p90(), lives["none"].p90()
    else:
        subject, base = lives[name].median(), lives["none"].median()
    if subject is None or base is None:
        return None
    return subject - base


#: (numerator, denominator, limit or None, label of the limit, spool sizes the limit is for):
#: the issues' ratios.  Issue 13: the lean path (``nsprov-ns``, warm profile, no daemon) within
#: 2.5x the Perl example (stretch 2x) and 0.4x the attrs floor at 10 entries, within 3x the
#: Perl example at 100; ``nsprov-ns-deb`` is the same step on Debian's own interpreter.
RATIOS: tuple[tuple[str, str, float | None, str, tuple[int, ...]], ...] = (
    ("nsprov-ns", "perl-naive", 2.5, "issue 13 (a) <= 2.5", (10,)),
    ("nsprov-ns", "perl-naive", 2.0, "issue 13 (a) stretch <= 2", (10,)),
    ("nsprov-ns", "perl-naive", 3.0, "issue 13 (b) <= 3", (100,)),
    ("nsprov-ns", "python-attrs", 0.4, "issue 13 (a) <= 0.4", (10,)),
    ("nsprov-ns-deb", "perl-naive", 2.5, "issue 13 (a) <= 2.5", (10,)),
    ("nsprov-ns-deb", "perl-naive", 3.0, "issue 13 (b) <= 3", (100,)),
    ("nsprov-ns-deb", "python-attrs", 0.4, "issue 13 (a) <= 0.4", (10,)),
    ("nsprov-ns-s", "perl-naive", None, "", ()),
    ("nsprov-fast", "perl-naive", 2.0, "stretch <= 2", (10,)),
    ("nsprov-fast-s", "perl-naive", 2.0, "stretch <= 2", (10,)),
    ("nsprov-fast", "python-attrs", None, "", ()),
    ("nsprov-fast", "nsprov-ns", None, "", ()),
    ("nsprov-serve", "perl-naive", None, "", ()),
)


def report_ratios(size: int, lives: Mapping[str, Live]) -> None:
    say()
    say(
        f"  ratios, {size:,}-entry spool (added latency in ms, this run; at the median and at p90;"
        " verdicts on the median; cells: ratio (numerator/denominator ms))"
    )
    say(f"    {'':<30} {'median':<24} {'p90':<24}")
    pairs: dict[tuple[str, str], list[str]] = {}
    for num, den, limit, label, limit_sizes in RATIOS:
        verdicts = pairs.setdefault((num, den), [])
        if limit is not None and size in limit_sizes and num in lives and den in lives:
            value = ratio(added(lives, num), added(lives, den))
            verdicts.append(f"{label} ({size:,} entries): {verdict(value, limit)}")
    for (num, den), verdicts in pairs.items():
        if num not in lives or den not in lives:
            continue
        cells = [
            ratio_cell(added(lives, num, tail=t), added(lives, den, tail=t)) for t in (False, True)
        ]
        say(f"    {num + ' / ' + den:<30} {cells[0]:<24} {cells[1]:<24} {'; '.join(verdicts)}")
    if "nsprov-ns-base" in lives:
        report_baseline(lives)
    if "nsprov-serve" in lives:
        med, tail = added(lives, "nsprov-serve"), added(lives, "nsprov-serve", tail=True)
        say(
            f"    {'nsprov-serve added over none':<30} "
            f"{(ms(med) + ' ms') if med is not None else 'n/a':<24} "
            f"{(ms(tail) + ' ms') if tail is not None else 'n/a':<24} target <= 2 ms: "
            + (verdict(med * 1000, 2.0) if med is not None else "")
        )
    else:
        say(f"    {'nsprov-serve, nsprov-fast(-s)':<30} not run (see the note above)")


#: Issue 12: the login path costs no more than the previous commit's, in the same run.
BASELINE_LIMIT = 1.05


def report_baseline(lives: Mapping[str, Live]) -> None:
    """``nsprov-ns`` (the measured commit) over ``nsprov-ns-base`` (``--baseline``)."""
    values = [
        (added(lives, "nsprov-ns", tail=t), added(lives, "nsprov-ns-base", tail=t))
        for t in (False, True)
    ]
    cells = [ratio_cell(num, den) for num, den in values]
    verdicts = [verdict(ratio(num, den), BASELINE_LIMIT) for num, den in values]
    say(
        f"    {'current / baseline':<30} {cells[0]:<24} {cells[1]:<24} "
        f"target <= {BASELINE_LIMIT:g}: median {verdicts[0] or 'n/a'}, p90 {verdicts[1] or 'n/a'}"
    )
