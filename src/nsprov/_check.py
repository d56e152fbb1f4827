"""``nsprov check``: placeholder until the doctor lands."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:  # pragma: no cover - replaced by the check implementation
    """Not implemented yet."""
    del argv
    sys.stderr.write("nsprov check: not implemented yet\n")
    return 2
