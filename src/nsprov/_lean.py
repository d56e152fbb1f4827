"""STUB of h13-core's lean computation (the lead replaces this file at merge).

# STUB: h13-path writes against the interface only; h13-core's branch owns this module.

The real module is standard library only and computes the fields from the plain profile.
This stand-in computes them with the full in-process engine (attrs and all), from the
configuration file the stub profile names, so that the dispatch around it can be tested.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

#: The version of the profile's layout; the profile dict carries it as ``"schema"``.
PROFILE_SCHEMA = 1


def compute(
    profile: dict[str, object],
    environ: Mapping[str, str],
    *,
    fs: object = None,  # noqa: ARG001 - STUB
) -> tuple[dict[str, str], list[str]]:  # STUB
    """STUB: the namespaces action of the full path, creating the index dirs as the user."""
    import sys  # noqa: PLC0415 - STUB

    if sys.flags.no_site:  # STUB: under -S the stand-in needs site for attrs
        import site  # noqa: PLC0415 - STUB

        site.main()
    from ._actions import ACTIONS  # noqa: PLC0415 - STUB: the real compute is stdlib only
    from ._config import load_config  # noqa: PLC0415 - STUB
    from ._login import Login, run_user_tasks  # noqa: PLC0415 - STUB

    config = load_config(str(profile["source"]))
    login = Login(environ, config=config)
    ACTIONS["namespaces"](login, config)
    errors = run_user_tasks(login)
    return login._changes(), [*errors, *login._warnings]  # noqa: SLF001 - STUB
