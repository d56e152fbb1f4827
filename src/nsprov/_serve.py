"""``nsprov serve``: placeholder until the resident service lands."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:  # pragma: no cover - replaced by the serve implementation
    """Not implemented yet."""
    del argv
    sys.stderr.write("nsprov serve: not implemented yet\n")
    return 2
