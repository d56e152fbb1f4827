"""(h) The login paths on their own: system calls per login and wall time, cold and warm profile.

Each case runs the post-login step directly (no Dovecot) with a Dovecot-like environment and
``/bin/true`` as the next program.  System calls are counted with ``strace -f -c`` from the
exec of the step to the exit of the next program (``/bin/true``'s own 30 or so included), the
median of three counts.  Wall times are interleaved runs (each round runs every case once, in
a shuffled order).  The cold case removes the config's login profile before each of its runs,
from this process (not counted), so each of its logins takes the full path and writes the
profile again; the warm cases find it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .children import dovecot_env, run_child
from .report import ms, p90, say

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Mapping, Sequence

    from tests.live.harness import User

    from .spools import Configs
    from .target import Target

#: Debian's own interpreter (PGO/LTO), reported beside the venv's.
DEBIAN_PYTHON = "/usr/bin/python3"


def profile_file(config: Path) -> Path | None:
    """The login profile of *config* in the measured nsprov, None if that commit has none."""
    try:
        from nsprov._defaults import STATE_DIR  # noqa: PLC0415 - the snapshot's
        from nsprov._profile import file_name  # noqa: PLC0415 - the snapshot's
    except ImportError:
        return None
    return Path(STATE_DIR) / file_name(str(config))


def drop_profile(config: Path) -> None:
    if (path := profile_file(config)) is not None:
        path.unlink(missing_ok=True)


def clear_breaker() -> None:
    """Remove the scan breaker's marks (``<key>.cut``) that a login under strace may leave."""
    try:
        from nsprov._breaker import SPOOL_STATE_DIR  # noqa: PLC0415 - the snapshot's
    except ImportError:
        return
    for mark in Path(SPOOL_STATE_DIR).glob("*.cut"):
        mark.unlink(missing_ok=True)


def count_syscalls(argv: Sequence[str], env: Mapping[str, str]) -> tuple[int, int, bool] | None:
    """System calls of one run of *argv* under ``strace -f``: ``(to the exec of the next, total,
    finished)``.

    The first number counts every call of the step and its children from the step's own exec
    up to and including the exec of the next program (``argv[-1]``, the issue's measure); the
    second goes on to the next program's exit (what ``strace -f -c`` totals).  *finished* is
    False when an nsprov step did not log its ``path=`` line: under ``strace`` a large spool
    can outlast the deadline, and the fail-open exec then skips the rest of the work (the
    count is not the login's).  None without strace.
    """
    if shutil.which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile(prefix="nsprov-strace-", mode="r") as out:
        proc = subprocess.run(
            ["strace", "-f", "-o", out.name, *argv],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
            timeout=120,
        )
        calls = [
            line.split(None, 1)[1]
            for line in out.read().splitlines()
            if len(line.split(None, 1)) == 2
            and not line.split(None, 1)[1].startswith(("<...", "---", "+++"))
        ]
    nxt = f'execve("{argv[-1]}",'
    to_exec = next((i + 1 for i, c in enumerate(calls) if c.startswith(nxt)), len(calls))
    nsprov = any("nsprov" in a or "_fast.py" in a for a in argv[:3])
    finished = not nsprov or b" path=" in proc.stderr or b"nsprov" not in proc.stderr
    return to_exec, len(calls), finished


def login_paths(
    target: Target,
    configs: Mapping[int, Configs],
    scripts: Mapping[str, Path],
    user: User,
    runs: int,
    rng: random.Random,
) -> None:
    """(h): system calls and wall time per login path, at each spool size of *configs*."""
    fast = target.src / "nsprov" / "_fast.py"
    cases: list[tuple[str, list[str], Callable[[], None] | None]] = [
        ("/bin/true alone", ["/bin/true"], None),
        ("sh exec", [str(scripts["sh"]), "/bin/true"], None),
        ("python-attrs floor", [str(scripts["python-attrs"]), "/bin/true"], None),
    ]
    for size, conf in configs.items():
        ns = str(conf.ns)
        step = [str(target.script), "post-login", f"--config={ns}"]
        cases += [
            (f"perl example {size:>4}", [str(scripts[f"perl-{size}"]), "/bin/true"], None),
            (
                f"lean warm {size:>4}",
                [*step, "--protocol=imap", "/bin/true"],
                None,
            ),
            (
                f"cold (full+store) {size:>4}",
                [*step, "--protocol=imap", "/bin/true"],
                lambda c=conf.ns: drop_profile(c),
            ),
            (
                f"full (all actions) {size:>4}",
                [
                    str(target.script),
                    "post-login",
                    f"--config={conf.all}",
                    "--protocol=imap",
                    "/bin/true",
                ],
                None,
            ),
            (
                f"lean warm -S {size:>4}",
                [
                    target.python,
                    "-I",
                    "-S",
                    str(fast),
                    f"--config={ns}",
                    "--protocol=imap",
                    "/bin/true",
                ],
                None,
            ),
        ]
        if os.path.exists(DEBIAN_PYTHON):
            cases.append(
                (
                    f"lean warm -S debian {size:>4}",
                    [
                        DEBIAN_PYTHON,
                        "-I",
                        "-S",
                        str(fast),
                        f"--config={ns}",
                        "--protocol=imap",
                        "/bin/true",
                    ],
                    None,
                )
            )
    smallest = min(configs)
    cases.append(
        (
            f"pop3, nothing configured {smallest:>4}",
            [
                str(target.script),
                "post-login",
                f"--config={configs[smallest].nothing_pop3}",
                "--protocol=pop3",
                "/bin/true",
            ],
            None,
        )
    )
    env = dovecot_env(user)
    for _, argv, before in cases:  # warm-up: page cache, index dirs, the profiles
        if before is not None:
            before()
        run_child(argv, env=env)
    walls: dict[str, list[float]] = {label: [] for label, _, _ in cases}
    bad: dict[str, str] = {}
    order = list(range(len(cases)))
    for _ in range(runs):
        rng.shuffle(order)
        for i in order:
            label, argv, before = cases[i]
            if before is not None:
                before()
            r = run_child(argv, env=env)
            walls[label].append(r.wall)
            if r.status != 0 or r.stderr:
                bad[label] = r.stderr.strip()[:100]
    # After the timed runs: a large spool can outlast the deadline under strace, and the
    # breaker it trips would make the timed logins skip that spool.
    counts: dict[str, tuple[int, int, bool] | None] = {}
    for label, argv, before in cases:
        got = []
        for _ in range(3):
            if before is not None:
                before()
            got.append(count_syscalls(argv, env))
            clear_breaker()
        counts[label] = (
            None
            if None in got
            else (
                int(statistics.median(g[0] for g in got if g)),
                int(statistics.median(g[1] for g in got if g)),
                all(g[2] for g in got if g),
            )
        )
    say()
    say(
        f"(h) login paths alone (no Dovecot): {runs} interleaved runs each, wall ms; "
        "system calls per login (strace -f: 'to exec' from the step's exec to the exec of "
        "/bin/true, the issue's measure; 'total' on to /bin/true's exit)"
    )
    base = statistics.median(walls["/bin/true alone"])
    cut = False
    say(
        f"  {'case':<34} {'wall med':>9} {'p90':>7} {'added':>7} {'to exec':>8} {'total':>6}  notes"
    )
    for label, _, _ in cases:
        w = walls[label]
        note = f"stderr/exit: {bad[label]!r}" if label in bad else ""
        calls = counts[label]
        to_exec: object = "-"
        total: object = "-"
        if calls is not None:
            to_exec, total = calls[0], calls[1]
            if not calls[2]:
                to_exec, total = f"{to_exec}*", f"{total}*"
                cut = True
        say(
            f"  {label:<34} {ms(statistics.median(w)):>9} {ms(p90(w)):>7} "
            f"{ms(statistics.median(w) - base):>7} {to_exec:>8} {total:>6}  {note}"
        )
    if cut:
        say(
            "  *: at least one of the three strace runs did not finish its work (no path= line: "
            "the deadline, under strace, cut it and the step execed fail-open): not a login's count"
        )
    for size in configs:
        perl = statistics.median(walls[f"perl example {size:>4}"]) - base
        floor = statistics.median(walls["python-attrs floor"]) - base
        for label in (f"lean warm {size:>4}", f"lean warm -S {size:>4}"):
            added = statistics.median(walls[label]) - base
            say(
                f"  {label.strip()}: {added / perl:.2f}x the Perl example, "
                f"{added / floor:.2f}x the attrs floor (added wall time, medians)"
            )
