"""The per-action settings, now :mod:`nsprov._config.actionconf` (this name stays importable)."""

from __future__ import annotations

from ._config.actionconf import (
    AclGroupsConfig,
    AlertConfig,
    DenyConfig,
    FieldConfig,
    LastLoginConfig,
    MailConfig,
)

__all__ = [
    "AclGroupsConfig",
    "AlertConfig",
    "DenyConfig",
    "FieldConfig",
    "LastLoginConfig",
    "MailConfig",
]
