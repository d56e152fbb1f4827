"""``python -m nsprov._serve --dir-helper``: the directory helper the server starts (:mod:`nsprov._serve.dirs`)."""

from __future__ import annotations

import sys

from .dirs import dir_helper

if __name__ == "__main__":
    if sys.argv[1:] != ["--dir-helper"]:
        sys.stderr.write(
            "usage: python -m nsprov._serve --dir-helper (run the server with 'nsprov serve')\n"
        )
        raise SystemExit(2)
    raise SystemExit(dir_helper())
