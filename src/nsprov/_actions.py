"""The classic post-login actions.

Their configuration is read by :mod:`nsprov._config.actions`; these names stay importable here.
"""

from __future__ import annotations

from ._config.actions import ACTION_NAMES, parse_actions
from ._config.schema import ActionsConfig

__all__ = ["ACTION_NAMES", "ActionsConfig", "parse_actions"]
