"""``python -I -S /path/to/nsprov/_fast.py ARGS``: ``nsprov post-login`` without ``site``.

The ``nsprov`` command starts Python with ``site`` (``python -I``), which costs about
1 ms per login (``.pth`` files and all); it cannot pass ``-S``.  This file can be run
by the interpreter directly, with ``-I -S``: it puts the directory that holds the
``nsprov`` package at the *end* of ``sys.path`` (the standard library keeps
precedence) and runs ``nsprov post-login`` there, in this process: the ``--serve``
answer when the server gives one, else the lean path on a warm login profile, else the
full worker, which adds the site directories itself in the forked child (see
:func:`nsprov._worker.run`).  Nothing is re-exec'd.  Keep this file small: a script
is compiled on every run, unlike an imported module.

The path of this file names the Python version in a virtual environment
(``.../lib/python3.11/site-packages/...``); use the venv's ``bin/nsprov`` there, and the
Debian package's ``/usr/lib/nsprov/fast.py``, which stays put across Python upgrades.
"""

import os
import sys

if __name__ == "__main__":  # pragma: no cover - run as a script; tests run it as one
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from nsprov._main import post_login

    post_login(sys.argv[1:])
