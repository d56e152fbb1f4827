"""(b) Import time of the post-login parent and of the worker."""

from __future__ import annotations

import re
import statistics
import subprocess
from typing import TYPE_CHECKING

from .report import ms, say

if TYPE_CHECKING:
    from .target import Target

_IMPORT_CODE = (
    "import sys; sys.stderr.write('@@parent\\n'); import nsprov._main, nsprov._postlogin; "
    "sys.stderr.write('@@worker\\n'); "
    "import nsprov._worker, nsprov._login, nsprov._config, nsprov._engine"
)


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_times(target: Target, runs: int = 7) -> None:
    totals: dict[str, list[int]] = {"parent": [], "worker": []}
    selfs: dict[str, dict[str, list[int]]] = {"parent": {}, "worker": {}}
    for i in range(runs + 1):
        proc = subprocess.run(
            [target.python, "-I", "-X", "importtime", "-c", _IMPORT_CODE],
            capture_output=True,
            text=True,
            check=True,
            env={},
            timeout=60,
        )
        section = None
        sums = {"parent": 0, "worker": 0}
        module_self: dict[str, dict[str, int]] = {"parent": {}, "worker": {}}
        for line in proc.stderr.splitlines():
            if line.startswith("@@"):
                section = line[2:]
                continue
            m = _IMPORT_LINE.match(line)
            if section is None or m is None:
                continue
            module_self[section][m.group(4)] = int(m.group(1))
            if m.group(3) == " ":  # a top-level import of this section
                sums[section] += int(m.group(2))
        if i == 0:
            continue  # the first run only warms the caches
        for key, total in sums.items():
            totals[key].append(total)
            for module, us in module_self[key].items():
                selfs[key].setdefault(module, []).append(us)
    say()
    say(f"(b) import time, python -I -X importtime, median of {runs} runs (first run discarded)")
    for key, what, count in (
        ("parent", "import nsprov._main, nsprov._postlogin", 6),
        ("worker", "then nsprov._worker, _login, _config, _engine", 14),
    ):
        median_us: float = statistics.median(totals[key])
        med_self = {k: statistics.median(v) for k, v in selfs[key].items()}
        top = sorted(((us, k) for k, us in med_self.items()), reverse=True)[:count]
        say(f"  {what:<48} {median_us / 1000:6.1f} ms")
        say("    costliest (self, ms): " + ", ".join(f"{k} {us / 1000:.1f}" for us, k in top))
        groups: dict[str, list[float]] = {}
        for module, self_us in med_self.items():
            top_level = module.split(".")[0]
            group = top_level if top_level in {"nsprov", "attr", "attrs", "pathspec"} else "other"
            groups.setdefault(group, []).append(self_us)
        say(
            "    self time by package (ms): "
            + ", ".join(
                f"{g} {sum(v) / 1000:.1f} ({len(v)} modules)"
                for g, v in sorted(groups.items(), key=lambda kv: -sum(kv[1]))
            )
        )
    class_building(target, runs)


#: Times attrs class creation and ``re.compile`` during the worker's imports (no importtime).
_CLASS_CODE = """\
import re, sys, time
import nsprov._main, nsprov._postlogin
started = time.perf_counter()
import attrs, attr._make as m
attrs_import = time.perf_counter() - started
B = m._ClassBuilder
t0 = {}
built = [0, 0.0]
compiled = [0, 0.0]
init, build, compile_ = B.__init__, B.build_class, re.compile
def timed_init(self, *a, **k):
    t0[id(self)] = time.perf_counter()
    init(self, *a, **k)
def timed_build(self):
    cls = build(self)
    built[1] += time.perf_counter() - t0.pop(id(self))
    built[0] += 1
    return cls
def timed_compile(*a, **k):
    started = time.perf_counter()
    try:
        return compile_(*a, **k)
    finally:
        compiled[0] += 1
        compiled[1] += time.perf_counter() - started
B.__init__, B.build_class, re.compile = timed_init, timed_build, timed_compile
started = time.perf_counter()
import nsprov._worker, nsprov._login, nsprov._config, nsprov._engine
total = time.perf_counter() - started
print(attrs_import, total, built[0], built[1], compiled[0], compiled[1])
"""


def class_building(target: Target, runs: int) -> None:
    """How much of the worker's import time is attrs class creation and regex compilation."""
    rows = []
    for i in range(runs + 1):
        proc = subprocess.run(
            [target.python, "-I", "-c", _CLASS_CODE],
            capture_output=True,
            text=True,
            check=True,
            env={},
            timeout=60,
        )
        if i:
            rows.append([float(x) for x in proc.stdout.split()])
    attrs_s, total, classes, build_s, regexes, regex_s = (
        statistics.median(c) for c in zip(*rows, strict=True)
    )
    say(
        f"  without -X importtime (median of {runs}): import attrs {ms(attrs_s)} ms; then the "
        f"worker's modules {ms(total)} ms, of which"
    )
    say(
        f"    attrs class creation {ms(build_s)} ms ({classes:.0f} classes, "
        f"{build_s / max(classes, 1) * 1e6:.0f} us each), re.compile {ms(regex_s)} ms "
        f"({regexes:.0f} calls)"
    )
