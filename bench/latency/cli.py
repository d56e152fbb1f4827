"""The command line: options, the order of the parts, clean-up on exit and on signals."""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from tests.live.harness import SystemAccounts, live_available, write_script

from .imports import import_times
from .live import live_latency, report_throughput
from .lua import lua_route
from .report import load_average, machine_description, say
from .rss import peak_rss, perl_env_scaling
from .scan import scan_throughput
from .scancache import scan_cache_part
from .settings import BIG, DEV_NSPROV, KEEP, SIZES, USERS
from .spools import build_spools
from .step import post_login_step
from .subjects import PERL_BODY, PY_ATTRS_BODY, SH_BODY, make_subjects
from .syscalls import login_paths
from .target import remove_cache_entries, scan_cache_problem, serve_status, snapshot

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import FrameType

    from tests.live.harness import User

    from .spools import Configs
    from .target import Target


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark IMAP login latency with nsprov and its reference points "
        "on private Dovecot instances (root only)."
    )
    parser.add_argument("--quick", action="store_true", help="the 10-entry spool only, short runs")
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds (default 60)")
    parser.add_argument(
        "--big-rounds",
        type=int,
        default=None,
        help="rounds on the 100,000-entry spool (default: --rounds)",
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients for (d)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration per subject for (d)")
    parser.add_argument("--step-runs", type=int, default=40, help="runs per case for (a)")
    parser.add_argument("--seed", type=int, default=None, help="shuffle seed (default: random)")
    parser.add_argument(
        "--commit", default="HEAD", help="the nsprov commit to measure (default HEAD)"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="COMMIT",
        help="also log in through nsprov post-login of COMMIT (subject nsprov-ns-base), "
        "interleaved, and print the ratio of the added latencies current/baseline",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="spool sizes for the live logins, comma-separated, of 10,100,1000,100000 "
        "(default: all; --quick: 10)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="measurements to leave out, letters of 'abcdefgh' ((d) runs with the 10-entry spool)",
    )
    parser.add_argument(
        "--cache-runs", type=int, default=15, help="runs per case of (f)'s step (default 15)"
    )
    parser.add_argument(
        "--cache-live-rounds",
        type=int,
        default=5,
        help="(f)'s interleaved IMAP logins on the one-readable spool (default 5; 0: none)",
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for every nsprov serve, e.g. --serve-arg=--cache-ttl=0 "
        "(repeatable; default: none, the shipped defaults)",
    )
    parser.add_argument(
        "--clean", action="store_true", help=f"remove {KEEP} (the kept spools) and exit"
    )
    args = parser.parse_args(argv)
    if unknown := set(args.skip) - set("abcdefgh"):
        parser.error(f"--skip takes letters of 'abcdefgh', not {''.join(sorted(unknown))!r}")
    if args.big_rounds is None:
        args.big_rounds = args.rounds
    if args.quick:
        args.rounds = min(args.rounds, 20)
        args.seconds = min(args.seconds, 3.0)
        args.step_runs = min(args.step_runs, 30)
        args.cache_runs = min(args.cache_runs, 7)
    if args.sizes is None:
        args.sizes = (10,) if args.quick else SIZES
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    return args


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(sorted({int(part.replace("_", "")) for part in text.split(",") if part}))
    if not sizes or not set(sizes) <= {*SIZES, 100}:
        raise argparse.ArgumentTypeError("sizes must be among 10, 100, 1000, 100000")
    return sizes


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    """First SIGINT/SIGTERM: unwind and clean up; later ones are ignored during the clean-up."""
    del frame
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    say("nsprov login latency benchmark")
    say("=" * 30)
    for line in machine_description():
        say(line)
    say(f"command:  {' '.join([sys.executable, *sys.argv])}")
    say(f"seed:     {args.seed}")
    rng = random.Random(args.seed)

    workdir = Path(tempfile.mkdtemp(prefix="nsprov-bench-", dir="/var/tmp"))
    workdir.chmod(0o755)
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    target = snapshot(args.commit, workdir / "nsprov")
    sys.path.insert(0, str(target.src))  # (c) imports this nsprov in-process
    import nsprov  # noqa: PLC0415

    if not str(nsprov.__file__).startswith(str(target.src)):
        raise RuntimeError(f"nsprov was imported from {nsprov.__file__} before the snapshot")
    say(
        f"nsprov:   commit {target.commit[:12]} ({args.commit}), exported with git archive into "
        "a venv of its own (uncommitted changes in the work tree are not measured)"
    )
    baseline = None
    if args.baseline is not None:
        baseline = snapshot(args.baseline, workdir / "baseline")
        say(
            f"baseline: commit {baseline.commit[:12]} ({args.baseline}), exported the same way "
            "into a venv of its own: subject nsprov-ns-base"
        )
    say()
    serve_problem = serve_status(target)
    if serve_problem is not None:
        say(f"note: nsprov-serve skipped: {serve_problem}")
    written: list[Path] = []
    stack.callback(remove_cache_entries, written)
    homes = workdir / "homes"
    homes.mkdir(mode=0o755)
    accounts = stack.enter_context(SystemAccounts(homes, prefix="nspb"))
    users = [accounts.user(f"u{i}") for i in range(1, USERS + 1)]
    say(f"work directory {workdir}; users {', '.join(u.name for u in users)}")

    spools, configs = build_spools(args.sizes, workdir, written)
    live_logins(
        args,
        target,
        users,
        workdir,
        spools,
        configs,
        serve=serve_problem is None,
        rng=rng,
        baseline=baseline,
    )

    if "g" not in args.skip:
        if serve_problem is None:
            lua_route(target, users, workdir / "lua", configs[10].ns, args, rng)
        else:
            say()
            say(f"(g) skipped: {serve_problem}")
    if "a" not in args.skip:
        step = workdir / "scripts" / "step"
        step.mkdir(parents=True)
        post_login_step(
            target,
            {10: configs[10], 100: configs[100]},
            write_script(step / "python-attrs", PY_ATTRS_BODY, f"{target.python} -I"),
            users[0],
            args.step_runs,
            workdir=workdir / "step-serve" if serve_problem is None else None,
            serve_extra=args.serve_arg,
        )
    if "h" not in args.skip:
        scripts = workdir / "scripts" / "paths"
        scripts.mkdir(parents=True)
        sized = {size: configs[size] for size in (10, 100, 1_000) if size in configs}
        login_paths(
            target,
            sized,
            {
                "sh": write_script(scripts / "sh", SH_BODY),
                "python-attrs": write_script(
                    scripts / "python-attrs", PY_ATTRS_BODY, f"{target.python} -I"
                ),
                **{
                    f"perl-{size}": write_script(
                        scripts / f"perl-{size}",
                        PERL_BODY.replace("@SPOOL@", str(spools[size])),
                        "/usr/bin/perl",
                    )
                    for size in sized
                },
            },
            users[0],
            args.step_runs,
            rng,
        )
    if "b" not in args.skip:
        import_times(target)
    trees = {size: configs[size] for size in (1_000, BIG) if size in configs}
    if "e" not in args.skip:
        peak_rss(target, trees, users[0])
    if "c" not in args.skip:
        scan_throughput(trees, users[0])
    if "f" not in args.skip:
        if (problem := scan_cache_problem(target)) is None:
            scan_cache_part(target, users, workdir, written, args, rng)
        else:
            say()
            say(f"(f) skipped: {problem}")
    say()
    say(f"load average at the end: {load_average()} (1, 5, 15 min)")
    say("done; removing users, groups, instances and the work directory")


def live_logins(
    args: argparse.Namespace,
    target: Target,
    users: Sequence[User],
    workdir: Path,
    spools: Mapping[int, Path],
    configs: Mapping[int, Configs],
    *,
    serve: bool,
    rng: random.Random,
    baseline: Target | None = None,
) -> None:
    """The live latency of every spool size of ``--sizes``, and (d) with the 10-entry spool."""
    for size in args.sizes:
        say()
        rounds = args.big_rounds if size >= BIG else args.rounds
        say(
            f"live logins, {size:,}-entry spool: {rounds} rounds"
            + (f" (--big-rounds; --rounds is {args.rounds})" if rounds != args.rounds else "")
        )
        subjects = make_subjects(
            workdir / "scripts" / str(size),
            spools[size],
            configs[size],
            serve=serve,
            target=target,
            serve_extra=args.serve_arg,
            baseline=baseline,
        )
        solo = frozenset({"perl-naive"}) if size >= BIG else frozenset()
        lives = live_latency(
            size=size,
            subjects=subjects,
            users=users,
            workdir=workdir / "dovecot" / str(size),
            rounds=rounds,
            rng=rng,
            solo=solo,
            target=target,
            control=configs[size].ns,
            while_up=(
                (lambda ls: report_throughput(ls, users, args))
                if size == 10 and "d" not in args.skip
                else None
            ),
        )
        if size >= BIG and "perl-naive" in lives:
            perl_env_scaling()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.clean:
        shutil.rmtree(KEEP, ignore_errors=True)
        print(f"removed {KEEP}")
        return 0
    if (why := live_available()) is not None:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    if not DEV_NSPROV.exists():
        print(f"cannot run: {DEV_NSPROV} is missing (run from the dev venv)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    stack = contextlib.ExitStack()
    try:
        run(args, stack)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr, flush=True)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.close()
    return 0
