"""The ``[[spool]]`` tables, with the ``[namespace]`` defaults applied, and the checks across spools."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import attrs

from .._model import NAME_RE, has_control
from .._template import Template
from .schema import NAME_FIELDS, PATH_FIELDS, PREFIX_FIELDS, SpoolConfig

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .reader import _Reader

_SPOOL_KEYS = {
    "prefix",
    "separator",
    "name",
    "index",
    "control",
    "index_private",
    "inbox",
    "list",
    "subscriptions",
    "hidden",
    "subscribe",
    "exclude",
    "include",
    "ignore_file",
    "symlinks",
    "allow_private_overlap",
}

_DEFAULT_PREFIX = Template("Shared{sep}{name}{sep}")


def private_overlap(prefix: Template) -> bool:
    """Whether the first hierarchy level of *prefix* starts with ``{name}`` (no fixed text first).

    Such a level can equal the name of a folder of the private namespace when that has
    an empty prefix (Dovecot's usual ``inbox``): an entry ``Sent`` would take over the
    user's own ``Sent``, and the client's writes to it would land in the spool.
    """
    return bool(prefix.parts) and prefix.parts[0] == ("name", True)


def _check_separator(value: str) -> str | None:
    if len(value) != 1 or has_control(value) or value.isspace():
        return "must be exactly one printable, non-space character"
    return None


def _check_name_template(template: Template) -> str | None:
    sample = template.render({"id": "abc-de2fgh", "slug": "abc", "hash": "de2fgh"})
    if not NAME_RE.fullmatch(sample):
        return f"renders names like {sample!r}, which do not match [a-z0-9_-]+"
    if sample.startswith("__"):
        return "names must not start with '__'"
    if not template.fields & {"id", "hash"}:
        return "must use {id} or {hash}, or two mailboxes could get one name"
    return None


def _check_path_template(template: Template) -> str | None:
    if not template.text.startswith(("{home}", "/")):
        return "must be an absolute path (start with '/' or '{home}')"
    if not template.fields & {"ns", "id", "hash"}:
        return "must use {ns}, {id} or {hash}: each namespace needs its own directory"
    return None


def _spool_path(r: _Reader, raw: Mapping[str, Any], path: str) -> str | None:
    spool_path = r.take(raw, "path", path, str, None)
    if spool_path is None and "path" not in raw:
        r.problem(f"{path}.path", "required key missing")
    if spool_path is not None and not os.path.isabs(spool_path):
        r.problem(f"{path}.path", f"must be an absolute path, got {spool_path!r}")
    return spool_path  # type: ignore[no-any-return]


def _prefix(r: _Reader, data: Mapping[str, Any], path: str) -> tuple[Template, bool]:
    """The prefix template and ``allow_private_overlap``."""
    prefix = r.template(data, "prefix", path, PREFIX_FIELDS, _DEFAULT_PREFIX) or _DEFAULT_PREFIX
    if "name" not in prefix.fields:
        r.problem(f"{path}.prefix", "must use {name}, or every mailbox would get one prefix")
    allow_overlap = r.take(data, "allow_private_overlap", path, bool, False)
    if private_overlap(prefix) and not allow_overlap:
        r.problem(
            f"{path}.prefix",
            f"{prefix.text!r} starts with {{name}}: with an empty-prefix private namespace "
            "(Dovecot's usual inbox) an entry named like a private folder (Sent, Drafts, Trash) "
            "takes that folder over, and the client's writes land in the spool; start it with "
            'fixed text (e.g. "Shared{sep}{name}{sep}"), or set allow_private_overlap = true '
            "if the private namespace has a prefix of its own",
        )
    return prefix, allow_overlap


def _templates(r: _Reader, data: Mapping[str, Any], path: str) -> dict[str, Template | None]:
    """``name``, ``index``, ``control``, ``index_private`` and ``inbox``, each checked."""
    defaults = SpoolConfig.__attrs_attrs__
    name = r.template(data, "name", path, NAME_FIELDS, defaults.name.default) or Template("s-{id}")
    if (message := _check_name_template(name)) is not None:
        r.problem(f"{path}.name", message)
    index = r.template(data, "index", path, PATH_FIELDS, defaults.index.default)
    out: dict[str, Template | None] = {
        "name": name,
        "index": index or Template("{home}/.nsprov/{ns}"),
        "control": r.template(
            data, "control", path, PATH_FIELDS, defaults.control.default, optional=True
        ),
        "index_private": r.template(data, "index_private", path, PATH_FIELDS, None, optional=True),
        "inbox": r.template(data, "inbox", path, PATH_FIELDS, None, optional=True),
    }
    for key in ("index", "control", "index_private", "inbox"):
        template = out[key]
        if template is not None and (message := _check_path_template(template)) is not None:
            r.problem(f"{path}.{key}", message)
    return out


def _spool(
    r: _Reader, raw: Mapping[str, Any], path: str, defaults: Mapping[str, Any]
) -> SpoolConfig | None:
    data = {**defaults, **raw}
    r.unknown(raw, _SPOOL_KEYS | {"path"}, path)
    spool_path = _spool_path(r, raw, path)
    separator = r.take(data, "separator", path, str, "/", _check_separator)
    prefix, allow_overlap = _prefix(r, data, path)
    templates = _templates(r, data, path)
    list_mode = r.one_of(data, "list", path, ("yes", "no", "children"), "yes")
    symlinks = r.one_of(data, "symlinks", path, ("skip", "inside"), "skip")
    ignore_file = r.take(data, "ignore_file", path, str, ".nsprovignore")
    subscribe = r.take(data, "subscribe", path, bool, False)
    if subscribe and list_mode != "children":
        r.problem(
            f"{path}.subscribe",
            'needs list = "children" (with list = "yes" Dovecot lists each mailbox twice)',
        )
    if spool_path is None:
        return None
    return SpoolConfig(
        path=os.path.normpath(spool_path),
        prefix=prefix,
        separator=separator,
        **templates,  # type: ignore[arg-type]
        list=list_mode,
        subscriptions=r.take(data, "subscriptions", path, bool, True),
        hidden=r.take(data, "hidden", path, bool, False),
        subscribe=subscribe,
        exclude=r.strings(data, "exclude", path) or (),
        include=r.strings(data, "include", path) or (),
        ignore_file=ignore_file or None,
        symlinks=symlinks,
        allow_private_overlap=allow_overlap,
    )


def spools_table(
    r: _Reader, data: Mapping[str, Any], defaults: Mapping[str, Any]
) -> list[SpoolConfig]:
    """Every ``[[spool]]``, then the checks across them (one separator, no path twice)."""
    spool_defaults = {k: v for k, v in defaults.items() if k in _SPOOL_KEYS}
    spools = [
        s
        for path, raw in r.array(data, "spool")
        if (s := _spool(r, raw, path, spool_defaults)) is not None
    ]
    separators = sorted({s.separator for s in spools})
    if len(separators) > 1:
        r.problem(
            "spool",
            f"all spools must use one separator (Dovecot: 'All list=yes namespaces must use "
            f"the same separator'), got {separators}",
        )
    seen: set[str] = set()
    twice: set[str] = set()
    for s in spools:  # a set, not list.count per spool: 20,000 spools took 8.8 s
        (twice if s.path in seen else seen).add(s.path)
    for p in sorted(twice):
        r.problem("spool", f"spool {p} is listed twice")
    return spools


def spools_for_dialect(
    r: _Reader, spools: list[SpoolConfig], dialect: str, *, acl_plugin: bool
) -> list[SpoolConfig]:
    """The spools as Dovecot 2.4 needs them (an INBOX path with the ACL plugin); 2.4 refusals."""
    if dialect == "2.4" and acl_plugin:
        # Dovecot 2.4's maildir defaults mail_inbox_path to the namespace root, where the
        # ACL plugin then refuses the mailbox's dovecot-acl ("can't have default ACLs with
        # this setup"): point INBOX elsewhere, into the user's directory for the namespace.
        spools = [
            s if s.inbox is not None else attrs.evolve(s, inbox=Template(s.index.text + "/INBOX"))
            for s in spools
        ]
    if dialect == "2.4" and any(s.subscribe for s in spools):
        r.problem(
            "spool",
            "subscribe = true is verified on Dovecot 2.3 only; it is refused for version 2.4",
        )
    return spools
