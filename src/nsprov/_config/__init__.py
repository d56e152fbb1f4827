"""The nsprov TOML configuration: schema, one reader, one function per table, loading and its cache.

Every problem is collected and reported at once, each naming the file and the
key path (``spool[2].prefix``), never as a traceback.

- :mod:`.schema`: the attrs classes (:class:`Config`, :class:`SpoolConfig` …);
- :mod:`.actionconf`: the per-action settings, imported only when there are action tables;
- :mod:`.reader`: the reader, with its "one of" and "number in range" validators;
- :mod:`.spools`, :mod:`.actions`, :mod:`.tables`: one function per TOML table;
- :mod:`.load`: reading the file under the trust rule, and the cache of its parsed TOML.

This package imports nothing above it (no actions, no login): :mod:`nsprov._actions`
imports it, never the other way round.
"""

from __future__ import annotations

from .._atomic import write_private
from .load import DEFAULT_CACHE_DIR, _cache_file, _load_raw, load_config
from .reader import _Reader
from .schema import (
    DEFAULT_SCAN_CACHE_DIR,
    NAME_FIELDS,
    PATH_FIELDS,
    PREFIX_FIELDS,
    ActionsConfig,
    Config,
    IdentityConfig,
    OnError,
    ScanCacheConfig,
    ServeConfig,
    SpoolConfig,
    Symlinks,
)
from .spools import private_overlap
from .tables import config_from_mapping

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_SCAN_CACHE_DIR",
    "NAME_FIELDS",
    "PATH_FIELDS",
    "PREFIX_FIELDS",
    "ActionsConfig",
    "Config",
    "IdentityConfig",
    "OnError",
    "ScanCacheConfig",
    "ServeConfig",
    "SpoolConfig",
    "Symlinks",
    "_Reader",
    "_cache_file",
    "_load_raw",
    "config_from_mapping",
    "load_config",
    "private_overlap",
    "write_private",
]
