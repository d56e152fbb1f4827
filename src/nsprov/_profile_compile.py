"""STUB of h13-core's profile compiler (the lead replaces this file at merge).

# STUB: h13-path writes against the interface only; h13-core's branch owns this module.
"""

from __future__ import annotations

from ._lean import PROFILE_SCHEMA

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._config import Config


def compile_profile(config: Config) -> dict[str, object] | None:  # STUB
    """STUB: a profile for a namespaces-only configuration, None for anything else."""
    a = config.actions
    if any(set(names) - {"namespaces"} for names in (a.imap, a.pop3, a.default)):
        return None
    if config.scan_cache is not None:
        return None
    return {"schema": PROFILE_SCHEMA, "source": config.source}
