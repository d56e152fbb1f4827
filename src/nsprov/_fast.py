"""``python -I -S /path/to/nsprov/_fast.py ARGS``: ``nsprov post-login --serve`` without ``site``.

The ``nsprov`` command starts Python with ``site`` (``python -I``), which costs about
1 ms per login (``.pth`` files and all); it cannot pass ``-S``.  This file
can be run by the interpreter directly, with ``-I -S``: it puts its own directory
(the ``nsprov`` package) at the *end* of ``sys.path`` (the standard library keeps
precedence), imports :mod:`nsprov._postlogin` from there as the top-level module
``_postlogin`` (the package's ``__init__`` is not needed, nor run), and asks
``nsprov serve``.
When the server gives no answer it execs ``python -I -m nsprov post-login`` with
the same options minus ``--serve``, which runs the full step (see
:func:`nsprov._postlogin.fallback_argv`).  Keep this file small: a script is
compiled on every run, unlike an imported module.
"""

import os
import sys

if __name__ == "__main__":  # pragma: no cover - run as a script; tests run it as one
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    from _postlogin import main  # type: ignore[import-not-found]

    raise SystemExit(main(sys.argv[1:], standalone=True))
