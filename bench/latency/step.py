"""(a) The post-login step on its own, without Dovecot."""

from __future__ import annotations

import contextlib
import statistics
from typing import TYPE_CHECKING

from .children import dovecot_env, step_runs
from .instances import ServeProcess
from .report import ms, p90, say
from .subjects import serve_command
from .target import Target, config_cached

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from tests.live.harness import User

    from .spools import Configs


def post_login_step(
    target: Target,
    configs: Mapping[int, Configs],
    py_attrs: Path,
    user: User,
    runs: int,
    *,
    workdir: Path | None,
    serve_extra: Sequence[str] = (),
) -> None:
    """(a): interleaved runs of each case; ``workdir`` (None: no serve) holds the servers."""
    cases: list[tuple[str, list[str]]] = [
        ("/bin/true alone", ["/bin/true"]),
        ("python -c pass (the script's interpreter)", [target.python, "-c", "pass"]),
        ("python-attrs pass-through", [str(py_attrs), "/bin/true"]),
    ]
    for size, conf in configs.items():
        for label, path in (("ns", conf.ns), ("all", conf.all)):
            for proto in ("imap", "pop3"):
                argv = [str(target.script), "post-login", f"--config={path}", f"--protocol={proto}"]
                cases.append((f"nsprov {label:<3} {size:>3} entries {proto}", [*argv, "/bin/true"]))
    with contextlib.ExitStack() as stack:
        servers: dict[str, ServeProcess] = {}
        witnesses: list[Path] = []
        if workdir is not None:
            smallest = min(configs)
            serving = [(f"fast {size:>3}", conf.fast) for size, conf in configs.items()]
            serving.append((f"all  {smallest:>3}", configs[smallest].all))
            for label, config in serving:
                directory = workdir / label.replace(" ", "")
                directory.mkdir(parents=True, exist_ok=True)
                command = serve_command(target, config, serve_extra)
                servers[label] = serve = ServeProcess(directory, command)
                stack.callback(serve.stop)
                argv = [
                    str(target.script),
                    "post-login",
                    f"--config={config}",
                    "--protocol=imap",
                    f"--serve={serve.socket}",
                    "/bin/true",
                ]
                what = "(served)" if label.startswith("fast") else "(declined)"
                cases.append((f"nsprov {label} entries imap {what}", argv))
                if label.startswith("fast"):
                    witnesses.append(config)
        before = {w: config_cached(w) for w in witnesses}
        results = step_runs(cases, dovecot_env(user), runs)
        after = {w: config_cached(w) for w in witnesses}
    say()
    say(
        f"(a) the post-login step alone (no Dovecot): {runs} runs each, interleaved, "
        "with a Dovecot-like environment; ms"
    )
    say(f"  {'step':<42} {'wall med':>9} {'p90':>7} {'cpu med':>8} {'cpu p90':>8}  notes")
    for label, (runs_, exported) in results.items():
        walls = [r.wall for r in runs_]
        cpus = [r.cpu for r in runs_]
        bad = [r for r in runs_ if r.status != 0 or r.stderr]
        note = f"exports {exported} namespaces" if exported is not None else ""
        if bad:
            note += f"; {len(bad)} with exit != 0 or stderr: {bad[0].stderr.strip()[:100]!r}"
        say(
            f"  {label:<42} {ms(statistics.median(walls)):>9} {ms(p90(walls)):>7} "
            f"{ms(statistics.median(cpus)):>8} {ms(p90(cpus)):>8}  {note}"
        )
    if not servers:
        say("  (no --serve cases: nsprov serve is not available)")
        return
    say("  CPU above counts this process's children only: not the server's share of a served login")
    for w in witnesses:
        say(
            f"  fallback witness for {w.parent.name} entries: the worker "
            + ("RAN (config cached)" if after[w] else "never ran (no config-cache entry)")
            + (" (already before (a))" if before[w] else "")
        )
    for label, serve in servers.items():
        stats = serve.stats()
        say(
            f"  server {label}: "
            + (", ".join(f"{k} {v}" for k, v in stats.items()) if stats else "no event=stop line")
        )
    wall = {
        label: statistics.median(r.wall for r in runs_) for label, (runs_, _) in results.items()
    }
    for size in configs:
        fast = wall.get(f"nsprov fast {size:>3} entries imap (served)")
        inproc = wall.get(f"nsprov ns  {size:>3} entries imap")
        if fast is not None and inproc is not None:
            say(
                f"  {size:>3} entries, imap: fast path {ms(fast)} ms, in-process {ms(inproc)} ms: "
                f"{fast / inproc:.2f}x; fast path minus /bin/true alone "
                f"{ms(fast - wall['/bin/true alone'])} ms"
            )
