"""Paths, sizes and timeouts shared by every part of the benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

#: The dev venv's console script: the template for the snapshot's.
DEV_NSPROV = Path(sys.prefix) / "bin" / "nsprov"


TIME = Path("/usr/bin/time")


KEEP = Path("/var/tmp/nsprov-bench")  # the reusable 100,000-entry spools live here


SIZES = (10, 1_000, 100_000)


BIG = 100_000


USERS = 4


CLIENT_TIMEOUT = 90.0  # Dovecot gives a post-login script 60 s


SOLO_TIMEOUT = 75.0  # for perl-naive on the 100,000-entry spool, which never answers


TOOL_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
