"""The defaults every part of nsprov shares, in one place (standard library only, no imports).

The post-login parent imports this module, so it must stay a list of constants.
"""

from __future__ import annotations

#: The configuration file every command reads unless given ``--config``.
DEFAULT_CONFIG_PATH = "/etc/nsprov/nsprov.toml"

#: The action tables of the configuration, in the order a login runs them.
ACTION_TABLES = ("deny", "alert", "acl_groups", "last_login", "mail", "field")

#: ``[postlogin] deadline`` and ``--deadline``: the default, and the bound (Dovecot waits 60 s
#: for a post-login script, so nsprov must give up well before).
POSTLOGIN_DEADLINE = 2.0
POSTLOGIN_DEADLINE_MAX = 50.0

#: nsprov's version, as ``pyproject.toml`` gives it (a test keeps them equal): the login
#: profile's key, read without :mod:`importlib.metadata` on every login.
VERSION = "0.1.0"

#: Where ``nsprov post-login`` running as root keeps its state between logins: the parsed-config
#: cache, the compiled login profiles, the per-spool breaker, the deadline hint's marker.
STATE_DIR = "/run/nsprov"

#: The version of the compiled login profile's layout (``nsprov._lean`` reads it,
#: ``nsprov._profile_compile`` writes it, ``nsprov._profile`` keys the file on it).
PROFILE_SCHEMA = 2
