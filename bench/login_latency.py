"""Login latency of ``nsprov post-login`` against its reference points, on a live Dovecot 2.3 (and 2.4).

Run as root from the repository root (one command; ``--quick`` takes about a minute)::

    sudo .venv/bin/python bench/login_latency.py [--quick] [--rounds N] [--commit REV]
                                                 [--baseline COMMIT]
                                                 [--sizes 10,1000,100000] [--skip abcdefgh]
                                                 [--serve-arg=--cache-ttl=0 ...]
                                                 [--cache-runs N] [--cache-live-rounds N]
    sudo .venv/bin/python bench/login_latency.py --clean     # remove the kept 100,000-entry spools

What is measured is one commit of nsprov (``--commit``, default ``HEAD``): ``src/nsprov`` exported
with ``git archive`` into a throwaway venv of its own that borrows attrs and pathspec from the dev
venv (``latency/target.py``).  The dev venv's editable install would make every login run whatever
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
``nsprov-ns-s``
    the same step as ``python -I -S <nsprov>/_fast.py --config=<ns config> --protocol=imap``
    (no ``site``; no server: the lean path in-process).  With a login profile, ``nsprov-ns``
    and ``nsprov-ns-s`` are the lean path with a warm profile (the warm-up login wrote it).
``nsprov-ns-deb``
    ``nsprov-ns-s``'s command line with Debian's own ``/usr/bin/python3`` (PGO/LTO) instead of
    the venv's interpreter: the same files, the same profile (left out when the venv's
    interpreter is Debian's).
``nsprov-cold``
    ``sh`` running ``/bin/rm -f <profile>`` then ``exec``-ing ``nsprov-ns``'s step on a config
    of its own: every login finds no profile, takes the full path and stores one (the cold
    case; subtract ``sh``'s added time for the step alone).
``nsprov-all``
    every action: ``[deny]`` with a rule that never matches, an ``[[alert]]``, ``[acl_groups]``,
    ``[last_login]`` (file backend, in the home), one ``[[field]]`` and the namespaces.
``nsprov-ns-base``
    with ``--baseline COMMIT`` only: ``nsprov-ns`` run by another commit's nsprov, exported
    like the measured one (``git archive`` into a venv of its own under the work directory in
    ``/var/tmp``), on a copy of the ns config (its own config-cache entry).  The ratios print
    current/baseline of the added latency at the median and at p90, against issue 12's
    ``<= 1.05``: both commits measured in the same interleaved run.
``nsprov-serve``
    the resident userdb service, ``nsprov serve --config=<ns config> --socket=<path>``
    (``SERVE_ARGV`` in ``latency/subjects.py``, default options: cache TTL 5 s, socket mode 0600, which Dovecot 2.3's
    root auth-worker can use), wired as docs/serve.md ships it: ``userdb passwd`` with
    ``result_success = continue-ok``, then ``userdb dict`` with ``result_failure = continue``,
    ``result_internalfail = continue`` and a dict file with ``uri =
    redis:path=<socket>:timeout_msecs=1800`` and ``key = userdb/%u/%{userdb:home}``; no post-login
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
    directory, with ``max_age`` = 3,600 s (``CACHE_MAX_AGE`` in ``latency/scancache.py``) so that no case outlives it: a
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
(g) the Lua userdb route
    live, on Dovecot 2.3 (the host) and 2.4 (the Debian 13 chroot named by ``$NSPROV_CHROOT24``,
    used as it is; without it 2.4 is skipped with a note), 10-entry spool, one interleaved run
    over six private Dovecots: per version ``none`` (no extra userdb), ``post-login`` (``nsprov
    post-login --config=<ns config> --protocol=imap``) and ``lua``: no post-login, ``userdb
    passwd`` with ``result_success = continue-ok``, then the shipped
    ``nsprov/lua/nsprov-userdb.lua`` as a Lua userdb (2.3: ``blocking=yes cache_key=``, the
    socket set in the copy's DEFAULTS; 2.4: ``use_worker = yes`` and ``lua_settings``), asking
    a running ``nsprov serve`` whose cache is warm (one warm-up login per user, and a TTL of
    3,600 s, so that every lookup of the rounds is a hit; the server's counters show it).
    ``max(--rounds, 30)`` rounds, each logging in once to all six in a shuffled order.  Printed:
    median, p90 and added ms over the same version's ``none``; per version ``lua - none`` at
    the median and p90 against issue 14's ``<= 3 ms`` median, and its ratio to
    ``post-login``'s added latency.  Then the cold first lookup, separately: each ``lua``
    server is restarted 3 times (an empty cache) and every user logs in once after each
    restart.  On 2.4 the snapshot's ``src/nsprov`` is copied into a scratch directory of the
    chroot with a venv of the chroot's Python (attrs and pathspec copied from its test venv),
    and users, spool and configs of its own are created there and removed at the end.
(h) the login paths alone
    no Dovecot, 10-, 100- and 1,000-entry spools: ``sh exec``, the Perl example (``perl-naive``
    above), the attrs floor (``python-attrs``), nsprov's lean path with a warm login profile
    (the console script, and ``python -I -S <nsprov>/_fast.py`` with the venv's interpreter and
    with Debian's ``/usr/bin/python3``), the cold profile (removed before each run by this
    process: the full path, which compiles and stores it again), the full path (every action
    configured: no profile), and a pop3 login whose protocol has nothing configured (the step
    execs before forking).  Per case: median and p90 wall time of ``--step-runs`` interleaved
    runs, added over ``/bin/true`` alone, and system calls per login (``strace -f -c`` from the
    step's exec to ``/bin/true``'s exit, median of three); ratios of the lean path to the Perl
    example and to the attrs floor.

The code lives in the package ``bench/latency/``, a module per concern: ``cli`` (options, the
order of the parts, clean-up), ``settings``, ``report`` (printing, statistics, the machine),
``target`` (the snapshot), ``spools`` and ``subjects`` (the scenarios), ``instances`` (Dovecot,
its wiring, the servers), ``imap`` (the client), ``live`` and ``tables`` (live latency, (d)),
``children`` (timed child processes), and one module per measurement: ``step`` (a),
``imports`` (b), ``scan`` (c), ``rss`` (e), ``scancache`` (f), ``lua`` (g), ``syscalls`` (h).
"""

from __future__ import annotations

from latency.cli import main  # bench/, the script's directory, is on sys.path

if __name__ == "__main__":
    raise SystemExit(main())
