"""The ``USERDB_KEYS`` bookkeeping, in one place (standard library only, no imports).

script-login sends back to the mail process each variable listed in
``USERDB_KEYS`` (space-separated, each key followed by a space).  A key nsprov
sets must be listed exactly once, after the keys already there, whatever their
case.  :mod:`nsprov._env` and :mod:`nsprov._login` use these functions; the
stdlib-only post-login parent, which also runs without its package, keeps its
own copy in ``merge_fields`` (a test keeps the two equal).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: this module is on the login path

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: The variable that lists the userdb fields.
USERDB_KEYS = "USERDB_KEYS"


def listed_keys(environ: Mapping[str, str]) -> tuple[str, set[str]]:
    """``USERDB_KEYS`` as it stands, and the set of keys it lists, uppercased."""
    keys = environ.get(USERDB_KEYS, "")
    return keys, {k.upper() for k in keys.split(" ") if k}


def with_keys(keys: str, added: Iterable[str]) -> str:
    """*keys* (a ``USERDB_KEYS`` value) followed by each key of *added*, each with its space.

    The caller passes only keys not listed yet (see :func:`listed_keys`).

    >>> with_keys("HOME UID", ["NAMESPACE"])
    'HOME UID NAMESPACE '
    """
    if keys and not keys.endswith(" "):
        keys += " "
    return keys + "".join(k + " " for k in added)
