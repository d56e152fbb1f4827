"""The helpers of the ``nsprov serve`` tests, under their old import path.

The tests themselves are in ``tests/serve/`` (and ``tests/test_reply.py``,
``tests/test_identity.py``, ``tests/cli/test_serve.py``); test modules of other
parts of nsprov still import these from here.
"""

from __future__ import annotations

from .serve.helpers import HELLO, Identities, _base, _spool, make_config, running

__all__ = ["HELLO", "Identities", "_base", "_spool", "make_config", "running"]
