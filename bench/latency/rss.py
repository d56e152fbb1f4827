"""(e) Peak RSS, and why perl-naive never finishes on 100,000 entries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .children import run_child
from .report import say
from .settings import TIME

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tests.live.harness import User

    from .spools import Configs
    from .target import Target


def peak_rss(target: Target, trees: Mapping[int, Configs], user: User) -> None:
    """Peak RSS through ``/usr/bin/time -f %M``: its own tiny fork is all the child inherits.

    ``ru_maxrss`` survives exec on Linux (the kernel folds the old address space's high-water
    mark in), so a child forked straight from this benchmark would report at least the
    benchmark's own RSS at the fork.
    """
    say()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    cases = [
        ("python -I -c pass", [target.python, "-I", "-c", "pass"]),
        ("python -I -c 'import attrs'", [target.python, "-I", "-c", "import attrs"]),
    ]
    for size, conf in trees.items():
        show = [str(target.script), "show", "--user", user.name, f"--config={conf.ns}"]
        cases.append((f"nsprov show, {size:,} entries", [*show, "--format=json"]))
    if TIME.exists():
        say(f"(e) peak RSS (GNU time %M: the child's ru_maxrss), {TIME}")
    else:
        say(f"(e) peak RSS (ru_maxrss from wait4; {TIME} is missing, so each value includes")
        say("    this benchmark's own RSS at the fork)")
    for label, argv in cases:
        if TIME.exists():
            run = run_child([str(TIME), "-f", "@@maxrss %M", *argv], env=env)
            lines = run.stderr.strip().splitlines()
            kib = int(lines[-1].split()[-1]) if lines and lines[-1].startswith("@@") else 0
            errors = "\n".join(lines[:-1]).strip()
        else:
            run = run_child(argv, env=env)
            kib, errors = run.maxrss_kib, run.stderr.strip()
        note = f", exit {run.status}: {errors[:100]}" if run.status else ""
        say(
            f"  {label:<30} {kib / 1024:6.1f} MiB peak, {run.wall:.2f} s wall, "
            f"{run.cpu:.2f} s CPU{note}"
        )


def perl_env_scaling() -> None:
    """Why perl-naive never finishes on 100,000 entries: each %ENV store scans the environment."""
    say("  perl %ENV stores (the naive script sets 4 per entry), outside Dovecot:")
    for n in (10_000, 40_000):
        run = run_child(
            [
                "/usr/bin/perl",
                "-e",
                'my $n = shift; $ENV{"K$_/TYPE"} = "public" for 1 .. $n;',
                str(n),
            ],
            env={},
        )
        say(f"    {n:>7,} variables: {run.wall:.2f} s")
