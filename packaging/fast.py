"""The Debian package's fast path: ``/usr/bin/python3 -I -S /usr/lib/nsprov/fast.py ARGS``.

``nsprov post-login --serve`` without ``site`` (see the package's ``nsprov/_fast.py``), at a
path that stays the same when Debian moves to another Python: the package lives in
``/usr/lib/python3/dist-packages`` for every Python 3 that Debian ships, while a path into
``.../lib/python3.X/site-packages`` breaks on the next upgrade.  This file runs the package's
``_fast.py`` as ``__main__`` under that file's own name, so whatever that script does (put its
directory on ``sys.path``, import the post-login module, fall back to the full step) it does
here; nothing is imported before it.
"""

FAST = "/usr/lib/python3/dist-packages/nsprov/_fast.py"

with open(FAST, "rb") as source:
    code = compile(source.read(), FAST, "exec")
exec(code, {"__name__": "__main__", "__file__": FAST, "__builtins__": __builtins__})  # noqa: S102
