"""The login latency benchmark of ``bench/login_latency.py``, by concern.

Importing the package puts the repository root on ``sys.path``: its modules use the live test
harness, ``tests/live/harness.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
