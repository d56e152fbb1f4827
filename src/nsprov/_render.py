"""Human and machine renderings of a plan: table, env, JSON, dovecot.conf."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._env import _yes, dialect_for

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._engine import Plan
    from ._model import Namespace


def env_escape(value: str) -> str:
    r"""Backslash escapes for ``\``, tab and newline (``--format=env``).

    >>> env_escape("a\tb\\c\n")
    'a\\tb\\\\c\\n'
    """
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def render_env(p: Plan) -> str:
    """One ``KEY=VALUE`` line per variable nsprov sets, sorted by key."""
    return "".join(f"{k}={env_escape(v)}\n" for k, v in sorted(p.environ.items()))


def _ns_json(ns: Namespace) -> dict[str, Any]:
    return {
        "name": ns.name,
        "type": ns.type,
        "prefix": ns.prefix,
        "separator": ns.separator,
        "location": ns.location.render(),
        "list": ns.list,
        "subscriptions": _yes(ns.subscriptions),
        "hidden": _yes(ns.hidden),
    }


def plan_json(p: Plan, dialect: str) -> dict[str, Any]:
    """The ``--format=json`` document."""
    return {
        "user": p.user.user,
        "dialect": dialect,
        "identity": {
            "uid": p.user.identity.uid,
            "gid": p.user.identity.gid,
            "groups": sorted(p.user.identity.groups),
            "home": p.user.home,
        },
        "namespaces": [
            {**_ns_json(s.namespace), "spool": s.spool, "entry": s.entry}
            for s in p.discovery.served
        ],
        "environment": dict(sorted(p.environ.items())),
        "skipped": [
            {"spool": k.spool, "entry": k.entry, "reason": k.reason, "detail": k.detail}
            for k in p.discovery.skipped
        ],
        "warnings": list(p.warnings),
    }


def render_json(p: Plan, dialect: str) -> str:
    """``--format=json``, indented, ASCII-safe."""
    return json.dumps(plan_json(p, dialect), indent=2) + "\n"


def conf_quote(value: str) -> str:
    """A dovecot.conf value: double-quoted, ``\\`` and ``"`` escaped, ``%`` doubled."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def render_conf(p: Plan, dialect: str = "2.3") -> str:
    """``namespace`` blocks for dovecot.conf, in the syntax of *dialect*.

    Each block carries the same settings the userdb fields would, plus
    ``list`` and ``subscriptions`` spelled out.
    """
    d = dialect_for(dialect)
    out = []
    for s in p.discovery.served:
        ns = s.namespace
        out.append(f"# {s.spool}/{s.entry}\n")
        out.append(f"namespace {ns.name} {{\n")
        settings = dict(d.settings(ns))
        settings.setdefault("LIST", ns.list)
        settings.setdefault("SUBSCRIPTIONS", _yes(ns.subscriptions))
        for key, value in settings.items():
            name = "location" if key == "MAIL" else key.lower()
            out.append(f"  {name} = {conf_quote(value)}\n")
        out.append("}\n")
    return "".join(out)


def render_table(
    p: Plan,
    *,
    explain: bool,
    gid_name: Callable[[int], str | None] | None = None,
    resolved: Mapping[str, str] | None = None,
) -> str:
    """A readable listing; with *explain*, every skipped entry and why.

    Every mailbox is shown as configured (``<spool>/<entry>``), with the
    resolved path beside it where it differs (a spool under a symbolic
    link, an entry that is a link): *resolved* maps a spool as configured to
    its real path.  Gids carry their group names (``1001(sales)``) where
    *gid_name* knows them.
    """
    resolved = resolved or {}

    def gid(number: int) -> str:
        name = gid_name(number) if gid_name is not None else None
        return f"{number}({name})" if name else str(number)

    def shown(configured: str, real: str | None) -> str:
        return configured if real is None or real == configured else f"{configured} ({real})"

    def real_of(spool: str, entry: str) -> str | None:
        base = resolved.get(spool)
        return None if base is None else f"{base}/{entry}" if entry else base

    ident = p.user.identity
    groups = ",".join(gid(g) for g in sorted(ident.groups)) or "-"
    header = f"user {p.user.user}: uid {ident.uid}, gid {gid(ident.gid)}, groups {groups}, "
    lines = [header + f"home {p.user.home or '-'}"]
    served = p.discovery.served
    if served:
        width = max(len(s.namespace.name) for s in served)
        pwidth = max(len(s.namespace.prefix) for s in served)
        lines.append(f"{'NAMESPACE':<{width}}  {'PREFIX':<{pwidth}}  MAILBOX")
        lines += [
            f"{s.namespace.name:<{width}}  {s.namespace.prefix:<{pwidth}}  "
            + shown(f"{s.spool}/{s.entry}", s.path)
            for s in served
        ]
    else:
        lines.append("no namespaces")
    skipped = p.discovery.skipped
    if explain:
        for k in skipped:
            where = f"{k.spool}/{k.entry}" if k.raw else k.spool
            real = real_of(k.spool, k.entry if k.raw else "")
            lines.append(f"skipped {shown(where, real)}: {k.reason}: {k.detail}")
    elif skipped:
        lines.append(f"{len(skipped)} entries skipped (--explain lists them)")
    lines += [f"warning: {w}" for w in p.warnings]
    from ._postlogin import escape  # noqa: PLC0415 - the one escaping of human output

    return "\n".join(map(escape, lines)) + "\n"
