"""The helpers of the ``nsprov serve`` tests, under their old import path.

The tests themselves are in ``tests/serve/`` (and ``tests/test_reply.py``,
``tests/test_identity.py``, ``tests/cli/test_serve.py``); the tests of the
post-login fast path and of the scan cache still import these from here.
"""

from __future__ import annotations

from .serve.helpers import Identities, _base, running

__all__ = ["Identities", "_base", "running"]
