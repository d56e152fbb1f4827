"""The login profile: what :func:`nsprov._lean.compute` needs from a configuration, as plain data.

:func:`compile_profile` turns a validated :class:`~nsprov._config.Config` into
dicts, tuples, strings, numbers, booleans and None (``marshal`` can write it),
or None when the configuration needs the full login path.  The layout, by key
(``PROFILE_SCHEMA`` 2):

``schema``
    :data:`nsprov._lean.PROFILE_SCHEMA`
``source``
    the config file
``deadline``, ``on_error``
    what the worker's ``T_DEADLINE`` and ``T_POLICY`` frames carry
``actions``
    ``{"imap": names, "pop3": names, "default": names}``: each protocol's
    action list in order (as ``ActionsConfig.for_protocol``)
``rules``
    the actions' settings (:func:`action_rules`): ``deny`` (compiled by
    :func:`nsprov._actrules.compile_deny`, or None), ``alerts`` (``(text,
    if_exists)`` templates), ``acl_groups`` (``(include, exclude)`` or None),
    ``last_login`` (the file's path template, or None), ``fields`` (one dict
    per ``[[field]]``: ``name``, ``value`` template, ``mode``, ``separator``,
    ``literal_percent``)
``dialect``, ``global_mail_driver``, ``private_namespace``
    the output dialect and what it needs
``reserved_names``, ``config_prefixes``, ``max_namespaces``, ``create_dirs``, ``debug_users``
    as in ``[namespace]``/``[dovecot]``/``[post_login]``
``identity``
    ``{"mail_uid", "mail_gid", "mail_access_groups", "first_valid_gid", "last_valid_gid"}``
``spools``
    one dict per ``[[spool]]`` in order (:func:`spool_profile`): ``exclude``
    and ``include`` compiled (:func:`compile_patterns`), ``ignore`` (the
    ignore file's text and the exclude patterns compiled with it, or None), ``path``,
    ``separator``, ``list``, ``subscriptions``, ``hidden``, ``subscribe``,
    ``symlinks``, ``ignore_file``, and the templates ``name``, ``prefix``,
    ``index``, ``control``, ``index_private``, ``inbox``, each ``(text, parts)``
    with the parsed parts of :class:`~nsprov._template.Template` (or None)

Not on the login path: it reads the attrs configuration.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ._lean import PROFILE_SCHEMA

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._config import Config, SpoolConfig
    from ._template import Template

#: The actions the lean path runs (``mail`` needs the attrs location model: the full path).
LEAN_ACTIONS = frozenset({"deny", "alert", "acl_groups", "last_login", "fields", "namespaces"})
#: Userdb fields that change the mail identity: a ``[[field]]`` setting one takes the full
#: path, where the identity is taken once, when an action first needs it.
IDENTITY_FIELDS = frozenset({"UID", "GID", "HOME", "SYSTEM_GROUPS_USER", "MAIL_ACCESS_GROUPS"})


def _template(t: Template | None) -> tuple[str, tuple[tuple[str, bool], ...]] | None:
    return None if t is None else (t.text, tuple(t.parts))


#: A compiled pattern list: ``(regex, flags, include)`` per pattern, in order.
Patterns = tuple[tuple[str, int, bool], ...]


def path_spec(patterns: Iterable[str]) -> object:
    """A :class:`pathspec.PathSpec` of gitignore *patterns*: what include/exclude lists mean."""
    import pathspec  # noqa: PLC0415 - only when patterns are configured

    # pathspec 1.0 names the gitignore rules "gitignore"; before (Debian 12 ships 0.11) that
    # name is a deprecated alias of "gitwildmatch", the same rules.
    kind = "gitignore" if int(pathspec.__version__.split(".")[0]) >= 1 else "gitwildmatch"
    return pathspec.PathSpec.from_lines(kind, patterns)


def compile_patterns(lines: tuple[str, ...]) -> Patterns | None:
    """*lines* (gitignore patterns) as the regular expressions pathspec matches with.

    pathspec decides a name by the last pattern whose regular expression
    ``search``-es it (its include flag: matched, or un-matched by ``!``); a
    pattern without one (a comment, a blank line) never counts.  None when
    the installed pathspec matches otherwise (another pattern class or
    backend): the full path then runs.
    """
    from pathspec.pattern import RegexPattern  # noqa: PLC0415 - only when patterns are configured

    spec: Any = path_spec(lines)
    if type(getattr(spec, "_backend", None)).__name__ not in {"SimplePsBackend", "NoneType"}:
        return None
    out = []
    for p in spec.patterns:
        if type(p).match_file is not RegexPattern.match_file:
            return None
        if p.include is None or p.regex is None:
            continue
        out.append((p.regex.pattern, p.regex.flags, bool(p.include)))
    return tuple(out)


def ignore_profile(spool: SpoolConfig) -> tuple[str, Patterns] | None:
    """The spool's ignore file as read now, with the exclude patterns compiled after it.

    None when there is none, or it is not used (untrusted, too large, no
    patterns): the login reads it again either way, and uses these patterns
    only for this exact text.
    """
    if not spool.ignore_file:
        return None
    from ._fs import read_ignore_file  # noqa: PLC0415 - the full path's own reader
    from ._lean import IGNORE_MAX_PATTERNS  # noqa: PLC0415 - as above

    path = os.path.join(os.path.realpath(spool.path_bytes), os.fsencode(spool.ignore_file))
    try:
        text = read_ignore_file(path)
    except OSError:
        return None
    lines = text.splitlines() if text else []
    count = sum(1 for line in lines if line.strip() and not line.startswith("#"))
    if not lines or count > IGNORE_MAX_PATTERNS or text is None:
        return None
    patterns = compile_patterns((*spool.exclude, *lines))
    return None if patterns is None else (text, patterns)


def spool_profile(spool: SpoolConfig) -> dict[str, Any]:
    """One spool as the profile carries it (what :class:`nsprov._plainscan.Builder` reads).

    ``exclude`` and ``include`` are compiled (:func:`compile_patterns`): an
    empty ``exclude`` excludes nothing, a None ``include`` includes all.
    """
    return {
        **spool_templates(spool),
        "ignore": ignore_profile(spool),
        "exclude": compile_patterns(spool.exclude) if spool.exclude else (),
        "include": compile_patterns(spool.include) if spool.include else None,
    }


def spool_templates(spool: SpoolConfig) -> dict[str, Any]:
    """What :class:`nsprov._plainscan.Builder` reads of a spool: no patterns, no file read."""
    return {
        "path": spool.path,
        "separator": spool.separator,
        "list": spool.list,
        "subscriptions": spool.subscriptions,
        "hidden": spool.hidden,
        "subscribe": spool.subscribe,
        "symlinks": spool.symlinks,
        "ignore_file": spool.ignore_file,
        "name": _template(spool.name),
        "prefix": _template(spool.prefix),
        "index": _template(spool.index),
        "control": _template(spool.control),
        "index_private": _template(spool.index_private),
        "inbox": _template(spool.inbox),
    }


def why_full(config: Config) -> str | None:
    """Why *config* needs the full login path, or None when the lean path serves it."""
    a = config.actions
    listed = {*a.imap, *a.pop3, *a.default}
    for protocol, names in (("imap", a.imap), ("pop3", a.pop3), ("default", a.default)):
        if not set(names) <= LEAN_ACTIONS:
            return f"actions for {protocol}: {', '.join(names)}"
    if not (a.imap or a.pop3 or a.default):
        return "no action"
    if "last_login" in listed and a.last_login is not None and a.last_login.backend != "file":
        return f"[last_login] backend = {a.last_login.backend}"
    if "fields" in listed:
        for f in a.fields:
            if f.name.upper() in IDENTITY_FIELDS:
                return f"[[field]] {f.name}: changes the mail identity"
    if config.scan_cache is not None:
        return "[scan_cache]"
    for s in config.spools:
        if (s.exclude and compile_patterns(s.exclude) is None) or (
            s.include and compile_patterns(s.include) is None
        ):
            return f"spool {s.path}: include/exclude patterns pathspec matches otherwise"
    return None


def compile_profile(config: Config) -> dict[str, Any] | None:
    """The login profile of *config*, or None when it needs the full login path.

    Include/exclude patterns are compiled to the regular expressions pathspec
    matches with (:func:`compile_patterns`); the login imports :mod:`re` then.
    Each spool's ignore file is read now (under the trust rule) and its
    patterns compiled for its text; the login reads it again, so editing it
    takes effect at the next login (through the full path, which should then
    rebuild the profile).
    """
    if why_full(config) is not None:
        return None
    a = config.actions
    ident = config.identity
    return {
        "schema": PROFILE_SCHEMA,
        "source": config.source,
        "deadline": config.deadline,
        "on_error": config.on_error,
        "actions": {"imap": tuple(a.imap), "pop3": tuple(a.pop3), "default": tuple(a.default)},
        "rules": action_rules(config),
        "dialect": config.dialect,
        "global_mail_driver": config.global_mail_driver,
        "private_namespace": config.private_namespace,
        "reserved_names": tuple(config.reserved_names),
        "config_prefixes": tuple(config.config_prefixes),
        "max_namespaces": config.max_namespaces,
        "create_dirs": config.create_dirs,
        "debug_users": tuple(config.debug_users),
        "identity": {
            "mail_uid": ident.mail_uid,
            "mail_gid": ident.mail_gid,
            "mail_access_groups": tuple(ident.mail_access_groups),
            "first_valid_gid": ident.first_valid_gid,
            "last_valid_gid": ident.last_valid_gid,
        },
        "spools": tuple(spool_profile(s) for s in config.spools),
    }


def action_rules(config: Config) -> dict[str, Any]:
    """The settings of *config*'s actions as plain data (``profile["rules"]``)."""
    from ._actrules import compile_deny  # noqa: PLC0415 - imports ipaddress for the networks

    a = config.actions
    d = a.deny
    deny = (
        None
        if d is None
        else compile_deny(
            users=d.users,
            networks=d.networks,
            local_networks=d.local_networks,
            groups=d.groups,
            allow_users=d.allow_users,
            allow_networks=d.allow_networks,
            allow_local_networks=d.allow_local_networks,
            allow_groups=d.allow_groups,
            default=d.default,
            message=d.message,
        )
    )
    last = a.last_login
    return {
        "deny": deny,
        "alerts": tuple((_template(x.text), _template(x.if_exists)) for x in a.alerts),
        "acl_groups": None
        if a.acl_groups is None
        else (tuple(a.acl_groups.include), tuple(a.acl_groups.exclude)),
        "last_login": _template(last.path) if last is not None and last.backend == "file" else None,
        "fields": tuple(
            {
                "name": f.name,
                "value": _template(f.value),
                "mode": f.mode,
                "separator": f.separator,
                "literal_percent": f.literal_percent,
            }
            for f in a.fields
        ),
    }
