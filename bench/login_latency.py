"""Login latency of ``nsprov post-login`` against its reference points, on a live Dovecot 2.3.

Run as root from the repository root (one command; ``--quick`` takes about a minute)::

    sudo .venv/bin/python bench/login_latency.py [--quick] [--rounds N] [--commit REV]
                                                 [--sizes 10,1000,100000] [--skip abcdef]
                                                 [--serve-arg=--cache-ttl=0 ...]
                                                 [--cache-runs N] [--cache-live-rounds N]
    sudo .venv/bin/python bench/login_latency.py --clean     # remove the kept 100,000-entry spools

What is measured is one commit of nsprov (``--commit``, default ``HEAD``): ``src/nsprov`` exported
with ``git archive`` into a throwaway venv of its own that borrows attrs and pathspec from the dev
venv (:func:`snapshot`).  The dev venv's editable install would make every login run whatever
``src/`` holds at that moment, and other engineers commit while the benchmark runs.

The script builds its own spools and throwaway UNIX users, starts one private Dovecot per subject on
loopback (``tests/live/harness.py``: :class:`Dovecot`, :class:`SystemAccounts`), interleaves IMAP
logins across the subjects (each round logs in once to every subject, in a shuffled order, so that
machine drift hits all alike) and prints medians, p90 and ratios, all computed within one run.
Everything it creates (users, groups, Dovecot instances, homes, config files, nsprov's config cache
entries for its config files, scan caches) is removed at the end, even on Ctrl-C; only the
100,000-entry spools are kept, under ``/var/tmp/nsprov-bench``, for the next run: ``spool-100000``
(every entry 0755; built when 100,000 is among ``--sizes`` or (f) runs) and
``spool-100000-private`` (for (f): every entry 0750 root:root but one).

Subjects (same users, same spool; every post-login program wired with ``script-login`` as in the
README, one ``imap-postlogin`` service):

``none``
    no post-login at all: the floor every other subject is compared with ("added" = its median
    minus this one's).
``sh``
    ``#!/bin/sh`` ``exec "$@"``: script-login, one more exec and a shell.
``perl-naive``
    what the Dovecot documentation suggests, written by a Perl-minded admin: readdir the spool,
    skip dot entries, ``-r`` (always true as root), export ``NAMESPACE/<entry>/{TYPE,SEPARATOR,
    PREFIX,LOCATION}`` (2.3 keys, per-user INDEX/CONTROL like nsprov's) and ``NAMESPACE``, append
    them to ``USERDB_KEYS``, exec the chain.  No permission evaluation, no name checks, no caps.
``python-attrs``
    the nsprov interpreter with ``-I`` importing attrs and ``os.execv``-ing the chain: the floor
    for any attrs-based Python step.
``nsprov-ns``
    ``nsprov post-login --config=... --protocol=imap`` with one ``[[spool]]`` and no actions.
``nsprov-all``
    every action: ``[deny]`` with a rule that never matches, an ``[[alert]]``, ``[acl_groups]``,
    ``[last_login]`` (file backend, in the home), one ``[[field]]`` and the namespaces.
``nsprov-serve``
    the resident userdb service, ``nsprov serve --config=<ns config> --socket=<path>``
    (:data:`SERVE_ARGV`, default options: cache TTL 5 s, socket mode 0600, which Dovecot 2.3's
    root auth-worker can use), wired as docs/serve.md ships it: ``userdb passwd`` with
    ``result_success = continue-ok``, then ``userdb dict`` with ``result_failure = continue``,
    ``result_internalfail = continue`` and a dict file with ``uri =
    redis:path=<socket>:timeout_msecs=2500`` and ``key = userdb/%u/%{userdb:home}``; no post-login
    process.  The wiring is compared with what ``nsprov serve --print-dovecot-config`` prints.
    Its replies are capped at 7,000 bytes of JSON (about 24 namespaces; Dovecot refuses userdb
    replies over 8 KiB), so on the 1,000-entry spool it delivers fewer namespaces than the others.
``nsprov-fast``
    ``nsprov post-login --config=<fast config> --protocol=imap --serve=<socket>`` through
    script-login, with an ``nsprov serve`` of its own on that config (same content as the ns
    config, own path): the post-login step takes the namespaces from the server with only the
    standard library loaded and never forks the worker.  A fallback to the worker is silent in
    every log, so it is witnessed another way: the root worker caches each config it parses
    under ``/run/nsprov``; an entry for the fast config means the worker ran (the ns config's
    entry, written by ``nsprov-ns``, is the positive control).
``nsprov-fast-s``
    the same fast path without ``site``: ``<python> -I -S <nsprov>/_fast.py --config=<fast-s
    config> --protocol=imap --serve=<socket>``, with a server and a witness config of its own.
    A pip console script cannot pass ``-S`` to Python; this form saves the ``site`` start-up.

Both serve subjects run only when ``nsprov serve --help`` succeeds, otherwise a note is printed.
After the warm-up, one extra login per serve subject (imaplib) lists the shared namespaces of its
NAMESPACE reply; when the instances stop, each server's ``event=stop`` counters (lookups, cache
hits, misses, failures, deadlines) are printed next to the number of logins sent.

Measurements:

live latency
    For each spool size (10, 1,000 and 100,000 maildirs ``box000001``..., root-owned, mode 0755;
    ``--quick``: 10 only; ``--sizes`` picks; 100 more for (a)), the IMAP ``LOGIN`` round trip:
    from sending the command, after the greeting was read, to the tagged reply (connect + greeting
    reported separately).  Each login also sends ``NAMESPACE`` (not timed) to count the shared
    namespaces that arrived, and notes whether an ``[ALERT]`` came.  One untimed warm-up login per
    subject and user comes first (it creates nsprov's per-user index directories).  Ratios compare
    added latencies, at the median (subject's median minus ``none``'s) and at p90 (subject's p90
    minus ``none``'s p90).  On the 100,000-entry spool ``perl-naive`` gets one login of its own
    after the rounds (client timeout 75 s): setting 400,000 variables one ``%ENV`` store at a time
    is quadratic and takes minutes, past Dovecot's 60 s post-login timeout, and it would steal a
    CPU from every other subject; ``--big-rounds`` can shorten that size.
(a) the post-login step alone
    ``nsprov post-login --config=... --protocol=imap|pop3 /bin/true`` with a Dovecot-like
    environment, run directly (no Dovecot), interleaved, wall time and CPU time (user + system, from
    ``getrusage(RUSAGE_CHILDREN)`` around each run: the step, its worker and ``/bin/true``).  One
    untimed run per case with ``/usr/bin/env`` as NEXT counts the namespaces exported.  A bare
    ``python -c pass`` with the console script's interpreter shows the start-up floor.  The fast
    path (``--serve``) runs against servers started for this part, warm (their cache filled by the
    warm-up runs); one more case has the server decline (``[[alert]]`` etc. configured), which
    shows the cost of the fallback.
(b) import time
    ``python -X importtime``: the post-login parent's imports (``nsprov._main``,
    ``nsprov._postlogin``) and, in the same process after them, the worker's (``nsprov._worker``,
    ``_login``, ``_config``, ``_engine``); each total is the sum of the cumulative column over the
    section's top-level lines; medians of several runs, plus the costliest modules (self time)
    and the worker's self time by package.  Then, without ``-X importtime``, the time the
    worker's imports spend creating attrs classes (from ``attr._make._ClassBuilder.__init__`` to
    the end of its ``build_class``) and in ``re.compile``.
(c) scan throughput
    nsprov's discovery (``nsprov._scan.discover``, and ``nsprov._engine.plan``, which adds the
    rendering) against a bare Python loop making the same system calls (listdir, lstat of the
    entry, ``cur`` and ``new``, ``getxattr(system.posix_acl_access)`` on each), over the 1,000- and
    100,000-entry trees, in this process, warm cache.  The config sets ``[namespace] max`` to
    100,000: on the login path nsprov stops once ``max`` entries are served, which would compare
    1,001 entries with 100,000 (the login path's own time is printed too).  Then the large-spool
    case: the kept 100,000-entry spool of (f) where the user may read one entry, against a bare
    loop making the calls nsprov makes there (lstat and ACL of each entry; ``cur`` and ``new``
    only of entries the user may read), and against the loop above.
(d) throughput
    logins per second with 32 concurrent IMAP clients (threads; connect, LOGIN, LOGOUT) for
    ``none``, ``python-attrs``, ``nsprov-ns`` (and ``nsprov-serve``, ``nsprov-fast``), about
    10 s each, 10 entries.
(e) peak RSS
    of ``nsprov show --user U --config ... --format=json``, next to a bare interpreter's, from
    ``/usr/bin/time -f %M``.  Not ``RUSAGE_CHILDREN`` (the maximum over every child so far), nor
    ``wait4`` on a child of this process: ``ru_maxrss`` survives exec, so such a child reports at
    least this benchmark's RSS at the fork (260 MiB after (c)).
(f) large spools with the scan cache
    ``[scan_cache]`` (``nsprov cache update``) on two kept spools of 100,000 maildirs, whatever
    ``--sizes`` says: (i) ``spool-100000``, every entry 0755 (the login serves the first
    ``namespace.max`` = 1,000), and (ii) ``spool-100000-private``, every entry 0750 root:root but
    ``box050000`` (0755: the test user reads it as "other").  The cache lives in the work
    directory, with ``max_age`` = 3,600 s (:data:`CACHE_MAX_AGE`) so that no case outlives it: a
    stale cache is silently not used.  First ``nsprov cache update`` itself, 3 times per spool
    (wall time of the command, and the time it reports): cold (the cache files deleted) and warm
    (nothing changed since the previous update, every entry reused), and the files' sizes.  Then
    the post-login step alone, measured like (a) (``--cache-runs`` interleaved runs, default 15,
    after two untimed warm-up rounds; one run with ``/usr/bin/env`` as NEXT counts the namespaces
    exported): each spool without ``[scan_cache]`` and with it; the counts must be equal (a loud
    ``FAIL`` otherwise) and equal to what the layout allows the user.  Then ``--cache-live-rounds``
    (default 5; 0: none) interleaved IMAP logins through three private Dovecots on spool (ii):
    no post-login, ``nsprov post-login`` without the cache and with it (one warm-up login per
    user first).  Last, a maildir ``box100001`` (0755) is added to both spools, and the cache
    files are copied to a second cache directory and updated there (timed: 100,000 entries
    reused, one new); the step is measured again, interleaved, without the cache, with the
    cache updated after the new entry, and with the cache updated before it (the spool
    directory changed since the update, so the login lists the spool's names and inode numbers
    and scans what the cache does not know).  ``box100001`` is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import attrs

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.live.harness import (  # noqa: E402 - needs the repository root on sys.path
    HOST,
    Dovecot,
    SystemAccounts,
    User,
    live_available,
    make_maildir,
    namespaces,
    parse_namespaces,
    quote,
    write_script,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from types import FrameType

    from nsprov._config import Config
    from nsprov._identity import MailUser

#: The dev venv's console script: the template for the snapshot's.
DEV_NSPROV = Path(sys.prefix) / "bin" / "nsprov"
TIME = Path("/usr/bin/time")
KEEP = Path("/var/tmp/nsprov-bench")  # the reusable 100,000-entry spools live here
SIZES = (10, 1_000, 100_000)
BIG = 100_000
USERS = 4
CLIENT_TIMEOUT = 90.0  # Dovecot gives a post-login script 60 s
SOLO_TIMEOUT = 75.0  # for perl-naive on the 100,000-entry spool, which never answers
#: ``nsprov serve`` as this benchmark starts it (``nsprov serve --help``); default options.
SERVE_ARGV = ("serve", "--config={config}", "--socket={socket}")
#: The dict file of the ``nsprov-serve`` subject, as docs/serve.md ships it.
DICT_CONF = """\
uri = redis:path={socket}:timeout_msecs=2500
iterate_disable = yes
key userdb {{
  key = userdb/%u/%{{userdb:home}}
  format = json
}}
userdb_objects = userdb
"""
#: The spool's ``namespace.max`` for the scan-throughput config: every entry is examined.
SCAN_MAX = 100_000
#: Appended to every instance's dovecot.conf: 32 clients share a few users from one address.
EXTRA_CONF = "mail_max_userip_connections = 1000\n"

SH_BODY = 'exec "$@"\n'

PERL_BODY = r"""use strict;
use warnings;

# Naive public namespaces, as the Dovecot documentation suggests (Dovecot 2.3 keys):
# every readable spool entry becomes a namespace named after the directory.
my $spool = '@SPOOL@';
my $home = $ENV{HOME} // '';
my (@names, @keys);
if (opendir(my $dh, $spool)) {
    foreach my $entry (sort readdir($dh)) {
        next if $entry =~ /^\./;
        next unless -r "$spool/$entry";
        my $var = "NAMESPACE/\U$entry\E";    # script-login reads upper-case variables only
        my $dir = "$home/.perlns/$entry";
        my %set = (
            TYPE      => 'public',
            SEPARATOR => '/',
            PREFIX    => "Shared/$entry/",
            LOCATION  => "maildir:$spool/$entry:INDEX=$dir:CONTROL=$dir",
        );
        foreach my $key (qw(TYPE SEPARATOR PREFIX LOCATION)) {
            $ENV{"$var/$key"} = $set{$key};
            push @keys, "$var/$key";
        }
        push @names, $entry;
    }
    closedir($dh);
}
if (@names) {
    $ENV{NAMESPACE} = join(' ', @names);
    $ENV{USERDB_KEYS} = ($ENV{USERDB_KEYS} // '') . join(' ', 'NAMESPACE', @keys) . ' ';
}
exec { $ARGV[0] } @ARGV or die "exec $ARGV[0]: $!\n";
"""

PY_ATTRS_BODY = """\
import os
import sys

import attrs  # noqa: F401 - the import is the point

os.execv(sys.argv[1], sys.argv[1:])
"""

NS_CONF = """\
# nsprov benchmark: namespaces only.
[[spool]]
path = "{spool}"
prefix = "Shared/{{name}}/"
separator = "/"
"""

ALL_CONF = """\
# nsprov benchmark: every post-login action.
[deny]
users = ["no-such-user-*"]
message = "Denied by the benchmark."

[[alert]]
text = "nsprov benchmark alert."

[acl_groups]

[last_login]
backend = "file"

[[field]]
name = "quota_rule"
value = "*:storage=1G"

[[spool]]
path = "{spool}"
prefix = "Shared/{{name}}/"
separator = "/"
"""


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


def run_text(argv: Sequence[str]) -> str:
    """A command's first line of output, or why there is none."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except OSError as e:
        return f"({argv[0]}: {e.strerror})"
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0] if lines else f"({argv[0]} printed nothing)"


# --------------------------------------------------------------------------------------------
# The machine


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


# --------------------------------------------------------------------------------------------
# Spools, scripts and configs


def ensure_spool(path: Path, size: int, *, mode: int = 0o755, readable: str = "") -> Path:
    """A spool of ``size`` root-owned maildirs ``box000001``...; reused when complete.

    Every maildir gets ``mode`` (default 0755: world-readable), but ``readable``, which gets 0755.
    The marker (``<path>.complete``) sits next to the spool, not in it: a dot entry would be one
    more entry to scan.  An interrupted build is resumed (``make_maildir`` reuses what exists).
    """
    marker = path.with_name(path.name + ".complete")
    if marker.exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    started = time.monotonic()
    for i in range(1, size + 1):
        name = f"box{i:06d}"
        entry_mode = 0o755 if name == readable else mode
        make_maildir(path / name, messages=0, owner=0, group=0, mode=entry_mode)
        if size >= BIG and i % 20_000 == 0:
            say(f"  ... {i:,} of {size:,} maildirs ({time.monotonic() - started:.0f} s)")
    marker.write_text(f"{size}\n")
    if size >= BIG:
        say(f"  built {path} in {time.monotonic() - started:.0f} s")
    return path


@attrs.frozen(kw_only=True)
class Target:
    """The nsprov under test: one commit's ``src/nsprov`` in a throwaway venv of its own.

    Other engineers commit to the work tree while the benchmark runs, and the dev venv's
    editable install would make every login run whatever ``src/`` holds at that moment.  The
    snapshot venv borrows attrs and pathspec from the dev venv's site-packages through a
    ``.pth`` file (a plain path entry, so the editable install's own ``.pth`` is not read).
    """

    commit: str
    src: Path  # the directory holding the snapshot's ``nsprov`` package
    script: Path  # its console script, like the dev venv's
    python: str  # the snapshot venv's interpreter, on the script's ``#!`` line


def snapshot(rev: str, directory: Path) -> Target:
    """Export ``src/nsprov`` at ``rev`` and give it a venv and a console script."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    directory.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "src/nsprov"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python3"
    deps = Path(attrs.__file__).resolve().parent.parent  # the dev venv's site-packages
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    pth = venv / "lib" / version / "site-packages" / "nsprov_bench.pth"
    pth.write_text(f"{directory / 'src'}\n{deps}\n")
    body = DEV_NSPROV.read_text().split("\n", 1)[1]
    script = write_script(venv / "bin" / "nsprov", body, str(python))
    subprocess.run(
        [str(python), "-I", "-m", "compileall", "-q", str(directory / "src")], check=True
    )
    where = subprocess.run(
        [str(python), "-I", "-c", "import nsprov, attrs, pathspec; print(nsprov.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    if not where.startswith(str(directory)):
        raise RuntimeError(f"the snapshot venv imports nsprov from {where}, not {directory}")
    return Target(commit=commit, src=directory / "src", script=script, python=str(python))


@attrs.frozen(kw_only=True)
class Configs:
    """The nsprov config files for one spool."""

    ns: Path
    all: Path
    #: Namespaces only, with ``namespace.max`` high enough that discovery examines every entry.
    scan: Path
    #: The ns config under another path, for ``--serve``: a config-cache entry for it means
    #: that the in-process worker ran, i.e. the fast path fell back.
    fast: Path
    #: The same again, for ``nsprov-fast-s``.
    fast_s: Path


def write_configs(directory: Path, spool: Path, written: list[Path]) -> Configs:
    directory.mkdir(parents=True, exist_ok=True)
    texts = {
        "ns": NS_CONF.format(spool=spool),
        "all": ALL_CONF.format(spool=spool),
        "scan": f"[namespace]\nmax = {SCAN_MAX}\n\n" + NS_CONF.format(spool=spool),
        "fast": NS_CONF.format(spool=spool),
        "fast_s": NS_CONF.format(spool=spool),
    }
    paths = {}
    for name, text in texts.items():
        path = paths[name] = directory / f"{name}.toml"
        path.write_text(text)
        path.chmod(0o644)
        written.append(path)
    return Configs(**paths)


# --------------------------------------------------------------------------------------------
# Subjects


@attrs.frozen(kw_only=True)
class Subject:
    """One way of logging in: a post-login program line, the serve wiring, or nothing."""

    name: str
    #: The script-login program line (``{socket}``: the subject's server); None: no post-login.
    program: str | None = None
    #: The command line of the subject's ``nsprov serve`` (``{socket}`` filled in later).
    serve_argv: tuple[str, ...] | None = None
    #: Wire the server as Dovecot's second userdb (dict, redis client).
    dict_userdb: bool = False
    #: Whether shared namespaces must arrive (checked, at least once per subject).
    nsprov: bool = False
    #: A config whose config-cache entry would show that the post-login worker ran.
    witness: Path | None = None


def nsprov_line(target: Target, config: Path) -> str:
    return f"{target.script} post-login --config={config} --protocol=imap"


def serve_command(target: Target, config: Path, extra: Sequence[str] = ()) -> tuple[str, ...]:
    args = (a.format(config=config, socket="{socket}") for a in SERVE_ARGV)
    return (str(target.script), *args, *extra)


def make_subjects(
    scripts: Path,
    spool: Path,
    configs: Configs,
    *,
    serve: bool,
    target: Target,
    serve_extra: Sequence[str] = (),
) -> list[Subject]:
    scripts.mkdir(parents=True, exist_ok=True)
    sh = write_script(scripts / "sh", SH_BODY)
    perl = write_script(
        scripts / "perl-naive", PERL_BODY.replace("@SPOOL@", str(spool)), "/usr/bin/perl"
    )
    py = write_script(scripts / "python-attrs", PY_ATTRS_BODY, f"{target.python} -I")
    subjects = [
        Subject(name="none"),
        Subject(name="sh", program=str(sh)),
        Subject(name="perl-naive", program=str(perl)),
        Subject(name="python-attrs", program=str(py)),
        Subject(name="nsprov-ns", program=nsprov_line(target, configs.ns), nsprov=True),
        Subject(name="nsprov-all", program=nsprov_line(target, configs.all), nsprov=True),
    ]
    if serve:
        subjects += [
            Subject(
                name="nsprov-serve",
                serve_argv=serve_command(target, configs.ns, serve_extra),
                dict_userdb=True,
                nsprov=True,
            ),
            Subject(
                name="nsprov-fast",
                program=nsprov_line(target, configs.fast) + " --serve={socket}",
                serve_argv=serve_command(target, configs.fast, serve_extra),
                nsprov=True,
                witness=configs.fast,
            ),
            Subject(
                name="nsprov-fast-s",
                program=(
                    f"{target.python} -I -S {target.src / 'nsprov' / '_fast.py'} "
                    f"--config={configs.fast_s} --protocol=imap --serve={{socket}}"
                ),
                serve_argv=serve_command(target, configs.fast_s, serve_extra),
                nsprov=True,
                witness=configs.fast_s,
            ),
        ]
    return subjects


class DictUserdbDovecot(Dovecot):
    """The harness's Dovecot with a second userdb, the dict userdb of ``nsprov serve``."""

    USERDB_BLOCK = "userdb {\n  driver = passwd\n}\n"

    def __init__(self, workdir: Path, users: Iterable[User], *, dict_conf: Path) -> None:
        super().__init__(workdir, users, extra_conf=EXTRA_CONF)
        self.dict_conf = dict_conf

    def config_text(self) -> str:
        text = super().config_text()
        if self.USERDB_BLOCK not in text:
            raise RuntimeError("the harness's userdb block changed; cannot add the dict userdb")
        return text.replace(self.USERDB_BLOCK, userdb_blocks(self.dict_conf))


def userdb_blocks(dict_conf: Path) -> str:
    """The two userdb blocks of docs/serve.md, the second one reading ``dict_conf``."""
    return (
        "userdb {\n  driver = passwd\n  result_success = continue-ok\n}\n"
        f"userdb {{\n  driver = dict\n  args = {dict_conf}\n"
        "  result_failure = continue\n  result_internalfail = continue\n}\n"
    )


def wiring_differences(target: Target, socket_path: Path, dict_conf: Path) -> list[str]:
    """The benchmark's wiring lines that ``nsprov serve --print-dovecot-config`` does not print."""
    printed = subprocess.run(
        [
            str(target.script),
            "serve",
            "--print-dovecot-config",
            f"--socket={socket_path}",
            f"--dict-file={dict_conf}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stdout
    theirs = {line.strip() for line in printed.splitlines()}
    ours = userdb_blocks(dict_conf) + DICT_CONF.format(socket=socket_path)
    return [line.strip() for line in ours.splitlines() if line.strip() not in theirs]


_STOP = re.compile(r"event=stop ((?:\w+=\d+ ?)+)")
_MISS = re.compile(r"event=lookup .*cache=miss .*ms=([\d.]+)")


class ServeProcess:
    """``nsprov serve`` as a child in its own session; stopped by its process group id."""

    def __init__(self, workdir: Path, argv: Sequence[str]) -> None:
        self.socket = workdir / "serve.sock"
        self.log_path = workdir / "serve.log"
        argv = [a.replace("{socket}", str(self.socket)) for a in argv]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while "event=start" not in self.log():  # logged once the socket accepts
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{' '.join(argv)} did not start: " + self.log().strip()[-300:])
            time.sleep(0.02)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stats(self) -> dict[str, int] | None:
        """The counters of the ``event=stop`` line (after :meth:`stop`), None when missing."""
        m = _STOP.search(self.log())
        if m is None:
            return None
        return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}

    def miss_times(self) -> list[float]:
        """Seconds the server spent on each cache miss (``event=lookup … cache=miss … ms=``)."""
        return [float(m) / 1000 for m in _MISS.findall(self.log())]

    def problems(self) -> list[str]:
        """The server's warning and error lines."""
        return [
            line
            for line in self.log().splitlines()
            if "level=warning" in line or "level=error" in line
        ]

    def stop(self) -> None:
        """SIGTERM to the server (it logs its counters and stops its directory helper)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def serve_status(target: Target) -> str | None:
    """None when ``nsprov serve --help`` works, else why not."""
    try:
        proc = subprocess.run(
            [str(target.script), "serve", "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nsprov serve --help failed: {e}"
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        return f"`nsprov serve --help` exits {proc.returncode}: {reason[0] if reason else '?'}"
    return None


def scan_cache_problem(target: Target) -> str | None:
    """None when ``nsprov cache --help`` works (the commit has the scan cache), else why not."""
    try:
        proc = subprocess.run(
            [str(target.script), "cache", "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nsprov cache --help failed: {e}"
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        return f"`nsprov cache --help` exits {proc.returncode}: {reason[0] if reason else '?'}"
    return None


def config_cached(config: Path) -> bool:
    """Whether the root post-login worker has cached ``config`` (so the worker ran for it)."""
    from nsprov._config import DEFAULT_CACHE_DIR, _cache_file  # noqa: PLC0415 - the snapshot

    return Path(_cache_file(DEFAULT_CACHE_DIR, str(config))).exists()


def start_instance(
    stack: contextlib.ExitStack,
    workdir: Path,
    subject: Subject,
    users: Sequence[User],
    target: Target,
) -> tuple[Dovecot, ServeProcess | None]:
    """Start (and register the stop of) the Dovecot, and the server, of one subject."""
    workdir.mkdir(parents=True, exist_ok=True)
    serve = None
    if subject.serve_argv is not None:
        serve = ServeProcess(workdir, subject.serve_argv)
        stack.callback(serve.stop)
    dovecot: Dovecot
    if subject.dict_userdb:
        if serve is None:
            raise RuntimeError(f"{subject.name}: a dict userdb needs a server")
        dict_conf = workdir / "nsprov-userdb.conf.ext"
        dict_conf.write_text(DICT_CONF.format(socket=serve.socket))
        dict_conf.chmod(0o644)
        for line in wiring_differences(target, serve.socket, dict_conf):
            say(f"  note: {subject.name}: not in `nsprov serve --print-dovecot-config`: {line!r}")
        dovecot = DictUserdbDovecot(workdir, users, dict_conf=dict_conf)
    else:
        program = subject.program
        if program is not None and serve is not None:
            program = program.replace("{socket}", str(serve.socket))
        postlogin = {"imap": program} if program else None
        dovecot = Dovecot(workdir, users, postlogin=postlogin, extra_conf=EXTRA_CONF)
    stack.enter_context(dovecot)
    return dovecot, serve


# --------------------------------------------------------------------------------------------
# One IMAP login over a raw socket


@attrs.frozen(kw_only=True)
class Sample:
    """One login: its timings and what came back."""

    ok: bool
    connect: float  # seconds: TCP connect and the greeting
    login: float  # seconds: LOGIN sent -> tagged reply (or the connection closed)
    shared: int = 0  # shared namespaces in the NAMESPACE reply
    alert: bool = False  # an untagged [ALERT] arrived with the LOGIN reply
    error: str = ""


def _until_tagged(reader: Iterable[bytes], tag: bytes) -> tuple[list[bytes], bytes | None]:
    """Lines up to and including the tagged reply; None when the connection closed first."""
    lines: list[bytes] = []
    for line in reader:
        if line.startswith(tag + b" "):
            return lines, line
        lines.append(line)
    return lines, None


def imap_login(
    port: int, user: User, *, namespace: bool = True, timeout: float = CLIENT_TIMEOUT
) -> Sample:
    """Connect, read the greeting, time LOGIN; then NAMESPACE (untimed) and LOGOUT."""
    started = time.perf_counter()
    connect = login = 0.0
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = sock.makefile("rb")
            greeting = reader.readline()
            sent = time.perf_counter()
            connect = sent - started
            if not greeting.startswith(b"* OK"):
                return Sample(ok=False, connect=connect, login=0.0, error="no greeting")
            sock.sendall(f"a LOGIN {quote(user.name)} {quote(user.password)}\r\n".encode())
            untagged, tagged = _until_tagged(reader, b"a")
            login = time.perf_counter() - sent
            alert = any(b"[ALERT]" in line for line in untagged)
            if tagged is None:
                return Sample(ok=False, connect=connect, login=login, error="connection closed")
            if not tagged.startswith(b"a OK"):
                text = tagged.decode(errors="replace").strip()
                return Sample(ok=False, connect=connect, login=login, error=text)
            shared = 0
            if namespace:
                sock.sendall(b"b NAMESPACE\r\n")
                lines, done = _until_tagged(reader, b"b")
                if done is None or not done.startswith(b"b OK"):
                    return Sample(ok=False, connect=connect, login=login, error="NAMESPACE failed")
                for line in lines:
                    if line.startswith(b"* NAMESPACE "):
                        parsed = parse_namespaces([line[len(b"* NAMESPACE ") :].rstrip(b"\r\n")])
                        shared = len(parsed["shared"])
            sock.sendall(b"c LOGOUT\r\n")
            for _ in reader:  # until the server closes: its imap process is done
                pass
            return Sample(ok=True, connect=connect, login=login, shared=shared, alert=alert)
    except (OSError, ValueError) as e:
        elapsed = time.perf_counter() - started - connect
        return Sample(ok=False, connect=connect, login=login or elapsed, error=str(e) or repr(e))


# --------------------------------------------------------------------------------------------
# Live latency


@attrs.define
class Live:
    """A running subject and its samples."""

    subject: Subject
    dovecot: Dovecot
    serve: ServeProcess | None = None
    samples: list[Sample] = attrs.Factory(list)
    #: Every login sent to this instance (warm-up, check, rounds, throughput).
    logins: int = 0

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    def median(self) -> float | None:
        ok = self.ok
        return statistics.median(s.login for s in ok) if ok else None

    def p90(self) -> float | None:
        ok = self.ok
        return p90([s.login for s in ok]) if ok else None

    def login(self, user: User, *, timeout: float = CLIENT_TIMEOUT) -> Sample:
        self.logins += 1
        return imap_login(self.dovecot.imap_port, user, timeout=timeout)


_USER = re.compile(r"nspb[0-9a-f]+-u\d+")
_NOISE = re.compile(r"\d{3,}|session=[^,]*|<[^>]*>")


def error_summary(dovecot: Dovecot, limit: int = 3) -> list[str]:
    """The distinct Error/Fatal/Panic lines of an instance's log, with their counts."""
    counts: dict[str, int] = {}
    for line in dovecot.errors():
        text = line[16:] if re.match(r"\w{3} [ \d]\d \d\d:\d\d:\d\d ", line) else line
        text = _NOISE.sub("N", _USER.sub("USER", text))
        text = text if len(text) <= 200 else text[:197] + "..."
        counts[text] = counts.get(text, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    return [f"{n} x {text}" for text, n in ordered[:limit]]


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


#: (numerator, denominator, limit or None, label of the limit): the issue's ratios.
RATIOS: tuple[tuple[str, str, float | None, str], ...] = (
    ("nsprov-ns", "python-attrs", 1.3, "target <= 1.3"),
    ("nsprov-fast", "perl-naive", 2.0, "stretch <= 2"),
    ("nsprov-fast-s", "perl-naive", 2.0, "stretch <= 2"),
    ("nsprov-fast", "python-attrs", None, ""),
    ("nsprov-fast", "nsprov-ns", None, ""),
    ("nsprov-serve", "perl-naive", None, ""),
    ("nsprov-ns", "perl-naive", None, ""),
)


def report_ratios(size: int, lives: Mapping[str, Live]) -> None:
    say()
    say(
        f"  ratios, {size:,}-entry spool (added latency in ms, this run; at the median and at p90;"
        " verdicts on the median; cells: ratio (numerator/denominator ms))"
    )
    say(f"    {'':<30} {'median':<24} {'p90':<24}")
    for num, den, limit, label in RATIOS:
        if num not in lives or den not in lives:
            continue
        cells = [
            ratio_cell(added(lives, num, tail=t), added(lives, den, tail=t)) for t in (False, True)
        ]
        target = ""
        if limit is not None and size == 10:
            value = ratio(added(lives, num), added(lives, den))
            target = f"{label} (10 entries): {verdict(value, limit)}"
        say(f"    {num + ' / ' + den:<30} {cells[0]:<24} {cells[1]:<24} {target}")
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


# --------------------------------------------------------------------------------------------
# (d) Throughput under concurrency


def throughput(
    port: int, users: Sequence[User], *, clients: int, seconds: float
) -> tuple[int, int, float, list[float]]:
    """(ok, failed, elapsed, LOGIN times) of ``clients`` threads logging in for ``seconds``."""
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    results: list[Sample] = []

    def client(i: int) -> None:
        user = users[i % len(users)]
        while time.monotonic() < stop:
            sample = imap_login(port, user, namespace=False, timeout=30)
            with lock:
                results.append(sample)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    ok = [s.login for s in results if s.ok]
    return len(ok), len(results) - len(ok), elapsed, ok


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


# --------------------------------------------------------------------------------------------
# (a) The post-login step on its own


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
        results = _step_runs(cases, dovecot_env(user), runs)
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


def _step_runs(
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


# --------------------------------------------------------------------------------------------
# (b) Import time

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


# --------------------------------------------------------------------------------------------
# (c) Scan throughput

_ACL = "system.posix_acl_access"


def _acl(path: bytes) -> None:
    try:
        os.getxattr(path, _ACL, follow_symlinks=False)
    except OSError as e:
        if e.errno != errno.ENODATA:
            raise


def bare_scan(root: bytes) -> int:
    """The system calls nsprov makes per entry, with nothing around them."""
    n = 0
    for name in sorted(os.listdir(root)):
        if name.startswith(b"."):
            continue
        path = root + b"/" + name
        os.lstat(path)
        _acl(path)
        for sub in (b"/cur", b"/new"):
            os.lstat(path + sub)
            _acl(path + sub)
        n += 1
    return n


def bare_entry_scan(root: bytes) -> int:
    """The system calls nsprov makes for an entry the user may not read: its lstat and ACL."""
    n = 0
    for name in sorted(os.listdir(root)):
        if name.startswith(b"."):
            continue
        path = root + b"/" + name
        os.lstat(path)
        _acl(path)
        n += 1
    return n


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def scan_throughput(trees: Mapping[int, Configs], user: User) -> None:
    """Full scans with the ``scan`` config (``namespace.max`` high), then the login path's."""
    from nsprov._config import load_config  # noqa: PLC0415 - the snapshot, once on sys.path
    from nsprov._engine import plan  # noqa: PLC0415
    from nsprov._identity import mail_user_from_nss  # noqa: PLC0415
    from nsprov._scan import discover  # noqa: PLC0415

    say()
    say("(c) scan throughput in this process, warm cache; entries/s, and nsprov time / bare time")
    say(f"    [namespace] max = {SCAN_MAX:,}, so that discovery examines every entry")
    say(
        f"  {'entries':>8} {'bare loop':>11} {'discover':>11} {'ratio':>6} {'plan':>11} {'ratio':>6}"
    )
    for size, conf in trees.items():
        config: Config = load_config(str(conf.scan))
        mail_user: MailUser = mail_user_from_nss(user.name, config.identity)
        environ = {"USER": user.name, "USERDB_KEYS": "UID GID HOME SYSTEM_GROUPS_USER "}
        root = os.fsencode(config.spools[0].path)
        found = discover(config, mail_user, keep_skipped=False)
        count = bare_scan(root)
        if len(found.served) != count:
            say(f"  note: nsprov served {len(found.served)} entries, the bare loop saw {count}")
        repeats = 5 if size < BIG else 3
        times: dict[str, list[float]] = {"bare": [], "discover": [], "plan": []}
        for _ in range(repeats):
            times["bare"].append(_timed(partial(bare_scan, root)))
            times["discover"].append(
                _timed(partial(discover, config, mail_user, keep_skipped=False))
            )
            times["plan"].append(
                _timed(partial(plan, config, mail_user, environ, keep_skipped=False))
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        say(
            f"  {size:>8,} {count / med['bare']:>11,.0f} {count / med['discover']:>11,.0f} "
            f"{med['discover'] / med['bare']:>6.2f} {count / med['plan']:>11,.0f} "
            f"{med['plan'] / med['bare']:>6.2f}"
        )
        say(
            f"  {'':>8} ({ms(med['bare'])} ms, {ms(med['discover'])} ms, {ms(med['plan'])} ms "
            f"per scan; median of {repeats}; target discover/bare <= 1.5: "
            f"{verdict(med['discover'] / med['bare'], 1.5)})"
        )
        default = load_config(str(conf.ns))
        login_path = statistics.median(
            _timed(partial(plan, default, mail_user, environ, keep_skipped=False))
            for _ in range(repeats)
        )
        say(
            f"  {'':>8} (the login path, default namespace.max = {default.max_namespaces:,}: "
            f"plan takes {ms(login_path)} ms)"
        )
    restricted_scan(user)


def restricted_scan(user: User) -> None:
    """The large-spool case: the kept 100,000-entry spool where the user may read one entry."""
    from nsprov._config import config_from_mapping  # noqa: PLC0415 - the snapshot's
    from nsprov._identity import mail_user_from_nss  # noqa: PLC0415
    from nsprov._scan import discover  # noqa: PLC0415

    KEEP.mkdir(mode=0o755, exist_ok=True)
    KEEP.chmod(0o755)
    spool = ensure_spool(PRIVATE, BIG, mode=0o750, readable=PRIVATE_READABLE)
    shutil.rmtree(spool / NEW_ENTRY, ignore_errors=True)  # left by an interrupted (f)
    config = config_from_mapping(
        {
            "namespace": {"max": SCAN_MAX},
            "spool": [{"path": str(spool), "prefix": "Shared/{name}/"}],
        }
    )
    mail_user = mail_user_from_nss(user.name, config.identity)
    root = os.fsencode(spool)
    served = len(discover(config, mail_user, keep_skipped=False).served)
    times: dict[str, list[float]] = {"entry": [], "full": [], "discover": []}
    for _ in range(3):
        times["entry"].append(_timed(partial(bare_entry_scan, root)))
        times["full"].append(_timed(partial(bare_scan, root)))
        times["discover"].append(_timed(partial(discover, config, mail_user, keep_skipped=False)))
    med = {k: statistics.median(v) for k, v in times.items()}
    say(
        f"  {PRIVATE.name}: {BIG:,} entries, {served} readable by {user.name}; median of 3: "
        f"discover {ms(med['discover'])} ms; bare loop with nsprov's system calls (lstat and ACL "
        f"of each entry; cur and new only where it may read) {ms(med['entry'])} ms, ratio "
        f"{med['discover'] / med['entry']:.2f} (target <= 1.5: "
        f"{verdict(med['discover'] / med['entry'], 1.5)}); the bare loop above (cur and new "
        f"of every entry too) {ms(med['full'])} ms, ratio {med['discover'] / med['full']:.2f}"
    )


# --------------------------------------------------------------------------------------------
# (e) Peak RSS


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


# --------------------------------------------------------------------------------------------
# (f) Large spools with the scan cache

#: (f): the second kept spool: every maildir 0750 root:root but :data:`PRIVATE_READABLE`.
PRIVATE = KEEP / f"spool-{BIG}-private"
#: (f): the one entry of :data:`PRIVATE` the test user can read (0755: as "other").
PRIVATE_READABLE = f"box{BIG // 2:06d}"
#: (f): the maildir added to both spools after the update (0755); removed at the end, and at the
#: start when an interrupted run left it behind.
NEW_ENTRY = f"box{BIG + 1:06d}"
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
TOOL_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


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


def _step_argv(target: Target, config: Path) -> list[str]:
    return [str(target.script), "post-login", f"--config={config}", "--protocol=imap", "/bin/true"]


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
        for text in sorted({_USER.sub("USER", r.stderr.strip()) for r in runs_ if r.stderr}):
            if text not in messages:
                messages.append(text)
            count = sum(_USER.sub("USER", r.stderr.strip()) == text for r in runs_)
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
        cases += [(labels[0], _step_argv(target, layout.plain))]
        cases += [(labels[1], _step_argv(target, layout.cached))]
        groups.append((layout, labels, min(layout.readable, limit_)))
    started = time.monotonic()
    results = _step_runs(cases, env, args.cache_runs)
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
            cases += [(labels[0], _step_argv(target, layout.plain))]
            cases += [(labels[1], _step_argv(target, layout.rebuilt))]
            cases += [(labels[2], _step_argv(target, layout.cached))]
            groups.append((layout, labels, min(layout.readable + 1, limit_)))
        started = time.monotonic()
        results = _step_runs(cases, env, args.cache_runs)
        report_cache_step(
            f"  the step again with {NEW_ENTRY}: {args.cache_runs} runs each, interleaved, in "
            f"{time.monotonic() - started:.0f} s; ms (spool changed: the cache was updated before "
            f"{NEW_ENTRY} was added)",
            results,
            groups,
        )


# --------------------------------------------------------------------------------------------
# Main


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
        "--sizes",
        type=_sizes,
        default=None,
        help="spool sizes for the live logins, comma-separated, of 10,1000,100000 "
        "(default: all; --quick: 10)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="measurements to leave out, letters of 'abcdef' ((d) runs with the 10-entry spool)",
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
    if unknown := set(args.skip) - set("abcdef"):
        parser.error(f"--skip takes letters of 'abcdef', not {''.join(sorted(unknown))!r}")
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
    if not sizes or not set(sizes) <= set(SIZES):
        raise argparse.ArgumentTypeError(f"sizes must be among {', '.join(map(str, SIZES))}")
    return sizes


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    """First SIGINT/SIGTERM: unwind and clean up; later ones are ignored during the clean-up."""
    del frame
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def remove_cache_entries(configs: Iterable[Path]) -> None:
    """Drop the entries nsprov's root post-login cached for this run's config files."""
    from nsprov._config import DEFAULT_CACHE_DIR, _cache_file  # noqa: PLC0415

    for config in configs:
        with contextlib.suppress(FileNotFoundError):
            Path(_cache_file(DEFAULT_CACHE_DIR, str(config))).unlink()


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

    sizes: tuple[int, ...] = args.sizes
    spools: dict[int, Path] = {}
    for size in sorted({*sizes, 100, 1_000}):
        base = KEEP if size >= BIG else workdir / "spools"
        if size >= BIG:
            KEEP.mkdir(mode=0o755, exist_ok=True)
            KEEP.chmod(0o755)
            say(f"100,000-entry spool: {KEEP / f'spool-{size}'} (kept; --clean removes it)")
        spools[size] = ensure_spool(base / f"spool-{size}", size)
    configs = {
        size: write_configs(workdir / "conf" / str(size), spool, written)
        for size, spool in spools.items()
    }

    for size in sizes:
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
            serve=serve_problem is None,
            target=target,
            serve_extra=args.serve_arg,
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


if __name__ == "__main__":
    raise SystemExit(main())
