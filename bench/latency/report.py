"""Printing the report, the small statistics, and the machine it ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def say(line: str = "") -> None:
    """Print one line of the report at once (the output is usually piped through tee)."""
    print(line, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def p90(values: Sequence[float]) -> float:
    """The 90th percentile (inclusive method; one value is its own p90)."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0.0005:
        return None
    return num / den


def ratio_cell(num: float | None, den: float | None) -> str:
    if num is None or den is None:
        return "n/a"
    if den <= 0.0005:
        return f"n/a (den. {ms(den)} ms)"
    return f"{num / den:.2f} ({ms(num)}/{ms(den)})"


def verdict(value: float | None, limit: float) -> str:
    if value is None:
        return ""
    return "met" if value <= limit else f"NOT met ({value:.2f} > {limit:g})"


def run_text(argv: Sequence[str]) -> str:
    """A command's first line of output, or why there is none."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except OSError as e:
        return f"({argv[0]}: {e.strerror})"
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0] if lines else f"({argv[0]} printed nothing)"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_description() -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return [
        f"CPU:      {cpu}",
        f"nproc:    {len(os.sched_getaffinity(0))}",
        f"memory:   {mem}",
        f"kernel:   {platform.system()} {platform.release()}",
        f"load:     {load_average()} (1, 5, 15 min, at start)",
        f"Python:   {sys.version.split()[0]} ({sys.executable})",
        f"Dovecot:  {run_text(['/usr/sbin/dovecot', '--version'])}",
        f"Perl:     {run_text(['/usr/bin/perl', '-e', 'print $^V'])}",
    ]
