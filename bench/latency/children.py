"""Child processes: wall and CPU time of one run, and interleaved runs of post-login steps."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from tests.live.harness import User

    from .target import Target


@attrs.frozen(kw_only=True)
class ChildRun:
    """One child process: exit status, wall time, CPU time and peak RSS."""

    status: int
    wall: float
    cpu: float
    maxrss_kib: int
    stderr: str


def run_child(argv: Sequence[str], *, env: Mapping[str, str]) -> ChildRun:
    """Run ``argv`` to completion; CPU from RUSAGE_CHILDREN, peak RSS from its own wait4."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = b""
    if proc.stderr is not None:
        stderr = proc.stderr.read()
        proc.stderr.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return ChildRun(
        status=proc.returncode,
        wall=wall,
        cpu=cpu,
        maxrss_kib=usage.ru_maxrss,
        stderr=stderr.decode(errors="replace"),
    )


def dovecot_env(user: User) -> dict[str, str]:
    """What script-login gives a post-login program for ``userdb passwd`` (no PATH)."""
    return {
        "USER": user.name,
        "UID": str(user.uid),
        "GID": str(user.gid),
        "HOME": str(user.home),
        "SYSTEM_GROUPS_USER": user.name,
        "USERDB_KEYS": "UID GID HOME SYSTEM_GROUPS_USER ",
        "IP": "127.0.0.1",
        "LOCAL_IP": "127.0.0.1",
        "AUTH_MECH": "PLAIN",
    }


def exported_namespaces(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """How many namespaces a post-login command line exports (NEXT replaced by env)."""
    proc = subprocess.run(
        [*argv[:-1], "/usr/bin/env"],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("NAMESPACE="):
            return len(line.split("=", 1)[1].split())
    return 0


def step_runs(
    cases: Sequence[tuple[str, list[str]]], env: Mapping[str, str], runs: int
) -> dict[str, tuple[list[ChildRun], int | None]]:
    """Warm up, count the namespaces each nsprov case exports, then ``runs`` interleaved rounds."""
    results: dict[str, list[ChildRun]] = {label: [] for label, _ in cases}
    for _ in range(2):  # warm-up: page cache, nsprov's config cache, servers' caches, index dirs
        for _, argv in cases:
            run_child(argv, env=env)
    exported = {
        label: exported_namespaces(argv, env) for label, argv in cases if label.startswith("nsprov")
    }
    for _ in range(runs):
        for label, argv in cases:
            results[label].append(run_child(argv, env=env))
    return {label: (r, exported.get(label)) for label, r in results.items()}


def step_argv(target: Target, config: Path) -> list[str]:
    return [str(target.script), "post-login", f"--config={config}", "--protocol=imap", "/bin/true"]
